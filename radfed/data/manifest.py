"""A label manifest (CSV) as exported: its columns found, its dialect sniffed, its rows checked.

PACS and spreadsheet exports head their columns `path`, `filename`, `class`, `target`...
and separate them with commas, semicolons or tabs; a manifest is read as it comes, and a
row that cannot be used becomes a rejection with its line number, never a crash.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from radfed.data.labels import LabelLookup
from radfed.data.problems import folder_error

MANIFEST_NAME = "labels.csv"
# A row names one file (or a folder: every DICOM file below it, one labelled unit), one
# image by SOPInstanceUID, or a whole study or series by its UID (radfed.data.sources).
KEY_COLUMNS = ("file", "sop_instance_uid", "study_instance_uid", "series_instance_uid")
# Header spellings PACS and spreadsheet exports use, per canonical column (first = canonical).
COLUMN_ALIASES = {
    "file": (
        "file",
        "path",
        "filepath",
        "file_path",
        "filename",
        "file_name",
        "image",
        "image_path",
        "dicom",
        "dicom_path",
        "dicom_file",
    ),
    "sop_instance_uid": ("sop_instance_uid", "sopinstanceuid", "sop_uid", "instance_uid"),
    "study_instance_uid": ("study_instance_uid", "studyinstanceuid", "study_uid", "studyuid"),
    "series_instance_uid": ("series_instance_uid", "seriesinstanceuid", "series_uid", "seriesuid"),
    "label": ("label", "labels", "class", "finding", "target", "diagnosis", "category"),
}


@dataclass(frozen=True)
class ManifestRow:
    """One usable manifest row: where it is, what it names, its label index."""

    where: str
    key: str
    label: int


def read_manifest_lines(manifest: Path, data_dir: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, cells) of every non-blank CSV record, header included."""
    if not manifest.is_file():
        raise folder_error(
            data_dir,
            f"manifest {manifest} not found; add a CSV with header "
            '"file,label" or "sop_instance_uid,label" (see client-node demo-data)',
        )
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, dialect=_sniff_dialect(handle.read(8192)))
            handle.seek(0)
            if handle.read(1) != "\ufeff":  # utf-8-sig drops a BOM only on the first read
                handle.seek(0)
            records = [(reader.line_num, cells) for cells in reader]
    except UnicodeDecodeError:
        raise folder_error(data_dir, f"{manifest.name} is not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise folder_error(data_dir, f"{manifest.name} is not valid CSV ({exc}); fix the quoting") from None
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


def _names(header: list[str]) -> list[str]:
    """Header cells compared as people write them: 'File Path', 'file-path', 'FILE_PATH'."""
    return ["_".join(cell.strip().lower().replace("-", " ").split()) for cell in header]


def _named(names: list[str], given: str, option: str, manifest: Path, data_dir: Path) -> int:
    """Index of the column a clinic named (--file-column / --label-column), else one line."""
    wanted = _names([given])[0]
    if wanted not in names:
        shown = ", ".join(repr(n[:40]) for n in names[:10])
        raise folder_error(
            data_dir, f"{manifest.name} has no column {given!r} (its columns: {shown}); pass {option} with one of them"
        )
    return names.index(wanted)


def header_columns(
    header: list[str], manifest: Path, data_dir: Path, file_column: str | None = None, label_column: str | None = None
) -> tuple[str, int, int]:
    """(key kind, key column index, label column index) from the header row; the usual
    spellings are recognised (COLUMN_ALIASES: path, filename, class, target...), and a
    clinic's own column names (`file_column`, `label_column`) win over them."""
    names = _names(header)
    try:
        found = {
            kind: _column(names, kind)
            for kind in (*KEY_COLUMNS, "label")
            if not (kind == "label" and label_column) and not (kind in KEY_COLUMNS and file_column)
        }
    except ValueError as err:
        raise folder_error(
            data_dir,
            f"{manifest.name} header has several columns of one meaning ({err}); "
            "name the one to use with --file-column / --label-column",
        ) from None
    if label_column:
        found["label"] = _named(names, label_column, "--label-column", manifest, data_dir)
    if file_column:
        index = _named(names, file_column, "--file-column", manifest, data_dir)
        uid = names[index] in COLUMN_ALIASES["sop_instance_uid"]
        found["sop_instance_uid" if uid else "file"] = index
    kind = next((k for k in KEY_COLUMNS if found.get(k) is not None), None)
    if kind is None or found["label"] is None:
        shown = ", ".join(repr(n[:40]) for n in names[:10])
        raise folder_error(
            data_dir,
            f"{manifest.name} header has columns {shown}; it needs a label column "
            '("label", "class", ...) and a file column ("file", "path", ...) or '
            '"sop_instance_uid"; or name them with --file-column and --label-column',
        )
    return kind, found[kind], found["label"]


def _records(manifest: Path, data_dir: Path) -> list[tuple[int, list[str]]]:
    records = read_manifest_lines(manifest, data_dir)
    if not records:
        raise folder_error(data_dir, f'{manifest.name} is empty; add rows "file,label" (see client-node demo-data)')
    return records


def manifest_values(
    manifest: Path, data_dir: Path, file_column: str | None = None, label_column: str | None = None
) -> list[str]:
    """The label column's values, row by row (to make task labels from when none are given)."""
    records = _records(manifest, data_dir)
    _, _, label_col = header_columns(records[0][1], manifest, data_dir, file_column, label_column)
    return [cell(cells, label_col) for _, cells in records[1:]]


def parse_manifest(
    manifest: Path,
    data_dir: Path,
    lookup: LabelLookup,
    file_column: str | None = None,
    label_column: str | None = None,
) -> tuple[str, list[ManifestRow], list[tuple[str, str]]]:
    """Parse the manifest into usable rows and rejected rows (label, empty key, duplicates)."""
    records = _records(manifest, data_dir)
    kind, key_col, label_col = header_columns(records[0][1], manifest, data_dir, file_column, label_column)
    if len(records) == 1:
        raise folder_error(
            data_dir,
            f'{manifest.name} has a header but no rows; add one row per image "file,label" (see client-node demo-data)',
        )
    rows: list[ManifestRow] = []
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line, cells in records[1:]:
        where = f"{manifest.name} line {line}"
        key = _clean_key(kind, cell(cells, key_col))
        label = lookup.index(cell(cells, label_col))
        reason = _row_problem(key, label, seen)
        if reason:
            rejected.append((where, reason))
            continue
        seen.add(key)
        rows.append(ManifestRow(where, key, label))  # type: ignore[arg-type]
    return kind, rows, rejected


def _row_problem(key: str, label: int | None, seen: set[str]) -> str:
    """Reason code for a row that cannot be used as it stands, '' when it can."""
    if not key:
        return "empty-key"
    if label is None:
        return "unknown-label"
    return "duplicate-row" if key in seen else ""


def cell(cells: list[str], index: int) -> str:
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
