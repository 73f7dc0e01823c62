"""The ROC and calibration page: ROC curves, reliability diagrams and the confusion matrix
at the stated threshold, for the pooled validation images and each clinic's.

Drawn from the score histograms the clinics sent with their evaluations (the store keeps
them: Store.score_histograms), the very counts the pooled AUROC and its threshold came
from, so the curve's area is the AUROC on the leaderboard. The threshold is always
stated, as p(finding) and as log-odds: a sensitivity without its threshold is not a
figure anyone can check or reuse.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.charts import confusion_chart, reliability_chart, roc_chart
from dashboard.context import page_run, run_name
from dashboard.scores import auroc, confusion, confusion_frame, histogram, pooled, rates, reliability_frame, roc_frame
from dashboard.words import number
from radfed.model_card import spec_values
from radfed.ranking import final_round
from radfed.store import StoreError

POOLED = "all clinics pooled"


def finding_names(entry: dict[str, Any]) -> tuple[str, str]:
    """(no-finding label, finding label) as the task names them."""
    labels = list(spec_values(entry.get("spec_json") or "{}").get("labels") or ["normal", "finding"])
    return str(labels[0]), str(labels[-1]) if len(labels) == 2 else "a finding"


def round_words(entry: dict[str, Any], server_round: int) -> str:
    """'round 2 (final model, selected)', 'round 0 (the initial model)'."""
    notes = []
    if server_round == 0:
        notes.append("the initial model")
    last = final_round(entry)
    if last is not None and last["server_round"] == server_round:
        notes.append("final model")
    if (entry.get("selected") or {}).get("round") == server_round:
        notes.append("selected")
    return f"round {server_round}" + (f" ({', '.join(notes)})" if notes else "")


def series_summaries(rows: list[dict[str, Any]], server_round: int) -> dict[str, list[dict[str, Any]]]:
    """Per series (pooled, then each clinic, a held-out clinic marked) the summaries to draw."""
    evaluated = [r for r in rows if r["server_round"] == server_round and r["phase"] == "evaluate"]
    out: dict[str, list[dict[str, Any]]] = {POOLED: [r["scores"] for r in evaluated]} if evaluated else {}
    for r in evaluated:
        out[r["clinic"]] = [r["scores"]]
    for r in rows:
        if r["phase"] == "holdout" and r["server_round"] == server_round:
            out[f"{r['clinic']} (held out)"] = [r["scores"]]
    return out


def threshold_of(entry: dict[str, Any], server_round: int) -> tuple[float | None, float | None]:
    """(p(finding), log-odds) of the federation's threshold for that round's model."""
    row = next((r for r in entry.get("rounds", []) if r["server_round"] == server_round), {})
    q = row.get("pooled") or {}
    return q.get("threshold"), q.get("threshold_logit")


def roc_frames(series: dict[str, list[dict[str, Any]]], cut: float | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, operating points at `cut`) with each series named with its AUROC."""
    curves, points = [], []
    for name, summaries in series.items():
        hist = pooled(summaries) if len(summaries) > 1 else histogram(summaries[0])
        curve = roc_frame(hist)
        if curve.empty:
            continue
        label = f"{name} (AUROC {auroc(hist):.3f})"
        curves.append(curve.assign(series=label))
        if cut is not None:
            sens, spec = rates(confusion(hist, cut))
            points.append({"series": label, "fpr": 1 - spec, "tpr": sens})
    return (
        pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["fpr", "tpr", "step", "series"]),
        pd.DataFrame(points, columns=["series", "fpr", "tpr"]),
    )


def render() -> None:
    chosen = page_run("ROC and calibration")
    if chosen is None:
        return
    context, entry = chosen
    try:
        rows = context.store.score_histograms(entry["run_id"])
    except StoreError as exc:
        st.error(str(exc))
        return
    rounds = sorted({r["server_round"] for r in rows}, reverse=True)
    if not rounds:
        st.info(
            f"{run_name(entry)} has no score histograms: no clinic has evaluated a model yet, or the run "
            f"was recorded by a radfed that did not keep them. ROC curves, reliability diagrams and the "
            f"confusion matrix need them."
        )
        return
    last = final_round(entry)
    start = rounds.index(last["server_round"]) if last and last["server_round"] in rounds else 0
    chosen = st.selectbox(
        "Model of", rounds, index=start, format_func=lambda r: round_words(entry, r), key="diagnostics-round"
    )
    series = series_summaries(rows, chosen)
    shown = st.multiselect("Validation images of", list(series), default=list(series), key="diagnostics-series")
    picked = {name: series[name] for name in shown}
    p_cut, cut = threshold_of(entry, chosen)
    negative, finding = finding_names(entry)
    if cut is None:
        st.info("No pooled threshold for this round: the pooled images hold one class only.")
    else:
        st.markdown(
            f"**Threshold:** a finding is called at p({finding}) ≥ {number(p_cut, '.4f')} "
            f"(log-odds ≥ {cut:.3f}): the federation's operating point, the one that maximises "
            f"Youden's J (sensitivity + specificity − 1) on all clinics' validation images together."
        )
    left, right = st.columns(2)
    with left:
        st.markdown("**ROC curve**: diamonds mark the threshold above")
        curves, points = roc_frames(picked, cut)
        if curves.empty:
            st.info("An ROC curve needs images of both classes.")
        else:
            st.altair_chart(roc_chart(curves, points), width="stretch")
        drawn = {label.rsplit(" (AUROC", 1)[0] for label in curves.get("series", [])}
        one_class = [name for name in picked if name not in drawn]
        if one_class:
            st.caption(f"No curve for {', '.join(one_class)}: the validation images there hold one class only.")
    with right:
        st.markdown("**Reliability diagram**: on the dashed line, p(finding) is the share of findings")
        frames = [reliability_frame(s).assign(series=name) for name, s in picked.items()]
        cal = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if cal.empty:
            st.info("Pick at least one set of validation images.")
        else:
            st.altair_chart(reliability_chart(cal), width="stretch")
            st.caption("Each point is a bin of p(finding) tenths; the pale disc's area is its images.")
    if cut is not None and series:
        st.subheader("Confusion matrix at the threshold")
        whose = st.selectbox("Images of", list(series), key="diagnostics-confusion")
        summaries = series[whose]
        counts = confusion(pooled(summaries) if len(summaries) > 1 else histogram(summaries[0]), cut)
        sens, spec = rates(counts)
        st.altair_chart(confusion_chart(confusion_frame(counts, (negative, finding))), width="stretch")
        st.caption(
            f"{whose}: sensitivity {number(sens, '.2f', empty='not defined (no findings)')}, "
            f"specificity {number(spec, '.2f', empty='not defined (no images without it)')} at "
            f"p({finding}) ≥ {number(p_cut, '.4f')}. Percentages are of each row (what the image shows)."
        )


if __name__ == "__main__":
    render()
