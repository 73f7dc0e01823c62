"""Load one clinic's labelled DICOM folder into train/validation tensors.

A clinic's export is messy: files at any depth with any names, a CSV manifest typed by
hand or exported by a PACS, the odd broken file. ``load_clinic`` turns that into tensors
for local training and never crashes on a bad row or file: each one is rejected with a
short reason code (and its line number or relative path) so the operator can fix it. It
raises :class:`DataError` only when the folder as a whole is unusable, with one line
saying what to do.

One stage per module, as pydicom's ``pixels`` package does:

- ``options``: `DataOptions` (window, frame policy, label source, filters); no torch;
- ``manifest``: a CSV manifest's columns, dialect and rows;
- ``sources``: labels from a manifest (per file, SOPInstanceUID, study, series or
  folder), class folders or a DICOM tag;
- ``headers`` / ``workers``: each file's header facts, read in parallel and cached;
- ``slices``: which slices of a labelled study or series become samples (slice policy,
  2.5D stacks);
- ``pixels``: decoded, resized pixels, cached;
- ``rows``: those pixels as float16 rows on disk, read a batch at a time (`ImageRows`);
- ``split``: the patient-level train/validation split;
- ``card`` / ``problems``: the data card and rejection reasons; no torch;
- ``labels``: an export's label values to the task's labels (label map, numbers);
- ``audit``: what an unlabelled folder holds;
- ``clinic``: `load_clinic`, `preflight`, `task_labels`, `ClinicData`.

The train/validation split is by patient (never by image). PatientIDs are read by
dicom.header_facts and turned into one-way keys at once: IDs never reach a summary, a
cache file or a log line. :class:`DataError` texts and log lines never contain values of
identifying tags nor any path below the data folder, since a file or folder name can
carry a patient's name; relative paths appear only in ``ClinicData.rejected`` /
``DataError.rejected``, which the local data card (``client-node check-data``) prints on
the clinic's own screen.
"""

from radfed.data.card import SIZE_BUCKETS, format_card
from radfed.data.headers import CACHE_VERSION
from radfed.data.manifest import COLUMN_ALIASES, KEY_COLUMNS, MANIFEST_NAME
from radfed.data.options import FILTER_KEYWORDS, LABEL_SOURCES, SLICE_POLICIES, SLICE_STACKS, DataOptions
from radfed.data.problems import REJECTION_HELP, DataError
from radfed.data.workers import Progress
from radfed.data_card import DATA_CARD_RECORD, SHARED_CARD_KEYS

# Names whose modules import torch are loaded on first use, so that options, manifests and
# cards (the coordinator's and dashboard's side) can be used without torch.
_TORCH_NAMES = {
    "ClinicData": "clinic",
    "preflight": "clinic",
    "task_labels": "clinic",
    "audit_folder": "audit",
    "format_audit": "audit",
    "unlabelled_images": "audit",
    "load_clinic": "clinic",
    "Split": "split",
    "patient_split": "split",
}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(f"radfed.data.{_TORCH_NAMES[name]}"), name)
    raise AttributeError(f"module 'radfed.data' has no attribute {name!r}")


__all__ = [
    "CACHE_VERSION",
    "COLUMN_ALIASES",
    "DATA_CARD_RECORD",
    "ClinicData",
    "DataError",
    "DataOptions",
    "FILTER_KEYWORDS",
    "LABEL_SOURCES",
    "KEY_COLUMNS",
    "MANIFEST_NAME",
    "REJECTION_HELP",
    "SHARED_CARD_KEYS",
    "SIZE_BUCKETS",
    "SLICE_POLICIES",
    "SLICE_STACKS",
    "Split",
    "Progress",
    "preflight",
    "audit_folder",
    "unlabelled_images",
    "format_audit",
    "task_labels",
    "format_card",
    "load_clinic",
    "patient_split",
]
