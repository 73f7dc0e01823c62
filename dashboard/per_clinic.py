"""The Per clinic page: each clinic's final AUROC with its CI beside the pooled one (a
forest plot), each clinic's learning curves, and what each clinic reported per round,
evaluations and training apart.

A 21-row scroll box that interleaved train and evaluate rows hid the one question a
researcher asks here: does the model work at every clinic, or only on average? The
forest plot answers it at a glance; the tables below are split by what the row is
(an evaluation of a model, or a round of local training), sized to show every row, with
bytes in MB like the traffic table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.charts import curves_with_bands, forest_plot
from dashboard.context import page_run, run_name
from dashboard.curves import clinic_series
from dashboard.tables import show_grid, show_table
from dashboard.words import NOT_MEASURED, auroc_text, count, display_frame, megabytes, number, percent
from radfed.ranking import final_round
from radfed.reply import POOLED_AUROC

POOLED_ROW = "all clinics pooled"
PROBLEM_PHASES = {
    "excluded": "update excluded",
    "late": "replied late",
    "lost": "lost (no heartbeat)",
    "revoked": "revoked",
    "failed": "failed",
}


ONE_CLASS = "one class only"


def empty_word(q: dict[str, Any]) -> str:
    """Why a clinic has no AUROC or operating point: its validation images hold one class
    (prevalence 0 or 1), or the figure was not sent."""
    return ONE_CLASS if q.get("prevalence") in (0.0, 1.0) else NOT_MEASURED


def final_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The final model's evaluation at each clinic, then a held-out clinic's."""
    last = final_round(entry)
    at = last["server_round"] if last else None
    rows = [c for c in entry.get("clinics", []) if c["phase"] == "evaluate" and c["server_round"] == at]
    return rows + [c for c in entry.get("clinics", []) if c["phase"] == "holdout"]


def forest_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """who, role, auroc, low, high, text: each clinic, then pooled (the headline)."""
    rows = []
    for c in final_rows(entry):
        q = c.get("quality") or {}
        held = c["phase"] == "holdout"
        rows.append(
            {
                "who": c["clinic"] + (" (held out)" if held else ""),
                "role": "clinic held out of training" if held else "clinic in the federation",
                "auroc": c.get("auroc"),
                "low": q.get("auroc_low"),
                "high": q.get("auroc_high"),
            }
        )
    pooled = entry.get("pooled") or {}
    if pooled.get("auroc") is not None:
        rows.append(
            {
                "who": POOLED_ROW,
                "role": POOLED_AUROC,
                "auroc": pooled.get("auroc"),
                "low": pooled.get("auroc_low"),
                "high": pooled.get("auroc_high"),
            }
        )
    frame = pd.DataFrame(rows, columns=["who", "role", "auroc", "low", "high"]).astype(
        {"auroc": float, "low": float, "high": float}
    )
    frame = frame.dropna(subset=["auroc"]).reset_index(drop=True)
    frame["text"] = [auroc_text(a, lo, hi) for a, lo, hi in zip(frame["auroc"], frame["low"], frame["high"])]
    return frame


def operating_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Per clinic (and pooled, and the centralised baseline's per clinic): AUROC [CI] and
    sensitivity and specificity at the stated threshold."""
    rows = []
    for c in final_rows(entry):
        q = c.get("quality") or {}
        held = c["phase"] == "holdout"
        word = empty_word(q)
        rows.append(
            {
                "Clinic": c["clinic"] + (" (held out: federation's threshold)" if held else ""),
                "AUROC [95% CI]": auroc_text(c.get("auroc"), q.get("auroc_low"), q.get("auroc_high"), empty=word),
                "Threshold p(finding)": number(q.get("threshold"), empty=word),
                "Sensitivity": number(q.get("sensitivity"), ".2f", empty=word),
                "Specificity": number(q.get("specificity"), ".2f", empty=word),
            }
        )
    pooled = entry.get("pooled") or {}
    if pooled:
        rows.append(
            {
                "Clinic": POOLED_ROW,
                "AUROC [95% CI]": auroc_text(pooled.get("auroc"), pooled.get("auroc_low"), pooled.get("auroc_high")),
                "Threshold p(finding)": number(pooled.get("threshold")),
                "Sensitivity": number(pooled.get("sensitivity"), ".2f"),
                "Specificity": number(pooled.get("specificity"), ".2f"),
            }
        )
    for clinic, q in sorted(((entry.get("baseline") or {}).get("clinics") or {}).items()):
        rows.append(
            {
                "Clinic": f"{clinic}, centralised baseline",
                "AUROC [95% CI]": auroc_text(q.get("auroc"), q.get("auroc_low"), q.get("auroc_high")),
                "Threshold p(finding)": number(q.get("threshold")),
                "Sensitivity": number(q.get("sensitivity"), ".2f"),
                "Specificity": number(q.get("specificity"), ".2f"),
            }
        )
    return display_frame(pd.DataFrame(rows))


def calibration_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Per clinic: ECE, accuracy of the model's own call (p(finding) ≥ 0.5), the share of
    images with the finding (what accuracy must beat), images and patients."""
    rows = []
    for c in final_rows(entry):
        q = c.get("quality") or {}
        rows.append(
            {
                "Clinic": c["clinic"],
                "ECE": number(q.get("ece")),
                "Accuracy at p(finding) ≥ 0.5": number(c.get("accuracy"), ".2f"),
                "Share with the finding": percent(q.get("prevalence")),
                "Images": count(c.get("num_examples")),
                "Patients": count(q.get("patients")),
            }
        )
    return display_frame(pd.DataFrame(rows))


def evaluation_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Every evaluation of a model at a clinic: round, clinic, AUROC [CI], loss, images."""
    rows = [
        {
            "Round": c["server_round"],
            "Clinic": c["clinic"],
            "AUROC [95% CI]": auroc_text(
                c.get("auroc"),
                (c.get("quality") or {}).get("auroc_low"),
                (c.get("quality") or {}).get("auroc_high"),
                empty=empty_word(c.get("quality") or {}),
            ),
            "Loss": number(c.get("loss")),
            "Images": count(c.get("num_examples")),
            "Device": c.get("device"),
        }
        for c in entry.get("clinics", [])
        if c["phase"] == "evaluate"
    ]
    return display_frame(pd.DataFrame(rows), empty={"Device": "not reported"})


def training_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Every round of local training at a clinic: loss, images, model MB each way."""
    rows = [
        {
            "Round": c["server_round"],
            "Clinic": c["clinic"],
            "Training loss": number(c.get("loss")),
            "Images": count(c.get("num_examples")),
            "Model sent to it": megabytes(c.get("bytes_down")),
            "Update sent back": megabytes(c.get("bytes_up")),
        }
        for c in entry.get("clinics", [])
        if c["phase"] == "train"
    ]
    return display_frame(pd.DataFrame(rows))


def problem_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Excluded updates, late, lost, revoked and failed clinics, with why."""
    rows = [
        {
            "Round": c["server_round"],
            "Clinic": c["clinic"],
            "What happened": PROBLEM_PHASES[c["phase"]],
            "Why": c.get("note") or "no reason recorded",
        }
        for c in entry.get("clinics", [])
        if c["phase"] in PROBLEM_PHASES
    ]
    return pd.DataFrame(rows, columns=["Round", "Clinic", "What happened", "Why"])


def show_curves(entry: dict[str, Any]) -> None:
    auroc, loss = clinic_series(entry, "auroc"), clinic_series(entry, "loss")
    left, right = st.columns(2)
    with left:
        st.markdown("**Each clinic's validation AUROC**, with the 95 % CI over its patients")
        if auroc.empty:
            st.info(
                "No clinic AUROC to draw: no clinic has evaluated a model yet, or each clinic's "
                "validation images hold one class only."
            )
        else:
            st.altair_chart(curves_with_bands(auroc, "AUROC", "Clinic"), width="stretch")
    with right:
        st.markdown("**Each clinic's validation loss**")
        if loss.empty:
            st.info("No clinic has evaluated a model yet.")
        else:
            st.altair_chart(curves_with_bands(loss, "Cross-entropy loss", "Clinic"), width="stretch")


def render() -> None:
    chosen = page_run("Per clinic")
    if chosen is None:
        return
    context, entry = chosen
    st.caption(f"{run_name(entry)} ({entry['status']})")
    st.subheader("Final model at each clinic")
    forest = forest_frame(entry)
    if forest.empty:
        st.info("No clinic has evaluated a model of this run yet.")
    else:
        st.altair_chart(forest_plot(forest), width="stretch")
        st.caption(
            "Dots: AUROC of the final model; whiskers: 95 % CI over the clinic's patients (pooled: "
            "patients resampled within their clinic). Dashed line: 0.5, a coin toss."
        )
        show_table(operating_frame(entry))
        st.caption(
            "Each clinic's sensitivity and specificity are read at its own threshold (Youden's J on its "
            "validation images); a held-out clinic is read at the federation's pooled threshold."
        )
        show_table(calibration_frame(entry))
        st.caption(
            "Accuracy counts the model's own call, a finding when p(finding) ≥ 0.5; compare it with the "
            "share of images with the finding, which a model calling every image 'no finding' "
            "would score the complement of."
        )
    st.subheader("Learning curves per clinic")
    show_curves(entry)
    st.subheader("Evaluations (the global model at each clinic, per round)")
    evaluations = evaluation_frame(entry)
    if evaluations.empty:
        st.info("No evaluations recorded yet.")
    else:
        show_grid(evaluations)
    st.caption("Round 0 is the initial model, before any training.")
    st.subheader("Local training (per round and clinic)")
    training = training_frame(entry)
    if training.empty:
        st.info("No training round recorded yet.")
    else:
        show_grid(training)
    st.caption("MB = 10⁶ bytes.")
    problems = problem_frame(entry)
    if not problems.empty:
        st.subheader("Clinics left out of a round")
        show_table(problems)


if __name__ == "__main__":
    render()
