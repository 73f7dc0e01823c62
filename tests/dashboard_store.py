"""A store filled the way a federation fills it, for the dashboard's page tests, and a
reader of everything a page shows.

`fill` records a small sweep (two scenarios, each with RadImageNet and ImageNet
weights), a failed run and a run still in progress through the real RunRecorder: each
clinic's figures are made from logits by radfed.reply.from_logits and travel as Flower
metrics, exactly as a ClientApp sends them, so the pooled AUROC, its CI, the thresholds
and the score histograms are the ones a federation would store. Train rows, traffic and
checkpoints are written with the Store calls the recorder uses for them; the clinic
register and audit trail through radfed.audit.Registry.

`visible_texts` walks an AppTest element tree and returns every string a person could
read: markdown, captions, labels, options, every table cell and header, chart titles and
the values charts draw (legend entries come from those).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SERVER_PATH = "/srv/radfed-models"  # a weight file's folder on the "server": never shown
UNWANTED = re.compile(r"\bNone\b|\bnan\b|\bNaN\b|<NA>|\bNaT\b")
FLOWER_ID = re.compile(r"\d{16,}")
# the fields of Streamlit's element messages that a person reads (not ids, urls, hashes)
SHOWN_FIELDS = {
    "body",
    "label",
    "options",
    "value",
    "text",
    "help",
    "placeholder",
    "caption",
    "title",
    "delta",
    "display_value",
}
CARD = {
    "labels": ["normal", "pneumonia"],
    "train": {
        "images": {"normal": 12, "pneumonia": 8},
        "patients": {"normal": 6, "pneumonia": 4},
        "total_images": 20,
        "total_patients": 10,
    },
    "val": {
        "images": {"normal": 6, "pneumonia": 4},
        "patients": {"normal": 3, "pneumonia": 2},
        "total_images": 10,
        "total_patients": 5,
    },
    "rejected": {"corrupt": 2},
    "rejected_total": 2,
    "modalities": {"CR": 21, "DX": 9},
    "manufacturers": {"Acme": 30},
    "sizes": {"1024-2047 px": 30},
    "transfer_syntaxes": {"JPEG-LS Lossless Image Compression": 30},
    "filtered": 1,
}


@dataclass
class Filled:
    """What `fill` recorded, for the tests to check the pages against."""

    url: str
    runs: dict[str, int] = field(default_factory=dict)  # experiment name -> store run id
    flower_ids: dict[str, str] = field(default_factory=dict)
    checkpoints: Path | None = None


def clinic_reply(name: str, node: int, separation: float, seed: int, n: int = 24):
    """A clinic's evaluation reply as the strategy reads it from Flower's record."""
    from flwr.app import MetricRecord

    from radfed.reply import from_logits
    from strategies.utils import ClinicReply, split_metrics

    rng = np.random.default_rng(seed)
    labels = np.r_[0, 1, (rng.random(n - 2) < 0.4).astype(int)]
    scores = labels * separation + rng.normal(0, 1, n)
    logits = np.stack([np.zeros(n), scores], axis=1).astype(np.float32)
    sent = MetricRecord(from_logits(logits, labels, np.arange(n) // 2, seed=0).to_metrics("num-examples"))
    metrics, lists = split_metrics([sent])
    return ClinicReply(node_id=str(node), clinic=name, device="cpu", metrics=metrics, lists=lists)


def spec(name: str, **values: Any):
    from radfed.spec import ExperimentSpec

    base = {
        "labels": ("normal", "pneumonia"),
        "backbone": "resnet50",
        "image_size": 224,
        "rounds": 2,
        "weights": f"{SERVER_PATH}/resnet50.pth",
    }
    return ExperimentSpec(name=name, **{**base, **values})


def record_run(
    store,
    registry,
    folder: Path,
    spec_,
    flower_id: str,
    separation: float,
    seed: int,
    rounds: int,
    finish: str | None = "completed",
) -> int:
    """One run: per round, both clinics train (train rows, traffic) and evaluate the
    model (through the RunRecorder, pooled figures and histograms included)."""
    from server.recorder import RunRecorder

    exp = store.create_experiment(
        spec_.name,
        spec_.to_json(),
        spec_.backbone,
        spec_.weights,
        spec_.strategy,
        sweep=spec_.sweep or None,
        weight_source=spec_.weight_source or None,
    )
    run = store.start_run(exp, flower_id, rounds_planned=spec_.rounds)
    recorder = RunRecorder(store, run, spec_, folder / "ckpt" / str(run), audit=registry, flwr_run_id=flower_id)
    clinics = [("clinic-a", 7_900_000_000_000_000_001), ("clinic-b", 15_000_000_000_000_000_002)]
    for rnd in range(rounds + 1):
        if rnd > 0:
            for name, node in clinics:
                store.record_clinic_result(
                    run, rnd, name, node, "train", 0.9 / rnd, 20, device="cpu", bytes_down=2_500_000, bytes_up=2_400_000
                )
                registry.event("contributed", clinic=name, node_id=node, flwr_run_id=flower_id, server_round=rnd)
            store.record_round(
                run, rnd, train_loss=0.9 / rnd, duration_s=42.0 + rnd, bytes_down=5_000_000, bytes_up=4_800_000
            )
            path = folder / f"run{run}-round-{rnd:03d}.pt"
            path.write_bytes(b"weights")
            store.record_checkpoint(run, rnd, path, "ab" * 32, "pooled_auroc")
        replies = [
            clinic_reply(name, node, separation * (rnd + 1) / (rounds + 1), seed + 10 * rnd + i)
            for i, (name, node) in enumerate(clinics)
        ]
        recorder.clinic_replies(rnd, "evaluate", replies)
        recorder.round_metrics(rnd, "evaluate", None, replies)
        if rnd == 0:
            for name, node in clinics:
                store.record_data_card(run, name, node, CARD)
    if finish:
        store.finish_run(
            run,
            finish,
            final_auroc=recorder.val_auroc.get(rounds),
            error=f"CUDA out of memory in round 2 (see {SERVER_PATH}/logs/serverapp.log)"
            if finish == "failed"
            else None,
        )
    return run


def fill(db_url: str, folder: Path) -> Filled:
    """The sweep (2 scenarios x 2 weight sources), a failed run, a running run, a
    centralised baseline, three enrolled clinics (one revoked) and their audit trail."""
    from radfed.audit import Registry
    from radfed.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    filled = Filled(db_url, checkpoints=folder)
    with Store(db_url) as store:
        registry = Registry(store)
        for name, key in (
            ("clinic-a", "sha256:aaaa000011112222"),
            ("clinic-b", "sha256:bbbb000011112222"),
            ("clinic-c", "sha256:cccc000011112222"),
        ):
            registry.add_clinic(name, f"ecdsa-sha2-nistp384 KEY{name}", key)
        registry.set_node_id("clinic-a", 7_900_000_000_000_000_001)
        registry.revoke("clinic-c")
        plan = [
            ("pneu-radimagenet-resnet50-unfreeze-all-lr0.001", "radimagenet", "none", 1e-3, 2.0),
            ("pneu-imagenet-resnet50-unfreeze-all-lr0.001", "imagenet", "none", 1e-3, 1.5),
            ("pneu-radimagenet-resnet50-freeze-all-lr0.01", "radimagenet", "all", 1e-2, 1.0),
            ("pneu-imagenet-resnet50-freeze-all-lr0.01", "imagenet", "all", 1e-2, 0.5),
        ]
        for i, (name, source, freeze, lr, separation) in enumerate(plan):
            flower = str(1_234_567_890_123_456_000 + i)
            s = spec(name, freeze=freeze, learning_rate=lr, sweep="pneu", weight_source=source)
            filled.runs[name] = record_run(store, registry, folder, s, flower, separation, seed=100 * i, rounds=2)
            filled.flower_ids[name] = flower
        crashed = spec("densenet-crashed", backbone="densenet121", weights="random", strategy="fedprox")
        filled.runs["densenet-crashed"] = record_run(
            store, registry, folder, crashed, "9876543210987654321", 0.2, seed=7, rounds=1, finish="failed"
        )
        live = spec("live-resnet18", backbone="resnet18", weights="random", rounds=3)
        run = record_run(store, registry, folder, live, "5555555555555555555", 2.0, seed=9, rounds=1, finish=None)
        store.record_clinic_result(run, 2, "clinic-a", 7_900_000_000_000_000_001, "train", 0.3, 20, device="cpu")
        filled.runs["live-resnet18"] = run
        first = plan[0][0]
        exp_id = next(e["experiment_id"] for e in store.leaderboard() if e["experiment"] == first)
        store.record_baseline(
            exp_id,
            {
                "auroc": 0.95,
                "auroc_low": 0.9,
                "auroc_high": 0.99,
                "images": 20,
                "patients": 10,
                "threshold": 0.5,
                "sensitivity": 0.9,
                "specificity": 0.8,
            },
            {"clinic-a": {"auroc": 0.96}, "clinic-b": {"auroc": 0.94}},
        )
    return filled


# ------------------------------------------------------------------- what a page shows


def walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def frame_texts(frame) -> list[str]:
    return (
        [str(c) for c in frame.columns]
        + [str(i) for i in frame.index]
        + [str(v) for v in frame.astype(object).values.ravel()]
    )


def chart_texts(proto) -> list[str]:
    """Titles in the Vega-Lite spec and the string values of its data (legend entries)."""
    import pandas as pd
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    texts = []

    def titles(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "title" and isinstance(value, str):
                    texts.append(value)
                titles(value)
        elif isinstance(node, list):
            for value in node:
                titles(value)

    titles(json.loads(proto.spec))
    for dataset in proto.datasets:
        frame = convert_arrow_bytes_to_pandas_df(dataset.data.data)
        for column in frame.columns:
            texts.append(str(column))
            if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
                texts += [str(v) for v in frame[column]]
    return texts


def visible_texts(at) -> list[str]:
    """Every string a person could read on the page AppTest rendered."""
    texts = []
    for node in walk(at._tree):
        if node.type in ("dataframe", "table"):
            texts += frame_texts(node.value)
        elif node.type == "vega_lite_chart":
            texts += chart_texts(node.proto)
        elif node.type in ("root", "main", "sidebar", "event", "flex_container", "column"):
            continue
        elif getattr(node, "proto", None) is not None and hasattr(node.proto, "ListFields"):
            for descriptor, value in node.proto.ListFields():
                if descriptor.name not in SHOWN_FIELDS:
                    continue
                texts += [str(v) for v in value] if descriptor.is_repeated else [str(value)]
    return texts


def unreadable(at) -> list[str]:
    """Texts showing None/NaN, a Flower run id or a path on the server, and blank cells
    (an empty value must read as a word too)."""
    return [
        t[:200] or "(a blank cell)"
        for t in visible_texts(at)
        if UNWANTED.search(t) or FLOWER_ID.search(t) or SERVER_PATH in t or "/tmp/" in t or not t.strip()
    ]
