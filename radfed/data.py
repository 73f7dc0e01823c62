"""Load one clinic's labelled DICOM folder into train/validation tensors.

A clinic's export is messy: files at any depth with any names, a CSV manifest
typed by hand, the odd broken file.  ``load_clinic`` turns that into tensors
for local training and never crashes on a bad row or file: each one is
rejected with a short reason code (and its line number or relative path) so
the operator can fix it.  It raises :class:`DataError` only when the folder as
a whole is unusable, with one line saying what to do.

The train/validation split is by patient (never by image), so images of one
patient never sit on both sides and validation scores are honest.  PatientIDs
are read by dicom.header_facts and turned into one-way keys at once: IDs never
reach a summary, a cache file (the header cache holds the keys) or a log line.

Labels come from a CSV manifest (default), from class folders
(``DATA/normal/*.dcm``, used automatically when there is no manifest and such
folders exist), or from a DICOM tag mapped to labels.  Filters on Modality,
BodyPartExamined and SeriesDescription keep only the images a task is about;
filtered files are counted, not rejected.  All of it sits in one frozen
:class:`DataOptions`.

Decoding is the slow part, so preprocessed images can be cached under a key
built from every used file's path, size and mtime plus the pixel-relevant
options, and each file's header facts under its own path, size and mtime:
an unchanged folder loads without opening a single DICOM file.  Headers and
pixels are read in ``workers`` processes; each worker reads, decodes and
resizes whole files, so only small float16 arrays cross processes.

Privacy rule: :class:`DataError` texts and log lines never contain values of
identifying tags (PatientName, PatientID, BirthDate, AccessionNumber,
InstitutionName...) nor any path below the data folder, since a file or folder
name can carry a patient's name.  They name the folder the operator passed,
manifest line numbers and reason codes.  Relative paths appear only in
``ClinicData.rejected`` / ``DataError.rejected``, which the local data card
(``client-node check-data``) prints on the clinic's own screen.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from pydicom.datadict import dictionary_has_tag, tag_for_keyword

from radfed import dicom
from radfed.data_card import DATA_CARD_RECORD, SHARED_CARD_KEYS  # noqa: F401 - re-exported

__all__ = [
    "CACHE_VERSION",
    "DATA_CARD_RECORD",
    "ClinicData",
    "DataError",
    "DataOptions",
    "FILTER_KEYWORDS",
    "HEADERS_CACHE_VERSION",
    "LABEL_SOURCES",
    "KEY_COLUMNS",
    "MANIFEST_NAME",
    "REJECTION_HELP",
    "SHARED_CARD_KEYS",
    "SIZE_BUCKETS",
    "Split",
    "Progress",
    "check_manifest",
    "format_card",
    "load_clinic",
    "patient_split",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "labels.csv"
KEY_COLUMNS = ("file", "sop_instance_uid")
# Header spellings PACS and spreadsheet exports use, per canonical column (first = canonical).
COLUMN_ALIASES = {
    "file": ("file", "path", "filepath", "file_path", "filename", "file_name", "image", "image_path",
             "dicom", "dicom_path", "dicom_file"),
    "sop_instance_uid": ("sop_instance_uid", "sopinstanceuid", "sop_uid", "instance_uid"),
    "label": ("label", "labels", "class", "finding", "target", "diagnosis", "category"),
}
CACHE_VERSION = "radfed-data-3"
# Header caches hold check_image_header's verdict ("problem"), so they also go stale when
# radfed.dicom learns to decode more (e.g. colour): they carry both versions.
HEADERS_CACHE_VERSION = f"{CACHE_VERSION}/{dicom.PREPROCESS_VERSION}"

# Upper bound (exclusive) of the longer image side -> bucket name, for the shared data card.
SIZE_BUCKETS = ((256, "<256 px"), (512, "256-511 px"), (1024, "512-1023 px"), (2048, "1024-2047 px"))

LABEL_SOURCES = ("manifest", "folders", "tag")
FILTER_KEYWORDS = ("Modality", "BodyPartExamined", "SeriesDescription")
_FILTERED = "filtered"  # not a rejection: the file is simply not part of this task

# progress(stage, done, total); stage is "headers" or "pixels".
Progress = Callable[[str, int, int], None]

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
    "no-label": "add the image's tag value to label_map, or filter such images out",
    **dicom.REASONS,
}


class DataError(Exception):
    """The data folder as a whole is unusable; the message says which folder, why and the fix.

    ``rejected`` carries the local rejection list (relative paths) for the data
    card; it is never part of the message, which may end up in logs.
    """

    def __init__(self, message: str, rejected: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.rejected = list(rejected)


def _is_dicom_keyword(keyword: str) -> bool:
    """True when keyword names a tag of the DICOM data dictionary (typos fail early)."""
    tag = tag_for_keyword(keyword.strip()) if isinstance(keyword, str) else None
    return tag is not None and dictionary_has_tag(tag)


def _one_of(name: str, allowed: Iterable[str], got: object) -> ValueError:
    """ValueError in one line: the option, the allowed values, the value given."""
    return ValueError(f"{name} must be one of {', '.join(allowed)}; got {got!r}")


@dataclass(frozen=True)
class DataOptions:
    """How a task wants a clinic's DICOM turned into samples and labels.

    window: a CT preset name (dicom.WINDOW_PRESETS), an explicit (center, width)
        or None for the file's own VOI LUT / window.
    frame_policy: "middle" (one sample per file) or "all" (every frame a sample,
        same patient).
    label_source: "manifest" (CSV), "folders" (DATA/<label>/...) or "tag".
    label_tag / label_map: for "tag", the DICOM keyword whose value gives the
        label, and value -> label (case-insensitive); without a map the value
        itself must be a label name.
    filters: keyword (FILTER_KEYWORDS) -> accepted values (case-insensitive).
    Invalid values raise ValueError naming the option and the allowed values.
    """

    window: str | tuple[float, float] | None = None
    frame_policy: str = "middle"
    label_source: str = "manifest"
    label_tag: str | None = None
    label_map: dict[str, str] | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dicom.resolve_window(self.window)
        if self.frame_policy not in dicom.FRAME_POLICIES:
            raise _one_of("frame_policy", dicom.FRAME_POLICIES, self.frame_policy)
        if self.label_source not in LABEL_SOURCES:
            raise _one_of("label_source", LABEL_SOURCES, self.label_source)
        if self.label_source == "tag" and not (isinstance(self.label_tag, str) and self.label_tag.strip()):
            raise ValueError(f"label_tag must name a DICOM keyword (e.g. 'SeriesDescription') when "
                             f"label_source is 'tag'; got {self.label_tag!r}")
        if self.label_tag is not None and not _is_dicom_keyword(self.label_tag):
            raise ValueError(f"label_tag must be a DICOM keyword such as 'SeriesDescription' or "
                             f"'BodyPartExamined'; got {self.label_tag!r}")
        if self.label_map is not None and not isinstance(self.label_map, dict):
            raise ValueError(f"label_map must be a dict of tag value -> label or None; got {type(self.label_map).__name__}")
        if not isinstance(self.filters, dict):
            raise ValueError(f"filters must be a dict of keyword -> list of values; got {type(self.filters).__name__}")
        for keyword, values in self.filters.items():
            if keyword not in FILTER_KEYWORDS:
                raise _one_of("filters keys", FILTER_KEYWORDS, keyword)
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"filters[{keyword!r}] must be a list of strings; got {values!r}")

    def pixel_token(self) -> list[Any]:
        """What changes the preprocessed pixels: part of the cache key."""
        return [dicom.resolve_window(self.window), self.frame_policy]

    def token(self) -> str:
        """Every option as canonical JSON (for the cache key)."""
        label_map = sorted((self.label_map or {}).items())
        filters = sorted((k, sorted(v)) for k, v in self.filters.items())
        return json.dumps([self.pixel_token(), self.label_source, self.label_tag, label_map, filters])


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
    ``summary()`` is what may leave the clinic: counts only.  ``sizes`` ("ROWSxCOLUMNS")
    and ``transfer_syntaxes`` (syntax names) count the used files; ``filtered`` counts
    files the task's filters left out (not rejections).  With frame_policy "all" a
    file contributes one sample per frame, so splits can hold more images than files.
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

    def summary(self) -> dict[str, Any]:
        """Counts only: images and patients per label per split, rejections by reason,
        files filtered out by the task, equipment, image sizes and transfer syntaxes."""
        return {
            "labels": list(self.labels),
            "train": _split_counts(self.train, self.labels),
            "val": _split_counts(self.val, self.labels),
            "rejected": dict(sorted(Counter(reason for _, reason in self.rejected).items())),
            "rejected_total": len(self.rejected),
            "modalities": dict(self.modalities),
            "manufacturers": dict(self.manufacturers),
            "sizes": dict(self.sizes),
            "transfer_syntaxes": dict(self.transfer_syntaxes),
            "filtered": self.filtered,
        }


    def shared_card(self) -> dict[str, Any]:
        """The data card the coordinator may see, once per run: summary() with image sizes
        bucketed by their longer side (SIZE_BUCKETS), so the dashboard can show each
        clinic's data mix.  Counts and equipment/format names only: no path, ID or name."""
        buckets: Counter[str] = Counter()
        for size, count in self.sizes.items():
            buckets[_size_bucket(size)] += count
        return {**self.summary(), "sizes": dict(sorted(buckets.items()))}

    def card(self) -> dict[str, Any]:
        """The local data card: summary() plus every rejection with its fix, and what the
        coordinator receives of it (shared_card()).

        Rejections carry relative paths, so the card is for the clinic's own
        screen (client-node check-data), never for logs or the coordinator.
        """
        rejected = [{"where": where, "reason": reason, "fix": REJECTION_HELP.get(reason, "")}
                    for where, reason in self.rejected]
        return {"summary": self.summary(), "rejected": rejected, "shared": self.shared_card()}


def _size_bucket(size: str) -> str:
    """'ROWSxCOLUMNS' -> the SIZE_BUCKETS bucket of its longer side ('unknown' if unparsable)."""
    try:
        longer = max(int(v) for v in size.split("x"))
    except ValueError:
        return "unknown"
    for limit, name in SIZE_BUCKETS:
        if longer < limit:
            return name
    return f">={SIZE_BUCKETS[-1][0]} px"


def format_card(card: dict[str, Any]) -> str:
    """A data card (ClinicData.card()) as plain text lines for a terminal."""
    summary = card["summary"]
    lines = ["data card"]
    for split in ("train", "val"):
        counts = summary[split]
        per_label = ", ".join(
            f"{label}: {counts['images'].get(label, 0)} images / {counts.get('patients', {}).get(label, 0)} patients"
            for label in summary["labels"]
        )
        lines.append(f"  {split}: {counts['total_images']} images, {counts['total_patients']} patients ({per_label})")
    for key in ("modalities", "manufacturers", "sizes", "transfer_syntaxes"):
        shown = ", ".join(f"{name} {count}" for name, count in sorted(summary[key].items(), key=lambda kv: -kv[1]))
        lines.append(f"  {key.replace('_', ' ')}: {shown or '-'}")
    lines.append(f"  filtered out by the task: {summary['filtered']}")
    lines.append(f"  rejected: {summary['rejected_total']}"
                 + (f" ({', '.join(f'{r} {n}' for r, n in summary['rejected'].items())})" if summary["rejected"] else ""))
    for item in card["rejected"]:
        lines.append(f"  rejected {item['where']}: {item['reason']}; {item['fix']}")
    if "shared" in card:
        sizes = ", ".join(f"{name} {count}" for name, count in card["shared"]["sizes"].items()) or "-"
        lines.append(f"  sent to the coordinator once per run: the counts above (no file names), "
                     f"sizes bucketed: {sizes}")
    return "\n".join(lines)


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
    """One file's header facts (dicom.header_facts); ``patient`` and ``uid`` are
    identifier keys, not the IDs, and never leave this module.

    ``problem`` is the reason code when the header shows it cannot be used as an image.
    """

    relpath: str
    label: int
    patient: str
    uid: str
    modality: str
    manufacturer: str
    problem: str = ""
    body_part: str = ""
    series: str = ""
    size: str = ""
    syntax: str = ""
    label_value: str = ""


def _folder_error(data_dir: Path, problem: str, rejected: Sequence[tuple[str, str]] = ()) -> DataError:
    """DataError in the house style: 'data folder X: problem; fix'."""
    return DataError(f"data folder {data_dir}: {problem}", rejected)


def _read_manifest_lines(manifest: Path, data_dir: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, cells) of every non-blank CSV record, header included."""
    if not manifest.is_file():
        raise _folder_error(data_dir, f"manifest {manifest} not found; add a CSV with header "
                            '"file,label" or "sop_instance_uid,label" (see client-node demo-data)')
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, dialect=_sniff_dialect(handle.read(8192)))
            handle.seek(0)
            if handle.read(1) != "\ufeff":  # utf-8-sig drops a BOM only on the first read
                handle.seek(0)
            records = [(reader.line_num, cells) for cells in reader]
    except UnicodeDecodeError:
        raise _folder_error(data_dir, f"{manifest.name} is not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise _folder_error(data_dir, f"{manifest.name} is not valid CSV ({exc}); fix the quoting") from None
    return [(line, cells) for line, cells in records if any(cell.strip() for cell in cells)]


def _sniff_dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    """The CSV dialect of a manifest: comma, semicolon (spreadsheets in many locales), tab
    or pipe, sniffed from its start; plain CSV when the sample says nothing clearer."""
    try:
        return csv.Sniffer().sniff(sample.lstrip("\ufeff"), delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def _column(names: list[str], canonical: str) -> int | None:
    """Index of the header column meaning `canonical` (COLUMN_ALIASES); the canonical
    spelling wins; None when absent. Raises ValueError naming the columns when two
    different spellings both match (which one is meant cannot be guessed)."""
    if canonical in names:
        return names.index(canonical)
    found = [i for i, n in enumerate(names) if n in COLUMN_ALIASES[canonical]]
    if len(found) > 1:
        raise ValueError(", ".join(repr(names[i]) for i in found))
    return found[0] if found else None


def _header_columns(header: list[str], manifest: Path, data_dir: Path) -> tuple[str, int, int]:
    """(key kind, key column index, label column index) from the header row; the usual
    spellings are recognised (COLUMN_ALIASES: path, filename, class, target...)."""
    names = ["_".join(cell.strip().lower().replace("-", " ").split()) for cell in header]
    try:
        found = {kind: _column(names, kind) for kind in (*KEY_COLUMNS, "label")}
    except ValueError as err:
        raise _folder_error(data_dir, f"{manifest.name} header has several columns of one meaning ({err}); "
                            'rename the one to use to "file" or "label"') from None
    kind = next((k for k in KEY_COLUMNS if found[k] is not None), None)
    if kind is None or found["label"] is None:
        shown = ", ".join(repr(n[:40]) for n in names[:10])
        raise _folder_error(data_dir, f"{manifest.name} header has columns {shown}; it needs a label column "
                            '("label", "class", ...) and a file column ("file", "path", ...) or '
                            '"sop_instance_uid" (see client-node demo-data)')
    return kind, found[kind], found["label"]


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


def _facts_image(relpath: str, facts: dict[str, str] | str) -> _Image | str:
    """dicom.header_facts output as an unlabelled _Image, or the reason code."""
    return facts if isinstance(facts, str) else _Image(relpath=relpath, label=-1, **facts)


class _Workers:
    """This process plus ``workers - 1`` spawned helpers, shared by one load's stages.

    Spawned, because fork with torch or gRPC threads alive can deadlock.  The
    helpers start on first use; this process works too from the first second,
    so their start-up (a second or more: they import pydicom and the plugins,
    never torch) is not dead time and small jobs never wait for it.  Chunks are
    handed out dynamically, so a slow JPEG 2000 study does not leave a process
    idle.  If the helpers cannot start (e.g. a script without an
    ``if __name__ == "__main__":`` guard), their chunks run here instead.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Any = _NEVER
        self._helpers_ok = False

    def start(self) -> None:
        """Spawn the helpers now (no-op with one worker or when already started)."""
        if self.workers > 1 and self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers - 1, mp_context=context)
            self._ready = self._pool.submit(os.getpid)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _check_helpers(self) -> None:
        if not self._helpers_ok and self._ready.done():
            self._helpers_ok = self._ready.exception() is None
            if not self._helpers_ok:
                log.warning("worker processes failed to start; working in this process instead")
            self._ready = _NEVER

    def map(self, func: Callable[..., list[Any]], items: list[str], args: tuple[Any, ...], stage: str,
            progress: Progress | None, chunk_max: int = 4) -> list[Any]:
        """[func([item], *args)[0] for item in items], in chunks over this process and the helpers."""
        results: list[Any] = [None] * len(items)
        done = 0

        def finish(indices: list[int], outcome: list[Any]) -> None:
            nonlocal done
            for i, result in zip(indices, outcome):
                results[i] = result
            done += len(indices)
            if progress is not None:
                progress(stage, done, len(items))

        def run_here(indices: list[int]) -> None:
            finish(indices, func([items[i] for i in indices], *args))

        if self.workers <= 1 or len(items) <= 1:
            for i in range(len(items)):
                run_here([i])
            return results
        self.start()
        chunk = max(1, min(chunk_max, len(items) // (self.workers * 8)))
        queue = [list(range(i, min(i + chunk, len(items)))) for i in range(0, len(items), chunk)][::-1]
        pending: dict[Any, list[int]] = {}
        while queue or pending:
            self._check_helpers()
            # Chunks go to the helpers only once they answer: work queued for a helper
            # that is still importing would leave this process waiting at the end.
            while self._helpers_ok and queue and len(pending) < 2 * (self.workers - 1):
                indices = queue.pop()
                try:
                    pending[self._pool.submit(func, [items[i] for i in indices], *args)] = indices  # type: ignore[union-attr]
                except (BrokenProcessPool, RuntimeError):  # a helper died: finish here
                    self._helpers_ok = False
                    queue.append(indices)
            if queue:
                run_here(queue.pop())
            for future in [f for f in pending if f.done()] if queue else list(pending):
                indices = pending.pop(future)
                try:
                    finish(indices, future.result())
                except BrokenProcessPool:
                    self._helpers_ok = False
                    run_here(indices)
        return results


class _Headers:
    """Header facts of the files a load looks at, cached per file.

    A file whose relative path, size and mtime (and the task's label tag) are
    unchanged is not opened again: with a warm cache an epoch touches no DICOM
    at all.  Misses are read in parallel.  The cache file holds identifier
    keys (dicom.identifier_key), never PatientIDs, UIDs or paths, and its
    entries are keyed by a hash of the path, so a path holding a patient's
    name is not written either.
    """

    def __init__(self, data_dir: Path, label_tag: str | None, cache_dir: Path | None, workers: _Workers) -> None:
        self.data_dir, self.label_tag, self.workers = data_dir, label_tag, workers
        self.path = _headers_cache_path(Path(cache_dir), data_dir) if cache_dir is not None else None
        self.stored = _headers_load(self.path) if self.path is not None else {}
        self.used: dict[str, dict[str, str] | str] = {}
        self.facts: dict[str, _Image | str] = {}
        self.stats: dict[str, os.stat_result | None] = {}
        self.read = 0

    def stat(self, relpath: str) -> os.stat_result | None:
        """os.stat of a file below the data folder (None if missing), once per load."""
        if relpath not in self.stats:
            try:
                self.stats[relpath] = (self.data_dir / relpath).stat()
            except OSError:
                self.stats[relpath] = None
        return self.stats[relpath]

    def is_file(self, relpath: str) -> bool:
        st = self.stat(relpath)
        return st is not None and stat.S_ISREG(st.st_mode)

    def _key(self, relpath: str) -> str | None:
        st = self.stat(relpath)
        if st is None:
            return None
        payload = json.dumps([CACHE_VERSION, relpath, st.st_size, st.st_mtime_ns, self.label_tag or ""])
        return hashlib.sha256(payload.encode()).hexdigest()[:40]

    def prefetch(self, relpaths: list[str], progress: Progress | None) -> None:
        """Know the facts of every relpath: from the cache, else read (spreading the reads over the workers)."""
        missing: list[tuple[str, str | None]] = []
        unique = list(dict.fromkeys(relpaths))
        for relpath in unique:
            if relpath in self.facts:
                continue
            key = self._key(relpath)
            entry = self.stored.get(key) if key is not None else None
            if not _valid_entry(entry):
                missing.append((relpath, key))
            else:
                self.used[key] = entry  # type: ignore[index]
                self.facts[relpath] = _facts_image(relpath, entry)  # type: ignore[arg-type]
        if len(missing) > 1:
            self.workers.start()  # changed files: their pixels will need decoding too
        hits = len(unique) - len(missing)
        report = (lambda stage, done, total: progress(stage, hits + done, hits + total)) if progress else None
        if progress is not None:
            progress("headers", hits, len(unique))
        results = self.workers.map(dicom.header_facts_many, [str(self.data_dir / r) for r, _ in missing],
                                   (self.label_tag,), "headers", report, chunk_max=32)
        for (relpath, key), facts in zip(missing, results):
            self.facts[relpath] = _facts_image(relpath, facts)
            self.read += 1
            if key is not None and facts != "unreadable":  # unreadable may be a passing permission problem
                self.used[key] = facts

    def get(self, relpath: str) -> _Image | str:
        """Facts of one file (read now if it was not prefetched)."""
        if relpath not in self.facts:
            self.prefetch([relpath], None)
        return self.facts[relpath]

    def save(self) -> None:
        """Write the entries this load used (plus older ones, within bounds) if any were read."""
        if self.path is None or not self.read:
            return
        entries = dict(self.used)
        for key, entry in self.stored.items():
            if len(entries) >= 2 * len(self.used) + 1000:
                break
            entries.setdefault(key, entry)
        _atomic_write(self.path, json.dumps({"version": HEADERS_CACHE_VERSION, "entries": entries},
                                             separators=(",", ":")).encode())


_FACT_FIELDS = frozenset(f.name for f in fields(_Image)) - {"relpath", "label"}


def _valid_entry(entry: object) -> bool:
    """A cached reason code, or header facts with exactly the fields of dicom.header_facts."""
    if isinstance(entry, str):
        return bool(entry)
    return isinstance(entry, dict) and set(entry) == _FACT_FIELDS and all(isinstance(v, str) for v in entry.values())


def _headers_cache_path(cache_dir: Path, data_dir: Path) -> Path:
    """One header cache file per data folder, next to its pixel cache entries."""
    folder_tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{folder_tag}-headers.json"


def _headers_load(path: Path) -> dict[str, dict[str, str] | str]:
    """Cached entries, or {} for a missing, unreadable or outdated file."""
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_bytes())
        if stored.get("version") == HEADERS_CACHE_VERSION and isinstance(stored.get("entries"), dict):
            return stored["entries"]
        return {}  # written by another version: read the headers again
    except (OSError, ValueError, AttributeError):
        log.warning("ignoring unreadable header cache file %s", path.name)
        return {}


def _atomic_write(path: Path, blob: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def _passes(facts: _Image, filters: dict[str, list[str]]) -> bool:
    """True when the image matches every filter (case-insensitive; any listed value)."""
    values = {"Modality": facts.modality, "BodyPartExamined": facts.body_part, "SeriesDescription": facts.series}
    for keyword, allowed in filters.items():
        if values[keyword].strip().lower() not in {a.strip().lower() for a in allowed}:
            return False
    return True


def _accept(facts: _Image, label: int, filters: dict[str, list[str]]) -> _Image | str:
    """The labelled image, or _FILTERED, or the reason it cannot be used (problem, no PatientID)."""
    if not _passes(facts, filters):
        return _FILTERED
    if facts.problem or not facts.patient:
        return facts.problem or "no-patient-id"
    return replace(facts, label=label)


def _walk_files(data_dir: Path, skip: set[Path]) -> list[Path]:
    """Every regular file under data_dir (any depth, any name), sorted, minus hidden ones and skip."""
    found: list[Path] = []
    for root, dirs, files in os.walk(data_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in skip)
        found.extend(root_path / f for f in sorted(files) if not f.startswith("."))
    return [p for p in found if p.resolve() not in skip and p.is_file()]


def _scan_by_uid(
    data_dir: Path, skip: set[Path], headers: _Headers, progress: Progress | None = None,
) -> tuple[dict[str, _Image], list[tuple[str, str]]]:
    """Map SOPInstanceUID key -> header facts for a sop_instance_uid manifest.

    Non-DICOM and empty files are skipped silently (PACS exports carry viewers,
    READMEs); damaged DICOM files and duplicate UIDs are rejected.
    """
    by_uid: dict[str, _Image] = {}
    rejected: list[tuple[str, str]] = []
    relpaths = [path.relative_to(data_dir).as_posix() for path in _walk_files(data_dir, skip)]
    headers.prefetch(relpaths, progress)
    for relpath in relpaths:
        facts = headers.get(relpath)
        if isinstance(facts, str):
            if facts not in ("not-dicom", "empty-file"):
                rejected.append((relpath, facts))
        elif facts.uid in by_uid:
            rejected.append((relpath, "duplicate-sop-instance-uid"))
        elif facts.uid:
            by_uid[facts.uid] = facts
    return by_uid, rejected


def _resolve_rows(
    kind: str, rows: list[_Row], data_dir: Path, skip: set[Path], headers: _Headers,
    filters: dict[str, list[str]] | None = None, progress: Progress | None = None,
) -> tuple[list[_Image], list[tuple[str, str]]]:
    """Turn manifest rows into checked images; everything that fails becomes a rejection
    (files filtered out by the task become ``(where, "filtered")`` for the caller to count)."""
    rejected: list[tuple[str, str]] = []
    by_uid: dict[str, _Image] = {}
    if kind == "sop_instance_uid":
        by_uid, rejected = _scan_by_uid(data_dir, skip, headers, progress)
    else:
        headers.prefetch([row.key for row in rows if _inside(row.key) and headers.is_file(row.key)], progress)
    images: list[_Image] = []
    seen_uids: set[str] = set()
    for row in rows:
        where, outcome = _resolve_row(kind, row, data_dir, by_uid, filters or {}, headers)
        _collect(where, outcome, images, rejected, seen_uids)
    return sorted(images, key=lambda im: im.relpath), rejected


def _inside(key: str) -> bool:
    """A manifest path that stays inside the data folder (relative, no '..')."""
    pure = PurePosixPath(key)
    return not pure.is_absolute() and ".." not in pure.parts


def _collect(where: str, outcome: "_Image | str", images: list["_Image"],
             rejected: list[tuple[str, str]], seen_uids: set[str]) -> None:
    """Keep an accepted image, or record why not (its reason, or a repeated SOPInstanceUID)."""
    if isinstance(outcome, str):
        rejected.append((where, outcome))
    elif outcome.uid and outcome.uid in seen_uids:
        rejected.append((where, "duplicate-sop-instance-uid"))
    else:
        seen_uids.add(outcome.uid)
        images.append(outcome)


def _resolve_row(
    kind: str, row: _Row, data_dir: Path, by_uid: dict[str, _Image], filters: dict[str, list[str]],
    headers: _Headers,
) -> tuple[str, _Image | str]:
    """(where to report, labelled image or reason) for one row."""
    if kind == "sop_instance_uid":
        uid = dicom.identifier_key("sop-instance", row.key)
        if uid not in by_uid:
            return row.where, "unknown-sop-instance-uid"
        facts: _Image | str = by_uid[uid]
    else:
        if not _inside(row.key):
            return f"{row.where}: {row.key}", "outside-data-folder"
        if not headers.is_file(row.key):
            return f"{row.where}: {row.key}", "missing-file"
        facts = headers.get(row.key)
    if isinstance(facts, str):
        return row.key, facts
    return facts.relpath, _accept(facts, row.label, filters)


def _class_folders(data_dir: Path, labels: Sequence[str]) -> dict[int, Path]:
    """label index -> its folder directly under data_dir (names match case-insensitively)."""
    try:
        subdirs = {d.name.strip().lower(): d for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith(".")}
    except OSError:
        return {}
    return {i: subdirs[name.strip().lower()] for i, name in enumerate(labels) if name.strip().lower() in subdirs}


def _scan_labelled(
    data_dir: Path, candidates: list[tuple[Path, int | None]], options: DataOptions,
    labels: Sequence[str], headers: _Headers, progress: Progress | None,
) -> tuple[list[_Image], list[tuple[str, str]]]:
    """Header facts for (file, label or None = from the tag) pairs, with the same
    rejections as a manifest: problems, no PatientID, duplicate UIDs; filtered files flagged.

    In tag mode non-DICOM files are skipped silently (PACS exports carry viewers, READMEs).
    """
    label_index = {name.strip().lower(): i for i, name in enumerate(labels)}
    label_map = {str(k).strip().lower(): str(v).strip().lower() for k, v in (options.label_map or {}).items()}
    images: list[_Image] = []
    rejected: list[tuple[str, str]] = []
    seen_uids: set[str] = set()
    relpaths = [path.relative_to(data_dir).as_posix() for path, _ in candidates]
    headers.prefetch(relpaths, progress)
    for relpath, (_, label) in zip(relpaths, candidates):
        facts = headers.get(relpath)
        if isinstance(facts, str):
            if not (label is None and facts == "not-dicom"):
                rejected.append((relpath, facts))
            continue
        if label is None:
            value = facts.label_value.strip().lower()
            label = label_index.get(label_map.get(value, value) if label_map else value)
        outcome = _accept(facts, -1 if label is None else label, options.filters)
        if outcome != _FILTERED and label is None and not isinstance(outcome, str):
            outcome = "no-label"
        _collect(relpath, outcome, images, rejected, seen_uids)
    return sorted(images, key=lambda im: im.relpath), rejected


# ----------------------------------------------------------------------------- pixels and cache


def _decode_all(
    paths: list[Path], size: int, workers: _Workers, pixel_token: list[Any], progress: Progress | None = None
) -> tuple[np.ndarray, list[str], list[int]]:
    """(M x S x S float16 samples, reason per file ('' = success), samples per file).

    Each worker reads, decodes and resizes whole files, so only the small
    float16 results cross between processes.  A failed file contributes no sample.
    """
    window, frame_policy = pixel_token
    window = tuple(window) if window is not None else None
    results = workers.map(dicom.preprocess_files, [str(p) for p in paths], (size, window, frame_policy),
                          "pixels", progress)
    stacks = [img for img, _ in results if img is not None]
    stacked = np.concatenate(stacks) if stacks else np.zeros((0, size, size), dtype=np.float16)
    counts = [0 if img is None else int(img.shape[0]) for img, _ in results]
    return stacked, [reason for _, reason in results], counts


class _Never:
    """A stand-in future that never completes (helpers not started or given up on)."""

    def done(self) -> bool:
        return False


_NEVER = _Never()


def _cache_key(headers: _Headers, images: list[_Image], size: int, options_token: str = "") -> str:
    """sha256 over every used file's relative path, size and mtime_ns, the image size,
    the options (window, frame policy, labels...) and code versions."""
    stats = []
    for image in images:
        st = headers.stat(image.relpath)
        stats.append([image.relpath, st.st_size if st else -1, st.st_mtime_ns if st else -1])
    payload = json.dumps([CACHE_VERSION, dicom.PREPROCESS_VERSION, size, options_token, stats], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _cache_path(cache_dir: Path, data_dir: Path, size: int, key: str) -> Path:
    """One file per (folder, size, content key); the folder tag lets stale entries be pruned."""
    folder_tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{folder_tag}-s{size}-{key[:32]}.npz"


def _cache_load(path: Path, count: int, size: int) -> tuple[np.ndarray, list[str], list[int]] | None:
    """Cached (samples, reasons, samples per file) or None on a miss or an unreadable/mismatched file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, reasons = npz["images"], [str(r) for r in npz["reasons"]]
            counts = [int(c) for c in npz["counts"]]
    except Exception:
        log.warning("ignoring unreadable cache file %s", path.name)
        return None
    if len(reasons) != count or len(counts) != count or images.shape != (sum(counts), size, size):
        return None
    return images, reasons, counts


def _cache_store(path: Path, images: np.ndarray, reasons: list[str], counts: list[int]) -> None:
    """Write atomically, then drop older entries of the same folder and size."""
    buffer = io.BytesIO()
    np.savez(buffer, images=images.astype(np.float16), reasons=np.array(reasons, dtype=str),
             counts=np.array(counts, dtype=np.int64))
    _atomic_write(path, buffer.getvalue())
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for stale in path.parent.glob(f"{prefix}*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)


def _pixels(
    headers: _Headers, images: list[_Image], size: int, cache_dir: Path | None, workers: _Workers,
    options: DataOptions, progress: Progress | None = None,
) -> tuple[np.ndarray, list[str], list[int]]:
    """Preprocessed samples for images (and reasons, samples per file), from the cache when nothing changed."""
    data_dir, cache_file = headers.data_dir, None
    if cache_dir is not None:
        key = _cache_key(headers, images, size, options.token())
        cache_file = _cache_path(cache_dir, data_dir, size, key)
        cached = _cache_load(cache_file, len(images), size)
        if cached is not None:
            log.info("loaded %d preprocessed images from cache", len(images))
            if progress is not None:
                progress("pixels", len(images), len(images))
            return cached
    paths = [data_dir / im.relpath for im in images]
    pixels, reasons, counts = _decode_all(paths, size, workers, options.pixel_token(), progress)
    if cache_file is not None:
        _cache_store(cache_file, pixels, reasons, counts)
    return pixels, reasons, counts


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


def _public_where(where: str, manifest_name: str) -> str:
    """'labels.csv line N' for a manifest row, else 'a file': paths below the data
    folder can carry a patient's name, so they stay out of exception text."""
    prefix = f"{manifest_name} line "
    if where.startswith(prefix):
        return where.split(":", 1)[0]
    return "a file (run client-node check-data for the list)"


def _no_usable_image(
    data_dir: Path, source: str, n_items: int, rejected: list[tuple[str, str]], filtered: int = 0
) -> DataError:
    """Explain why nothing is left, e.g. 'all 12 rows name files that do not exist; first: labels.csv line 2'.

    ``source`` is the manifest's file name or a description of the folder scan.
    """
    reasons = Counter(reason for _, reason in rejected)
    if not rejected:
        extra = f" ({filtered} filtered out by the task's filters)" if filtered else ""
        return _folder_error(data_dir, f"no usable image among {n_items} entries of {source}{extra}; "
                             "check the manifest, labels and filters", rejected)
    first_where, first_reason = rejected[0]
    shown = _public_where(first_where, source)
    if len(reasons) == 1 and first_reason == "missing-file" and len(rejected) == n_items:
        return _folder_error(data_dir, f"all {n_items} rows of {source} name files that do not exist; "
                             f"first: {shown}; {REJECTION_HELP['missing-file']}", rejected)
    detail = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    if filtered:
        detail += f"; {filtered} filtered out"
    fix = REJECTION_HELP.get(first_reason, "see the rejection list")
    return _folder_error(data_dir, f"no usable image: {len(rejected)} rejected ({detail}); "
                         f"first: {shown} ({first_reason}); {fix}", rejected)


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
    is part of the cache key.  ``progress(stage, done, total)`` is called as headers are read
    and as pixels are decoded.
    """
    _check_labels(labels)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    options = options if options is not None else DataOptions()
    if not isinstance(options, DataOptions):
        raise ValueError(f"options must be a DataOptions or None; got {type(options).__name__}")
    data_dir = Path(data_dir)
    _check_folder(data_dir)
    cache = Path(cache_dir) if cache_dir is not None else None
    pool = _Workers(workers)
    try:
        headers = _Headers(data_dir, options.label_tag, cache, pool)
        if not headers.stored:  # nothing cached: everything will be read, so start the helpers now
            pool.start()
        source, images, rejected, n_items = _labelled_images(data_dir, labels, manifest, cache, options,
                                                             headers, progress)
        headers.save()
        pixels, reasons, counts = _pixels(headers, images, image_size, cache, pool, options, progress)
    finally:
        pool.close()
    filtered = sum(1 for _, reason in rejected if reason == _FILTERED)
    rejected = [r for r in rejected if r[1] != _FILTERED]
    rejected += [(im.relpath, r) for im, r in zip(images, reasons) if r]
    kept = [im for im, r in zip(images, reasons) if not r]
    samples = [im for im, n in zip(images, counts) for _ in range(n)]
    if not samples:
        raise _no_usable_image(data_dir, source, n_items, rejected, filtered)
    train, val = _split_images(samples, val_fraction, seed)
    return ClinicData(
        train=_build_split(pixels, samples, train),
        val=_build_split(pixels, samples, val),
        labels=list(labels),
        rejected=rejected,
        modalities=dict(Counter(im.modality for im in kept)),
        manufacturers=dict(Counter(im.manufacturer for im in kept)),
        sizes=dict(Counter(im.size for im in kept)),
        transfer_syntaxes=dict(Counter(im.syntax for im in kept)),
        filtered=filtered,
    )


def _labelled_images(
    data_dir: Path, labels: Sequence[str], manifest: Path | None, cache_dir: Path | None,
    options: DataOptions, headers: _Headers, progress: Progress | None,
) -> tuple[str, list[_Image], list[tuple[str, str]], int]:
    """(source name, labelled images, rejections incl. 'filtered', number of rows/files considered)."""
    skip = {Path(cache_dir).resolve()} if cache_dir is not None else set()
    source = options.label_source
    default_manifest = data_dir / MANIFEST_NAME
    if source == "manifest" and manifest is None and not default_manifest.exists() and _class_folders(data_dir, labels):
        source = "folders"
    if source == "folders":
        folders = _class_folders(data_dir, labels)
        if not folders:
            names = ", ".join(f"{data_dir.name}/{name}" for name in labels)
            raise _folder_error(data_dir, f"no class folders found; put each label's images in its own folder ({names})")
        candidates = [(path, i) for i, folder in sorted(folders.items()) for path in _walk_files(folder, skip)]
        images, rejected = _scan_labelled(data_dir, candidates, options, labels, headers, progress)
        return "the class folders", images, rejected, len(candidates)
    if source == "tag":
        candidates = [(path, None) for path in _walk_files(data_dir, skip)]
        images, rejected = _scan_labelled(data_dir, candidates, options, labels, headers, progress)
        return f"the files' {options.label_tag} tags", images, rejected, len(candidates)
    manifest = Path(manifest) if manifest is not None else default_manifest
    kind, rows, rejected = _parse_manifest(manifest, data_dir, labels)
    n_rows = len(rows) + len(rejected)
    images, more = _resolve_rows(kind, rows, data_dir, skip | {manifest.resolve()}, headers,
                                 options.filters, progress)
    return manifest.name, images, rejected + more, n_rows


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
    headers = _Headers(data_dir, None, None, _Workers(1))
    images, more = _resolve_rows(kind, rows, data_dir, {manifest.resolve()}, headers)
    rejected += more
    if not images:
        raise _no_usable_image(data_dir, manifest.name, len(rows) + len(rejected) - len(more), rejected)
    return rejected
