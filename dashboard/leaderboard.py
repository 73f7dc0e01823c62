"""The Leaderboard page: finished runs ranked by the one headline figure, the pooled AUROC
of the final model with its 95 % CI, ties made visible.

Two AUROCs side by side with nothing saying which to trust is how a researcher ends up
citing the wrong one. The ranking is by the pooled AUROC (radfed.ranking says why: it is
what one deployed model and one threshold would get over every clinic's patients); the
clinic mean is a secondary column, and the caption says so. A run whose CI overlaps the
leader's is marked "≈ #1": on this data the two cannot be told apart, and a table that
ranks them 1 and 2 without saying so invites over-reading the order.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.context import EMPTY_MESSAGE, current, run_name
from dashboard.filters import FACETS, facets, filter_sidebar, group_frame
from dashboard.tables import show_table
from dashboard.words import NO_BASELINE, NONE_WORD, auroc_text, capitalised, display_frame, number, run_duration, when
from radfed.ranking import annotate
from radfed.reply import CLINIC_MEAN_AUROC, POOLED_AUROC
from radfed.results import rounds_done

HEADLINE = capitalised(POOLED_AUROC) + " [95% CI]"
CLINIC_MEAN = capitalised(CLINIC_MEAN_AUROC)
CAPTION = (
    f"**Trust the {POOLED_AUROC}.** It is the final model's AUROC over every clinic's validation "
    f"patients together, with its 95 % CI (bootstrap over patients, within each clinic): the figure "
    f"one deployed model with one threshold would get, and the one runs are ranked by. The "
    f"{CLINIC_MEAN_AUROC} averages each clinic's own AUROC (weighted by its validation images); with "
    f"20–50 images a clinic each of those is noisy, and a model that shifts its scores from clinic to "
    f"clinic looks better on it than it is. **≈ #1**: the run's CI overlaps the leader's, so the two "
    f"cannot be told apart on this data. **below #1**: its CI lies below the leader's."
)


def tie_word(entry: dict[str, Any]) -> str:
    """'#1', '≈ #1', 'below #1', or why it cannot be compared."""
    if entry.get("pooled_auroc") is None:
        return "not ranked: no pooled AUROC"
    if entry["rank"] == 1:
        return "#1"
    return {True: "≈ #1", False: "below #1"}.get(entry.get("overlaps_top"), "no CI to compare")


def versus_central(entry: dict[str, Any]) -> str:
    """'0.97 × (centralised 0.912)' or 'no baseline yet'."""
    base, ratio = entry.get("baseline") or {}, entry.get("vs_central")
    if ratio is None:
        return NO_BASELINE
    return f"{ratio:.2f} × (centralised {number(base.get('auroc'))})"


def held_out(entry: dict[str, Any]) -> str:
    """'clinic-3: 0.871 [0.80–0.93]' for a leave-one-clinic-out run, else 'none'."""
    rows = [c for c in entry.get("clinics", []) if c["phase"] == "holdout"]
    if not rows:
        return f"{entry['holdout']}: not evaluated yet" if entry.get("holdout") else NONE_WORD
    row, q = rows[-1], rows[-1].get("quality") or {}
    return f"{row['clinic']}: {auroc_text(row.get('auroc'), q.get('auroc_low'), q.get('auroc_high'))}"


def ranked(board: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs shown, ranked among themselves (radfed.ranking.annotate on copies): with a
    filter on, #1 and "≈ #1" are about the runs on the screen, not a run filtered out."""
    return annotate([dict(e) for e in board])


def ranking_frame(board: list[dict[str, Any]]) -> pd.DataFrame:
    """The ranked table: rank, run, headline with CI, tie mark, clinic mean, status."""
    rows = []
    for e in ranked(board):
        pooled = e.get("pooled") or {}
        rows.append(
            {
                "#": e["rank"],
                "Run": run_name(e),
                HEADLINE: auroc_text(
                    e.get("pooled_auroc"), pooled.get("auroc_low"), pooled.get("auroc_high"), empty="no pooled AUROC"
                ),
                "vs #1": tie_word(e),
                CLINIC_MEAN: number(e.get("clinic_mean_auroc")),
            }
        )
    return display_frame(pd.DataFrame(rows, columns=["#", "Run", HEADLINE, "vs #1", CLINIC_MEAN]))


def outcome_frame(board: list[dict[str, Any]]) -> pd.DataFrame:
    """How each run went: status (⚠: warnings below), rounds, when it started, how long it took,
    and who submitted it (the experiment queue; "coordinator" for runs started on the CLI)."""
    rows = [
        {
            "Run": run_name(e),
            "Status": e["status"] + (" ⚠" if e.get("warnings") else ""),
            "Rounds": f"{rounds_done(e)} of {e['rounds_planned']}",
            "Started": when(e.get("started_at")),
            "Took": run_duration(e),
            "Submitted by": e.get("submitted_by") or "coordinator",
        }
        for e in board
    ]
    return display_frame(pd.DataFrame(rows))


def model_frame(board: list[dict[str, Any]]) -> pd.DataFrame:
    """The model each run kept, against the centralised baseline and a held-out clinic."""
    rows = []
    for e in board:
        selected = (e.get("selected") or {}).get("round")
        rows.append(
            {
                "Run": run_name(e),
                "Selected round": NONE_WORD if selected is None else str(selected),
                "Fed ÷ central": versus_central(e),
                "Held-out clinic": held_out(e),
            }
        )
    return display_frame(pd.DataFrame(rows))


def setup_frame(board: list[dict[str, Any]]) -> pd.DataFrame:
    """What each run trained: its facets (task, backbone, weights, freeze, strategy, privacy)."""
    return display_frame(
        pd.DataFrame([{"Run": run_name(e), **{FACETS[k]: v for k, v in facets(e).items()}} for e in board])
    )


def render() -> None:
    st.title("Leaderboard")
    context = current()
    if context is None:
        return
    if not context.entries:
        st.info(EMPTY_MESSAGE)
        return
    board = ranked(filter_sidebar(context.finished, key="leaderboard"))
    if context.running:
        st.info(
            f"{len(context.running)} run(s) in progress: their rounds, clinics and time left are on the "
            f"Live progress page."
        )
        st.page_link("live.py", label="Live progress", icon=":material/monitoring:")
    if not board:
        st.info(
            "No finished run matches the filters."
            if context.finished
            else "No finished runs yet: the leaderboard ranks runs once they end."
        )
        return
    st.subheader(f"Ranked by {POOLED_AUROC} of the final model")
    show_table(ranking_frame(board))
    st.markdown(CAPTION)
    flagged = [e for e in board if e.get("warnings")]
    for e in flagged:
        st.warning(f"⚠ {run_name(e)}: " + "; ".join(e["warnings"]))
    st.subheader("How each run went")
    show_table(outcome_frame(board))
    show_table(model_frame(board))
    st.caption(
        "Selected round: the checkpoint with the best pooled AUROC (kept as the run's model). "
        "Fed ÷ central: the pooled AUROC over that of a centralised baseline with the same model, "
        "budget and seed (`coordinator baseline`). Held-out clinic: leave-one-clinic-out runs only."
    )
    st.subheader("What each run trained")
    show_table(setup_frame(board))
    facet = st.selectbox(
        "Group runs by", ["nothing"] + list(FACETS), format_func=lambda f: FACETS.get(f, f), key="group-by"
    )
    if facet != "nothing":
        show_table(display_frame(group_frame(board, facet)))


if __name__ == "__main__":
    render()
