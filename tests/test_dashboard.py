"""The Streamlit dashboard (via AppTest) and the `dashboard` CLI (as a real process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from radfed.store import Store

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
BIG_NODE_ID = 2**64 - 2
CARD = {"labels": ["normal", "opacity"],
        "train": {"images": {"normal": 5, "opacity": 3}, "patients": {"normal": 3, "opacity": 2},
                  "total_images": 8, "total_patients": 5},
        "val": {"images": {"normal": 1, "opacity": 1}, "patients": {"normal": 1, "opacity": 1},
                "total_images": 2, "total_patients": 2},
        "rejected": {"corrupt": 2}, "rejected_total": 2, "modalities": {"CR": 7, "DX": 3},
        "manufacturers": {"Acme": 10}, "sizes": {"1024-2047 px": 10},
        "transfer_syntaxes": {"JPEG-LS Lossless Image Compression": 10}, "filtered": 1}


@pytest.fixture(autouse=True)
def _served_on_loopback():
    """These tests read the dashboard as a loopback one serves it: without a login
    (beyond loopback every page needs one: tests/test_auth.py)."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", before)


def _app(monkeypatch: pytest.MonkeyPatch, db_url: str) -> AppTest:
    """Run the app as `streamlit run app.py -- --db URL` would."""
    monkeypatch.setattr(sys, "argv", [str(APP), "--db", db_url])
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _fill(db_url: str, tmp_path: Path) -> None:
    """Three finished runs and one in progress, with rounds, clinics and a checkpoint."""
    with Store(db_url) as store:
        for name, auroc, status in [("resnet-fedavg", 0.81, "completed"),
                                    ("densenet-fedprox", 0.93, "completed"),
                                    ("vit-crashed", None, "failed")]:
            exp = store.create_experiment(name, "{}", name.split("-")[0], "random", name.split("-")[1])
            run = store.start_run(exp, f"{abs(hash(name))}", rounds_planned=2)
            for rnd in (1, 2):
                store.record_round(run, rnd, train_loss=1 / rnd, val_loss=1.1 / rnd,
                                   val_auroc=auroc, num_clinics=2, num_examples=64,
                                   duration_s=3.0 * rnd, bytes_down=2_000_000 // rnd, bytes_up=4096)
                store.record_clinic_result(run, rnd, "clinic-a", BIG_NODE_ID, "evaluate", 0.5, 32,
                                           accuracy=0.7, auroc=auroc, device="cuda:0")
            store.record_data_card(run, "clinic-a", BIG_NODE_ID, CARD)
            checkpoint = tmp_path / f"{name}-round-2.pt"
            checkpoint.write_bytes(b"weights")
            store.record_checkpoint(run, 2, checkpoint, "0" * 64, "val_auroc", auroc)
            store.finish_run(run, status, final_auroc=auroc, error="OOM" if status == "failed" else None)
        live = store.create_experiment("live", "{}", "resnet50", "random", "fedavg")
        store.start_run(live, "1", rounds_planned=5)


def test_leaderboard_in_auroc_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'radfed.db'}"
    _fill(db_url, tmp_path)

    at = _app(monkeypatch, db_url)

    board = at.dataframe[0].value
    assert board["Experiment"].tolist() == ["densenet-fedprox", "resnet-fedavg", "vit-crashed"]
    assert board["Rank"].tolist() == [1, 2, 3]
    assert board["Pooled AUROC"].tolist()[:2] == [0.93, 0.81]  # recorded as the run's final pooled figure
    assert board["Clinic mean AUROC"].tolist()[:2] == [0.93, 0.81]
    assert board["vs #1"].tolist()[:2] == ["#1", ""]  # no intervals recorded: nothing to compare
    assert board["Status"].tolist() == ["completed", "completed", "failed"]
    assert board["Rounds"].tolist() == [2, 2, 2]
    # the best run is selected first: its clinics and its checkpoint download are shown
    assert at.selectbox(key="run").options[0].startswith("#1 densenet-fedprox")
    clinics = at.dataframe[1].value
    assert clinics.columns.tolist() == ["Clinic", "Round", "Phase", "Loss", "Accuracy",
                                        "AUROC", "Examples", "Device", "Bytes down", "Bytes up"]
    assert set(clinics["Clinic"]) == {"clinic-a"}
    traffic = next(d.value for d in at.dataframe if "MB down" in d.value.columns)
    assert traffic["Round"].tolist() == [1, 2] and traffic["MB down"].tolist() == [2.0, 1.0]
    assert traffic["Seconds"].tolist() == [3.0, 6.0]
    mix = next(d.value for d in at.dataframe if "Rejected by reason" in d.value.columns)  # the clinic's data card: its data mix
    row = mix.iloc[0]
    assert (row["Clinic"], row["normal images"], row["opacity images"], row["normal patients"]) == ("clinic-a", 6, 4, 4)
    assert (row["Train images"], row["Val images"], row["Patients"], row["Rejected"]) == (8, 2, 7, 2)
    assert row["Modalities"] == "CR 7, DX 3" and row["Rejected by reason"] == "corrupt 2"
    labels = [b.label for b in at.download_button]
    assert labels == ["Download selected and last checkpoint (round 2)", "Download model card (Markdown)"]
    assert {b.label for b in at.button} >= {"Export ONNX", "Export TorchScript"}  # made on demand


def test_sweep_groups_are_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'radfed.db'}"
    with Store(db_url) as store:
        for i, auroc in enumerate((0.8, 0.6)):
            exp = store.create_experiment(f"s{i}", "{}", "resnet50", "r50.pth", "fedavg",
                                          sweep="pneu", weight_source="radimagenet")
            store.finish_run(store.start_run(exp, str(i), rounds_planned=1), "completed", final_auroc=auroc)
    at = _app(monkeypatch, db_url)
    sweeps = at.dataframe[1].value
    assert sweeps.values.tolist() == [["pneu", "resnet50", "radimagenet", 2, 0, "0.700 ± 0.141"]]


def test_selecting_a_failed_run_shows_its_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'radfed.db'}"
    _fill(db_url, tmp_path)
    at = _app(monkeypatch, db_url)

    box = at.selectbox(key="run")
    failed = next(o for o in box.options if "vit-crashed" in o)
    box.select_index(box.options.index(failed)).run()

    assert not at.exception
    assert any("OOM" in e.value for e in at.error)


def test_empty_database_shows_friendly_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = _app(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}")

    assert any("No experiments yet" in i.value and "coordinator demo" in i.value for i in at.info)
    assert not at.dataframe and not at.error


def test_unreachable_database_shows_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(monkeypatch, "postgresql://radfed:secret@127.0.0.1:1/radfed")

    (error,) = at.error
    assert "127.0.0.1:1" in error.value and "Fix:" in error.value and "secret" not in error.value


# ------------------------------------------------------------------- the CLI process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Direct children of pid, from /proc (no psutil needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dashboard exited early: {log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                if reply.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"dashboard did not become healthy on port {port} within {timeout}s")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the streamlit child")
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_cli_serves_and_stops_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    db_url = f"sqlite:///{tmp_path / 'radfed.db'}"
    _fill(db_url, tmp_path)
    port = _free_port()
    log = tmp_path / "dashboard.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "--db", db_url, "--port", str(port)],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        _wait_healthy(port, proc, log)
        children = _children(proc.pid)
        assert children, "streamlit should run as a child process"

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 0

        deadline = time.monotonic() + 10
        while not all(_gone(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_gone(c) for c in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_bad_database_exits_1_before_streamlit(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "--db", "postgresql://u:pw@127.0.0.1:1/db",
         "--port", str(_free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "Fix:" in lines[0]
    assert "Streamlit" not in result.stdout + result.stderr


def test_quality_frame_puts_federated_held_out_and_centralised_side_by_side() -> None:
    from dashboard.app import QUALITY_COLUMNS, quality_frame

    entry = {
        "clinics": [
            {"clinic": "a", "server_round": 0, "phase": "evaluate", "auroc": 0.5, "num_examples": 9},
            {"clinic": "a", "server_round": 1, "phase": "evaluate", "auroc": 0.9, "num_examples": 9,
             "quality": {"auroc_low": 0.8, "auroc_high": 0.97, "patients": 4}},
            {"clinic": "c", "server_round": 1, "phase": "holdout", "auroc": 0.7, "num_examples": 5,
             "quality": {"sensitivity": 0.6}},
        ],
        "pooled": {"auroc": 0.88, "auroc_low": 0.81, "auroc_high": 0.93, "images": 9},
        "baseline": {"auroc": 0.92, "auroc_low": 0.85, "auroc_high": 0.97, "num_examples": 14,
                     "clinics": {"a": {"auroc": 0.93}, "c": {"auroc": 0.9}}},
    }
    frame = quality_frame(entry)
    assert frame.columns.tolist() == QUALITY_COLUMNS
    assert frame[["Clinic", "Role", "AUROC"]].values.tolist() == [
        ["a", "federated", 0.9], ["c", "held out", 0.7], ["all (pooled)", "federated", 0.88],
        ["a", "centralised", 0.93], ["c", "centralised", 0.9], ["all (pooled)", "centralised", 0.92]]
    assert frame["95% CI low"].tolist()[0] == 0.8
    assert frame[["95% CI low", "95% CI high"]].values.tolist()[2] == [0.81, 0.93]  # pooled federated


def test_auroc_curve_has_the_pooled_interval_per_round():
    from dashboard.app import auroc_curve_frame

    entry = {"rounds": [
        {"server_round": 1, "val_auroc": 0.7, "pooled": {"auroc": 0.72, "auroc_low": 0.6, "auroc_high": 0.8}},
        {"server_round": 0, "val_auroc": 0.5, "pooled": None},
    ]}
    frame = auroc_curve_frame(entry)
    assert frame.index.tolist() == [0, 1]
    assert frame.loc[1].tolist() == [0.7, 0.72, 0.6, 0.8]
    assert frame.loc[0, "clinic mean AUROC"] == 0.5 and frame.loc[0, "pooled AUROC"] != frame.loc[0, "pooled AUROC"]
    older = auroc_curve_frame({"rounds": [{"server_round": 1, "val_auroc": 0.7}]})
    assert older.columns.tolist() == ["clinic mean AUROC"]  # runs recorded before pooled figures
