"""Which slices of a labelled study or series become samples, and what each sample holds.

A CT study arrives as hundreds of single-slice files under one label (a manifest row
naming its StudyInstanceUID, SeriesInstanceUID or folder: ``ImageFacts.unit``). Using
every slice would decode hundreds of files per label and let one long study outweigh a
short one, so the task's ``DataOptions.slice_policy`` picks slices per series: "middle",
"even:K" or "all". A series' slices are put in anatomical order first: by their position
along the slice normal (dicom.slice_position), else by InstanceNumber when some file has
no position, else by file name; the order never depends on how files are named on disk.

With ``slice_stack`` 3 (2.5D) a sample is its slice with the neighbours just below and
above as three channels, the input the backbones take anyway (models.Classifier copies a
grey channel to three), so a model sees some through-plane context at no extra cost.

Images labelled one by one (unit '') are a sample each (one per frame with frame_policy
"all"), whatever the policy; in 2.5D their single channel is repeated.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from radfed.data.headers import ImageFacts
from radfed.data.options import DataOptions, slice_choice

SPANS_PATIENTS = "unit-spans-patients"


@dataclass(frozen=True)
class Sample:
    """One training/validation sample: the facts of its slice (label, patient, unit) and
    its channels as rows of the decoded pixel array (1, or 3 for 2.5D)."""

    facts: ImageFacts
    rows: tuple[int, ...]

    @property
    def patient(self) -> str:
        return self.facts.patient


@dataclass(frozen=True)
class SlicePlan:
    """The files to decode (a subset of the labelled images, in their order) and the
    samples to make of them: (slice, slice below, slice above) indices into ``files``;
    below and above are the slice itself when it has no neighbour or stacking is off."""

    files: list[ImageFacts]
    picks: list[tuple[int, int, int]]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def slice_order(series: list[ImageFacts]) -> list[ImageFacts]:
    """A series' slices in anatomical order: by position along the normal when every slice
    has one, else by InstanceNumber when every slice has one, else by relative path (a
    partial order would interleave two numbering schemes, so the first complete one wins)."""
    by_path = sorted(series, key=lambda im: im.relpath)
    positions = [_number(im.slice_position) for im in by_path]
    if all(p is not None for p in positions):
        numbers = [_number(im.instance_number) for im in by_path]
        tie = [n if n is not None else 0.0 for n in numbers]
        order = sorted(range(len(by_path)), key=lambda i: (positions[i], tie[i]))
        return [by_path[i] for i in order]
    numbers = [_number(im.instance_number) for im in by_path]
    if all(n is not None for n in numbers):
        order = sorted(range(len(by_path)), key=lambda i: numbers[i])
        return [by_path[i] for i in order]
    return by_path


def pick_indices(n: int, policy: str) -> list[int]:
    """Positions (0..n-1, increasing) of the slices a policy keeps out of n ordered ones.

    "even:K" takes the centres of K equal stretches, (2i+1)·n // 2K, so the picks are
    symmetric about the middle and never crowd one end; "middle" is "even:1" (n // 2).
    """
    name, k = slice_choice(policy)
    if name == "all" or k >= n:
        return list(range(n))
    return [(2 * i + 1) * n // (2 * k) for i in range(k)]


def plan_slices(images: list[ImageFacts], options: DataOptions) -> tuple[SlicePlan, list[tuple[str, str]]]:
    """The slices to decode and the samples to make of them, plus rejections: every image
    of a unit that holds more than one patient (the split is by patient, and a unit must
    sit on one side of it whole)."""
    patients: dict[str, set[str]] = defaultdict(set)
    for im in images:
        if im.unit:
            patients[im.unit].add(im.patient)
    mixed = {unit for unit, found in patients.items() if len(found) > 1}
    rejected = [(im.relpath, SPANS_PATIENTS) for im in images if im.unit in mixed]
    series: dict[tuple[str, str], list[ImageFacts]] = defaultdict(list)
    triples: list[tuple[ImageFacts, ImageFacts, ImageFacts]] = []
    for im in images:
        if not im.unit:
            triples.append((im, im, im))
        elif im.unit not in mixed:
            series[(im.unit, im.series_key)].append(im)
    for members in series.values():
        ordered = slice_order(members)
        for i in pick_indices(len(ordered), options.slice_policy):
            if options.slice_stack == 1:
                triples.append((ordered[i], ordered[i], ordered[i]))
            else:
                triples.append((ordered[i], ordered[max(i - 1, 0)], ordered[min(i + 1, len(ordered) - 1)]))
    needed = {im.relpath for triple in triples for im in triple}
    files = [im for im in images if im.relpath in needed]
    index = {im.relpath: i for i, im in enumerate(files)}
    picks = sorted((index[c.relpath], index[b.relpath], index[a.relpath]) for c, b, a in triples)
    return SlicePlan(files, picks), rejected


def assemble(plan: SlicePlan, reasons: list[str], counts: list[int], stack: int) -> list[Sample]:
    """Samples from the decoded files (``counts[i]`` rows of the pixel array each, ''
    reason = decoded): one per frame of each picked slice. A neighbour that failed to
    decode is replaced by the slice itself; a neighbour's frame is the same index,
    clamped (for single-frame slices, its only frame)."""
    offsets = [0] * len(counts)
    for i in range(1, len(counts)):
        offsets[i] = offsets[i - 1] + counts[i - 1]

    def row(file: int, frame: int, fallback: int) -> int:
        """A frame's row in the pixel array; `fallback` when the file did not decode."""
        if reasons[file] or not counts[file]:
            return fallback
        return offsets[file] + min(frame, counts[file] - 1)

    samples: list[Sample] = []
    for centre, below, above in plan.picks:
        if reasons[centre] or not counts[centre]:
            continue
        for frame in range(counts[centre]):
            own = offsets[centre] + frame
            rows = (own,) if stack == 1 else (row(below, frame, own), own, row(above, frame, own))
            samples.append(Sample(plan.files[centre], rows))
    return samples
