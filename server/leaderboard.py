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

from rich.console import Group, RenderableType
from rich.table import Table

from radfed.store import Store


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
    runs = _runs_table(board)
    return Group(runs, sweep_table(groups, title="sweeps")) if groups else runs


def _runs_table(board: list[dict]) -> Table:
    table = Table(title="radfed leaderboard (final federated AUROC; pooled; ÷ centralised baseline)")
    right = ("#", "rounds", "clinics", "AUROC", "pooled", "÷ central")
    for col in ("#", "experiment", "backbone", "weights", "strategy", "privacy", "rounds", "clinics",
                "AUROC", "pooled", "÷ central", "held-out clinic", "status"):
        table.add_column(col, justify="right" if col in right else "left")
    for rank, row in enumerate(board, start=1):
        clinics = {c["clinic"] for c in row.get("clinics", []) if c["phase"] != "holdout"}
        table.add_row(str(rank), row["experiment"], row["backbone"], row["weights"],
                      row["strategy"], row.get("privacy", {}).get("mode", "none"),
                      str(len(row.get("rounds", []))), str(len(clinics)),
                      _num(row.get("final_auroc")), with_ci((row.get("pooled") or {}).get("auroc"), row.get("pooled")),
                      _num(row.get("vs_central")), holdout_text(row), row["status"])
    return table


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
