"""What radfed's result objects take from the source image, and how its values stay out of messages.

highdicom builds an SC or SR from a reference dataset and validates what it reads there:
a missing Type 2 attribute (Patient Sex, Study ID, Accession Number...) raises an
AttributeError in the SR constructor, a value it does not accept (sex 'X', a date written
'2004-01-19') raises a ValueError that quotes the value, and a one-part person name earns a
warning that quotes the name.  Real archives hold all of these.  So the objects are built
in three steps:

1. from :func:`reference_header`: a header-only copy of the source in which the Type 2
   Patient and Study attributes are present (empty when the source lacks them) and the
   values highdicom would refuse are emptied;
2. inside :func:`building`, which silences warnings and pydicom's log (they can quote
   PHI) and turns any error into a message that names no value;
3. then :func:`copy_patient_and_study` copies the source's own Patient and Study modules
   over, as they are: a PACS files and matches results on exactly those values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from highdicom import SOPClass
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

from radfed.dicom import pydicom_quiet

__all__ = ["REQUIRED_UIDS", "TYPE2_PATIENT_STUDY", "building", "check_lo", "copy_patient_and_study", "reference_header"]

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

# Type 2 attributes of the Patient and General Study modules that highdicom reads (keyword -> VR).
TYPE2_PATIENT_STUDY = {
    "PatientName": "PN",
    "PatientID": "LO",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "StudyID": "SH",
    "AccessionNumber": "SH",
    "ReferringPhysicianName": "PN",
}
_PARSERS = {"DA": DA, "TM": TM}
_SEXES = {"M", "F", "O", ""}


def _acceptable(keyword: str, vr: str, value: object) -> bool:
    """Whether highdicom will take `value` for `keyword` without raising."""
    if value is None or value == "":
        return True
    if keyword == "PatientSex":
        return str(value) in _SEXES
    parser = _PARSERS.get(vr)
    if parser is None:
        return True
    try:
        parser(value)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _without_pixels(source: Dataset) -> Dataset:
    """A Dataset sharing `source`'s elements, except pixel data (not needed, possibly large)."""
    header = Dataset()
    with pydicom_quiet():
        for tag in source.keys():  # noqa: SIM118 (iterating a Dataset yields elements, not tags)
            if tag.group != 0x7FE0:
                header[tag] = source[tag]
    return header


def reference_header(source: Dataset) -> Dataset:
    """A header-only copy of `source` that highdicom builds from without raising.

    The source itself is never modified: changed attributes are new elements of the copy.
    """
    missing = [keyword for keyword in REQUIRED_UIDS if not source.get(keyword)]
    if missing:
        raise ValueError(f"the source image lacks {', '.join(missing)}: it is not a stored DICOM instance")
    if not source.get("Rows") or not source.get("Columns"):
        raise ValueError("the source has no Rows/Columns: it is not an image")
    header = _without_pixels(source)
    with pydicom_quiet():
        for keyword, vr in TYPE2_PATIENT_STUDY.items():
            if keyword not in header or not _acceptable(keyword, vr, header[keyword].value):
                header.add_new(keyword, vr, "")
    return header


def copy_patient_and_study(target: SOPClass, source: Dataset) -> None:
    """Every Patient- and Study-level attribute of `source` that its IOD defines, as it is.

    highdicom knows the module layout of standard SOP classes only; for a private one what
    its constructor copied from the reference header has to do.  Type 2 attributes the
    source lacks are present and empty, as both IODs require.
    """
    with pydicom_quiet():
        try:  # a deep copy: highdicom adds the very element objects, which must not be shared
            target.copy_patient_and_study_information(copy.deepcopy(_without_pixels(source)))
        except KeyError:  # a SOP class highdicom has no IOD table for
            pass
        for keyword, vr in TYPE2_PATIENT_STUDY.items():
            if keyword not in target:
                target.add_new(keyword, vr, "")


def check_lo(name: str, value: str | None) -> None:
    """A ValueError unless `value` fits a LO element (64 characters, no backslash)."""
    if value is not None and (len(value) > 64 or "\\" in value):
        raise ValueError(f"{name} must be at most 64 characters without a backslash")


@contextmanager
def building(what: str) -> Iterator[None]:
    """Build `what` (e.g. "Secondary Capture") quietly; errors name no value of the source."""
    with pydicom_quiet():
        try:
            yield
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise ValueError(
                f"could not build the {what} from this source image ({type(exc).__name__}): "
                "check the source's header with dciodvfy"
            ) from None
