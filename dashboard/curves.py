"""Per-round series of a run, in the long format dashboard/charts.py draws: the pooled
AUROC with its 95 % CI, the clinic mean, the losses, and each clinic's own curves.

Series are named in words ("pooled AUROC", "training loss (clinics' mean)"), never by the
store's column names (train_loss), because the names end up in the chart's legend.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from radfed.reply import CLINIC_MEAN_AUROC, POOLED_AUROC

COLUMNS = ["round", "series", "value", "low", "high", "dashed"]
LOSS_NAMES = {"train_loss": "training loss (clinics' mean)", "val_loss": "validation loss (clinics' mean)"}


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.astype({"value": float, "low": float, "high": float})  # None: NaN, a gap
    return frame.dropna(subset=["value"]).astype({"round": int, "dashed": bool}).reset_index(drop=True)


def auroc_series(entry: dict[str, Any], series: str | None = None, clinic_mean: bool = True) -> pd.DataFrame:
    """The pooled AUROC per round with its CI (series `series`, default 'pooled AUROC')
    and, if asked, the clinic mean AUROC as a dashed series beside it."""
    rows = []
    for r in entry.get("rounds", []):
        pooled = r.get("pooled") or {}
        rows.append(
            {
                "round": r["server_round"],
                "series": series or POOLED_AUROC,
                "value": pooled.get("auroc"),
                "low": pooled.get("auroc_low"),
                "high": pooled.get("auroc_high"),
                "dashed": False,
            }
        )
        if clinic_mean:
            rows.append(
                {
                    "round": r["server_round"],
                    "series": CLINIC_MEAN_AUROC,
                    "value": r.get("val_auroc"),
                    "low": None,
                    "high": None,
                    "dashed": True,
                }
            )
    return _frame(rows)


def loss_series(entry: dict[str, Any]) -> pd.DataFrame:
    """Training and validation loss per round, named in words."""
    rows = [
        {
            "round": r["server_round"],
            "series": name,
            "value": r.get(key),
            "low": None,
            "high": None,
            "dashed": key == "val_loss",
        }
        for r in entry.get("rounds", [])
        for key, name in LOSS_NAMES.items()
    ]
    return _frame(rows)


def clinic_series(entry: dict[str, Any], metric: str) -> pd.DataFrame:
    """Each clinic's own `metric` ('auroc' or 'loss') per round from its evaluation rows
    (AUROC with the CI over its patients); training loss from its train rows when
    `metric` is 'train loss'."""
    phase, key = ("train", "loss") if metric == "train loss" else ("evaluate", metric)
    rows = []
    for c in entry.get("clinics", []):
        if c["phase"] != phase:
            continue
        q = c.get("quality") or {}
        rows.append(
            {
                "round": c["server_round"],
                "series": c["clinic"],
                "value": c.get(key),
                "low": q.get("auroc_low") if key == "auroc" else None,
                "high": q.get("auroc_high") if key == "auroc" else None,
                "dashed": False,
            }
        )
    return _frame(rows)


def compare_series(entries: list[dict[str, Any]], names: list[str]) -> pd.DataFrame:
    """The pooled AUROC curves of several runs, each series named after its run."""
    frames = [auroc_series(e, series=name, clinic_mean=False) for e, name in zip(entries, names)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def has_pooled(entry: dict[str, Any]) -> bool:
    return any((r.get("pooled") or {}).get("auroc") is not None for r in entry.get("rounds", []))
