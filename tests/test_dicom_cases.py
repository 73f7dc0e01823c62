"""The issue's cases on generated files, checking pixel VALUES: compressed = uncompressed,
CT windows (presets and explicit), MONOCHROME1, YBR vs RGB, frame policies, enhanced
multi-frame per-frame groups.

JPEG baseline cannot be written here: pylibjpeg-libjpeg only decodes and pydicom has no
JPEG baseline encoder, so baseline is checked on pydicom's shipped files instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from radfed.dicom import WINDOW_PRESETS, preprocess_file, read_frames, read_pixels, resolve_window
from tests.test_dicom import make_dataset, ramp, save

SHIPPED = Path(pydicom.__file__).parent / "data" / "test_files"


def ct(hu: np.ndarray, **tags: object) -> Dataset:
    """A signed CT dataset storing hu + 1024 with intercept -1024 (any frames)."""
    ds = make_dataset(np.asarray(hu) + 1024, signed=True, RescaleSlope=1, RescaleIntercept=-1024, **tags)
    ds.Modality = "CT"
    return ds


# ----------------------------------------------------------------------------- compression


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda u: u.name)
def test_lossless_compressed_equals_uncompressed(tmp_path: Path, syntax: str) -> None:
    pixels = np.random.default_rng(1).integers(0, 4096, size=(80, 64))  # openjpeg needs >= ~64 px
    plain = read_pixels(save(make_dataset(pixels, bits_stored=12), tmp_path / "plain.dcm"))
    ds = make_dataset(pixels, bits_stored=12)
    ds.compress(syntax)
    path = save(ds, tmp_path / "packed.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_pixels(path), plain)


def test_lossless_signed_ct_compressed_equals_uncompressed(tmp_path: Path) -> None:
    hu = np.random.default_rng(2).integers(-1000, 1500, size=(24, 24))
    plain = read_pixels(save(ct(hu), tmp_path / "plain.dcm"), window="abdomen")
    ds = ct(hu)
    ds.compress(JPEGLSLossless)
    np.testing.assert_array_equal(read_pixels(save(ds, tmp_path / "ls.dcm"), window="abdomen"), plain)


def test_deflated_equals_plain(tmp_path: Path) -> None:
    plain = read_pixels(save(make_dataset(ramp()), tmp_path / "plain.dcm"))
    ds = make_dataset(ramp())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = save(ds, tmp_path / "dfl.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(read_pixels(path), plain)


def test_jpeg_baseline_is_close_to_its_uncompressed_twin() -> None:
    lossy = read_pixels(SHIPPED / "SC_rgb_small_odd_jpeg.dcm")
    plain = read_pixels(SHIPPED / "SC_rgb_small_odd.dcm")
    assert lossy.shape == plain.shape
    assert np.abs(lossy - plain).mean() < 0.02  # lossy: never bit-exact across decoders


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("window", "hu"),
    [
        ("abdomen", 40),
        ((40, 400), 40),
        ("lung", -600),
        ("brain", 40),
        ("mediastinum", 50),
        ("bone", 400),
    ],
)
def test_task_window_puts_its_centre_at_mid_grey(tmp_path: Path, window: object, hu: int) -> None:
    # The file's own window (1000/100) is what the radiologist used last: the task's wins.
    path = save(ct(np.array([[hu, -3000 + 1024, 3000]]), WindowCenter=1000, WindowWidth=100), tmp_path / "ct.dcm")
    image = read_pixels(path, window=window)
    center, width = resolve_window(window)
    assert center == hu and width > 0
    # DICOM's linear window maps c - 0.5 (not c) to the middle: half a step off for narrow windows.
    assert image[0, 0] == pytest.approx(0.5, abs=0.5 / (width - 1) + 0.002)
    assert image[0, 1] == 0.0 and image[0, 2] == 1.0


def test_abdomen_window_edges(tmp_path: Path) -> None:
    hu = np.array([[-160, 40, 240, -1000, 1000]])
    image = read_pixels(save(ct(hu), tmp_path / "ct.dcm"), window="abdomen")
    np.testing.assert_allclose(image[0], [0.0, 0.5, 1.0, 0.0, 1.0], atol=0.005)


def test_monochrome1_with_task_window_is_inverted_after_windowing(tmp_path: Path) -> None:
    hu = np.array([[-160, -60, 40, 140, 240]])
    mono2 = read_pixels(save(ct(hu), tmp_path / "m2.dcm"), window=(40, 400))
    mono1 = read_pixels(save(ct(hu, PhotometricInterpretation="MONOCHROME1"), tmp_path / "m1.dcm"), window=(40, 400))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    np.testing.assert_allclose(mono2[0], [0.0, 0.25, 0.5, 0.75, 1.0], atol=0.005)


def test_signed_pixels_without_window_keep_their_order(tmp_path: Path) -> None:
    stored = np.array([[-2000, -1000, 0, 1000, 2000]])
    image = read_pixels(save(make_dataset(stored, signed=True), tmp_path / "s.dcm"))
    np.testing.assert_allclose(image[0], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)


@pytest.mark.parametrize("bad", ["liver", (40, 0), (40,), "40/400", (float("nan"), 10)])
def test_invalid_window_is_one_line_naming_the_option(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError) as info:
        read_pixels(tmp_path / "never-read.dcm", window=bad)
    text = str(info.value)
    assert text.startswith("window must be one of ") and "lung" in text and "\n" not in text


def test_presets_are_the_documented_ones() -> None:
    assert WINDOW_PRESETS == {
        "lung": (-600, 1500),
        "mediastinum": (50, 350),
        "brain": (40, 80),
        "bone": (400, 1800),
        "abdomen": (40, 400),
    }
    assert resolve_window(" Lung ") == (-600, 1500) and resolve_window(None) is None


# ----------------------------------------------------------------------------- colour


def rgb_twin(tmp_path: Path, photometric: str) -> Path:
    """A colour ultrasound-like image written as RGB or (converted by pydicom) YBR_FULL."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
    ds = make_dataset(
        np.zeros((16, 12)), SamplesPerPixel=3, PhotometricInterpretation=photometric, PlanarConfiguration=0
    )
    ds.Modality = "US"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", "YBR_FULL")
    ds.PixelData = stored.astype(np.uint8).tobytes()
    return save(ds, tmp_path / f"{photometric}.dcm")


def test_ybr_full_equals_its_rgb_twin(tmp_path: Path) -> None:
    rgb = read_pixels(rgb_twin(tmp_path, "RGB"))
    ybr = read_pixels(rgb_twin(tmp_path, "YBR_FULL"))
    assert rgb.std() > 0.05
    np.testing.assert_allclose(ybr, rgb, atol=3 / 255)  # 8-bit YCbCr round trip


def test_rgb_rle_equals_uncompressed(tmp_path: Path) -> None:
    plain = read_pixels(rgb_twin(tmp_path, "RGB"))
    ds = pydicom.dcmread(tmp_path / "RGB.dcm")
    ds.compress(RLELossless)
    np.testing.assert_array_equal(read_pixels(save(ds, tmp_path / "rle.dcm")), plain)


# ----------------------------------------------------------------------------- frames


def frames_file(tmp_path: Path, n: int = 5) -> Path:
    """n frames of constant values 100, 200, ... with 0 and 1000 corners (so min-max is fixed)."""
    frames = np.stack([np.full((6, 4), 100 * (k + 1)) for k in range(n)])
    frames[:, 0, 0], frames[:, -1, -1] = 0, 1000
    return save(make_dataset(frames), tmp_path / "mf.dcm")


def test_all_frame_policy_yields_every_frame_in_order(tmp_path: Path) -> None:
    path = frames_file(tmp_path, 5)
    frames = read_frames(path, frame_policy="all")
    assert len(frames) == 5
    assert [round(float(f[2, 2]), 3) for f in frames] == [0.1, 0.2, 0.3, 0.4, 0.5]
    middle = read_frames(path, frame_policy="middle")
    assert len(middle) == 1 and middle[0][2, 2] == pytest.approx(0.3)
    stack, reason = preprocess_file(path, 8, None, "all")
    assert reason == "" and stack.shape == (5, 8, 8) and stack.dtype == np.float16


def test_unknown_frame_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^frame_policy must be one of middle, all; got 'first'$"):
        read_frames(frames_file(tmp_path), frame_policy="first")


def test_enhanced_multiframe_per_frame_groups_with_all_frames(tmp_path: Path) -> None:
    """Shared rescale, a different window per frame (PerFrameFunctionalGroupsSequence)."""
    frames = np.stack([np.full((4, 4), 1024 + 40) for _ in range(3)])
    ds = make_dataset(frames, signed=True)
    transform, shared = Dataset(), Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for center in (40, -160, 240):  # 40 HU sits at 0.5, 1.0 and 0.0 of these 400-wide windows
        voi, group = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, 400
        group.FrameVOILUTSequence = [voi]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    path = save(ds, tmp_path / "enh.dcm")
    values = [float(f.mean()) for f in read_frames(path, frame_policy="all")]
    np.testing.assert_allclose(values, [0.5, 1.0, 0.0], atol=0.005)
    # A task window overrides the per-frame ones but keeps the functional-group rescale.
    np.testing.assert_allclose(read_frames(path, frame_policy="all", window="abdomen"), 0.5, atol=0.005)


def test_colour_multiframe_all_frames(tmp_path: Path) -> None:
    rgb = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    for k in range(3):
        rgb[k] = 60 * (k + 1)
    ds = make_dataset(np.zeros((3, 4, 4)), SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    frames = read_frames(save(ds, tmp_path / "us.dcm"), frame_policy="all")
    np.testing.assert_allclose([float(f.mean()) for f in frames], [60 / 255, 120 / 255, 180 / 255], atol=1e-3)


# ----------------------------------------------------------------------------- lookup-table fast path


@pytest.mark.parametrize(
    "tags",
    [
        {},  # min-max
        {"WindowCenter": 300, "WindowWidth": 500},
        {"RescaleSlope": 0.5, "RescaleIntercept": -100, "PhotometricInterpretation": "MONOCHROME1"},
        {
            "RescaleSlope": 2,
            "RescaleIntercept": -1024,
            "WindowCenter": 40,
            "WindowWidth": 400,
            "VOILUTFunction": "SIGMOID",
        },
    ],
)
def test_lookup_table_path_equals_per_pixel_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tags: dict) -> None:
    from radfed import dicom

    pixels = np.random.default_rng(4).integers(0, 1200, size=(50, 40))
    path = save(make_dataset(pixels, bits_stored=12, **tags), tmp_path / "lut.dcm")
    fast = read_pixels(path)
    monkeypatch.setattr(dicom, "_MAX_LUT", 0)  # every frame takes the per-pixel path
    np.testing.assert_allclose(fast, read_pixels(path), atol=1e-6)


def test_non_monotonic_modality_lut_sequence_min_max(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from radfed import dicom

    ds = make_dataset(np.array([[0, 1, 2, 3]]), bits_stored=8)
    item = Dataset()
    item.LUTDescriptor, item.ModalityLUTType = [4, 0, 16], "US"
    item["LUTData"] = pydicom.DataElement(0x00283006, "OW", np.array([10, 50, 20, 30], dtype=np.uint16).tobytes())
    ds.ModalityLUTSequence = [item]
    path = save(ds, tmp_path / "mlut.dcm")
    fast = read_pixels(path)
    np.testing.assert_allclose(fast[0], [0.0, 1.0, 0.25, 0.5], atol=1e-6)
    monkeypatch.setattr(dicom, "_MAX_LUT", 0)
    np.testing.assert_allclose(read_pixels(path), fast, atol=1e-6)
