"""How `coordinator simulate` grows with the number of virtual clinics: time per round, memory.

For each N (default 10, 50, 100) it runs `coordinator simulate` in its own process (a
fresh Ray each time) on generated demo DICOM with the same data per clinic
(`--patients-per-clinic`, iid), a ResNet18 at 32 px, 1 local epoch, 3 rounds, and keeps
the command's summary: wall seconds per round (round 1 includes starting Ray's workers
and the initial evaluation; rounds 2+ are the steady state), the recorder's own round
durations, and the peak RSS of the coordinator's process and of Ray's processes (summed,
sampled every 0.5 s with psutil). Generated data is kept in --workdir between calls.

Run: .venv/bin/python bench/simulate_scale.py [--clinics 10,50,100] [--rounds 3]
Progress goes to stderr; the last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = """[experiment]
name = "simulate-scale"
backbone = "resnet18"
image_size = {size}
rounds = {rounds}
local_epochs = 1
batch_size = 8
min_clinics = 2
"""


def run_one(n: int, args: argparse.Namespace, work: Path) -> dict:
    """One `coordinator simulate` with n clinics; its summary (the JSON line it prints)."""
    spec = work / "experiment.toml"
    spec.write_text(SPEC.format(size=args.image_size, rounds=args.rounds))
    cmd = [
        sys.executable,
        "-m",
        "server.cli",
        "simulate",
        str(spec),
        "--clinics",
        str(n),
        "--generate",
        "demo",
        "--patients",
        str(n * args.patients_per_clinic),
        "--workdir",
        str(work / f"n{n}"),
        "--db",
        f"sqlite:///{work / 'bench.db'}",
        "--checkpoints",
        str(work / "checkpoints"),
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RADFED_HOME": str(work / "home")}
    t0 = time.monotonic()
    with open(work / f"n{n}.log", "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=work)
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {"clinics": n, "status": "failed", "error": f"exit {proc.returncode}"}
    summary["command_s"] = round(time.monotonic() - t0, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clinics", default="10,50,100", help="Comma-separated numbers of virtual clinics.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patients-per-clinic", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None, help="Kept between calls (generated data).")
    args = parser.parse_args()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="radfed-simulate-scale-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for n in [int(x) for x in args.clinics.split(",")]:
        print(f"[simulate_scale] {n} virtual clinics x {args.rounds} rounds ...", file=sys.stderr, flush=True)
        summary = run_one(n, args, work)
        steady = summary.get("round_s", [])[1:]
        summary["steady_round_s"] = round(sum(steady) / len(steady), 1) if steady else None
        summary["steady_s_per_clinic"] = round(summary["steady_round_s"] / n, 2) if summary["steady_round_s"] else None
        print(
            f"[simulate_scale] {n}: {summary.get('status')}, rounds {summary.get('round_s')} s, "
            f"peak {summary.get('peak_memory', {}).get('total_mb')} MB, "
            f"command {summary['command_s']} s",
            file=sys.stderr,
            flush=True,
        )
        runs.append(summary)
    keep = (
        "clinics",
        "status",
        "error",
        "patients",
        "images",
        "round_s",
        "recorded_round_s",
        "steady_round_s",
        "steady_s_per_clinic",
        "setup_s",
        "simulation_s",
        "command_s",
        "peak_memory",
        "final_auroc",
    )
    print(
        json.dumps(
            {
                "bench": "simulate_scale",
                "rounds": args.rounds,
                "image_size": args.image_size,
                "patients_per_clinic": args.patients_per_clinic,
                "cpus": os.cpu_count(),
                "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
                "workdir": str(work),
                "runs": [{k: r.get(k) for k in keep} for r in runs],
            }
        )
    )


if __name__ == "__main__":
    main()
