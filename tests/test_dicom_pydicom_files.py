"""Every DICOM file shipped inside the installed pydicom package either decodes to a
finite float32 image or is rejected with a specific reason (never the generic one).

Paths are built from the package folder: get_testdata_file(s) would try the network.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radfed.dicom import REASONS, DicomError, read_frames

DATA = Path(pydicom.__file__).parent / "data"
FOLDERS = ("test_files", "charset_files", "palettes")  # dicomdirtests lives in test_files
NOT_DATA = {".py", ".pyc", ".json"}
GENERIC = {"decode-error"}


def shipped_files() -> list[Path]:
    """Every regular file under pydicom's data folders (DICOM or not: the loader meets both)."""
    files = [p for folder in FOLDERS for p in (DATA / folder).rglob("*") if p.is_file()]
    return sorted(p for p in files if p.suffix not in NOT_DATA and "__pycache__" not in p.parts)


def test_the_walk_sees_the_whole_package() -> None:
    files = shipped_files()
    assert len(files) >= 190
    assert any("dicomdirtests" in p.parts for p in files) and any("palettes" in p.parts for p in files)


def test_every_shipped_file_decodes_or_is_rejected_specifically() -> None:
    outcomes: Counter[str] = Counter()
    broken: list[str] = []
    for path in shipped_files():
        try:
            frames = read_frames(path, frame_policy="all")
        except DicomError as exc:
            assert exc.reason in REASONS and exc.reason not in GENERIC, (path.name, exc.reason)
            assert "\n" not in str(exc) and str(exc).endswith(REASONS[exc.reason])
            outcomes[exc.reason] += 1
            if exc.reason in {"corrupt", "truncated", "not-an-image"}:
                broken.append(path.name)
            continue
        assert frames, path.name
        for frame in frames:
            assert frame.dtype == np.float32 and frame.ndim == 2, path.name
            assert np.isfinite(frame).all() and frame.min() >= 0.0 and frame.max() <= 1.0, path.name
        outcomes["decoded"] += 1
    # The notes' count: ~101 of 107 pixel files decode; the rest are genuinely broken.
    assert outcomes["decoded"] >= 99, outcomes
    assert set(broken) <= {
        "JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm", "MR_truncated.dcm", "badVR.dcm",
        "meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm",
    }, broken


@pytest.mark.parametrize("name", [
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR
    "JPGExtended.dcm",  # JPEG extended 12-bit (pylibjpeg only)
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS
    "MR_small_jp2klossless.dcm",  # JPEG 2000
    "MR_small_RLE.dcm",  # RLE
    "image_dfl.dcm",  # deflated
    "SC_ybr_full_422_uncompressed.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
])
def test_compressed_and_deflated_samples_decode(name: str) -> None:
    image = read_frames(DATA / "test_files" / name)[0]
    assert image.std() > 0.01


def test_jpeg_2000_lossless_equals_uncompressed_original() -> None:
    plain = read_frames(DATA / "test_files" / "MR_small.dcm")[0]
    for name in ("MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(read_frames(DATA / "test_files" / name)[0], plain)


def test_check_data_audits_every_shipped_file_without_a_manifest(tmp_path: Path) -> None:
    """`client-node check-data DIR` on pydicom's whole test collection, no manifest: exit 0,
    every file decoded, skipped as not an image, or rejected with a reason; no PALETTE COLOR
    file rejected for its photometric interpretation."""
    import json
    import shutil

    from typer.testing import CliRunner

    from client_node.cli import app

    files = shipped_files()
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
    card = json.loads(result.output[result.output.index("{"):])
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
