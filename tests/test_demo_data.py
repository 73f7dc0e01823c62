"""radfed.demo_data: the fake federation decodes, loads, differs by site, carries
fake PHI only inside the files, and the opacity is actually learnable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from radfed.data import load_clinic
from radfed.demo_data import (
    LABELS,
    PHI_FIELDS,
    dicom_files,
    phi_values,
    write_clinic,
    write_federation,
)
from radfed.dicom import read_pixels

N_PATIENTS = 12


@pytest.fixture(scope="module")
def demo_federation(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_federation(tmp_path_factory.mktemp("fed"), 3, n_patients=N_PATIENTS, seed=0)


def headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_files(folder)]


@pytest.mark.e2e
def test_layout_and_manifests(demo_federation: list[Path]) -> None:
    assert [f.name for f in demo_federation] == ["clinic-1", "clinic-2", "clinic-3"]
    keys = [(f / "labels.csv").read_text().splitlines()[0] for f in demo_federation]
    assert keys == ["sop_instance_uid,label", "file,label", "sop_instance_uid,label"]
    for folder in demo_federation:
        rows = (folder / "labels.csv").read_text().splitlines()[1:]
        assert len(rows) == len(dicom_files(folder))
        assert 2 * N_PATIENTS <= len(rows) <= 4 * N_PATIENTS


@pytest.mark.e2e
def test_valid_chest_radiograph_headers(demo_federation: list[Path]) -> None:
    uids = set()
    for folder in demo_federation:
        for ds in headers(folder):
            assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.SOPClassUID.name in (
                "Digital X-Ray Image Storage - For Presentation",
                "Computed Radiography Image Storage",
            )
            assert ds.Modality in ("CR", "DX") and ds.BodyPartExamined == "CHEST"
            uids.add(ds.SOPInstanceUID)
    assert len(uids) == sum(len(dicom_files(f)) for f in demo_federation)


@pytest.mark.e2e
def test_sites_differ(demo_federation: list[Path]) -> None:
    facts = []
    for folder in demo_federation:
        ds = headers(folder)[0]
        facts.append(
            (ds.Rows, ds.Columns, ds.BitsStored, ds.PhotometricInterpretation, ds.Manufacturer, str(ds.WindowWidth))
        )
    assert len(set(facts)) == 3
    assert {f[3] for f in facts} == {"MONOCHROME1", "MONOCHROME2"}
    assert {f[2] for f in facts} == {12, 16}
    assert any(rows != cols for rows, cols, *_ in facts)
    assert all(192 <= min(r, c) and max(r, c) <= 320 for r, c, *_ in facts)
    assert len({f[4] for f in facts}) == 3


@pytest.mark.e2e
def test_every_file_decodes_to_a_chest(demo_federation: list[Path]) -> None:
    """Air is dark and the abdomen bright at every site: MONOCHROME1 came out right."""
    for folder in demo_federation:
        for path in dicom_files(folder)[::3]:
            image = read_pixels(path)
            rows, cols = image.shape
            corner = image[: rows // 10, : cols // 10].mean()  # air beside the neck
            abdomen = image[-rows // 8 :, cols // 2 - cols // 8 : cols // 2 + cols // 8].mean()
            offset = int(0.4 * cols / 2)
            # a lesion is in one only
            lung = min(image[rows // 3, cols // 2 - offset], image[rows // 3, cols // 2 + offset])
            assert corner < 0.2 and abdomen > 0.4 and lung < abdomen - 0.15, path


@pytest.mark.e2e
def test_manifests_load_with_differing_prevalence(demo_federation: list[Path]) -> None:
    prevalences = []
    for folder in demo_federation:
        clinic = load_clinic(folder, LABELS, 32)
        summary = clinic.summary()
        assert clinic.rejected == []
        patients = {label: summary["train"]["patients"][label] + summary["val"]["patients"][label] for label in LABELS}
        assert sum(patients.values()) == N_PATIENTS
        prevalences.append(patients["opacity"] / N_PATIENTS)
    assert prevalences == pytest.approx([0.33, 0.5, 0.67], abs=0.02)


@pytest.mark.e2e
def test_fake_phi_is_in_the_files_only(demo_federation: list[Path]) -> None:
    for folder in demo_federation:
        values = phi_values(folder)
        ds = headers(folder)[0]
        for keyword in PHI_FIELDS:
            assert str(ds.data_element(keyword).value) in values, keyword
        assert ds.PatientSex in ("F", "M") and ds.StudyDate
        summary = json.dumps(load_clinic(folder, LABELS, 16).summary())
        paths = " ".join(str(p.relative_to(folder)) for p in folder.rglob("*"))
        manifest = (folder / "labels.csv").read_text()
        for value in values:
            assert value not in summary and value not in paths and value not in manifest, value


@pytest.mark.e2e
def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    def digest(folder: Path) -> str:
        files = sorted(folder.rglob("*"))
        parts = (p.relative_to(folder).as_posix().encode() + p.read_bytes() for p in files if p.is_file())
        return hashlib.sha256(b"".join(parts)).hexdigest()

    a = write_clinic(tmp_path / "a", clinic_index=3, n_patients=3, seed=7)
    b = write_clinic(tmp_path / "b", clinic_index=3, n_patients=3, seed=7)
    write_clinic(tmp_path / "c", clinic_index=3, n_patients=3, seed=8)
    assert a == b and digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert a["patients"] == 3 and a["images"] == sum(a["images_per_label"].values())
    assert "PatientID" not in json.dumps(a) and "MRN" not in json.dumps(a)


@pytest.mark.e2e
def test_existing_clinics_are_not_rewritten(demo_federation: list[Path]) -> None:
    before = {p: p.stat().st_mtime_ns for f in demo_federation for p in f.rglob("*")}
    again = write_federation(demo_federation[0].parent, 3, n_patients=N_PATIENTS, seed=0)
    assert again == demo_federation
    assert {p: p.stat().st_mtime_ns for f in demo_federation for p in f.rglob("*")} == before


@pytest.mark.e2e
def test_opacity_is_learnable(tmp_path: Path) -> None:
    """Logistic regression on 32x32 pixels already separates the classes well."""
    write_clinic(tmp_path, clinic_index=0, n_patients=40, prevalence=0.5, seed=0)
    clinic = load_clinic(tmp_path, LABELS, 32, val_fraction=0.3)
    model = LogisticRegression(C=1.0, max_iter=3000)
    model.fit(clinic.train.images.flatten(1).numpy(), clinic.train.labels.numpy())
    scores = model.predict_proba(clinic.val.images.flatten(1).numpy())[:, 1]
    assert roc_auc_score(clinic.val.labels.numpy(), scores) > 0.75


def test_lesion_is_a_round_bright_blob() -> None:
    """The lesion raises density in a disc of the requested radius and not beyond."""
    from radfed.demo_data import _anatomy, render_chest

    anatomy = _anatomy(np.random.default_rng(1))
    lesion = {"u": -anatomy["lung_x"], "v": anatomy["lung_y"] - 0.05, "radius": 0.1, "amplitude": 0.3}
    plain = render_chest(np.random.default_rng(2), (200, 200), anatomy, None)
    sick = render_chest(np.random.default_rng(2), (200, 200), anatomy, lesion)
    diff = sick - plain
    centre = (int((lesion["v"] + 1) * 100), int((lesion["u"] + 1) * 100))
    assert diff[centre] > 0.2
    assert diff[centre[0], centre[1] + 30] < 0.02  # 1.5 radii away: untouched
    assert np.count_nonzero(diff > 0.15) == pytest.approx(np.pi * 20**2, rel=0.35)
