"""AI results as DICOM objects in the clinic's PACS: heat maps, findings, DICOMweb I/O.

`client-node predict --dicom-out` turns each prediction into two objects in the source
image's study: a Secondary Capture of the heat-map overlay (:func:`secondary_capture`)
and a Structured Report of the finding and its probability (:func:`structured_report`),
and stores them with DICOMweb STOW-RS (:func:`store_instances`).  Everything here runs at
the clinic; nothing is sent to the coordinator.

Modules, one concept each: ``vocabulary`` (codes and names we write), ``source`` (what we
take from the source image, keeping its values out of messages), ``capture`` (the SC),
``report`` (the SR and reading it back), ``dicomweb`` (STOW/QIDO/WADO-RS).
"""

from __future__ import annotations

from radfed.pacs.capture import DEFAULT_SC_SERIES_NUMBER, patient_orientation, secondary_capture
from radfed.pacs.dicomweb import (
    DicomWebError,
    retrieve_series,
    retrieve_study,
    search_series,
    search_studies,
    store_instances,
)
from radfed.pacs.report import DEFAULT_SR_SERIES_NUMBER, ReportedFinding, read_report, structured_report
from radfed.pacs.vocabulary import PRIVATE_SCHEME, finding_code

__all__ = [
    "DEFAULT_SC_SERIES_NUMBER",
    "DEFAULT_SR_SERIES_NUMBER",
    "PRIVATE_SCHEME",
    "DicomWebError",
    "ReportedFinding",
    "finding_code",
    "patient_orientation",
    "read_report",
    "retrieve_series",
    "retrieve_study",
    "search_series",
    "search_studies",
    "secondary_capture",
    "store_instances",
    "structured_report",
]
