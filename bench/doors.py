"""The clinics' door vs a direct connection: model-sized messages and whole rounds (issue 12).

The public door (`server.doors`) lets only Fleet API paths through; the control door
serves the same Flower app unfiltered. Both are TLS listeners of one process, so the
clinics' door costs whatever its path check costs. Measured here, interleaved (A, B,
A, B) so that the machine's load hits both alike:

1. upload: a 128 MB body POSTed over TLS to a Fleet route, through each door
   (Flower reads it all before refusing it as protobuf), `--uploads` times each;
2. rounds: two secure federations (TLS, node keys, the supervisor), each with two
   enrolled clinics; in one the clinics dial the public door, in the other the control
   door directly. Each runs the same ResNet50 experiment (a ~94 MB model each way per
   clinic and round) `--runs` times, alternating; the store's per-round duration and
   model bytes are compared.

    .venv/bin/python bench/doors.py              # ~6 min on 2 CPU cores
    .venv/bin/python bench/doors.py --runs 1 --uploads 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from radfed.demo_data import write_clinic  # noqa: E402
from radfed.spec import ExperimentSpec, spec_to_toml  # noqa: E402
from radfed.store import Store  # noqa: E402
from server.leaderboard import run_entry  # noqa: E402
from tests.federation import Federation, cli  # noqa: E402

MB = 2**20


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=12, help="128 MB uploads through each door")
    p.add_argument("--runs", type=int, default=2, help="federated runs per door")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--workdir", type=Path, default=None)
    return p.parse_args()


def upload_seconds(client, address: str, body: bytes) -> float:
    started = time.perf_counter()
    reply = client.post(
        f"https://{address}/v1/fleet/push-object", content=body, headers={"Content-Type": "application/protobuf"}
    )
    seconds = time.perf_counter() - started
    if reply.status_code != 400:  # Flower read the body and refused it as protobuf
        raise SystemExit(f"unexpected reply {reply.status_code} from {address}: {reply.text[:200]}")
    return seconds


def start(work: Path, direct: bool, clinics: list[Path]) -> Federation:
    """A secure federation whose clinics dial the public door, or the control door if `direct`."""
    fed = Federation(work, secure=True)
    fed.start_superlink()
    for folder in clinics:
        bundle = fed.enrol(folder.name)
        fed.start_clinic(folder.name, folder, "", bundle, *(["--superlink", fed.control] if direct else []))
    return fed


def run_once(fed: Federation, spec: ExperimentSpec, path: Path) -> list[dict]:
    path.write_text(spec_to_toml(spec))
    proc = cli(
        "server.cli",
        "run",
        str(path),
        "--control",
        fed.control,
        "--root-certificates",
        str(fed.certs / "ca.crt"),
        "--db",
        fed.db,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr[-800:]}\n{fed.logs()}")
    run_id = re.search(r"submitted run (\d+)", proc.stderr).group(1)
    entry = run_entry(Store(fed.db), run_id)
    return [r for r in entry["rounds"] if r["server_round"] >= 1]


def main() -> None:
    a = _args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        folders = []
        for i in range(2):
            folders.append(work / "data" / f"clinic-{i + 1}")
            write_clinic(folders[-1], clinic_index=i, n_patients=6, prevalence=0.5)
        feds = {"public": start(work / "public", False, folders), "direct": start(work / "direct", True, folders)}
        try:
            import httpx

            body = os.urandom(128 * MB)
            link = feds["public"]
            doors = {"public": link.address, "direct": link.control}
            upload = {"public": [], "direct": []}
            with httpx.Client(verify=str(link.certs / "ca.crt"), timeout=120) as client:
                for i in range(a.uploads):  # A, B then B, A: neither door always goes first
                    for door in ("public", "direct") if i % 2 == 0 else ("direct", "public"):
                        upload[door].append(upload_seconds(client, doors[door], body))
            mbps = {k: 128 / statistics.median(v) for k, v in upload.items()}
            print(f"128 MB upload: public door {mbps['public']:.0f} MB/s, direct {mbps['direct']:.0f} MB/s", flush=True)
            spec = ExperimentSpec(
                name="doors",
                backbone=a.backbone,
                image_size=32,
                rounds=a.rounds,
                local_epochs=1,
                batch_size=8,
                learning_rate=1e-3,
                min_clinics=2,
                clinic_timeout=300.0,
                seed=0,
            )
            rounds = {"public": [], "direct": []}
            for i in range(a.runs):
                for door in ("public", "direct"):
                    rows = run_once(feds[door], spec, work / f"{door}-{i}.toml")
                    rounds[door] += rows
                    print(
                        f"run {i + 1} {door:<6}: rounds "
                        + ", ".join(
                            f"{r['duration_s']:.1f} s ({(r['bytes_down'] + r['bytes_up']) / MB:.0f} MB)" for r in rows
                        ),
                        flush=True,
                    )
        finally:
            for fed in feds.values():
                fed.close()

    def mean(door: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rounds[door])

    round_s = {d: mean(d, "duration_s") for d in rounds}
    round_mb = {d: statistics.fmean((r["bytes_down"] + r["bytes_up"]) / MB for r in rounds[d]) for d in rounds}
    summary = {
        "bench": "doors",
        "backbone": a.backbone,
        "clinics": 2,
        "runs_per_door": a.runs,
        "rounds": a.rounds,
        "upload_128mb_mb_per_s": {k: round(v, 1) for k, v in mbps.items()},
        "upload_ratio": round(mbps["public"] / mbps["direct"], 3),
        "round_seconds": {k: round(v, 2) for k, v in round_s.items()},
        "round_time_ratio": round(round_s["public"] / round_s["direct"], 3),
        "round_mb": {k: round(v, 1) for k, v in round_mb.items()},
        "bytes_ratio": round(round_mb["public"] / round_mb["direct"], 4),
        "goal": "public within 5 % of direct",
        "goal_met": abs(round_s["public"] / round_s["direct"] - 1) <= 0.05
        and abs(mbps["public"] / mbps["direct"] - 1) <= 0.05,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
