"""No identifying value reaches a log line, a warning or an exception text from
radfed.dicom / radfed.data, even for files full of PHI, broken files, and a file whose
path contains the patient's name.

The rule (documented in radfed.data): DicomError/DataError texts and log records never
include values of identifying tags nor any path below the data folder.  Relative paths
appear only in ClinicData.rejected / DataError.rejected, i.e. the local data card.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radfed import dicom
from radfed.data import DataError, DataOptions, load_clinic

NAME = "QUILLFEATHER^Rosalind"
PHI = {
    "PatientName": NAME,
    "PatientID": "MRN-PRIV-55501",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC-PRIV-9931",
    "InstitutionName": "Marrowfield Secret Hospital",
    "ReferringPhysicianName": "SECRETDOC^Otto",
    "OtherPatientIDs": "OTHER-PRIV-1",
}
NEEDLES = ("QUILLFEATHER", "Rosalind", "MRN-PRIV", "19610203", "ACC-PRIV", "Marrowfield", "SECRETDOC", "OTHER-PRIV")
LABELS = ("normal", "opacity")


def phi_image(path: Path, patient: str = PHI["PatientID"], rows: int = 32, **extra: object) -> Path:
    """A CT slice carrying every identifying tag we know of (plus extra overrides)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.PatientID = patient
    ds.Modality, ds.StudyDescription = "CT", f"CT chest for {NAME}"
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.random.default_rng(rows).integers(0, 4096, (rows, rows), dtype=np.uint16).tobytes()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    return path


def bad_files(root: Path) -> list[str]:
    """Every kind of broken or non-image file, each full of PHI; names under root (relative)."""
    good = phi_image(root / "QUILLFEATHER_Rosalind" / "full.dcm", rows=64).read_bytes()
    made = {
        "QUILLFEATHER_Rosalind/cut.dcm": good[: len(good) // 2],
        "QUILLFEATHER_Rosalind/tail.dcm": good[:400] + b"\xff" * 200,
        "MRN-PRIV-55501/empty.dcm": b"",
        "MRN-PRIV-55501/notes.dcm": f"Report for {NAME}".encode(),
    }
    for rel, blob in made.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    phi_image(root / "QUILLFEATHER_Rosalind" / "huge.dcm", Rows=40000, Columns=40000, NumberOfFrames=20)
    sr = phi_image(root / "QUILLFEATHER_Rosalind" / "sr.dcm")  # a structured report: no pixels
    pstate = phi_image(root / "QUILLFEATHER_Rosalind" / "pr.dcm")  # a presentation state: no pixels
    for path, sop in ((sr, "1.2.840.10008.5.1.4.1.1.88.11"), (pstate, "1.2.840.10008.5.1.4.1.1.11.1")):
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop
        ds.save_as(path)
    longid = phi_image(root / "QUILLFEATHER_Rosalind" / "longid.dcm", patient="MRN-PRIV-" + "9" * 80)  # bad LO: warns
    (root / "QUILLFEATHER_Rosalind" / "full.dcm").unlink()
    assert longid.exists()
    return sorted(made) + [
        "QUILLFEATHER_Rosalind/huge.dcm",
        "QUILLFEATHER_Rosalind/sr.dcm",
        "QUILLFEATHER_Rosalind/pr.dcm",
        "QUILLFEATHER_Rosalind/longid.dcm",
    ]


def assert_clean(text: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, needle


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture):
    """All log records (any logger, DEBUG up) and all warnings raised while the test runs."""
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield lambda: caplog.text + " ".join(f"{w.message}" for w in record)


def test_dicom_errors_carry_no_phi(tmp_path: Path, capture) -> None:
    names = bad_files(tmp_path)
    reasons = {}
    for rel in names:
        try:
            dicom.read_frames(tmp_path / rel, frame_policy="all")
            reasons[rel] = "ok"
        except dicom.DicomError as exc:
            reasons[rel] = exc.reason
            assert_clean(str(exc) + repr(exc) + repr(exc.args))
    assert reasons == {
        "MRN-PRIV-55501/empty.dcm": "empty-file",
        "MRN-PRIV-55501/notes.dcm": "not-dicom",
        "QUILLFEATHER_Rosalind/cut.dcm": "truncated",
        "QUILLFEATHER_Rosalind/tail.dcm": "corrupt",
        "QUILLFEATHER_Rosalind/huge.dcm": "too-large",
        "QUILLFEATHER_Rosalind/sr.dcm": "no-pixel-data",
        "QUILLFEATHER_Rosalind/pr.dcm": "no-pixel-data",
        "QUILLFEATHER_Rosalind/longid.dcm": "ok",
    }
    assert_clean(capture())


@pytest.mark.parametrize("label_source", ["manifest", "folders", "tag"])
def test_loading_a_phi_folder_logs_nothing_identifying(tmp_path: Path, capture, label_source: str) -> None:
    root = tmp_path / "opacity" if label_source == "folders" else tmp_path
    names = bad_files(root)
    phi_image(root / "QUILLFEATHER_Rosalind" / "ok.dcm", patient="MRN-PRIV-55501", SeriesDescription="opacity")
    phi_image(root / "other" / "ok.dcm", patient="MRN-PRIV-55502", SeriesDescription="opacity")
    if label_source == "manifest":
        extra = ["QUILLFEATHER_Rosalind/ok.dcm", "other/ok.dcm", "missing/QUILLFEATHER.dcm"]
        rows = [f"{rel},opacity" for rel in names + extra]
        (tmp_path / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    options = DataOptions(label_source=label_source, label_tag="SeriesDescription" if label_source == "tag" else None)
    clinic = load_clinic(tmp_path, LABELS, 16, options=options, cache_dir=tmp_path / ".cache")
    # ok.dcm x2 and the long-ID file (which has no SeriesDescription: no label in tag mode)
    assert len(clinic.train) + len(clinic.val) == (2 if label_source == "tag" else 3)
    assert_clean(capture() + json.dumps(clinic.summary()))
    # The local card may show paths (that is where the operator needs them) ...
    assert any("QUILLFEATHER_Rosalind" in where for where, _ in clinic.rejected)
    # ... but the cache holds neither names nor paths.
    for blob in (tmp_path / ".cache").iterdir():
        assert b"QUILLFEATHER" not in blob.read_bytes() and b"MRN-PRIV" not in blob.read_bytes()


def test_data_error_for_a_phi_path_names_no_path(tmp_path: Path, capture) -> None:
    names = bad_files(tmp_path)
    names.remove("QUILLFEATHER_Rosalind/longid.dcm")
    (tmp_path / "labels.csv").write_text("file,label\n" + "\n".join(f"{rel},normal" for rel in names) + "\n")
    with pytest.raises(DataError) as info:
        load_clinic(tmp_path, LABELS, 16, workers=2)
    text = str(info.value)
    assert "no usable image" in text and "first: a file" in text
    assert_clean(text + repr(info.value.args) + capture())
    assert len(info.value.rejected) == len(names)  # for the local card only
