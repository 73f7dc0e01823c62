"""Turn one DICOM file into a normalised grey image, or say precisely why not.

Clinics export studies from many PACS and modalities, so files arrive big- or
little-endian, 12- or 16-bit, MONOCHROME1 or 2, compressed or not, sometimes
truncated or not images at all.  Everything downstream (training, caching, data
cards) wants one thing: a float32 2-D array in [0, 1] where bright means dense.
These functions do that with pydicom's own LUT code and turn every failure into
a :class:`DicomError` with a short ``reason`` code, so a loader can reject the
file, count it and carry on.

A task can ask for a CT window (a WINDOW_PRESETS name or an explicit
(center, width)) instead of the file's own, and for every frame of a
multi-frame file ("all") instead of the middle one.

Privacy: messages name the problem and a fix, never a tag value nor a file
path (a path can hold a patient's name).  pydicom's own exception and warning
texts can quote element values (names, IDs), so they are never copied into
our messages, and pydicom's log records are dropped while we read.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing, get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from radfed.colour import PALETTE, palette_problem, palette_to_luma, photometric_of, photometric_problem, rgb_to_luma

__all__ = [
    "DicomError",
    "FRAME_POLICIES",
    "WINDOW_PRESETS",
    "MAX_DECODE_BYTES",
    "PREPROCESS_VERSION",
    "REASONS",
    "check_image_header",
    "decode_dataset",
    "decode_frames",
    "header_facts",
    "header_facts_many",
    "header_summary",
    "identifier_key",
    "preprocess_file",
    "preprocess_files",
    "pydicom_quiet",
    "read_frames",
    "read_header",
    "read_pixels",
    "resize_pad",
    "resolve_window",
    "slice_position",
]

log = logging.getLogger(__name__)

# Bump whenever the output of read_pixels/resize_pad changes, so caches miss.
PREPROCESS_VERSION = "radfed-dicom-4"  # 4: colour and PALETTE COLOR decode to luma

# Named CT windows (centre, width) in HU: a task asks for the tissue it is about,
# because the window stored in the file is whatever the reading radiologist used last.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
    "abdomen": (40.0, 400.0),
}

# "middle": one sample per file (the middle frame); "all": every frame is a sample.
FRAME_POLICIES = ("middle", "all")

Window = str | tuple[float, float] | None

# Working-memory ceiling for one file, estimated from the header before decoding.
MAX_DECODE_BYTES = 1 << 30

# Faster installed decoders than pydicom's default pick, tried first (the default is the
# fallback): CharLS (pyjpegls) decodes JPEG-LS about 4x faster than libjpeg, bit-exact.
_PREFERRED_PLUGINS: dict[str, str] = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}

# Deferring values above this size makes header reads cheap: pixel data stays on disk.
_DEFER_SIZE = 4096

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# reason code -> the fix; messages put the specific problem in front of it.
REASONS: dict[str, str] = {
    "empty-file": "copy or re-export the file again",
    "unreadable": "check that the file exists and is readable by this user",
    "not-dicom": "remove it from the manifest or the data folder",
    "corrupt": "re-export the file from the PACS",
    "truncated": "copy or re-export the file again",
    "no-pixel-data": "it is not an image (report, DICOMDIR, key object?); remove it from the manifest",
    "not-an-image": "re-export the image or remove it from the manifest",
    "unsupported-syntax": "export it uncompressed or install the pylibjpeg plugins",
    "unsupported-photometric": "export it as greyscale or remove it from the manifest",
    "bad-palette": "re-export the image with its palette, or as greyscale",
    "too-large": "export a smaller image or raise the memory limit",
    "decode-error": "re-export the file; report it if this keeps happening",
}


class DicomError(Exception):
    """A file that cannot become a training image; ``reason`` is a short code from REASONS.

    The message is one line: the problem, then the fix.  It never contains tag values.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (type(self), (self.reason, self.message))


def _fail(reason: str, problem: str) -> DicomError:
    """Build a DicomError whose message is 'problem; fix'."""
    return DicomError(reason, f"{problem}; {REASONS[reason]}")


# pydicom auto-corrects these reliably; real PACS exports are full of them.
_BENIGN_WARNINGS = (
    r"Expected (explicit|implicit) VR, but found (explicit|implicit) VR",
    r"VR lookup failed for the raw element",
)


class _MuteWhileReading(logging.Filter):
    """Drops pydicom log records emitted by a thread inside pydicom_quiet().

    pydicom logs every validation warning, and those quote tag values
    (a PatientID that is too long, a malformed name): PHI in the logs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(self.local, "depth", 0) == 0


_MUTE = _MuteWhileReading()
logging.getLogger("pydicom").addFilter(_MUTE)


@contextmanager
def pydicom_quiet(strict: bool = False) -> Iterator[None]:
    """Silence pydicom's logs and warnings (they can quote PHI); with strict,
    turn its warnings into exceptions instead, except known-benign ones."""
    _MUTE.local.depth = getattr(_MUTE.local, "depth", 0) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error" if strict else "ignore")
            for pattern in _BENIGN_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        _MUTE.local.depth -= 1


def _dcmread_strict(path: Path, force: bool) -> Dataset:
    """dcmread with pixel data deferred and warnings raised, because a damaged
    file often reads 'successfully' with nothing but a UserWarning."""
    with pydicom_quiet(strict=True):
        return dcmread(path, defer_size=_DEFER_SIZE, force=force)


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give files without file meta (raw datasets) the transfer syntax they were read with."""
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _has_pixels(ds: Dataset) -> bool:
    """True when any of the three pixel data elements is present."""
    return any(kw in ds for kw in _PIXEL_KEYWORDS)


def read_header(path: Path) -> Dataset:
    """Read a file's dataset with the pixel data left on disk, or raise DicomError.

    Files without the 128-byte preamble are retried with ``force=True`` but only
    kept if they parse as a real dataset, since force accepts almost any bytes.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _fail("unreadable", f"the file cannot be opened ({type(exc).__name__})") from None
    if size == 0:
        raise _fail("empty-file", "the file is empty (0 bytes)")
    try:
        ds = _dcmread_strict(path, force=False)
    except InvalidDicomError:
        ds = _read_without_meta(path)
    except EOFError:
        raise _fail("truncated", "the file ends inside its header") from None
    except OSError as exc:
        raise _fail("unreadable", f"the file cannot be read ({type(exc).__name__})") from None
    except Exception as exc:  # pydicom raises many types (and our warnings) for bad bytes
        raise _fail("corrupt", f"the header cannot be parsed ({type(exc).__name__})") from None
    if len(ds) == 0:
        raise _fail("corrupt", "the file holds no data elements after its file header")
    _ensure_transfer_syntax(ds)
    return ds


def _read_without_meta(path: Path) -> Dataset:
    """Accept a preamble-less file only if it parses as a real dataset: force
    'reads' random bytes, a PNG or gzip as 0-1 elements."""
    try:
        ds = _dcmread_strict(path, force=True)
    except Exception:
        ds = Dataset()
    if len(ds) < 3 or not ("SOPClassUID" in ds or _has_pixels(ds)):
        raise _fail("not-dicom", "the file is not DICOM (no 'DICM' marker and not a raw dataset)")
    return ds


def _int_tag(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    """An integer attribute, or default when absent, empty or not a number."""
    value = ds.get(keyword, default)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def check_image_header(ds: Dataset, max_bytes: int = MAX_DECODE_BYTES) -> None:
    """Raise DicomError unless the header describes a 2-D image we can decode within max_bytes.

    Done before decoding so a lying header cannot make us allocate gigabytes.
    """
    if not _has_pixels(ds):
        raise _fail("no-pixel-data", "the file has no pixel data")
    rows, cols = _int_tag(ds, "Rows", 0), _int_tag(ds, "Columns", 0)
    if not rows or not cols or rows < 0 or cols < 0:
        raise _fail("not-an-image", "Rows/Columns are missing or zero")
    problem = photometric_problem(ds)
    if problem:
        raise _fail("unsupported-photometric", problem)
    is_palette = photometric_of(ds) == PALETTE
    if is_palette and (problem := palette_problem(ds)):
        raise _fail("bad-palette", problem)
    samples = 3 if is_palette else _int_tag(ds, "SamplesPerPixel", 1)  # a palette expands to RGB
    _check_memory(ds, rows, cols, samples, max_bytes)
    _check_decoder(ds)


def _check_memory(ds: Dataset, rows: int, cols: int, samples: int, max_bytes: int) -> None:
    """Estimate stored bytes plus float64 work for one frame, from the header alone."""
    frames = max(_int_tag(ds, "NumberOfFrames", 1) or 1, 1)
    bits = _int_tag(ds, "BitsAllocated", 16) or 16
    stored = rows * cols * samples * frames * max(bits // 8, 1)
    working = rows * cols * samples * 8 * 3
    if stored + working > max_bytes:
        raise _fail("too-large", f"{rows}x{cols}x{frames} frames needs ~{(stored + working) >> 20} MiB")


def _check_decoder(ds: Dataset) -> None:
    """Fail early, with the syntax's name, when no installed plugin decodes it."""
    tsyntax = UID(ds.file_meta.TransferSyntaxUID)
    try:
        available = get_decoder(tsyntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise _fail("unsupported-syntax", f"no decoder for transfer syntax {tsyntax.name or tsyntax}")


def resolve_window(window: Window) -> tuple[float, float] | None:
    """A preset name or an explicit (centre, width) as numbers; None keeps the file's own VOI.

    Raises ValueError (one line naming the option and what is allowed) so a bad
    task setting fails before any file is read.
    """
    allowed = f"one of {', '.join(WINDOW_PRESETS)}, a (center, width) pair with width > 0, or None"
    if window is None:
        return None
    if isinstance(window, str):
        preset = WINDOW_PRESETS.get(window.strip().lower())
        if preset is None:
            raise ValueError(f"window must be {allowed}; got {window!r}")
        return preset
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be {allowed}; got {window!r}") from None
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ValueError(f"window must be {allowed}; got {window!r}")
    return center, width


def _check_frame_policy(frame_policy: str) -> None:
    """ValueError naming the option when the frame policy is unknown."""
    if frame_policy not in FRAME_POLICIES:
        raise ValueError(f"frame_policy must be one of {', '.join(FRAME_POLICIES)}; got {frame_policy!r}")


def read_pixels(path: Path, max_bytes: int = MAX_DECODE_BYTES, *, window: Window = None) -> np.ndarray:
    """Read a DICOM file as float32 2-D in [0, 1], bright = dense, or raise DicomError.

    Multi-frame files give their middle frame.
    """
    return read_frames(path, window=window, frame_policy="middle", max_bytes=max_bytes)[0]


def read_frames(
    path: Path, *, window: Window = None, frame_policy: str = "middle", max_bytes: int = MAX_DECODE_BYTES
) -> list[np.ndarray]:
    """The file's samples as float32 2-D images in [0, 1]: the middle frame, or every frame with "all"."""
    center_width = resolve_window(window)
    _check_frame_policy(frame_policy)
    ds = read_header(path)
    with pydicom_quiet():
        check_image_header(ds, max_bytes)
        return decode_frames(ds, window=center_width, frame_policy=frame_policy)


def _decode_frame(ds: Dataset, index: int | None) -> tuple[np.ndarray, str]:
    """pydicom's decoder for one frame (or all with index None), in native byte order, and
    the photometric interpretation pydicom says the array is in.

    pydicom's default ``as_rgb`` returns YBR_FULL/YBR_FULL_422 (through its
    convert_color_space) and JPEG 2000's YBR_ICT/YBR_RCT as RGB, and corrects
    an interpretation contradicted by a JPEG stream; its warnings are ignored.
    """
    try:
        with pydicom_quiet():
            arr, properties = _pixel_array_fast(ds, index)
    except ValueError as exc:
        if "less than expected" in str(exc):
            raise _fail("truncated", "the pixel data is shorter than the header says") from None
        raise _fail("corrupt", f"the pixel data cannot be decoded ({type(exc).__name__})") from None
    except NotImplementedError:
        raise _fail("unsupported-syntax", "no installed plugin decodes this pixel data") from None
    except Exception as exc:
        raise _fail("corrupt", f"the pixel data cannot be decoded ({type(exc).__name__})") from None
    photometric = str(properties.get("photometric_interpretation", "")).strip().upper()
    return arr.astype(arr.dtype.newbyteorder("="), copy=False), photometric


def _pixel_array_fast(ds: Dataset, index: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The decoder's (array, pixel properties) with the preferred plugin for the syntax when it
    is installed, else (or when that plugin refuses the stream) pydicom's own choice.

    Decoder.as_array, not pixel_array, because its pixel properties say which
    colour space the array ended up in.
    """
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    decoder = get_decoder(syntax)
    options = as_pixel_options(ds)
    plugin = _PREFERRED_PLUGINS.get(syntax, "")
    if plugin and plugin in decoder.available_plugins:
        try:
            return decoder.as_array(ds, index=index, decoding_plugin=plugin, **options)
        except Exception:  # noqa: BLE001 - the default plugins get their turn below
            pass
    return decoder.as_array(ds, index=index, **options)


def decode_dataset(ds: Dataset, window: tuple[float, float] | None = None) -> np.ndarray:
    """Decode the middle frame of a checked dataset and normalise it to [0, 1]."""
    return decode_frames(ds, window=window, frame_policy="middle")[0]


def decode_frames(
    ds: Dataset, *, window: tuple[float, float] | None = None, frame_policy: str = "middle"
) -> list[np.ndarray]:
    """Decode a checked dataset's middle frame or all frames, each normalised to [0, 1].

    Pipeline per greyscale frame: modality LUT (rescale, from functional
    groups for enhanced multi-frame) -> the task's window if given, else the
    file's VOI LUT or first window (min-max without one) -> invert
    MONOCHROME1.  Colour frames (RGB, YCbCr returned as RGB by pydicom,
    PALETTE COLOR through its lookup table) become luma (radfed.colour); no
    window applies to them.
    """
    _check_frame_policy(frame_policy)
    frames = max(_int_tag(ds, "NumberOfFrames", 1) or 1, 1)
    samples = _int_tag(ds, "SamplesPerPixel", 1) or 1
    if frames == 1 or frame_policy == "middle":
        indices = [frames // 2]
        arr, decoded_as = _decode_frame(ds, None if frames == 1 else frames // 2)
        arr = arr[None]
    else:
        indices = list(range(frames))
        arr, decoded_as = _decode_frame(ds, None)
    expected_ndim = 4 if samples == 3 else 3
    if arr.ndim != expected_ndim or arr.shape[0] != len(indices):
        raise _fail("not-an-image", f"decoded pixel array has shape {arr.shape}")
    if samples == 3:
        return _rgb_frames(arr, ds, decoded_as)
    if photometric_of(ds) == PALETTE:
        return _palette_frames(arr, ds)
    return [_grey_frame(frame, ds, index, window) for frame, index in zip(arr, indices)]


def _rgb_frames(arr: np.ndarray, ds: Dataset, decoded_as: str) -> list[np.ndarray]:
    """Luma of three-sample frames, which pydicom must have returned as RGB."""
    if decoded_as != "RGB":
        problem = f"pydicom decoded the colour pixels as {decoded_as[:16]!r}, which it cannot convert to RGB"
        raise _fail("unsupported-photometric", problem)
    bits = _int_tag(ds, "BitsStored", 8) or 8
    return [rgb_to_luma(frame, bits) for frame in arr]


def _palette_frames(arr: np.ndarray, ds: Dataset) -> list[np.ndarray]:
    """Luma of PALETTE COLOR frames, one frame at a time (the RGB expansion triples memory)."""
    try:
        with pydicom_quiet():
            return [palette_to_luma(frame, ds) for frame in arr]
    except ValueError as exc:
        raise _fail("bad-palette", str(exc)) from None


def _grey_frame(arr: np.ndarray, ds: Dataset, index: int, window: tuple[float, float] | None) -> np.ndarray:
    """Modality LUT, VOI, MONOCHROME1 inversion for one greyscale frame.

    Integer frames go through a lookup table: the same pydicom functions run
    once per possible stored value (at most _MAX_LUT of them) instead of once
    per pixel in float64, then one gather builds the float32 image.  The
    result is identical (every step is per-pixel) and several times faster on
    big radiographs, where float64 windowing dominated decode time.
    """
    with pydicom_quiet():
        view = _frame_view(ds, index, window)
        photometric = str(view.get("PhotometricInterpretation", "")).strip().upper()
        lut_input = _lut_domain(arr)
        if lut_input is None:
            image = _finish(_apply_voi(apply_modality_lut(arr, view), view), photometric)
            return image.astype(np.float32)
        low, values = lut_input
        mapped = apply_modality_lut(values, view)
        if _has_voi(view):
            lut = _apply_voi(mapped, view)
        else:  # min-max over the values present, as the per-pixel path does
            lut = _stretch(mapped, _present_range(arr, low, mapped))
        lut = _finish(lut, photometric).astype(np.float32)
    return lut[arr.astype(np.int64, copy=False) - low] if low else lut[arr]


_MAX_LUT = 1 << 17  # enough for any 16-bit (and most 17-bit rescaled) stored range


def _lut_domain(arr: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(lowest stored value, every value from lowest to highest) for integer frames with a
    small enough range; None when a per-pixel path is needed (float data, huge ranges)."""
    if not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        return None
    low, high = int(arr.min()), int(arr.max())
    if high - low >= _MAX_LUT:
        return None
    return low, np.arange(low, high + 1, dtype=arr.dtype)


def _present_range(arr: np.ndarray, low: int, mapped: np.ndarray) -> tuple[float, float]:
    """Lowest and highest modality-LUT output among the stored values actually present.

    For a monotonic LUT (rescale, almost every file) these are the ends; a
    non-monotonic Modality LUT Sequence needs the set of values present.
    """
    mapped = np.asarray(mapped, dtype=np.float64)
    steps = np.diff(mapped)
    if np.all(steps >= 0) or np.all(steps <= 0):
        return float(min(mapped[0], mapped[-1])), float(max(mapped[0], mapped[-1]))
    present = np.zeros(mapped.shape[0], dtype=bool)
    present[arr.astype(np.int64, copy=False).ravel() - low] = True
    return float(mapped[present].min()), float(mapped[present].max())


def _stretch(arr: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Map [low, high] to [0, 1] (clipped); an empty or non-finite range gives zeros."""
    low, high = bounds
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros(arr.shape, dtype=np.float64)
    return np.clip((arr - low) / (high - low), 0.0, 1.0)


def _finish(image: np.ndarray, photometric: str) -> np.ndarray:
    """MONOCHROME1 inverted (apply_voi_lut does not do it: it must follow windowing), NaN -> 0."""
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return np.nan_to_num(image, nan=0.0)


def _has_voi(view: Dataset) -> bool:
    """True when the (frame's) dataset carries a VOI LUT or a window."""
    return bool(view.get("VOILUTSequence")) or ("WindowCenter" in view and "WindowWidth" in view)


# Attributes pydicom's LUT functions read; enhanced multi-frame keeps them in functional groups.
_LUT_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_FRAME_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def _frame_view(ds: Dataset, index: int, window: tuple[float, float] | None = None) -> Dataset:
    """A flat dataset with the LUT attributes that apply to frame ``index``.

    Classic images without a task window are returned as they are.  For
    enhanced multi-frame objects the top-level apply_modality_lut silently
    does nothing, so the shared and then per-frame functional groups are
    copied to the top level.  A task window replaces the file's VOI, so that
    pydicom's apply_windowing does the (DICOM-exact) linear mapping.
    """
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not shared and not per_frame and window is None:
        return ds
    view = Dataset()
    view.file_meta = ds.file_meta
    for keyword in _LUT_KEYWORDS:
        if keyword in ds:
            view.add(ds[keyword])
    for groups, position in ((shared, 0), (per_frame, index)):
        if groups and len(groups) > position:
            _copy_macros(groups[position], view)
    if window is not None:
        for keyword in ("VOILUTSequence", "VOILUTFunction", "WindowCenter", "WindowWidth"):
            if keyword in view:
                del view[keyword]
        view.WindowCenter, view.WindowWidth = window
    return view


def _copy_macros(group: Dataset, view: Dataset) -> None:
    """Copy the rescale and VOI macro attributes of one functional-group item into view."""
    for macro in _FRAME_MACROS:
        items = group.get(macro)
        if items:
            for element in items[0]:
                view.add(element)


def _apply_voi(arr: np.ndarray, view: Dataset) -> np.ndarray:
    """VOI LUT or first window mapped to [0, 1]; min-max when there is neither (or it is unusable)."""
    has_lut = bool(view.get("VOILUTSequence"))
    has_window = "WindowCenter" in view and "WindowWidth" in view
    if not (has_lut or has_window):
        return _min_max(arr)
    if has_lut and not np.issubdtype(arr.dtype, np.integer):
        arr = np.rint(arr).astype(np.int64)
    try:
        out = apply_voi_lut(arr, view, index=0, prefer_lut=True)
        low, high = _voi_output_range(view, has_lut)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, NotImplementedError):
        return _min_max(arr)  # an unusable window (e.g. width 0) should not lose the image
    if high == low:
        return _min_max(arr)
    return np.clip((np.asarray(out, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def _voi_output_range(view: Dataset, has_lut: bool) -> tuple[float, float]:
    """The two ends of pydicom's VOI output range, found by pushing the most
    extreme inputs through the same function (LUTs may even be decreasing)."""
    if has_lut:
        extremes = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], dtype=np.int64)
        ends = apply_voi_lut(extremes, view, index=0, prefer_lut=True)
    else:
        with np.errstate(over="ignore"):
            ends = apply_windowing(np.array([-1e30, 1e30]), view, index=0)
    return float(ends[0]), float(ends[1])


def _min_max(arr: np.ndarray) -> np.ndarray:
    """Stretch to [0, 1]; a constant image becomes all zeros."""
    arr = np.asarray(arr, dtype=np.float64)
    low, high = float(arr.min()), float(arr.max())
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros(arr.shape, dtype=np.float64)
    return (arr - low) / (high - low)


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Fit a 2-D image into size x size without distorting anatomy.

    The longer side becomes ``size`` (antialiased, so thin ribs do not alias),
    the image is centred and the border is 0 (black, like air).
    """
    if image.ndim != 2:
        raise ValueError(f"resize_pad expects a 2-D image, got shape {image.shape}")
    height, width = image.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    image = image.astype(np.float32, copy=False)
    rows, row_weights = _resample_taps(height, new_h)
    cols, col_weights = _resample_taps(width, new_w)
    resized = np.einsum("ok,okw->ow", row_weights, image[rows])
    resized = np.einsum("ok,hok->ho", col_weights, resized[:, cols])
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = np.clip(resized, 0.0, 1.0)
    return out


def _resample_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and weights (both n_out x taps) of an antialiased linear resize along one axis.

    A triangle filter widened by the downscale factor, as PIL and torch's
    ``interpolate(antialias=True)`` use, so every input pixel contributes.
    Explicit taps instead of a dense matrix product: multithreaded BLAS is
    slow on such small products, and plain numpy keeps torch out of the
    decode worker processes, which then start in about a second.
    """
    scale = n_in / n_out
    radius = max(scale, 1.0)
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    first = np.floor(centres - radius).astype(np.int64) + 1
    index = first[:, None] + np.arange(int(np.ceil(2 * radius)) + 1)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs(index - centres[:, None]) / radius)
    weights[(index < 0) | (index >= n_in)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(index, 0, n_in - 1), weights.astype(np.float32)


def preprocess_file(
    path: str | Path, size: int, window: Window = None, frame_policy: str = "middle"
) -> tuple[np.ndarray | None, str]:
    """read_frames + resize_pad as float16 (frames x size x size), or (None, reason code).

    The unit of work of a loader's process pool; it lives here because this
    module does not import torch, so spawned workers start in about a second.
    """
    try:
        frames = read_frames(Path(path), window=window, frame_policy=frame_policy)
        return np.stack([resize_pad(frame, size) for frame in frames]).astype(np.float16), ""
    except DicomError as exc:
        return None, exc.reason
    except Exception as exc:  # one exotic file must not stop a clinic from loading
        log.error("unexpected %s while preprocessing an image; rejected as decode-error", type(exc).__name__)
        return None, "decode-error"


def preprocess_files(
    paths: list[str], size: int, window: Window = None, frame_policy: str = "middle"
) -> list[tuple[np.ndarray | None, str]]:
    """preprocess_file over a chunk of paths: one pool task per chunk keeps IPC overhead small."""
    return [preprocess_file(path, size, window, frame_policy) for path in paths]


def identifier_key(kind: str, value: str) -> str:
    """A stable one-way key for an identifier (PatientID, Study/Series/SOPInstanceUID), '' for none.

    Loaders group, split and de-duplicate by these keys, so the identifiers
    themselves never leave the reading function, nor reach a cache file.
    """
    value = str(value or "").strip()
    if not value:
        return ""
    return hashlib.sha256(f"radfed-{kind}\x00{value}".encode()).hexdigest()[:32]


def slice_position(ds: Dataset) -> float | None:
    """Where a slice lies along its stack's normal, in mm; None when the header cannot say.

    ImagePositionPatient · (row × column direction cosines of ImageOrientationPatient):
    the coordinate that orders a series' single-slice files (what viewers sort by);
    InstanceNumber is only the order the scanner numbered them in.  Top-level tags
    only: enhanced multi-frame files keep theirs per frame in functional groups.
    """
    try:
        position = np.asarray([float(v) for v in ds.get("ImagePositionPatient") or ()], dtype=np.float64)
        cosines = np.asarray([float(v) for v in ds.get("ImageOrientationPatient") or ()], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if position.shape != (3,) or cosines.shape != (6,):
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    if not np.all(np.isfinite(position)) or not 0.5 < np.linalg.norm(normal) < 1.5:
        return None  # not direction cosines: no meaningful order
    return float(position @ normal)


def _instance_number(ds: Dataset) -> str:
    """InstanceNumber as a plain integer string ('' when absent or not a number)."""
    try:
        value = ds.get("InstanceNumber")
        return "" if value is None or str(value).strip() == "" else str(int(float(value)))
    except (TypeError, ValueError, OverflowError):
        return ""


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    """A header value as stripped text ('' when absent); multi-valued joined with '\\'."""
    value = ds.get(keyword, "") if keyword else ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:limit]


def header_facts(path: str | Path, label_tag: str | None = None) -> dict[str, str] | str:
    """What a loader needs from one file's header, or the reason it is not readable DICOM.

    Plain strings (JSON-ready, so loaders can cache them): ``patient``, ``uid``,
    ``study_key`` and ``series_key`` are identifier_key()s of PatientID, SOPInstanceUID,
    StudyInstanceUID and SeriesInstanceUID, never the IDs; ``problem`` is the reason code
    when the header shows the file cannot be an image; ``label_value`` is the
    ``label_tag`` value; ``instance_number`` and ``slice_position`` (slice_position(),
    4 decimals) order a series' slices, '' when absent.  Never decodes pixels.
    """
    try:
        ds = read_header(Path(path))
    except DicomError as exc:
        return exc.reason
    with pydicom_quiet():  # validation warnings would quote the PatientID
        try:
            check_image_header(ds)
            problem = ""
        except DicomError as exc:
            problem = exc.reason
        tsyntax = ds.file_meta.get("TransferSyntaxUID")
        try:
            label_value = _text(ds, label_tag or "")
        except Exception:  # a label tag pydicom cannot parse: no label
            label_value = ""
        return {
            "patient": identifier_key("patient", str(ds.get("PatientID", "") or "")),
            "uid": identifier_key("sop-instance", str(ds.get("SOPInstanceUID", "") or "")),
            "modality": str(ds.get("Modality", "") or "").strip()[:16] or "unknown",
            "manufacturer": str(ds.get("Manufacturer", "") or "").strip()[:64] or "unknown",
            "problem": problem,
            "body_part": _text(ds, "BodyPartExamined"),
            "series": _text(ds, "SeriesDescription"),
            "size": f"{_text(ds, 'Rows')}x{_text(ds, 'Columns')}",
            "syntax": (tsyntax.name or str(tsyntax)) if tsyntax else "unknown",
            "label_value": label_value,
            "study_key": identifier_key("study-instance", str(ds.get("StudyInstanceUID", "") or "")),
            "series_key": identifier_key("series-instance", str(ds.get("SeriesInstanceUID", "") or "")),
            "instance_number": _instance_number(ds),
            "slice_position": "" if (position := slice_position(ds)) is None else f"{position:.4f}",
        }


def header_facts_many(paths: list[str], label_tag: str | None = None) -> list[dict[str, str] | str]:
    """header_facts over a chunk of paths (one pool task per chunk)."""
    return [header_facts(path, label_tag) for path in paths]


_SUMMARY_KEYWORDS = ("Modality", "Manufacturer", "Rows", "Columns", "PhotometricInterpretation", "BitsStored")


def header_summary(ds: Dataset) -> dict[str, Any]:
    """Non-identifying technical facts for data cards; never names, IDs, dates or places."""
    with pydicom_quiet():
        summary = {keyword: _plain(ds.get(keyword)) for keyword in _SUMMARY_KEYWORDS}
    tsyntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    summary["TransferSyntaxUID"] = str(tsyntax) if tsyntax else None
    return summary


def _plain(value: Any) -> int | str | None:
    """JSON-friendly form of a header value: int for numbers, str otherwise, None if empty."""
    if value is None or value == "":
        return None
    return value if isinstance(value, int) else str(value).strip()
