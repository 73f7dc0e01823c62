"""A heat-map overlay as a DICOM Secondary Capture, filed next to the image it explains.

Radiologists read in the PACS, so a Grad-CAM overlay is only useful there: as an image in
the source's study (same patient, same StudyInstanceUID) in a series of its own, which
every viewer shows without plugins.  highdicom's ``SCImage`` builds the SC IOD; we add
what it leaves to the caller and a PACS needs to file and explain the image:

- the whole Patient and Study modules of the source (highdicom copies a handful of
  attributes; a PACS reconciles on e.g. Issuer of Patient ID and Other Patient IDs too);
- a Source Image Sequence that points at the source instance (why this image exists);
- the source's orientation letters, body part and laterality as the source gives them (an
  empty, i.e. unknown, Laterality when it gives neither laterality nor body part), for
  hanging protocols and the General Series rules (dciodvfy checks them);
- Pixel Spacing scaled to the overlay's size, only when the source has calibrated
  Pixel Spacing (a DX's Imager Pixel Spacing is at the detector, not in the patient, so
  copying it would make measurements on the SC wrong).

The SC carries the source's patient identifiers, as the PACS needs; it never leaves the
clinic.  Error messages never quote a tag value.
"""

from __future__ import annotations

import numpy as np
from highdicom.sc import SCImage
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radfed.pacs.source import building, check_lo, copy_patient_and_study, reference_header
from radfed.pacs.vocabulary import MANUFACTURER, SOURCE_IMAGE_PURPOSE, software_version

__all__ = ["DEFAULT_SC_SERIES_NUMBER", "patient_orientation", "secondary_capture"]

DEFAULT_SC_SERIES_NUMBER = 9001

# Letters of PS3.3 C.7.6.1.1.1 for the +x, +y, +z patient axes and their negatives.
_POSITIVE = ("L", "P", "H")
_NEGATIVE = ("R", "A", "F")


def patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """(row, column) direction letters of the source, or None when it does not say.

    Taken from Patient Orientation when the source has it (projection radiographs), else
    derived from Image Orientation (Patient) (CT, MR): the letter of the dominant axis of
    each direction cosine, which is exact for axial, coronal and sagittal images and the
    nearest letter for oblique ones (highdicom accepts single letters only).
    """
    letters = source.get("PatientOrientation")
    if letters and len(letters) == 2 and all(str(v)[:1] in _POSITIVE + _NEGATIVE for v in letters):
        return str(letters[0])[:1], str(letters[1])[:1]
    cosines = source.get("ImageOrientationPatient")
    if not cosines or len(cosines) != 6:
        return None
    try:
        vectors = np.asarray([float(c) for c in cosines], dtype=float).reshape(2, 3)
    except ValueError:
        return None
    result = []
    for vector in vectors:
        axis = int(np.argmax(np.abs(vector)))
        if not np.isfinite(vector).all() or abs(vector[axis]) < 1e-6:
            return None
        result.append(_POSITIVE[axis] if vector[axis] > 0 else _NEGATIVE[axis])
    return result[0], result[1]


def _scaled_pixel_spacing(source: Dataset, rows: int, columns: int) -> tuple[float, float] | None:
    """The source's Pixel Spacing (mm) for an overlay resampled to rows x columns."""
    spacing = source.get("PixelSpacing")
    if not spacing or len(spacing) != 2 or not source.get("Rows") or not source.get("Columns"):
        return None
    row_mm, col_mm = float(spacing[0]), float(spacing[1])
    if row_mm <= 0 or col_mm <= 0:
        return None
    return row_mm * source.Rows / rows, col_mm * source.Columns / columns


def _check_overlay(overlay_rgb: np.ndarray) -> np.ndarray:
    """The overlay as a contiguous H x W x 3 uint8 array, or a ValueError saying what is wrong."""
    array = np.asarray(overlay_rgb)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"overlay_rgb must be an H x W x 3 array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"overlay_rgb must be uint8 (0-255 per channel), got {array.dtype}")
    return np.ascontiguousarray(array)


def _source_reference(source: Dataset) -> Dataset:
    """One Source Image Sequence item: the source instance, as the input of our processing."""
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    frames = int(source.get("NumberOfFrames") or 1)
    if frames > 1:
        item.ReferencedFrameNumber = list(range(1, frames + 1))
    item.PurposeOfReferenceCodeSequence = [CodedConcept.from_code(SOURCE_IMAGE_PURPOSE)]
    return item


def _copy_series_context(sc: Dataset, source: Dataset) -> None:
    """Body part and laterality of the source's series: what the SC shows is the same anatomy.

    Laterality is Type 2C (needed for a paired body part): a source that sends it empty
    (unknown) gets an empty one, and so does a source that says nothing of laterality nor
    body part; a source naming an unpaired body part (CHEST) and no laterality gets none.
    """
    for keyword in ("BodyPartExamined", "Laterality", "ImageLaterality"):
        if keyword in source and (source[keyword].value or keyword == "Laterality"):
            sc.add_new(keyword, "CS", source[keyword].value)  # a new element: nothing shared with the source
    if not any(keyword in sc for keyword in ("BodyPartExamined", "Laterality", "ImageLaterality")):
        sc.Laterality = ""


def secondary_capture(
    source: Dataset,
    overlay_rgb: np.ndarray,
    *,
    series_number: int = DEFAULT_SC_SERIES_NUMBER,
    series_description: str = "radfed heat map",
    instance_number: int = 1,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    derivation_description: str = "Heat map of an AI model's evidence, overlaid on the source image",
    model_name: str | None = None,
) -> SCImage:
    """A Secondary Capture of `overlay_rgb` in `source`'s study, in a new series.

    `source` is the image the overlay explains (headers suffice; pixels are not read).
    `overlay_rgb` is H x W x 3 uint8, any size, showing the source as stored (not flipped
    or rotated): the orientation letters and pixel spacing are the source's.  Pass the same
    `series_instance_uid` (and increasing `instance_number`) to put the overlays of
    several images in one series; by default each call starts a new series.
    `model_name` becomes the Manufacturer's Model Name, so a PACS can tell which model
    made it.
    """
    pixels = _check_overlay(overlay_rgb)
    check_lo("series_description", series_description)
    check_lo("model_name", model_name)
    header = reference_header(source)
    orientation = patient_orientation(header)
    with building("Secondary Capture"):
        sc = _build(
            header,
            pixels,
            orientation,
            series_number=series_number,
            series_description=series_description,
            instance_number=instance_number,
            series_instance_uid=series_instance_uid,
            sop_instance_uid=sop_instance_uid,
            model_name=model_name,
        )
    copy_patient_and_study(sc, source)
    _copy_series_context(sc, header)
    sc.SourceImageSequence = [_source_reference(header)]
    sc.DerivationDescription = derivation_description
    # The overlay shows the source's pixels: text burned into them is burned into ours.
    sc.BurnedInAnnotation = "YES" if header.get("BurnedInAnnotation") == "YES" else "NO"
    return sc


def _build(
    header: Dataset,
    pixels: np.ndarray,
    orientation: tuple[str, str] | None,
    *,
    series_number: int,
    series_description: str,
    instance_number: int,
    series_instance_uid: str | None,
    sop_instance_uid: str | None,
    model_name: str | None,
) -> SCImage:
    """highdicom's SCImage from the reference header (see radfed.pacs.source)."""
    sc = SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        # highdicom requires letters for a PATIENT image; unknown ones are emptied below.
        patient_orientation=orientation or ("L", "F"),
        pixel_spacing=_scaled_pixel_spacing(header, pixels.shape[0], pixels.shape[1]),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=series_description,
        manufacturer_model_name=model_name,
        software_versions=software_version(),
    )
    if orientation is None:
        sc.PatientOrientation = ""  # Type 2C: present, empty = unknown
    return sc
