"""Each file's header facts (radfed.dicom.header_facts), cached per file across loads.

The facts a load needs (patient, SOPInstanceUID, study and series keys, modality,
equipment, size, syntax, the label tag's value, the slice's InstanceNumber and position,
or the reason the file cannot be used) are read once per file version: an unchanged
folder loads without opening a DICOM file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path

from radfed import dicom
from radfed.data.files import atomic_write
from radfed.data.workers import Progress, Workers

log = logging.getLogger("radfed.data")

CACHE_VERSION = "radfed-data-4"
# Header caches hold check_image_header's verdict ("problem"), so they also go stale when
# radfed.dicom learns to decode more (e.g. colour): they carry both versions.
HEADERS_CACHE_VERSION = f"{CACHE_VERSION}/{dicom.PREPROCESS_VERSION}"


@dataclass(frozen=True)
class ImageFacts:
    """One file's header facts (dicom.header_facts); ``patient``, ``uid``, ``study_key``
    and ``series_key`` are identifier keys, not the IDs, and never leave the clinic.

    ``problem`` is the reason code when the header shows it cannot be used as an image.
    ``unit`` is not a header fact but the load's: the labelled unit (a study, a series, a
    manifest folder) the image belongs to, '' when the image is labelled on its own.
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
    study_key: str = ""
    series_key: str = ""
    instance_number: str = ""
    slice_position: str = ""
    unit: str = ""


def facts_image(relpath: str, facts: dict[str, str] | str) -> ImageFacts | str:
    """dicom.header_facts output as an unlabelled ImageFacts, or the reason code."""
    return facts if isinstance(facts, str) else ImageFacts(relpath=relpath, label=-1, **facts)


class HeaderCache:
    """Header facts of the files a load looks at, cached per file.

    A file whose relative path, size and mtime (and the task's label tag) are
    unchanged is not opened again: with a warm cache an epoch touches no DICOM
    at all.  Misses are read in parallel.  The cache file holds identifier
    keys (dicom.identifier_key), never PatientIDs, UIDs or paths, and its
    entries are keyed by a hash of the path, so a path holding a patient's
    name is not written either.
    """

    def __init__(self, data_dir: Path, label_tag: str | None, cache_dir: Path | None, workers: Workers) -> None:
        self.data_dir, self.label_tag, self.workers = data_dir, label_tag, workers
        self.path = _headers_cache_path(Path(cache_dir), data_dir) if cache_dir is not None else None
        self.stored = _headers_load(self.path) if self.path is not None else {}
        self.used: dict[str, dict[str, str] | str] = {}
        self.facts: dict[str, ImageFacts | str] = {}
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
                self.facts[relpath] = facts_image(relpath, entry)  # type: ignore[arg-type]
        if len(missing) > 1:
            self.workers.start()  # changed files: their pixels will need decoding too
        hits = len(unique) - len(missing)
        report = (lambda stage, done, total: progress(stage, hits + done, hits + total)) if progress else None
        if progress is not None:
            progress("headers", hits, len(unique))
        results = self.workers.map(
            dicom.header_facts_many,
            [str(self.data_dir / r) for r, _ in missing],
            (self.label_tag,),
            "headers",
            report,
            chunk_max=32,
        )
        for (relpath, key), facts in zip(missing, results):
            self.facts[relpath] = facts_image(relpath, facts)
            self.read += 1
            if key is not None and facts != "unreadable":  # unreadable may be a passing permission problem
                self.used[key] = facts

    def get(self, relpath: str) -> ImageFacts | str:
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
        atomic_write(
            self.path,
            json.dumps({"version": HEADERS_CACHE_VERSION, "entries": entries}, separators=(",", ":")).encode(),
        )


_FACT_FIELDS = frozenset(f.name for f in fields(ImageFacts)) - {"relpath", "label", "unit"}


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
