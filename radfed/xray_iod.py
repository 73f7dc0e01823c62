"""The attributes the DX "For Presentation" IOD requires beyond pixels, patient and study.

The demo clinics' files (radfed.demo_data) stand in for PACS exports, so they
should be what a real export is: DICOM that passes the standard's own
checker, dicom3tools' ``dciodvfy``, with no errors.  Before these attributes
it reported eleven per DX file (tests/test_dicom_conformance.py runs it).
CR files (Computed Radiography Image Storage) need none of them.

The values are the ones that follow from how the demo makes its images, not
invented detail: a posteroanterior chest radiograph (an unpaired region, so
laterality "U"), stored values that rise with density, i.e. log-like and
falling with X-ray intensity (sign -1 for MONOCHROME2, +1 when MONOCHROME1
stores them inverted), never lossy-compressed, nothing burned into the
pixels.  Attributes the standard lets be empty when unknown (Type 2) are
empty unless the demo knows them.  No identifiers are added.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["CHEST", "POSTERO_ANTERIOR", "add_dx_attributes"]

# (code value, coding scheme, code meaning): SNOMED CT codes of CID 4009 (DX Anatomy
# Imaged) and CID 4010 (DX View), as dciodvfy's code tables have them.
CHEST = ("51185008", "SCT", "Chest")
POSTERO_ANTERIOR = ("399348003", "SCT", "postero-anterior")


def _code(code: tuple[str, str, str]) -> Dataset:
    """One Code Sequence item."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def add_dx_attributes(ds: Dataset) -> None:
    """Add the DX Anatomy Imaged, DX Image, DX Detector, DX Positioning and Acquisition
    Context attributes to a DX chest PA dataset whose PhotometricInterpretation is set."""
    inverted = str(ds.PhotometricInterpretation) == "MONOCHROME1"
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = [_code(CHEST)]
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if inverted else -1
    ds.PresentationLUTShape = "INVERSE" if inverted else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "SCINTILLATOR"  # the profiles' detectors are flat panels
    ds.ViewCodeSequence = [_code(POSTERO_ANTERIOR)]
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []
