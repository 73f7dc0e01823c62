"""Federated vs centralised learning quality on generated non-IID clinics (issues 7, 14).

For each generated federation (tests.generators.GENERATORS: the demo's opacity, nodules,
effusion; each 3 clinics with different scanners, bit depths, photometric
interpretations, sizes, compression and prevalences), in one go: writes the clinics,
trains the centralised baseline with `coordinator baseline`, then federated FedAvg, FedProx
and FedBN with the same spec (model, initialisation, seed, rounds x local epochs, and the
spec's default training recipe) through `coordinator run` on a real SuperLink and 3
SuperNodes on 127.0.0.1. Every figure is on the same validation patients. It prints each
AUROC with its 95 % CI (pooled over the clinics' validation splits, patients resampled
within their clinic; the federated one from the clinics' score histograms and resampled
replicates) and federated ÷ centralised, pooled and per clinic (on each clinic's own
validation patients). Goals, per dataset: the best strategy >= 0.98 of centralised, and
FedAvg >= 0.95; `goal_met` per dataset and overall. The last line is one JSON object.

    .venv/bin/python bench/fed_vs_central.py     # resnet18 at 64 px, 2 CPU cores: ~5 min per dataset
    .venv/bin/python bench/fed_vs_central.py --datasets nodules --rounds 5 --patients 80
    .venv/bin/python bench/fed_vs_central.py --transfer-dtype bfloat16   # weights sent in half the bytes
    .venv/bin/python bench/fed_vs_central.py --strategies fedavg,fedprox,fedavg@bfloat16  # one baseline
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

from radfed.spec import ExperimentSpec, spec_to_toml  # noqa: E402
from radfed.store import Store  # noqa: E402
from tests.federation import Federation, cli  # noqa: E402
from tests.generators import GENERATORS  # noqa: E402

STRATEGIES = ("fedavg", "fedprox", "fedbn")
GOAL = 0.98  # best strategy, federated / centralised pooled AUROC
GOAL_FEDAVG = 0.95  # FedAvg with the spec's defaults
TRANSFER_DTYPES = ("float32", "bfloat16", "float16")


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
    p.add_argument(
        "--datasets", default=",".join(GENERATORS), help="comma-separated generated federations (default: %(default)s)"
    )
    p.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="comma-separated strategies to run; STRATEGY@DTYPE sends that run's weights in "
        "DTYPE (e.g. fedavg,fedavg@bfloat16) (default: %(default)s)",
    )
    p.add_argument(
        "--transfer-dtype",
        default="float32",
        help="spec transfer_dtype: the dtype weights travel in, both ways; a comma-separated list "
        "(e.g. float32,bfloat16) runs every strategy once per dtype, results keyed "
        "STRATEGY@DTYPE, against the same centralised baseline (default: %(default)s)",
    )
    a = p.parse_args()
    a.transfer_dtypes = [d.strip() for d in a.transfer_dtype.split(",") if d.strip()]
    named = [x.partition("@")[2] for x in a.strategies.split(",") if "@" in x]
    bad = [d for d in a.transfer_dtypes + [n.strip() for n in named] if d not in TRANSFER_DTYPES]
    if bad or not a.transfer_dtypes:
        p.error(
            f"transfer dtype {bad[0] if bad else ''!r}: allowed {', '.join(TRANSFER_DTYPES)} "
            "(--transfer-dtype a comma-separated list; a --strategies item STRATEGY@DTYPE)"
        )
    return a


def _contenders(a: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(result key, strategy, transfer dtype) per federated run. A `--strategies` item may
    name its dtype (`fedavg@bfloat16`, keyed so); the others run once per `--transfer-dtype`,
    keyed by the strategy alone when one dtype is asked for, STRATEGY@DTYPE when several."""
    several = len(a.transfer_dtypes) > 1
    out = []
    for item in [x.strip() for x in a.strategies.split(",") if x.strip()]:
        strategy, _, dtype = item.partition("@")
        if dtype:
            out.append((item, strategy, dtype))
        else:
            out += [(f"{strategy}@{d}" if several else strategy, strategy, d) for d in a.transfer_dtypes]
    return out


def _spec(a: argparse.Namespace, strategy: str, transfer_dtype: str = "float32") -> ExperimentSpec:
    return ExperimentSpec(
        name="fed-vs-central",
        backbone=a.backbone,
        image_size=a.image_size,
        rounds=a.rounds,
        local_epochs=a.local_epochs,
        batch_size=16,
        strategy=strategy,  # recipe: spec defaults
        min_clinics=3,
        clinic_timeout=300.0,
        val_fraction=0.3,
        seed=a.seed,
        transfer_dtype=transfer_dtype,
    )


def _federated(fed: Federation, work: Path, db: str, a: argparse.Namespace, strategy: str, transfer_dtype: str) -> dict:
    path = work / f"{strategy}-{transfer_dtype}.toml"
    path.write_text(spec_to_toml(_spec(a, strategy, transfer_dtype)))
    proc = cli(
        "server.cli",
        "run",
        str(path),
        "--control",
        fed.control,
        "--insecure",
        "--db",
        db,
        "--checkpoints",
        str(work / "ckpt"),
        timeout=1200,
    )
    if proc.returncode != 0:  # recorded, and the other strategies and datasets go on
        print(f"{strategy} run failed: {proc.stderr.strip()[-500:]}\n{fed.logs()[-1500:]}", flush=True)
        return {"bench_error": proc.stderr.strip().splitlines()[-1][-300:] if proc.stderr.strip() else "failed"}
    runs = [e for e in Store(db).leaderboard() if e["strategy"] == strategy]
    return max(runs, key=lambda e: e["run_id"])


def _per_clinic(entry: dict, central: dict) -> dict[str, dict[str, float]]:
    """Each clinic's final federated AUROC beside the centralised model's on its patients."""
    last = max((c["server_round"] for c in entry["clinics"] if c["phase"] == "evaluate"), default=None)
    out = {}
    for c in sorted(entry["clinics"], key=lambda c: c["clinic"]):
        base = (central["clinics"].get(c["clinic"]) or {}).get("auroc")
        if c["phase"] == "evaluate" and c["server_round"] == last and c["auroc"] is not None and base:
            q = c.get("quality") or {}
            out[c["clinic"]] = {
                "auroc": round(c["auroc"], 4),
                "ci95": [q.get("auroc_low"), q.get("auroc_high")],
                "central": round(base, 4),
                "ratio": round(c["auroc"] / base, 4),
            }
    return out


def points_in_their_ci(entry: dict) -> bool:
    """Every federated AUROC the run recorded (pooled per round, each clinic's) lies in its own CI."""
    figures = [(r.get("pooled") or {}) for r in entry["rounds"]] + [
        {"auroc": c["auroc"], **(c.get("quality") or {})} for c in entry["clinics"] if c["auroc"] is not None
    ]
    return all(
        f.get("auroc_low") is None or f["auroc_low"] <= f["auroc"] <= f["auroc_high"]
        for f in figures
        if f.get("auroc") is not None
    )


def _megabytes(entry: dict, key: str) -> float | None:
    """A run's model traffic over all rounds (recorded as it went: bytes_down / bytes_up)."""
    values = [r[key] for r in entry["rounds"] if r.get(key) is not None]
    return round(sum(values) / 1e6, 2) if values else None


def _dataset(a: argparse.Namespace, dataset: str, work: Path) -> dict:
    """Centralised baseline and every strategy on one generated federation."""
    started = time.monotonic()
    folders = GENERATORS[dataset](work / "data", 3, n_patients=a.patients, seed=a.data_seed)
    db = f"sqlite:///{work / 'radfed.db'}"
    seconds: dict[str, float] = {"data": time.monotonic() - started}

    t0 = time.monotonic()
    spec_path = work / "central.toml"
    spec_path.write_text(spec_to_toml(_spec(a, "fedavg")))
    proc = cli(
        "server.cli", "baseline", str(spec_path), *[f"--data={f}" for f in folders], "--db", db, "--json", timeout=1200
    )
    if proc.returncode != 0:
        raise SystemExit(f"{dataset}: baseline failed: {proc.stderr.strip()[-500:]}")
    central = json.loads(proc.stdout.strip().splitlines()[-1])
    seconds["central"] = time.monotonic() - t0
    c_auroc = central["pooled"]["auroc"]
    print(
        f"[{dataset}] centralised  pooled AUROC {c_auroc:.4f} [{central['pooled']['auroc_low']:.4f}-"
        f"{central['pooled']['auroc_high']:.4f}] ({seconds['central']:.0f} s)",
        flush=True,
    )

    fed = Federation(work / "fed")
    results: dict[str, dict] = {}
    try:
        fed.start_superlink()
        for folder in folders:
            fed.start_clinic(folder.name, folder)
        for key, strategy, transfer_dtype in _contenders(a):
            t0 = time.monotonic()
            entry = _federated(fed, work, db, a, strategy, transfer_dtype)
            seconds[key] = time.monotonic() - t0
            if "bench_error" in entry:
                results[key] = {
                    "strategy": strategy,
                    "transfer_dtype": transfer_dtype,
                    "auroc": None,
                    "ratio": None,
                    "error": entry["bench_error"],
                    "clinics": {},
                }
                continue
            pooled = entry["pooled"] or {}
            ratio = pooled["auroc"] / c_auroc if pooled.get("auroc") is not None else None
            clinics = _per_clinic(entry, central)
            results[key] = {
                "strategy": strategy,
                "transfer_dtype": transfer_dtype,
                "auroc": pooled.get("auroc"),
                "ci95": [pooled.get("auroc_low"), pooled.get("auroc_high")],
                "mean_clinic_auroc": entry["clinic_mean_auroc"],
                "ece": pooled.get("ece"),
                "ratio": ratio,
                "worst_clinic_ratio": min((c["ratio"] for c in clinics.values()), default=None),
                "leaderboard_ratio": entry["vs_central"],
                "clinics": clinics,
                "points_in_ci": points_in_their_ci(entry),
                "mb_down": _megabytes(entry, "bytes_down"),
                "mb_up": _megabytes(entry, "bytes_up"),
            }
            print(
                f"[{dataset}] {key:<8} pooled AUROC {pooled.get('auroc') or 0:.4f} "
                f"[{pooled.get('auroc_low') or 0:.4f}-{pooled.get('auroc_high') or 0:.4f}]  "
                f"fed/central {ratio or 0:.4f}  worst clinic {results[key]['worst_clinic_ratio']} "
                f"({seconds[key]:.0f} s)",
                flush=True,
            )
            for name, c in clinics.items():
                ci = "[{:.4f}-{:.4f}]".format(*c["ci95"]) if None not in c["ci95"] else ""
                print(
                    f"  {name:<10} AUROC {c['auroc']:.4f} {ci}  central {c['central']:.4f}  "
                    f"fed/central {c['ratio']:.4f}",
                    flush=True,
                )
    finally:
        fed.close()

    # the goals compare runs at the first dtype asked for (float32 by default): a
    # bfloat16 contender is reported beside them, not counted as another strategy
    goal_runs = [k for k in results if results[k]["transfer_dtype"] == a.transfer_dtypes[0]]
    best = max(goal_runs, key=lambda s: results[s]["ratio"] or 0.0) if goal_runs else None
    fedavg_key = "fedavg" if len(a.transfer_dtypes) == 1 else f"fedavg@{a.transfer_dtypes[0]}"
    fedavg = (results.get(fedavg_key) or {}).get("ratio")  # the goal's FedAvg: the first dtype listed
    out = {
        "central": {
            "auroc": c_auroc,
            "ci95": [central["pooled"]["auroc_low"], central["pooled"]["auroc_high"]],
            "ece": central["pooled"]["ece"],
        },
        **results,
        "best": best,
        "best_ratio": results[best]["ratio"] if best else None,
        "goal_met": best is not None and (results[best]["ratio"] or 0.0) >= GOAL and (fedavg or 0.0) >= GOAL_FEDAVG,
        "seconds": {k: round(v, 1) for k, v in {**seconds, "total": time.monotonic() - started}.items()},
    }
    print(f"[{dataset}] " + json.dumps(out), flush=True)
    return out


def main() -> None:
    a = _args()
    started = time.monotonic()
    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in GENERATORS]
    if unknown:
        raise SystemExit(f"unknown dataset {unknown[0]}; allowed: {', '.join(GENERATORS)}")
    per: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fed-vs-central-") as tmp:
        for dataset in datasets:
            work = ((a.workdir or Path(tmp)) / dataset).resolve()
            work.mkdir(parents=True, exist_ok=True)
            per[dataset] = _dataset(a, dataset, work)
    recipe = _spec(a, "fedavg")
    summary = {
        "bench": "fed_vs_central",
        "device": "cpu",
        "backbone": a.backbone,
        "image_size": a.image_size,
        "clinics": 3,
        "patients_per_clinic": a.patients,
        "rounds": a.rounds,
        "local_epochs": a.local_epochs,
        "transfer_dtype": a.transfer_dtype,
        "recipe": {
            k: getattr(recipe, k)
            for k in ("learning_rate", "weight_decay", "label_smoothing", "warmup_rounds", "augment", "bn_policy")
        },
        "seeds": {"experiment": a.seed, "data": a.data_seed, "bootstrap": a.seed},
        "goal": {"best": GOAL, "fedavg": GOAL_FEDAVG},
        "datasets": per,
        "goal_met": all(r["goal_met"] for r in per.values()),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
