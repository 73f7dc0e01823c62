"""A clinic's data card as text, and image sizes bucketed for the coordinator.

Counts only; kept free of torch so the coordinator and dashboard can use it.
"""

from __future__ import annotations

from typing import Any

# Upper bound (exclusive) of the longer image side -> bucket name, for the shared data card.
SIZE_BUCKETS = ((256, "<256 px"), (512, "256-511 px"), (1024, "512-1023 px"), (2048, "1024-2047 px"))


def size_bucket(size: str) -> str:
    """'ROWSxCOLUMNS' -> the SIZE_BUCKETS bucket of its longer side ('unknown' if unparsable)."""
    try:
        longer = max(int(v) for v in size.split("x"))
    except ValueError:
        return "unknown"
    for limit, name in SIZE_BUCKETS:
        if longer < limit:
            return name
    return f">={SIZE_BUCKETS[-1][0]} px"


# A labelled unit's name in the plural, for the card ("3 studies").
UNIT_PLURALS = {"study": "studies", "series": "series", "folder": "folders", "unit": "units"}


def format_card(card: dict[str, Any]) -> str:
    """A data card (ClinicData.card()) as plain text lines for a terminal. When labels
    belong to studies, series or folders of many images, each split counts those units
    too (the figures a clinic reports are per unit)."""
    summary = card["summary"]
    plural = UNIT_PLURALS.get(summary.get("unit", "image"))
    lines = ["data card"]
    for split in ("train", "val"):
        counts = summary[split]
        per_label = ", ".join(
            f"{label}: {counts['images'].get(label, 0)} images"
            + (f" / {counts.get('units', {}).get(label, 0)} {plural}" if plural else "")
            + f" / {counts.get('patients', {}).get(label, 0)} patients"
            for label in summary["labels"]
        )
        in_units = f" in {counts.get('total_units', 0)} {plural}" if plural else ""
        lines.append(
            f"  {split}: {counts['total_images']} images{in_units}, {counts['total_patients']} patients ({per_label})"
        )
    for key in ("modalities", "manufacturers", "sizes", "transfer_syntaxes"):
        shown = ", ".join(f"{name} {count}" for name, count in sorted(summary[key].items(), key=lambda kv: -kv[1]))
        lines.append(f"  {key.replace('_', ' ')}: {shown or '-'}")
    lines.append(f"  filtered out by the task: {summary['filtered']}")
    reasons = ", ".join(f"{r} {n}" for r, n in summary["rejected"].items())
    lines.append(f"  rejected: {summary['rejected_total']}" + (f" ({reasons})" if summary["rejected"] else ""))
    for item in card["rejected"]:
        lines.append(f"  rejected {item['where']}: {item['reason']}; {item['fix']}")
    if "shared" in card:
        sizes = ", ".join(f"{name} {count}" for name, count in card["shared"]["sizes"].items()) or "-"
        lines.append(
            f"  sent to the coordinator once per run: the counts above (no file names), sizes bucketed: {sizes}"
        )
    return "\n".join(lines)
