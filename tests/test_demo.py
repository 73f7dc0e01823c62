"""`coordinator demo` as a user runs it (smaller): it completes, records, and cleans up."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.federation import cli


def _radfed_processes() -> set[int]:
    import os
    from pathlib import Path

    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(name in text for name in ("flower-superlink", "flower-supernode", "flower-superexec",
                                         "flwr-clientapp", "flwr-serverapp", "client-node start")):
            if int(cmdline.parent.name) != os.getpid():
                found.add(int(cmdline.parent.name))
    return found


@pytest.mark.timeout(420)
def test_small_demo_completes_and_leaves_nothing_running(tmp_path):
    before = _radfed_processes()
    work = tmp_path / "demo"
    proc = cli("server.cli", "demo", "--clinics", "2", "--rounds", "2", "--patients", "12",
               "--image-size", "32", "--backbone", "resnet18", "--workdir", str(work), timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "leaderboard" in proc.stdout and str(work / "radfed.db") in proc.stdout
    db = sqlite3.connect(work / "radfed.db")
    assert db.execute("select status from runs").fetchall() == [("completed",)]
    assert db.execute("select count(*) from clinic_round_results where phase='evaluate'").fetchone() == (6,)
    assert db.execute("select count(*) from checkpoints").fetchone() == (2,)
    assert sorted(p.name for p in (work / "data").iterdir()) == ["clinic-1", "clinic-2"]
    board = json.loads(cli("server.cli", "leaderboard", "--db", f"sqlite:///{work / 'radfed.db'}",
                           "--json").stdout)
    assert board[0]["status"] == "completed"
    assert _radfed_processes() - before == set()


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
