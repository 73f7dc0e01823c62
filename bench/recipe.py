"""Screen training recipes with an in-process FedAvg simulation on every generated federation.

A real run (SuperLink, SuperNodes, one process per message) costs minutes; choosing the
recipe's defaults needs many runs. This simulates FedAvg in one process with the same
pieces the clinics use: radfed.data.load_clinic on generated DICOM (tests.generators),
radfed.training.train_local per clinic and round (seed = spec seed * 1000 + round, as the
ClientApp), example-weighted averaging of the state dicts, and evaluation of the global
model at each clinic (BatchNorm statistics re-estimated there under bn_policy "clinic").
It reports pooled AUROC over the clinics' validation splits (scikit-learn), validation
loss and the largest |logit| (saturation). Candidates are interleaved per (seed, dataset),
so a slower moment of the shared machine hits all of them alike. The last line is JSON.

    .venv/bin/python bench/recipe.py                       # 3 datasets x 2 seeds, ~15 min on 2 cores
    .venv/bin/python bench/recipe.py --candidates old,new --seeds 0 --datasets demo
    .venv/bin/python bench/recipe.py --spec demo           # the demo's spec (server.demo)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from radfed.batchnorm import reestimate_batchnorm  # noqa: E402
from radfed.data import load_clinic  # noqa: E402
from radfed.models import create_model  # noqa: E402
from radfed.training import recipe_kwargs, train_local  # noqa: E402
from tests.generators import GENERATORS  # noqa: E402

OLD = {
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "warmup_rounds": 0,
    "augment": "flip",
    "bn_policy": "global",
}
CANDIDATES: dict[str, dict] = {
    "old": OLD,  # the recipe of issue 14: Adam 1e-3, no smoothing, flips, averaged BN
    "ls": {**OLD, "label_smoothing": 0.1},
    "ls_bn": {**OLD, "label_smoothing": 0.1, "bn_policy": "clinic"},
    "adamw_ls_bn": {**OLD, "weight_decay": 0.05, "label_smoothing": 0.1, "bn_policy": "clinic"},
    "adamw_ls_bn_aug": {
        **OLD,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
        "bn_policy": "clinic",
        "augment": "intensity",
    },
    "aug_lr3e-4_warm": {
        **OLD,
        "learning_rate": 3e-4,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
        "bn_policy": "clinic",
        "augment": "intensity",
        "warmup_rounds": 1,
    },
    "bn_only": {**OLD, "bn_policy": "clinic"},
}


class _Spec:
    """The spec fields the simulation reads (a stand-in for ExperimentSpec)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(GENERATORS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--candidates", default="old,ls,ls_bn,adamw_ls_bn,adamw_ls_bn_aug,aug_lr3e-4_warm")
    p.add_argument(
        "--spec",
        choices=("issue14", "demo"),
        default="issue14",
        help="issue14: resnet18, 64 px, 40 patients, 4 rounds x 2 epochs; "
        "demo: server.demo's spec (its backbone, size, patients, rounds)",
    )
    p.add_argument("--patients", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--local-epochs", type=int, default=None)
    p.add_argument("--backbone", default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/radfed-recipe"))
    return p.parse_args()


def _base(a: argparse.Namespace) -> dict:
    if a.spec == "demo":
        from server.demo import DemoOptions, demo_spec

        opts = DemoOptions()
        s = demo_spec(opts)
        base = {
            "backbone": s.backbone,
            "image_size": s.image_size,
            "rounds": s.rounds,
            "local_epochs": s.local_epochs,
            "batch_size": s.batch_size,
            "patients": opts.patients,
            "val_fraction": s.val_fraction,
            **{k: getattr(s, k) for k in OLD},
        }
    else:
        base = {
            "backbone": "resnet18",
            "image_size": 64,
            "rounds": 4,
            "local_epochs": 2,
            "batch_size": 16,
            "patients": 40,
            "val_fraction": 0.3,
        }
    for key in ("patients", "rounds", "local_epochs", "backbone", "image_size"):
        if getattr(a, key) is not None:
            base[key] = getattr(a, key)
    return base


def _average(states: list[dict], weights: list[int]) -> dict:
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(s[key] * (w / total) for s, w in zip(states, weights))
        else:
            out[key] = first.clone()
    return out


@torch.no_grad()
def _logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i : i + 64]) for i in range(0, len(images), 64)])


def simulate(spec: _Spec, clinics: list) -> dict:
    """FedAvg over `clinics` in this process; pooled and per-clinic figures of the final model."""
    torch.manual_seed(spec.seed)
    global_model = create_model(spec.backbone, 2, "random")
    for server_round in range(1, spec.rounds + 1):
        states, weights = [], []
        for data in clinics:
            local = copy.deepcopy(global_model)
            seed = spec.seed * 1000 + server_round
            torch.manual_seed(seed)
            train_local(
                local,
                data.train.images,
                data.train.labels,
                epochs=spec.local_epochs,
                batch_size=spec.batch_size,
                seed=seed,
                **recipe_kwargs(spec, server_round),
            )
            states.append(local.state_dict())
            weights.append(len(data.train.labels))
        global_model.load_state_dict(_average(states, weights))
    scores, labels, per_clinic, losses, max_logit = [], [], [], [], 0.0
    for data in clinics:
        model = copy.deepcopy(global_model)
        if spec.bn_policy == "clinic":
            reestimate_batchnorm(model, data.train.images, labels=data.train.labels)  # as the ClientApp
        logits = _logits(model, data.val.images)
        y = data.val.labels
        losses.append(float(torch.nn.functional.cross_entropy(logits, y)) * len(y))
        margin = (logits[:, 1] - logits[:, 0]).numpy()
        max_logit = max(max_logit, float(logits.abs().max()))
        scores.append(margin)
        labels.append(y.numpy())
        per_clinic.append(float(roc_auc_score(y.numpy(), margin)) if len(set(y.tolist())) > 1 else None)
    pooled = float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))
    n = sum(len(y) for y in labels)
    return {
        "auroc": round(pooled, 4),
        "clinics": [None if c is None else round(c, 4) for c in per_clinic],
        "val_loss": round(sum(losses) / n, 4),
        "max_abs_logit": round(max_logit, 2),
    }


def main() -> None:
    a = _args()
    base = _base(a)
    torch.set_num_threads(2)
    names = [c.strip() for c in a.candidates.split(",") if c.strip()]
    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    seeds = [int(s) for s in a.seeds.split(",")]
    rows: dict[str, dict[str, list]] = {c: {d: [] for d in datasets} for c in names}
    started = time.monotonic()
    for seed in seeds:
        for dataset in datasets:
            folders = GENERATORS[dataset](
                a.workdir / f"{dataset}-p{base['patients']}-s{seed}", 3, n_patients=base["patients"], seed=seed
            )
            clinics = [
                load_clinic(
                    f,
                    ("normal", "opacity"),
                    base["image_size"],
                    seed=seed,
                    val_fraction=base["val_fraction"],
                    cache_dir=a.workdir / "cache",
                )
                for f in folders
            ]
            for name in names:
                t0 = time.monotonic()
                spec = _Spec(**{**base, **CANDIDATES[name], "seed": seed})
                result = simulate(spec, clinics)
                result["seconds"] = round(time.monotonic() - t0, 1)
                rows[name][dataset].append(result)
                print(json.dumps({"candidate": name, "dataset": dataset, "seed": seed, **result}), flush=True)
    table = {
        c: {
            d: {
                "auroc_mean": round(statistics.mean(r["auroc"] for r in rs), 4),
                "auroc_min": min(r["auroc"] for r in rs),
                "val_loss_mean": round(statistics.mean(r["val_loss"] for r in rs), 3),
                "max_abs_logit": max(r["max_abs_logit"] for r in rs),
            }
            for d, rs in per.items()
        }
        for c, per in rows.items()
    }
    print(f"{'candidate':<18}" + "".join(f"{d:>22}" for d in datasets) + f"{'worst':>8}")
    for c, per in table.items():
        cells = "".join(f"{per[d]['auroc_mean']:>10.3f} (loss {per[d]['val_loss_mean']:>5.2f})" for d in datasets)
        print(f"{c:<18}{cells}{min(per[d]['auroc_mean'] for d in datasets):>8.3f}")
    best = max(table, key=lambda c: min(table[c][d]["auroc_mean"] for d in datasets))
    print(
        json.dumps(
            {
                "bench": "recipe",
                "spec": {k: v for k, v in base.items()},
                "seeds": seeds,
                "candidates": {c: CANDIDATES[c] for c in names},
                "table": table,
                "best_worst_dataset": best,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
