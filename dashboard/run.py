"""The Run details page: one run's headline, learning curves, final figures at the stated
threshold, settings, traffic, data mix, checkpoints, model card and exports.

What a researcher needs to judge and reuse a run, on one page: which figure to trust
(the pooled AUROC with its CI, the clinic mean beside it), how it learned (AUROC with a CI
band, losses), the threshold every sensitivity and specificity is read at, the settings
it ran with, and the files named after it ("EXPERIMENT-run-N-round-R.pt"), never after
a path on the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.charts import curves_with_bands
from dashboard.context import file_stem, on_download, page_run, run_name
from dashboard.curves import auroc_series, loss_series
from dashboard.data_mix import show_data_mix
from dashboard.exports import show_exports
from dashboard.figures import show_figures
from dashboard.filters import facets
from dashboard.per_class import show_per_class
from dashboard.settings import show_settings
from dashboard.tables import show_grid, show_table
from dashboard.words import (
    NO_BASELINE,
    NONE_WORD,
    NOT_MEASURED,
    auroc_text,
    count,
    display_frame,
    duration,
    megabytes,
    number,
    run_duration,
    when,
    without_paths,
)
from radfed.reply import CLINIC_MEAN_AUROC, POOLED_AUROC
from radfed.results import rounds_done


def summary_line(entry: dict[str, Any]) -> str:
    """'resnet18 · random init · fedavg · no differential privacy · 2 of 2 rounds · started … · took …'."""
    f = facets(entry)
    return (
        f"{f['backbone']} · {f['weight_source']} · {f['freeze']} · {f['strategy']} · {f['privacy']} · "
        f"{rounds_done(entry)} of {entry['rounds_planned']} rounds · started {when(entry.get('started_at'))} · "
        f"{'took ' if entry.get('finished_at') else ''}{run_duration(entry)}"
    )


def final_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """The final model's pooled figures (and the centralised baseline's, when there is
    one) with the threshold they are read at stated in the same row."""
    rows = []
    pooled = entry.get("pooled") or {}
    if pooled:
        rows.append(figures_row("federated, all clinics pooled", pooled, pooled.get("images"), None))
    base = entry.get("baseline") or {}
    if base:
        rows.append(
            figures_row("centralised baseline, pooled", base, base.get("num_examples"), base.get("num_patients"))
        )
    return display_frame(pd.DataFrame(rows))


def figures_row(model: str, q: dict[str, Any], images: Any, patients: Any) -> dict[str, str]:
    return {
        "Model": model,
        "AUROC [95% CI]": auroc_text(q.get("auroc"), q.get("auroc_low"), q.get("auroc_high")),
        "Threshold p(finding)": number(q.get("threshold")),
        "Sensitivity": number(q.get("sensitivity"), ".2f"),
        "Specificity": number(q.get("specificity"), ".2f"),
        "ECE": number(q.get("ece")),
        "Images": count(images),
        "Patients": count(patients, empty="not sent (pooled from counts)"),
    }


OPERATING = ["Model", "AUROC [95% CI]", "Threshold p(finding)", "Sensitivity", "Specificity"]
COUNTS = ["Model", "ECE", "Images", "Patients"]


def traffic_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Per training round: how long it took and the model megabytes sent each way."""
    rows = [
        {
            "Round": r["server_round"],
            "Took": duration(r.get("duration_s"), empty=NOT_MEASURED),
            "Sent to clinics": megabytes(r.get("bytes_down")),
            "Sent back": megabytes(r.get("bytes_up")),
        }
        for r in entry.get("rounds", [])
        if r["server_round"] > 0
    ]
    return display_frame(pd.DataFrame(rows, columns=["Round", "Took", "Sent to clinics", "Sent back"]))


def checkpoint_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Round, its pooled AUROC, whether it is the selected model, a short digest, where the file is."""
    selected = (entry.get("selected") or {}).get("round")
    rows = [
        {
            "Round": c["server_round"],
            POOLED_AUROC: number(c.get("metric_value"), empty="not evaluated"),
            "Kept as": "selected (best pooled AUROC)" if c["server_round"] == selected else "not selected",
            "SHA-256 (first 12)": str(c["sha256"])[:12],
            "File": "on this server" if Path(c["path"]).is_file() else "not on this server",
        }
        for c in entry.get("checkpoints", [])
    ]
    return display_frame(pd.DataFrame(rows))


def download_rows(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The selected and the last checkpoint, once each when they are the same round."""
    checkpoints = entry.get("checkpoints") or []
    if not checkpoints:
        return []
    last = max(checkpoints, key=lambda c: (c["server_round"], c["id"]))
    chosen = (entry.get("selected") or {}).get("round")
    best = next((c for c in reversed(checkpoints) if c["server_round"] == chosen), None)
    if best is None or best["id"] == last["id"]:
        return [("selected and last" if best else "last", last)]
    return [("selected", best), ("last", last)]


def show_checkpoints(entry: dict[str, Any]) -> None:
    st.subheader("Checkpoints")
    if not entry.get("checkpoints"):
        st.info("No checkpoint saved yet: one is written at the end of every round.")
        return
    show_table(checkpoint_frame(entry))
    for kind, c in download_rows(entry):
        path = Path(c["path"])
        name = file_stem(entry, c["server_round"]) + ".pt"
        label = f"Download the {kind} checkpoint (round {c['server_round']})"
        if path.is_file():
            st.download_button(
                label,
                data=path.read_bytes,
                file_name=name,
                mime="application/octet-stream",
                key=f"dl-{c['id']}",
                on_click=on_download(name) or "rerun",
            )
        else:
            st.caption(f"{label}: the file is not on this server (moved, deleted, or the run trained elsewhere).")


def show_curves(entry: dict[str, Any]) -> None:
    if not entry.get("rounds"):
        st.info("No round recorded yet.")
        return
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Validation AUROC per round**: {POOLED_AUROC} with its 95 % CI band; {CLINIC_MEAN_AUROC} dashed")
        frame = auroc_series(entry)
        if frame.empty:
            st.info("No validation AUROC recorded yet.")
        else:
            st.altair_chart(curves_with_bands(frame, "AUROC", "Figure"), width="stretch")
    with right:
        st.markdown("**Loss per round**: the clinics' mean, weighted by images")
        frame = loss_series(entry)
        if frame.empty:
            st.info("No loss recorded yet.")
        else:
            st.altair_chart(curves_with_bands(frame, "Cross-entropy loss", "Loss"), width="stretch")


def show_headline(entry: dict[str, Any]) -> None:
    pooled = entry.get("pooled") or {}
    selected = (entry.get("selected") or {}).get("round")
    show_figures(
        [
            (
                f"{POOLED_AUROC} [95% CI]",
                auroc_text(
                    entry.get("pooled_auroc"), pooled.get("auroc_low"), pooled.get("auroc_high"), empty="not yet"
                ),
                "the headline",
            ),
            (CLINIC_MEAN_AUROC, number(entry.get("clinic_mean_auroc"), empty="not measured"), "secondary"),
            ("Selected round", NONE_WORD if selected is None else str(selected), "best pooled AUROC"),
            (
                "Fed ÷ central",
                NO_BASELINE if entry.get("vs_central") is None else f"{entry['vs_central']:.2f}",
                "pooled AUROC over the centralised baseline's",
            ),
        ]
    )


def render() -> None:
    chosen = page_run("Run details")
    if chosen is None:
        return
    context, entry = chosen
    st.subheader(f"{run_name(entry)} ({entry['status']})")
    st.caption(summary_line(entry))
    if entry.get("error"):
        st.error(f"The run failed: {without_paths(entry['error'])}")
    if entry.get("stopped_early"):
        st.info(entry["stopped_early"])
    for warning in entry.get("warnings") or []:
        st.warning(f"Model warning: {warning}")
    show_headline(entry)
    st.caption(
        f"Trust the {POOLED_AUROC}: every clinic's validation patients together, as one deployed model "
        f"would see them; the {CLINIC_MEAN_AUROC} averages small, noisy per-clinic figures."
    )
    st.subheader("Learning curves")
    show_curves(entry)
    st.subheader("Final model")
    final = final_frame(entry)
    if final.empty:
        st.info("No pooled figures yet: they come once the clinics have evaluated a model.")
    else:
        show_table(final[OPERATING])
        show_table(final[COUNTS])
        st.caption(
            "Sensitivity and specificity are read at the stated threshold on p(finding): the one that "
            "maximises Youden's J (sensitivity + specificity − 1) on all clinics' validation images. "
            "Patients: the pooled figures are made from the clinics' score counts, which carry no "
            "patient, so only the centralised baseline counts patients."
        )
    if not entry.get("baseline"):
        st.caption(
            "No centralised baseline yet: `coordinator baseline` trains one on the union of the clinics' "
            "data with the same model, budget and seed, and the ratio appears here."
        )
    show_per_class(entry)
    st.subheader("Settings")
    show_settings(entry)
    st.subheader("Time and model traffic per round")
    traffic = traffic_frame(entry)
    if traffic.empty:
        st.info("No training round finished yet.")
    else:
        show_grid(traffic)
        st.caption("MB = 10⁶ bytes, all clinics together; head-only rounds send only the head.")
    show_data_mix(entry)
    show_checkpoints(entry)
    show_exports(entry)


if __name__ == "__main__":
    render()
