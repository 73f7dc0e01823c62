"""Small CT study sets written with pydicom: single-slice files, shuffled, randomly named.

Each patient has 1-2 studies of 2 series of single-slice CT files (Modality CT, HU via
RescaleSlope/Intercept, ImagePositionPatient/ImageOrientationPatient, InstanceNumber
counting the other way to the position, as scanners often do). A positive study shows a
bright blob in its middle slices; the label belongs to the study (manifest
`study_instance_uid,label`). Each slice's pixels also encode its position (the corner
pixel, in HU), so tests can check slice order and 2.5D neighbours from the tensors.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LABELS = ("normal", "nodule")
SPACING = 2.5  # mm between slices


@dataclass
class Study:
    patient: str
    uid: str
    label: str
    series: dict[str, list[Path]] = field(default_factory=dict)  # SeriesInstanceUID -> files in position order


def corner_hu(slice_index: int) -> float:
    """The HU value written into a slice's corner pixel: its index along the normal."""
    return -900.0 + 10.0 * slice_index


def ct_slice(
    path: Path,
    *,
    patient: str,
    study: str,
    series: str,
    index: int,
    n_slices: int,
    positive: bool,
    size: int,
    rng: np.random.Generator,
    series_number: int = 1,
) -> None:
    """One CT slice at z = index * SPACING; a blob of 200 HU in the middle slices of a positive study."""
    hu = np.full((size, size), -1000.0)
    yy, xx = np.mgrid[:size, :size]
    body = (yy - size / 2) ** 2 / (0.42 * size) ** 2 + (xx - size / 2) ** 2 / (0.45 * size) ** 2 <= 1
    hu[body] = 40.0 + rng.normal(0, 15, body.sum())
    if positive and abs(index - (n_slices - 1) / 2) <= n_slices / 3:
        cy, cx = size * 0.4, size * 0.6
        hu[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size * 0.12) ** 2] = 200.0
    hu[0, 0] = corner_hu(index)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = patient, f"TEST^{patient}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.BodyPartExamined, ds.SeriesNumber = "CT", "CHEST", series_number
    ds.InstanceNumber = n_slices - index  # numbered feet to head: the position decides
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100.0, -100.0, round(-50.0 + index * SPACING, 2)]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], SPACING
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)


def write_ct_studies(
    folder: Path,
    n_patients: int,
    *,
    seed: int = 0,
    size: int = 32,
    slices: tuple[int, int] = (8, 12),
    studies: tuple[int, int] = (1, 2),
    manifest: str = "study_instance_uid",
) -> list[Study]:
    """Write the set under folder (random names in a few random subfolders, written in a
    shuffled order) and labels.csv keyed by `manifest` ("study_instance_uid",
    "series_instance_uid" or "folder": one folder per study, named in a "file" column).
    Labels alternate by study, so both labels appear at every clinic."""
    rng = np.random.default_rng(seed)
    made: list[Study] = []
    jobs = []
    for p in range(n_patients):
        patient = f"PAT-{seed}-{p:03d}"
        for s in range(int(rng.integers(studies[0], studies[1] + 1))):
            study = Study(patient, generate_uid(), LABELS[(p + s) % 2])
            home = folder / (f"study-{rng.integers(1 << 30):08x}" if manifest == "folder" else "")
            for number in (1, 2):
                series, n = generate_uid(), int(rng.integers(slices[0], slices[1] + 1))
                study.series[series] = [
                    home / f"{rng.integers(1 << 40):010x}" / f"{rng.integers(1 << 40):010x}.dcm"
                    if manifest == "folder"
                    else folder / f"d{rng.integers(4)}" / f"{rng.integers(1 << 40):010x}.dcm"
                    for _ in range(n)
                ]
                for index, path in enumerate(study.series[series]):
                    jobs.append(
                        (
                            path,
                            dict(
                                patient=patient,
                                study=study.uid,
                                series=series,
                                index=index,
                                n_slices=n,
                                positive=study.label != LABELS[0],
                                size=size,
                                series_number=number,
                            ),
                        )
                    )
            made.append(study)
    for i in rng.permutation(len(jobs)):
        path, kwargs = jobs[i]
        ct_slice(path, rng=rng, **kwargs)
    with (folder / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        if manifest == "folder":
            writer.writerow(["file", "label"])
            for study in made:
                first = next(iter(study.series.values()))[0]
                writer.writerow([first.parent.parent.relative_to(folder).as_posix(), study.label])
        elif manifest == "series_instance_uid":
            writer.writerow(["SeriesInstanceUID", "label"])
            writer.writerows([series, study.label] for study in made for series in study.series)
        else:
            writer.writerow([manifest, "label"])
            writer.writerows([study.uid, study.label] for study in made)
    return made
