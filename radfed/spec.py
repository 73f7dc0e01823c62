"""The experiment spec: one TOML file that says what a federated run trains, and how.

The coordinator writes it, `coordinator run` validates it before anything starts, and the
ServerApp and every ClientApp receive it as JSON, so all sides read the same values.
A bad value is refused with one line naming the key and what is allowed.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

BACKBONES = ("resnet50", "densenet121", "inception_v3", "inception_resnet_v2", "resnet18")
FREEZE_POLICIES = ("none", "all", "top-k")
AUGMENTATIONS = ("flip", "intensity")  # radfed.training.AUGMENTATIONS (no torch import here)
BN_POLICIES = ("global", "clinic")  # radfed.batchnorm.BN_POLICIES
TRANSFER_DTYPES = ("float32", "bfloat16", "float16")  # weights on the wire (radfed.transfer)


class SpecError(ValueError):
    """A spec value that cannot be used; the message is one line naming the key."""


@dataclass(frozen=True)
class ExperimentSpec:
    """What one federated experiment trains; field docs double as the TOML reference."""

    name: str
    labels: tuple[str, ...] = ("normal", "opacity")
    backbone: str = "resnet50"
    weights: str = "random"
    image_size: int = 224
    rounds: int = 3
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-3
    # The recipe below was chosen by measurement on three non-IID generated federations
    # (bench/recipe.py, README "Training recipe"); a spec without these keys gets them.
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (0 = Adam)
    label_smoothing: float = 0.1  # bounds the logits: no saturated scores on small clinics
    warmup_rounds: int = 0  # rounds r = 1..k train at r/(k+1) of the rate (linear)
    augment: str = "flip"  # "flip", or flip + contrast/brightness/shift ("intensity")
    bn_policy: str = "clinic"  # "global": averaged BatchNorm statistics; "clinic": each
    # clinic re-estimates them on its own training images before evaluating the global model
    freeze: str = "none"
    unfreeze_top: int = 10
    strategy: str = "fedavg"
    strategy_params: dict[str, Any] = field(default_factory=dict, hash=False)
    min_clinics: int = 2
    min_accept: int = 0
    clinic_timeout: float = 120.0
    round_timeout: float = 3600.0
    val_fraction: float = 0.25
    seed: int = 0
    patience: int = 0  # early stopping: end after this many rounds without a better pooled AUROC (0: off)
    data: dict[str, Any] = field(default_factory=dict, hash=False)
    sweep: str = ""  # set by `coordinator sweep`: the sweep this experiment belongs to
    weight_source: str = ""  # set by `coordinator sweep`: e.g. "radimagenet" or "imagenet"
    privacy: dict[str, Any] = field(default_factory=dict, hash=False)
    transfer_dtype: str = "float32"  # "bfloat16"/"float16": weights travel in half the bytes
    # both ways; training, aggregation and checkpoints stay float32 (radfed.transfer)

    def to_json(self) -> str:
        """Serialise for Flower's run config and message configs."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["strategy_params"] = dict(self.strategy_params)
        data["data"] = dict(self.data)
        data["privacy"] = dict(self.privacy)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExperimentSpec:
        """Inverse of `to_json`, validating again (the message may come from anywhere)."""
        return from_mapping(json.loads(text), source="spec", check_files=False)


_RANGES: dict[str, tuple[float, float]] = {
    "image_size": (16, 1024),
    "rounds": (1, 10_000),
    "local_epochs": (1, 1000),
    "batch_size": (1, 4096),
    "learning_rate": (1e-8, 10.0),
    "weight_decay": (0.0, 10.0),
    "label_smoothing": (0.0, 0.5),
    "warmup_rounds": (0, 10_000),
    "unfreeze_top": (1, 1000),
    "min_clinics": (1, 10_000),
    "min_accept": (0, 10_000),
    "clinic_timeout": (1.0, 86_400.0),
    "round_timeout": (1.0, 604_800.0),
    "val_fraction": (0.05, 0.9),
    "seed": (0, 2**31 - 1),
    "patience": (0, 10_000),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "backbone": BACKBONES,
    "freeze": FREEZE_POLICIES,
    "augment": AUGMENTATIONS,
    "bn_policy": BN_POLICIES,
    "transfer_dtype": TRANSFER_DTYPES,
}


def load_spec(path: Path) -> ExperimentSpec:
    """Read and validate an experiment TOML file (`[experiment]` table or top level)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file; pass the path of an experiment TOML file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: not valid TOML ({err}); fix the syntax") from None
    data = data.get("experiment", data)
    return from_mapping(data, source=str(path))


def from_mapping(data: dict[str, Any], source: str = "spec", check_files: bool = True) -> ExperimentSpec:
    """Build a spec from a dict, refusing unknown keys and out-of-range values.

    `check_files` is off where the spec arrives by message: a clinic never has the
    coordinator's weight file, and does not need it (weights travel as arrays).
    """
    known = {f.name: f for f in fields(ExperimentSpec)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        allowed = ", ".join(known)
        raise SpecError(f"{source}: unknown key '{unknown[0]}'; allowed keys: {allowed}")
    if "name" not in data:
        raise SpecError(f"{source}: key 'name' is missing; add name = \"my-experiment\"")
    values = {key: _check(source, key, value, known[key]) for key, value in data.items()}
    spec = ExperimentSpec(**values)
    if spec.transfer_dtype != "float32" and spec.privacy.get("mode") == "secagg+":
        raise SpecError(
            f"{source}: key 'transfer_dtype' = {spec.transfer_dtype!r} does not work with "
            'privacy mode secagg+ (it quantises updates itself); use transfer_dtype = "float32"'
        )
    if check_files:
        _check_files(source, spec)
    return spec


def _check(source: str, key: str, value: Any, fld: Any) -> Any:
    """Validate one key's type and range; returns the normalised value."""
    default = fld.default
    if key == "labels":
        if (
            not isinstance(value, (list, tuple))
            or len(value) < 2
            or not all(isinstance(v, str) and v for v in value)
            or len(set(value)) != len(value)
        ):
            raise SpecError(
                f"{source}: key 'labels' = {value!r}; give a list of 2 or more distinct names,"
                ' e.g. labels = ["normal", "opacity"]'
            )
        return tuple(value)
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise SpecError(f"{source}: key '{key}' = {value!r} is not allowed; allowed: {', '.join(_CHOICES[key])}")
        return value
    if key == "strategy_params":
        if not isinstance(value, dict) or not all(isinstance(v, (int, float, str, bool)) for v in value.values()):
            raise SpecError(
                f"{source}: key 'strategy_params' must be a table of numbers, "
                "e.g. strategy_params = { eta = 0.01 }; see `coordinator strategies`"
            )
        return dict(value)
    if key == "data":
        return _check_data_options(source, value)
    if key == "privacy":
        if not isinstance(value, dict) or not all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value.values()
        ):
            raise SpecError(
                f"{source}: key 'privacy' must be a table of numbers and a mode, "
                'e.g. privacy = { mode = "client-fixed", noise_multiplier = 1.0 }; '
                "see `coordinator strategies`"
            )
        return dict(value)
    if key in ("name", "weights", "strategy"):
        if not isinstance(value, str) or not value.strip():
            raise SpecError(f"{source}: key '{key}' must be a non-empty string")
        return value
    if key in ("sweep", "weight_source"):
        if not isinstance(value, str):
            raise SpecError(f"{source}: key '{key}' must be a string")
        return value
    return _check_number(source, key, value, default)


def _check_data_options(source: str, value: Any) -> dict[str, Any]:
    """The `[experiment.data]` table: how clinics turn DICOM into samples (DataOptions)."""
    if not isinstance(value, dict):
        raise SpecError(f"{source}: key 'data' must be a table, e.g. data = {{ window = \"lung\" }}")
    try:
        data_options(value)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{source}: key 'data': {str(err).splitlines()[0]}") from None
    return dict(value)


def data_options(table: dict[str, Any]):
    """A spec's `data` table as radfed.data.DataOptions (lists from TOML become tuples)."""
    from radfed.data import DataOptions  # radfed.data.options: no torch

    values = dict(table)
    if isinstance(values.get("window"), list):
        values["window"] = tuple(values["window"])
    return DataOptions(**values)


def _check_number(source: str, key: str, value: Any, default: Any) -> Any:
    """Numbers: ints stay ints, floats accept ints; both within their documented range."""
    want_int = isinstance(default, int)
    ok = isinstance(value, int) if want_int else isinstance(value, (int, float))
    lo, hi = _RANGES[key]
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        kind = "an integer" if want_int else "a number"
        raise SpecError(f"{source}: key '{key}' = {value!r}; allowed: {kind} from {lo:g} to {hi:g}")
    return int(value) if want_int else float(value)


def _check_files(source: str, spec: ExperimentSpec) -> None:
    """Paths named by the spec must exist where it is loaded (the coordinator)."""
    if spec.weights != "random":
        if not Path(spec.weights).expanduser().is_file():
            raise SpecError(
                f"{source}: key 'weights' = {spec.weights!r}: no such file; "
                "allowed: 'random' or the path of a local weight file"
            )


def _toml_value(value: Any) -> str:
    """A JSON-like value as TOML (inline tables and arrays; None is left out)."""
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def spec_to_toml(spec: ExperimentSpec) -> str:
    """Write a spec as TOML (used by the demo and sweeps to leave an editable file behind)."""
    lines = ["[experiment]"]
    for key, value in json.loads(spec.to_json()).items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
