"""Where labels come from: a manifest's rows, class folders, or a DICOM tag.

Each source turns into the same thing: labelled `ImageFacts` and rejections with the
same reason codes, filtered files flagged (`FILTERED`) for the caller to count.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from radfed import dicom
from radfed.data.files import inside_folder, walk_files
from radfed.data.headers import HeaderCache, ImageFacts
from radfed.data.labels import LabelLookup
from radfed.data.manifest import MANIFEST_NAME, ManifestRow, parse_manifest
from radfed.data.options import DataOptions
from radfed.data.problems import FILTERED, folder_error
from radfed.data.workers import Progress


def passes_filters(facts: ImageFacts, filters: dict[str, list[str]]) -> bool:
    """True when the image matches every filter (case-insensitive; any listed value)."""
    values = {"Modality": facts.modality, "BodyPartExamined": facts.body_part, "SeriesDescription": facts.series}
    for keyword, allowed in filters.items():
        if values[keyword].strip().lower() not in {a.strip().lower() for a in allowed}:
            return False
    return True


def _accept(facts: ImageFacts, label: int, filters: dict[str, list[str]]) -> ImageFacts | str:
    """The labelled image, or FILTERED, or the reason it cannot be used (problem, no PatientID)."""
    if not passes_filters(facts, filters):
        return FILTERED
    if facts.problem or not facts.patient:
        return facts.problem or "no-patient-id"
    return replace(facts, label=label)


def _scan_by_uid(
    data_dir: Path,
    skip: set[Path],
    headers: HeaderCache,
    progress: Progress | None = None,
) -> tuple[dict[str, ImageFacts], list[tuple[str, str]]]:
    """Map SOPInstanceUID key -> header facts for a sop_instance_uid manifest.

    Non-DICOM and empty files are skipped silently (PACS exports carry viewers,
    READMEs); damaged DICOM files and duplicate UIDs are rejected.
    """
    by_uid: dict[str, ImageFacts] = {}
    rejected: list[tuple[str, str]] = []
    relpaths = [path.relative_to(data_dir).as_posix() for path in walk_files(data_dir, skip)]
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


def resolve_rows(
    kind: str,
    rows: list[ManifestRow],
    data_dir: Path,
    skip: set[Path],
    headers: HeaderCache,
    filters: dict[str, list[str]] | None = None,
    progress: Progress | None = None,
) -> tuple[list[ImageFacts], list[tuple[str, str]]]:
    """Turn manifest rows into checked images; everything that fails becomes a rejection
    (files filtered out by the task become ``(where, "filtered")`` for the caller to count)."""
    if kind in UNIT_KEYS:
        return resolve_unit_rows(kind, rows, data_dir, skip, headers, filters or {}, progress)
    rows, folder_rows = split_folder_rows(kind, rows, data_dir)
    rejected: list[tuple[str, str]] = []
    by_uid: dict[str, ImageFacts] = {}
    if kind == "sop_instance_uid":
        by_uid, rejected = _scan_by_uid(data_dir, skip, headers, progress)
    else:
        headers.prefetch([row.key for row in rows if inside_folder(row.key) and headers.is_file(row.key)], progress)
    images: list[ImageFacts] = []
    seen_uids: set[str] = set()
    for row in rows:
        where, outcome = _resolve_row(kind, row, data_dir, by_uid, filters or {}, headers)
        _collect(where, outcome, images, rejected, seen_uids)
    if folder_rows:
        resolve_folder_rows(folder_rows, data_dir, skip, headers, filters or {}, progress, images, rejected, seen_uids)
    return sorted(images, key=lambda im: im.relpath), rejected


def _collect(
    where: str,
    outcome: ImageFacts | str,
    images: list[ImageFacts],
    rejected: list[tuple[str, str]],
    seen_uids: set[str],
) -> None:
    """Keep an accepted image, or record why not (its reason, or a repeated SOPInstanceUID)."""
    if isinstance(outcome, str):
        rejected.append((where, outcome))
    elif outcome.uid and outcome.uid in seen_uids:
        rejected.append((where, "duplicate-sop-instance-uid"))
    else:
        seen_uids.add(outcome.uid)
        images.append(outcome)


def _resolve_row(
    kind: str,
    row: ManifestRow,
    data_dir: Path,
    by_uid: dict[str, ImageFacts],
    filters: dict[str, list[str]],
    headers: HeaderCache,
) -> tuple[str, ImageFacts | str]:
    """(where to report, labelled image or reason) for one row."""
    if kind == "sop_instance_uid":
        uid = dicom.identifier_key("sop-instance", row.key)
        if uid not in by_uid:
            return row.where, "unknown-sop-instance-uid"
        facts: ImageFacts | str = by_uid[uid]
    else:
        if not inside_folder(row.key):
            return f"{row.where}: {row.key}", "outside-data-folder"
        if not headers.is_file(row.key):
            return f"{row.where}: {row.key}", "missing-file"
        facts = headers.get(row.key)
    if isinstance(facts, str):
        return row.key, facts
    return facts.relpath, _accept(facts, row.label, filters)


# ----------------------------------------------------------------------------- labelled units

# Manifest key kind -> (identifier_key kind of its UID, the ImageFacts field holding that key).
UNIT_KEYS = {
    "study_instance_uid": ("study-instance", "study_key"),
    "series_instance_uid": ("series-instance", "series_key"),
}


def unit_name(kind: str, key: str) -> str:
    """The in-memory name of a labelled unit: its kind and one-way key (never a UID or path)."""
    return f"{kind}:{key}"


def unit_kind(unit: str) -> str:
    """What a unit is, for the data card: "study", "series", "folder", or "image" (unit '')."""
    return {"study-instance": "study", "series-instance": "series", "folder": "folder"}.get(
        unit.partition(":")[0], "image"
    )


def resolve_unit_rows(
    kind: str,
    rows: list[ManifestRow],
    data_dir: Path,
    skip: set[Path],
    headers: HeaderCache,
    filters: dict[str, list[str]],
    progress: Progress | None = None,
) -> tuple[list[ImageFacts], list[tuple[str, str]]]:
    """Rows naming a whole study or series by its UID: every DICOM file of it below the
    data folder is an image of that labelled unit (a CT study is hundreds of files, its
    label one row). Files of studies the manifest does not list are ignored, as for a
    sop_instance_uid manifest."""
    uid_kind, field_name = UNIT_KEYS[kind]
    by_uid, rejected = _scan_by_uid(data_dir, skip, headers, progress)
    members: dict[str, list[ImageFacts]] = {}
    for facts in by_uid.values():
        members.setdefault(getattr(facts, field_name), []).append(facts)
    images: list[ImageFacts] = []
    seen_uids: set[str] = set()
    for row in rows:
        key = dicom.identifier_key(uid_kind, row.key)
        if not members.get(key):
            rejected.append((row.where, f"unknown-{kind.replace('_', '-')}"))
            continue
        unit = unit_name(uid_kind, key)
        for facts in sorted(members[key], key=lambda im: im.relpath):
            _collect(facts.relpath, _accept(replace(facts, unit=unit), row.label, filters), images, rejected, seen_uids)
    return sorted(images, key=lambda im: im.relpath), rejected


def split_folder_rows(
    kind: str, rows: list[ManifestRow], data_dir: Path
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """(rows naming files, rows naming folders) of a file manifest: a row whose path is a
    folder inside the data folder labels every file below it as one unit (a study
    exported as a folder of slices)."""
    if kind != "file":
        return rows, []
    folders = [row for row in rows if inside_folder(row.key) and (data_dir / row.key).is_dir()]
    named = {id(row) for row in folders}
    return [row for row in rows if id(row) not in named], folders


def resolve_folder_rows(
    rows: list[ManifestRow],
    data_dir: Path,
    skip: set[Path],
    headers: HeaderCache,
    filters: dict[str, list[str]],
    progress: Progress | None,
    images: list[ImageFacts],
    rejected: list[tuple[str, str]],
    seen_uids: set[str],
) -> None:
    """Add the images of folder rows: every DICOM file below the folder (any depth),
    labelled as the row says and grouped as one unit. Non-DICOM files (viewers, READMEs)
    are skipped silently; a file already labelled by another row is rejected as a
    duplicate; a folder without any DICOM file is rejected."""
    members = {
        id(row): [p.relative_to(data_dir).as_posix() for p in walk_files(data_dir / row.key, skip)] for row in rows
    }
    headers.prefetch([relpath for relpaths in members.values() for relpath in relpaths], progress)
    for row in rows:
        unit = unit_name("folder", dicom.identifier_key("folder", row.key.rstrip("/")))
        found = 0
        for relpath in members[id(row)]:
            facts = headers.get(relpath)
            if facts in ("not-dicom", "empty-file"):
                continue
            found += 1
            outcome = facts if isinstance(facts, str) else _accept(replace(facts, unit=unit), row.label, filters)
            _collect(relpath, outcome, images, rejected, seen_uids)
        if not found:
            rejected.append((row.where, "empty-folder"))


def subfolders(data_dir: Path) -> list[Path]:
    """The visible folders directly under data_dir, by name."""
    try:
        return sorted(
            (d for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name
        )
    except OSError:
        return []


def class_folders(data_dir: Path, lookup: LabelLookup) -> list[tuple[int, Path]]:
    """(label index, folder) for each folder directly under data_dir whose name is a task
    label or maps to one (case-insensitive; several folders may feed one label)."""
    return [(i, d) for d in subfolders(data_dir) if (i := lookup.index(d.name)) is not None]


def scan_labelled(
    data_dir: Path,
    candidates: list[tuple[Path, int | None]],
    options: DataOptions,
    lookup: LabelLookup,
    headers: HeaderCache,
    progress: Progress | None,
) -> tuple[list[ImageFacts], list[tuple[str, str]]]:
    """Header facts for (file, label or None = from the tag) pairs, with the same
    rejections as a manifest: problems, no PatientID, duplicate UIDs; filtered files flagged.

    In tag mode non-DICOM files are skipped silently (PACS exports carry viewers, READMEs).
    """
    images: list[ImageFacts] = []
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
            label = lookup.index(facts.label_value)
        outcome = _accept(facts, -1 if label is None else label, options.filters)
        if outcome != FILTERED and label is None and not isinstance(outcome, str):
            outcome = "no-label"
        _collect(relpath, outcome, images, rejected, seen_uids)
    return sorted(images, key=lambda im: im.relpath), rejected


def labelled_images(
    data_dir: Path,
    lookup: LabelLookup,
    manifest: Path | None,
    cache_dir: Path | None,
    options: DataOptions,
    headers: HeaderCache,
    progress: Progress | None,
) -> tuple[str, list[ImageFacts], list[tuple[str, str]], int]:
    """(source name, labelled images, rejections incl. 'filtered', number of rows/files considered)."""
    skip = {Path(cache_dir).resolve()} if cache_dir is not None else set()
    source = options.label_source
    default_manifest = data_dir / MANIFEST_NAME
    if source == "manifest" and manifest is None and not default_manifest.exists() and class_folders(data_dir, lookup):
        source = "folders"
    if source == "folders":
        folders = class_folders(data_dir, lookup)
        if not folders:
            names = ", ".join(f"{data_dir.name}/{name}" for name in lookup.labels)
            raise folder_error(
                data_dir,
                f"no class folders found; put each label's images in its own folder "
                f"({names}), or map folder names to labels with --label-map FOLDER=LABEL",
            )
        candidates = [(path, i) for i, folder in folders for path in walk_files(folder, skip)]
        images, rejected = scan_labelled(data_dir, candidates, options, lookup, headers, progress)
        return "the class folders", images, rejected, len(candidates)
    if source == "tag":
        candidates = [(path, None) for path in walk_files(data_dir, skip)]
        images, rejected = scan_labelled(data_dir, candidates, options, lookup, headers, progress)
        return f"the files' {options.label_tag} tags", images, rejected, len(candidates)
    manifest = Path(manifest) if manifest is not None else default_manifest
    kind, rows, rejected = parse_manifest(manifest, data_dir, lookup, options.file_column, options.label_column)
    n_rows = len(rows) + len(rejected)
    images, more = resolve_rows(kind, rows, data_dir, skip | {manifest.resolve()}, headers, options.filters, progress)
    return manifest.name, images, rejected + more, n_rows
