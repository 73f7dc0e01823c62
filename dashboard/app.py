"""radfed dashboard: the experiment leaderboard and, per run, its curves, clinics, each
clinic's data mix, checkpoints, model card and portable exports (dashboard/exports.py).

Started by `dashboard` (dashboard/cli.py) as
`streamlit run app.py -- --db URL`; without `--db` it reads DATABASE_URL or the
default ~/.radfed/radfed.db.  It only reads the store, which holds clinic names,
node ids and numbers -- no patient data is ever shown.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.auth import record_download, require_login
from dashboard.exports import show_exports
from dashboard.per_class import show_per_class
from radfed.reply import CLINIC_MEAN_AUROC, LABELS, POOLED_AUROC
from radfed.results import mean_sd, rounds_done, summary
from radfed.store import Store, StoreError, default_database_url

EMPTY_MESSAGE = "No experiments yet: run `coordinator demo` to train a first federated model."
HEADLINE = POOLED_AUROC[0].upper() + POOLED_AUROC[1:]
CLINIC_MEAN = CLINIC_MEAN_AUROC[0].upper() + CLINIC_MEAN_AUROC[1:]
LEADERBOARD_COLUMNS = ["Rank", "Experiment", "Backbone", "Weights", "Strategy", "Rounds",
                       HEADLINE, "95% CI low", "95% CI high", "vs #1", CLINIC_MEAN, "Selected round",
                       "Fed ÷ central", "Held-out clinic", "Warnings", "Status"]
QUALITY_FIELDS = ("auroc", "auroc_low", "auroc_high", "sensitivity", "specificity", "threshold",
                  "threshold_logit", "ece", "images", "patients")
QUALITY_COLUMNS = ["Clinic", "Role"] + [LABELS[k] for k in QUALITY_FIELDS]
CLINIC_COLUMNS = {"clinic": "Clinic", "server_round": "Round", "phase": "Phase", "loss": "Loss",
                  "accuracy": "Accuracy", "auroc": "AUROC", "num_examples": "Examples",
                  "device": "Device", "bytes_down": "Bytes down", "bytes_up": "Bytes up"}
TRAFFIC_COLUMNS = {"server_round": "Round", "duration_s": "Seconds", "bytes_down": "MB down",
                   "bytes_up": "MB up"}


def database_url(argv: Sequence[str]) -> str:
    """`--db URL` / `--db=URL` from the script args, else DATABASE_URL or the default.

    Parsed by hand because argparse would exit the Streamlit script on any
    argument it does not know.
    """
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--db="):
            return arg.split("=", 1)[1]
    return default_database_url()


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Store:
    """One Store (connection pool) per URL for the whole Streamlit server."""
    return Store(url)


def overlap(entry: dict[str, Any], rank: int) -> str:
    """'#1', '≈ #1' (CI overlaps the leader's) or 'below #1' (it does not)."""
    if rank == 1 and entry.get("pooled_auroc") is not None:
        return "#1"
    return {True: "≈ #1", False: "below #1"}.get(entry.get("overlaps_top"), "")


def leaderboard_frame(board: list[dict[str, Any]]) -> pd.DataFrame:
    """The leaderboard as shown: one row per run, ranked by pooled AUROC (radfed.ranking)."""
    rows = []
    for rank, e in enumerate(board, start=1):
        pooled = e.get("pooled") or {}
        rows.append([rank, e["experiment"], e["backbone"], e["weights"], e["strategy"], rounds_done(e),
                     e.get("pooled_auroc"), pooled.get("auroc_low"), pooled.get("auroc_high"), overlap(e, rank),
                     e.get("clinic_mean_auroc"), (e.get("selected") or {}).get("round"), e.get("vs_central"),
                     e.get("holdout") or "", "; ".join(e.get("warnings") or []), e["status"]])
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


def run_label(entry: dict[str, Any]) -> str:
    """Selectbox label: rank, experiment and Flower run id make each run unique."""
    auroc = "n/a" if entry.get("pooled_auroc") is None else f"{entry['pooled_auroc']:.3f}"
    rank = f"#{entry['rank']}" if entry["status"] != "running" else "live"
    flag = " ⚠" if entry.get("warnings") else ""
    return f"{rank} {entry['experiment']} (run {entry['flwr_run_id']}, {POOLED_AUROC} {auroc}){flag}"


def show_leaderboard(board: list[dict[str, Any]]) -> None:
    """Ranked table of finished runs."""
    st.subheader(f"Leaderboard: ranked by {POOLED_AUROC} (final model, 95 % CI over patients)")
    st.dataframe(
        leaderboard_frame(board), hide_index=True, width="stretch",
        column_config={name: st.column_config.NumberColumn(format="%.4f")
                       for name in (HEADLINE, "95% CI low", "95% CI high", CLINIC_MEAN, "Fed ÷ central")},
    )
    st.caption(f"{HEADLINE}: the final model over every clinic's validation patients together, the "
               f"figure runs are ranked by. ≈ #1: its 95 % CI overlaps the leader's, so the two cannot "
               f"be told apart on this data. {CLINIC_MEAN}: the clinics' own AUROCs, weighted by "
               f"validation images. Selected round: the checkpoint with the best {POOLED_AUROC}.")


def auroc_curve_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Per round: the clinics' example-weighted AUROC, and the pooled AUROC with its 95 % CI."""
    rows = {r["server_round"]: {CLINIC_MEAN_AUROC: r.get("val_auroc"),
                                POOLED_AUROC: (r.get("pooled") or {}).get("auroc"),
                                "pooled CI low": (r.get("pooled") or {}).get("auroc_low"),
                                "pooled CI high": (r.get("pooled") or {}).get("auroc_high")}
            for r in entry["rounds"]}
    frame = pd.DataFrame.from_dict(rows, orient="index", dtype=float).sort_index()
    frame.index.name = "round"
    return frame.dropna(axis=1, how="all")


def show_curves(entry: dict[str, Any]) -> None:
    """Validation AUROC (clinic mean, pooled with its 95 % CI) and losses per round."""
    rounds = pd.DataFrame(entry["rounds"])
    if rounds.empty:
        st.info("No rounds recorded for this run yet.")
        return
    rounds = rounds.set_index("server_round").sort_index()
    left, right = st.columns(2)
    with left:
        st.markdown("**Validation AUROC per round** (pooled: 95 % CI over patients)")
        st.line_chart(auroc_curve_frame(entry))
    with right:
        st.markdown("**Loss per round**")
        st.line_chart(rounds[["train_loss", "val_loss"]])


def traffic_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Time and model bytes per training round (MB = 10^6 bytes, all clinics together)."""
    rows = [r for r in entry["rounds"] if r["server_round"] > 0]
    frame = pd.DataFrame(rows, columns=list(TRAFFIC_COLUMNS))
    for col in ("bytes_down", "bytes_up"):
        frame[col] = frame[col].astype(float) / 1e6
    return frame.rename(columns=TRAFFIC_COLUMNS)


def show_traffic(entry: dict[str, Any]) -> None:
    """Seconds and bytes each round took (head-only rounds send the head alone)."""
    st.markdown("**Time and model traffic per round**")
    frame = traffic_frame(entry)
    if frame.empty:
        st.info("No rounds recorded for this run yet.")
        return
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("Seconds", "MB down", "MB up")})


def sweep_frame(board: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean ± sd pooled AUROC per sweep, backbone and weight source (tagged runs only)."""
    rows = [[g["sweep"], g["backbone"], g["weight_source"], g["runs"], g["failed"], mean_sd(g)]
            for g in summary(board)]
    return pd.DataFrame(rows, columns=["Sweep", "Backbone", "Weights", "Runs", "Failed",
                                       f"{POOLED_AUROC} mean ± sd"])


def show_clinics(entry: dict[str, Any]) -> None:
    """What each clinic reported per round (numbers only)."""
    st.markdown("**Per-clinic results**")
    if not entry["clinics"]:
        st.info("No per-clinic results recorded for this run.")
        return
    frame = pd.DataFrame(entry["clinics"])[list(CLINIC_COLUMNS)].rename(columns=CLINIC_COLUMNS)
    st.dataframe(frame, hide_index=True, width="stretch")


def quality_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Final model per clinic (in federation, held out) and pooled, then the centralised
    baseline's pooled and per-clinic figures, side by side."""
    last = max((c["server_round"] for c in entry["clinics"] if c["phase"] == "evaluate"), default=None)
    rows = []
    for c in entry["clinics"]:
        if (c["phase"] == "evaluate" and c["server_round"] == last) or c["phase"] == "holdout":
            q = c.get("quality") or {}
            role = "held out" if c["phase"] == "holdout" else "federated"
            rows.append([c["clinic"], role] + _quality_row({**q, "auroc": c["auroc"],
                                                            "images": c["num_examples"]}))
    pooled = entry.get("pooled") or {}
    if pooled:
        rows.append(["all (pooled)", "federated"] + _quality_row({**pooled, "patients": None}))
    base = entry.get("baseline") or {}
    for clinic, q in sorted((base.get("clinics") or {}).items()):
        rows.append([clinic, "centralised"] + _quality_row(q))
    if base:
        rows.append(["all (pooled)", "centralised"] + _quality_row(
            {**base, "images": base.get("num_examples"), "patients": base.get("num_patients")}))
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


def _quality_row(figures: dict[str, Any]) -> list[Any]:
    return [figures.get(k) for k in QUALITY_FIELDS]


def show_quality(entry: dict[str, Any]) -> None:
    """AUROC with 95 % CI over patients, operating point and calibration, vs centralised."""
    frame = quality_frame(entry)
    if frame.empty:
        return
    st.markdown("**Learning quality: final model per clinic and pooled, against the centralised baseline**")
    st.dataframe(frame, hide_index=True, width="stretch")
    st.caption("CI: 95 % bootstrap over patients (pooled: patients resampled within their "
               "clinic). Thresholds: Youden's J on each clinic's validation data; a held-out "
               "clinic uses the federation's pooled threshold. Pooled federated figures come "
               "from the clinics' score histograms and their resampled replicates.")
def _counts(mapping: dict[str, int]) -> str:
    """{'CR': 10, 'DX': 2} -> 'CR 10, DX 2' (largest first)."""
    return ", ".join(f"{name} {count}" for name, count in sorted(mapping.items(), key=lambda kv: -kv[1])) or "-"


def data_mix_frame(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per clinic from its data card: images per label, patients, equipment, formats, rejections."""
    rows = []
    for item in cards:
        card = item["card"]
        splits = [card.get(name, {}) for name in ("train", "val")]
        row: dict[str, Any] = {"Clinic": item["clinic"]}
        for label in card.get("labels", []):
            row[f"{label} images"] = sum(s.get("images", {}).get(label, 0) for s in splits)
            row[f"{label} patients"] = sum(s.get("patients", {}).get(label, 0) for s in splits)
        row.update({
            "Train images": splits[0].get("total_images", 0), "Val images": splits[1].get("total_images", 0),
            "Patients": sum(s.get("total_patients", 0) for s in splits),
            "Modalities": _counts(card.get("modalities", {})), "Manufacturers": _counts(card.get("manufacturers", {})),
            "Sizes": _counts(card.get("sizes", {})), "Transfer syntaxes": _counts(card.get("transfer_syntaxes", {})),
            "Rejected": card.get("rejected_total", 0), "Rejected by reason": _counts(card.get("rejected", {})),
            "Filtered out": card.get("filtered", 0),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def show_data_mix(entry: dict[str, Any]) -> None:
    """Each clinic's data mix (counts from its data card, sent once per run)."""
    st.markdown("**Data mix per clinic**")
    cards = entry.get("data_cards") or []
    if not cards:
        st.info("No clinic has sent its data card for this run yet.")
        return
    frame = data_mix_frame(cards)
    labels = [c[: -len(" images")] for c in frame.columns if c.endswith(" images") and c not in
              ("Train images", "Val images")]
    if labels:
        st.bar_chart(frame.set_index("Clinic")[[f"{label} images" for label in labels]])
    st.dataframe(frame, hide_index=True, width="stretch")


def best_and_last(checkpoints: list[dict[str, Any]], selected_round: int | None = None
                  ) -> list[tuple[str, dict[str, Any]]]:
    """The selected (best pooled AUROC) and last checkpoint, once each if they coincide.
    Without a recorded selection, the highest metric is the selected one."""
    if not checkpoints:
        return []
    last = max(checkpoints, key=lambda c: (c["server_round"], c["id"]))
    scored = [c for c in checkpoints if c["metric_value"] is not None]
    chosen = [c for c in checkpoints if c["server_round"] == selected_round]
    best = chosen[-1] if chosen else max(scored, key=lambda c: c["metric_value"]) if scored else None
    if best is None or best["id"] == last["id"]:
        return [("selected and last" if best else "last", last)]
    return [("selected", best), ("last", last)]


def file_reader(path: Path) -> Callable[[], bytes]:
    """Deferred read, so large checkpoints are only loaded when downloaded."""
    return path.read_bytes


def show_checkpoints(entry: dict[str, Any]) -> None:
    """Checkpoint table plus download buttons for files still on disk."""
    st.markdown("**Checkpoints**")
    checkpoints = entry["checkpoints"]
    if not checkpoints:
        st.info("No checkpoints recorded for this run.")
        return
    frame = pd.DataFrame(checkpoints)[["server_round", "metric_name", "metric_value", "sha256", "path"]]
    st.dataframe(frame.rename(columns={"server_round": "Round", "metric_name": "Metric",
                                       "metric_value": "Value", "sha256": "SHA-256", "path": "Path"}),
                 hide_index=True, width="stretch")
    for kind, checkpoint in best_and_last(checkpoints, (entry.get("selected") or {}).get("round")):
        path = Path(checkpoint["path"])
        label = f"Download {kind} checkpoint (round {checkpoint['server_round']})"
        if path.is_file():
            st.download_button(label, data=file_reader(path), file_name=path.name,
                               mime="application/octet-stream", key=f"dl-{checkpoint['id']}",
                               on_click=record_download,
                               args=(f"{kind} checkpoint, round {checkpoint['server_round']}, of run {entry['flwr_run_id']}",))
        else:
            st.caption(f"{label}: file not on this machine ({path})")


def privacy_text(privacy: dict[str, Any]) -> str:
    """A run's differential-privacy settings in one line, e.g. 'client-fixed (noise_multiplier=1.0, ...)'."""
    params = ", ".join(f"{k}={v}" for k, v in privacy.items() if k != "mode")
    return privacy.get("mode", "none") + (f" ({params})" if params else "")


def show_run(entry: dict[str, Any]) -> None:
    """Details of one run."""
    st.subheader(f"{entry['experiment']}: run {entry['flwr_run_id']} ({entry['status']})")
    privacy = privacy_text(entry.get("privacy") or {})
    st.caption(f"{entry['backbone']} · weights {entry['weights']} · {entry['strategy']} · "
               f"privacy {privacy} · "
               f"{rounds_done(entry)}/{entry['rounds_planned']} rounds · "
               f"started {entry['started_at']} · finished {entry['finished_at'] or '-'}")
    if entry["error"]:
        st.error(f"Run failed: {entry['error']}")
    for warning in entry.get("warnings") or []:
        st.warning(f"Model warning: {warning}")
    show_curves(entry)
    show_clinics(entry)
    show_quality(entry)
    show_per_class(entry)
    show_traffic(entry)
    show_data_mix(entry)
    show_checkpoints(entry)
    show_exports(entry)


def main(argv: Sequence[str]) -> None:
    """Render the page from whatever the store holds right now."""
    st.set_page_config(page_title="radfed", layout="wide")
    require_login()  # beyond loopback: the login form only, until a researcher logs in
    st.title("radfed: federated fine-tuning")
    url = database_url(argv)
    try:
        store = open_store(url)
        entries = store.leaderboard(include_running=True)
    except StoreError as exc:
        st.error(str(exc))
        return
    st.caption(f"Database: {store.safe_url}")
    st.button("Refresh")
    finished = [e for e in entries if e["status"] != "running"]
    running = [e for e in entries if e["status"] == "running"]
    if not entries:
        st.info(EMPTY_MESSAGE)
        return
    if finished:
        show_leaderboard(finished)
        sweeps = sweep_frame(finished)
        if not sweeps.empty:
            st.markdown(f"**Sweeps: {POOLED_AUROC} per backbone and weight source, mean ± sd over scenarios**")
            st.dataframe(sweeps, hide_index=True, width="stretch")
    else:
        st.info("No finished experiments yet; runs in progress are listed below.")
    if running:
        st.markdown(f"**In progress:** {len(running)} run(s)")
    by_id = {e["run_id"]: e for e in finished + running}
    # Options are run ids, not entries, so the selection survives new rounds arriving.
    selected = st.selectbox("Run", list(by_id), format_func=lambda i: run_label(by_id[i]), key="run")
    if selected is not None:
        show_run(by_id[selected])


main(sys.argv[1:])
