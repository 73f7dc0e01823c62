"""The centralised baseline a federated run is measured against.

Same model, initialisation, freeze policy, seed and budget as the experiment: the
clinics' training splits (the same patient split every clinic makes) are pooled, and
the model is trained for `rounds` blocks of `local_epochs` epochs with the optimiser
restarted at each block, as every clinic's optimiser is in every round; so each image
is seen the same number of times as in the federation. It is then evaluated on each
clinic's validation split and on their union, with CIs over patients.

Pooling images in one place is exactly what federated learning avoids: this is a tool
for generated or consented data only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from radfed.spec import ExperimentSpec, data_options

if TYPE_CHECKING:  # torch and the data loader load only once the input is checked
    import torch

    from radfed.data import ClinicData

Step = Callable[[str], None]  # called after each clinic loaded / each block trained


class BaselineError(ValueError):
    """Bad baseline input (names, hold-out); one line for the user."""


@dataclass
class BaselineResult:
    """Pooled figures over the training clinics' validation splits, and each clinic's."""

    pooled: dict[str, float | None]
    clinics: dict[str, dict[str, float | None]]
    holdout: str | None
    seconds: float


def clinic_folders(items: list[str]) -> dict[str, Path]:
    """`DIR` or `NAME=DIR` per --data; the name defaults to the folder's name."""
    folders: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        folder = Path(path if sep else item).expanduser()
        name = name if sep else folder.resolve().name
        if name in folders:
            raise BaselineError(f"clinic name {name!r} is given twice; name them with --data NAME=DIR")
        if not folder.is_dir():
            raise BaselineError(
                f"data folder {folder}: does not exist or is not a folder; "
                "pass a clinic's data folder (DICOM files and labels.csv)"
            )
        folders[name] = folder
    return folders


def check_holdout(folders: dict[str, Path], holdout: str | None) -> None:
    """A hold-out must be one of the clinics and leave at least one to train on."""
    if holdout and holdout not in folders:
        raise BaselineError(
            f"holdout clinic {holdout!r} is not one of the --data clinics "
            f"({', '.join(folders)}); fix --holdout or add --data {holdout}=DIR"
        )
    if len([n for n in folders if n != holdout]) < 1:
        raise BaselineError("no clinic left to train on; pass --data for at least one more clinic")


def load_clinics(
    spec: ExperimentSpec, folders: dict[str, Path], workers: int = 1, step: Step | None = None
) -> dict[str, ClinicData]:
    """Each clinic's data exactly as its node loads it (same labels, size, split, options)."""
    from radfed.data import load_clinic

    clinics = {}
    for name, folder in folders.items():
        clinics[name] = load_clinic(
            folder,
            spec.labels,
            spec.image_size,
            val_fraction=spec.val_fraction,
            seed=spec.seed,
            workers=workers,
            options=data_options(spec.data),
        )
        if step:
            step(name)
    return clinics


def initial_model(spec: ExperimentSpec) -> torch.nn.Module:
    """The ServerApp's initial global model: same seed, weights and freeze policy."""
    import torch

    from radfed.models import apply_freeze, create_model

    torch.manual_seed(spec.seed)
    model = create_model(spec.backbone, len(spec.labels), spec.weights)
    apply_freeze(model, spec.freeze, spec.unfreeze_top)
    return model


def train_centralised(
    spec: ExperimentSpec, model: torch.nn.Module, clinics: list[ClinicData], step: Step | None = None
) -> None:
    """`rounds` blocks of `local_epochs` epochs over the pooled training splits."""
    import torch

    from radfed.data.rows import ConcatRows
    from radfed.training import recipe_kwargs, train_local

    images = ConcatRows([c.train.pixels for c in clinics])  # read a batch at a time, never pooled in memory
    labels = torch.cat([c.train.labels for c in clinics])
    for server_round in range(1, spec.rounds + 1):
        seed = spec.seed * 1000 + server_round  # the clinics' seed for that round
        torch.manual_seed(seed)
        train_local(
            model,
            images,
            labels,
            epochs=spec.local_epochs,
            batch_size=spec.batch_size,
            seed=seed,
            **recipe_kwargs(spec, server_round),
        )
        if step:
            step(f"round {server_round}")


def evaluate_centralised(
    spec: ExperimentSpec, model: torch.nn.Module, clinics: dict[str, ClinicData], holdout: str | None
) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
    """(pooled over the training clinics, per clinic). Each clinic's threshold is its own
    Youden's J; a held-out clinic gets the pooled one, as in a federated hold-out run. The
    pooled CI resamples patients within their clinic, as the federated pooled CI does."""
    import numpy as np

    from radfed.batchnorm import as_evaluated
    from radfed.evaluation import quality_report
    from radfed.training import predict_logits
    from radfed.unit_scores import unit_outputs

    outputs = {
        name: unit_outputs(  # per labelled unit (study, series, image), as the clinics report
            predict_logits(as_evaluated(model, c.train.pixels, spec.bn_policy, c.train.labels), c.val.pixels).numpy(),
            c.val.labels.numpy(),
            c.val.patients.numpy() if c.val.patients is not None else np.arange(len(c.val)),
            c.val.units.numpy() if c.val.units is not None else None,
        )
        for name, c in clinics.items()
    }
    inside = [name for name in outputs if name != holdout]
    pooled = quality_report(
        np.concatenate([outputs[n][0] for n in inside]),
        np.concatenate([outputs[n][1] for n in inside]),
        np.concatenate([outputs[n][2] for n in inside]),
        strata=np.concatenate([np.full(len(outputs[n][1]), i) for i, n in enumerate(inside)]),
        seed=spec.seed,
    ).as_dict()
    per_clinic = {}
    for name, (logits, labels, patients) in outputs.items():
        cut = pooled["threshold_logit"] if name == holdout else None
        per_clinic[name] = quality_report(logits, labels, patients, threshold_logit=cut, seed=spec.seed).as_dict()
    return pooled, per_clinic


def run_baseline(
    spec: ExperimentSpec,
    folders: dict[str, Path],
    holdout: str | None = None,
    workers: int = 1,
    step: Step | None = None,
) -> BaselineResult:
    """Load, train and evaluate; `holdout` is a clinic left out of training (evaluated only)."""
    check_holdout(folders, holdout)
    started = time.monotonic()
    clinics = load_clinics(spec, folders, workers, step)
    model = initial_model(spec)
    train_centralised(spec, model, [c for n, c in clinics.items() if n != holdout], step)
    pooled, per_clinic = evaluate_centralised(spec, model, clinics, holdout)
    return BaselineResult(pooled, per_clinic, holdout, time.monotonic() - started)
