"""Each clinic's data mix for a run, from the data card it sent with its first reply
(counts only: labels, splits, patients, equipment, formats, rejections).

One wide table of 15+ columns was cut off even at 1400 px and glued counts onto names
("1024-2047 px 10"). Here the images per label are a bar chart with the clinics written
flat, the counts a narrow table, and equipment and formats a long table of one clinic,
one kind, one line of "name: count" each, which fits any screen.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.charts import stacked_bars
from dashboard.tables import show_table
from dashboard.words import NONE_WORD, display_frame

KINDS = {
    "modalities": "Modalities",
    "manufacturers": "Manufacturers",
    "sizes": "Image sizes",
    "transfer_syntaxes": "Transfer syntaxes",
    "rejected": "Rejected files, by reason",
}


def counted(mapping: dict[str, int] | None, unit: str = "images") -> str:
    """{'CR': 10, 'DX': 2} -> 'CR: 10 images · DX: 2 images' (largest first), 'none' if empty."""
    items = sorted((mapping or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return " · ".join(f"{name}: {n} {unit if n != 1 else unit.rstrip('s')}" for name, n in items) or NONE_WORD


def _splits(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [card.get(name) or {} for name in ("train", "val")]


def counts_frame(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per clinic: images per split, patients, images per label, rejected, filtered."""
    rows = []
    for item in cards:
        card, (train, val) = item["card"], _splits(item["card"])
        row: dict[str, Any] = {
            "Clinic": item["clinic"],
            "Training images": train.get("total_images", 0),
            "Validation images": val.get("total_images", 0),
            "Patients": train.get("total_patients", 0) + val.get("total_patients", 0),
        }
        for label in card.get("labels", []):
            row[f"{label} images"] = sum(s.get("images", {}).get(label, 0) for s in (train, val))
        row["Rejected files"] = card.get("rejected_total", 0)
        row["Left out by filters"] = card.get("filtered", 0)
        rows.append(row)
    return display_frame(pd.DataFrame(rows), default="0")


def label_bars(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """(who, part, count): images per label per clinic, for the bar chart."""
    rows = [
        {
            "who": item["clinic"],
            "part": label,
            "count": sum(s.get("images", {}).get(label, 0) for s in _splits(item["card"])),
        }
        for item in cards
        for label in item["card"].get("labels", [])
    ]
    return pd.DataFrame(rows, columns=["who", "part", "count"])


def equipment_frame(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """Clinic, kind (modality, manufacturer, size, transfer syntax, rejection) and counts."""
    rows = [
        {
            "Clinic": item["clinic"],
            "What": label,
            "Counts": counted(item["card"].get(key), "files" if key == "rejected" else "images"),
        }
        for item in cards
        for key, label in KINDS.items()
    ]
    return pd.DataFrame(rows, columns=["Clinic", "What", "Counts"])


def show_data_mix(entry: dict[str, Any]) -> None:
    """Chart, counts and equipment of every clinic's data card."""
    st.subheader("Data mix per clinic")
    cards = entry.get("data_cards") or []
    if not cards:
        st.info("No clinic has sent its data card for this run yet (it comes with a clinic's first reply).")
        return
    bars = label_bars(cards)
    if not bars.empty:
        st.altair_chart(stacked_bars(bars, "Images (training and validation)", "Label"), width="stretch")
    show_table(counts_frame(cards))
    show_table(equipment_frame(cards))
    st.caption("Counts only, from each clinic's data card: no image or patient leaves a clinic.")
