"""How a task wants a clinic's DICOM turned into samples and labels: `DataOptions`.

Kept free of torch (and of the pixel pipeline), so the coordinator can check an
experiment's data options without loading either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_has_tag, tag_for_keyword

from radfed import dicom

LABEL_SOURCES = ("manifest", "folders", "tag")
FILTER_KEYWORDS = ("Modality", "BodyPartExamined", "SeriesDescription")


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
    label_tag / label_map: for "tag", the DICOM keyword whose value gives the
        label, and value -> label (case-insensitive); without a map the value
        itself must be a label name.
    filters: keyword (FILTER_KEYWORDS) -> accepted values (case-insensitive).
    Invalid values raise ValueError naming the option and the allowed values.
    """

    window: str | tuple[float, float] | None = None
    frame_policy: str = "middle"
    label_source: str = "manifest"
    label_tag: str | None = None
    label_map: dict[str, str] | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dicom.resolve_window(self.window)
        if self.frame_policy not in dicom.FRAME_POLICIES:
            raise _one_of("frame_policy", dicom.FRAME_POLICIES, self.frame_policy)
        if self.label_source not in LABEL_SOURCES:
            raise _one_of("label_source", LABEL_SOURCES, self.label_source)
        if self.label_source == "tag" and not (isinstance(self.label_tag, str) and self.label_tag.strip()):
            raise ValueError(f"label_tag must name a DICOM keyword (e.g. 'SeriesDescription') when "
                             f"label_source is 'tag'; got {self.label_tag!r}")
        if self.label_tag is not None and not _is_dicom_keyword(self.label_tag):
            raise ValueError(f"label_tag must be a DICOM keyword such as 'SeriesDescription' or "
                             f"'BodyPartExamined'; got {self.label_tag!r}")
        if self.label_map is not None and not isinstance(self.label_map, dict):
            raise ValueError(f"label_map must be a dict of tag value -> label or None; got {type(self.label_map).__name__}")
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
        label_map = sorted((self.label_map or {}).items())
        filters = sorted((k, sorted(v)) for k, v in self.filters.items())
        return json.dumps([self.pixel_token(), self.label_source, self.label_tag, label_map, filters])
