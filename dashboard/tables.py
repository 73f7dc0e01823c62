"""How the dashboard draws a table so that it fits its column at 1100 px as at 1600 px.

st.dataframe sizes each column to its content and scrolls sideways when they add up to
more than the page has: with the sidebar open, 1100 px leaves about 640 px, and a run
name like "pneu-radimagenet-resnet50-unfreeze-all-lr0.001 · run 1" is half of that. A
table with names or sentences in it is therefore a static table (`show_table`), whose
cells wrap (at spaces and hyphens) instead; st.dataframe stays for short numeric tables
(`show_grid`), shown at full height so no rows hide in a scroll box.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st


def show_table(frame: pd.DataFrame) -> None:
    """A static table, its first column as the row names (no meaningless 0, 1, 2...);
    as text, because st.table hides an index of consecutive numbers (a rank, a round)."""
    named = frame.set_index(frame.columns[0])
    named.index = named.index.map(str)
    st.table(named)


def show_grid(frame: pd.DataFrame) -> None:
    """An interactive table (sortable) tall enough for every row."""
    st.dataframe(frame, hide_index=True, width="stretch", height="content")
