"""Results of tagged experiments grouped as the RadImageNet paper reports them.

`coordinator sweep` tags each experiment with its sweep name and weight source; the
leaderboard (CLI and dashboard) groups finished runs by those tags, never by parsing
names, and shows mean ± sd pooled AUROC (the headline, radfed.ranking) per backbone and weight source.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

PAPER_BACKBONES = ("resnet50", "densenet121", "inception_v3", "inception_resnet_v2")


def rounds_done(entry: dict[str, Any]) -> int:
    """Training rounds recorded (round 0 is only the initial evaluation)."""
    return sum(1 for r in entry.get("rounds", []) if r["server_round"] > 0)


def summary(entries: list[dict[str, Any]], sweep: str | None = None) -> list[dict[str, Any]]:
    """Mean ± sd pooled AUROC per (sweep, backbone, weight source), as the paper reports.

    `entries` are leaderboard entries (radfed.store.Store.leaderboard); only tagged
    experiments count, grouped by their tags, never by name. sd is the sample standard
    deviation (None with fewer than two scored runs).
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        if not entry.get("sweep") or (sweep and entry["sweep"] != sweep):
            continue
        key = (entry["sweep"], entry["backbone"], entry.get("weight_source") or "")
        groups.setdefault(key, []).append(entry)
    rows = []
    for (name, backbone, source), runs in sorted(groups.items(), key=_group_order):
        scores = [e["pooled_auroc"] for e in runs
                  if e["status"] == "completed" and e.get("pooled_auroc") is not None
                  and math.isfinite(e["pooled_auroc"])]
        rows.append({
            "sweep": name, "backbone": backbone, "weight_source": source,
            "runs": len(runs), "scored": len(scores),
            "failed": sum(1 for e in runs if e["status"] == "failed"),
            "auroc_mean": statistics.fmean(scores) if scores else None,
            "auroc_sd": statistics.stdev(scores) if len(scores) > 1 else None,
            "best": max(scores) if scores else None,
        })
    return rows


def _group_order(item: tuple[tuple[str, str, str], Any]) -> tuple:
    name, backbone, source = item[0]
    rank = PAPER_BACKBONES.index(backbone) if backbone in PAPER_BACKBONES else len(PAPER_BACKBONES)
    return (name, rank, backbone, source)


def mean_sd(row: dict[str, Any]) -> str:
    """"0.812 ± 0.034" (or "-" when nothing was scored)."""
    if row["auroc_mean"] is None:
        return "-"
    sd = f" ± {row['auroc_sd']:.3f}" if row["auroc_sd"] is not None else ""
    return f"{row['auroc_mean']:.3f}{sd}"
