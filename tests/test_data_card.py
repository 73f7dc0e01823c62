"""The data card's way to the server: parsed from a reply's ConfigRecord, filtered to the
known keys and stored once per clinic and run (real SQLite store; the end-to-end path
runs in tests/test_demo.py)."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ConfigRecord, RecordDict

from radfed.data import DATA_CARD_RECORD, SHARED_CARD_KEYS
from radfed.spec import ExperimentSpec
from radfed.store import Store
from server.recorder import RunRecorder
from strategies.utils import ClinicReply, _data_card

CARD = {"labels": ["normal", "opacity"], "train": {"total_images": 3}, "modalities": {"CR": 3}, "rejected_total": 0}


def _content(text: object) -> RecordDict:
    return RecordDict({DATA_CARD_RECORD: ConfigRecord({"json": text})})


def test_reply_card_is_a_json_object_or_nothing() -> None:
    assert _data_card(_content(json.dumps(CARD))) == CARD
    assert _data_card(RecordDict({})) is None
    for bad in ("not json", "[1, 2]", json.dumps({"x": "y" * 70000}), 7):
        assert _data_card(_content(bad)) is None


def test_recorder_keeps_known_keys_of_train_replies_only(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'radfed.db'}") as store:
        run = store.start_run(store.create_experiment("x", "{}", "resnet18", "random", "fedavg"), "1", 1)
        recorder = RunRecorder(store, run, ExperimentSpec(name="x"), tmp_path / "ckpt")
        sent = {**CARD, "PatientID": "SMITH", "paths": ["a/b.dcm"]}
        replies = [
            ClinicReply("11", "clinic-a", "cpu", {"num-examples": 3.0, "train_loss": 0.5}, data_card=sent),
            ClinicReply("12", "clinic-b", "cpu", {"num-examples": 2.0, "train_loss": 0.4}),
            ClinicReply("13", "clinic-c", "cpu", {"num-examples": 1.0, "train_loss": 0.4}, data_card={"unknown": 1}),
        ]
        recorder.clinic_replies(1, "train", replies)
        [entry] = store.leaderboard(include_running=True)
    [stored] = entry["data_cards"]
    assert stored["clinic"] == "clinic-a" and stored["card"] == CARD
    assert set(stored["card"]) <= set(SHARED_CARD_KEYS)
