"""Federated vs centralised learning quality on generated non-IID clinics (issue 7).

In one go: writes 3 generated clinics (radfed.demo_data.write_federation: prevalences
0.3 / 0.5 / 0.7, different scanners, bit depths and compression), trains the centralised
baseline with `coordinator baseline`, then federated FedAvg, FedProx and FedBN with the
same spec (model, initialisation, seed, rounds x local epochs) through `coordinator run`
on a real SuperLink and 3 SuperNodes on 127.0.0.1. Every figure is on the same
validation patients. It prints each AUROC with its 95 % CI (pooled over the clinics'
validation splits, patients resampled within their clinic; the federated one from the
clinics' score histograms and resampled replicates) and federated ÷ centralised, pooled
and per clinic (on each clinic's own validation patients); the goal is >= 0.98 for the
best strategy, pooled. The last line is one JSON object with the seeds.

    .venv/bin/python bench/fed_vs_central.py            # resnet18 at 64 px, 2 CPU cores: ~5 min
    .venv/bin/python bench/fed_vs_central.py --rounds 5 --patients 80
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from radfed.demo_data import write_federation  # noqa: E402
from radfed.spec import ExperimentSpec, spec_to_toml  # noqa: E402
from radfed.store import Store  # noqa: E402
from tests.federation import Federation, cli  # noqa: E402

STRATEGIES = ("fedavg", "fedprox", "fedbn")
GOAL = 0.98


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--patients", type=int, default=60, help="generated patients per clinic")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--seed", type=int, default=0, help="experiment seed (init, split, shuffles, bootstrap)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated clinics")
    p.add_argument("--workdir", type=Path, default=None, help="keep data, database and logs here")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated strategies to run (default: %(default)s)")
    return p.parse_args()


def _spec(a: argparse.Namespace, strategy: str) -> ExperimentSpec:
    return ExperimentSpec(
        name="fed-vs-central", backbone=a.backbone, image_size=a.image_size, rounds=a.rounds,
        local_epochs=a.local_epochs, batch_size=16, learning_rate=1e-3, strategy=strategy,
        min_clinics=3, clinic_timeout=300.0, val_fraction=0.3, seed=a.seed,
    )


def _federated(fed: Federation, work: Path, db: str, a: argparse.Namespace, strategy: str) -> dict:
    path = work / f"{strategy}.toml"
    path.write_text(spec_to_toml(_spec(a, strategy)))
    proc = cli("server.cli", "run", str(path), "--control", fed.control, "--insecure", "--db", db,
               "--checkpoints", str(work / "ckpt"), timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"{strategy} run failed: {proc.stderr.strip()[-500:]}\n{fed.logs()[-3000:]}")
    runs = [e for e in Store(db).leaderboard() if e["strategy"] == strategy]
    return max(runs, key=lambda e: e["run_id"])


def _per_clinic(entry: dict, central: dict) -> dict[str, dict[str, float]]:
    """Each clinic's final federated AUROC beside the centralised model's on its patients."""
    last = max((c["server_round"] for c in entry["clinics"] if c["phase"] == "evaluate"), default=None)
    out = {}
    for c in sorted(entry["clinics"], key=lambda c: c["clinic"]):
        base = (central["clinics"].get(c["clinic"]) or {}).get("auroc")
        if c["phase"] == "evaluate" and c["server_round"] == last and c["auroc"] is not None and base:
            out[c["clinic"]] = {"auroc": round(c["auroc"], 4), "central": round(base, 4),
                                "ratio": round(c["auroc"] / base, 4)}
    return out


def main() -> None:
    a = _args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fed-vs-central-") as tmp:
        work = (a.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        folders = write_federation(work / "data", 3, n_patients=a.patients, seed=a.data_seed)
        db = f"sqlite:///{work / 'radfed.db'}"
        seconds: dict[str, float] = {"data": time.monotonic() - started}

        t0 = time.monotonic()
        spec_path = work / "central.toml"
        spec_path.write_text(spec_to_toml(_spec(a, "fedavg")))
        proc = cli("server.cli", "baseline", str(spec_path), *[f"--data={f}" for f in folders],
                   "--db", db, "--json", timeout=1200)
        if proc.returncode != 0:
            raise SystemExit(f"baseline failed: {proc.stderr.strip()[-500:]}")
        central = json.loads(proc.stdout.strip().splitlines()[-1])
        seconds["central"] = time.monotonic() - t0
        c_auroc = central["pooled"]["auroc"]
        print(f"centralised  pooled AUROC {c_auroc:.4f} [{central['pooled']['auroc_low']:.3f}-"
              f"{central['pooled']['auroc_high']:.3f}] ({seconds['central']:.0f} s)", flush=True)

        fed = Federation(work / "fed")
        results: dict[str, dict] = {}
        try:
            fed.start_superlink()
            for folder in folders:
                fed.start_clinic(folder.name, folder)
            for strategy in [x.strip() for x in a.strategies.split(",") if x.strip()]:
                t0 = time.monotonic()
                entry = _federated(fed, work, db, a, strategy)
                seconds[strategy] = time.monotonic() - t0
                pooled = entry["pooled"] or {}
                ratio = pooled["auroc"] / c_auroc if pooled.get("auroc") is not None else None
                clinics = _per_clinic(entry, central)
                results[strategy] = {"auroc": pooled.get("auroc"),
                                     "ci95": [pooled.get("auroc_low"), pooled.get("auroc_high")],
                                     "mean_clinic_auroc": entry["final_auroc"],
                                     "ece": pooled.get("ece"), "ratio": ratio,
                                     "leaderboard_ratio": entry["vs_central"], "clinics": clinics}
                print(f"{strategy:<12} pooled AUROC {pooled.get('auroc'):.4f} [{pooled.get('auroc_low') or 0:.3f}-"
                      f"{pooled.get('auroc_high') or 0:.3f}]  fed/central {ratio:.4f} "
                      f"({seconds[strategy]:.0f} s)", flush=True)
                for name, c in clinics.items():
                    print(f"  {name:<10} AUROC {c['auroc']:.4f}  central {c['central']:.4f}  "
                          f"fed/central {c['ratio']:.4f}", flush=True)
        finally:
            fed.close()

    best = max(results, key=lambda s: results[s]["ratio"] or 0.0)
    summary = {
        "bench": "fed_vs_central", "device": "cpu", "backbone": a.backbone, "image_size": a.image_size,
        "clinics": 3, "patients_per_clinic": a.patients, "rounds": a.rounds, "local_epochs": a.local_epochs,
        "seeds": {"experiment": a.seed, "data": a.data_seed, "bootstrap": a.seed},
        "central": {"auroc": c_auroc, "ci95": [central["pooled"]["auroc_low"], central["pooled"]["auroc_high"]],
                    "ece": central["pooled"]["ece"]},
        "worst_clinic_ratio": {s: min((c["ratio"] for c in r["clinics"].values()), default=None)
                               for s, r in results.items()},
        **results, "best": best, "best_ratio": results[best]["ratio"], "goal": GOAL,
        "goal_met": (results[best]["ratio"] or 0.0) >= GOAL,
        "seconds": {k: round(v, 1) for k, v in {**seconds, "total": time.monotonic() - started}.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
