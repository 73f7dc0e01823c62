"""From the values an export uses for its labels to the task's label indices.

Exports say `1`, `1.0`, `Yes`, `pneumonia` or `Opacity` where the experiment says
`opacity`. A `LabelLookup` turns a value (a manifest cell, a class folder's name, a tag's
value) into the index of a task label: through the clinic's or experiment's `label_map`
first, else by the value itself; case-insensitive, numbers compared as numbers. A map
that could mean two things is refused in one line (ValueError) before any file is read.

When no task names the labels (`client-node check-data` on a fresh export),
`labels_from_values` makes them from the values themselves, so an audit can count them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def normalise(value: object) -> str:
    """A label value compared as exports mean it: trimmed, case-folded, '1.0' and '01' as '1'."""
    text = " ".join(str(value).split()).casefold()
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer() and text not in ("nan", "inf", "-inf", "infinity"):
        return str(int(number))
    return text


class LabelLookup:
    """value -> task label index (None: not a label of the task)."""

    def __init__(self, labels: Sequence[str], label_map: Mapping[object, str] | None = None) -> None:
        self.labels = list(labels)
        index: dict[str, int] = {}
        for i, name in enumerate(self.labels):
            key = normalise(name)
            if key in index:
                raise ValueError(
                    f"labels must be distinct names; {self.labels[index[key]]!r} and {name!r} are the same label"
                )
            index[key] = i
        self.by_name = index
        self.mapped: dict[str, int] = {}
        spellings: dict[str, object] = {}
        for value, target in (label_map or {}).items():
            key, goal = normalise(value), normalise(target)
            if goal not in index:
                raise ValueError(
                    f"label map sends {str(value)!r} to {target!r}, which is not one of the task's "
                    f"labels ({', '.join(self.labels)}); map it to one of them"
                )
            if key in self.mapped and self.mapped[key] != index[goal]:
                raise ValueError(
                    f"label map is ambiguous: {str(spellings[key])!r} and {str(value)!r} are the same "
                    f"value but go to {self.labels[self.mapped[key]]!r} and {target!r}; keep one"
                )
            self.mapped[key], spellings[key] = index[goal], value

    def index(self, value: object) -> int | None:
        """The task label index of an export's value, or None."""
        key = normalise(value)
        if not key:
            return None
        if key in self.mapped:
            return self.mapped[key]
        return self.by_name.get(key)


def labels_from_values(values: Iterable[object], label_map: Mapping[object, str] | None = None) -> list[str]:
    """Task labels made from an export's own values: the map's targets in the order given
    (a map names the task), else the distinct values, numbers in numeric order first
    (`0, 1`: the first label is the 'no finding' class), then text in alphabetical order."""
    if label_map:
        return list(dict.fromkeys(str(v).strip() for v in label_map.values()))
    seen: dict[str, str] = {}
    for value in values:
        key = normalise(value)
        if key:
            seen.setdefault(key, key if _is_number(key) else " ".join(str(value).split()))

    def order(key: str) -> tuple[int, float, str]:
        return (0, float(key), "") if _is_number(key) else (1, 0.0, key)

    return [seen[key] for key in sorted(seen, key=order)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
