"""The coordinator's weights registry: the backbone weight files researchers may choose.

A spec written by the coordinator may name any local weight file; an experiment
submitted from the dashboard may only name a file the coordinator put in this folder
(`$RADFED_WEIGHTS_DIR`, default `$RADFED_HOME/weights`), by its file name, or
"random". So a submission can never make the coordinator read some other path (a
weight file is unpickled by torch: reading an attacker's choice would run its code).
`coordinator weights list` shows the folder; `coordinator weights inspect FILE` checks a
file before it goes there.
"""

from __future__ import annotations

import os
from pathlib import Path

from radfed.flower_env import radfed_home

WEIGHT_SUFFIXES = (".pt", ".pth", ".h5")
RANDOM = "random"


class WeightsChoiceError(ValueError):
    """A weights choice that is not in the registry; one line naming what is."""


def weights_dir() -> Path:
    """The registry folder (created if missing, so the coordinator sees where to put files)."""
    folder = Path(os.environ.get("RADFED_WEIGHTS_DIR") or radfed_home() / "weights").expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def weight_files(folder: Path | None = None) -> list[str]:
    """Names of the weight files in the registry: regular files (or links the coordinator
    made to them) directly in the folder, with a weight-file suffix, not hidden."""
    folder = folder or weights_dir()
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.suffix.lower() in WEIGHT_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def resolve_weights(choice: str, folder: Path | None = None) -> str:
    """A form's weights choice as the spec's `weights`: "random", or the file's absolute path."""
    if choice == RANDOM:
        return RANDOM
    folder = folder or weights_dir()
    names = weight_files(folder)
    if choice not in names:
        offered = ", ".join([RANDOM, *names])
        raise WeightsChoiceError(
            f"weights {choice!r} are not in the coordinator's weights registry ({folder}); choose one of: {offered}"
        )
    return str(folder / choice)


def in_registry(weights: str, folder: Path | None = None) -> bool:
    """True for "random" or the absolute path of a file the registry offers (checked again
    when an approved submission starts: the file may have gone, or the spec been altered)."""
    if weights == RANDOM:
        return True
    folder = folder or weights_dir()
    path = Path(weights)
    return path.is_absolute() and path.parent == folder and path.name in weight_files(folder)
