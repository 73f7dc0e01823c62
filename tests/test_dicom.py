"""radfed.dicom on real files written with pydicom: pixel VALUES, not just shapes,
and every rejection with its reason and a PHI-free message."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from radfed.dicom import REASONS, DicomError, header_summary, pydicom_quiet, read_header, read_pixels, resize_pad

PATIENT_NAME = "QUILLFEATHER^Rosalind"
PATIENT_ID = "MRN-TEST-77123"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def make_dataset(pixels: np.ndarray, *, bits_stored: int = 16, signed: bool = False, **tags: object) -> Dataset:
    """A minimal CR image dataset around ``pixels`` (2-D, or 3-D frames x rows x cols)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, PATIENT_ID, "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    """Write with preamble and file meta, like a PACS export."""
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(rows: int = 8, cols: int = 10, top: int = 1000) -> np.ndarray:
    """Distinct values 0..top so min-max results are predictable."""
    return np.linspace(0, top, rows * cols).round().reshape(rows, cols)


def rejected(path: Path) -> DicomError:
    """The DicomError read_pixels raises for path, checked to be PHI-free and one line."""
    with pytest.raises(DicomError) as info:
        read_pixels(path)
    err = info.value
    assert err.reason in REASONS
    text = str(err)
    assert "\n" not in text and PATIENT_NAME not in text and PATIENT_ID not in text
    assert "QUILLFEATHER" not in text and len(text) > 20
    return err


# ----------------------------------------------------------------------------- values


def test_min_max_scaling_without_window(tmp_path: Path) -> None:
    pixels = ramp()
    image = read_pixels(save(make_dataset(pixels + 200), tmp_path / "a.dcm"))
    assert image.dtype == np.float32 and image.shape == (8, 10)
    np.testing.assert_allclose(image, pixels / 1000, atol=1e-6)


def test_monochrome1_is_inverse_of_monochrome2_twin(tmp_path: Path) -> None:
    pixels = ramp()
    window = {"WindowCenter": 500, "WindowWidth": 800}
    mono2 = read_pixels(save(make_dataset(pixels, **window), tmp_path / "m2.dcm"))
    mono1 = read_pixels(
        save(make_dataset(pixels, PhotometricInterpretation="MONOCHROME1", **window), tmp_path / "m1.dcm")
    )
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono2.min() == 0.0 and mono2.max() == 1.0  # the 800-wide window clips both ends


def test_rescale_then_window_puts_40_hu_at_half(tmp_path: Path) -> None:
    hu = np.array([[-1000, -160, 40, 240, 1000, 40]])
    stored = (hu + 1024) // 2  # slope 2, intercept -1024
    ds = make_dataset(stored, signed=True, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    image = read_pixels(save(ds, tmp_path / "ct.dcm"))
    np.testing.assert_allclose(image[0], [0.0, 0.0, 0.5, 1.0, 1.0, 0.5], atol=0.005)


def test_first_of_several_windows_is_used(tmp_path: Path) -> None:
    pixels = np.array([[0, 100, 200, 300, 400]])
    ds = make_dataset(pixels, WindowCenter=[200, 1000], WindowWidth=[401, 50])
    image = read_pixels(save(ds, tmp_path / "w.dcm"))
    np.testing.assert_allclose(image[0], [0.0, 0.25, 0.5, 0.75, 1.0], atol=0.005)


def test_twelve_bits_stored_in_sixteen(tmp_path: Path) -> None:
    pixels = np.array([[0, 1024, 2048, 4095]])
    garbage_high_bits = pixels | 0xF000  # overlay bits above HighBit must be ignored
    ds = make_dataset(garbage_high_bits, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    image = read_pixels(save(ds, tmp_path / "12.dcm"))
    np.testing.assert_allclose(image[0], [0.0, 0.25, 0.5, 1.0], atol=0.001)


def test_rle_compressed_equals_uncompressed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(32, 24))
    plain = read_pixels(save(make_dataset(pixels, bits_stored=12), tmp_path / "plain.dcm"))
    ds = make_dataset(pixels, bits_stored=12)
    ds.compress(RLELossless)
    path = save(ds, tmp_path / "rle.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_pixels(path), plain)


def test_big_endian_matches_little_endian() -> None:
    little = read_pixels(PYDICOM_FILES / "MR_small.dcm")
    big = read_pixels(PYDICOM_FILES / "MR_small_bigendian.dcm")
    np.testing.assert_array_equal(big, little)
    assert little.std() > 0.05


def test_multiframe_takes_middle_frame(tmp_path: Path) -> None:
    frames = np.stack([np.full((4, 5), value) for value in (100, 200, 300)])
    frames[:, 0, 0] = 0  # a known minimum ...
    frames[:, -1, -1] = 400  # ... and maximum in every frame
    image = read_pixels(save(make_dataset(frames), tmp_path / "mf.dcm"))
    assert image.shape == (4, 5)
    assert image[2, 2] == pytest.approx(0.5)  # 200 on the 0..400 scale: frame 1 of 0, 1, 2


def test_enhanced_multiframe_functional_groups(tmp_path: Path) -> None:
    """Rescale and window inside functional groups (where top-level LUT code looks in vain)."""
    frames = np.stack([np.full((4, 4), 1024 + hu) for hu in (-1000, 40, 1000)])
    ds = make_dataset(frames, signed=True)
    transform, voi, group = Dataset(), Dataset(), Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
    voi.WindowCenter, voi.WindowWidth = 40, 400
    group.PixelValueTransformationSequence, group.FrameVOILUTSequence = [transform], [voi]
    ds.SharedFunctionalGroupsSequence = [group]
    image = read_pixels(save(ds, tmp_path / "enh.dcm"))
    np.testing.assert_allclose(image, 0.5, atol=0.005)


def test_rgb_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 1] = (255, 255, 255)
    ds = make_dataset(np.zeros((2, 2)), SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    image = read_pixels(save(ds, tmp_path / "rgb.dcm"))
    np.testing.assert_allclose(image, [[0.299, 0.587], [0.0, 1.0]], atol=1e-3)


def test_raw_dataset_without_preamble_is_read(tmp_path: Path) -> None:
    ds = make_dataset(ramp())
    del ds.file_meta
    path = tmp_path / "raw"
    dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_pixels(path), ramp() / 1000, atol=1e-6)


# ----------------------------------------------------------------------------- rejections


def test_truncated_file(tmp_path: Path) -> None:
    data = save(make_dataset(ramp(64, 64)), tmp_path / "full.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 3000])
    assert rejected(tmp_path / "cut.dcm").reason == "truncated"


def test_zero_length_file(tmp_path: Path) -> None:
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert rejected(tmp_path / "empty.dcm").reason == "empty-file"


@pytest.mark.parametrize(
    "content", [b"file,label\nx.dcm,normal\n", b"\x89PNG\r\n\x1a\n" + bytes(300), bytes(range(256)) * 4]
)
def test_non_dicom_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "notes.txt").write_bytes(content)
    assert rejected(tmp_path / "notes.txt").reason == "not-dicom"


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    ds = make_dataset(ramp())
    del ds.PixelData
    assert rejected(save(ds, tmp_path / "nopix.dcm")).reason == "no-pixel-data"


def test_garbage_after_file_meta(tmp_path: Path) -> None:
    data = save(make_dataset(ramp()), tmp_path / "ok.dcm").read_bytes()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # preamble, DICM, group length element
    (tmp_path / "bad.dcm").write_bytes(data[:meta_end] + b"\xff" * 300)
    assert rejected(tmp_path / "bad.dcm").reason in {"corrupt", "truncated"}


def test_header_claiming_gigabytes_is_refused_before_decoding(tmp_path: Path) -> None:
    ds = make_dataset(ramp(), Rows=30000, Columns=30000, NumberOfFrames=50)
    assert rejected(save(ds, tmp_path / "huge.dcm")).reason == "too-large"


def test_unknown_transfer_syntax(tmp_path: Path) -> None:
    ds = make_dataset(ramp())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: nothing decodes it here
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    assert rejected(save(ds, tmp_path / "odd.dcm")).reason == "unsupported-syntax"


def test_palette_without_its_lookup_table_and_zero_rows(tmp_path: Path) -> None:
    palette = make_dataset(ramp(), PhotometricInterpretation="PALETTE COLOR")
    assert rejected(save(palette, tmp_path / "pal.dcm")).reason == "bad-palette"
    assert rejected(save(make_dataset(ramp(), Rows=0), tmp_path / "zero.dcm")).reason == "not-an-image"


def test_dicom_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(DicomError("truncated", "cut short; copy again")))
    assert (err.reason, str(err)) == ("truncated", "cut short; copy again")


def test_pydicom_warnings_quoting_values_do_not_reach_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = make_dataset(ramp())
    path = save(ds, tmp_path / "ok.dcm")
    data = path.read_bytes().replace(b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.Z")  # invalid UI in the meta
    path.write_bytes(data)
    caplog.set_level(logging.DEBUG)
    rejected(path)
    assert "1.2.840.10008.1.2.Z" not in caplog.text


def test_pydicom_quiet_drops_pydicom_log_records_only_inside(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pydicom_quiet():
        logging.getLogger("pydicom").warning("Invalid value for VR LO: 'SECRET-INSIDE'")
    logging.getLogger("pydicom").warning("outside")
    assert "SECRET-INSIDE" not in caplog.text and "outside" in caplog.text


# ----------------------------------------------------------------------------- resize and summary


def test_resize_pad_keeps_aspect_and_centres() -> None:
    image = np.ones((100, 50), dtype=np.float32)
    out = resize_pad(image, 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert np.all(out[:, :16] == 0) and np.all(out[:, 48:] == 0)
    np.testing.assert_allclose(out[:, 17:47], 1.0, atol=1e-5)


def test_resize_pad_antialiases_fine_stripes() -> None:
    stripes = np.tile([0.0, 1.0], (256, 128)).astype(np.float32)
    out = resize_pad(stripes, 32)
    np.testing.assert_allclose(out, 0.5, atol=0.02)  # averaged, not aliased into stripes


@pytest.mark.parametrize(("rows", "cols", "size"), [(300, 260, 64), (37, 50, 64), (1000, 333, 96)])
def test_resize_pad_matches_torch_antialiased_bilinear(rows: int, cols: int, size: int) -> None:
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(rows).random((rows, cols), dtype=np.float32)
    out = resize_pad(image, size)
    scale = size / max(rows, cols)
    new_h, new_w = round(rows * scale), round(cols * scale)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(image)[None, None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )[0, 0].numpy()
    top, left = (size - new_h) // 2, (size - new_w) // 2
    np.testing.assert_allclose(out[top : top + new_h, left : left + new_w], ref, atol=1e-5)


def test_resize_pad_same_size_is_identity() -> None:
    image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    np.testing.assert_array_equal(resize_pad(image, 32), image)


def test_header_summary_has_no_identifiers(tmp_path: Path) -> None:
    ds = make_dataset(ramp(), Manufacturer="ACME", BitsStored=12, InstitutionName="St. Nowhere Hospital")
    summary = header_summary(read_header(save(ds, tmp_path / "h.dcm")))
    assert summary == {
        "Modality": "CR",
        "Manufacturer": "ACME",
        "Rows": 8,
        "Columns": 10,
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsStored": 12,
        "TransferSyntaxUID": ExplicitVRLittleEndian,
    }
