"""The RadImageNet paper's scenario sweep for one task, and its grouped results.

Mei et al. (Radiology: AI 2022) fine-tuned 4 backbones in 6 ways each (24 scenarios per
task): unfreeze all layers at lr 1e-3 and 1e-4; freeze all layers, or unfreeze the top 10
layers, at lr 1e-2 and 1e-3. They report mean ± sd AUROC over the scenarios of a backbone,
RadImageNet against ImageNet initialisation. `coordinator sweep TASK.toml` expands the
same grid from a task file and runs it; the experiments are tagged with the sweep name
and weight source so the leaderboard groups them exactly.

Task file::

    [sweep]
    name = "pneumonia-paper"
    backbones = ["resnet50", "densenet121"]        # optional: default the paper's four
    [sweep.weights.radimagenet]                    # local files only; nothing downloads
    resnet50 = "/models/RadImageNet-ResNet50_notop.pth"
    densenet121 = "/models/RadImageNet-DenseNet121_notop.h5"
    [sweep.weights.imagenet]                       # for --compare imagenet
    resnet50 = "/models/resnet50-imagenet.pth"
    densenet121 = "/models/densenet121-imagenet.pth"

    [experiment]          # every other experiment key (labels, rounds, strategy, data...)
    labels = ["normal", "pneumonia"]
    rounds = 10
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radfed.results import PAPER_BACKBONES
from radfed.spec import BACKBONES, ExperimentSpec, SpecError, from_mapping

# (freeze policy, learning rate), in the paper's order
PAPER_SCENARIOS = (("none", 1e-3), ("none", 1e-4), ("all", 1e-2), ("all", 1e-3), ("top-k", 1e-2), ("top-k", 1e-3))
UNFREEZE_TOP = 10
FREEZE_LABELS = {"none": "unfreeze-all", "all": "freeze-all", "top-k": f"top{UNFREEZE_TOP}"}
SWEEP_KEYS = ("name", "backbones", "weights")
SET_BY_SWEEP = ("name", "backbone", "weights", "freeze", "learning_rate", "unfreeze_top", "sweep", "weight_source")


class SweepError(ValueError):
    """A task file or option that cannot be swept; one line naming the key and the fix."""


@dataclass(frozen=True)
class Task:
    """A parsed task file: the sweep's name, backbones, weight files and base experiment."""

    path: Path
    name: str
    backbones: tuple[str, ...]
    weights: dict[str, dict[str, str]]  # source -> backbone -> path or "random"
    base: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """One experiment of a sweep."""

    source: str
    backbone: str
    freeze: str
    learning_rate: float
    spec: ExperimentSpec

    def row(self) -> dict[str, Any]:
        return {
            "experiment": self.spec.name,
            "source": self.source,
            "backbone": self.backbone,
            "freeze": FREEZE_LABELS[self.freeze],
            "learning_rate": self.learning_rate,
            "weights": self.spec.weights,
            "image_size": self.spec.image_size,
        }


def load_task(path: Path) -> Task:
    """Read a task file; refuses unknown `[sweep]` keys and bad weight tables."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such file; pass the path of a sweep task TOML file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SweepError(f"{path}: not valid TOML ({err}); fix the syntax") from None
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        raise SweepError(
            f"{path}: no [sweep] table; add [sweep] with name and "
            "[sweep.weights.radimagenet] (see `coordinator sweep --help`)"
        )
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key 'sweep.{unknown[0]}'; allowed: {', '.join(SWEEP_KEYS)}")
    name = sweep.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SweepError(f"{path}: key 'sweep.name' is missing; add name = \"my-task-sweep\"")
    backbones = tuple(sweep.get("backbones", PAPER_BACKBONES))
    _check_backbones(path, "sweep.backbones", backbones)
    weights = sweep.get("weights")
    if (
        not isinstance(weights, dict)
        or not weights
        or not all(isinstance(t, dict) and all(isinstance(v, str) for v in t.values()) for t in weights.values())
    ):
        raise SweepError(
            f"{path}: key 'sweep.weights' must hold one table per weight source, "
            'e.g. [sweep.weights.radimagenet] resnet50 = "/models/r50.pth"'
        )
    base = data.get("experiment", {})
    if not isinstance(base, dict):
        raise SweepError(f"{path}: [experiment] must be a table of experiment keys")
    fixed = sorted(set(base) & set(SET_BY_SWEEP) - {"name"})
    if fixed:
        raise SweepError(f"{path}: key 'experiment.{fixed[0]}' is set by the sweep for each scenario; remove it")
    return Task(
        path,
        name.strip(),
        backbones,
        {k: dict(v) for k, v in weights.items()},
        {k: v for k, v in base.items() if k != "name"},
    )


def _check_backbones(path: Path, key: str, backbones: tuple[str, ...]) -> None:
    bad = [b for b in backbones if b not in BACKBONES]
    if not backbones or bad:
        raise SweepError(f"{path}: {key} = {list(backbones)!r}; allowed: {', '.join(BACKBONES)}")


def expand(
    task: Task,
    sources: list[str],
    backbones: list[str] | None = None,
    freeze: str | None = None,
    limit: int | None = None,
) -> list[Scenario]:
    """The scenarios in run order: per source, per backbone, the paper's six.

    Every weight file is checked before any scenario is returned, so a sweep never
    starts and then stops at a missing file.
    """
    chosen = tuple(backbones) if backbones else task.backbones
    _check_backbones(task.path, "--backbones", chosen)
    if freeze is not None and freeze not in FREEZE_LABELS:
        raise SweepError(f"--freeze {freeze!r}; allowed: {', '.join(FREEZE_LABELS)}")
    for source in sources:
        table = task.weights.get(source)
        if table is None:
            raise SweepError(
                f"{task.path}: no [sweep.weights.{source}] table; add one with a "
                f"local weight file per backbone, or drop that source"
            )
        for backbone in chosen:
            _check_weight_file(task.path, source, backbone, table.get(backbone))
    scenarios = []
    for source in sources:
        for backbone in chosen:
            for policy, lr in PAPER_SCENARIOS:
                if freeze is None or policy == freeze:
                    scenarios.append(_scenario(task, source, backbone, policy, lr))
    return scenarios[:limit] if limit else scenarios


def _check_weight_file(task: Path, source: str, backbone: str, value: str | None) -> None:
    key = f"[sweep.weights.{source}] {backbone}"
    if value is None:
        raise SweepError(
            f'{task}: {key} is missing; add {backbone} = "/path/to/file" (a local weight file, or "random")'
        )
    if value != "random" and not Path(value).expanduser().is_file():
        raise SweepError(
            f"{task}: {key} = {value!r}: no such file; put the {source} weights "
            f"for {backbone} there (nothing is downloaded) or fix the path"
        )


def _scenario(task: Task, source: str, backbone: str, policy: str, lr: float) -> Scenario:
    values = dict(task.base)
    if "image_size" not in values:  # the architecture's own (torch import: only if needed)
        from radfed.models import default_input_size

        values["image_size"] = default_input_size(backbone)
    values.update(
        name=f"{task.name}-{source}-{backbone}-{FREEZE_LABELS[policy]}-lr{lr:g}",
        backbone=backbone,
        weights=str(Path(w).expanduser()) if (w := task.weights[source][backbone]) != "random" else w,
        freeze=policy,
        learning_rate=lr,
        unfreeze_top=UNFREEZE_TOP,
        sweep=task.name,
        weight_source=source,
    )
    try:
        spec = from_mapping(values, source=str(task.path))
    except SpecError as err:
        raise SweepError(str(err).replace("key '", "key 'experiment.", 1)) from None
    return Scenario(source, backbone, policy, lr, spec)
