"""End to end on loopback: a real SuperLink, two real SuperNodes, `coordinator run`.

Small images and a small backbone keep it to about a minute; everything else is what a
user runs: generated DICOM, the CLIs, Flower's deployment engine, SQLite.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from radfed.demo_data import write_clinic
from radfed.spec import ExperimentSpec, spec_to_toml
from radfed.store import Store
from tests.federation import cli


def _spec(**kw) -> ExperimentSpec:
    base = dict(name="e2e", backbone="resnet18", image_size=32, rounds=2, local_epochs=1,
                batch_size=8, learning_rate=1e-3, min_clinics=2, clinic_timeout=90.0, seed=1)
    base.update(kw)
    return ExperimentSpec(**base)


@pytest.mark.timeout(400)
def test_two_clinics_two_rounds(tmp_path, federation):
    for i, prevalence in enumerate((0.3, 0.6), start=1):
        write_clinic(tmp_path / f"clinic-{i}", clinic_index=i - 1, n_patients=16,
                     prevalence=prevalence, seed=i)
        federation.start_clinic(f"clinic-{i}", tmp_path / f"clinic-{i}")
    spec_file = tmp_path / "exp.toml"
    spec_file.write_text(spec_to_toml(_spec()))
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    proc = cli("server.cli", "run", str(spec_file), "--superlink", federation.address,
               "--insecure", "--db", db, "--checkpoints", str(tmp_path / "ckpt"))
    assert proc.returncode == 0, proc.stderr + federation.logs()
    assert "completed" in proc.stderr

    board = json.loads(cli("server.cli", "leaderboard", "--db", db, "--json").stdout)
    assert len(board) == 1 and board[0]["status"] == "completed"
    entry = board[0]
    assert [r["server_round"] for r in entry["rounds"]] == [0, 1, 2]  # 0: the initial model
    evaluated = [c for c in entry["clinics"] if c["phase"] == "evaluate"]
    trained = [c for c in entry["clinics"] if c["phase"] == "train"]
    assert sorted({c["clinic"] for c in evaluated}) == ["clinic-1", "clinic-2"]
    assert len(evaluated) == 6 and len(trained) == 4
    assert all(c["num_examples"] > 0 and c["device"] == "cpu" for c in evaluated)
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in evaluated)
    assert entry["final_auroc"] is None or 0.0 <= entry["final_auroc"] <= 1.0

    ckpts = sorted(entry["checkpoints"], key=lambda c: c["server_round"])
    assert [c["server_round"] for c in ckpts] == [1, 2]
    states = [torch.load(c["path"], weights_only=True)["state_dict"] for c in ckpts]
    changed = [k for k in states[0] if states[0][k].is_floating_point()
               and not torch.equal(states[0][k], states[1][k])]
    assert "net.fc.weight" in changed and len(changed) > 10
    assert all(torch.isfinite(v).all() for v in states[1].values() if v.is_floating_point())


@pytest.mark.timeout(200)
def test_too_few_clinics_fails_cleanly_and_keeps_records(tmp_path, federation):
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    store = Store(db)
    earlier = store.create_experiment("earlier", "{}", "resnet50", "random", "fedavg")
    earlier_run = store.start_run(earlier, "123", 1)
    store.record_round(earlier_run, 1, val_auroc=0.9)
    store.finish_run(earlier_run, "completed", final_auroc=0.9)

    write_clinic(tmp_path / "clinic-1", clinic_index=0, n_patients=8, prevalence=0.5)
    federation.start_clinic("clinic-1", tmp_path / "clinic-1")
    spec_file = tmp_path / "exp.toml"
    spec_file.write_text(spec_to_toml(_spec(name="needs-three", min_clinics=3, clinic_timeout=8.0)))
    started = time.monotonic()
    proc = cli("server.cli", "run", str(spec_file), "--superlink", federation.address,
               "--insecure", "--db", db)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "of 3 clinics connected within 8 s" in proc.stderr
    assert time.monotonic() - started < 120
    board = {e["experiment"]: e for e in Store(db).leaderboard()}
    assert board["needs-three"]["status"] == "failed"
    assert board["earlier"]["status"] == "completed" and board["earlier"]["final_auroc"] == 0.9
