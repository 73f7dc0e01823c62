"""Tasks with more than two labels: each class's one-vs-rest AUROC with its CI over
patients, at every clinic and pooled, and their macro mean (radfed.per_class), checked
against scikit-learn on the pooled raw scores, through the Flower wire format, the
recorder, the store, the leaderboard and the dashboard; then on a real federation.

Binary tasks must not change: their messages carry no per-class keys.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MetricRecord
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from radfed.evaluation import bootstrap_auroc
from radfed.per_class import class_scores, per_class_figures, pooled_per_class
from radfed.reply import ClinicValidation, from_logits
from radfed.spec import ExperimentSpec, spec_to_toml
from radfed.store import Store
from server.recorder import RunRecorder
from strategies.utils import ClinicReply, split_metrics
from tests.federation import Federation, cli

LABELS = ("normal", "nodule", "effusion")
EXACT = 1e-12  # the same AUROC summed in another order: equal but for the last bits


def _clinic(seed: int, n: int, shift: float = 0.0, classes: tuple[int, ...] = (0, 1, 2)):
    """(N x 3 logits, labels, patients): two images per patient, each patient one class,
    the true class's logit raised so the AUROCs are informative but not perfect."""
    rng = np.random.default_rng(seed)
    per_patient = rng.choice(classes, size=n // 2)
    labels = np.repeat(per_patient, 2)
    logits = rng.normal(size=(n, 3)) + shift
    logits[np.arange(n), labels] += 1.2
    return logits, labels, np.arange(n) // 2


def _wire(figures: ClinicValidation) -> ClinicValidation:
    """What the server reads back from the Flower record the ClientApp sends."""
    metrics, lists = split_metrics([MetricRecord(figures.to_metrics("num-examples"))])
    back = ClinicValidation.from_metrics(metrics, lists)
    assert back is not None
    return back


def _reply(name: str, logits, labels, patients) -> ClinicReply:
    metrics, lists = split_metrics([MetricRecord(from_logits(logits, labels, patients).to_metrics("num-examples"))])
    return ClinicReply(node_id=name[-1], clinic=name, device="cpu", metrics=metrics, lists=lists)


# ----------------------------------------------------------------------------- a clinic


def test_clinic_figures_are_scikit_learns_one_vs_rest_with_their_patient_intervals():
    logits, labels, patients = _clinic(1, 60)
    figures = per_class_figures(logits, labels, patients, seed=4)
    scores = class_scores(logits)
    for k, c in enumerate(figures.classes):
        assert c.auroc == pytest.approx(roc_auc_score(labels == k, scores[:, k]), abs=EXACT)
        # the same patient draws as the headline's own bootstrap: the same interval
        assert (c.auroc, c.auroc_low, c.auroc_high) == bootstrap_auroc(scores[:, k], labels == k, patients, seed=4)
        assert c.auroc_low <= c.auroc <= c.auroc_high
        assert (c.images, c.positives) == (60, int(np.sum(labels == k)))
    # the log-odds rank images as softmax probabilities do: scikit-learn's macro one-vs-rest
    assert figures.macro_auroc == pytest.approx(
        roc_auc_score(labels, softmax(logits, axis=1), multi_class="ovr"), abs=EXACT
    )
    assert figures.macro_auroc_low <= figures.macro_auroc <= figures.macro_auroc_high
    # class 0 against the rest is the headline "any finding" question, score for score
    assert from_logits(logits, labels, patients).auroc == pytest.approx(figures.classes[0].auroc, abs=EXACT)


def test_saturated_logits_still_rank_as_the_logits_do():
    logits, labels, patients = _clinic(2, 40)
    logits = logits * 40.0 + 60.0
    scores = class_scores(logits)
    probabilities = softmax(logits.astype(np.float32), axis=1)  # saturated: many tie at 0 or 1
    assert len(np.unique(probabilities[:, 1])) < len(np.unique(scores[:, 1])) == 40
    figures = per_class_figures(logits, labels, patients)
    for k, c in enumerate(figures.classes):
        assert c.auroc == pytest.approx(roc_auc_score(labels == k, scores[:, k]), abs=EXACT)
        assert c.auroc > roc_auc_score(labels == k, probabilities[:, k])  # the ties would have cost


def test_binary_task_messages_carry_no_per_class_keys():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(20, 2)), np.r_[0, 1, rng.integers(0, 2, 18)]
    figures = from_logits(logits, labels, np.arange(20) // 2)
    sent = figures.to_metrics("num-examples")
    assert figures.per_class is None and figures.stored_per_class(("normal", "opacity")) is None
    assert not [k for k in sent if "class" in k or "macro" in k]
    assert _wire(figures).per_class is None


# ----------------------------------------------------------------------------- pooled


def test_pooled_figures_are_scikit_learns_on_the_pooled_raw_scores():
    clinics = [_clinic(3, 40), _clinic(4, 56, shift=0.8), _clinic(5, 30, shift=-0.5)]
    sent = [_wire(from_logits(z, y, p, seed=1)) for z, y, p in clinics]
    pooled = pooled_per_class([s.per_class for s in sent], LABELS)
    scores = np.concatenate([class_scores(z) for z, _, _ in clinics])
    labels = np.concatenate([y for _, y, _ in clinics])
    for k, figures in enumerate(pooled["classes"]):
        assert figures["label"] == LABELS[k]
        assert figures["auroc"] == pytest.approx(roc_auc_score(labels == k, scores[:, k]), abs=EXACT)
        assert figures["auroc_low"] <= figures["auroc"] <= figures["auroc_high"]
        assert (figures["images"], figures["positives"], figures["clinics"]) == (126, int(np.sum(labels == k)), 3)
    assert pooled["macro_auroc"] == pytest.approx(np.mean([c["auroc"] for c in pooled["classes"]]), abs=1e-15)
    assert pooled["macro_auroc_low"] <= pooled["macro_auroc"] <= pooled["macro_auroc_high"]
    # the macro mean's interval is narrower than its widest class's: the classes' replicates
    # come from the same resampled patients, and averaging them averages their noise
    assert pooled["macro_auroc_high"] - pooled["macro_auroc_low"] < max(
        c["auroc_high"] - c["auroc_low"] for c in pooled["classes"]
    )
    # the headline is class 0 against the rest, pooled the same way
    from server.recorder import pooled_validation

    replies = [_reply(f"clinic-{i}", *c) for i, c in enumerate(clinics, 1)]
    assert pooled_validation(replies)["auroc"] == pytest.approx(pooled["classes"][0]["auroc"], abs=EXACT)


def test_a_class_absent_at_one_clinic_has_no_auroc_there_but_a_pooled_one():
    without = _clinic(6, 30, classes=(0, 1))  # no effusion among this clinic's patients
    other = _clinic(7, 40)
    mine = _wire(from_logits(*without)).per_class
    assert math.isnan(mine.classes[2].auroc) and mine.classes[2].positives == 0
    assert math.isnan(mine.macro_auroc)  # a mean over the classes present would not compare
    stored = mine.stored(LABELS)
    assert stored["classes"][2] == {
        "label": "effusion",
        "auroc": None,
        "auroc_low": None,
        "auroc_high": None,
        "images": 30,
        "positives": 0,
    }
    assert stored["macro_auroc"] is None and stored["classes"][1]["auroc"] is not None
    json.dumps(stored)
    pooled = pooled_per_class([mine, _wire(from_logits(*other)).per_class], LABELS)
    scores = np.concatenate([class_scores(without[0]), class_scores(other[0])])
    labels = np.r_[without[1], other[1]]
    effusion = pooled["classes"][2]
    assert effusion["auroc"] == pytest.approx(roc_auc_score(labels == 2, scores[:, 2]), abs=EXACT)
    assert effusion["auroc_low"] <= effusion["auroc"] <= effusion["auroc_high"]  # both clinics' patients resampled
    assert pooled["macro_auroc_low"] <= pooled["macro_auroc"] <= pooled["macro_auroc_high"]


def test_a_class_absent_everywhere_gives_no_pooled_auroc_and_no_macro():
    clinics = [_clinic(8, 20, classes=(0, 1)), _clinic(9, 24, classes=(0, 1))]
    pooled = pooled_per_class([_wire(from_logits(*c)).per_class for c in clinics], LABELS)
    assert pooled["classes"][2]["auroc"] is None and pooled["classes"][2]["positives"] == 0
    assert pooled["classes"][0]["auroc"] is not None
    assert (pooled["macro_auroc"], pooled["macro_auroc_low"], pooled["macro_auroc_high"]) == (None, None, None)
    assert pooled_per_class([], LABELS) is None
    # scalars only (secure aggregation's legacy messages carry no lists): the clinic's own
    # figures are read, nothing is pooled
    metrics, _ = split_metrics([MetricRecord(from_logits(*clinics[0]).to_metrics("num-examples"))])
    scalars_only = ClinicValidation.from_metrics(metrics, {}).per_class
    assert scalars_only.classes[1].auroc == pytest.approx(per_class_figures(*clinics[0]).classes[1].auroc)
    assert pooled_per_class([scalars_only], LABELS) is None


# ----------------------------------------------------------------------------- stored and shown


def _recorded_run(tmp_path: Path) -> tuple[str, dict]:
    """A 3-class run through the recorder into a real SQLite store: round 1 evaluated at two
    clinics (one without effusion), as the strategies hand replies over."""
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    store = Store(db)
    spec = ExperimentSpec(name="three", labels=LABELS, backbone="resnet18", image_size=32, rounds=1)
    exp = store.create_experiment(spec.name, spec.to_json(), spec.backbone, spec.weights, spec.strategy)
    run = store.start_run(exp, "9", rounds_planned=1)
    recorder = RunRecorder(store, run, spec, tmp_path / "ckpt")
    data = {"clinic-1": _clinic(10, 40), "clinic-2": _clinic(11, 30, classes=(0, 1))}
    replies = [_reply(name, *c) for name, c in data.items()]
    recorder.clinic_replies(1, "evaluate", replies)
    recorder.round_metrics(1, "evaluate", None, replies)
    store.finish_run(run, "completed", final_auroc=recorder.val_auroc[1])
    return db, data


def test_recorded_per_class_figures_reach_the_leaderboard_and_its_table(tmp_path):
    from rich.console import Console

    from server.leaderboard import leaderboard_table

    db, data = _recorded_run(tmp_path)
    store = Store(db)
    [entry] = json.loads(json.dumps(store.leaderboard()))
    scores = np.concatenate([class_scores(z) for z, _, _ in data.values()])
    labels = np.concatenate([y for _, y, _ in data.values()])
    per_class = entry["per_class"]
    assert [c["label"] for c in per_class["classes"]] == list(LABELS)
    for k, c in enumerate(per_class["classes"]):
        assert c["auroc"] == pytest.approx(roc_auc_score(labels == k, scores[:, k]), abs=EXACT)
        assert c["auroc_low"] <= c["auroc"] <= c["auroc_high"]
    assert entry["macro_auroc"] == per_class["macro_auroc"] is not None
    assert entry["rounds"][0]["per_class"] == per_class
    rows = {r["clinic"]: r["per_class"] for r in entry["clinics"]}
    assert rows["clinic-2"]["classes"][2]["auroc"] is None and rows["clinic-2"]["macro_auroc"] is None
    assert rows["clinic-1"]["classes"][2]["auroc"] == pytest.approx(
        roc_auc_score(data["clinic-1"][1] == 2, class_scores(data["clinic-1"][0])[:, 2]), abs=EXACT
    )
    with open(os.devnull, "w") as sink:
        console = Console(width=400, record=True, file=sink)
        console.print(leaderboard_table(store))
    text = console.export_text()
    assert "macro AUROC" in text and f"{per_class['macro_auroc']:.3f} [" in text

    from dashboard.per_class import MACRO_ROW, per_class_frame

    frame = per_class_frame(entry)
    assert frame["Class"].tolist() == [*LABELS, MACRO_ROW]
    assert frame["Pooled AUROC"].tolist()[:3] == [c["auroc"] for c in per_class["classes"]]
    assert frame["clinic-2 AUROC [95% CI]"].tolist()[2:] == ["-", "-"]  # no effusion there, so no macro
    assert per_class_frame({"per_class": None, "clinics": []}).empty  # a binary task: no table


@pytest.mark.e2e
def test_the_dashboard_renders_the_per_class_table(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    db, _ = _recorded_run(tmp_path)
    monkeypatch.setattr(sys, "argv", ["app.py", "--db", db])
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("run.py").run()
    assert not at.exception, at.exception
    table = next(t.value for t in at.table if t.value.index.name == "Class")
    assert table.index.tolist()[:3] == list(LABELS)
    assert {"clinic-1 AUROC [95% CI]", "clinic-2 AUROC [95% CI]"} <= set(table.columns)


def test_an_older_database_gets_the_per_class_columns(tmp_path):
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Store(url) as first, first.engine.begin() as conn:
        conn.execute(text("ALTER TABLE round_results DROP COLUMN per_class"))
        conn.execute(text("ALTER TABLE clinic_round_results DROP COLUMN per_class"))
    with Store(url) as reopened:
        exp = reopened.create_experiment("e", "{}", "resnet18", "random", "fedavg")
        run = reopened.start_run(exp, "1", rounds_planned=1)
        reopened.record_round(run, 1, per_class={"classes": [], "macro_auroc": 0.7})
        reopened.record_clinic_result(run, 1, "clinic-a", 1, "evaluate", 0.5, 4, per_class={"macro_auroc": 0.6})
        reopened.finish_run(run, "completed")
        [entry] = reopened.leaderboard()
        assert entry["rounds"][0]["per_class"]["macro_auroc"] == 0.7
        assert entry["clinics"][0]["per_class"] == {"macro_auroc": 0.6}


# ----------------------------------------------------------------------------- a real federation


def write_three_class_clinics(work: Path, n_patients: int, seed: int) -> list[Path]:
    """Two clinics labelled normal / nodule / effusion: each is the nodule generator's
    clinic and the effusion generator's clinic of the same index in one folder
    (subfolders nod/ and eff/), under one labels.csv with the experiment's three names."""
    from tests.generators import write_effusion, write_nodules

    parts = {
        "nod": ("nodule", write_nodules(work / "nodules", 2, n_patients=n_patients, seed=seed)),
        "eff": ("effusion", write_effusion(work / "effusion", 2, n_patients=n_patients, seed=seed)),
    }
    folders = []
    for i in range(2):
        clinic = work / f"clinic-{i + 1}"
        clinic.mkdir(parents=True)
        rows, key = [], None
        for part, (finding, made) in parts.items():
            made[i].rename(clinic / part)
            with open(clinic / part / "labels.csv", newline="", encoding="utf-8") as fh:
                (key, _), *entries = list(csv.reader(fh))
            (clinic / part / "labels.csv").unlink()
            rows += [
                (f"{part}/{where}" if key == "file" else where, "normal" if label == "normal" else finding)
                for where, label in entries
            ]
        with open(clinic / "labels.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([(key, "label"), *rows])
        folders.append(clinic)
    return folders


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_three_class_task_on_a_real_federation_reports_per_class_aurocs(tmp_path):
    federation = Federation(tmp_path)
    try:
        federation.start_superlink()
        # seed 1: clinic-2's validation patients have no effusion (its effusion AUROC is None)
        for i, folder in enumerate(write_three_class_clinics(tmp_path / "data", n_patients=12, seed=1), 1):
            federation.start_clinic(f"clinic-{i}", folder)
        spec = ExperimentSpec(
            name="three-class",
            labels=LABELS,
            backbone="resnet18",
            image_size=32,
            rounds=2,
            local_epochs=1,
            batch_size=8,
            learning_rate=1e-3,
            min_clinics=2,
            clinic_timeout=120.0,
            val_fraction=0.4,
            seed=1,
        )
        path = tmp_path / "three.toml"
        path.write_text(spec_to_toml(spec))
        run = cli(
            "server.cli",
            "run",
            str(path),
            "--control",
            federation.control,
            "--insecure",
            "--db",
            federation.db,
            "--checkpoints",
            str(tmp_path / "ckpt"),
        )
        assert run.returncode == 0, run.stderr + federation.logs()
        assert "macro AUROC" in run.stderr, run.stderr
        board = cli("server.cli", "leaderboard", "--db", federation.db, "--json")
    finally:
        federation.close()
    assert board.returncode == 0, board.stderr
    [entry] = json.loads(board.stdout)
    assert entry["status"] == "completed"
    per_class = entry["per_class"]
    assert [c["label"] for c in per_class["classes"]] == list(LABELS)
    for c in per_class["classes"]:
        assert c["positives"] > 0 and c["auroc"] is not None, per_class
        assert c["auroc_low"] <= c["auroc"] <= c["auroc_high"]
    assert entry["macro_auroc"] == pytest.approx(np.mean([c["auroc"] for c in per_class["classes"]]))
    assert per_class["macro_auroc_low"] <= entry["macro_auroc"] <= per_class["macro_auroc_high"]
    assert per_class["classes"][0]["auroc"] == pytest.approx(entry["pooled_auroc"], abs=EXACT)  # the headline
    final = [c for c in entry["clinics"] if c["phase"] == "evaluate" and c["server_round"] == 2]
    assert {c["clinic"] for c in final} == {"clinic-1", "clinic-2"}
    assert all(len(c["per_class"]["classes"]) == 3 for c in final)
    mine = {c["clinic"]: c["per_class"] for c in final}
    assert mine["clinic-2"]["classes"][2]["positives"] == 0 and mine["clinic-2"]["classes"][2]["auroc"] is None
    assert mine["clinic-2"]["macro_auroc"] is None and mine["clinic-1"]["classes"][2]["auroc"] is not None
    assert per_class["classes"][2]["clinics"] == 2  # clinic-2's effusion negatives still count, pooled
    print("per-class pooled:", json.dumps(per_class))
