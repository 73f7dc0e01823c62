"""Turn one DICOM file into a normalised grey image, or say precisely why not.

Clinics export studies from many PACS and modalities, so files arrive big- or
little-endian, 12- or 16-bit, MONOCHROME1 or 2, compressed or not, sometimes
truncated or not images at all.  Everything downstream (training, caching, data
cards) wants one thing: a float32 2-D array in [0, 1] where bright means dense.
These functions do that with pydicom's own LUT code and turn every failure into
a :class:`DicomError` with a short ``reason`` code, so a loader can reject the
file, count it and carry on.

Privacy: messages name the problem and a fix, never a tag value.  pydicom's own
exception and warning texts can quote element values (names, IDs), so they are
never copied into our messages.
"""

from __future__ import annotations

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
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing, get_decoder, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "DicomError",
    "MAX_DECODE_BYTES",
    "PREPROCESS_VERSION",
    "REASONS",
    "check_image_header",
    "decode_dataset",
    "header_summary",
    "preprocess_file",
    "pydicom_quiet",
    "read_header",
    "read_pixels",
    "resize_pad",
]

log = logging.getLogger(__name__)

# Bump whenever the output of read_pixels/resize_pad changes, so caches miss.
PREPROCESS_VERSION = "radfed-dicom-2"

# Working-memory ceiling for one file, estimated from the header before decoding.
MAX_DECODE_BYTES = 1 << 30

# Deferring values above this size makes header reads cheap: pixel data stays on disk.
_DEFER_SIZE = 4096

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601 weights

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
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples == 3 and photometric in _COLOUR:
        pass
    elif samples == 1 and photometric in _MONOCHROME:
        pass
    else:
        problem = f"photometric interpretation {photometric[:16]!r} with {samples} samples"
        raise _fail("unsupported-photometric", problem)
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


def read_pixels(path: Path, max_bytes: int = MAX_DECODE_BYTES) -> np.ndarray:
    """Read a DICOM file as float32 2-D in [0, 1], bright = dense, or raise DicomError."""
    ds = read_header(path)
    with pydicom_quiet():
        check_image_header(ds, max_bytes)
        return decode_dataset(ds)


def _decode_frame(ds: Dataset, index: int | None) -> np.ndarray:
    """pydicom's decoder for one frame; its warnings are ignored (auto-corrected quirks)."""
    try:
        with pydicom_quiet():
            arr = pixel_array(ds, index=index)
    except ValueError as exc:
        if "less than expected" in str(exc):
            raise _fail("truncated", "the pixel data is shorter than the header says") from None
        raise _fail("corrupt", f"the pixel data cannot be decoded ({type(exc).__name__})") from None
    except NotImplementedError:
        raise _fail("unsupported-syntax", "no installed plugin decodes this pixel data") from None
    except Exception as exc:
        raise _fail("corrupt", f"the pixel data cannot be decoded ({type(exc).__name__})") from None
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def decode_dataset(ds: Dataset) -> np.ndarray:
    """Decode the middle frame of a checked dataset and normalise it to [0, 1].

    Pipeline: modality LUT (rescale) -> VOI LUT or first window (min-max without
    one) -> invert MONOCHROME1.  Colour images become luminance.
    """
    frames = max(_int_tag(ds, "NumberOfFrames", 1) or 1, 1)
    index = frames // 2 if frames > 1 else None
    arr = _decode_frame(ds, index)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return _colour_to_grey(arr, ds)
    if arr.ndim != 2:
        raise _fail("not-an-image", f"decoded pixel array has shape {arr.shape}")
    with pydicom_quiet():
        view = _frame_view(ds, index or 0)
        image = _apply_voi(apply_modality_lut(arr, view), view)
        photometric = str(view.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return np.nan_to_num(image, nan=0.0).astype(np.float32)


def _colour_to_grey(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB (pydicom converts YBR to RGB) -> luminance scaled by the stored bit depth."""
    bits = _int_tag(ds, "BitsStored", 8) or 8
    grey = arr.astype(np.float64) @ _LUMA
    return np.clip(grey / float(2**bits - 1), 0.0, 1.0).astype(np.float32)


# Attributes pydicom's LUT functions read; enhanced multi-frame keeps them in functional groups.
_LUT_KEYWORDS = (
    "PhotometricInterpretation", "BitsStored", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
)
_FRAME_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def _frame_view(ds: Dataset, index: int) -> Dataset:
    """A flat dataset with the LUT attributes that apply to frame ``index``.

    Classic images are returned as they are.  For enhanced multi-frame objects
    the top-level apply_modality_lut silently does nothing, so the shared and
    then per-frame functional groups are copied to the top level.
    """
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not shared and not per_frame:
        return ds
    view = Dataset()
    view.file_meta = ds.file_meta
    for keyword in _LUT_KEYWORDS:
        if keyword in ds:
            view.add(ds[keyword])
    for groups, position in ((shared, 0), (per_frame, index)):
        if groups and len(groups) > position:
            _copy_macros(groups[position], view)
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


def preprocess_file(path: str | Path, size: int) -> tuple[np.ndarray | None, str]:
    """read_pixels + resize_pad as float16, or (None, reason code).

    The unit of work of a loader's process pool; it lives here because this
    module does not import torch, so spawned workers start in about a second.
    """
    try:
        return resize_pad(read_pixels(Path(path)), size).astype(np.float16), ""
    except DicomError as exc:
        return None, exc.reason
    except Exception as exc:  # one exotic file must not stop a clinic from loading
        log.error("unexpected %s while preprocessing an image; rejected as decode-error", type(exc).__name__)
        return None, "decode-error"


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
