"""`coordinator demo` as a user runs it (smaller): it completes, records, and cleans up."""

from __future__ import annotations

import csv
import json
import os
import re
import uuid

import pytest
import torch

from tests.federation import cli

pytestmark = pytest.mark.e2e


def _radfed_processes(marker: str) -> set[int]:
    """Live radfed/Flower processes started under this test: those whose environment holds
    `marker` (every process the demo starts inherits its environment), so that processes of
    tests running at the same time in other pytest-xdist workers are not counted."""
    import os
    from pathlib import Path

    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (cmdline.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() not in environ:
            continue
        if any(
            name in text
            for name in (
                "flower-superlink",
                "flower-supernode",
                "flower-superexec",
                "flwr-clientapp",
                "flwr-serverapp",
                "client-node start",
                "client_node.supernode",
                "client_node.worker",
            )
        ):
            if int(cmdline.parent.name) != os.getpid():
                found.add(int(cmdline.parent.name))
    return found


@pytest.mark.timeout(420)
def test_small_demo_two_clinics_end_to_end(tmp_path, monkeypatch):
    """The spine end to end, as a user runs it: `coordinator demo` starts a real SuperLink
    and two real `client-node start` SuperNodes on loopback, runs 2 rounds on generated
    DICOM, records everything, and leaves no process behind."""
    marker = f"RADFED_TEST_DEMO={os.getpid()}-{uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("=", 1))
    before = _radfed_processes(marker)
    work = tmp_path / "demo"
    proc = cli(
        "server.cli",
        "demo",
        "--clinics",
        "2",
        "--rounds",
        "2",
        "--patients",
        "12",
        "--image-size",
        "32",
        "--backbone",
        "resnet18",
        "--workdir",
        str(work),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"database: sqlite:///{work / 'radfed.db'}" in proc.stdout
    assert re.search(r"run \d+: pooled AUROC \S+( \[\S+\])? \(2 clinics\); clinic mean AUROC \S+", proc.stdout), (
        proc.stdout[-2000:]
    )
    assert sorted(p.name for p in (work / "data").iterdir()) == ["clinic-1", "clinic-2"]
    assert _radfed_processes(marker) - before == set()

    db = f"sqlite:///{work / 'radfed.db'}"
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

    _check_data_cards(entry, work)

    ckpts = sorted(entry["checkpoints"], key=lambda c: c["server_round"])
    assert [c["server_round"] for c in ckpts] == [1, 2]
    assert all(len(c["sha256"]) == 64 for c in ckpts)
    states = [torch.load(c["path"], weights_only=True)["state_dict"] for c in ckpts]
    changed = [k for k in states[0] if states[0][k].is_floating_point() and not torch.equal(states[0][k], states[1][k])]
    assert "net.fc.weight" in changed and len(changed) > 10  # the global model changed
    assert all(torch.isfinite(v).all() for v in states[1].values() if v.is_floating_point())

    # The default path is the secure one: a fresh CA, enrolled clinics, node keys.
    assert (work / "pki" / "ca.crt").is_file() and (work / "pki" / "ca.key").stat().st_mode & 0o077 == 0
    audit = json.loads(cli("server.cli", "audit", "--db", db, "--json").stdout)
    kinds = {(e["kind"], e["clinic"]) for e in audit}
    for clinic in ("clinic-1", "clinic-2"):
        assert {("enrolled", clinic), ("registered", clinic), ("connected", clinic), ("contributed", clinic)} <= kinds
    _assert_no_phi_left_the_clinics(work)
    _check_delivery_and_predict(entry, work, tmp_path)


def _check_delivery_and_predict(entry: dict, work, tmp_path) -> None:
    """Each clinic holds the run's model (secure path: delivered by node key); `client-node
    predict` on its own folder reproduces its recorded AUROC and writes heat maps whose
    peaks are scored against where the generator drew the opacities."""
    from radfed.audit import Registry
    from radfed.delivery import load_model_file
    from radfed.demo_findings import heatmap_hits
    from radfed.store import Store

    final = max(c["server_round"] for c in entry["checkpoints"])
    store = Store(f"sqlite:///{work / 'radfed.db'}")
    assert {e["clinic"] for e in Registry(store).events(kind="delivered")} == {"clinic-1", "clinic-2"}
    for name in ("clinic-1", "clinic-2"):
        folder = work / "nodes" / name / "models" / f"run-{entry['flwr_run_id']}"
        card = json.loads((folder / "model-card.json").read_text())
        assert load_model_file(folder / "final.pt")["round"] == final and card["files"]["final"]["sha256"]
        out = tmp_path / f"predict-{name}"
        proc = cli(
            "client_node.cli",
            "predict",
            "--model",
            entry["flwr_run_id"],
            "--name",
            name,
            "--home",
            str(work / "nodes"),
            "--data",
            str(work / "data" / name),
            "--out",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        recorded = [
            c["auroc"]
            for c in entry["clinics"]
            if c["clinic"] == name and c["phase"] == "evaluate" and c["server_round"] == final
        ]
        assert len(recorded) == 1
        if recorded[0] is None:  # one class among its validation patients: undefined both ways
            assert summary["validation"]["auroc"] is None
        else:
            assert abs(summary["validation"]["auroc"] - recorded[0]) <= 1e-6  # same model, same patients
        assert "validation patients: AUROC" in proc.stderr
        with (out / "predictions.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == summary["images"] == summary["heatmaps"] > 0
        assert {r["split"] for r in rows} == {"train", "val"}
        assert all((out / "heatmaps" / r["heatmap"]).is_file() and 0.0 <= float(r["p_finding"]) <= 1.0 for r in rows)
        hits = heatmap_hits(work / "data" / name, out / "predictions.csv", 32)
        assert hits["images"] > 0 and 0 <= hits["hits"] <= hits["images"]
    bad = cli(
        "client_node.cli",
        "predict",
        "--model",
        "999",
        "--name",
        "clinic-1",
        "--home",
        str(work / "nodes"),
        "--data",
        str(work / "data" / "clinic-1"),
        "--out",
        str(tmp_path / "x"),
    )
    assert bad.returncode == 1 and "no model '999'" in bad.stderr and "Traceback" not in bad.stderr


def _assert_no_phi_left_the_clinics(work):
    """Everything a clinic sent (its outbox log of every metric and config record), the
    database and every log: none holds a PHI value written into the generated DICOM."""
    import sqlite3

    from radfed.demo_data import phi_values

    phi = set().union(*(phi_values(d) for d in (work / "data").iterdir()))
    assert len(phi) > 20
    outboxes = sorted((work / "nodes").glob("*/outbox.jsonl"))
    assert len(outboxes) == 2
    sent = [json.loads(line) for box in outboxes for line in box.read_text().splitlines()]
    assert {m["type"] for m in sent} == {"train", "evaluate", "query"}  # query: the model delivered
    assert all(m["metrics"] and m["configs"] for m in sent)
    with sqlite3.connect(work / "radfed.db") as con:
        dump = "\n".join(con.iterdump())
    texts = {"outbox": "\n".join(box.read_text() for box in outboxes), "database": dump}
    texts.update({str(p): p.read_text(errors="replace") for p in (work / "logs").glob("*.log")})
    leaks = {name: sorted(v for v in phi if v in text) for name, text in texts.items()}
    assert not any(leaks.values()), leaks


def _check_data_cards(entry: dict, work) -> None:
    """Each clinic's first reply brought its data card: the counts its own data card shows,
    with no identifying value of the generated DICOM in it (the database as a whole is
    scanned by _assert_no_phi_left_the_clinics)."""
    from radfed.data import load_clinic
    from radfed.demo_data import phi_values
    from radfed.spec import ExperimentSpec, data_options

    spec = ExperimentSpec.from_json(entry["spec_json"])
    cards = {c["clinic"]: c["card"] for c in entry["data_cards"]}
    assert sorted(cards) == ["clinic-1", "clinic-2"] and len(entry["data_cards"]) == 2
    for name, card in cards.items():
        folder = work / "data" / name
        local = load_clinic(
            folder,
            spec.labels,
            spec.image_size,
            val_fraction=spec.val_fraction,
            seed=spec.seed,
            options=data_options(spec.data),
        )
        assert card == json.loads(json.dumps(local.shared_card()))
        assert card["train"]["total_patients"] + card["val"]["total_patients"] == 12
        secrets = phi_values(folder)
        assert secrets and not [v for v in secrets if v in json.dumps(card)]


def test_federation_close_stops_every_process(federation, tmp_path):
    from radfed.demo_data import write_clinic

    write_clinic(tmp_path / "c", clinic_index=0, n_patients=4, prevalence=0.5)
    federation.start_clinic("clinic-x", tmp_path / "c")
    import time

    time.sleep(3)
    pids = federation.all_pids()
    assert len(pids) >= 4  # wrappers, SuperLink, SuperNode and their superexec children
    federation.close()
    alive = [pid for pid in pids if _is_running(pid)]
    assert alive == []


def _is_running(pid: int) -> bool:
    from pathlib import Path

    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
