"""Where the demo generator drew each finding, and whether a heat map points there.

A real clinic has no ground truth for where a finding is; the demo does, because it drew
the opacity itself. `write_findings` keeps it beside the demo's DICOM files
(`findings.json`, synthetic data only: positions in pixels, no identifiers), and
`heatmap_hits` asks, for every positive image `client-node predict` wrote a heat map for,
whether the heat map's peak lies inside the drawn finding once both are in the model's
input frame (radfed.dicom.resize_pad: longer side scaled to the input size, centred).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

FINDINGS_FILE = "findings.json"


def write_findings(folder: Path, findings: dict[str, dict[str, float]]) -> Path:
    """findings.json: relative path -> {"row", "col", "radius" (pixels), "rows", "cols"}."""
    path = Path(folder) / FINDINGS_FILE
    path.write_text(
        json.dumps({"format": "radfed-demo-findings-1", "images": findings}, indent=1, sort_keys=True) + "\n"
    )
    return path


def in_model_frame(finding: dict[str, float], size: int) -> tuple[float, float, float]:
    """(row, column, radius) of a finding in a size × size model input (resize_pad's geometry)."""
    rows, cols = int(finding["rows"]), int(finding["cols"])
    scale = size / max(rows, cols)
    new_h, new_w = max(1, round(rows * scale)), max(1, round(cols * scale))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    row = top + (finding["row"] + 0.5) * new_h / rows - 0.5
    col = left + (finding["col"] + 0.5) * new_w / cols - 0.5
    return row, col, finding["radius"] * scale


def heatmap_hits(data_dir: Path, predictions: Path, size: int) -> dict[str, Any]:
    """{"images": positive images with a heat map, "hits": peaks inside the finding, "rate",
    "chance": the mean share of the image a finding covers (what a random peak would hit)}."""
    import math

    findings = json.loads((Path(data_dir) / FINDINGS_FILE).read_text())["images"]
    with Path(predictions).open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("heatmap") and r["file"] in findings]
    hits, area = 0, 0.0
    for r in rows:
        row, col, radius = in_model_frame(findings[r["file"]], size)
        hits += math.hypot(int(r["cam_row"]) - row, int(r["cam_col"]) - col) <= radius
        area += math.pi * radius**2 / size**2
    n = len(rows)
    return {"images": n, "hits": hits, "rate": hits / n if n else None, "chance": area / n if n else None}
