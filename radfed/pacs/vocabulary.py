"""The words radfed writes into DICOM results: codes, our private coding scheme, our name.

A PACS, a viewer or a downstream registry reads an AI result by its codes, not by its
text.  So wherever the standard has a code we use it (DCM and SNOMED CT, via pydicom's
code dictionary), and the few concepts that are a task's own labels get a code in the
private coding scheme ``99RADFED``: the ``99`` prefix is how PS3.16 (8.2) reserves
designators for local schemes, and every object that uses it says so in its Coding Scheme
Identification Sequence (see :data:`RADFED_CODING_SCHEME`), so a reader can look it up.

A task that wants its labels to carry standard codes passes a
:class:`pydicom.sr.coding.Code` instead of a label string; :func:`finding_code` keeps it.
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "ABSENT",
    "FINDING_CODES",
    "IMAGING_PROCEDURE",
    "MANUFACTURER",
    "NO_UNITS",
    "PRESENT",
    "PRIVATE_SCHEME",
    "PROBABILITY",
    "RADFED_CODING_SCHEME",
    "SOURCE_IMAGE_PURPOSE",
    "THRESHOLD",
    "finding_code",
    "software_version",
]

# General Equipment: who made the object (Manufacturer is Type 2 in SC and SR).
MANUFACTURER = "radfed"

PRIVATE_SCHEME = "99RADFED"
RADFED_CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME,
    name="radfed task labels",
    responsible_organization="radfed",
)

# Standard concepts of the report (DCM = DICOM PS3.16, SCT = SNOMED CT, UCUM = units).
PROBABILITY = codes.DCM.Probability  # (122157, DCM): the model's output for the finding
THRESHOLD = codes.DCM.ThresholdValue  # (122411, DCM): the operating point it was compared with
NO_UNITS = codes.UCUM.NoUnits  # ("1", UCUM): probabilities are fractions in [0, 1]
PRESENT = codes.SCT.Present  # (52101004, SCT): probability at or above the threshold
ABSENT = codes.SCT.Absent  # (272519000, SCT): below it
IMAGING_PROCEDURE = codes.SCT.ImagingProcedure  # (363679005, SCT): TID 1500 "procedure reported"
# CID 7202, purpose of reference of the SC's Source Image Sequence.
SOURCE_IMAGE_PURPOSE = codes.DCM.SourceImageForImageProcessingOperation  # (121322, DCM)

# Task labels that have a standard code.  Keys are lower-case label spellings.
FINDING_CODES: dict[str, Code] = {
    "opacity": codes.DCM.Opacity,  # (112001, DCM), CID 6102 radiographic lesion
    "abnormal opacity": codes.DCM.AbnormalOpacity,  # (112033, DCM)
    "ground glass opacity": codes.DCM.GroundGlassOpacity,  # (112120, DCM)
    "nodule": codes.SCT.Nodule,  # (27925004, SCT)
    "finding": codes.SCT.Finding,  # (404684003, SCT)
}


def finding_code(finding: str | Code) -> Code:
    """The code for a task's positive label: standard when known, else ``99RADFED``.

    A private code keeps the label itself as its value and meaning, so the report reads
    the same words that the task and the clinic's manifest use.
    """
    if isinstance(finding, Code):
        return finding
    label = " ".join(str(finding).split())
    if not label:
        raise ValueError("finding must be a non-empty label or a pydicom Code")
    if label.lower() in FINDING_CODES:
        return FINDING_CODES[label.lower()]
    if len(label) > 64:
        raise ValueError("finding label longer than 64 characters: use a shorter label or pass a Code")
    return Code(value=label.lower(), scheme_designator=PRIVATE_SCHEME, meaning=label)


def software_version() -> str:
    """radfed's installed version, for Software Versions (General Equipment)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("radfed")
    except PackageNotFoundError:  # running from a source tree without an install
        return "unknown"
