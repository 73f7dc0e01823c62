"""Any process may die: the federation recovers and the records stay true (real processes).

Each test kills one process of a running federation on loopback (resnet18 at 32 px) and
checks what a coordinator and a clinic would see: the round goes on, every clinic is
recorded by name with what happened to it, nothing is left running, no run is stuck in
`running`, and an interrupted run continues from its last checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from radfed.demo_data import write_clinic
from radfed.processes import descendants
from radfed.spec import ExperimentSpec, spec_to_toml
from radfed.store import Store
from server.recorder import sha256_file
from tests.federation import ROOT, Federation, cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _spec(**kw) -> ExperimentSpec:
    base = dict(
        name="recovery",
        backbone="resnet18",
        image_size=32,
        rounds=3,
        local_epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        min_clinics=2,
        clinic_timeout=120.0,
        round_timeout=300.0,
        seed=0,
    )
    base.update(kw)
    return ExperimentSpec(**base)


def _run(fed: Federation, spec_file: Path, *args: str) -> subprocess.Popen:
    """`coordinator run` in the background (its output in fed.work/logs/run.log)."""
    log = open(fed.work / "logs" / "run.log", "ab")  # noqa: SIM115 - closed with the process
    mode = ["--root-certificates", str(fed.certs / "ca.crt")] if fed.secure else ["--insecure"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "run",
            *([str(spec_file)] if spec_file else []),
            "--control",
            fed.control,
            *mode,
            "--db",
            fed.db,
            *args,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        return f"{pid} (gone)"


def descendants_of(pids: list[int]) -> list[int]:
    return [child for pid in pids for child in descendants(pid)]


def _rounds(db: str) -> dict[int, set[tuple[str, str]]]:
    entry = Store(db).leaderboard(include_running=True)[0]
    out: dict[int, set[tuple[str, str]]] = {}
    for c in entry["clinics"]:
        out.setdefault(c["server_round"], set()).add((c["clinic"], c["phase"]))
    return out


def test_superlink_killed_mid_run_then_resumed(tmp_path, monkeypatch):
    monkeypatch.setenv("RADFED_FOLLOW_EVERY", "5")  # `coordinator run` asks Flower every 5 s (the default)
    fed = Federation(tmp_path / "fed")
    try:
        fed.start_superlink()
        for i in range(2):
            write_clinic(tmp_path / f"clinic-{i + 1}", clinic_index=i, n_patients=6, prevalence=0.5)
            fed.start_clinic(f"clinic-{i + 1}", tmp_path / f"clinic-{i + 1}")
        spec_file = tmp_path / "exp.toml"
        spec_file.write_text(spec_to_toml(_spec(rounds=3, round_timeout=240.0)))
        follower = fed.track(_run(fed, spec_file))
        store = Store(fed.db)
        fed.wait_for(
            lambda: (store.leaderboard(include_running=True) or [{}])[0].get("checkpoints"),
            "round 1 checkpointed",
            timeout=300,
        )
        link_tree = [fed.superlink.pid, *descendants(fed.superlink.pid)]
        os.kill(fed.superlink.pid, signal.SIGKILL)  # the coordinator machine loses its SuperLink
        fed.superlink.wait(timeout=10)
        try:
            fed.wait_for(
                lambda: not _alive(link_tree + descendants_of(link_tree)), "the SuperLink's processes to go", timeout=30
            )
        except AssertionError:
            left = _alive(link_tree + descendants_of(link_tree))
            raise AssertionError(f"still running: {[_cmdline(pid) for pid in left]}") from None
        fed.procs.remove(fed.superlink)
        # `coordinator run` does not hang: the run is lost, it says so and exits non-zero
        fed.start_superlink()  # same ports, same state folder
        assert follower.wait(timeout=120) != 0
        log = (fed.work / "logs" / "run.log").read_text()
        row = store.leaderboard()[0]
        assert row["status"] == "failed" and row["error"], row
        flwr_run_id = row["flwr_run_id"]
        # the clinics reconnect by themselves
        from server.control import ControlClient

        control = ControlClient(fed.control, insecure=True)
        fed.wait_for(
            lambda: sum(s == "online" for s in control.nodes().values()) >= 2, "both clinics online again", timeout=120
        )
        done = len(row["checkpoints"])
        resumed = cli(
            "server.cli",
            "run",
            "--resume",
            flwr_run_id,
            "--control",
            fed.control,
            "--insecure",
            "--db",
            fed.db,
            timeout=500,
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:] + log[-2000:] + fed.logs()
        assert f"continuing run {flwr_run_id} after round {done}" in resumed.stderr
        entries = store.leaderboard()
        assert len(entries) == 1  # one run, continued
        entry = entries[0]
        assert entry["status"] == "completed" and flwr_run_id in (entry.get("resumed_from") or "")
        assert sorted(c["server_round"] for c in entry["checkpoints"]) == [1, 2, 3]
        assert all(sha256_file(Path(c["path"])) == c["sha256"] for c in entry["checkpoints"])
        assert sorted(r["server_round"] for r in entry["rounds"]) == [0, 1, 2, 3]
        per_round = _rounds(fed.db)
        for r in range(1, 4):  # every round trained by both clinics, recorded once each
            trained = sorted(c for c, phase in per_round[r] if phase == "train")
            assert trained == ["clinic-1", "clinic-2"], (r, per_round[r])
        assert store.running_runs() == []
    finally:
        fed.close()


def test_clinic_killed_and_clinic_revoked_mid_run(tmp_path):
    """Two faults in one secure run of 4 clinics, after round 1:

    - clinic-4's `client-node` is SIGKILLed: nothing of its tree survives, the rounds go
      on with the others, it is recorded as lost by name; restarted at once (same bundle)
      it waits out its old session, saying so, and rejoins;
    - clinic-3 is revoked: it is recorded as revoked, never trains again, and its process
      exits non-zero with one line naming the reason.
    """
    fed = Federation(tmp_path / "fed", secure=True)
    try:
        fed.start_superlink()
        clinics = {}
        for i in range(4):
            name = f"clinic-{i + 1}"
            write_clinic(tmp_path / name, clinic_index=i % 3, n_patients=6, prevalence=0.5, seed=i)
            clinics[name] = fed.start_clinic(name, tmp_path / name, "", fed.enrol(name))
        spec_file = tmp_path / "exp.toml"
        spec_file.write_text(spec_to_toml(_spec(rounds=3, min_clinics=2, min_accept=2)))
        fed.wait_for(
            lambda: sum(s == "online" for s in fed.node_status().values()) == 4, "four clinics online", timeout=120
        )
        follower = fed.track(_run(fed, spec_file))
        store = Store(fed.db)
        fed.wait_for(
            lambda: (store.leaderboard(include_running=True) or [{}])[0].get("checkpoints"),
            "round 1 checkpointed",
            timeout=300,
        )
        victim = clinics["clinic-4"]
        tree = [victim.pid, *descendants(victim.pid)]
        assert len(tree) >= 2  # client-node and its SuperNode (the warm ClientApp runs inside it)
        os.kill(victim.pid, signal.SIGKILL)
        assert cli("server.cli", "clinic", "revoke", "clinic-3", "--db", fed.db).returncode == 0
        fed.wait_for(lambda: not _alive(tree), "clinic-4's SuperNode to exit", timeout=20)
        fed.procs.remove(victim)
        again = fed.start_clinic("clinic-4", tmp_path / "clinic-4")  # restarted at once (same bundle)

        code = clinics["clinic-3"].wait(timeout=120)  # cut off, refused on reconnecting: it stops
        log3 = (fed.work / "logs" / "clinic-3.log").read_text()
        errors = [line for line in log3.splitlines() if line.startswith("error:")]
        assert code != 0 and len(errors) == 1 and "revoked" in errors[0], log3[-2000:]

        assert follower.wait(timeout=400) == 0, (fed.work / "logs" / "run.log").read_text()[-2000:]
        outcomes = _rounds(fed.db)
        rows = [(r, c, phase) for r, found in outcomes.items() for c, phase in found]
        assert ("clinic-4", "lost") in {(c, p) for _, c, p in rows}, outcomes
        assert ("clinic-3", "revoked") in {(c, p) for _, c, p in rows}, outcomes
        assert not any(c == "clinic-3" and p == "train" and r >= 3 for r, c, p in rows), outcomes
        assert not any(c.startswith("node-") or p == "late" for _, c, p in rows), outcomes
        from radfed.audit import Registry

        assert any(e["clinic"] == "clinic-4" for e in Registry(store).events(kind="lost"))

        log4 = fed.work / "logs" / "clinic-4.log"
        fed.wait_for(
            lambda: "SuperNode ID" in log4.read_text().split("joining")[-1],
            "the restarted clinic-4 to connect",
            timeout=150,
        )
        assert again.poll() is None and "error:" not in log4.read_text().split("joining")[-1]
    finally:
        fed.close()
