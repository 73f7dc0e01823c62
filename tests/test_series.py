"""Studies and series: labels for a whole study, series or folder of single-slice files,
slices picked by policy in anatomical order, 2.5D stacks, and figures per labelled unit."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from radfed import dicom
from radfed.data import DataError, DataOptions, format_card, load_clinic
from radfed.data.headers import ImageFacts
from radfed.data.slices import assemble, pick_indices, plan_slices, slice_order
from radfed.reply import from_logits
from radfed.spec import SpecError, data_options, from_mapping
from radfed.unit_scores import unit_outputs
from tests.ct_studies import LABELS, SPACING, corner_hu, write_ct_studies

WIDE = (0.0, 4000.0)  # a window that keeps the corner pixels' HU (slice index) apart


def _facts(
    relpath: str,
    position: str = "",
    number: str = "",
    unit: str = "u",
    series: str = "s",
    patient: str = "p",
    label: int = 1,
) -> ImageFacts:
    return ImageFacts(
        relpath=relpath,
        label=label,
        patient=patient,
        uid=relpath,
        modality="CT",
        manufacturer="x",
        series_key=series,
        slice_position=position,
        instance_number=number,
        unit=unit,
    )


# ----------------------------------------------------------------------------- header facts


def test_slice_position_is_the_position_along_the_normal_of_any_orientation():
    ds = Dataset()
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(0.3), math.sin(0.3)])  # tilted gantry
    ds.ImageOrientationPatient = [*row, *col]
    ds.ImagePositionPatient = [10.0, -20.0, 30.0]
    assert dicom.slice_position(ds) == pytest.approx(np.array([10.0, -20.0, 30.0]) @ np.cross(row, col))
    ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]  # not direction cosines
    assert dicom.slice_position(ds) is None
    del ds.ImagePositionPatient
    assert dicom.slice_position(Dataset()) is None and dicom.slice_position(ds) is None


def test_header_facts_carry_study_and_series_keys_never_the_uids(tmp_path):
    studies = write_ct_studies(tmp_path, 1, studies=(1, 1), slices=(3, 3))
    series, files = next(iter(studies[0].series.items()))
    facts = dicom.header_facts(files[1])
    assert facts["study_key"] == dicom.identifier_key("study-instance", studies[0].uid)
    assert facts["series_key"] == dicom.identifier_key("series-instance", series)
    assert facts["instance_number"] == "2" and float(facts["slice_position"]) == pytest.approx(-50 + SPACING)
    assert studies[0].uid not in json.dumps(facts) and series not in json.dumps(facts)


# ----------------------------------------------------------------------------- order and policies


def test_slices_are_ordered_by_position_then_instance_number_then_name():
    shuffled = [_facts("b", "7.5", "1"), _facts("a", "-2.5", "3"), _facts("c", "2.5", "2")]
    assert [f.relpath for f in slice_order(shuffled)] == ["a", "c", "b"]
    no_position = [replace(shuffled[0], slice_position=""), *shuffled[1:]]
    assert [f.relpath for f in slice_order(no_position)] == ["b", "c", "a"]  # by InstanceNumber
    neither = [replace(f, instance_number="") for f in no_position]
    assert [f.relpath for f in slice_order(neither)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "n, policy, want",
    [
        (10, "middle", [5]),
        (1, "middle", [0]),
        (10, "even:3", [1, 5, 8]),
        (10, "even:1", [5]),
        (4, "even:6", [0, 1, 2, 3]),
        (5, "all", [0, 1, 2, 3, 4]),
        (10, "EVEN:2", [2, 7]),
    ],
)
def test_slice_policies_pick_evenly_and_symmetrically(n, policy, want):
    assert pick_indices(n, policy) == want


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(slice_policy="even:0"), "slice_policy must be one of"),
        (dict(slice_policy="stack:3"), "even:K"),
        (dict(slice_policy="some"), "slice_policy"),
        (dict(slice_stack=2), "slice_stack must be 1 or 3"),
        (dict(slice_stack=True), "slice_stack"),
    ],
)
def test_bad_slice_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        DataOptions(**options)


def test_the_spec_data_table_sets_the_slice_options():
    spec = from_mapping({"name": "ct", "data": {"slice_policy": "even:8", "slice_stack": 3}}, check_files=False)
    options = data_options(spec.data)
    assert (options.slice_policy, options.slice_stack) == ("even:8", 3)
    with pytest.raises(SpecError, match="key 'data': slice_stack"):
        from_mapping({"name": "ct", "data": {"slice_stack": 5}}, check_files=False)


def test_stacks_take_the_neighbours_in_slice_order_and_replace_a_broken_one():
    series = [_facts(f"f{i}", str(10.0 - i)) for i in range(5)]  # f4 is the lowest slice
    single = _facts("z", unit="")
    plan, rejected = plan_slices([*series, single], DataOptions(slice_policy="even:2", slice_stack=3))
    assert not rejected
    names = sorted((plan.files[c].relpath, plan.files[b].relpath, plan.files[a].relpath) for c, b, a in plan.picks)
    # ordered f4 f3 f2 f1 f0: picks 1 and 3 (f3, f1) with their neighbours; z is its own stack
    assert names == [("f1", "f2", "f0"), ("f3", "f4", "f2"), ("z", "z", "z")]
    reasons = ["" if f.relpath != "f2" else "corrupt" for f in plan.files]
    samples = assemble(plan, reasons, [1] * len(plan.files), 3)
    rows = {s.facts.relpath: s.rows for s in samples}
    index = {f.relpath: i for i, f in enumerate(plan.files)}
    assert rows["f3"] == (index["f4"], index["f3"], index["f3"])  # f2 broken: the slice itself
    assert rows["z"] == (index["z"],) * 3
    plan, _ = plan_slices(series, DataOptions())
    assert [f.relpath for f in plan.files] == ["f2"]  # only what is used is decoded


def test_a_unit_with_two_patients_is_rejected_whole():
    images = [_facts("a", "1"), _facts("b", "2", patient="q"), _facts("c", "1", unit="v")]
    plan, rejected = plan_slices(images, DataOptions())
    assert rejected == [("a", "unit-spans-patients"), ("b", "unit-spans-patients")]
    assert [f.relpath for f in plan.files] == ["c"]


# ----------------------------------------------------------------------------- figures per unit


def test_a_units_score_is_the_mean_of_its_slices_log_odds():
    logits = np.array([[0.0, 2.0], [0.0, -1.0], [1.0, 4.0], [3.0, 0.0], [0.0, 0.5]])
    labels = np.array([1, 1, 1, 0, 0])
    units = np.array([7, 7, 7, 2, 9])
    patients = np.array([0, 0, 0, 1, 1])
    unit_logits, unit_labels, unit_patients = unit_outputs(logits, labels, patients, units)
    odds = unit_logits[:, 1] - unit_logits[:, 0]
    np.testing.assert_allclose(odds, [(2 - 1 + 3) / 3, -3.0, 0.5])
    assert unit_labels.tolist() == [1, 0, 0] and unit_patients.tolist() == [0, 1, 1]
    figures = from_logits(unit_logits, unit_labels, unit_patients)
    assert figures.examples == 3 and figures.quality.patients == 2 and figures.auroc == 1.0
    same = unit_outputs(logits, labels, patients, np.arange(5))  # each its own unit: unchanged
    assert same[0] is not None and np.array_equal(same[0], logits)
    with pytest.raises(ValueError, match="different labels"):
        unit_outputs(logits, np.array([1, 0, 1, 0, 0]), patients, units)


# ----------------------------------------------------------------------------- loading studies


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    return folder, write_ct_studies(folder, 6, seed=1)


def _load(folder: Path, **options) -> object:
    return load_clinic(folder, LABELS, 32, val_fraction=0.34, seed=0, options=DataOptions(window=WIDE, **options))


def test_a_study_manifest_labels_every_slice_and_counts_studies(ct_set):
    folder, studies = ct_set
    data = _load(folder)
    n_series = sum(len(s.series) for s in studies)
    assert len(data.train) + len(data.val) == n_series  # "middle": one slice per series
    assert data.train.num_units + data.val.num_units == len(studies)
    assert data.unit == "study" and not data.rejected
    summary = data.summary()
    assert summary["val"]["total_units"] == data.val.num_units < summary["val"]["total_images"]
    text = format_card(data.card())
    assert f"val: {len(data.val)} images in {data.val.num_units} studies" in text
    assert data.train.num_patients + data.val.num_patients == 6  # the patient split holds
    assert data.train.num_units and data.val.num_units


@pytest.mark.e2e
def test_all_slices_in_order_and_2_5d_neighbours(ct_set):
    folder, studies = ct_set
    every = _load(folder, slice_policy="all")
    assert len(every.train) + len(every.val) == sum(len(f) for s in studies for f in s.series.values())
    stacked = _load(folder, slice_policy="even:3", slice_stack=3)
    images = np.concatenate([stacked.train.images.numpy(), stacked.val.images.numpy()])
    assert images.shape[1:] == (3, 32, 32) and len(images) == 3 * sum(len(s.series) for s in studies)
    window_low = WIDE[0] - WIDE[1] / 2
    index = np.rint((images[:, :, 0, 0] * WIDE[1] + window_low + 900) / 10).astype(int)  # corner_hu inverted
    assert corner_hu(0) == -900
    middle = index[:, 1]
    assert np.all((index[:, 0] == np.maximum(middle - 1, 0)) & (index[:, 2] >= middle))
    assert np.all((index[:, 2] == middle + 1) | (index[:, 2] == middle))
    assert stacked.train.num_units + stacked.val.num_units == len(studies)


@pytest.mark.e2e
def test_series_manifest_and_folder_per_study(tmp_path):
    studies = write_ct_studies(tmp_path / "series", 3, seed=2, manifest="series_instance_uid")
    data = _load(tmp_path / "series")
    assert data.unit == "series" and data.train.num_units + data.val.num_units == sum(len(s.series) for s in studies)
    studies = write_ct_studies(tmp_path / "folders", 3, seed=3, manifest="folder")
    (tmp_path / "folders" / next(iter(studies[0].series.values()))[0].parent / "README.txt").write_text("viewer")
    data = _load(tmp_path / "folders", slice_policy="even:2")
    assert data.unit == "folder" and data.train.num_units + data.val.num_units == len(studies)
    assert len(data.train) + len(data.val) == 2 * 2 * len(studies) and not data.rejected


@pytest.mark.e2e
def test_unknown_and_foreign_studies_are_rejected_by_line(ct_set, tmp_path):
    folder, studies = ct_set
    manifest = tmp_path / "labels.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(["Study Instance UID", "Class"])
        writer.writerow([studies[0].uid, studies[0].label])
        writer.writerow(["1.2.3.4.5.6.7", "normal"])
    data = load_clinic(folder, LABELS, 32, manifest=manifest, val_fraction=0.0)
    assert data.rejected == [("labels.csv line 3", "unknown-study-instance-uid")]
    assert len(data.train) == len(studies[0].series) and data.train.num_units == 1
    manifest.write_text("study_uid,label\n1.2.3,normal\n")
    with pytest.raises(DataError, match="unknown-study-instance-uid"):
        load_clinic(folder, LABELS, 32, manifest=manifest)


@pytest.mark.e2e
def test_no_uid_reaches_the_cache_the_card_or_a_log(ct_set, tmp_path, caplog):
    folder, studies = ct_set
    caplog.set_level(logging.DEBUG)
    data = load_clinic(
        folder, LABELS, 32, cache_dir=tmp_path / "cache", options=DataOptions(slice_policy="even:2", slice_stack=3)
    )
    again = load_clinic(
        folder, LABELS, 32, cache_dir=tmp_path / "cache", options=DataOptions(slice_policy="even:2", slice_stack=3)
    )
    assert np.array_equal(again.val.units.numpy(), data.val.units.numpy())
    secrets = {s.uid for s in studies} | {u for s in studies for u in s.series} | {s.patient for s in studies}
    texts = [p.read_bytes().decode("latin-1") for p in (tmp_path / "cache").iterdir()]
    texts += [caplog.text, json.dumps(data.card()), format_card(data.card())]
    assert texts and not [s for s in secrets for t in texts if s in t]
