"""radfed.pacs objects: the heat-map Secondary Capture and the finding's Structured Report.

Both are checked by an independent validator, dicom3tools' `dciodvfy` (0 errors; warnings
are allowed, e.g. for a source's own dubious values, which we copy faithfully), for DX
sources (radfed's demo clinics), a CT slice and an MR image (pydicom's shipped files), and
by their content: same patient and study as the source, references to it, the pixels, the
probability and the finding in the content tree.

dciodvfy comes from the Debian package dicom3tools: its tests are skipped when it is
missing, unless RADFED_REQUIRE_DICOM3TOOLS=1 makes that a failure (CI sets it).
dciodvfy is run on our objects only: the DX sources may have errors of their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radfed.demo_data import dicom_files, write_clinic
from radfed.pacs import (
    PRIVATE_SCHEME,
    patient_orientation,
    read_report,
    secondary_capture,
    structured_report,
)

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DIGEST = "sha256:" + "0123456789abcdef" * 4
KINDS = ("dx", "ct", "mr")


# ----------------------------------------------------------------------------- sources


@pytest.fixture(scope="module")
def dx_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A one-patient demo clinic of DX images (clinic 1's profile is DX, explicit VR)."""
    folder = tmp_path_factory.mktemp("dx-clinic")
    write_clinic(folder, clinic_index=1, n_patients=1, seed=3)
    files = dicom_files(folder)
    assert pydicom.dcmread(files[0], stop_before_pixels=True).Modality == "DX"
    return files


@pytest.fixture
def sources(dx_files: list[Path]) -> dict[str, Dataset]:
    """One source image of each kind, read fresh for every test."""
    return {
        "dx": pydicom.dcmread(dx_files[0]),
        "ct": pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm"),
        "mr": pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm"),
    }


def overlay(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """A random RGB heat map."""
    return np.random.default_rng(seed).integers(0, 256, (rows, columns, 3), dtype=np.uint8)


def report(source: Dataset, sc: Dataset | None = None, **changes) -> Dataset:
    arguments = {
        "finding": "opacity",
        "probability": 0.8125,
        "threshold": 0.5,
        "model_name": "resnet18-chest",
        "model_digest": DIGEST,
        "model_version": "round 12",
        "sc": sc,
    }
    arguments.update(changes)
    return structured_report(source, **arguments)


# ----------------------------------------------------------------------------- dciodvfy


def dciodvfy_errors(ds: Dataset, folder: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dciodvfy reports for `ds` written as a DICOM file."""
    binary = shutil.which("dciodvfy")
    if binary is None:
        reason = "dciodvfy not installed (Debian package dicom3tools)"
        if os.environ.get("RADFED_REQUIRE_DICOM3TOOLS") == "1":
            pytest.fail(reason + " but RADFED_REQUIRE_DICOM3TOOLS=1")
        pytest.skip(reason)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    done = subprocess.run([binary, str(path)], check=False, capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


@pytest.mark.e2e
@pytest.mark.parametrize("kind", KINDS)
def test_secondary_capture_passes_dciodvfy(kind: str, sources: dict[str, Dataset], tmp_path: Path) -> None:
    sc = secondary_capture(sources[kind], overlay(96, 80), model_name="resnet18-chest")
    errors, _ = dciodvfy_errors(sc, tmp_path)
    assert errors == []


@pytest.mark.e2e
@pytest.mark.parametrize("finding", ["opacity", "pleural effusion"])  # standard code, private code
@pytest.mark.parametrize("kind", KINDS)
def test_structured_report_passes_dciodvfy(
    kind: str, finding: str, sources: dict[str, Dataset], tmp_path: Path
) -> None:
    sc = secondary_capture(sources[kind], overlay(64, 64))
    sr = report(sources[kind], sc, finding=finding)
    errors, warnings = dciodvfy_errors(sr, tmp_path)
    assert errors == []
    if finding == "opacity":  # only a private code earns the "unknown designator" warning
        assert not [w for w in warnings if PRIVATE_SCHEME in w]


@pytest.mark.e2e
def test_non_ascii_patient_name_keeps_its_character_set(sources: dict[str, Dataset], tmp_path: Path) -> None:
    source = sources["dx"]
    source.SpecificCharacterSet = "ISO_IR 192"
    source.PatientName = "Müller-Śliwińska^Zoë"
    for made in (secondary_capture(source, overlay(32, 32)), report(source)):
        assert made.SpecificCharacterSet == "ISO_IR 192"
        errors, _ = dciodvfy_errors(made, tmp_path)
        assert errors == []
        back = pydicom.dcmread(tmp_path / f"{made.SOPInstanceUID}.dcm")
        assert str(back.PatientName) == "Müller-Śliwińska^Zoë"


# ----------------------------------------------------------------------------- SC content


PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


@pytest.mark.parametrize("kind", KINDS)
def test_secondary_capture_content(kind: str, sources: dict[str, Dataset], tmp_path: Path) -> None:
    source = sources[kind]
    pixels = overlay(source.Rows // 2, source.Columns // 2, seed=7)
    sc = secondary_capture(source, pixels, series_number=42, series_description="heat map test")
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)

    assert back.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    for keyword in PATIENT_STUDY:
        assert back.get(keyword) == source.get(keyword), keyword
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    assert back.SOPInstanceUID != source.SOPInstanceUID
    assert (back.SeriesNumber, back.SeriesDescription, back.Modality) == (42, "heat map test", "OT")
    assert back.PhotometricInterpretation == "RGB" and back.SamplesPerPixel == 3 and back.BitsAllocated == 8
    assert np.array_equal(back.pixel_array, pixels)
    reference = back.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert list(back.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert back.BurnedInAnnotation == "NO"
    assert back.Manufacturer == "radfed"
    if kind == "dx":  # projection radiograph: letters and body part copied, no calibrated spacing
        assert list(back.PatientOrientation) == list(source.PatientOrientation)
        assert back.BodyPartExamined == "CHEST" and "PixelSpacing" not in back
    else:  # CT/MR: axial, letters from Image Orientation (Patient), spacing scaled to the overlay
        assert list(back.PatientOrientation) == ["L", "P"]
        assert [float(v) for v in back.PixelSpacing] == pytest.approx([2 * float(v) for v in source.PixelSpacing])


def test_overlays_of_one_study_share_a_series(sources: dict[str, Dataset], dx_files: list[Path]) -> None:
    series = generate_uid()
    first = secondary_capture(sources["dx"], overlay(8, 8), series_instance_uid=series, instance_number=1)
    second_source = pydicom.dcmread(dx_files[1])
    second = secondary_capture(second_source, overlay(8, 8), series_instance_uid=series, instance_number=2)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID == series
    assert (first.InstanceNumber, second.InstanceNumber) == (1, 2)
    assert first.SOPInstanceUID != second.SOPInstanceUID


def test_orientation_letters() -> None:
    ds = Dataset()
    assert patient_orientation(ds) is None
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    assert patient_orientation(ds) == ("P", "F")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    assert patient_orientation(ds) == ("L", "F")
    ds.ImageOrientationPatient = [0.9, -0.3, 0, 0.3, 0.9, 0.1]  # oblique axial: nearest letters
    assert patient_orientation(ds) == ("L", "P")
    ds.PatientOrientation = ["A", "FR"]  # a projection's own letters win (first letter each)
    assert patient_orientation(ds) == ("A", "F")


def test_source_without_orientation_gets_an_empty_one(sources: dict[str, Dataset], tmp_path: Path) -> None:
    source = sources["ct"]
    del source.ImageOrientationPatient
    sc = secondary_capture(source, overlay(16, 16))
    assert sc.PatientOrientation == ""
    errors, _ = dciodvfy_errors(sc, tmp_path)
    assert errors == []


def test_source_burned_in_annotation_carries_over(sources: dict[str, Dataset]) -> None:
    source = sources["ct"]
    source.BurnedInAnnotation = "YES"
    assert secondary_capture(source, overlay(8, 8)).BurnedInAnnotation == "YES"


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((8, 8), np.uint8), "H x W x 3"),
        (np.zeros((8, 8, 4), np.uint8), "H x W x 3"),
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((0, 8, 3), np.uint8), "H x W x 3"),
    ],
)
def test_bad_overlay_is_refused_in_one_line(bad: np.ndarray, words: str, sources: dict[str, Dataset]) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        secondary_capture(sources["dx"], bad)
    assert "\n" not in str(caught.value) and str(sources["dx"].PatientName) not in str(caught.value)


# ----------------------------------------------------------------------------- awkward sources


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("PatientSex", "X"),  # not an enumerated value: highdicom alone refuses it
        ("PatientBirthDate", "1955-02-30"),  # not a DA: highdicom alone quotes it in its error
        ("PatientName", "Vantongeren"),  # one component: highdicom alone warns, quoting the name
        ("PatientID", None),
        ("PatientSex", None),
        ("StudyID", None),
        ("StudyDate", None),
        ("AccessionNumber", None),  # Type 2 but missing: highdicom's SR alone raises AttributeError
    ],
)
def test_awkward_source_headers_are_kept_as_they_are(
    keyword: str, value: str | None, sources: dict[str, Dataset], tmp_path: Path
) -> None:
    source = sources["ct"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if value is None:
            delattr(source, keyword)
        else:
            setattr(source, keyword, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may warn: warnings can quote PHI
        sc = secondary_capture(source, overlay(16, 16))
        sr = report(source, sc)
    for made in (sc, sr):
        kept = made[keyword].value  # present: Type 2
        assert (str(kept) if kept else "") == (value or "")  # the PACS matches on the source's values
        if value is None:  # a missing Type 2 attribute becomes an empty one: no new error
            errors, _ = dciodvfy_errors(made, tmp_path)
            assert errors == []
    assert keyword in source or value is None  # the source itself is untouched
    assert read_report(sr).probability == 0.8125


def test_source_without_uids_is_refused_naming_no_value(sources: dict[str, Dataset]) -> None:
    source = sources["dx"]
    del source.StudyInstanceUID
    for build in (lambda: secondary_capture(source, overlay(8, 8)), lambda: report(source)):
        with pytest.raises(ValueError, match="lacks StudyInstanceUID") as caught:
            build()
        assert str(source.PatientName) not in str(caught.value) and str(source.PatientID) not in str(caught.value)


def test_non_images_are_refused(sources: dict[str, Dataset]) -> None:
    plan = pydicom.dcmread(PYDICOM_FILES / "rtplan.dcm")
    for build in (
        lambda: secondary_capture(plan, overlay(8, 8)),
        lambda: report(plan),
        lambda: report(sources["ct"], evidence=[plan]),
    ):
        with pytest.raises(ValueError, match="not an image"):
            build()


@pytest.mark.parametrize("kind", ["ct", "mr"])
def test_source_silent_on_laterality_and_body_part_gets_unknown_laterality(
    kind: str, sources: dict[str, Dataset], tmp_path: Path
) -> None:
    source = sources[kind]
    del source.Laterality  # now nothing says which side, nor which body part
    sc = secondary_capture(source, overlay(8, 8))
    assert sc.Laterality == ""  # Type 2C, empty: unknown (dciodvfy: a warning, not a missing-attribute error)
    errors, _ = dciodvfy_errors(sc, tmp_path)
    assert errors == []


def test_long_names_are_refused(sources: dict[str, Dataset]) -> None:
    with pytest.raises(ValueError, match="model_name must be at most 64"):
        secondary_capture(sources["ct"], overlay(8, 8), model_name="m" * 65)
    with pytest.raises(ValueError, match="series_description must be at most 64"):
        report(sources["ct"], series_description="d" * 65)


def test_source_is_not_modified(sources: dict[str, Dataset]) -> None:
    source = sources["ct"]
    source.PatientSex = "X"
    before = source.to_json_dict()
    sc = secondary_capture(source, overlay(8, 8))
    report(source, sc)
    sc.PatientName = "Changed^Later"  # the objects share no element with the source
    assert source.to_json_dict() == before


# ----------------------------------------------------------------------------- SR content


def content_items(items, found=None) -> list[Dataset]:
    """Every content item of an SR tree, depth first."""
    found = [] if found is None else found
    for item in items:
        found.append(item)
        content_items(item.get("ContentSequence", []), found)
    return found


def named(items: list[Dataset], code_value: str) -> list[Dataset]:
    return [i for i in items if "ConceptNameCodeSequence" in i and i.ConceptNameCodeSequence[0].CodeValue == code_value]


@pytest.mark.parametrize("kind", KINDS)
def test_structured_report_content(kind: str, sources: dict[str, Dataset], tmp_path: Path) -> None:
    source = sources[kind]
    sc = secondary_capture(source, overlay(32, 32))
    sr = report(source, sc, series_number=77)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)

    assert back.SOPClassUID == pydicom.uid.ComprehensiveSRStorage and back.Modality == "SR"
    for keyword in PATIENT_STUDY:
        assert back.get(keyword) == source.get(keyword), keyword
    assert back.SeriesInstanceUID not in (source.SeriesInstanceUID, sc.SeriesInstanceUID)
    assert back.SeriesNumber == 77 and back.CompletionFlag == "COMPLETE"
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"

    items = content_items(back.ContentSequence)
    [probability] = named(items, "122157")
    assert probability.ValueType == "NUM"
    assert float(probability.MeasuredValueSequence[0].NumericValue) == 0.8125
    assert probability.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "1"
    [threshold] = named(items, "122411")
    assert float(threshold.MeasuredValueSequence[0].NumericValue) == 0.5
    [finding_type] = named(items, "121071")
    assert (
        finding_type.ConceptCodeSequence[0].CodeValue,
        finding_type.ConceptCodeSequence[0].CodingSchemeDesignator,
    ) == ("112001", "DCM")
    [evaluation] = named(items, "112001")
    assert evaluation.ConceptCodeSequence[0].CodeValue == "52101004"  # Present
    assert named(items, "111001")[0].TextValue == "resnet18-chest"  # Algorithm Name
    assert named(items, "111003")[0].TextValue == DIGEST  # Algorithm Version
    assert "round 12" in named(items, "111002")[0].TextValue  # Algorithm Parameters

    # References: the source (as source of the measurement) and the SC, both as evidence.
    referenced = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ValueType == "IMAGE"}
    assert referenced == {source.SOPInstanceUID, sc.SOPInstanceUID}
    [study] = back.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == source.StudyInstanceUID
    evidence = {
        (s.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
        for s in study.ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert evidence == {(source.SeriesInstanceUID, source.SOPInstanceUID), (sc.SeriesInstanceUID, sc.SOPInstanceUID)}

    result = read_report(back)
    assert (result.finding, result.finding_code, result.probability, result.threshold, result.present) == (
        "Opacity",
        ("DCM", "112001"),
        0.8125,
        0.5,
        True,
    )
    assert (result.model_name, result.model_digest) == ("resnet18-chest", DIGEST)
    assert result.source_instance_uids == (source.SOPInstanceUID,)
    assert set(result.library_instance_uids) == {source.SOPInstanceUID, sc.SOPInstanceUID}


@pytest.mark.parametrize("probability, present", [(0.49, False), (0.5, True), (0.0, False), (1.0, True)])
def test_present_means_at_or_above_threshold(probability: float, present: bool, sources: dict[str, Dataset]) -> None:
    result = read_report(report(sources["ct"], probability=probability))
    assert result.present is present and result.probability == probability


def test_private_finding_code_is_declared(sources: dict[str, Dataset]) -> None:
    sr = report(sources["mr"], finding="Pleural Effusion")
    result = read_report(sr)
    assert result.finding_code == (PRIVATE_SCHEME, "pleural effusion") and result.finding == "Pleural Effusion"
    [scheme] = sr.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == PRIVATE_SCHEME
    assert "CodingSchemeIdentificationSequence" not in report(sources["mr"])  # standard code: nothing to declare


def test_further_evidence_of_the_study(dx_files: list[Path], tmp_path: Path) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dx_files]  # headers suffice
    source, *others = [ds for ds in headers if ds.StudyInstanceUID == headers[-1].StudyInstanceUID]
    assert others, "the demo patient's follow-up study has more than one image"
    sr = report(source, evidence=[*others, source])  # repeats are dropped
    result = read_report(sr)
    assert result.source_instance_uids == (source.SOPInstanceUID, *[ds.SOPInstanceUID for ds in others])
    errors, _ = dciodvfy_errors(sr, tmp_path)
    assert errors == []


def test_evidence_from_another_study_is_refused(sources: dict[str, Dataset]) -> None:
    other_study_sc = secondary_capture(sources["mr"], overlay(8, 8))
    with pytest.raises(ValueError, match="source's study"):
        report(sources["ct"], sc=other_study_sc)
    with pytest.raises(ValueError, match="source's study"):
        report(sources["ct"], evidence=[sources["dx"]])


def test_same_model_same_observer_device(sources: dict[str, Dataset]) -> None:
    def device_uid(sr: Dataset) -> str:
        return named(content_items(sr.ContentSequence), "121012")[0].UID  # Device Observer UID

    first, second = report(sources["dx"]), report(sources["ct"])
    other = report(sources["dx"], model_digest="sha256:" + "f" * 64)
    assert device_uid(first) == device_uid(second) != device_uid(other)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"probability": 1.5}, "probability must be a number in"),
        ({"probability": float("nan")}, "probability must be a number in"),
        ({"threshold": -0.1}, "threshold must be a number in"),
        ({"probability": "high"}, "probability must be a number in"),
        ({"model_digest": " "}, "model_digest"),
        ({"finding": "  "}, "finding"),
    ],
)
def test_bad_report_arguments_are_refused(changes: dict, words: str, sources: dict[str, Dataset]) -> None:
    with pytest.raises(ValueError, match=words):
        report(sources["dx"], **changes)


def test_read_report_refuses_other_objects(sources: dict[str, Dataset]) -> None:
    with pytest.raises(ValueError, match="not a TID 1500"):
        read_report(sources["ct"])
