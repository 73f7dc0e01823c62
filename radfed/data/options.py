"""How a task wants a clinic's DICOM turned into samples and labels: `DataOptions`.

Kept free of torch (and of the pixel pipeline), so the coordinator can check an
experiment's data options without loading either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from pydicom.datadict import dictionary_has_tag, tag_for_keyword

from radfed import dicom

LABEL_SOURCES = ("manifest", "folders", "tag")
FILTER_KEYWORDS = ("Modality", "BodyPartExamined", "SeriesDescription")
# What a clinic may set for itself at `client-node start` (its export's spellings).
CLINIC_KEYS = ("label_source", "label_tag", "label_map", "file_column", "label_column")
# Which slices of a labelled study or series become samples (radfed.data.slices).
SLICE_POLICIES = ("middle", "even:K", "all")
# Channels per sample: 1, or 3 for 2.5D (a slice with its two neighbours). The backbones
# take 3 channels (Classifier copies one grey channel to three), so 3 needs no model change;
# other counts would need a new first convolution and could not load pretrained weights.
SLICE_STACKS = (1, 3)


def slice_choice(policy: str) -> tuple[str, int]:
    """(name, K) of a slice policy: ("middle", 1), ("even", K) or ("all", 0); ValueError
    naming the allowed values otherwise."""
    name, _, count = str(policy).strip().lower().partition(":")
    if name in ("middle", "all") and not count:
        return name, 1 if name == "middle" else 0
    if name == "even" and count.isdigit() and 1 <= int(count) <= 10_000:
        return name, int(count)
    raise _one_of("slice_policy", ("middle", "even:K (K from 1 to 10000)", "all"), policy)


def _is_dicom_keyword(keyword: str) -> bool:
    """True when keyword names a tag of the DICOM data dictionary (typos fail early)."""
    tag = tag_for_keyword(keyword.strip()) if isinstance(keyword, str) else None
    return tag is not None and dictionary_has_tag(tag)


def _one_of(name: str, allowed: Iterable[str], got: object) -> ValueError:
    """ValueError in one line: the option, the allowed values, the value given."""
    return ValueError(f"{name} must be one of {', '.join(allowed)}; got {got!r}")


@dataclass(frozen=True)
class DataOptions:
    """How a task wants a clinic's DICOM turned into samples and labels.

    window: a CT preset name (dicom.WINDOW_PRESETS), an explicit (center, width)
        or None for the file's own VOI LUT / window.
    frame_policy: "middle" (one sample per file) or "all" (every frame a sample,
        same patient).
    label_source: "manifest" (CSV), "folders" (DATA/<label>/...) or "tag".
    label_tag: for "tag", the DICOM keyword whose value gives the label.
    label_map: value -> task label, for any source (a manifest's label column, a
        class folder's name, the tag's value); case-insensitive, numbers compared as
        numbers ("1.0" is "1"). Without a map the value itself must be a label name
        (radfed.data.labels).
    file_column / label_column: the manifest's column names, when its header uses
        none of the usual spellings (radfed.data.manifest.COLUMN_ALIASES).
    filters: keyword (FILTER_KEYWORDS) -> accepted values (case-insensitive).
    slice_policy: for labelled units of many files (a manifest row naming a study, a
        series or a folder), which slices of each series become samples, in slice order
        (position along the normal, else InstanceNumber): "middle" (one per series),
        "even:K" (K evenly spaced) or "all". Images labelled one by one are each a
        sample whatever the policy.
    slice_stack: 1, or 3 for 2.5D: each sample is its slice with the neighbouring
        slices below and above as channels (ends repeat the slice itself).
    Invalid values raise ValueError naming the option and the allowed values.
    """

    window: str | tuple[float, float] | None = None
    frame_policy: str = "middle"
    label_source: str = "manifest"
    label_tag: str | None = None
    label_map: dict[str, str] | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)
    file_column: str | None = None
    label_column: str | None = None
    slice_policy: str = "middle"
    slice_stack: int = 1

    def __post_init__(self) -> None:
        slice_choice(self.slice_policy)
        if isinstance(self.slice_stack, bool) or self.slice_stack not in SLICE_STACKS:
            raise ValueError(
                f"slice_stack must be 1 or 3 (2.5D: a slice and its two neighbours as the "
                f"backbone's 3 channels); got {self.slice_stack!r}"
            )
        dicom.resolve_window(self.window)
        if self.frame_policy not in dicom.FRAME_POLICIES:
            raise _one_of("frame_policy", dicom.FRAME_POLICIES, self.frame_policy)
        if self.label_source not in LABEL_SOURCES:
            raise _one_of("label_source", LABEL_SOURCES, self.label_source)
        if self.label_source == "tag" and not (isinstance(self.label_tag, str) and self.label_tag.strip()):
            raise ValueError(
                f"label_tag must name a DICOM keyword (e.g. 'SeriesDescription') when "
                f"label_source is 'tag'; got {self.label_tag!r}"
            )
        if self.label_tag is not None and not _is_dicom_keyword(self.label_tag):
            raise ValueError(
                f"label_tag must be a DICOM keyword such as 'SeriesDescription' or "
                f"'BodyPartExamined'; got {self.label_tag!r}"
            )
        if self.label_map is not None and not (
            isinstance(self.label_map, dict)
            and all(isinstance(k, (str, int)) and isinstance(v, str) for k, v in self.label_map.items())
        ):
            raise ValueError(f"label_map must be a dict of value -> label name or None; got {self.label_map!r}")
        for name in ("file_column", "label_column"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise ValueError(f"{name} must be a column name of the manifest or None; got {value!r}")
        if not isinstance(self.filters, dict):
            raise ValueError(f"filters must be a dict of keyword -> list of values; got {type(self.filters).__name__}")
        for keyword, values in self.filters.items():
            if keyword not in FILTER_KEYWORDS:
                raise _one_of("filters keys", FILTER_KEYWORDS, keyword)
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"filters[{keyword!r}] must be a list of strings; got {values!r}")

    def pixel_token(self) -> list[Any]:
        """What changes the preprocessed pixels: part of the cache key."""
        return [dicom.resolve_window(self.window), self.frame_policy]

    def token(self) -> str:
        """Every option as canonical JSON (for the cache key)."""
        filters = sorted((k, sorted(v)) for k, v in self.filters.items())
        label_map = sorted((str(k), v) for k, v in (self.label_map or {}).items())
        return json.dumps(
            [
                self.pixel_token(),
                self.label_source,
                self.label_tag,
                label_map,
                filters,
                self.file_column,
                self.label_column,
            ]
        )

    def with_local(self, local: dict[str, Any]) -> DataOptions:
        """These options with a clinic's own settings laid over them (CLINIC_KEYS only):
        how its export names its columns and labels is the clinic's business, what the
        task does with the pixels is the experiment's."""
        unknown = set(local) - set(CLINIC_KEYS)
        if unknown:
            raise _one_of("clinic data options", CLINIC_KEYS, sorted(unknown)[0])
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in local.items() if v is not None})
        return DataOptions(**values)
