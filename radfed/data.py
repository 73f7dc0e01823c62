"""Load one clinic's labelled DICOM folder into train/validation tensors.

A clinic's export is messy: files at any depth with any names, a CSV manifest
typed by hand, the odd broken file.  ``load_clinic`` turns that into tensors
for local training and never crashes on a bad row or file: each one is
rejected with a short reason code (and its line number or relative path) so
the operator can fix it.  It raises :class:`DataError` only when the folder as
a whole is unusable, with one line saying what to do.

The train/validation split is by patient (never by image), so images of one
patient never sit on both sides and validation scores are honest.  PatientIDs
are read here and nowhere else; they never leave this module, never reach a
summary, a cache file or a log line.

Decoding is the slow part, so preprocessed images can be cached under a key
built from every used file's path, size and mtime: an unchanged folder loads
without decoding a single pixel.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from itertools import repeat
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from radfed import dicom
from radfed.dicom import DicomError

__all__ = [
    "CACHE_VERSION",
    "ClinicData",
    "DataError",
    "KEY_COLUMNS",
    "MANIFEST_NAME",
    "REJECTION_HELP",
    "Split",
    "load_clinic",
    "patient_split",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "labels.csv"
KEY_COLUMNS = ("file", "sop_instance_uid")
CACHE_VERSION = "radfed-data-1"

# Rejection codes raised here (DICOM codes come from radfed.dicom.REASONS) -> the fix.
REJECTION_HELP: dict[str, str] = {
    "unknown-label": "use one of the task's labels in the label column",
    "empty-key": "fill in the file or sop_instance_uid column",
    "duplicate-row": "list each image once in the manifest",
    "missing-file": "fix the path (relative to the data folder) or copy the file in",
    "outside-data-folder": "use a path inside the data folder, without '..'",
    "unknown-sop-instance-uid": "copy the file with that SOPInstanceUID into the data folder or fix the UID",
    "duplicate-sop-instance-uid": "remove the second copy of the image",
    "no-patient-id": "export with a PatientID (pseudonymised is fine): the split needs it",
    **dicom.REASONS,
}


class DataError(Exception):
    """The data folder as a whole is unusable; the message says which folder, why and the fix."""


@dataclass
class Split:
    """Images (N x 1 x S x S float32 in [0, 1]) and int64 labels of one side of the split.

    ``patients`` holds, per image, the patient's index within this split
    (0 .. num_patients-1): enough for patient-level counts, never an ID.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_patients: int
    patients: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class ClinicData:
    """A clinic's usable data plus what was rejected and why.

    ``rejected`` is local-only detail: (relative path or "labels.csv line N", reason code).
    ``summary()`` is what may leave the clinic: counts only.
    """

    train: Split
    val: Split
    labels: list[str]
    rejected: list[tuple[str, str]]
    modalities: dict[str, int] = field(default_factory=dict)
    manufacturers: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts only: images and patients per label per split, rejections by reason, equipment."""
        return {
            "labels": list(self.labels),
            "train": _split_counts(self.train, self.labels),
            "val": _split_counts(self.val, self.labels),
            "rejected": dict(sorted(Counter(reason for _, reason in self.rejected).items())),
            "rejected_total": len(self.rejected),
            "modalities": dict(self.modalities),
            "manufacturers": dict(self.manufacturers),
        }


def _split_counts(split: Split, labels: Sequence[str]) -> dict[str, Any]:
    """Images and patients per label for one split (a patient counts once per label they have)."""
    ids = split.labels.tolist()
    images = {name: ids.count(i) for i, name in enumerate(labels)}
    counts: dict[str, Any] = {"images": images, "total_images": len(ids), "total_patients": split.num_patients}
    if split.patients is not None:
        pairs = set(zip(split.patients.tolist(), ids))
        counts["patients"] = {name: sum(1 for _, lab in pairs if lab == i) for i, name in enumerate(labels)}
    return counts


# ----------------------------------------------------------------------------- split


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


# ----------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class _Row:
    """One usable manifest row: where it is, what it names, its label index."""

    where: str
    key: str
    label: int


@dataclass(frozen=True)
class _Image:
    """One file's header facts; ``patient`` never leaves this module.

    ``problem`` is the reason code when the header shows it cannot be used as an image.
    """

    relpath: str
    label: int
    patient: str
    uid: str
    modality: str
    manufacturer: str
    problem: str = ""


def _folder_error(data_dir: Path, problem: str) -> DataError:
    """DataError in the house style: 'data folder X: problem; fix'."""
    return DataError(f"data folder {data_dir}: {problem}")


def _read_manifest_lines(manifest: Path, data_dir: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, cells) of every non-blank CSV record, header included."""
    if not manifest.is_file():
        raise _folder_error(data_dir, f"manifest {manifest} not found; add a CSV with header "
                            '"file,label" or "sop_instance_uid,label" (see client-node demo-data)')
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            records = [(reader.line_num, cells) for cells in reader]
    except UnicodeDecodeError:
        raise _folder_error(data_dir, f"{manifest.name} is not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise _folder_error(data_dir, f"{manifest.name} is not valid CSV ({exc}); fix the quoting") from None
    return [(line, cells) for line, cells in records if any(cell.strip() for cell in cells)]


def _header_columns(header: list[str], manifest: Path, data_dir: Path) -> tuple[str, int, int]:
    """(key kind, key column index, label column index) from the header row."""
    names = [cell.strip().lower() for cell in header]
    kind = next((k for k in KEY_COLUMNS if k in names), None)
    if kind is None or "label" not in names:
        shown = ", ".join(repr(n[:40]) for n in names[:10])
        raise _folder_error(data_dir, f"{manifest.name} header has columns {shown}; it needs "
                            '"label" and one of "file" or "sop_instance_uid" (see client-node demo-data)')
    return kind, names.index(kind), names.index("label")


def _parse_manifest(
    manifest: Path, data_dir: Path, labels: Sequence[str]
) -> tuple[str, list[_Row], list[tuple[str, str]]]:
    """Parse the manifest into usable rows and rejected rows (label, empty key, duplicates)."""
    records = _read_manifest_lines(manifest, data_dir)
    if not records:
        raise _folder_error(data_dir, f'{manifest.name} is empty; add rows "file,label" (see client-node demo-data)')
    kind, key_col, label_col = _header_columns(records[0][1], manifest, data_dir)
    if len(records) == 1:
        raise _folder_error(data_dir, f"{manifest.name} has a header but no rows; add one row per image "
                            '"file,label" (see client-node demo-data)')
    label_index = {name.strip().lower(): i for i, name in enumerate(labels)}
    rows: list[_Row] = []
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line, cells in records[1:]:
        where = f"{manifest.name} line {line}"
        key = _clean_key(kind, _cell(cells, key_col))
        label = label_index.get(_cell(cells, label_col).strip().lower())
        reason = _row_problem(key, label, seen)
        if reason:
            rejected.append((where, reason))
            continue
        seen.add(key)
        rows.append(_Row(where, key, label))
    return kind, rows, rejected


def _row_problem(key: str, label: int | None, seen: set[str]) -> str:
    """Reason code for a row that cannot be used as it stands, '' when it can."""
    if not key:
        return "empty-key"
    if label is None:
        return "unknown-label"
    return "duplicate-row" if key in seen else ""


def _cell(cells: list[str], index: int) -> str:
    """A cell, or '' for short rows."""
    return cells[index] if index < len(cells) else ""


def _clean_key(kind: str, value: str) -> str:
    """Paths use '/' whatever OS exported them, without a leading './'; UIDs are stripped."""
    value = value.strip()
    if kind != "file":
        return value
    value = value.replace("\\", "/")
    while value.startswith("./"):
        value = value[2:]
    return value


# ----------------------------------------------------------------------------- headers


def _read_facts(path: Path, relpath: str) -> _Image | str:
    """Header facts of one file (label unset), or the reason it is not readable DICOM.

    Never decodes pixels: that is what makes a warm-cache load cheap.
    """
    try:
        ds = dicom.read_header(path)
    except DicomError as exc:
        return exc.reason
    with dicom.pydicom_quiet():  # validation warnings would quote the PatientID
        uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        patient = str(ds.get("PatientID", "") or "").strip()
        modality = str(ds.get("Modality", "") or "").strip()[:16] or "unknown"
        manufacturer = str(ds.get("Manufacturer", "") or "").strip()[:64] or "unknown"
        try:
            dicom.check_image_header(ds)
            problem = ""
        except DicomError as exc:
            problem = exc.reason
    return _Image(relpath, -1, patient, uid, modality, manufacturer, problem)


def _walk_files(data_dir: Path, skip: set[Path]) -> list[Path]:
    """Every regular file under data_dir (any depth, any name), sorted, minus hidden ones and skip."""
    found: list[Path] = []
    for root, dirs, files in os.walk(data_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in skip)
        found.extend(root_path / f for f in sorted(files) if not f.startswith("."))
    return [p for p in found if p.resolve() not in skip and p.is_file()]


def _scan_by_uid(data_dir: Path, skip: set[Path]) -> tuple[dict[str, _Image], list[tuple[str, str]]]:
    """Map SOPInstanceUID -> header facts for a sop_instance_uid manifest.

    Non-DICOM and empty files are skipped silently (PACS exports carry viewers,
    READMEs); damaged DICOM files and duplicate UIDs are rejected.
    """
    by_uid: dict[str, _Image] = {}
    rejected: list[tuple[str, str]] = []
    for path in _walk_files(data_dir, skip):
        relpath = path.relative_to(data_dir).as_posix()
        facts = _read_facts(path, relpath)
        if isinstance(facts, str):
            if facts not in ("not-dicom", "empty-file"):
                rejected.append((relpath, facts))
        elif facts.uid in by_uid:
            rejected.append((relpath, "duplicate-sop-instance-uid"))
        elif facts.uid:
            by_uid[facts.uid] = facts
    return by_uid, rejected


def _resolve_rows(
    kind: str, rows: list[_Row], data_dir: Path, skip: set[Path]
) -> tuple[list[_Image], list[tuple[str, str]]]:
    """Turn manifest rows into checked images; everything that fails becomes a rejection."""
    rejected: list[tuple[str, str]] = []
    by_uid: dict[str, _Image] = {}
    if kind == "sop_instance_uid":
        by_uid, rejected = _scan_by_uid(data_dir, skip)
    images: list[_Image] = []
    seen_uids: set[str] = set()
    for row in rows:
        where, outcome = _resolve_row(kind, row, data_dir, by_uid)
        if isinstance(outcome, str):
            rejected.append((where, outcome))
        elif outcome.uid and outcome.uid in seen_uids:
            rejected.append((where, "duplicate-sop-instance-uid"))
        else:
            seen_uids.add(outcome.uid)
            images.append(outcome)
    return sorted(images, key=lambda im: im.relpath), rejected


def _resolve_row(kind: str, row: _Row, data_dir: Path, by_uid: dict[str, _Image]) -> tuple[str, _Image | str]:
    """(where to report, labelled image or reason) for one row."""
    if kind == "sop_instance_uid":
        if row.key not in by_uid:
            return row.where, "unknown-sop-instance-uid"
        facts: _Image | str = by_uid[row.key]
    else:
        pure = PurePosixPath(row.key)
        if pure.is_absolute() or ".." in pure.parts:
            return f"{row.where}: {row.key}", "outside-data-folder"
        if not (data_dir / row.key).is_file():
            return f"{row.where}: {row.key}", "missing-file"
        facts = _read_facts(data_dir / row.key, row.key)
    if isinstance(facts, str):
        return row.key, facts
    if facts.problem or not facts.patient:
        return facts.relpath, facts.problem or "no-patient-id"
    return facts.relpath, replace(facts, label=row.label)


# ----------------------------------------------------------------------------- pixels and cache


def _decode_all(paths: list[Path], size: int, workers: int) -> tuple[np.ndarray, list[str]]:
    """(N x S x S float16 images, reasons with '' for success), in a process pool when workers > 1."""
    results = _decode_in_pool(paths, size, workers) if workers > 1 and len(paths) > 1 else None
    if results is None:
        results = [dicom.preprocess_file(p, size) for p in paths]
    blank = np.zeros((size, size), dtype=np.float16)
    images = [img if img is not None else blank for img, _ in results]
    stacked = np.stack(images) if images else np.zeros((0, size, size), dtype=np.float16)
    return stacked, [reason for _, reason in results]


def _decode_in_pool(paths: list[Path], size: int, workers: int) -> list[tuple[np.ndarray | None, str]] | None:
    """Decode in spawned processes (fork with torch or gRPC threads alive can deadlock).

    Returns None when the pool breaks, e.g. a script without an
    ``if __name__ == "__main__":`` guard, so the caller decodes serially instead.
    """
    context = multiprocessing.get_context("spawn")
    workers = min(workers, len(paths))
    chunk = max(1, len(paths) // (workers * 4))
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            return list(pool.map(dicom.preprocess_file, map(str, paths), repeat(size), chunksize=chunk))
    except BrokenProcessPool:
        log.warning("decode worker processes failed to start; decoding in this process instead")
        return None


def _cache_key(data_dir: Path, images: list[_Image], size: int) -> str:
    """sha256 over every used file's relative path, size and mtime_ns, the image size and code versions."""
    stats = []
    for image in images:
        st = (data_dir / image.relpath).stat()
        stats.append([image.relpath, st.st_size, st.st_mtime_ns])
    payload = json.dumps([CACHE_VERSION, dicom.PREPROCESS_VERSION, size, stats], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _cache_path(cache_dir: Path, data_dir: Path, size: int, key: str) -> Path:
    """One file per (folder, size, content key); the folder tag lets stale entries be pruned."""
    folder_tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{folder_tag}-s{size}-{key[:32]}.npz"


def _cache_load(path: Path, count: int, size: int) -> tuple[np.ndarray, list[str]] | None:
    """Cached (images, reasons) or None on a miss or an unreadable/mismatched cache file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, reasons = npz["images"], [str(r) for r in npz["reasons"]]
    except Exception:
        log.warning("ignoring unreadable cache file %s", path.name)
        return None
    if images.shape != (count, size, size) or len(reasons) != count:
        return None
    return images, reasons


def _cache_store(path: Path, images: np.ndarray, reasons: list[str]) -> None:
    """Write atomically, then drop older entries of the same folder and size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, images=images.astype(np.float16), reasons=np.array(reasons, dtype=str))
    os.replace(tmp, path)
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for stale in path.parent.glob(f"{prefix}*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)


def _pixels(
    data_dir: Path, images: list[_Image], size: int, cache_dir: Path | None, workers: int
) -> tuple[np.ndarray, list[str]]:
    """Preprocessed pixels for images, from the cache when nothing changed."""
    cache_file = None
    if cache_dir is not None:
        cache_file = _cache_path(cache_dir, data_dir, size, _cache_key(data_dir, images, size))
        cached = _cache_load(cache_file, len(images), size)
        if cached is not None:
            log.info("loaded %d preprocessed images from cache", len(images))
            return cached
    pixels, reasons = _decode_all([data_dir / im.relpath for im in images], size, workers)
    if cache_file is not None:
        _cache_store(cache_file, pixels, reasons)
    return pixels, reasons


# ----------------------------------------------------------------------------- assembly


def _build_split(pixels: np.ndarray, images: list[_Image], picks: list[int]) -> Split:
    """Tensors for the images at positions ``picks``; patients become 0-based indices."""
    index: dict[str, int] = {}
    patients = [index.setdefault(images[i].patient, len(index)) for i in picks]
    size = pixels.shape[-1]
    chosen = pixels[picks] if picks else np.zeros((0, size, size), dtype=np.float16)
    return Split(
        images=torch.from_numpy(chosen.astype(np.float32)).unsqueeze(1),
        labels=torch.tensor([images[i].label for i in picks], dtype=torch.int64),
        num_patients=len(index),
        patients=torch.tensor(patients, dtype=torch.int64),
    )


def _split_images(images: list[_Image], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions of train and validation images, split by patient; checks no patient is on both sides."""
    val_patients = patient_split((im.patient for im in images), val_fraction, seed)
    train = [i for i, im in enumerate(images) if im.patient not in val_patients]
    val = [i for i, im in enumerate(images) if im.patient in val_patients]
    if {images[i].patient for i in train} & {images[i].patient for i in val}:
        raise RuntimeError("patient split leaked a patient into both train and validation")
    return train, val


def _no_usable_image(data_dir: Path, manifest: Path, n_rows: int, rejected: list[tuple[str, str]]) -> DataError:
    """Explain why nothing is left, e.g. 'all 12 rows name files that do not exist; first: line 2 x.dcm'."""
    reasons = Counter(reason for _, reason in rejected)
    if not rejected:
        return _folder_error(data_dir, f"no usable image among {n_rows} rows of {manifest.name}; check the manifest")
    first_where, first_reason = rejected[0]
    if len(reasons) == 1 and first_reason == "missing-file" and len(rejected) == n_rows:
        return _folder_error(data_dir, f"all {n_rows} rows of {manifest.name} name files that do not exist; "
                             f"first: {first_where}; {REJECTION_HELP['missing-file']}")
    detail = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    fix = REJECTION_HELP.get(first_reason, "see the rejection list")
    return _folder_error(data_dir, f"no usable image: {len(rejected)} rejected ({detail}); "
                         f"first: {first_where} ({first_reason}); {fix}")


def _check_folder(data_dir: Path) -> None:
    """Fail early with a clear message when the folder itself is wrong."""
    if not data_dir.exists():
        raise _folder_error(data_dir, "does not exist; pass the folder holding the clinic's DICOM files "
                            "and labels.csv (see client-node demo-data)")
    if not data_dir.is_dir():
        raise _folder_error(data_dir, "is a file, not a folder; pass the folder holding the DICOM files and labels.csv")


def _check_labels(labels: Sequence[str]) -> None:
    """The task's labels must be distinct and non-empty, case-insensitively."""
    lowered = [str(label).strip().lower() for label in labels]
    if not lowered or "" in lowered or len(set(lowered)) != len(lowered):
        raise ValueError(f"labels must be distinct non-empty names, got {list(labels)}")


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
) -> ClinicData:
    """Load a clinic folder: manifest -> checked headers -> (cached) pixels -> patient split.

    Bad rows and files are rejected, never fatal; DataError only when the folder,
    the manifest or the whole result is unusable.  ``workers > 1`` decodes in
    spawned processes, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard (without it, decoding falls back to serial).
    """
    _check_labels(labels)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    data_dir = Path(data_dir)
    _check_folder(data_dir)
    manifest = Path(manifest) if manifest is not None else data_dir / MANIFEST_NAME
    kind, rows, rejected = _parse_manifest(manifest, data_dir, labels)
    n_rows = len(rows) + len(rejected)
    skip = {manifest.resolve()} | ({Path(cache_dir).resolve()} if cache_dir is not None else set())
    images, more = _resolve_rows(kind, rows, data_dir, skip)
    rejected += more
    pixels, reasons = _pixels(data_dir, images, image_size, Path(cache_dir) if cache_dir else None, workers)
    rejected += [(im.relpath, r) for im, r in zip(images, reasons) if r]
    keep = [i for i, r in enumerate(reasons) if not r]
    pixels, images = pixels[keep], [images[i] for i in keep]
    if not images:
        raise _no_usable_image(data_dir, manifest, n_rows, rejected)
    train, val = _split_images(images, val_fraction, seed)
    return ClinicData(
        train=_build_split(pixels, images, train),
        val=_build_split(pixels, images, val),
        labels=list(labels),
        rejected=rejected,
        modalities=dict(Counter(im.modality for im in images)),
        manufacturers=dict(Counter(im.manufacturer for im in images)),
    )


def check_manifest(data_dir: Path, manifest: Path | None = None) -> list[tuple[str, str]]:
    """Pre-flight for a node: folder, manifest and referenced files are usable.

    Reads the manifest and DICOM headers only (no pixel decoding), accepting every
    label the manifest uses, so it runs before any task is known. Returns the
    rejections; raises DataError when no row names a usable image.
    """
    data_dir = Path(data_dir)
    _check_folder(data_dir)
    manifest = Path(manifest) if manifest is not None else data_dir / MANIFEST_NAME
    records = _read_manifest_lines(manifest, data_dir)
    if not records:
        raise _folder_error(data_dir, f'{manifest.name} is empty; add rows "file,label" (see client-node demo-data)')
    _, _, label_col = _header_columns(records[0][1], manifest, data_dir)
    labels = sorted({_cell(cells, label_col).strip().lower() for _, cells in records[1:]} - {""})
    kind, rows, rejected = _parse_manifest(manifest, data_dir, labels or ["-"])
    images, more = _resolve_rows(kind, rows, data_dir, {manifest.resolve()})
    rejected += more
    if not images:
        raise _no_usable_image(data_dir, manifest, len(rows) + len(rejected) - len(more), rejected)
    return rejected
