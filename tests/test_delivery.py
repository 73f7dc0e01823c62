"""The clinic gets the model back: delivered through the federation, kept with its card,
and `client-node predict` reproduces what the federation recorded for that clinic."""

from __future__ import annotations

import csv
import json

import pytest

from radfed.audit import Registry
from radfed.delivery import load_model_file
from radfed.demo_data import write_clinic
from radfed.spec import ExperimentSpec, spec_to_toml
from radfed.store import Store
from tests.federation import cli


@pytest.mark.timeout(420)
def test_each_clinic_holds_the_model_and_predict_reproduces_its_recorded_auroc(tmp_path, federation):
    for i in (1, 2):
        write_clinic(tmp_path / f"clinic-{i}", clinic_index=i - 1, n_patients=12, prevalence=0.5, seed=i)
        federation.start_clinic(f"clinic-{i}", tmp_path / f"clinic-{i}")
    spec = ExperimentSpec(name="delivered", backbone="resnet18", image_size=32, rounds=2, local_epochs=1,
                          batch_size=8, learning_rate=1e-3, min_clinics=2, clinic_timeout=120.0, seed=3)
    (tmp_path / "exp.toml").write_text(spec_to_toml(spec))
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    run = cli("server.cli", "run", str(tmp_path / "exp.toml"), "--control", federation.control, "--insecure",
              "--db", db, timeout=360)
    assert run.returncode == 0, run.stderr[-3000:] + federation.logs()
    store = Store(db)
    entry = store.leaderboard()[0]
    flwr_run_id = entry["flwr_run_id"]
    delivered = {e["clinic"] for e in Registry(store).events(kind="delivered")}
    assert delivered == {"clinic-1", "clinic-2"}
    final_round = max(c["round"] for c in store.checkpoints_of(entry["run_id"]))
    for i in (1, 2):
        name = f"clinic-{i}"
        folder = federation.work / "nodes" / name / "models" / f"run-{flwr_run_id}"
        card = json.loads((folder / "model-card.json").read_text())
        model = load_model_file(folder / "final.pt")
        assert model["round"] == final_round and card["files"]["final"]["sha256"]
        recorded = [c for c in entry["clinics"] if c["clinic"] == name and c["phase"] == "evaluate"
                    and c["server_round"] == final_round]
        assert len(recorded) == 1 and recorded[0]["auroc"] is not None, entry["clinics"]
        out = tmp_path / f"predictions-{i}"
        result = cli("client_node.cli", "predict", "--model", flwr_run_id, "--name", name,
                     "--home", str(federation.work / "nodes"), "--data", str(tmp_path / name), "--out", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["validation"]["auroc"] == pytest.approx(recorded[0]["auroc"], abs=1e-6)
        assert "validation patients: AUROC" in result.stderr
        with (out / "predictions.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == summary["images"] == summary["heatmaps"] > 0
        assert {r["split"] for r in rows} == {"train", "val"}
        assert all((out / "heatmaps" / r["heatmap"]).is_file() for r in rows)
        assert all(0.0 <= float(r["p_finding"]) <= 1.0 for r in rows)
    bad = cli("client_node.cli", "predict", "--model", "999", "--name", "clinic-1",
              "--home", str(federation.work / "nodes"), "--data", str(tmp_path / "clinic-1"), "--out", str(tmp_path / "x"))
    assert bad.returncode == 1 and "no model '999'" in bad.stderr and "Traceback" not in bad.stderr
