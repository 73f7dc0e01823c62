"""The Clinic register page: every enrolled clinic, whether it may connect, its node key's
fingerprint, when it was enrolled or revoked, and the last thing it did (radfed.audit).

Who may take part in the federation is the first question of any review; until now only
`coordinator clinic list` answered it. The public key itself is not shown: its
fingerprint names it, and that is what the audit trail and the clinic's bundle show.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.audit_trail import KIND_WORDS
from dashboard.context import current
from dashboard.tables import show_table
from dashboard.words import NONE_WORD, NOT_YET, when
from radfed.audit import Registry
from radfed.store import StoreError

STATUS_WORDS = {"active": "active: may connect", "revoked": "revoked: refused"}


def register_frame(clinics: list[Any], events: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per clinic, every cell a word."""
    last: dict[str, dict[str, Any]] = {}
    for e in events:  # oldest first: the last one wins
        if e.get("clinic"):
            last[e["clinic"]] = e
    rows = []
    for c in clinics:
        event = last.get(c.name)
        rows.append(
            {
                "Clinic": c.name,
                "Status": STATUS_WORDS.get(c.status, c.status),
                "Node key": c.fingerprint,
                "Enrolled": when(c.enrolled_at),
                "Revoked": when(c.revoked_at, empty=NONE_WORD),
                "Registered with the SuperLink": "yes" if c.node_id else NOT_YET,
                "Last event": f"{KIND_WORDS.get(event['kind'], event['kind'])}, {when(event['at'])}"
                if event
                else NONE_WORD,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["Clinic", "Status", "Node key", "Enrolled", "Revoked", "Registered with the SuperLink", "Last event"],
    )


def render() -> None:
    st.title("Clinic register")
    context = current()
    if context is None:
        return
    try:
        registry = Registry(context.store)
        clinics, events = registry.clinics(), registry.events(limit=5000)
    except StoreError as exc:
        st.error(str(exc))
        return
    if not clinics:
        st.info(
            "No clinic enrolled yet: `coordinator clinic add NAME` enrols one and writes its bundle "
            "(`coordinator demo` enrols its own)."
        )
        return
    frame = register_frame(clinics, events)
    with st.sidebar:
        st.markdown("**Filter clinics**")
        statuses = st.multiselect("Status", sorted(frame["Status"].unique()), key="register-status", placeholder="all")
        text = st.text_input("Name contains", key="register-name")
    shown = frame[frame["Status"].isin(statuses)] if statuses else frame
    if text.strip():
        shown = shown[shown["Clinic"].str.contains(text.strip(), case=False, regex=False)]
    active = int((frame["Status"] == STATUS_WORDS["active"]).sum())
    st.caption(f"{len(frame)} clinics enrolled, {active} active. Showing {len(shown)}.")
    if shown.empty:
        st.info("No clinic matches the filters.")
        return
    show_table(shown)
    st.caption(
        "Node key: the fingerprint of the clinic's public node key (its bundle shows the same). "
        "Registered: the SuperLink knows the key and gave the clinic a node id."
    )


if __name__ == "__main__":
    render()
