"""An experiment's settings as a researcher reads them: one run's panel, or several runs
side by side with the settings that differ marked.

Everything comes from the spec the store kept with the experiment (radfed.spec fields,
with the defaults of keys an older spec lacks: radfed.model_card.spec_values), so what is
shown is what ran. A weight file is shown by its name, never its path on the server: the
path says nothing to the reader and tells anyone who sees the screen how the server's
disks are laid out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard.context import run_name
from dashboard.filters import freeze_words, weight_source
from dashboard.tables import show_table
from dashboard.words import NONE_WORD
from radfed.model_card import spec_values


def _text(value: Any) -> str:
    if value in (None, "", {}, []):
        return NONE_WORD
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_text(v)}" for k, v in sorted(value.items()))
    return str(value)


def _seconds(value: Any) -> str:
    return f"{float(value):g} s"


def _weights(value: Any) -> str:
    return "random initialisation" if value in (None, "", "random") else Path(str(value)).name


def _privacy(value: Any) -> str:
    table = dict(value or {})
    mode = table.pop("mode", "none")
    return "none" if mode == "none" and not table else _text({"mode": mode, **table})


# (section, spec key, label, how to write it)
SETTINGS: list[tuple[str, str, str, Callable[[Any], str]]] = [
    ("Task", "labels", "Labels (first = no finding)", _text),
    ("Task", "val_fraction", "Validation share of each clinic's patients", _text),
    ("Task", "data", "Image preparation", _text),
    ("Model", "backbone", "Backbone", _text),
    ("Model", "weights", "Initial weights", _weights),
    ("Model", "image_size", "Image size (px)", _text),
    ("Model", "bn_policy", "BatchNorm statistics", _text),
    ("Training", "rounds", "Rounds planned", _text),
    ("Training", "local_epochs", "Local epochs per round", _text),
    ("Training", "batch_size", "Batch size", _text),
    ("Training", "learning_rate", "Learning rate", _text),
    ("Training", "weight_decay", "Weight decay", _text),
    ("Training", "label_smoothing", "Label smoothing", _text),
    ("Training", "warmup_rounds", "Warm-up rounds", _text),
    ("Training", "augment", "Augmentation", _text),
    ("Training", "patience", "Early-stopping patience (rounds, 0 = off)", _text),
    ("Training", "seed", "Seed", _text),
    ("Federation", "strategy", "Strategy", _text),
    ("Federation", "strategy_params", "Strategy parameters", _text),
    ("Federation", "min_clinics", "Clinics needed per round", _text),
    ("Federation", "min_accept", "Updates needed to aggregate (0 = all)", _text),
    ("Federation", "clinic_timeout", "Clinic timeout", _seconds),
    ("Federation", "round_timeout", "Round timeout", _seconds),
    ("Federation", "privacy", "Differential privacy", _privacy),
]


def settings_rows(entry: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(section, setting, value) of one run, every value a word or a number."""
    spec = spec_values(entry.get("spec_json") or "{}")
    rows = [(section, label, write(spec.get(key))) for section, key, label, write in SETTINGS]
    freeze = freeze_words(spec)
    rows.insert(5, ("Model", "Layers trained", freeze))
    rows.insert(6, ("Model", "Weight source", weight_source(entry)))
    rows.append(("Federation", "Clinic held out of training", str(entry.get("holdout") or NONE_WORD)))
    rows.append(("Task", "Sweep", str(entry.get("sweep") or NONE_WORD)))
    return rows


def settings_frame(entry: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(settings_rows(entry), columns=["Section", "Setting", "Value"])


def side_by_side(entries: list[dict[str, Any]], only_differing: bool = False) -> pd.DataFrame:
    """Settings as rows, runs as columns; 'Differs' says where the runs disagree."""
    columns = {run_name(e): [value for _, _, value in settings_rows(e)] for e in entries}
    names = [(section, label) for section, label, _ in settings_rows(entries[0])] if entries else []
    frame = pd.DataFrame({"Setting": [label for _, label in names], **columns})
    differs = [len({col[i] for col in columns.values()}) > 1 for i in range(len(names))]
    frame.insert(1, "Differs", ["yes" if d else "same" for d in differs])
    return frame[differs] if only_differing else frame


def show_settings(entry: dict[str, Any]) -> None:
    """The run's settings, section by section."""
    frame = settings_frame(entry)
    show_table(frame)
