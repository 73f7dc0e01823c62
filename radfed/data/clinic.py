"""Load one clinic's labelled DICOM folder into train/validation tensors: `load_clinic`.

The stages, one module each: labels (radfed.data.sources, from a manifest, class folders
or a tag) → checked header facts (headers) → filters → the slices of labelled studies and
series to use (slices) → (cached) pixels (pixels) → the patient split (split). Bad rows
and files are rejected with a reason, never fatal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radfed.data.card import size_bucket
from radfed.data.files import walk_files
from radfed.data.headers import HeaderCache
from radfed.data.labels import LabelLookup, labels_from_values
from radfed.data.manifest import MANIFEST_NAME, manifest_values, parse_manifest
from radfed.data.options import DataOptions
from radfed.data.pixels import load_pixels
from radfed.data.problems import FILTERED, REJECTION_HELP, check_folder, folder_error, no_usable_image
from radfed.data.slices import assemble, plan_slices
from radfed.data.sources import labelled_images, resolve_rows, subfolders, unit_kind
from radfed.data.split import Split, build_split, split_counts, split_images
from radfed.data.workers import Progress, Workers


@dataclass
class ClinicData:
    """A clinic's usable data plus what was rejected and why.

    ``rejected`` is local-only detail: (relative path or "labels.csv line N", reason code).
    ``summary()`` is what may leave the clinic: counts only.  ``sizes`` ("ROWSxCOLUMNS")
    and ``transfer_syntaxes`` (syntax names) count the used files; ``filtered`` counts
    files the task's filters left out (not rejections).  With frame_policy "all" a
    file contributes one sample per frame, so splits can hold more images than files.
    ``unit`` is what a label belongs to ("study", "series", "folder" for a manifest row
    naming many files; "image" when each image is labelled on its own): the splits count
    units too, and validation figures are per unit.
    """

    train: Split
    val: Split
    labels: list[str]
    rejected: list[tuple[str, str]]
    modalities: dict[str, int] = field(default_factory=dict)
    manufacturers: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    filtered: int = 0
    unit: str = "image"

    def summary(self) -> dict[str, Any]:
        """Counts only: images, labelled units and patients per label per split, rejections
        by reason, files filtered out by the task, equipment, image sizes, transfer
        syntaxes and the kind of labelled unit."""
        return {
            "labels": list(self.labels),
            "train": split_counts(self.train, self.labels),
            "val": split_counts(self.val, self.labels),
            "rejected": dict(sorted(Counter(reason for _, reason in self.rejected).items())),
            "rejected_total": len(self.rejected),
            "modalities": dict(self.modalities),
            "manufacturers": dict(self.manufacturers),
            "sizes": dict(self.sizes),
            "transfer_syntaxes": dict(self.transfer_syntaxes),
            "filtered": self.filtered,
            "unit": self.unit,
        }

    def shared_card(self) -> dict[str, Any]:
        """The data card the coordinator may see, once per run: summary() with image sizes
        bucketed by their longer side (SIZE_BUCKETS), so the dashboard can show each
        clinic's data mix.  Counts and equipment/format names only: no path, ID or name."""
        buckets: Counter[str] = Counter()
        for size, count in self.sizes.items():
            buckets[size_bucket(size)] += count
        return {**self.summary(), "sizes": dict(sorted(buckets.items()))}

    def card(self) -> dict[str, Any]:
        """The local data card: summary() plus every rejection with its fix, and what the
        coordinator receives of it (shared_card()).

        Rejections carry relative paths, so the card is for the clinic's own
        screen (client-node check-data), never for logs or the coordinator.
        """
        rejected = [
            {"where": where, "reason": reason, "fix": REJECTION_HELP.get(reason, "")} for where, reason in self.rejected
        ]
        return {"summary": self.summary(), "rejected": rejected, "shared": self.shared_card()}


def _check_labels(labels: Sequence[str]) -> None:
    """The task's labels must be distinct and non-empty, case-insensitively."""
    lowered = [str(label).strip().lower() for label in labels]
    if not lowered or "" in lowered or len(set(lowered)) != len(lowered):
        raise ValueError(f"labels must be distinct non-empty names, got {list(labels)}")


def _lookup(data_dir: Path, labels: Sequence[str], options: DataOptions) -> LabelLookup:
    """The task's labels with the label map; a map that cannot be meant is one DataError line."""
    try:
        return LabelLookup(labels, options.label_map)
    except ValueError as err:
        raise folder_error(data_dir, str(err)) from None


def load_clinic(
    data_dir: Path,
    labels: Sequence[str],
    image_size: int,
    *,
    manifest: Path | None = None,
    val_fraction: float = 0.25,
    seed: int = 0,
    cache_dir: Path | None = None,
    workers: int = 1,
    options: DataOptions | None = None,
    progress: Progress | None = None,
) -> ClinicData:
    """Load a clinic folder: labels -> checked headers -> filters -> (cached) pixels -> patient split.

    Labels come from ``options.label_source``; with the default "manifest",
    no ``manifest`` argument, no DATA/labels.csv and class folders present
    (DATA/normal, DATA/opacity), the class folders are used.  Bad rows and
    files are rejected, never fatal; DataError only when the folder, the
    manifest or the whole result is unusable.  ``workers > 1`` decodes in
    this process plus ``workers - 1`` spawned ones, so a calling script needs
    the usual ``if __name__ == "__main__":`` guard (without it, this process
    decodes alone).  ``options`` (window, frame policy, label source, filters)
    is part of the cache key; its slice policy and stack decide which slices of a
    labelled study or series are decoded and how samples are made of them.
    ``progress(stage, done, total)`` is called as headers are read and as pixels are decoded.
    """
    _check_labels(labels)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    options = options if options is not None else DataOptions()
    if not isinstance(options, DataOptions):
        raise ValueError(f"options must be a DataOptions or None; got {type(options).__name__}")
    data_dir = Path(data_dir)
    check_folder(data_dir)
    cache = Path(cache_dir) if cache_dir is not None else None
    pool = Workers(workers)
    try:
        headers = HeaderCache(data_dir, options.label_tag, cache, pool)
        if not headers.stored:  # nothing cached: everything will be read, so start the helpers now
            pool.start()
        source, images, rejected, n_items = labelled_images(
            data_dir, _lookup(data_dir, labels, options), manifest, cache, options, headers, progress
        )
        headers.save()
        plan, mixed = plan_slices(images, options)
        pixels, reasons, counts = load_pixels(headers, plan.files, image_size, cache, pool, options, progress)
    finally:
        pool.close()
    filtered = sum(1 for _, reason in rejected if reason == FILTERED)
    rejected = [r for r in rejected if r[1] != FILTERED] + mixed
    rejected += [(im.relpath, r) for im, r in zip(plan.files, reasons) if r]
    kept = [im for im, r in zip(plan.files, reasons) if not r]
    samples = assemble(plan, reasons, counts, options.slice_stack)
    if not samples:
        raise no_usable_image(data_dir, source, n_items, rejected, filtered)
    train, val = split_images(samples, val_fraction, seed)
    grouped = {unit_kind(s.facts.unit) for s in samples} - {"image"}
    return ClinicData(
        train=build_split(pixels, samples, train),
        val=build_split(pixels, samples, val),
        labels=list(labels),
        rejected=rejected,
        modalities=dict(Counter(im.modality for im in kept)),
        manufacturers=dict(Counter(im.manufacturer for im in kept)),
        sizes=dict(Counter(im.size for im in kept)),
        transfer_syntaxes=dict(Counter(im.syntax for im in kept)),
        filtered=filtered,
        unit=grouped.pop() if len(grouped) == 1 else ("unit" if grouped else "image"),
    )


def task_labels(data_dir: Path, manifest: Path | None = None, options: DataOptions | None = None) -> list[str]:
    """Labels for a folder whose task is not known yet (`client-node check-data` without
    --task-labels): the label map's targets, else the manifest's own values, else the
    class folders' names (label source "folders"); [] when there are none (no manifest:
    the folder can only be audited)."""
    options = options or DataOptions()
    data_dir = Path(data_dir)
    check_folder(data_dir)
    if options.label_map:
        return labels_from_values((), options.label_map)
    if options.label_source == "folders":
        return labels_from_values(d.name for d in subfolders(data_dir))
    if options.label_source == "tag":
        return []
    manifest = Path(manifest) if manifest is not None else data_dir / MANIFEST_NAME
    if not manifest.exists():
        return []
    return labels_from_values(manifest_values(manifest, data_dir, options.file_column, options.label_column))


def preflight(data_dir: Path, manifest: Path | None = None, options: DataOptions | None = None) -> str:
    """Before a node starts (no task known yet): the folder and its labels are usable.

    A manifest is read with every label it uses and its files' headers are checked;
    class folders or a label tag are accepted when there are files to read. Returns
    where the labels will come from, in words; raises DataError (one line) otherwise.
    """
    options = options or DataOptions()
    data_dir = Path(data_dir)
    check_folder(data_dir)
    default = data_dir / MANIFEST_NAME
    if options.label_source == "tag":
        return f"labels from each file's {options.label_tag} tag"
    if options.label_source == "folders" or (manifest is None and not default.exists()):
        folders = [d for d in subfolders(data_dir) if walk_files(d, set())]
        if len(folders) >= 2 or (folders and options.label_source == "folders"):
            return (
                f"no {MANIFEST_NAME}: labels from {len(folders)} class folders (their names, "
                "or --label-map FOLDER=LABEL, must be the task's labels)"
            )
        raise folder_error(
            data_dir,
            f"no {MANIFEST_NAME} and no class folders; add a manifest "
            '("file,label", or pass --labels FILE), put each label\'s images in a folder '
            "named after it, or take labels from a tag (--label-source tag --label-tag KEYWORD)",
        )
    manifest = Path(manifest) if manifest is not None else default
    values = manifest_values(manifest, data_dir, options.file_column, options.label_column)
    labels = labels_from_values(values, options.label_map) or ["-"]
    kind, rows, rejected = parse_manifest(
        manifest, data_dir, _lookup(data_dir, labels, options), options.file_column, options.label_column
    )
    headers = HeaderCache(data_dir, None, None, Workers(1))
    images, more = resolve_rows(kind, rows, data_dir, {manifest.resolve()}, headers)
    if not images:
        raise no_usable_image(data_dir, manifest.name, len(rows) + len(rejected), rejected + more)
    return f"labels from {manifest.name}: {len(images)} usable images, {len(rejected) + len(more)} rejected"
