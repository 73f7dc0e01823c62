"""The leaderboard as people and scripts read it: a rich table, or JSON.

Beside the final federated AUROC (example-weighted over the clinics) it shows the
pooled AUROC with its 95 % CI (from the clinics' score histograms and their
patient-resampled replicates), federated ÷ centralised (against
the newest comparable `coordinator baseline`), and for leave-one-clinic-out runs the
held-out clinic's AUROC with its 95 % CI over patients.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from radfed.results import rounds_done
from radfed.store import Store


def run_entry(store: Store, run_id: str | int) -> dict[str, Any] | None:
    """The leaderboard entry of one Flower run (None if the store has none)."""
    return next((e for e in store.leaderboard() if e["flwr_run_id"] == str(run_id)), None)


def leaderboard_json(store: Store) -> str:
    """Every finished run, ranked by final federated AUROC, with rounds and clinics."""
    return json.dumps(store.leaderboard(), indent=2, default=str)


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def holdout_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The held-out clinic's result row(s) of a run (none for ordinary runs)."""
    return [c for c in entry.get("clinics", []) if c["phase"] == "holdout"]


def with_ci(auroc: float | None, quality: dict[str, Any] | None) -> str:
    """'0.912 [0.85–0.96]' (CI over patients) or just the AUROC."""
    q = quality or {}
    if auroc is None:
        return "-"
    if q.get("auroc_low") is None or q.get("auroc_high") is None:
        return f"{auroc:.3f}"
    return f"{auroc:.3f} [{q['auroc_low']:.2f}–{q['auroc_high']:.2f}]"


def holdout_text(entry: dict[str, Any]) -> str:
    """'clinic-3 0.871 [0.80–0.93]' for a leave-one-clinic-out run, else '-'."""
    rows = holdout_rows(entry)
    if not rows:
        return entry.get("holdout") or "-"
    row = rows[-1]
    return f"{row['clinic']} {with_ci(row['auroc'], row.get('quality'))}"


def leaderboard_table(store: Store) -> RenderableType:
    """One row per run, best final federated AUROC first; then, when sweeps ran, mean ± sd
    AUROC per sweep, backbone and weight source (as the RadImageNet paper reports)."""
    from radfed.results import summary

    board = store.leaderboard()
    groups = summary(board)
    runs = _RunsView(board)
    return Group(runs, sweep_table(groups, title="sweeps")) if groups else runs


class _RunsView:
    """The runs table where the terminal is wide enough for it; otherwise one line per run
    (an 80-column terminal would cut every cell of a 13-column table to a few letters)."""

    def __init__(self, board: list[dict]):
        self.board = board

    def __rich_console__(self, console: Console, options: ConsoleOptions):
        table = _runs_table(self.board)
        if Measurement.get(console, options.update_width(10_000), table).maximum <= options.max_width:
            yield table
            return
        yield Text(table.title or "", style="italic")
        for rank, row in enumerate(self.board, start=1):
            yield Text(f"{rank}. {row['experiment']}: {row['backbone']} ({row['weights']}), "
                       f"{row['strategy']}, {rounds_done(row)} rounds, {row['status']}; "
                       f"{result_line(row)}" + (f"; held out {holdout_text(row)}" if holdout_rows(row) else ""))


def _runs_table(board: list[dict]) -> Table:
    """One row per run; columns empty for every run (no privacy mode, no baseline, no
    held-out clinic) are left out."""
    columns = ("#", "experiment", "backbone", "weights", "strategy", "privacy", "rounds", "clinics",
               "AUROC", "pooled", "÷ central", "held-out clinic", "status")
    rows = []
    for rank, row in enumerate(board, start=1):
        clinics = {c["clinic"] for c in row.get("clinics", []) if c["phase"] != "holdout"}
        rows.append([str(rank), row["experiment"], row["backbone"], row["weights"],
                     row["strategy"], row.get("privacy", {}).get("mode", "none"),
                     str(rounds_done(row)), str(len(clinics)),
                     _num(row.get("final_auroc")), with_ci((row.get("pooled") or {}).get("auroc"), row.get("pooled")),
                     _num(row.get("vs_central")), holdout_text(row), row["status"]])
    optional = {"privacy", "÷ central", "held-out clinic"}
    keep = [i for i, col in enumerate(columns)
            if col not in optional or any(r[i] not in ("-", "none") for r in rows)]
    table = Table(title="radfed leaderboard (final federated AUROC; pooled; ÷ centralised baseline)")
    for i in keep:
        figure = columns[i] in ("#", "rounds", "clinics", "AUROC", "pooled", "÷ central")
        table.add_column(columns[i], justify="right" if figure else "left", no_wrap=figure)
    for r in rows:
        table.add_row(*[r[i] for i in keep])
    return table


def result_line(entry: dict[str, Any]) -> str:
    """'final federated AUROC 0.937 (3 clinics); pooled 0.905 [0.85–0.95]' for one run."""
    clinics = {c["clinic"] for c in entry.get("clinics", []) if c["phase"] != "holdout"}
    pooled = entry.get("pooled") or {}
    text = f"final federated AUROC {_num(entry.get('final_auroc'))} ({len(clinics)} clinics)"
    if pooled.get("auroc") is not None:
        text += f"; pooled {with_ci(pooled['auroc'], pooled)}"
    if entry.get("vs_central") is not None:
        text += f"; ÷ centralised {entry['vs_central']:.3f}"
    return text


def sweep_table(rows: list[dict], title: str = "sweep results") -> Table:
    """Mean ± sd final federated AUROC per backbone and weight source."""
    from radfed.results import mean_sd

    table = Table(title=f"{title}: final federated AUROC, mean ± sd over scenarios")
    for col in ("sweep", "backbone", "weights", "runs", "scored", "failed", "AUROC mean ± sd", "best"):
        table.add_column(col, justify="right" if col in ("runs", "scored", "failed", "best") else "left")
    for row in rows:
        table.add_row(row["sweep"], row["backbone"], row["weight_source"], str(row["runs"]),
                      str(row["scored"]), str(row["failed"]), mean_sd(row),
                      f"{row['best']:.3f}" if row["best"] is not None else "-")
    return table
