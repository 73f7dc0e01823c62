"""Fake clinics whose folders look like hospital PACS exports of chest radiographs.

The local demo and the tests need a federation without real patients.  Each
fake clinic differs the way real sites do (image size, 12- vs 16-bit,
MONOCHROME1, window, vendor, compression, manifest style, prevalence), so the
loader and the federated training meet the same variety as in production.

The task is ``LABELS = ("normal", "opacity")``: an opacity is a round, soft,
clearly brighter blob inside one lung field.  It is prominent on purpose: a
small CNN trained from scratch on 64x64 images should reach an AUROC well above
0.8 within a few epochs, so a demo that fails to learn points at a bug.

Every file carries realistic but FAKE identifying tags (names, IDs, birth
dates, accession numbers, institution, referring physician) so that privacy
checks elsewhere have something to catch: ``phi_values()`` returns them.  File
and folder names never contain them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from radfed.demo_findings import FINDINGS_FILE, write_findings
from radfed.dicom import pydicom_quiet
from radfed.xray_iod import add_dx_attributes

__all__ = ["LABELS", "PHI_FIELDS", "PREVALENCES", "phi_values", "render_chest", "write_clinic", "write_federation"]

LABELS = ("normal", "opacity")
PREVALENCES = (0.3, 0.5, 0.7)  # cycled over clinics: non-IID label mix
PHI_FIELDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
)

_FAMILY = (
    "Vantongeren",
    "Quillfeather",
    "Okonkwo",
    "Haldorsen",
    "Brightwater",
    "Castellanos",
    "Zielinska",
    "Marchetti",
    "Abernathy",
    "Nakashima",
    "Oyelaran",
    "Lindqvist",
    "Petrossian",
    "Delacroix",
    "Wojcikowski",
    "Esterhazy",
    "Ramachandran",
    "Thorvaldsen",
)
_GIVEN = (
    "Amelia",
    "Bartholomew",
    "Consuelo",
    "Dmitri",
    "Eleanor",
    "Fernando",
    "Greta",
    "Hiroshi",
    "Ingrid",
    "Jasper",
    "Katarina",
    "Leopold",
    "Marisol",
    "Nikolai",
    "Ophelia",
    "Priyanka",
    "Quentin",
    "Rosalind",
)
_INSTITUTIONS = (
    "Riverside Hollow General Hospital",
    "St. Aldhelm Medical Centre",
    "Northgate Lakeview Clinic",
    "Hollybrook Community Hospital",
    "Marrowfield University Hospital",
)


@dataclass(frozen=True)
class _Profile:
    """How one site's equipment and PACS export differ from the others."""

    rows: int
    columns: int
    bits_stored: int
    photometric: str
    modality: str
    manufacturer: str
    model: str
    windows: tuple[tuple[float, float], ...]  # (centre, width) as fractions of the stored range
    syntax: str
    extension: str


_PROFILES = (
    _Profile(
        224,
        224,
        16,
        "MONOCHROME2",
        "DX",
        "Initech Healthcare",
        "IH-Flat 43",
        ((0.50, 0.95),),
        ImplicitVRLittleEndian,
        ".dcm",
    ),
    _Profile(
        288,
        240,
        12,
        "MONOCHROME2",
        "DX",
        "Northwind Medical Systems",
        "NW-DR 500",
        ((0.48, 0.90),),
        ExplicitVRLittleEndian,
        "",
    ),
    _Profile(
        256,
        256,
        16,
        "MONOCHROME1",
        "CR",
        "Contoso Radiography",
        "CR-Reader 9",
        ((0.52, 1.00),),
        ExplicitVRLittleEndian,
        ".dcm",
    ),
    _Profile(
        320,
        288,
        12,
        "MONOCHROME2",
        "CR",
        "ACME Imaging",
        "Phosphor 2",
        ((0.50, 0.92), (0.45, 0.60)),
        RLELossless,
        ".dcm",
    ),
)


def _profile(clinic_index: int) -> _Profile:
    """Site profile by clinic number (clinic-1 is profile 1, and so on, cycling)."""
    return _PROFILES[clinic_index % len(_PROFILES)]


# ----------------------------------------------------------------------------- image synthesis


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via tanh: no overflow warnings far from the edge."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _soft_ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float, edge: float) -> np.ndarray:
    """1 inside an ellipse, 0 outside, with a sigmoid edge of relative width ``edge``."""
    r = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return _sigmoid(-(r - 1.0) / edge)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    coarse = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    ys = np.linspace(0, cells, shape[0])
    xs = np.linspace(0, cells, shape[1])
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _anatomy(rng: np.random.Generator) -> dict[str, float]:
    """One patient's body habitus (kept across that patient's images)."""
    return {
        "body_w": rng.uniform(0.80, 0.93),
        "lung_x": rng.uniform(0.37, 0.43),
        "lung_y": rng.uniform(-0.12, -0.04),
        "lung_rx": rng.uniform(0.25, 0.29),
        "lung_ry": rng.uniform(0.52, 0.60),
        "heart_x": rng.uniform(0.10, 0.17),
        "heart_r": rng.uniform(0.24, 0.30),
        "rib_gap": rng.uniform(0.125, 0.145),
        "rib_top": rng.uniform(-0.70, -0.64),
        "lung_dark": rng.uniform(0.30, 0.36),
    }


def _opacity(rng: np.random.Generator, anatomy: dict[str, float]) -> dict[str, float]:
    """A round lesion: which lung, where inside it, radius 7-12 % of the width, amplitude."""
    side = rng.choice([-1.0, 1.0])
    angle, reach = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.5
    cu = side * anatomy["lung_x"] + reach * anatomy["lung_rx"] * np.cos(angle)
    cv = anatomy["lung_y"] - 0.05 + reach * anatomy["lung_ry"] * 0.8 * np.sin(angle)
    if side > 0:  # the heart fills the lower medial left lung: keep the lesion lateral/upper
        cu, cv = max(cu, side * anatomy["lung_x"]), min(cv, anatomy["lung_y"] + 0.05)
    return {"u": cu, "v": cv, "radius": rng.uniform(0.07, 0.12), "amplitude": rng.uniform(0.26, 0.36)}


def _body(u: np.ndarray, v: np.ndarray, anatomy: dict[str, float]) -> np.ndarray:
    """Torso (a squarish superellipse: shoulders, flanks) and neck as one soft silhouette."""
    width = anatomy["body_w"]
    r = (np.abs(u / width) ** 3 + np.abs((v - 0.35) / 1.3) ** 3) ** (1 / 3)
    torso = _sigmoid(-(r - 1.0) / 0.025)
    neck = _soft_ellipse(u, v, 0, -1.0, 0.22, 0.3, 0.05)
    return np.maximum(torso, neck)


def _lung(u: np.ndarray, v: np.ndarray, anatomy: dict[str, float], side: float) -> np.ndarray:
    """One lung: narrow apex, broad base, cut from below by a diaphragm dome."""
    cu, cv, ru, rv = side * anatomy["lung_x"], anatomy["lung_y"], anatomy["lung_rx"], anatomy["lung_ry"]
    taper = 0.70 + 0.30 * np.clip((v - (cv - rv)) / (1.4 * rv), 0.0, 1.0)
    r = np.sqrt(((u - cu) / (ru * taper)) ** 2 + ((v - cv) / rv) ** 2)
    shape = _sigmoid(-(r - 1.0) / 0.04)
    dome = cv + 0.55 * rv + 0.55 * rv * ((u - cu) / ru) ** 2
    return shape * _sigmoid(-(v - dome) / 0.02)


def _rib_bands(offset: np.ndarray, gap: float, count: int, thickness: np.ndarray | float) -> np.ndarray:
    """Gaussian bands at offset = 0, gap, 2*gap, ... (count of them), with one exp for all:
    each pixel only sees its nearest rib."""
    k = np.clip(np.rint(offset / gap), 0, count - 1)
    if not np.isscalar(thickness):
        thickness = np.asarray(thickness)[k.astype(int)]
    return np.exp(-(((offset - k * gap) / thickness) ** 2))


def _ribs(u: np.ndarray, v: np.ndarray, anatomy: dict[str, float]) -> np.ndarray:
    """Posterior ribs (rising from the spine, then curving down laterally),
    fainter anterior ribs, and the clavicles, as bright bands."""
    au = np.abs(u)
    inside = _sigmoid(-(au - anatomy["body_w"] + 0.12) / 0.03) * _sigmoid(-(v - 0.45) / 0.06)
    gap, top = anatomy["rib_gap"], anatomy["rib_top"]
    posterior = _rib_bands(v - top - 0.75 * (au - 0.15) ** 2, gap, 10, 0.020 + 0.002 * np.arange(10))
    anterior = _rib_bands(v - top - 0.05 - 0.30 * (0.85 - au), gap * 0.8, 10, 0.03)
    bones = 0.075 * posterior * (au > 0.05) + 0.035 * anterior * (au > 0.28)
    clavicle = -0.70 - 0.18 * (au - 0.08)
    bones += 0.12 * np.exp(-(((v - clavicle) / 0.03) ** 2)) * (au > 0.07) * (au < 0.64)
    return bones * inside


def _spine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vertebral column with faint vertebral bodies, visible through the mediastinum."""
    column = _soft_ellipse(u, v, 0, 0.0, 0.06, 1.5, 0.12)
    return column * (0.07 + 0.025 * np.cos(v * np.pi * 9.0))


def _vessels(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, anatomy: dict[str, float]) -> np.ndarray:
    """Hila and lung markings: brighter near the hila, fading to the periphery."""
    shape = u.shape
    markings = np.zeros(shape)
    for side in (-1.0, 1.0):
        hu, hv = side * (anatomy["lung_x"] - 0.16), anatomy["lung_y"] + 0.05
        distance = np.sqrt((u - hu) ** 2 + (v - hv) ** 2)
        markings += 0.10 * np.exp(-((distance / 0.09) ** 2)) + 0.05 * np.exp(-distance / 0.3)
    texture = 0.5 + 0.5 * _smooth_noise(rng, shape, 32)
    return markings * (0.6 + 0.8 * texture)


def render_chest(
    rng: np.random.Generator,
    shape: tuple[int, int],
    anatomy: dict[str, float],
    lesion: dict[str, float] | None,
) -> np.ndarray:
    """A PA chest radiograph as density in [0, 1] (bright = dense): body outline,
    lungs with hila and markings, mediastinum, heart, spine, ribs, clavicles,
    an optional lesion and detector noise."""
    rows, cols = shape
    shift_u, shift_v = rng.normal(0, 0.02, size=2)  # patient positioning differs per image
    v, u = np.meshgrid(
        np.linspace(-1, 1, rows, dtype=np.float32) - np.float32(shift_v),
        np.linspace(-1, 1, cols, dtype=np.float32) - np.float32(shift_u),
        indexing="ij",
    )
    body = _body(u, v, anatomy)
    lungs = _lung(u, v, anatomy, -1.0) + _lung(u, v, anatomy, 1.0)
    heart = _soft_ellipse(u, v, anatomy["heart_x"], 0.30, anatomy["heart_r"], anatomy["heart_r"] * 0.85, 0.07)
    mediastinum = _soft_ellipse(u, v, 0, -0.25, 0.12, 0.75, 0.10)
    lung_field = lungs * (1 - heart) * (1 - mediastinum)
    darkness = anatomy["lung_dark"] * (1.0 - 0.25 * np.clip(v + 0.2, 0.0, 1.0))  # bases greyer (soft tissue)
    density = 0.03 + 0.50 * body - darkness * lung_field + _spine(u, v) * body + _ribs(u, v, anatomy) * body
    density += _vessels(rng, u, v, anatomy) * lung_field + 0.02 * _smooth_noise(rng, shape, 5)
    if lesion is not None:
        density += _lesion(u, v, cols, rows, lesion) * np.clip(body, 0, 1)
        # where it was drawn, in pixels (radfed.demo_findings: does a heat map point there?)
        lesion["drawn"] = (
            (float(lesion["v"] + shift_v) + 1) / 2 * (rows - 1),
            (float(lesion["u"] + shift_u) + 1) / 2 * (cols - 1),
            float(lesion["radius"] * cols),
        )
    gain, offset = rng.uniform(0.92, 1.08), rng.normal(0, 0.02)
    density = density * gain + offset + rng.normal(0, 0.012, size=shape)
    return np.clip(density, 0.0, 1.0)


def _lesion(u: np.ndarray, v: np.ndarray, cols: int, rows: int, lesion: dict[str, float]) -> np.ndarray:
    """A round blob in pixel space (round even on non-square images) with a soft edge."""
    du, dv = (u - lesion["u"]) * cols / 2, (v - lesion["v"]) * rows / 2
    distance = np.sqrt(du**2 + dv**2)
    radius = lesion["radius"] * cols
    return lesion["amplitude"] * _sigmoid(-(distance - radius) / (0.15 * radius))


# ----------------------------------------------------------------------------- DICOM writing


def _uid(*parts: Any) -> str:
    """A deterministic, unique UID: generate_uid seeded from the parts."""
    return str(generate_uid(entropy_srcs=["radfed-demo", *map(str, parts)]))


def _fake_date(rng: np.random.Generator, first_year: int, last_year: int) -> str:
    """A DICOM DA string."""
    return f"{rng.integers(first_year, last_year + 1)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"


def _fake_patient(rng: np.random.Generator, clinic_index: int, used_ids: set[str]) -> dict[str, str]:
    """Realistic-looking but invented identity tags for one patient."""
    while (patient_id := f"MRN{clinic_index}{rng.integers(10**6, 10**7)}") in used_ids:
        pass
    used_ids.add(patient_id)
    return {
        "PatientName": f"{rng.choice(_FAMILY).upper()}^{rng.choice(_GIVEN)}",
        "PatientID": patient_id,
        "PatientBirthDate": _fake_date(rng, 1935, 2004),
        "PatientSex": str(rng.choice(["F", "M"])),
        "ReferringPhysicianName": f"{rng.choice(_FAMILY).upper()}^{rng.choice(_GIVEN)}^^Dr.",
    }


def _stored_values(density: np.ndarray, profile: _Profile) -> np.ndarray:
    """Map density to detector values; MONOCHROME1 stores them inverted so a viewer shows the same picture."""
    top = 2**profile.bits_stored - 1
    low, high = 0.04 * top, 0.96 * top
    values = np.rint(low + density * (high - low))
    if profile.photometric == "MONOCHROME1":
        values = top - values
    return values.astype(np.uint16)


def _windows(profile: _Profile) -> tuple[list[float], list[float]]:
    """Window centres/widths in stored units (centre mirrored for MONOCHROME1)."""
    top = 2**profile.bits_stored - 1
    centres, widths = [], []
    for centre, width in profile.windows:
        c = centre * top if profile.photometric == "MONOCHROME2" else (1 - centre) * top
        centres.append(round(c, 1))
        widths.append(round(width * top, 1))
    return centres, widths


def _image_dataset(profile: _Profile, pixels: np.ndarray, tags: dict[str, Any]) -> Dataset:
    """A complete DX/CR image dataset with file meta, ready to save; dciodvfy finds no errors."""
    ds = Dataset()
    sop_class = DigitalXRayImageStorageForPresentation if profile.modality == "DX" else ComputedRadiographyImageStorage
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = tags["SOPInstanceUID"]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.Modality = profile.modality
    ds.Manufacturer, ds.ManufacturerModelName = profile.manufacturer, profile.model
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", "PA", ["L", "F"]
    if profile.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.ImagerPixelSpacing = [round(430.0 / profile.columns, 4)] * 2
    _set_pixels(ds, profile, pixels)
    if profile.modality == "DX":
        add_dx_attributes(ds)  # what the DX IOD requires besides; CR files pass as they are
    return ds


def _set_pixels(ds: Dataset, profile: _Profile, pixels: np.ndarray) -> None:
    """Image pixel module and VOI LUT module."""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, profile.photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, profile.bits_stored, profile.bits_stored - 1
    ds.PixelRepresentation = 0
    centres, widths = _windows(profile)
    ds.WindowCenter = centres if len(centres) > 1 else centres[0]
    ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    if len(centres) > 1:
        ds.WindowCenterWidthExplanation = ["STANDARD", "LUNG"]
    ds.PixelData = pixels.tobytes()


def _save(ds: Dataset, path: Path, syntax: str) -> None:
    """Write with a preamble and valid file meta, in the site's transfer syntax."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pydicom_quiet():
        if syntax == RLELossless:
            ds.compress(RLELossless, generate_instance_uid=False)
        elif syntax != ExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)


# ----------------------------------------------------------------------------- clinics


def _patient_labels(rng: np.random.Generator, n_patients: int, prevalence: float) -> list[int]:
    """Exactly round(n * prevalence) positive patients, in random order."""
    positives = int(round(n_patients * prevalence))
    labels = np.array([1] * positives + [0] * (n_patients - positives))
    rng.shuffle(labels)
    return labels.tolist()


def _study_tags(rng: np.random.Generator, clinic_index: int, seed: int, patient: int, study: int) -> dict[str, Any]:
    """Tags shared by one study."""
    return {
        "StudyInstanceUID": _uid(seed, clinic_index, patient, "study", study),
        "AccessionNumber": f"ACC{clinic_index}{rng.integers(10**7, 10**8)}",
        "StudyDate": _fake_date(rng, 2022, 2024),
        "StudyTime": f"{rng.integers(7, 19):02d}{rng.integers(0, 60):02d}00",
        "StudyID": str(study + 1),
    }


def _write_patient(
    out_dir: Path, rng: np.random.Generator, ctx: dict[str, Any], patient: int, label: int
) -> list[tuple[str, str, int]]:
    """Write one patient's 2-4 images; returns (relative path, SOPInstanceUID, label) per image."""
    profile: _Profile = ctx["profile"]
    identity = _fake_patient(rng, ctx["clinic_index"], ctx["used_ids"])
    anatomy = _anatomy(rng)
    lesion = _opacity(rng, anatomy) if label else None
    n_images = int(rng.integers(2, 5))
    studies = [_study_tags(rng, ctx["clinic_index"], ctx["seed"], patient, s) for s in range(1 + (n_images > 2))]
    written = []
    for k in range(n_images):
        ctx["series"] += 1
        study = studies[min(k, len(studies) - 1)]
        uid = _uid(ctx["seed"], ctx["clinic_index"], patient, "image", k)
        tags = {
            **identity,
            **study,
            "InstitutionName": ctx["institution"],
            "SOPInstanceUID": uid,
            "SeriesInstanceUID": _uid(ctx["seed"], ctx["clinic_index"], patient, "series", k),
            "SeriesNumber": k + 1,
            "InstanceNumber": 1,
        }
        drawn = _jitter(rng, lesion)
        density = render_chest(rng, (profile.rows, profile.columns), anatomy, drawn)
        relpath = f"study-{patient + 1:04d}/series-{ctx['series']}/IM{k + 1}{profile.extension}"
        if drawn is not None:
            row, col, radius = drawn["drawn"]
            ctx["findings"][relpath] = {
                "row": row,
                "col": col,
                "radius": radius,
                "rows": profile.rows,
                "cols": profile.columns,
            }
        _save(_image_dataset(profile, _stored_values(density, profile), tags), out_dir / relpath, profile.syntax)
        written.append((relpath, uid, label))
    return written


def _jitter(rng: np.random.Generator, lesion: dict[str, float] | None) -> dict[str, float] | None:
    """The same lesion on a follow-up image: slightly moved, resized and brighter/dimmer."""
    if lesion is None:
        return None
    moved = dict(lesion)
    moved["u"] += rng.normal(0, 0.015)
    moved["v"] += rng.normal(0, 0.015)
    moved["radius"] *= rng.uniform(0.93, 1.07)
    moved["amplitude"] *= rng.uniform(0.93, 1.07)
    return moved


def _write_manifest(out_dir: Path, clinic_index: int, entries: list[tuple[str, str, int]]) -> str:
    """labels.csv: even clinics list files, odd clinics list SOPInstanceUIDs."""
    key = "file" if clinic_index % 2 == 0 else "sop_instance_uid"
    with (out_dir / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([key, "label"])
        for relpath, uid, label in entries:
            writer.writerow([relpath if key == "file" else uid, LABELS[label]])
    return key


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of a generated clinic: everything but labels.csv and findings.json."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in ("labels.csv", FINDINGS_FILE))


def write_clinic(
    out_dir: Path, *, clinic_index: int, n_patients: int = 60, prevalence: float = 0.5, seed: int = 0
) -> dict[str, Any]:
    """Write one fake clinic (DICOM files + labels.csv, written last) and return counts only.

    Deterministic for (clinic_index, seed): same pixels, tags, UIDs and bytes.
    """
    if n_patients < 1 or not 0.0 <= prevalence <= 1.0:
        raise ValueError("n_patients must be >= 1 and prevalence in [0, 1]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, clinic_index])
    ctx = {
        "profile": _profile(clinic_index),
        "clinic_index": clinic_index,
        "seed": seed,
        "series": 0,
        "used_ids": set(),
        "institution": _INSTITUTIONS[clinic_index % len(_INSTITUTIONS)],
        "findings": {},
    }
    entries: list[tuple[str, str, int]] = []
    patient_labels = _patient_labels(rng, n_patients, prevalence)
    for patient, label in enumerate(patient_labels):
        entries += _write_patient(out_dir, rng, ctx, patient, label)
    write_findings(out_dir, ctx["findings"])
    key = _write_manifest(out_dir, clinic_index, entries)
    return _clinic_summary(clinic_index, ctx["profile"], key, patient_labels, entries)


def _clinic_summary(
    clinic_index: int, profile: _Profile, key: str, patient_labels: list[int], entries: list[tuple[str, str, int]]
) -> dict[str, Any]:
    """Counts and equipment facts of a written clinic; no identifiers."""
    return {
        "clinic_index": clinic_index,
        "patients": len(patient_labels),
        "images": len(entries),
        "patients_per_label": {name: patient_labels.count(i) for i, name in enumerate(LABELS)},
        "images_per_label": {name: sum(1 for *_, lab in entries if lab == i) for i, name in enumerate(LABELS)},
        "manifest_key": key,
        "modality": profile.modality,
        "photometric": profile.photometric,
        "bits_stored": profile.bits_stored,
        "rows": profile.rows,
        "columns": profile.columns,
        "transfer_syntax": str(profile.syntax),
    }


def write_federation(workdir: Path, n_clinics: int = 3, *, n_patients: int = 60, seed: int = 0) -> list[Path]:
    """Write workdir/clinic-1..N with prevalences cycling through PREVALENCES.

    A clinic whose labels.csv exists is left alone (labels.csv is written last,
    so a half-written clinic is simply written again).
    """
    workdir = Path(workdir)
    folders = []
    for index in range(1, n_clinics + 1):
        folder = workdir / f"clinic-{index}"
        if not (folder / "labels.csv").is_file():
            prevalence = PREVALENCES[(index - 1) % len(PREVALENCES)]
            write_clinic(folder, clinic_index=index, n_patients=n_patients, prevalence=prevalence, seed=seed)
        folders.append(folder)
    return folders


def phi_values(folder: Path) -> set[str]:
    """Every fake identifying value written under folder (plus name parts), for leak scans.

    Reads the files back, so it also works on clinics written by another process;
    files that are not DICOM are skipped.
    """
    values: set[str] = set()
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name == "labels.csv":
            continue
        try:
            with pydicom_quiet():
                ds = dcmread(path, stop_before_pixels=True, specific_tags=list(PHI_FIELDS))
                values |= _phi_strings(ds)
        except Exception:
            continue
    return {v for v in values if len(v) >= 4}


def _phi_strings(ds: Dataset) -> set[str]:
    """The PHI_FIELDS values of one dataset; person names also by family and given name."""
    found: set[str] = set()
    for keyword in PHI_FIELDS:
        value = ds.get(keyword)
        if value:
            found.add(str(value))
            if keyword.endswith("Name") and keyword != "InstitutionName":
                found |= {part for part in (value.family_name, value.given_name) if part}
    return found
