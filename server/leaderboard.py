"""The leaderboard as people and scripts read it: a rich table, or JSON."""

from __future__ import annotations

import json

from rich.table import Table

from radfed.store import Store


def leaderboard_json(store: Store) -> str:
    """Every finished run, ranked by final federated AUROC, with rounds and clinics."""
    return json.dumps(store.leaderboard(), indent=2, default=str)


def leaderboard_table(store: Store) -> Table:
    """One row per run, best final federated AUROC first."""
    table = Table(title="radfed leaderboard (final federated AUROC)")
    for col in ("#", "experiment", "backbone", "weights", "strategy", "rounds", "clinics",
                "AUROC", "status"):
        table.add_column(col, justify="right" if col in ("#", "rounds", "clinics", "AUROC") else "left")
    for rank, row in enumerate(store.leaderboard(), start=1):
        auroc = row.get("final_auroc")
        clinics = {c["clinic"] for c in row.get("clinics", [])}
        table.add_row(str(rank), row["experiment"], row["backbone"], row["weights"],
                      row["strategy"], str(len(row.get("rounds", []))), str(len(clinics)),
                      f"{auroc:.3f}" if auroc is not None else "-", row["status"])
    return table
