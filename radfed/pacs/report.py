"""An AI finding as a DICOM Structured Report that a PACS files with the study it is about.

The report is a TID 1500 Measurement Report (the template highdicom implements and that
viewers such as OHIF, and registries, read) in a Comprehensive SR document: no spatial
coordinates are needed, and Comprehensive SR is accepted by more PACS than the newer
Comprehensive 3D SR.  It holds one TID 1501 measurement group:

- Finding type: the task's positive label (a standard code when
  :mod:`radfed.pacs.vocabulary` knows one, else a ``99RADFED`` code);
- Probability (122157, DCM), unit "1": the model's output, in [0, 1];
- Threshold Value (122411, DCM): the operating point of the task;
- a qualitative evaluation "<finding> = Present | Absent": whether the probability is at
  or above the threshold, so a worklist can filter without knowing the threshold;
- Algorithm Identification (TID 4019): the model's name, its digest as the version (a
  digest names the exact weights; a human version label does not, across federated
  rounds), and the human version as a parameter;
- Source images: the instances the finding rests on.

The observer is the model as a device (TID 1004), with a Device Observer UID derived from
the model digest, so every report of the same weights names the same device.  The image
library lists the source instances and the heat-map Secondary Capture when there is one;
all of them are the SR's evidence, which is how a viewer finds the SC from the report.

Patient and study come from the source (highdicom copies them from the first evidence
instance), so the SR is in the source's study, in a series of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from highdicom.sr import (
    AlgorithmIdentification,
    ComprehensiveSR,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from radfed.pacs.source import building, check_lo, copy_patient_and_study, reference_header
from radfed.pacs.vocabulary import (
    ABSENT,
    IMAGING_PROCEDURE,
    MANUFACTURER,
    NO_UNITS,
    PRESENT,
    PRIVATE_SCHEME,
    PROBABILITY,
    RADFED_CODING_SCHEME,
    THRESHOLD,
    finding_code,
    software_version,
)

__all__ = ["DEFAULT_SR_SERIES_NUMBER", "ReportedFinding", "device_observer_uid", "read_report", "structured_report"]

DEFAULT_SR_SERIES_NUMBER = 9002


def device_observer_uid(model_digest: str) -> str:
    """A UID for the model as an observer device: the same for every report of these weights."""
    return generate_uid(entropy_srcs=["radfed model", model_digest])


def _fraction(name: str, value: float) -> float:
    """`value` as a float in [0, 1], or a ValueError naming the argument."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1]") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {number}")
    return number


def _unique_instances(datasets: Sequence[Dataset]) -> list[Dataset]:
    """`datasets` without repeats of the same SOP Instance UID, in order."""
    seen: set[str] = set()
    unique = []
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid not in seen:
            seen.add(uid)
            unique.append(ds)
    return unique


def _observation_context(model_name: str, model_digest: str) -> ObservationContext:
    """The model as the device that made the observations (TID 1004)."""
    device = DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(model_digest),
        name=model_name,
        manufacturer_name=MANUFACTURER,
        model_name=model_name,
    )
    return ObservationContext(observer_device_context=ObserverContext(codes.DCM.Device, device))


def structured_report(
    source: Dataset,
    *,
    finding: str | Code,
    probability: float,
    threshold: float,
    model_name: str,
    model_digest: str,
    model_version: str | None = None,
    evidence: Sequence[Dataset] = (),
    sc: Dataset | None = None,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    series_description: str = "radfed AI result",
    instance_number: int = 1,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> ComprehensiveSR:
    """A Comprehensive SR (TID 1500) of `finding` with `probability` for `source`'s study.

    `source` is the image the model read (headers suffice); `evidence` lists further
    images of the same study that the finding rests on (e.g. the other views of an
    examination), `sc` the heat-map Secondary Capture made by
    :func:`radfed.pacs.secondary_capture`.  The finding is Present when `probability` is
    at or above `threshold`.  `model_digest` (e.g. ``sha256:…``) is the algorithm version.
    """
    probability = _fraction("probability", probability)
    threshold = _fraction("threshold", threshold)
    if not str(model_name).strip() or not str(model_digest).strip():
        raise ValueError("model_name and model_digest must be non-empty")
    check_lo("model_name", model_name)
    check_lo("series_description", series_description)
    concept = finding_code(finding)
    # Built from reference headers (see radfed.pacs.source); the source's own Patient and
    # Study attributes are copied over afterwards.
    images = _unique_instances([reference_header(ds) for ds in (source, *evidence)])
    # A reference to another study (maybe another patient) in a PACS is a safety hazard.
    if any(ds.StudyInstanceUID != source.StudyInstanceUID for ds in [*images, *([sc] if sc is not None else [])]):
        raise ValueError("evidence and sc must belong to the source's study")
    library = images + ([sc] if sc is not None else [])
    with building("Structured Report"):
        sr = ComprehensiveSR(
            evidence=library,
            content=_content(concept, probability, threshold, model_name, model_digest, model_version, images, library),
            series_instance_uid=series_instance_uid or generate_uid(),
            series_number=series_number,
            sop_instance_uid=sop_instance_uid or generate_uid(),
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            is_complete=True,
            series_description=series_description,
            manufacturer_model_name=model_name,
            software_versions=software_version(),
            # Declared only when used: dciodvfy warns about any designator it does not know.
            coding_schemes=[RADFED_CODING_SCHEME] if concept.scheme_designator == PRIVATE_SCHEME else None,
        )
    copy_patient_and_study(sr, source)
    return sr


def _content(
    concept: Code,
    probability: float,
    threshold: float,
    model_name: str,
    model_digest: str,
    model_version: str | None,
    images: list[Dataset],
    library: list[Dataset],
) -> MeasurementReport:
    """The TID 1500 content tree: observer, image library, one measurement group."""
    parameters = [f"model version {model_version}"] if model_version else None
    algorithm = AlgorithmIdentification(name=model_name, version=model_digest, parameters=parameters)
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier=f"{concept.meaning} ({model_name})"),
        finding_type=concept,
        algorithm_id=algorithm,
        measurements=[
            Measurement(name=PROBABILITY, value=probability, unit=NO_UNITS),
            Measurement(name=THRESHOLD, value=threshold, unit=NO_UNITS),
        ],
        qualitative_evaluations=[QualitativeEvaluation(concept, PRESENT if probability >= threshold else ABSENT)],
        source_images=[SourceImageForMeasurementGroup.from_source_image(ds) for ds in images],
    )
    return MeasurementReport(
        observation_context=_observation_context(model_name, model_digest),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=[group],
        referenced_images=library,
    )


@dataclass(frozen=True)
class ReportedFinding:
    """What a radfed SR says, read back (e.g. from a PACS): no patient data."""

    finding: str  # the finding's code meaning
    finding_code: tuple[str, str]  # (scheme designator, code value)
    probability: float
    threshold: float
    present: bool
    model_name: str
    model_digest: str
    source_instance_uids: tuple[str, ...]
    library_instance_uids: tuple[str, ...]  # sources and the heat-map SC


def read_report(sr: Dataset) -> ReportedFinding:
    """The finding of an SR written by :func:`structured_report`, or a ValueError."""
    try:
        report = MeasurementReport.from_sequence([sr], is_root=True)
    except (AttributeError, ValueError, KeyError, IndexError):
        raise ValueError("not a TID 1500 Measurement Report") from None
    groups = report.get_image_measurement_groups()
    if len(groups) != 1:
        raise ValueError(f"expected one measurement group, found {len(groups)}")
    group = groups[0]
    probability = group.get_measurements(name=PROBABILITY)
    threshold = group.get_measurements(name=THRESHOLD)
    finding = group.finding_type
    if not probability or not threshold or finding is None:
        raise ValueError("the measurement group lacks a finding, probability or threshold")
    evaluation = group.get_qualitative_evaluations(name=finding)
    return ReportedFinding(
        finding=finding.meaning,
        finding_code=(finding.scheme_designator, finding.value),
        probability=float(probability[0].value),
        threshold=float(threshold[0].value),
        present=bool(evaluation) and evaluation[0].value == PRESENT,
        model_name=_text(group, codes.DCM.AlgorithmName),
        model_digest=_text(group, codes.DCM.AlgorithmVersion),
        source_instance_uids=tuple(str(ref.referenced_sop_instance_uid) for ref in group.source_images),
        library_instance_uids=tuple(
            str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in _image_library_entries(sr)
        ),
    )


def _text(group: MeasurementsAndQualitativeEvaluations, name: Code) -> str:
    """The value of the group's first TEXT item called `name`, or "".

    The group object is a sequence holding the group's CONTAINER; its items are children.
    """
    items = group[0].ContentSequence.find(name)
    return str(items[0].value) if items else ""


def _image_library_entries(sr: Dataset) -> list[Dataset]:
    """IMAGE content items of the report's Image Library container (TID 1600)."""
    for item in sr.get("ContentSequence", []):
        name = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "CONTAINER" and name and name[0].CodeValue == codes.DCM.ImageLibrary.value:
            entries = []
            for group in item.get("ContentSequence", []):
                entries += [child for child in group.get("ContentSequence", []) if child.get("ValueType") == "IMAGE"]
                if group.get("ValueType") == "IMAGE":
                    entries.append(group)
            return entries
    return []
