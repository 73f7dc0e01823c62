"""radfed.data: manifests, rejections, the patient split and the preprocessing cache,
on small real DICOM folders written with pydicom."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radfed import data, dicom
from radfed.data import DataError, DataOptions, load_clinic, patient_split

LABELS = ("normal", "opacity")
SIZE = 16


def write_image(path: Path, patient_id: str, level: int, *, uid: str | None = None, name: str = "DOE^JANE") -> str:
    """A small DX image whose pixels encode ``level`` (so tests can tell patients apart)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid or generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, "19700101"
    ds.InstitutionName, ds.AccessionNumber = "Secret Valley Hospital", "ACC-SECRET-1"
    ds.Modality, ds.Manufacturer = "DX", "TestVendor"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 20, 12, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    pixels = np.full((20, 12), level, dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def make_clinic(root: Path, n_patients: int = 8, images: int = 2, key: str = "file") -> dict[str, str]:
    """n_patients patients (alternating labels) with ``images`` images each; returns relpath -> PatientID."""
    rows, owners = [], {}
    for p in range(n_patients):
        patient_id = f"PID-SECRET-{p:03d}"
        for k in range(images):
            rel = f"exports/s{p}/IM{k}"  # no extension, nested: like a PACS export
            uid = write_image(root / rel, patient_id, level=100 + 40 * p)
            rows.append((rel if key == "file" else uid, LABELS[p % 2]))
            owners[rel] = patient_id
    write_manifest(root, [key, "label"], rows)
    return owners


def write_manifest(root: Path, header: list[str], rows: list[tuple[str, str]]) -> None:
    """labels.csv with the given header and rows."""
    lines = [",".join(header)] + [",".join(row) for row in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def levels(split: data.Split) -> set[float]:
    """The distinct per-image intensities (one per patient in make_clinic)."""
    return {round(float(img.max()), 3) for img in split.images}


# ----------------------------------------------------------------------------- loading


def test_load_clinic_shapes_values_and_split(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=8, images=2)
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    for split in (clinic.train, clinic.val):
        assert split.images.dtype == torch.float32 and split.images.shape[1:] == (1, SIZE, SIZE)
        assert split.labels.dtype == torch.int64 and len(split.labels) == len(split.images)
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert (clinic.train.num_patients, clinic.val.num_patients) == (6, 2)
    assert len(clinic.train) + len(clinic.val) == 16 and clinic.rejected == []
    # 12-bit level 100 + 40p under a 2048/4096 window, padded 12x20 -> 16x16 with zeros.
    expected = {round((100 + 40 * p - 2047.5) / 4095 + 0.5, 3) for p in range(8)}
    assert levels(clinic.train) | levels(clinic.val) == expected
    assert not levels(clinic.train) & levels(clinic.val)  # no patient on both sides
    assert float(clinic.train.images[0, 0, :, :2].max()) == 0.0  # padding left of the narrow image


def test_summary_counts_only(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=8, images=2)
    (tmp_path / "exports" / "broken.dcm").write_bytes(b"")
    with (tmp_path / "labels.csv").open("a") as handle:
        handle.write("exports/broken.dcm,normal\n")
    summary = load_clinic(tmp_path, LABELS, SIZE).summary()
    assert summary["rejected"] == {"empty-file": 1} and summary["rejected_total"] == 1
    assert summary["modalities"] == {"DX": 16} and summary["manufacturers"] == {"TestVendor": 16}
    total_patients = sum(summary[s]["total_patients"] for s in ("train", "val"))
    assert total_patients == 8
    assert sum(sum(summary[s]["patients"].values()) for s in ("train", "val")) == 8
    assert sum(sum(summary[s]["images"].values()) for s in ("train", "val")) == 16
    text = json.dumps(summary)
    for secret in ("PID-SECRET", "DOE", "JANE", "1970", "Secret Valley", "ACC-SECRET", "exports", "broken"):
        assert secret not in text


def test_sop_instance_uid_manifest_any_depth_and_junk_files(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=2, key="sop_instance_uid")
    (tmp_path / "VIEWER").mkdir()
    (tmp_path / "VIEWER" / "readme.txt").write_text("PACS viewer, not DICOM")
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    assert len(clinic.train) + len(clinic.val) == 8 and clinic.rejected == []


def test_labels_are_case_insensitive_and_bom_is_ignored(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=1)
    text = (tmp_path / "labels.csv").read_text().replace(",opacity", ", Opacity ")
    (tmp_path / "labels.csv").write_text("\ufeff" + text, encoding="utf-8")
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    assert clinic.rejected == []
    assert sorted(torch.cat([clinic.train.labels, clinic.val.labels]).tolist()) == [0, 0, 1, 1]


def test_workers_give_the_same_result(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=2)
    serial = load_clinic(tmp_path, LABELS, SIZE)
    pooled = load_clinic(tmp_path, LABELS, SIZE, workers=2)
    torch.testing.assert_close(pooled.train.images, serial.train.images)
    torch.testing.assert_close(pooled.val.labels, serial.val.labels)


# ----------------------------------------------------------------------------- folder errors


def test_missing_folder_and_file_instead_of_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data folder .*nope: does not exist"):
        load_clinic(tmp_path / "nope", LABELS, SIZE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_clinic(tmp_path / "file", LABELS, SIZE)


def test_manifest_missing_or_overridden(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=2, images=1)
    with pytest.raises(DataError, match=r"manifest .*other.csv not found"):
        load_clinic(tmp_path, LABELS, SIZE, manifest=tmp_path / "other.csv")
    (tmp_path / "labels.csv").rename(tmp_path / "other.csv")
    assert len(load_clinic(tmp_path, LABELS, SIZE, manifest=tmp_path / "other.csv").train) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", 'labels.csv is empty; add rows "file,label"'),
        ("\n  \n", "labels.csv is empty"),
        ("accession,notes\na.dcm,normal\n", "needs a label column .* and a file column"),
        ("path,comment\na.dcm,normal\n", "needs a label column"),
        ("file,label\n", "has a header but no rows"),
    ],
)
def test_unusable_manifest(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "labels.csv").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_clinic(tmp_path, LABELS, SIZE)
    assert str(info.value).startswith(f"data folder {tmp_path}: ") and "\n" not in str(info.value)


def test_all_rows_name_missing_files(tmp_path: Path) -> None:
    write_manifest(tmp_path, ["file", "label"], [("studies/x.dcm", "normal"), ("studies/y.dcm", "opacity")])
    with pytest.raises(
        DataError,
        match=r"all 2 rows of labels.csv name files that do not exist; "
        r"first: labels.csv line 2;",
    ) as info:
        load_clinic(tmp_path, LABELS, SIZE)
    assert "studies" not in str(info.value)  # paths below the folder stay out of exception text
    assert info.value.rejected[0] == ("labels.csv line 2: studies/x.dcm", "missing-file")  # ... but reach the card


def test_nothing_usable_names_reasons(tmp_path: Path) -> None:
    write_image(tmp_path / "a.dcm", "P1", 100)
    write_manifest(tmp_path, ["file", "label"], [("a.dcm", "pneumonia"), ("b.dcm", "normal")])
    with pytest.raises(
        DataError,
        match=r"no usable image: 2 rejected \(1 unknown-label, 1 missing-file\); "
        r"first: labels.csv line 2",
    ):
        load_clinic(tmp_path, LABELS, SIZE)


# ----------------------------------------------------------------------------- row and file rejections


def test_row_rejections_carry_line_numbers(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=1)
    write_image(tmp_path / "extra.dcm", "P-EXTRA", 500)
    with (tmp_path / "labels.csv").open("a") as handle:
        handle.write("\n")  # blank line 6 is skipped but still counted
        handle.write("missing/IM9.dcm,normal\n")  # line 7
        handle.write("extra.dcm,pneumothorax\n")  # line 8
        handle.write(",normal\n")  # line 9
        handle.write("exports/s0/IM0,normal\n")  # line 10: same file again
        handle.write("../outside.dcm,normal\n")  # line 11
        handle.write('"exports\\s1\\IM0",opacity\n')  # line 12: Windows separators, same file as line 3
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    assert clinic.rejected == [
        ("labels.csv line 8", "unknown-label"),
        ("labels.csv line 9", "empty-key"),
        ("labels.csv line 10", "duplicate-row"),
        ("labels.csv line 12", "duplicate-row"),
        ("labels.csv line 7: missing/IM9.dcm", "missing-file"),
        ("labels.csv line 11: ../outside.dcm", "outside-data-folder"),
    ]
    assert len(clinic.train) + len(clinic.val) == 4


def test_unknown_and_duplicate_sop_instance_uids(tmp_path: Path) -> None:
    uid = write_image(tmp_path / "a" / "IM1", "P1", 100)
    write_image(tmp_path / "b" / "IM1", "P1", 100, uid=uid)  # the same image exported twice
    other = write_image(tmp_path / "c" / "IM1", "P2", 300)
    write_manifest(
        tmp_path, ["sop_instance_uid", "label"], [(uid, "normal"), ("1.2.3.999", "normal"), (other, "opacity")]
    )
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    assert clinic.rejected == [
        ("b/IM1", "duplicate-sop-instance-uid"),
        ("labels.csv line 3", "unknown-sop-instance-uid"),
    ]
    assert len(clinic.train) + len(clinic.val) == 2


def test_sop_manifest_rejects_referenced_non_images_and_ignores_the_rest(tmp_path: Path) -> None:
    good = write_image(tmp_path / "img" / "IM1", "P1", 100)
    other = write_image(tmp_path / "img" / "IM2", "P2", 300)
    report = write_image(tmp_path / "sr" / "SR1", "P1", 100)
    unreferenced = write_image(tmp_path / "sr" / "SR2", "P2", 100)
    for name in ("SR1", "SR2"):  # structured reports: DICOM, but no pixels
        ds = pydicom.dcmread(tmp_path / "sr" / name)
        del ds.PixelData
        ds.save_as(tmp_path / "sr" / name)
    assert unreferenced
    write_manifest(tmp_path, ["sop_instance_uid", "label"], [(good, "normal"), (report, "normal"), (other, "opacity")])
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    assert clinic.rejected == [("sr/SR1", "no-pixel-data")]


def test_duplicate_uid_under_two_file_names(tmp_path: Path) -> None:
    uid = write_image(tmp_path / "a.dcm", "P1", 100)
    write_image(tmp_path / "copy.dcm", "P1", 100, uid=uid)
    write_image(tmp_path / "z.dcm", "P2", 300)
    write_manifest(tmp_path, ["file", "label"], [("a.dcm", "normal"), ("copy.dcm", "normal"), ("z.dcm", "opacity")])
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    assert clinic.rejected == [("copy.dcm", "duplicate-sop-instance-uid")]


def test_unreadable_files_are_rejected_with_their_reason(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=1)
    write_image(tmp_path / "full.dcm", "P-CUT", 700)
    (tmp_path / "cut.dcm").write_bytes((tmp_path / "full.dcm").read_bytes()[:-200])
    (tmp_path / "notes.dcm").write_text("not an image")
    (tmp_path / "empty.dcm").write_bytes(b"")
    write_image(tmp_path / "anon.dcm", "", 100)  # no PatientID: cannot be split safely
    with (tmp_path / "labels.csv").open("a") as handle:
        handle.write("cut.dcm,normal\nnotes.dcm,normal\nempty.dcm,opacity\nanon.dcm,normal\n")
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    assert sorted(clinic.rejected) == [
        ("anon.dcm", "no-patient-id"),
        ("cut.dcm", "truncated"),
        ("empty.dcm", "empty-file"),
        ("notes.dcm", "not-dicom"),
    ]
    assert len(clinic.train) + len(clinic.val) == 4


def test_no_phi_in_logs_or_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    long_id = "PID-SECRET-" + "X" * 80  # too long for LO: pydicom warns when it is read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_image(tmp_path / "a.dcm", long_id, 100, name="SECRETNAME^Ann")
    write_image(tmp_path / "b.dcm", "PID-SECRET-2", 300, name="SECRETNAME^Bob")
    write_manifest(tmp_path, ["file", "label"], [("a.dcm", "normal"), ("b.dcm", "opacity"), ("c.dcm", "normal")])
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clinic = load_clinic(tmp_path, LABELS, SIZE, cache_dir=tmp_path / ".cache")
    text = caplog.text + " ".join(str(w.message) for w in record) + repr(clinic.rejected) + json.dumps(clinic.summary())
    assert "SECRET" not in text


# ----------------------------------------------------------------------------- patient split


def test_patient_split_is_exact_disjoint_and_stable() -> None:
    patients = [f"P{i}" for i in range(40)]
    val = patient_split(patients, 0.25, seed=0)
    assert len(val) == 10 and val <= set(patients)
    assert patient_split(reversed(patients), 0.25, seed=0) == val  # order does not matter
    assert patient_split(patients + patients, 0.25, seed=0) == val  # nor repeats (one per image)
    assert patient_split(patients, 0.25, seed=1) != val


def test_patient_split_golden_value() -> None:
    """Pinned so that a change of hash, encoding or ranking (which would reshuffle
    every clinic's validation set between versions or machines) fails loudly."""
    assert patient_split([f"P{i}" for i in range(8)], 0.25, seed=0) == GOLDEN_SPLIT


GOLDEN_SPLIT = {"P1", "P6"}


def test_patient_split_edge_cases() -> None:
    assert patient_split([], 0.25, 0) == set()
    assert patient_split(["only"], 0.25, 0) == set()
    assert len(patient_split(["a", "b"], 0.01, 0)) == 1  # both sides keep a patient
    assert len(patient_split(["a", "b"], 0.9, 0)) == 1
    assert patient_split(["a", "b", "c"], 0.0, 0) == set()
    with pytest.raises(ValueError):
        patient_split(["a"], 1.0, 0)


def test_sixty_patient_clinic_usually_has_both_labels_in_validation() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for seed in range(100):
        patients = [f"MRN{rng.integers(10**7)}" for _ in range(60)]
        positive = set(patients[:18])  # prevalence 0.3
        val = patient_split(patients, 0.25, seed)
        hits += bool(val & positive) and bool(val - positive)
    assert hits >= 97


# ----------------------------------------------------------------------------- cache


def counting_read_pixels(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace dicom.read_frames with a wrapper recording each decoded path."""
    calls: list[Path] = []
    original = dicom.read_frames

    def wrapper(path: Path, *args: object, **kwargs: object) -> np.ndarray:
        calls.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(dicom, "read_frames", wrapper)
    return calls


def test_cache_hit_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clinic_dir, cache = tmp_path / "clinic", tmp_path / "cache"
    make_clinic(clinic_dir, n_patients=4, images=2)
    first = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)

    def refuse(path: Path, *args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("decoded a DICOM file despite a warm cache")

    monkeypatch.setattr(dicom, "read_frames", refuse)
    second = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    torch.testing.assert_close(second.train.images, first.train.images, rtol=0, atol=0)
    torch.testing.assert_close(second.val.labels, first.val.labels)
    assert second.rejected == [] and second.summary() == first.summary()


def test_cache_misses_on_changed_file_or_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clinic_dir, cache = tmp_path / "clinic", tmp_path / "cache"
    make_clinic(clinic_dir, n_patients=3, images=1)
    load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    calls = counting_read_pixels(monkeypatch)

    load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    assert calls == []
    target = clinic_dir / "exports/s1/IM0"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    assert len(calls) == 3
    load_clinic(clinic_dir, LABELS, SIZE * 2, cache_dir=cache)
    assert len(calls) == 6
    assert len(list(cache.glob("*.npz"))) == 2  # one per image size; the stale 16-px entry was replaced


def test_cache_holds_no_identifiers(tmp_path: Path) -> None:
    make_clinic(tmp_path / "clinic", n_patients=3, images=1)
    load_clinic(tmp_path / "clinic", LABELS, SIZE, cache_dir=tmp_path / "cache")
    for path in (tmp_path / "cache").iterdir():
        blob = path.read_bytes()
        assert b"PID-SECRET" not in blob and b"exports" not in blob and b"DOE" not in blob


def test_corrupt_cache_file_is_a_miss(tmp_path: Path) -> None:
    make_clinic(tmp_path / "clinic", n_patients=3, images=1)
    first = load_clinic(tmp_path / "clinic", LABELS, SIZE, cache_dir=tmp_path / "cache")
    for path in (tmp_path / "cache").glob("*.npz"):
        path.write_bytes(b"garbage")
    again = load_clinic(tmp_path / "clinic", LABELS, SIZE, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(again.train.images, first.train.images)


# ----------------------------------------------------------------------------- header cache


def refuse_dicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way radfed opens a DICOM file fail loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("opened a DICOM file despite a warm cache")

    for target in (dicom, pydicom, pydicom.filereader):
        monkeypatch.setattr(target, "dcmread", refuse)


def counting_headers(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace dicom.header_facts with a wrapper recording each path whose header facts are read."""
    calls: list[Path] = []
    original = dicom.header_facts

    def wrapper(path: Path, label_tag: str | None = None) -> object:
        calls.append(Path(path))
        return original(path, label_tag)

    monkeypatch.setattr(dicom, "header_facts", wrapper)
    return calls


@pytest.mark.parametrize("key", ["file", "sop_instance_uid"])
def test_cached_epoch_opens_no_dicom_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    clinic_dir, cache = tmp_path / "clinic", tmp_path / "cache"
    make_clinic(clinic_dir, n_patients=4, images=2, key=key)
    (clinic_dir / "exports" / "broken.dcm").write_bytes(b"DICM" * 10)  # rejected: cached as such
    if key == "file":
        with (clinic_dir / "labels.csv").open("a") as handle:
            handle.write("exports/broken.dcm,normal\n")
    first = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    refuse_dicom(monkeypatch)
    second = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    torch.testing.assert_close(second.train.images, first.train.images, rtol=0, atol=0)
    torch.testing.assert_close(second.val.patients, first.val.patients)
    assert second.summary() == first.summary() and second.rejected == first.rejected
    assert sum(second.summary()[s]["total_patients"] for s in ("train", "val")) == 4


def test_header_cache_rereads_only_changed_files_and_tag_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic_dir, cache = tmp_path / "clinic", tmp_path / "cache"
    make_clinic(clinic_dir, n_patients=3, images=2)
    before = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    assert sum(before.summary()[s]["total_patients"] for s in ("train", "val")) == 3
    calls = counting_headers(monkeypatch)
    # the second image of patient 0 is re-exported under a new patient: only it is read again
    write_image(clinic_dir / "exports/s0/IM1", "PID-SECRET-NEW", level=100)
    after = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    assert calls == [clinic_dir / "exports/s0/IM1"]
    assert sum(after.summary()[s]["total_patients"] for s in ("train", "val")) == 4
    # a task labelling by another tag needs other header facts: every file is read again
    tagged = DataOptions(label_source="tag", label_tag="Modality", label_map={"DX": "normal"})
    by_tag = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache, options=tagged)
    assert len(calls) == 1 + 7 and by_tag.summary()["rejected_total"] == 0  # 6 images + labels.csv
    load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache, options=tagged)
    assert len(calls) == 8  # labels.csv is remembered as not DICOM too


def test_header_cache_holds_keys_not_identifiers(tmp_path: Path) -> None:
    make_clinic(tmp_path / "clinic", n_patients=3, images=1, key="sop_instance_uid")
    uids = [line.split(",")[0] for line in (tmp_path / "clinic" / "labels.csv").read_text().splitlines()[1:]]
    load_clinic(tmp_path / "clinic", LABELS, SIZE, cache_dir=tmp_path / "cache")
    [headers] = (tmp_path / "cache").glob("*-headers.json")
    text = headers.read_text()
    for secret in ["PID-SECRET", "DOE", "JANE", "1970", "Secret Valley", "ACC-SECRET", "exports", *uids]:
        assert secret not in text
    assert dicom.identifier_key("patient", "PID-SECRET-000") in text  # the split still groups by patient


def test_worker_processes_return_the_same_facts_and_pixels(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=3, images=2)
    paths = [str(p) for p in sorted((tmp_path / "exports").rglob("IM*"))]
    from radfed.data.workers import Workers

    workers = Workers(2)
    try:
        workers.start()
        workers.ready.result(timeout=60)  # helpers up: the map below really uses them
        facts = workers.map(dicom.header_facts_many, paths, (None,), "headers", None)
        pixels = workers.map(dicom.preprocess_files, paths, (SIZE, None, "middle"), "pixels", None)
    finally:
        workers.close()
    assert facts == dicom.header_facts_many(paths)
    for (image, reason), (serial, _) in zip(pixels, dicom.preprocess_files(paths, SIZE)):
        assert reason == "" and image.dtype == np.float16 and np.array_equal(image, serial)


def test_shared_card_buckets_sizes_and_holds_counts_only(tmp_path: Path) -> None:
    make_clinic(tmp_path, n_patients=4, images=2)
    clinic = load_clinic(tmp_path, LABELS, SIZE)
    card = clinic.shared_card()
    assert tuple(card) == data.SHARED_CARD_KEYS
    assert card["sizes"] == {"<256 px": 8} and clinic.summary()["sizes"] == {"20x12": 8}
    assert card["train"]["total_images"] + card["val"]["total_images"] == 8
    text = json.dumps(card)
    for secret in ("PID-SECRET", "DOE", "JANE", "1970", "Secret Valley", "ACC-SECRET", "exports", "IM0"):
        assert secret not in text


def test_damaged_header_cache_is_read_again(tmp_path: Path) -> None:
    clinic_dir, cache = tmp_path / "clinic", tmp_path / "cache"
    make_clinic(clinic_dir, n_patients=3, images=1)
    first = load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache)
    [headers] = cache.glob("*-headers.json")
    stored = json.loads(headers.read_text())
    stored["entries"] = {key: {"patient": "x"} for key in stored["entries"]}  # fields missing
    headers.write_text(json.dumps(stored))
    assert load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache).summary() == first.summary()
    headers.write_text("{not json")
    assert load_clinic(clinic_dir, LABELS, SIZE, cache_dir=cache).summary() == first.summary()
    assert len(json.loads(headers.read_text())["entries"]) == 3  # rewritten whole
