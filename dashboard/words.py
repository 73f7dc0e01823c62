"""How the dashboard writes a value for a person: numbers at a stated precision, times
without microseconds, durations, megabytes, and a word wherever a value is missing.

Streamlit shows a missing value as "None" (or "nan"), which tells a researcher nothing:
whether the figure was never measured, cannot exist (an AUROC of a clinic without
positives), or will come later. Every table the dashboard shows goes through
`display_frame`, which turns each missing cell into the word its column gives, and every
single value through `number`, `auroc_text`, `when`, `duration` or `megabytes`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

NOT_MEASURED = "not measured"
NOT_YET = "not yet"
NO_BASELINE = "no baseline yet"
NOT_SENT = "not sent"
NONE_WORD = "none"
TIME_FORMAT = "%Y-%m-%d %H:%M UTC"
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~])/(?:[\w.@+-]+/)+[\w.@+-]*")


def missing(value: Any) -> bool:
    """True for None, NaN, infinities and pandas' NA: a value nobody should be shown."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def number(value: Any, fmt: str = ".3f", empty: str = NOT_MEASURED) -> str:
    """'0.812' (or the `empty` word)."""
    return empty if missing(value) else format(float(value), fmt)


def count(value: Any, empty: str = NOT_MEASURED) -> str:
    """'1,204' for a count of images or patients (or the `empty` word)."""
    return empty if missing(value) else f"{int(value):,}"


def percent(value: Any, empty: str = NOT_MEASURED) -> str:
    """'83 %' for a share in [0, 1] (or the `empty` word)."""
    return empty if missing(value) else f"{100 * float(value):.0f} %"


def auroc_text(auroc: Any, low: Any = None, high: Any = None, empty: str = NOT_MEASURED) -> str:
    """'0.912 [0.851–0.960]' (point and 95 % CI at the same precision), '0.912' without an
    interval, or the `empty` word."""
    if missing(auroc):
        return empty
    if missing(low) or missing(high):
        return f"{float(auroc):.3f}"
    return f"{float(auroc):.3f} [{float(low):.3f}–{float(high):.3f}]"


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp from the store as an aware UTC datetime (None if absent)."""
    if not value:
        return None
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp if stamp.utcoffset() is not None else stamp.replace(tzinfo=UTC)


def when(value: Any, empty: str = NOT_YET, seconds: bool = False) -> str:
    """'2025-05-01 14:03 UTC': minutes are enough to tell runs apart, microseconds are
    noise on a screen; the audit trail keeps seconds (events come seconds apart)."""
    stamp = parse_time(value)
    if stamp is None:
        return empty
    return stamp.astimezone(UTC).strftime(TIME_FORMAT.replace("%M", "%M:%S") if seconds else TIME_FORMAT)


def duration(seconds: Any, empty: str = NOT_YET) -> str:
    """'45 s', '12 min 3 s', '2 h 05 min' (or the `empty` word)."""
    if missing(seconds):
        return empty
    total = int(round(float(seconds)))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run_duration(entry: dict[str, Any], now: datetime | None = None) -> str:
    """How long a run took, or has been running so far ('running for 3 min 2 s')."""
    start, end = parse_time(entry.get("started_at")), parse_time(entry.get("finished_at"))
    if start is None:
        return NOT_MEASURED
    if end is None:
        now = now or datetime.now(UTC)
        return f"running for {duration((now - start).total_seconds())}"
    return duration((end - start).total_seconds())


def megabytes(value: Any, empty: str = NOT_MEASURED) -> str:
    """'12.35 MB' (10^6 bytes), the unit of every traffic figure on the dashboard."""
    return empty if missing(value) else f"{float(value) / 1e6:.2f} MB"


def display_frame(
    frame: pd.DataFrame, empty: dict[str, str] | None = None, default: str = NOT_MEASURED
) -> pd.DataFrame:
    """The frame with every missing cell replaced by a word: `empty[column]` where given,
    else `default`. Columns with a missing cell become text (Streamlit would print None)."""
    out = frame.copy()
    for column in out.columns:
        holes = out[column].map(missing)
        if holes.any():
            word = (empty or {}).get(column, default)
            out[column] = [word if hole else plain(value) for value, hole in zip(out[column], holes)]
    return out


def plain(value: Any) -> str:
    """A value as text when its column had to become text: whole numbers without '.0',
    other numbers at four significant digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else f"{float(value):.4g}"
    return str(value)


def capitalised(text: str) -> str:
    """'pooled AUROC' -> 'Pooled AUROC' (the names in radfed.reply start lower case)."""
    return text[:1].upper() + text[1:]


def without_paths(text: str) -> str:
    """A message (a run's error, an export's refusal) with each absolute path on the
    server cut to its file name: "missing: /srv/ckpt/round-003.pt" -> "missing: round-003.pt".
    The path tells a reader nothing they can use and shows how the server is laid out."""
    return ABSOLUTE_PATH.sub(lambda m: PurePosixPath(m.group()).name or "a folder on the server", str(text))
