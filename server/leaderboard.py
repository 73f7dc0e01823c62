"""The leaderboard as people and scripts read it: a rich table, or JSON."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.table import Table

from radfed.store import Store


def leaderboard_json(store: Store) -> str:
    """Every finished run, ranked by final federated AUROC, with rounds and clinics."""
    return json.dumps(store.leaderboard(), indent=2, default=str)


def leaderboard_table(store: Store) -> RenderableType:
    """One row per run, best final federated AUROC first; then, when sweeps ran, mean ± sd
    AUROC per sweep, backbone and weight source (as the RadImageNet paper reports)."""
    from radfed.results import summary

    board = store.leaderboard()
    groups = summary(board)
    runs = _runs_table(board)
    return Group(runs, sweep_table(groups, title="sweeps")) if groups else runs


def _runs_table(board: list[dict]) -> Table:
    table = Table(title="radfed leaderboard (final federated AUROC)")
    for col in ("#", "experiment", "backbone", "weights", "strategy", "rounds", "clinics",
                "AUROC", "status"):
        table.add_column(col, justify="right" if col in ("#", "rounds", "clinics", "AUROC") else "left")
    for rank, row in enumerate(board, start=1):
        auroc = row.get("final_auroc")
        clinics = {c["clinic"] for c in row.get("clinics", [])}
        table.add_row(str(rank), row["experiment"], row["backbone"], row["weights"],
                      row["strategy"], str(len(row.get("rounds", []))), str(len(clinics)),
                      f"{auroc:.3f}" if auroc is not None else "-", row["status"])
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
