"""`coordinator run` against a real SuperLink on loopback when too few clinics connect.

(The full two-clinic run end to end is tests/test_demo.py; strategies in
tests/test_strategies_e2e.py.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from radfed.demo_data import write_clinic
from radfed.spec import ExperimentSpec, spec_to_toml
from radfed.store import Store
from tests.federation import cli

pytestmark = pytest.mark.e2e


def _spec(**kw) -> ExperimentSpec:
    base = dict(
        name="e2e",
        backbone="resnet18",
        image_size=32,
        rounds=2,
        local_epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        min_clinics=2,
        clinic_timeout=90.0,
        seed=1,
    )
    base.update(kw)
    return ExperimentSpec(**base)


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
    proc = cli("server.cli", "run", str(spec_file), "--control", federation.control, "--insecure", "--db", db)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "of 3 clinics connected within 8 s" in proc.stderr
    assert time.monotonic() - started < 120
    board = {e["experiment"]: e for e in Store(db).leaderboard()}
    assert board["needs-three"]["status"] == "failed"
    assert board["earlier"]["status"] == "completed" and board["earlier"]["final_auroc"] == 0.9


@pytest.mark.timeout(300)
def test_exports_as_they_come_join_with_their_own_names_for_labels(tmp_path, federation):
    """`client-node start` takes what check-data takes: class folders with other names, and a
    manifest headed `path,diagnosis` with 0/1 labels, each mapped to the task's labels by the
    clinic itself (--label-map), and the run trains on both."""
    import csv
    import shutil

    for i in (1, 2):
        write_clinic(tmp_path / f"export-{i}", clinic_index=i - 1, n_patients=6, prevalence=0.5, seed=i)
    source = tmp_path / "export-1"  # clinic-1: one folder per class, its own names
    with (source / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    folders = tmp_path / "clinic-1"
    for row in rows:
        target = folders / {"normal": "No Finding", "opacity": "Pneumonia"}[row["label"]] / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / row["file"], target)
    numeric = tmp_path / "export-2"  # clinic-2: path,diagnosis with 0/1, semicolons
    with (numeric / "labels.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    with (numeric / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(["sop_uid", "Diagnosis"])
        writer.writerows([key, {"normal": "0", "opacity": "1"}[label]] for key, label in rows)
    threaded = federation.start_clinic(
        "clinic-1", folders, "", None, "--label-map", "no finding=normal", "--label-map", "pneumonia=opacity"
    )
    beside = federation.start_clinic(  # the ClientApp in a worker process beside the SuperNode
        "clinic-2", numeric, "", None, "--label-map", "0=normal", "--label-map", "1=opacity", "--isolation", "worker"
    )
    spec_file = tmp_path / "exp.toml"
    spec_file.write_text(spec_to_toml(_spec(name="as-exported", rounds=1)))
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    proc = cli(
        "server.cli", "run", str(spec_file), "--control", federation.control, "--insecure", "--db", db, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + federation.logs()
    entry = Store(db).leaderboard()[0]
    trained = sorted(c["clinic"] for c in entry["clinics"] if c["phase"] == "train")
    assert trained == ["clinic-1", "clinic-2"], entry["clinics"]
    # both ways of serving the ClientApp trained: inside clinic-1's SuperNode, beside clinic-2's
    assert not _worker_processes(threaded.pid) and len(_worker_processes(beside.pid)) == 1
    logs = {name: (federation.work / "logs" / f"{name}.log").read_text() for name in ("clinic-1", "clinic-2")}
    assert "warm ClientApp worker ready (in the SuperNode process)" in logs["clinic-1"], logs["clinic-1"][-2000:]
    assert "warm ClientApp worker ready (Runtime API" in logs["clinic-2"], logs["clinic-2"][-2000:]
    for text in logs.values():
        assert re.search(r"task \d+ completed in", text), text[-2000:]


def _worker_processes(pid: int) -> list[int]:
    """The `client_node.worker` processes under `pid`."""
    from radfed.processes import descendants

    found = []
    for child in descendants(pid):
        try:
            if b"client_node.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found
