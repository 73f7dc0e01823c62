"""The train/validation split, by patient (never by image), and its tensors.

Images of one patient never sit on both sides, so validation scores are honest; a
labelled study or series belongs to one patient, so it sits on one side whole. The
split is a pure function of the patients' keys and a seed: the same on every process,
machine and Python version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from radfed.data.rows import ImageRows, Images, PixelFile
from radfed.data.slices import Sample


@dataclass
class Split:
    """Images (N x C x S x S float32 in [0, 1]; C = 1, or 3 for 2.5D) and int64 labels of
    one side of the split.

    ``pixels`` are the images read on demand (radfed.data.rows.ImageRows: a batch at a
    time from the clinic's pixel file), or a tensor; training, evaluation and feature
    extraction take either. ``images`` is the whole split as one tensor in memory, for
    tests and small folders only.

    ``patients`` holds, per image, the patient's index within this split
    (0 .. num_patients-1): enough for patient-level counts, never an ID.  ``units`` holds,
    per image, its labelled unit's index (0 .. num_units-1): the slices of one study or
    series share it, an image labelled on its own has its own; validation figures are
    computed per unit (radfed.unit_scores), so a 200-slice study counts once.
    """

    pixels: Images
    labels: torch.Tensor
    num_patients: int
    patients: torch.Tensor | None = None
    files: list[str] | None = None  # per image: its file, relative to the data folder (local only)
    units: torch.Tensor | None = None
    num_units: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def images(self) -> torch.Tensor:
        """Every image of the split as one float32 tensor (memory grows with the split)."""
        return self.pixels.tensor() if isinstance(self.pixels, ImageRows) else self.pixels


def _patient_rank(patient_id: str, seed: int) -> str:
    """Stable pseudo-random rank: the same on every process, machine and Python version."""
    return hashlib.sha256(f"radfed-split\x00{seed}\x00{patient_id}".encode()).hexdigest()


def patient_split(patient_ids: Iterable[str], val_fraction: float, seed: int) -> set[str]:
    """The validation patients: the round(n * val_fraction) patients with the lowest sha256 rank.

    Ranking (rather than thresholding each hash) gives an exact fraction, so a
    60-patient clinic gets 15 validation patients and, at any usual
    prevalence, both labels; with two or more patients and a non-zero
    fraction each side keeps at least one patient.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = sorted(set(patient_ids))
    n_val = round(len(unique) * val_fraction)
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    ranked = sorted(unique, key=lambda pid: _patient_rank(pid, seed))
    return set(ranked[:n_val])


def build_split(pixels: PixelFile, samples: list[Sample], picks: list[int]) -> Split:
    """The samples at positions ``picks`` (each sample's channels are rows of ``pixels``,
    read when used); patients and units become 0-based indices, an ungrouped sample
    (unit '') its own unit."""
    patient_index: dict[str, int] = {}
    unit_index: dict[object, int] = {}
    patients = [patient_index.setdefault(samples[i].patient, len(patient_index)) for i in picks]
    units = [unit_index.setdefault(samples[i].facts.unit or ("sample", i), len(unit_index)) for i in picks]
    channels = len(samples[0].rows) if samples else 1
    rows = np.array([samples[i].rows for i in picks], dtype=np.int64).reshape(len(picks), channels)
    return Split(
        pixels=ImageRows(pixels, rows),
        labels=torch.tensor([samples[i].facts.label for i in picks], dtype=torch.int64),
        num_patients=len(patient_index),
        patients=torch.tensor(patients, dtype=torch.int64),
        files=[samples[i].facts.relpath for i in picks],
        units=torch.tensor(units, dtype=torch.int64),
        num_units=len(unit_index),
    )


def split_images(images: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions of train and validation images, split by patient; checks no patient is on both sides."""
    val_patients = patient_split((im.patient for im in images), val_fraction, seed)
    train = [i for i, im in enumerate(images) if im.patient not in val_patients]
    val = [i for i, im in enumerate(images) if im.patient in val_patients]
    if {images[i].patient for i in train} & {images[i].patient for i in val}:
        raise RuntimeError("patient split leaked a patient into both train and validation")
    return train, val


def split_counts(split: Split, labels: Sequence[str]) -> dict[str, Any]:
    """Images, labelled units and patients per label for one split (a patient counts once
    per label they have)."""
    ids = split.labels.tolist()
    images = {name: ids.count(i) for i, name in enumerate(labels)}
    counts: dict[str, Any] = {"images": images, "total_images": len(ids), "total_patients": split.num_patients}
    if split.patients is not None:
        pairs = set(zip(split.patients.tolist(), ids))
        counts["patients"] = {name: sum(1 for _, lab in pairs if lab == i) for i, name in enumerate(labels)}
    if split.units is not None:
        pairs = set(zip(split.units.tolist(), ids))
        counts["units"] = {name: sum(1 for _, lab in pairs if lab == i) for i, name in enumerate(labels)}
        counts["total_units"] = split.num_units
    return counts
