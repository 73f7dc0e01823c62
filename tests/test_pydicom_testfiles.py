"""Every DICOM test file pydicom has locally, through the path ``client-node check-data``
takes (header_facts, then read_frames): each file decodes to finite 2-D grey frames in [0, 1]
or is rejected with a DicomError and a specific reason, never another exception; colour files
(PALETTE COLOR, RGB, YCbCr of every kind pydicom converts, multi-frame) decode to luma.

The files: pydicom's wheel (test_files with dicomdirtests, charset_files, palettes), plus
what its registered data sources (the ``pydicom-data`` package, when installed) and its
download cache hold already.  get_testdata_files() itself is not called: offline it waits on
the network for each file missing from the cache.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data.data_manager import DataTypes, external_data_sources
from pydicom.data.download import get_data_dir

from radfed.colour import PALETTE, RGB_DECODABLE
from radfed.dicom import REASONS, DicomError, header_facts, pydicom_quiet, read_frames

DATA = Path(pydicom.__file__).parent / "data"
FOLDERS = ("test_files", "charset_files", "palettes")  # dicomdirtests lives in test_files
NOT_DATA = {".py", ".pyc", ".json"}
GENERIC = {"decode-error"}
# The wheel's files that never decode: genuinely broken (see /work/shared/notes/dicom.md).
BROKEN = {
    "JPEG-lossy.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm",
    "MR_truncated.dcm",
    "badVR.dcm",
    "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm",
    "emri_small_jpeg_2k_lossless_too_short.dcm",
}


def local_files() -> list[Path]:
    """Every regular data file pydicom has on this machine (DICOM or not: a loader meets both)."""
    files = [p for folder in FOLDERS for p in (DATA / folder).rglob("*") if p.is_file()]
    for source in external_data_sources().values():
        files += [Path(p) for p in source.get_paths("**/*", DataTypes.DATASET)]
    files += [p for p in get_data_dir().rglob("*") if p.is_file()]  # earlier downloads only
    unique = {p.resolve() for p in files if p.suffix not in NOT_DATA and "__pycache__" not in p.parts}
    return sorted(unique)


def photometric(path: Path) -> str:
    """The header's PhotometricInterpretation ('' for files pydicom cannot read at all)."""
    try:
        with pydicom_quiet():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    except Exception:  # noqa: BLE001 - not DICOM at all: no photometric interpretation
        return ""


@pytest.fixture(scope="module")
def outcomes() -> dict[Path, tuple[str, list[np.ndarray] | DicomError]]:
    """Per file: (photometric, the frames read_frames returned or the DicomError it raised),
    after checking that header_facts agrees with read_frames about rejected files."""
    results = {}
    for path in local_files():
        facts = header_facts(path)
        try:
            outcome: list[np.ndarray] | DicomError = read_frames(path, frame_policy="all")
        except DicomError as exc:
            outcome = exc
        # Anything else propagates and fails the test: the loader would call it decode-error.
        header_reason = facts if isinstance(facts, str) else facts["problem"]
        if header_reason:
            assert isinstance(outcome, DicomError) and outcome.reason == header_reason, (path.name, header_reason)
        results[path] = (photometric(path), outcome)
    return results


def test_the_walk_sees_the_whole_package() -> None:
    files = local_files()
    assert len(files) >= 190
    assert any("dicomdirtests" in p.parts for p in files) and any("palettes" in p.parts for p in files)


@pytest.mark.e2e
def test_every_file_decodes_to_grey_or_is_rejected_specifically(outcomes: dict) -> None:
    counts: Counter[str] = Counter()
    for path, (_, outcome) in outcomes.items():
        if isinstance(outcome, DicomError):
            assert outcome.reason in REASONS and outcome.reason not in GENERIC, (path.name, outcome.reason)
            assert "\n" not in str(outcome) and str(outcome).endswith(REASONS[outcome.reason]), path.name
            counts[outcome.reason] += 1
            if outcome.reason in {"corrupt", "truncated", "not-an-image"}:
                assert path.name in BROKEN, (path.name, outcome.reason)
            continue
        assert outcome, path.name
        for frame in outcome:
            assert frame.dtype == np.float32 and frame.ndim == 2, path.name
            assert np.isfinite(frame).all() and frame.min() >= 0.0 and frame.max() <= 1.0, path.name
        counts["decoded"] += 1
    print(f"\n{len(outcomes)} files: {dict(sorted(counts.items()))}")
    # The wheel alone: 101 of its 107 pixel files decode (colour and palette included).
    assert counts["decoded"] >= 101, counts


@pytest.mark.e2e
def test_no_colour_file_is_refused_for_its_colours(outcomes: dict) -> None:
    colour = {path: outcome for path, (pi, outcome) in outcomes.items() if pi == PALETTE or pi in RGB_DECODABLE}
    assert sum(1 for p in colour if photometric(p) == PALETTE) >= 1  # examples_palette.dcm
    for path, outcome in colour.items():
        if isinstance(outcome, DicomError):
            assert outcome.reason not in {"unsupported-photometric", "bad-palette"}, (path.name, str(outcome))


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("examples_palette.dcm", 1),  # PALETTE COLOR
        ("examples_ybr_color.dcm", 30),  # YBR_FULL_422, JPEG baseline, multi-frame
        ("SC_rgb_rle_16bit_2frame.dcm", 2),  # RGB 16-bit, RLE
        ("examples_jpeg2k.dcm", 1),  # YBR_RCT, JPEG 2000
        ("SC_ybr_full_422_uncompressed.dcm", 1),
        ("SC_rgb_small_odd_big_endian.dcm", 1),
    ],
)
def test_colour_samples_become_grey_frames(name: str, frames: int) -> None:
    images = read_frames(DATA / "test_files" / name, frame_policy="all")
    assert len(images) == frames and all(image.ndim == 2 and image.std() > 0.01 for image in images)


def test_palette_file_looks_like_its_rgb_rendering() -> None:
    """examples_palette.dcm against pydicom's own RGB rendering of it, weighed by hand."""
    path = DATA / "test_files" / "examples_palette.dcm"
    ds = pydicom.dcmread(path)
    rgb = pydicom.pixels.apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    expected = rgb @ np.array([0.299, 0.587, 0.114]) / 65535  # its table has 16-bit entries
    np.testing.assert_allclose(read_frames(path)[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR
        "JPGExtended.dcm",  # JPEG extended 12-bit (pylibjpeg only)
        "JPEGLSNearLossless_16.dcm",  # JPEG-LS
        "MR_small_jp2klossless.dcm",  # JPEG 2000
        "MR_small_RLE.dcm",  # RLE
        "image_dfl.dcm",  # deflated
        "SC_ybr_full_422_uncompressed.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_compressed_and_deflated_samples_decode(name: str) -> None:
    image = read_frames(DATA / "test_files" / name)[0]
    assert image.std() > 0.01


def test_jpeg_2000_lossless_equals_uncompressed_original() -> None:
    plain = read_frames(DATA / "test_files" / "MR_small.dcm")[0]
    for name in ("MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(read_frames(DATA / "test_files" / name)[0], plain)


@pytest.mark.e2e
def test_check_data_audits_every_shipped_file_without_a_manifest(tmp_path: Path) -> None:
    """`client-node check-data DIR` on pydicom's whole test collection, no manifest: exit 0,
    every file decoded, skipped as not an image, or rejected with a reason; no PALETTE COLOR
    file rejected for its photometric interpretation."""
    import json
    import shutil

    from typer.testing import CliRunner

    from client_node.cli import app

    files = local_files()
    palette = set()
    for i, path in enumerate(files):
        name = f"{i:03d}-{path.name}"
        shutil.copy(path, tmp_path / name)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
                palette.add(name)
        except Exception:
            pass
    result = CliRunner().invoke(app, ["check-data", str(tmp_path), "--image-size", "32", "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    card = json.loads(result.output[result.output.index("{") :])
    s = card["summary"]
    assert s["files"] == len(files)
    duplicates = s["rejected"].get("duplicate-sop-instance-uid", 0)
    assert s["images"] + s["not_images"] + s["rejected_total"] + s["filtered"] == len(files)
    assert s["images"] >= 60 and duplicates > 0, s
    assert all(item["reason"] and item["fix"] for item in card["rejected"]), card["rejected"]
    assert palette, "pydicom ships PALETTE COLOR files"
    refused = [item for item in card["rejected"] if item["where"] in palette and "photometric" in item["reason"]]
    assert not refused, refused
    assert "labels are missing" in card["note"]
