"""Colour files become their luma (radfed.colour via radfed.dicom): PALETTE COLOR through
pydicom's apply_color_lut (plain and segmented tables, 8 and 16 bits, multi-frame), RGB and
YCbCr through pydicom's decoders; what pydicom cannot convert is refused from the header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from radfed.colour import LUMA_WEIGHTS, photometric_problem
from radfed.dicom import REASONS, DicomError, header_facts, read_frames, read_pixels


def colour_dataset(pixels: np.ndarray, photometric: str, **tags: object) -> Dataset:
    """A secondary-capture dataset: pixels are (frames,) rows x cols (x samples), any uint dtype."""
    samples = 1 if photometric == "PALETTE COLOR" else pixels.shape[-1]
    frames = pixels.shape[0] if pixels.ndim == (3 if samples == 1 else 4) else 1
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID = "OT", "TEST-COLOUR"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if samples > 1 else pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    bits = pixels.dtype.itemsize * 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def with_palette(ds: Dataset, red: np.ndarray, green: np.ndarray, blue: np.ndarray, bits: int = 8) -> Dataset:
    """Plain Palette Color LUT module: entries stored as 16-bit words, nominal size ``bits``."""
    for channel, lut in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{channel}PaletteColorLookupTableDescriptor", [len(lut), 0, bits])
        setattr(ds, f"{channel}PaletteColorLookupTableData", np.asarray(lut, dtype=np.uint16).tobytes())
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def luma(rgb: np.ndarray, top: float) -> np.ndarray:
    return (rgb[..., :3].astype(np.float64) @ LUMA_WEIGHTS) / top


INDICES = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5  # 0..235, distinct


def rejection(path: Path) -> DicomError:
    with pytest.raises(DicomError) as info:
        read_pixels(path)
    assert info.value.reason in REASONS and "\n" not in str(info.value)
    assert str(info.value).endswith(REASONS[info.value.reason]) and "TEST-COLOUR" not in str(info.value)
    return info.value


# ----------------------------------------------------------------------------- palettes


def test_grey_palette_gives_the_table_values(tmp_path: Path) -> None:
    ramp = np.arange(256)
    path = save(with_palette(colour_dataset(INDICES, "PALETTE COLOR"), ramp, ramp, ramp), tmp_path / "p.dcm")
    image = read_pixels(path)
    assert image.dtype == np.float32 and image.shape == (6, 8)
    np.testing.assert_allclose(image, INDICES / 255, atol=1e-6)
    assert header_facts(path)["problem"] == ""


def test_coloured_palette_gives_bt601_luma(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    red, green, blue = (rng.integers(0, 256, 256) for _ in range(3))
    path = save(with_palette(colour_dataset(INDICES, "PALETTE COLOR"), red, green, blue), tmp_path / "p.dcm")
    expected = luma(np.stack([red[INDICES], green[INDICES], blue[INDICES]], axis=-1), 255)
    np.testing.assert_allclose(read_pixels(path), expected, atol=1e-5)


def test_sixteen_bit_palette_multi_frame_and_rle(tmp_path: Path) -> None:
    wide = INDICES.astype(np.uint16)
    frames = np.stack([wide * 16, 4000 - wide * 16, 4095 + wide])
    ramp = np.linspace(0, 65535, 4096).round()  # 4096 entries: stored values above 4095 map to the last
    ds = with_palette(colour_dataset(frames, "PALETTE COLOR"), ramp, ramp, 65535 - ramp, bits=16)
    ds.compress(RLELossless, generate_instance_uid=False)
    path = save(ds, tmp_path / "p16.dcm")
    images = read_frames(path, frame_policy="all")
    assert len(images) == 3 and all(image.shape == (6, 8) for image in images)
    for image, idx in zip(images, np.minimum(frames, 4095)):
        rgb = np.stack([ramp[idx], ramp[idx], 65535 - ramp[idx]], axis=-1)
        np.testing.assert_allclose(image, luma(rgb, 65535), atol=1e-5)
    np.testing.assert_array_equal(read_pixels(path), images[1])  # the middle frame


def test_segmented_palette(tmp_path: Path) -> None:
    ds = colour_dataset(INDICES, "PALETTE COLOR")
    # 16-bit entries (pydicom reads the segments as words only then).  Red and green: one
    # discrete segment (opcode 0) of 256 values; blue: one value, then a linear segment (1) to 0.
    discrete = np.concatenate([[0, 256], np.arange(256) * 257]).astype(np.uint16)
    ramp_down = np.array([0, 1, 65535, 1, 255, 0], dtype=np.uint16)
    for channel, segments in (("Red", discrete), ("Green", discrete), ("Blue", ramp_down)):
        setattr(ds, f"{channel}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds.add_new(f"Segmented{channel}PaletteColorLookupTableData", "OW", segments.tobytes())
    image = read_pixels(save(ds, tmp_path / "seg.dcm"))
    blue = np.linspace(65535, 0, 256)[INDICES]
    expected = luma(np.stack([INDICES * 257.0, INDICES * 257.0, blue], axis=-1), 65535)
    np.testing.assert_allclose(image, expected, atol=1e-3)


def test_palette_whose_table_is_missing_or_damaged(tmp_path: Path) -> None:
    ramp = np.arange(256)
    missing = with_palette(colour_dataset(INDICES, "PALETTE COLOR"), ramp, ramp, ramp)
    del missing.GreenPaletteColorLookupTableData
    path = save(missing, tmp_path / "missing.dcm")
    assert rejection(path).reason == "bad-palette" and header_facts(path)["problem"] == "bad-palette"
    damaged = with_palette(colour_dataset(INDICES, "PALETTE COLOR"), ramp, ramp, ramp)
    damaged.RedPaletteColorLookupTableData = bytes(100)  # not 8 or 16 bits per entry
    assert rejection(save(damaged, tmp_path / "damaged.dcm")).reason == "bad-palette"


# ----------------------------------------------------------------------------- three samples


def test_rgb_8_and_16_bit_give_bt601_luma(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    np.testing.assert_allclose(
        read_pixels(save(colour_dataset(rgb, "RGB"), tmp_path / "a.dcm")), luma(rgb, 255), atol=1e-5
    )
    wide = rgb.astype(np.uint16) * 257
    np.testing.assert_allclose(
        read_pixels(save(colour_dataset(wide, "RGB"), tmp_path / "b.dcm")), luma(wide, 65535), atol=1e-5
    )


def test_ybr_full_matches_its_rgb_twin_in_every_frame(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (3, 5, 7, 3)).astype(np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    images = read_frames(save(colour_dataset(ybr, "YBR_FULL"), tmp_path / "ybr.dcm"), frame_policy="all")
    assert len(images) == 3
    for image, frame in zip(images, rgb):
        np.testing.assert_allclose(image, luma(frame, 255), atol=2 / 255)  # two 8-bit roundings


@pytest.mark.parametrize(
    ("photometric", "samples", "bits", "why"),
    [
        ("HSV", 3, 8, "no conversion"),
        ("CMYK", 4, 8, "no conversion"),
        ("ARGB", 4, 8, "no conversion"),
        ("YBR_PARTIAL_422", 3, 8, "no conversion"),
        ("YBR_PARTIAL_420", 3, 8, "no conversion"),
        ("RGB", 2, 8, "no conversion"),
        ("MONOCHROME2", 3, 8, "no conversion"),
        ("YBR_FULL", 3, 16, "8 bits only"),
        ("YBR_ICT", 3, 8, "outside JPEG 2000"),
    ],
)
def test_what_pydicom_cannot_convert_is_refused_from_the_header(
    tmp_path: Path, photometric: str, samples: int, bits: int, why: str
) -> None:
    pixels = np.zeros((4, 4, samples), dtype=np.uint8 if bits == 8 else np.uint16)
    path = save(colour_dataset(pixels, photometric), tmp_path / "c.dcm")
    error = rejection(path)
    assert error.reason == "unsupported-photometric" and why in str(error)
    assert header_facts(path)["problem"] == "unsupported-photometric"


def test_photometric_problem_accepts_what_pydicom_converts() -> None:
    for photometric, samples in (
        ("MONOCHROME1", 1),
        ("MONOCHROME2", 1),
        ("PALETTE COLOR", 1),
        ("RGB", 3),
        ("YBR_FULL", 3),
        ("YBR_FULL_422", 3),
    ):
        ds = Dataset()
        ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated = photometric, samples, 8
        assert photometric_problem(ds) == "", photometric
    ds.PhotometricInterpretation = "YBR_RCT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    assert photometric_problem(ds) == ""
