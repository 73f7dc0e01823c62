"""Non-IID synthetic federations beside the demo's: other findings, other scanners.

The training recipe was tuned on one dataset (radfed.demo_data) and broke on data unlike
it (issue 14). These generators give the benches and tests federations that differ from
the demo in what the finding looks like *and* in how each site's scanner and PACS export
shift the pixels: bit depth, MONOCHROME1, image size, transfer syntax, prevalence, and a
per-clinic brightness, contrast (gamma) and noise level that a model must not latch onto.

Every generator has the same signature, ``(workdir, n_clinics=3, *, n_patients, seed) ->
[clinic folders]``, writes real DICOM through pydicom (radfed.demo_data's writer, so the
files carry the same fake PHI and manifests) and is deterministic per seed. Labels are
the demo's ``("normal", "opacity")`` names so every spec's default labels apply; the
second class means "the finding is present", whatever it looks like. A clinic whose
labels.csv exists is left alone, as in demo_data.write_federation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from radfed import demo_data as dd

Generator = Callable[..., list[Path]]


@dataclass(frozen=True)
class Site:
    """One clinic's scanner: its DICOM profile, label mix and how it distorts density."""

    profile: dd._Profile
    prevalence: float
    brightness: float  # added to density in [0, 1]
    gamma: float  # density ** gamma: contrast curve of the detector/processing
    noise: float  # std of extra detector noise (density units)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(v, u) in [-1, 1]: the coordinates render_chest draws anatomy in."""
    rows, cols = shape
    return np.meshgrid(
        np.linspace(-1, 1, rows, dtype=np.float32), np.linspace(-1, 1, cols, dtype=np.float32), indexing="ij"
    )


# ----------------------------------------------------------------------------- findings


def _nodules(rng: np.random.Generator, shape: tuple[int, int], anatomy: dict[str, float]) -> np.ndarray:
    """1-3 small, sharp-edged, dense nodules (radius 3.5-6 % of the width) inside the lungs.

    Unlike the demo's single large soft opacity: small, several, and hard-edged, so a model
    must find local detail rather than a regional brightness change.
    """
    v, u = _grid(shape)
    rows, cols = shape
    lungs = np.clip(dd._lung(u, v, anatomy, -1.0) + dd._lung(u, v, anatomy, 1.0), 0, 1)
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        side = rng.choice([-1.0, 1.0])
        cu = side * anatomy["lung_x"] + rng.uniform(-0.5, 0.5) * anatomy["lung_rx"]
        cv = anatomy["lung_y"] + rng.uniform(-0.6, 0.3) * anatomy["lung_ry"]
        radius = rng.uniform(0.035, 0.06) * cols
        distance = np.sqrt(((u - cu) * cols / 2) ** 2 + ((v - cv) * rows / 2) ** 2)
        out += rng.uniform(0.18, 0.28) * dd._sigmoid(-(distance - radius) / (0.06 * radius))
    return out * lungs


def _effusion(rng: np.random.Generator, shape: tuple[int, int], anatomy: dict[str, float]) -> np.ndarray:
    """A pleural effusion: fluid filling the base of one lung up to a meniscus that rises
    laterally (a blunted costophrenic angle). A shape and position change of the lung
    base, not a blob: the lower lung turns soft-tissue grey."""
    v, u = _grid(shape)
    side = rng.choice([-1.0, 1.0])
    lung = dd._lung(u, v, anatomy, side)
    depth = rng.uniform(0.30, 0.50)  # fraction of the lung height filled at the middle
    level = anatomy["lung_y"] + anatomy["lung_ry"] * (1.0 - 2.0 * depth)
    lateral = np.clip(side * (u - side * anatomy["lung_x"]) / anatomy["lung_rx"], -1.0, 1.0)
    meniscus = level - 0.18 * anatomy["lung_ry"] * (lateral + 1.0) ** 2  # higher laterally
    fluid = dd._sigmoid((v - meniscus) / 0.025)
    return rng.uniform(0.26, 0.34) * lung * fluid


# ----------------------------------------------------------------------------- writing


def _scanner(density: np.ndarray, site: Site, rng: np.random.Generator) -> np.ndarray:
    """The site's contrast curve, brightness shift and detector noise, kept in [0, 1]."""
    shifted = np.clip(density, 0, 1) ** site.gamma + site.brightness
    return np.clip(shifted + rng.normal(0, site.noise, size=density.shape), 0.0, 1.0)


def _write_site(
    out_dir: Path, index: int, site: Site, finding: Callable, n_patients: int, seed: int, salt: str
) -> None:
    """One clinic: 2 images per patient (one study, two series), labels.csv written last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, index, sum(map(ord, salt))])
    profile, shape = site.profile, (site.profile.rows, site.profile.columns)
    used: set[str] = set()
    institution = dd._INSTITUTIONS[(index + len(salt)) % len(dd._INSTITUTIONS)]
    entries: list[tuple[str, str, int]] = []
    for patient, label in enumerate(dd._patient_labels(rng, n_patients, site.prevalence)):
        identity = dd._fake_patient(rng, index, used)
        anatomy = dd._anatomy(rng)
        study = dd._study_tags(rng, index, f"{salt}{seed}", patient, 0)
        lesion = finding(rng, shape, anatomy) if label else None
        for k in range(2):
            uid = dd._uid(salt, seed, index, patient, "image", k)
            tags = {
                **identity,
                **study,
                "InstitutionName": institution,
                "SOPInstanceUID": uid,
                "SeriesInstanceUID": dd._uid(salt, seed, index, patient, "series", k),
                "SeriesNumber": k + 1,
                "InstanceNumber": 1,
            }
            density = dd.render_chest(rng, shape, anatomy, None)
            if lesion is not None:  # the same finding on both images, a little dimmer or brighter
                density = density + lesion * rng.uniform(0.93, 1.07)
            pixels = dd._stored_values(_scanner(density, site, rng), profile)
            relpath = f"p{patient + 1:04d}/s{k + 1}/img{profile.extension or '_raw'}"
            dd._save(dd._image_dataset(profile, pixels, tags), out_dir / relpath, profile.syntax)
            entries.append((relpath, uid, label))
    dd._write_manifest(out_dir, index, entries)


def _federation(
    workdir: Path, sites: tuple[Site, ...], finding: Callable, n_clinics: int, n_patients: int, seed: int, salt: str
) -> list[Path]:
    workdir = Path(workdir)
    folders = []
    for index in range(1, n_clinics + 1):
        folder = workdir / f"clinic-{index}"
        if not (folder / "labels.csv").is_file():
            _write_site(folder, index, sites[(index - 1) % len(sites)], finding, n_patients, seed, salt)
        folders.append(folder)
    return folders


def _profile(
    rows: int, cols: int, bits: int, photometric: str, modality: str, maker: str, syntax: str, ext: str = ".dcm"
) -> dd._Profile:
    return dd._Profile(
        rows, cols, bits, photometric, modality, maker, f"{maker.split()[0]}-1", ((0.5, 0.95),), syntax, ext
    )


NODULE_SITES = (
    Site(
        _profile(192, 160, 10, "MONOCHROME2", "DX", "Globex Digital", ExplicitVRLittleEndian),
        prevalence=0.2,
        brightness=0.06,
        gamma=0.85,
        noise=0.010,
    ),
    Site(
        _profile(352, 352, 14, "MONOCHROME1", "CR", "Umbrella Radiology", ImplicitVRLittleEndian, ""),
        prevalence=0.5,
        brightness=-0.05,
        gamma=1.25,
        noise=0.025,
    ),
    Site(
        _profile(256, 224, 16, "MONOCHROME2", "DX", "Vandelay Imaging", RLELossless),
        prevalence=0.35,
        brightness=0.0,
        gamma=1.0,
        noise=0.004,
    ),
)

EFFUSION_SITES = (
    Site(
        _profile(240, 240, 12, "MONOCHROME1", "CR", "Hooli Medical", RLELossless),
        prevalence=0.6,
        brightness=-0.03,
        gamma=1.15,
        noise=0.020,
    ),
    Site(
        _profile(320, 256, 16, "MONOCHROME2", "DX", "Wayne Diagnostics", ExplicitVRLittleEndian, ""),
        prevalence=0.25,
        brightness=0.08,
        gamma=0.80,
        noise=0.006,
    ),
    Site(
        _profile(160, 200, 10, "MONOCHROME2", "DX", "Stark Detectors", ImplicitVRLittleEndian),
        prevalence=0.4,
        brightness=0.02,
        gamma=1.05,
        noise=0.030,
    ),
)


def write_nodules(workdir: Path, n_clinics: int = 3, *, n_patients: int = 60, seed: int = 0) -> list[Path]:
    """Small hard-edged nodules (1-3 per positive patient). Clinics differ: 10-bit DX 192x160
    with a bright, low-gamma processing and 20 % prevalence; 14-bit MONOCHROME1 CR 352x352,
    implicit VR, no file extension, darker, high-gamma, noisy, 50 %; 16-bit RLE DX 256x224,
    clean, 35 %."""
    return _federation(workdir, NODULE_SITES, _nodules, n_clinics, n_patients, seed, "nodules")


def write_effusion(workdir: Path, n_clinics: int = 3, *, n_patients: int = 60, seed: int = 0) -> list[Path]:
    """Pleural effusion at one lung base (a shape/position finding). Clinics differ: 12-bit
    MONOCHROME1 CR 240x240 RLE, slightly dark and high-gamma, 60 % prevalence; 16-bit DX
    320x256 without extension, bright and flat (gamma 0.8), clean, 25 %; 10-bit DX 160x200
    (portrait), implicit VR, very noisy, 40 %."""
    return _federation(workdir, EFFUSION_SITES, _effusion, n_clinics, n_patients, seed, "effusion")


def write_demo(workdir: Path, n_clinics: int = 3, *, n_patients: int = 60, seed: int = 0) -> list[Path]:
    """The demo's federation (radfed.demo_data): one large soft opacity. Clinics differ:
    12-bit DX 288x240, 16-bit MONOCHROME1 CR 256x256, 12-bit RLE CR 320x288 (a 4th clinic:
    16-bit DX 224x224 implicit VR); prevalence 0.3/0.5/0.7; 2-4 images per patient."""
    return dd.write_federation(workdir, n_clinics, n_patients=n_patients, seed=seed)


GENERATORS: dict[str, Generator] = {"demo": write_demo, "nodules": write_nodules, "effusion": write_effusion}
SITES: dict[str, tuple[Site, ...]] = {"nodules": NODULE_SITES, "effusion": EFFUSION_SITES}
