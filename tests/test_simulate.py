"""`coordinator simulate`: real simulations on Flower's simulation engine (Ray), real DICOM.

Each run is the CLI in its own process (as a coordinator starts it): 4 virtual clinics,
2 rounds of a ResNet18 at 32 px, dealt from generated pooled data.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from flwr.app import Context, RecordDict

from client_node.simulation import PARTITIONS_ENV, simulation_mod
from radfed.demo_data import write_federation
from radfed.store import Store

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
SPEC = """[experiment]
name = "simulated-smoke"
backbone = "resnet18"
image_size = 32
rounds = 2
local_epochs = 1
batch_size = 8
min_clinics = 2
"""


def _simulate(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "experiment.toml").write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RADFED_HOME": str(tmp / "home"), "COLUMNS": "200"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "simulate",
            str(tmp / "experiment.toml"),
            "--clinics",
            "4",
            "--workdir",
            str(tmp / "work"),
            "--db",
            f"sqlite:///{tmp / 'r.db'}",
            "--checkpoints",
            str(tmp / "ckpt"),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def _clinic_patients(map_path: Path) -> dict[str, set[str]]:
    """PatientIDs read from the DICOM each virtual clinic's labels.csv names (through its links)."""
    found = {}
    for clinic in json.loads(map_path.read_text())["clinics"]:
        folder = Path(clinic["node_config"]["data-path"])
        with (folder / "labels.csv").open() as fh:
            files = [folder / row["file"] for row in csv.DictReader(fh)]
        assert len(files) == clinic["images"]
        found[clinic["name"]] = {str(pydicom.dcmread(f, stop_before_pixels=True).PatientID) for f in files}
    return found


def _check_run(db: Path, summary: dict, simulated: str) -> dict:
    assert summary["status"] == "completed" and summary["error"] is None
    assert len(summary["round_s"]) == 2 and all(s > 0 for s in summary["round_s"])
    assert summary["peak_memory"]["children_mb"] > 100 and summary["peak_memory"]["processes"] >= 2  # Ray's
    entry = next(e for e in Store(f"sqlite:///{db}").leaderboard() if e["flwr_run_id"] == summary["flwr_run_id"])
    assert entry["simulated"] == simulated
    rounds = {r["server_round"]: r for r in entry["rounds"]}
    assert {1, 2} <= set(rounds) and all(rounds[k]["val_auroc"] is not None for k in (1, 2))
    trained = {c["clinic"] for c in entry["clinics"] if c["phase"] != "holdout"}
    assert trained == {f"virtual-{k:03d}" for k in range(1, 5)}  # every virtual clinic took part
    assert len({card["clinic"] for card in entry["data_cards"]}) == 4
    return entry


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_simulate_iid_generated_then_dirichlet_on_data_folders(tmp_path):
    proc, summary = _simulate(tmp_path / "iid", "--generate", "demo", "--patients", "36")
    _check_run(tmp_path / "iid" / "r.db", summary, "4 virtual clinics, iid")
    assert "simulate" in proc.stderr and "wall time per round" in proc.stderr  # the progress and summary
    iid_map = tmp_path / "iid" / "work" / "federation" / "partitions.json"
    iid = _clinic_patients(iid_map)
    sizes = sorted(len(p) for p in iid.values())
    assert sum(sizes) == 36 and sizes[-1] - sizes[0] <= 1  # equal shares of whole patients
    every = [p for patients in iid.values() for p in patients]
    assert len(every) == len(set(every))  # no patient in two clinics

    sites = write_federation(tmp_path / "pooled", 3, n_patients=12, seed=1)
    args = [a for site in sites for a in ("--data", str(site))]
    _, summary = _simulate(tmp_path / "dir", "--partition", "dirichlet:0.3", *args)
    _check_run(tmp_path / "dir" / "r.db", summary, "4 virtual clinics, dirichlet:0.3")
    skewed = _clinic_patients(tmp_path / "dir" / "work" / "federation" / "partitions.json")
    every = [p for patients in skewed.values() for p in patients]
    assert len(every) == len(set(every)) == 36
    pooled = {
        str(pydicom.dcmread(f, stop_before_pixels=True).PatientID)
        for site in sites
        for f in site.rglob("*")
        if f.is_file() and f.name != "labels.csv" and f.name != "findings.json"
    }
    assert set(every) == pooled  # every pooled patient is in exactly one clinic


def test_simulation_mod_fills_only_virtual_nodes(tmp_path, monkeypatch):
    clinics = [
        {"name": "virtual-001", "node_config": {"data-path": "/sim/a", "clinic-name": "virtual-001"}},
        {"name": "virtual-002", "node_config": {"data-path": "/sim/b", "clinic-name": "virtual-002"}},
    ]
    path = tmp_path / "partitions.json"
    path.write_text(json.dumps({"version": 1, "clinics": clinics}))
    seen, sentinel = [], object()

    def handler(msg, context):
        assert msg is sentinel
        seen.append(dict(context.node_config))
        return msg

    def run(node_config):
        context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})
        simulation_mod(sentinel, context, handler)  # the mod passes the message on untouched
        return seen[-1]

    monkeypatch.setenv(PARTITIONS_ENV, str(path))
    assert run({"partition-id": 1, "num-partitions": 2})["data-path"] == "/sim/b"
    real = {"data-path": "/pacs/export", "partition-id": 1}  # a real clinic's node is left alone
    assert run(dict(real)) == real
    monkeypatch.delenv(PARTITIONS_ENV)
    assert "data-path" not in run({"partition-id": 0, "num-partitions": 2})
    monkeypatch.setenv(PARTITIONS_ENV, str(path))
    with pytest.raises(ValueError, match="partition 5"):
        run({"partition-id": 5, "num-partitions": 6})
