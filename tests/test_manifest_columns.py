"""Manifests as PACS teams export them: other column spellings, delimiters, quoting, a BOM,
numeric labels mapped to the task's, clinic-named columns; folders with no manifest at all."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from radfed.data import DataError, DataOptions, load_clinic, preflight, task_labels
from radfed.demo_data import write_clinic

TASK = ("normal", "opacity")
NUMERIC = {"normal": "0", "opacity": "1"}


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clinic")
    write_clinic(folder, clinic_index=2, n_patients=6, prevalence=0.5, seed=0)
    with (folder / "labels.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    return folder, rows


def _rewrite(folder, rows, header, delimiter=",", bom=False, newline="\r\n", labels=None, quote=False):
    """labels.csv again, as another export would write it (csv quoting where asked or needed)."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=delimiter, lineterminator=newline, quoting=csv.QUOTE_ALL if quote else csv.QUOTE_MINIMAL
    )
    writer.writerow(header)
    for r in rows[1:]:
        writer.writerow([r[0], (labels or {}).get(r[1], r[1]), *r[2:]])
    (folder / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode())


# Six exports: header spellings, delimiters, BOM, line endings, quoting, numeric labels.
EXPORTS = [
    dict(header=["path", "label"]),
    dict(header=["File Name", "Class"], delimiter=";", bom=True),
    dict(header=["image", "target"], delimiter="\t", newline="\n"),
    dict(header=["filepath", "finding"], delimiter="|", quote=True),
    dict(header=["Image Path", "Diagnosis"], labels=NUMERIC, newline="\n"),
    dict(header=["dicom_file", "category"], delimiter=";", labels={"normal": "0.0", "opacity": "1.0"}, bom=True),
]


@pytest.mark.parametrize("export", EXPORTS, ids=lambda e: "-".join(e["header"]))
def test_usual_spellings_delimiters_and_bom_load_the_same_rows(clinic, export):
    folder, rows = clinic
    label_map = {"0": "normal", "1": "opacity"} if export.get("labels") else None
    try:
        _rewrite(folder, rows, ["file", "label"])
        want = load_clinic(folder, TASK, 32)
        _rewrite(folder, rows, **export)
        got = load_clinic(folder, TASK, 32, options=DataOptions(label_map=label_map))
    finally:
        _rewrite(folder, rows, ["file", "label"])
    assert len(got.train) + len(got.val) == len(want.train) + len(want.val) > 0 and not got.rejected
    assert got.train.labels.tolist() == want.train.labels.tolist()
    assert got.val.labels.tolist() == want.val.labels.tolist()


def test_quoted_paths_with_commas_and_clinic_named_columns(clinic, tmp_path):
    """A path holding a comma survives quoting; columns no alias knows are named by the clinic."""
    import shutil

    folder, rows = clinic
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    renamed = []
    for r in rows[1:]:
        new = r[0].replace(".dcm", ", copy 1.dcm") if r[0].endswith(".dcm") else r[0] + ", copy 1"
        (copy / r[0]).rename(copy / new)
        renamed.append([new, r[1]])
    _rewrite(copy, [rows[0], *renamed], ["DICOM location", "Dx (final)"])
    with pytest.raises(DataError) as err:
        load_clinic(copy, TASK, 32)
    assert "--file-column" in str(err.value) and "\n" not in str(err.value)
    options = DataOptions(file_column="DICOM location", label_column="dx (final)")
    got = load_clinic(copy, TASK, 32, options=options)
    assert len(got.train) + len(got.val) == len(rows) - 1 and not got.rejected
    with pytest.raises(DataError) as err:
        load_clinic(copy, TASK, 32, options=DataOptions(file_column="location"))
    assert "no column 'location'" in str(err.value) and "'dicom_location'" in str(err.value)


def test_labels_come_from_the_manifest_values_when_the_task_names_none(clinic, tmp_path):
    folder, rows = clinic
    try:
        _rewrite(folder, rows, ["path", "label"], labels=NUMERIC)
        assert task_labels(folder) == ["0", "1"]
        options = DataOptions(label_map={"1": "opacity", "0": "normal"})
        assert task_labels(folder, options=options) == ["opacity", "normal"]
        result = CliRunner().invoke(_app(), ["check-data", str(folder), "--image-size", "16"])
        assert result.exit_code == 0 and "task labels (from the data" in result.output and "0, 1" in result.output
        assert "train:" in result.output and "rejected: 0" in result.output, result.output
        with pytest.raises(DataError) as err:  # without a map, 0/1 are not the task's labels
            load_clinic(folder, TASK, 32)
        assert "unknown-label" in str(err.value)
    finally:
        _rewrite(folder, rows, ["file", "label"])


@pytest.mark.parametrize(
    "label_map, words",
    [
        ({"1": "opacity", "1.0": "normal"}, "ambiguous"),
        ({"Yes": "opacity", " yes ": "normal"}, "ambiguous"),
        ({"1": "pneumonia"}, "not one of the task's labels"),
    ],
)
def test_a_label_map_that_cannot_be_meant_is_one_line(clinic, label_map, words):
    folder, _ = clinic
    with pytest.raises(DataError) as err:
        load_clinic(folder, TASK, 32, options=DataOptions(label_map=label_map))
    assert words in str(err.value) and "\n" not in str(err.value)
    result = CliRunner().invoke(
        _app(),
        [
            "check-data",
            str(folder),
            "--task-labels",
            "normal,opacity",
            *[f"--label-map={k}={v}" for k, v in label_map.items()],
        ],
    )
    assert result.exit_code == 1 and words in result.output


def test_class_folders_are_accepted_by_start_as_by_check_data(tmp_path):
    """What check-data accepts, start accepts: folders named after the labels, or mapped."""
    import shutil

    source = tmp_path / "export"
    write_clinic(source, clinic_index=2, n_patients=6, prevalence=0.5, seed=1)
    with (source / "labels.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    by_class = tmp_path / "by-class"
    for path, label in rows:
        target = by_class / {"normal": "No Finding", "opacity": "Pneumonia"}[label] / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / path, target)
    assert "2 class folders" in preflight(by_class)
    options = DataOptions(label_map={"no finding": "normal", "pneumonia": "opacity"})
    got = load_clinic(by_class, TASK, 32, options=options)
    want = load_clinic(source, TASK, 32)
    assert sorted(got.train.labels.tolist()) == sorted(want.train.labels.tolist()) and not got.rejected
    assert sorted(got.val.labels.tolist()) == sorted(want.val.labels.tolist())
    assert task_labels(by_class, options=DataOptions(label_source="folders")) == ["No Finding", "Pneumonia"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted(source.rglob("*.dcm"))):
        shutil.copy(path, flat / f"{i}.dcm")
    with pytest.raises(DataError) as err:
        preflight(flat)  # files, no manifest, no class folders
    assert "no labels.csv and no class folders" in str(err.value)


def test_a_folder_without_labels_is_audited_exit_0(clinic, tmp_path):
    import shutil

    folder, rows = clinic
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "labels.csv").unlink()
    (bare / "README.txt").write_text("viewer notes")  # with findings.json: 2 files that are not images
    (bare / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    result = CliRunner().invoke(_app(), ["check-data", str(bare), "--image-size", "16", "--json"])
    assert result.exit_code == 0, result.output
    import json

    card = json.loads(result.output[result.output.index("{") :])
    summary = card["summary"]
    assert summary["images"] == len(rows) - 1 and summary["not_images"] == 2 and summary["labels"] == []
    assert summary["rejected_total"] == 1 and card["rejected"][0]["where"] == "broken.dcm"
    assert summary["modalities"] and summary["transfer_syntaxes"] and summary["patients"] == 6
    assert "labels are missing" in card["note"]
    text = CliRunner().invoke(_app(), ["check-data", str(bare), "--image-size", "16"])
    assert text.exit_code == 0 and "note: labels are missing" in text.output


def _app():
    from client_node.cli import app

    return app


def test_two_columns_of_one_meaning_are_refused_in_one_line(clinic):
    folder, rows = clinic
    try:
        _rewrite(folder, [r + [r[1]] for r in rows], ["path", "class", "target"])
        with pytest.raises(DataError) as err:
            load_clinic(folder, ("normal", "opacity"), 32)
    finally:
        _rewrite(folder, rows, ["file", "label"])
    message = str(err.value)
    assert "\n" not in message and "'class', 'target'" in message and "--label-column" in message
