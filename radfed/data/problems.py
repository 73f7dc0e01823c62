"""What can be wrong with a clinic's data, and the one line that says so.

A bad row or file is a rejection (a reason code, with its fix in `REJECTION_HELP`); a
folder that is unusable as a whole is a `DataError` whose message names the folder, the
problem and the fix. Messages never hold a path below the data folder or a tag value:
a file or folder name can carry a patient's name, and the message may reach a log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from radfed import dicom

FILTERED = "filtered"  # not a rejection: the file is simply not part of this task

# Rejection codes raised here (DICOM codes come from radfed.dicom.REASONS) -> the fix.
REJECTION_HELP: dict[str, str] = {
    "unknown-label": "use one of the task's labels in the label column",
    "empty-key": "fill in the file or sop_instance_uid column",
    "duplicate-row": "list each image once in the manifest",
    "missing-file": "fix the path (relative to the data folder) or copy the file in",
    "outside-data-folder": "use a path inside the data folder, without '..'",
    "unknown-sop-instance-uid": "copy the file with that SOPInstanceUID into the data folder or fix the UID",
    "duplicate-sop-instance-uid": "remove the second copy of the image",
    "unknown-study-instance-uid": "copy that study's files into the data folder or fix the StudyInstanceUID",
    "unknown-series-instance-uid": "copy that series' files into the data folder or fix the SeriesInstanceUID",
    "empty-folder": "the row names a folder without any DICOM file; fix the path or copy the study in",
    "unit-spans-patients": "a labelled study, series or folder holds images of several PatientIDs; "
    "split it per patient or fix the PatientIDs",
    "no-patient-id": "export with a PatientID (pseudonymised is fine): the split needs it",
    "no-label": "add the image's tag value to label_map, or filter such images out",
    **dicom.REASONS,
}


class DataError(Exception):
    """The data folder as a whole is unusable; the message says which folder, why and the fix.

    ``rejected`` carries the local rejection list (relative paths) for the data
    card; it is never part of the message, which may end up in logs.
    """

    def __init__(self, message: str, rejected: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.rejected = list(rejected)


def folder_error(data_dir: Path, problem: str, rejected: Sequence[tuple[str, str]] = ()) -> DataError:
    """DataError in the house style: 'data folder X: problem; fix'."""
    return DataError(f"data folder {data_dir}: {problem}", rejected)


def _public_where(where: str, manifest_name: str) -> str:
    """'labels.csv line N' for a manifest row, else 'a file': paths below the data
    folder can carry a patient's name, so they stay out of exception text."""
    prefix = f"{manifest_name} line "
    if where.startswith(prefix):
        return where.split(":", 1)[0]
    return "a file (run client-node check-data for the list)"


def no_usable_image(
    data_dir: Path, source: str, n_items: int, rejected: list[tuple[str, str]], filtered: int = 0
) -> DataError:
    """Explain why nothing is left, e.g. 'all 12 rows name files that do not exist; first: labels.csv line 2'.

    ``source`` is the manifest's file name or a description of the folder scan.
    """
    reasons = Counter(reason for _, reason in rejected)
    if not rejected:
        extra = f" ({filtered} filtered out by the task's filters)" if filtered else ""
        return folder_error(
            data_dir,
            f"no usable image among {n_items} entries of {source}{extra}; check the manifest, labels and filters",
            rejected,
        )
    first_where, first_reason = rejected[0]
    shown = _public_where(first_where, source)
    if len(reasons) == 1 and first_reason == "missing-file" and len(rejected) == n_items:
        return folder_error(
            data_dir,
            f"all {n_items} rows of {source} name files that do not exist; "
            f"first: {shown}; {REJECTION_HELP['missing-file']}",
            rejected,
        )
    detail = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    if filtered:
        detail += f"; {filtered} filtered out"
    fix = REJECTION_HELP.get(first_reason, "see the rejection list")
    return folder_error(
        data_dir,
        f"no usable image: {len(rejected)} rejected ({detail}); first: {shown} ({first_reason}); {fix}",
        rejected,
    )


def check_folder(data_dir: Path) -> None:
    """Fail early with a clear message when the folder itself is wrong."""
    if not data_dir.exists():
        raise folder_error(
            data_dir,
            "does not exist; pass the folder holding the clinic's DICOM files "
            "and labels.csv (see client-node demo-data)",
        )
    if not data_dir.is_dir():
        raise folder_error(data_dir, "is a file, not a folder; pass the folder holding the DICOM files and labels.csv")
