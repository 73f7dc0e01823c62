"""Chaos: clinics killed and restarted at random, and one SuperLink restart, mid-run (issue 13).

N real SuperNodes (`client-node start`) on loopback, a tiny model, PostgreSQL as the
store. While `coordinator run` trains, a clinic's `client-node` is SIGKILLed every
`--kill-every` seconds and restarted `--down` seconds later; once, the coordinator's
`coordinator superlink` is SIGKILLed and restarted, and the interrupted run is continued
with `coordinator run --resume`. The last line is one JSON object:

- rounds_completed (goal: all), rounds_with_all_survivors (rounds in which every clinic
  that was up for the whole round has its train result), runs_stuck (rows left `running`,
  goal 0), checkpoints_ok / checkpoints (sha256 matches, goal all), rows_lost (train rows
  recorded before the SuperLink restart that are gone after it, goal 0), and the seconds
  from each clinic kill to the end of the round it hit (median, max).

    .venv/bin/python bench/chaos.py                         # 10 clinics, 20 rounds: ~20 min on 2 cores
    .venv/bin/python bench/chaos.py --clinics 6 --rounds 8  # shorter
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from radfed.demo_data import write_clinic  # noqa: E402
from radfed.spec import ExperimentSpec, spec_to_toml  # noqa: E402
from radfed.store import Store  # noqa: E402
from server.recorder import sha256_file  # noqa: E402
from tests.federation import Federation  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clinics", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--kill-every", type=float, default=45.0, help="seconds between clinic kills")
    p.add_argument("--down", type=float, default=10.0, help="seconds a killed clinic stays down")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def _database() -> tuple[str, str]:
    """A fresh PostgreSQL database for this bench: (SQLAlchemy URL, name)."""
    import psycopg

    name = f"radfed_chaos_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def _drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _follow(fed: Federation, args: list[str]) -> subprocess.Popen:
    log = open(fed.work / "logs" / "run.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", *args, "--control", fed.control, "--insecure", "--db", fed.db],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _checkpoint_times(store: Store) -> dict[int, float]:
    entry = store.leaderboard(include_running=True)[0]
    from datetime import datetime

    return {c["server_round"]: datetime.fromisoformat(c["created_at"]).timestamp() for c in entry["checkpoints"]}


def main() -> None:  # noqa: PLR0915 - one scenario, read top to bottom
    a = _args()
    rng = random.Random(a.seed)
    url, dbname = _database()
    started = time.monotonic()
    kills: list[tuple[str, float]] = []
    up_since: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fed = Federation(work / "fed")
        fed.db = url
        names = [f"clinic-{i + 1:02d}" for i in range(a.clinics)]
        procs: dict[str, subprocess.Popen] = {}
        try:
            fed.start_superlink("--db", url)
            for i, name in enumerate(names):
                write_clinic(work / name, clinic_index=i % 3, n_patients=4, prevalence=0.5, seed=i)
                procs[name] = fed.start_clinic(name, work / name)
                up_since[name] = time.time()
            spec = ExperimentSpec(
                name="chaos",
                backbone="resnet18",
                image_size=32,
                rounds=a.rounds,
                local_epochs=1,
                batch_size=8,
                learning_rate=1e-3,
                min_clinics=max(2, a.clinics // 2),
                min_accept=2,
                clinic_timeout=300.0,
                round_timeout=120.0,
                seed=a.seed,
            )
            (work / "exp.toml").write_text(spec_to_toml(spec))
            follower = _follow(fed, [str(work / "exp.toml")])
            store = Store(url)
            restarted_link, snapshot, resumes = False, set(), 0
            next_kill = time.monotonic() + a.kill_every
            down: dict[str, float] = {}
            while True:
                if follower.poll() is not None:
                    entry = (store.leaderboard(include_running=True) or [{}])[0]
                    if entry.get("status") == "completed":
                        break
                    if resumes >= 3:
                        raise SystemExit(f"run did not complete: {entry.get('error')}")
                    resumes += 1  # the SuperLink restart lost the run: continue it
                    follower = _follow(fed, ["--resume", entry["flwr_run_id"]])
                done = len(_checkpoint_times(store)) if store.leaderboard(include_running=True) else 0
                now = time.monotonic()
                for name, back_at in list(down.items()):
                    if now >= back_at:
                        procs[name] = fed.start_clinic(name, work / name)
                        up_since[name] = time.time() + 15  # online once Flower lets the node in
                        del down[name]
                if not restarted_link and done >= a.rounds * 2 // 5:
                    restarted_link = True
                    snapshot = {
                        (c["server_round"], c["clinic"])
                        for c in store.leaderboard(include_running=True)[0]["clinics"]
                        if c["phase"] == "train"
                    }
                    os.kill(fed.superlink.pid, signal.SIGKILL)
                    fed.superlink.wait()
                    fed.procs.remove(fed.superlink)
                    time.sleep(2)
                    fed.start_superlink("--db", url)
                    print(f"SuperLink killed and restarted after round {done}", flush=True)
                elif now >= next_kill and len(down) < a.clinics // 3:
                    victim = rng.choice([n for n in names if n not in down])
                    os.kill(procs[victim].pid, signal.SIGKILL)
                    fed.procs.remove(procs[victim])
                    kills.append((victim, time.time()))
                    down[victim] = now + a.down
                    up_since[victim] = float("inf")
                    next_kill = now + a.kill_every
                    print(f"killed {victim} during round {done + 1}", flush=True)
                time.sleep(1)
            entry = store.leaderboard()[0]
        finally:
            fed.close()
            stuck = len(Store(url).running_runs())

    ckpt_at = {c["server_round"]: c for c in entry["checkpoints"]}
    times = _checkpoint_times(store)
    rounds = sorted(r for r in times if r >= 1)
    trained = {(c["server_round"], c["clinic"]) for c in entry["clinics"] if c["phase"] == "train"}
    killed_at = {}
    for name, t in kills:
        killed_at.setdefault(name, []).append(t)
    complete = 0
    for r in rounds:
        start, end = times.get(r - 1, 0.0), times[r]
        survivors = [n for n in names if not any(start - 30 <= t <= end for t in killed_at.get(n, []))]
        complete += all((r, n) in trained for n in survivors)
    to_round_end = [min((t_end - t for t_end in times.values() if t_end > t), default=float("nan")) for _, t in kills]
    finite = [x for x in to_round_end if x == x]
    ok = sum(sha256_file(Path(c["path"])) == c["sha256"] for c in ckpt_at.values())
    summary = {
        "bench": "chaos",
        "clinics": a.clinics,
        "rounds": a.rounds,
        "kills": len(kills),
        "superlink_restarts": 1,
        "resumes": resumes,
        "rounds_completed": len(rounds),
        "rounds_with_all_survivors": complete,
        "runs_stuck": stuck,
        "checkpoints_ok": ok,
        "checkpoints": len(ckpt_at),
        "rows_lost": len(snapshot - trained),
        "kill_to_round_end_s": {
            "median": round(statistics.median(finite), 1) if finite else None,
            "max": round(max(finite), 1) if finite else None,
        },
        "goal_met": (len(rounds) == a.rounds and stuck == 0 and ok == len(ckpt_at) and not (snapshot - trained)),
        "seconds": round(time.monotonic() - started, 1),
    }
    _drop(dbname)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
