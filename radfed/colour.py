"""Colour DICOM images as one grey channel: their luma.

Training wants one grey image per sample, but clinics also export colour:
ultrasound with a palette, secondary captures in RGB, JPEG-compressed
YCbCr, JPEG 2000 with its colour transforms.  Rather than reject those, we
keep what a greyscale model can use, their brightness (luma, with the
ITU-R BT.601 weights that DICOM itself uses to define Y in YBR_FULL).

The colour arithmetic is pydicom's: its decoders hand back YBR_FULL and
YBR_FULL_422 (8-bit, through ``convert_color_space``) and JPEG 2000's YBR_ICT
and YBR_RCT as RGB, and ``apply_color_lut`` expands PALETTE COLOR (plain and
segmented lookup tables).  This module only decides, from the header, what
pydicom can turn into RGB, and weighs RGB into luma.

What pydicom cannot convert stays refused, and is recognisable from the
header alone (so a data check reports it without decoding): the retired HSV,
ARGB and CMYK; YBR_PARTIAL_420/422 (video colour spaces no decoder here
returns as RGB); YBR_FULL above 8 bits; YBR_ICT/YBR_RCT outside JPEG 2000.

Functions return a problem text ('' when fine) or raise ValueError with a
text that never quotes tag values; radfed.dicom turns both into DicomErrors.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import JPEG2000TransferSyntaxes

__all__ = [
    "LUMA_WEIGHTS",
    "MONOCHROME",
    "PALETTE",
    "RGB_DECODABLE",
    "palette_problem",
    "palette_to_luma",
    "photometric_of",
    "photometric_problem",
    "rgb_to_luma",
]

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
PALETTE = "PALETTE COLOR"
# Three-sample photometric interpretations that pydicom's decoders return as RGB (given the
# conditions photometric_problem checks: 8 bits for YBR_FULL*, JPEG 2000 for YBR_ICT/RCT).
RGB_DECODABLE = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, DICOM's Y of YBR_FULL

_YBR_EIGHT_BIT_ONLY = ("YBR_FULL", "YBR_FULL_422")  # convert_color_space takes uint8 only
_J2K_ONLY = ("YBR_ICT", "YBR_RCT")  # the JPEG 2000 decoders undo these transforms; nothing else does
_PALETTE_CHANNELS = ("Red", "Green", "Blue")


def photometric_of(ds: Dataset) -> str:
    """PhotometricInterpretation as stripped upper-case text (MONOCHROME2 when absent)."""
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()


def _int_value(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute, or default when absent, empty or not a number."""
    try:
        value = ds.get(keyword, default)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def photometric_problem(ds: Dataset) -> str:
    """'' when pydicom can turn the image into greyscale or RGB; else why not, in a few words.

    Decided from the header alone, before any pixel is decoded.
    """
    photometric = photometric_of(ds)
    samples = _int_value(ds, "SamplesPerPixel", 1)
    shown = f"photometric interpretation {photometric[:16]!r} with {samples} samples"
    if samples == 1 and photometric in (*MONOCHROME, PALETTE):
        return ""
    if samples != 3 or photometric not in RGB_DECODABLE:
        return f"{shown} has no conversion to grey"
    bits = _int_value(ds, "BitsAllocated", 8)
    if photometric in _YBR_EIGHT_BIT_ONLY and bits != 8:
        return f"{shown} at {bits} bits: pydicom converts YCbCr to RGB at 8 bits only"
    syntax = str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", "") or "")
    if photometric in _J2K_ONLY and syntax not in JPEG2000TransferSyntaxes:
        return f"{shown} outside JPEG 2000 (only JPEG 2000 decoders undo that transform)"
    return ""


def palette_problem(ds: Dataset) -> str:
    """'' when a PALETTE COLOR header carries a complete lookup table (plain or segmented).

    Only presence is checked here, so the (possibly large, deferred) table is not read.
    """
    if ds.get("PixelPresentation") in ("MIXED", "COLOR"):
        return "a supplemental palette (Pixel Presentation MIXED/COLOR) is not a PALETTE COLOR image"
    for channel in _PALETTE_CHANNELS:
        if f"{channel}PaletteColorLookupTableDescriptor" not in ds:
            return f"the {channel.lower()} palette lookup table descriptor is missing"
        plain = f"{channel}PaletteColorLookupTableData"
        if plain not in ds and f"Segmented{plain}" not in ds:
            return f"the {channel.lower()} palette lookup table data are missing"
    return ""


def rgb_to_luma(rgb: np.ndarray, bits: int) -> np.ndarray:
    """RGB(A) values of ``bits`` bits (last axis) as float32 luma in [0, 1]; alpha is ignored.

    An explicit weighted sum in float64, not a matrix product: BLAS sums in an
    order that depends on memory layout, and a lossless copy of a file (RLE
    returns planar data) must give bit-identical pixels.
    """
    top = float(2 ** max(int(bits), 1) - 1)
    red, green, blue = (rgb[..., channel].astype(np.float64) for channel in range(3))
    weights = LUMA_WEIGHTS.astype(np.float64)
    luma = weights[0] * red + weights[1] * green + weights[2] * blue
    return np.clip(luma / top, 0.0, 1.0).astype(np.float32)


def palette_to_luma(indices: np.ndarray, ds: Dataset) -> np.ndarray:
    """PALETTE COLOR stored values -> RGB with pydicom's apply_color_lut -> float32 luma in [0, 1].

    The scale is the lookup table's nominal entry size (its descriptor's third
    value, 8 or 16 bits); tables whose entries exceed it (a known exporter
    quirk: 16-bit values under an 8-bit descriptor) use their container size.
    Raises ValueError (text without tag values) when the table is unusable.
    """
    try:
        rgb = apply_color_lut(indices, ds)
        nominal = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception as exc:  # noqa: BLE001 - pydicom raises ValueError, TypeError, struct.error... on damaged tables
        raise ValueError(f"the palette lookup table cannot be applied ({type(exc).__name__})") from None
    bits = nominal if nominal in (8, 16) else rgb.dtype.itemsize * 8
    if rgb.size and int(rgb[..., :3].max()) > 2**bits - 1:
        bits = rgb.dtype.itemsize * 8
    return rgb_to_luma(rgb, bits)
