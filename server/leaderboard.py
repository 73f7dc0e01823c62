"""The leaderboard as people and scripts read it: a rich table, or JSON.

Runs are ranked by the headline figure, the **pooled AUROC** of the final model over
every clinic's validation patients with its 95 % CI (radfed.ranking says why). Beside it:
whether its CI overlaps the leader's ("≈ #1": cannot be told apart on this data), the
clinic mean AUROC, the selected checkpoint (best pooled AUROC), warnings about a
degenerate model, federated ÷ centralised (against the newest comparable `coordinator
baseline`) and, for leave-one-clinic-out runs, the held-out clinic's AUROC with its CI.
A task with more than two labels also shows the macro AUROC (mean of the classes' pooled
one-vs-rest AUROCs, with its CI; radfed.per_class) beside the pooled "any finding" one;
`--json` carries every class's pooled AUROC and CI under `per_class`.
`coordinator run`, this table and the dashboard use the same words (radfed.reply).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from radfed.reply import CLINIC_MEAN_AUROC, MACRO_AUROC, POOLED_AUROC, format_auroc
from radfed.results import rounds_done
from radfed.store import Store


def run_entry(store: Store, run_id: str | int) -> dict[str, Any] | None:
    """The leaderboard entry of one Flower run (None if the store has none)."""
    return next((e for e in store.leaderboard() if e["flwr_run_id"] == str(run_id)), None)


def leaderboard_json(store: Store) -> str:
    """Every finished run, ranked by pooled AUROC, with rounds and clinics."""
    return json.dumps(store.leaderboard(), indent=2, default=str)


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def holdout_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The held-out clinic's result row(s) of a run (none for ordinary runs)."""
    return [c for c in entry.get("clinics", []) if c["phase"] == "holdout"]


def with_ci(auroc: float | None, quality: dict[str, Any] | None) -> str:
    """'0.912 [0.851–0.960]' (CI over patients) or just the AUROC."""
    q = quality or {}
    return format_auroc(auroc, q.get("auroc_low"), q.get("auroc_high"))


def macro_text(entry: dict[str, Any]) -> str:
    """'0.874 [0.81–0.92]': the macro AUROC of a task with more than two labels, else '-'."""
    figures = entry.get("per_class") or {}
    return format_auroc(figures.get("macro_auroc"), figures.get("macro_auroc_low"), figures.get("macro_auroc_high"))


def holdout_text(entry: dict[str, Any]) -> str:
    """'clinic-3 0.871 [0.80–0.93]' for a leave-one-clinic-out run, else '-'."""
    rows = holdout_rows(entry)
    if not rows:
        return entry.get("holdout") or "-"
    row = rows[-1]
    return f"{row['clinic']} {with_ci(row['auroc'], row.get('quality'))}"


def leaderboard_table(store: Store) -> RenderableType:
    """One row per run, best pooled AUROC first; then, when sweeps ran, mean ± sd pooled
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
            yield Text(
                f"{rank}. {row['experiment']}: {row['backbone']} ({row['weights']}), "
                f"{row['strategy']}, {rounds_done(row)} rounds, {row['status']}; "
                f"{result_line(row)}"
                + (f"; held out {holdout_text(row)}" if holdout_rows(row) else "")
                + (f"; simulated: {row['simulated']}" if row.get("simulated") else "")
                + "".join(f"; ⚠ {w}" for w in row.get("warnings", []))
                + (f"; submitted by {row['submitted_by']}" if row.get("submitted_by") else "")
            )


def overlap_text(entry: dict[str, Any]) -> str:
    """'#1' for the leader, '≈ #1' when the CI overlaps the leader's, 'below' when not."""
    if entry.get("rank") == 1 and entry.get("pooled_auroc") is not None:
        return "#1"
    return {True: "≈ #1", False: "below #1"}.get(entry.get("overlaps_top"), "-")


def selected_text(entry: dict[str, Any]) -> str:
    """'round 3: 0.912' for the selected checkpoint, or '-'."""
    sel = entry.get("selected")
    if not sel:
        return "-"
    return f"round {sel['round']}: {sel['pooled_auroc']:.3f}"


def _runs_table(board: list[dict]) -> Table:
    """One row per run; columns empty for every run (no privacy mode, no baseline, no
    held-out clinic, no warning) are left out."""
    columns = (
        "#",
        "experiment",
        "backbone",
        "weights",
        "strategy",
        "privacy",
        "rounds",
        "clinics",
        POOLED_AUROC + " [95 % CI]",
        MACRO_AUROC + " [95 % CI]",
        "vs #1",
        CLINIC_MEAN_AUROC,
        "selected",
        "÷ central",
        "held-out clinic",
        "simulated",
        "warnings",
        "submitted by",
        "status",
    )
    rows = []
    for row in board:
        clinics = {c["clinic"] for c in row.get("clinics", []) if c["phase"] != "holdout"}
        rows.append(
            [
                str(row["rank"]),
                row["experiment"],
                row["backbone"],
                row["weights"],
                row["strategy"],
                row.get("privacy", {}).get("mode", "none"),
                str(rounds_done(row)),
                str(len(clinics)),
                with_ci(row.get("pooled_auroc"), row.get("pooled")),
                macro_text(row),
                overlap_text(row),
                _num(row.get("clinic_mean_auroc")),
                selected_text(row),
                _num(row.get("vs_central")),
                holdout_text(row),
                row.get("simulated") or "-",
                "⚠ " + "; ".join(row["warnings"]) if row.get("warnings") else "-",
                row.get("submitted_by") or "-",
                row["status"],
            ]
        )
    optional = {
        "privacy",
        MACRO_AUROC + " [95 % CI]",
        "÷ central",
        "held-out clinic",
        "simulated",
        "warnings",
        "submitted by",
    }
    keep = [i for i, col in enumerate(columns) if col not in optional or any(r[i] not in ("-", "none") for r in rows)]
    table = Table(
        title=f"radfed leaderboard (ranked by {POOLED_AUROC} of the final model; ≈ #1: its CI overlaps the leader's)"
    )
    numeric = (
        "#",
        "rounds",
        "clinics",
        POOLED_AUROC + " [95 % CI]",
        MACRO_AUROC + " [95 % CI]",
        CLINIC_MEAN_AUROC,
        "÷ central",
    )
    for i in keep:
        figure = columns[i] in numeric
        table.add_column(columns[i], justify="right" if figure else "left", no_wrap=figure)
    for r in rows:
        table.add_row(*[r[i] for i in keep])
    return table


def result_line(entry: dict[str, Any]) -> str:
    """'pooled AUROC 0.905 [0.85–0.95] (3 clinics); clinic mean AUROC 0.937; selected
    checkpoint round 3: 0.912' for one run."""
    clinics = {c["clinic"] for c in entry.get("clinics", []) if c["phase"] != "holdout"}
    text = f"{POOLED_AUROC} {with_ci(entry.get('pooled_auroc'), entry.get('pooled'))} ({len(clinics)} clinics)"
    if entry.get("per_class"):
        text += f"; {MACRO_AUROC} {macro_text(entry)} over {len(entry['per_class'].get('classes', []))} classes"
    text += f"; {CLINIC_MEAN_AUROC} {_num(entry.get('clinic_mean_auroc'))}"
    if entry.get("selected"):
        text += f"; selected checkpoint {selected_text(entry)}"
    if entry.get("vs_central") is not None:
        text += f"; ÷ centralised {entry['vs_central']:.3f}"
    if entry.get("stopped_early"):
        text += f"; {entry['stopped_early']}"
    return text


def warning_lines(entry: dict[str, Any]) -> list[str]:
    """'warning: ...' lines for a degenerate model (radfed.ranking.model_warnings)."""
    return [f"warning: {w}" for w in entry.get("warnings", [])]


def sweep_table(rows: list[dict], title: str = "sweep results") -> Table:
    """Mean ± sd pooled AUROC per backbone and weight source."""
    from radfed.results import mean_sd

    table = Table(title=f"{title}: {POOLED_AUROC} of the final model, mean ± sd over scenarios")
    for col in ("sweep", "backbone", "weights", "runs", "scored", "failed", "AUROC mean ± sd", "best"):
        table.add_column(col, justify="right" if col in ("runs", "scored", "failed", "best") else "left")
    for row in rows:
        table.add_row(
            row["sweep"],
            row["backbone"],
            row["weight_source"],
            str(row["runs"]),
            str(row["scored"]),
            str(row["failed"]),
            mean_sd(row),
            f"{row['best']:.3f}" if row["best"] is not None else "-",
        )
    return table
