"""Results of tagged experiments grouped as the RadImageNet paper reports them, and the
paired comparison of two weight sources (`paired_differences`, `mean_difference`).

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
        scores = [
            e["pooled_auroc"]
            for e in runs
            if e["status"] == "completed" and e.get("pooled_auroc") is not None and math.isfinite(e["pooled_auroc"])
        ]
        rows.append(
            {
                "sweep": name,
                "backbone": backbone,
                "weight_source": source,
                "runs": len(runs),
                "scored": len(scores),
                "failed": sum(1 for e in runs if e["status"] == "failed"),
                "auroc_mean": statistics.fmean(scores) if scores else None,
                "auroc_sd": statistics.stdev(scores) if len(scores) > 1 else None,
                "best": max(scores) if scores else None,
            }
        )
    return rows


def _group_order(item: tuple[tuple[str, str, str], Any]) -> tuple:
    name, backbone, source = item[0]
    rank = PAPER_BACKBONES.index(backbone) if backbone in PAPER_BACKBONES else len(PAPER_BACKBONES)
    return (name, rank, backbone, source)


def mean_sd(row: dict[str, Any]) -> str:
    """ "0.812 ± 0.034" (or "-" when nothing was scored)."""
    if row["auroc_mean"] is None:
        return "-"
    sd = f" ± {row['auroc_sd']:.3f}" if row["auroc_sd"] is not None else ""
    return f"{row['auroc_mean']:.3f}{sd}"


# ---------------------------------------------------------------- paired weight sources
# The paper's question is whether RadImageNet initialisation beats ImageNet's. Runs of a
# sweep that differ only in their weight source (same sweep, backbone, freeze policy,
# learning rate and held-out clinic) form a pair; the difference of their pooled AUROCs
# answers it scenario by scenario, and the mean difference per backbone over scenarios.

Z95 = 1.959963984540054
FREEZE_ORDER = ("none", "all", "top-k")  # the paper's (server/sweep.py PAPER_SCENARIOS)


def pair_key(entry: dict[str, Any]) -> tuple | None:
    """What must match for two runs to be a pair: all but the weight source."""
    import json

    try:
        spec = json.loads(entry.get("spec_json") or "{}")
    except ValueError:
        return None
    if not entry.get("sweep") or not isinstance(spec, dict):
        return None
    return (
        entry["sweep"],
        entry["backbone"],
        spec.get("freeze"),
        spec.get("unfreeze_top"),
        spec.get("learning_rate"),
        tuple(spec.get("labels") or ()),
        entry.get("holdout"),
    )


def _se(entry: dict[str, Any]) -> float | None:
    """Standard error read off the pooled AUROC's 95 % CI (its width / 2 x 1.96)."""
    pooled = entry.get("pooled") or {}
    low, high = pooled.get("auroc_low"), pooled.get("auroc_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    return (high - low) / (2 * Z95)


def paired_differences(
    entries: list[dict[str, Any]], first: str = "radimagenet", second: str = "imagenet"
) -> list[dict[str, Any]]:
    """One row per scenario run with both weight sources (the newest completed run of
    each): both pooled AUROCs, their difference first − second and its 95 % CI.

    The CI treats the two runs' intervals as independent (normal approximation from each
    percentile interval): both models are scored on the same validation patients, whose
    shared difficulty the two would cancel in a paired bootstrap, so this interval is
    wider than a paired one, never narrower. None where either run has no interval.
    """
    newest: dict[tuple[tuple, str], dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda e: e["run_id"]):
        key = pair_key(entry)
        score = entry.get("pooled_auroc")
        if key is None or entry["status"] != "completed" or score is None or not math.isfinite(score):
            continue
        if entry.get("weight_source") in (first, second):
            newest[(key, entry["weight_source"])] = entry
    rows = []
    for (key, source), a in sorted(newest.items(), key=lambda kv: _pair_order(kv[0][0])):
        b = newest.get((key, second))
        if source != first or b is None:
            continue
        diff = a["pooled_auroc"] - b["pooled_auroc"]
        se_a, se_b = _se(a), _se(b)
        half = Z95 * math.hypot(se_a, se_b) if se_a is not None and se_b is not None else None
        rows.append(
            {
                "sweep": key[0],
                "backbone": key[1],
                "freeze": key[2],
                "learning_rate": key[4],
                "first": a,
                "second": b,
                "diff": diff,
                "low": None if half is None else diff - half,
                "high": None if half is None else diff + half,
            }
        )
    return rows


def _pair_order(key: tuple) -> tuple:
    sweep, backbone, freeze, _, lr, *_ = key
    rank = PAPER_BACKBONES.index(backbone) if backbone in PAPER_BACKBONES else len(PAPER_BACKBONES)
    policy = FREEZE_ORDER.index(freeze) if freeze in FREEZE_ORDER else len(FREEZE_ORDER)
    return (sweep, rank, backbone, policy, -(lr or 0.0))


def mean_difference(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sweep and backbone: mean paired difference over scenarios with a t-based 95 %
    CI (scenarios as the replicates, as the paper's mean ± sd; None with one pair)."""
    from scipy.stats import t

    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["sweep"], row["backbone"]), []).append(row["diff"])
    out = []
    for (sweep, backbone), diffs in groups.items():
        mean = statistics.fmean(diffs)
        half = (
            t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
        )
        out.append(
            {
                "sweep": sweep,
                "backbone": backbone,
                "pairs": len(diffs),
                "diff": mean,
                "low": None if half is None else mean - half,
                "high": None if half is None else mean + half,
            }
        )
    return out
