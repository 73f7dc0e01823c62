"""A row of headline figures: label, value and a note, side by side.

st.metric cuts a value that does not fit its column ("0.714 [0…", "no bas…"), and the
interval or the word is exactly what must be read. Here each value is plain bold text
that wraps inside its column, so the whole of it is always shown.
"""

from __future__ import annotations

import streamlit as st


def show_figures(items: list[tuple[str, str, str]]) -> None:
    """One column per (label, value, note); an empty note adds nothing."""
    for column, (label, value, note) in zip(st.columns(len(items)), items):
        with column:
            st.caption(label)
            st.markdown(f"**{value}**")
            if note:
                st.caption(note)
