"""The per-class table of a task with more than two labels: each class's pooled one-vs-rest
AUROC with its 95 % CI, the same class at every clinic, and the macro mean (radfed.per_class).

Its own module so dashboard/app.py stays one page's layout; the table is built from a
leaderboard entry alone (`per_class_frame`), so it is tested without a browser.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.tables import show_table
from dashboard.words import count, display_frame, number
from radfed.ranking import final_round
from radfed.reply import MACRO_AUROC, format_auroc

MACRO_ROW = f"{MACRO_AUROC} (mean of classes)"
POOLED_COLUMNS = ["Class", "Pooled AUROC", "95% CI low", "95% CI high", "Positives"]


def clinic_rows(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(column name, per-class figures) of every clinic that evaluated the final model:
    the federation's clinics, then a held-out clinic."""
    last = final_round(entry)
    out = []
    for row in entry.get("clinics", []):
        if not row.get("per_class"):
            continue
        if row["phase"] == "evaluate" and last is not None and row["server_round"] == last["server_round"]:
            out.append((f"{row['clinic']} AUROC [95% CI]", row["per_class"]))
        elif row["phase"] == "holdout":
            out.append((f"{row['clinic']} (held out) AUROC [95% CI]", row["per_class"]))
    return out


def per_class_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """One row per class, then the macro mean: pooled AUROC, its CI, pooled positives and
    each clinic's AUROC [CI] ('-' where the class has no AUROC there). Empty for a
    binary task."""
    pooled = entry.get("per_class") or {}
    classes = pooled.get("classes") or []
    if not classes:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    clinics = clinic_rows(entry)
    rows = []
    for k, figures in enumerate(classes):
        row = [
            figures.get("label"),
            figures.get("auroc"),
            figures.get("auroc_low"),
            figures.get("auroc_high"),
            figures.get("positives"),
        ]
        for _, theirs in clinics:
            mine = (theirs.get("classes") or [])[k] if k < len(theirs.get("classes") or []) else {}
            row.append(format_auroc(mine.get("auroc"), mine.get("auroc_low"), mine.get("auroc_high")))
        rows.append(row)
    rows.append(
        [MACRO_ROW, pooled.get("macro_auroc"), pooled.get("macro_auroc_low"), pooled.get("macro_auroc_high"), None]
        + [format_auroc(t.get("macro_auroc"), t.get("macro_auroc_low"), t.get("macro_auroc_high")) for _, t in clinics]
    )
    return pd.DataFrame(rows, columns=POOLED_COLUMNS + [name for name, _ in clinics])


def display_per_class(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as shown: figures at three decimals, '-' and missing cells as words."""
    out = frame.copy()
    for column in ("Pooled AUROC", "95% CI low", "95% CI high"):
        out[column] = [number(v) for v in out[column]]
    out["Positives"] = [count(v, empty="see the classes") for v in out["Positives"]]
    out = out.replace("-", "no AUROC: one class only")
    return display_frame(out)


def show_per_class(entry: dict[str, Any]) -> None:
    """The per-class table, for tasks with more than two labels only."""
    frame = per_class_frame(entry)
    if frame.empty:
        return
    st.markdown("**Per-class AUROC (one class against the others): final model, pooled and per clinic**")
    show_table(display_per_class(frame))
    st.caption(
        f"Each class's score is the model's log-odds of that class against all others. "
        f"{MACRO_AUROC}: the mean of the classes' AUROCs; its CI averages the classes' "
        f"bootstrap replicates over the same resampled patients. 'no AUROC: one class only': "
        f"the class has no positives (or no negatives) among that clinic's validation images. The "
        f"leaderboard still ranks by the pooled AUROC of any finding."
    )
