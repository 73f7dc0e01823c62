"""Manifests as PACS teams export them: other column spellings, delimiters and a BOM."""

from __future__ import annotations

import csv

import pytest

from radfed.data import DataError, load_clinic
from radfed.demo_data import write_clinic


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clinic")
    write_clinic(folder, clinic_index=2, n_patients=6, prevalence=0.5, seed=0)
    with (folder / "labels.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    return folder, rows


def _rewrite(folder, rows, header, delimiter=",", bom=False):
    text = "\r\n".join(delimiter.join(r) for r in [header, *rows[1:]]) + "\r\n"
    (folder / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


@pytest.mark.parametrize("header, delimiter, bom", [
    (["path", "label"], ",", False),
    (["File Name", "Class"], ";", True),
    (["image", "target"], "\t", False),
])
def test_usual_spellings_delimiters_and_bom_load_the_same_rows(clinic, header, delimiter, bom):
    folder, rows = clinic
    try:
        _rewrite(folder, rows, ["file", "label"])
        want = load_clinic(folder, ("normal", "opacity"), 32)
        _rewrite(folder, rows, header, delimiter, bom)
        got = load_clinic(folder, ("normal", "opacity"), 32)
    finally:
        _rewrite(folder, rows, ["file", "label"])
    assert len(got.train) + len(got.val) == len(want.train) + len(want.val) > 0
    assert got.train.labels.tolist() == want.train.labels.tolist()


def test_two_columns_of_one_meaning_are_refused_in_one_line(clinic):
    folder, rows = clinic
    try:
        _rewrite(folder, [r + [r[1]] for r in rows], ["path", "class", "target"])
        with pytest.raises(DataError) as err:
            load_clinic(folder, ("normal", "opacity"), 32)
    finally:
        _rewrite(folder, rows, ["file", "label"])
    message = str(err.value)
    assert "\n" not in message and "'class', 'target'" in message and 'rename' in message
