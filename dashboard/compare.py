"""The Compare runs page: several runs' pooled AUROC curves overlaid, each with its 95 %
CI band, their final figures, and their settings side by side.

Comparing runs one detail page at a time means remembering numbers across pages; here
the curves share one axis, so a run that is better only inside the other's band is seen
to be no better, and the settings table marks the settings that differ, which is what
explains a difference in the curves.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.charts import curves_with_bands
from dashboard.context import choose_runs, current, run_name
from dashboard.curves import compare_series
from dashboard.filters import filter_sidebar
from dashboard.settings import side_by_side
from dashboard.tables import show_table
from dashboard.words import NONE_WORD, auroc_text, capitalised, display_frame, number, run_duration
from radfed.reply import CLINIC_MEAN_AUROC, POOLED_AUROC
from radfed.results import rounds_done


def figures_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: headline with CI, clinic mean, selected round, rounds, duration."""
    rows = []
    for e in entries:
        pooled = e.get("pooled") or {}
        selected = (e.get("selected") or {}).get("round")
        rows.append(
            {
                "Run": run_name(e),
                capitalised(POOLED_AUROC) + " [95% CI]": auroc_text(
                    e.get("pooled_auroc"), pooled.get("auroc_low"), pooled.get("auroc_high"), empty="not yet"
                ),
                capitalised(CLINIC_MEAN_AUROC): number(e.get("clinic_mean_auroc"), empty="not yet"),
                "Selected round": NONE_WORD if selected is None else str(selected),
                "Rounds, time": f"{rounds_done(e)} of {e['rounds_planned']}, {run_duration(e)}",
            }
        )
    return display_frame(pd.DataFrame(rows))


def render() -> None:
    st.title("Compare runs")
    context = current()
    if context is None:
        return
    entries = filter_sidebar(context.entries, key="compare")
    if not entries:
        st.info("No runs to compare yet." if not context.entries else "No run matches the filters.")
        return
    chosen = choose_runs(entries)
    if not chosen:
        st.info("Pick two or more runs to compare.")
        return
    st.subheader(f"{capitalised(POOLED_AUROC)} per round, with 95 % CI bands")
    curves = compare_series(chosen, [run_name(e) for e in chosen])
    if curves.empty:
        st.info("None of these runs has a pooled AUROC yet.")
    else:
        st.altair_chart(curves_with_bands(curves, POOLED_AUROC, "Run"), width="stretch")
        st.caption("Where two bands overlap, the runs cannot be told apart at that round on this data.")
    st.subheader("Final figures")
    show_table(figures_frame(chosen))
    st.subheader("Settings side by side")
    only = st.toggle("Only the settings that differ", value=len(chosen) > 1, key="compare-differing")
    frame = side_by_side(chosen, only_differing=only)
    if frame.empty:
        st.info("These runs ran with the same settings.")
    else:
        show_table(frame)


if __name__ == "__main__":
    render()
