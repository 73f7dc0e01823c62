"""The Audit trail page: every enrolment, revocation, registration, connection, round
contribution, exclusion and delivery the federation recorded (radfed.audit), filterable.

The store kept these events but nothing showed them outside `coordinator audit`; a data
protection officer or a clinic asking "did our data take part in that model?" should get
the answer from the dashboard. Runs are named as everywhere on the dashboard
("EXPERIMENT · run N"), not by Flower's run id.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.context import current, run_name
from dashboard.tables import show_table
from dashboard.words import NONE_WORD, when
from radfed.audit import EVENT_KINDS, Registry
from radfed.store import StoreError

LIMIT = 5000
PAGE_ROWS = 50
KIND_WORDS = {
    "enrolled": "enrolled",
    "revoked": "revoked",
    "registered": "registered with the SuperLink",
    "connected": "connected",
    "disconnected": "disconnected",
    "contributed": "contributed an update",
    "excluded": "update excluded",
    "late": "replied late",
    "alert": "alert",
    "lost": "lost (no heartbeat)",
    "failed": "failed",
    "delivered": "final model delivered",
}


def run_names(entries: list[dict[str, Any]]) -> dict[str, str]:
    """Flower run id (current or resumed from) → the run's dashboard name."""
    names = {}
    for e in entries:
        for flower in [e["flwr_run_id"], *[x for x in str(e.get("resumed_from") or "").split(",") if x]]:
            names[str(flower)] = run_name(e)
    return names


def audit_frame(events: list[dict[str, Any]], names: dict[str, str]) -> pd.DataFrame:
    """Newest first: when, what, clinic, run, round, detail: every cell a word."""
    rows = [
        {
            "When": when(e["at"], seconds=True),
            "What": KIND_WORDS.get(e["kind"], e["kind"]),
            "Clinic": e.get("clinic") or "the federation",
            "Run": names.get(str(e["run"]), "a run not in this store") if e.get("run") else NONE_WORD,
            "Round": NONE_WORD if e.get("round") is None else str(e["round"]),
            "Detail": e.get("detail") or NONE_WORD,
        }
        for e in reversed(events)
    ]
    return pd.DataFrame(rows, columns=["When", "What", "Clinic", "Run", "Round", "Detail"])


def filtered(frame: pd.DataFrame, kinds: list[str], clinics: list[str], runs: list[str], text: str) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    if kinds:
        keep &= frame["What"].isin([KIND_WORDS.get(k, k) for k in kinds])
    if clinics:
        keep &= frame["Clinic"].isin(clinics)
    if runs:
        keep &= frame["Run"].isin(runs)
    if text.strip():
        needle = text.strip().lower()
        keep &= frame.apply(lambda row: needle in " ".join(row.astype(str)).lower(), axis=1)
    return frame[keep]


def render() -> None:
    st.title("Audit trail")
    context = current()
    if context is None:
        return
    try:
        events = Registry(context.store).events(limit=LIMIT)
    except StoreError as exc:
        st.error(str(exc))
        return
    if not events:
        st.info("No events recorded yet: enrolling a clinic (`coordinator clinic add`) is the first.")
        return
    frame = audit_frame(events, run_names(context.entries))
    with st.sidebar:
        st.markdown("**Filter events**")
        kinds = st.multiselect(
            "What happened",
            [k for k in EVENT_KINDS if any(e["kind"] == k for e in events)],
            format_func=lambda k: KIND_WORDS.get(k, k),
            key="audit-kinds",
            placeholder="all",
        )
        clinics = st.multiselect("Clinic", sorted(frame["Clinic"].unique()), key="audit-clinics", placeholder="all")
        runs = st.multiselect("Run", sorted(set(frame["Run"]) - {NONE_WORD}), key="audit-runs", placeholder="all")
        text = st.text_input("Containing", key="audit-text", placeholder="e.g. a node key")
    shown = filtered(frame, kinds, clinics, runs, text)
    st.caption(
        f"{len(shown)} of {len(frame)} events, newest first"
        + (f" (the newest {LIMIT} only)" if len(events) >= LIMIT else "")
        + "."
    )
    if shown.empty:
        st.info("No event matches the filters.")
        return
    pages = max(1, -(-len(shown) // PAGE_ROWS))
    number = (
        st.number_input(f"Page (of {pages}, {PAGE_ROWS} events each)", 1, pages, 1, key="audit-page")
        if pages > 1
        else 1
    )
    start = (int(number) - 1) * PAGE_ROWS
    show_table(shown.iloc[start : start + PAGE_ROWS])
    st.download_button(
        "Download these events (CSV)",
        shown.to_csv(index=False),
        file_name="radfed-audit-trail.csv",
        mime="text/csv",
        key="audit-csv",
    )


if __name__ == "__main__":
    render()
