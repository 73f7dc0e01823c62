"""`client-node predict --dicom-out` / `--dicomweb URL`: the predictions as DICOM, for the PACS.

For each predicted DICOM file (its first sample), a Secondary Capture of the heat-map
overlay and a Structured Report of the finding, its probability and the operating
threshold, both in the source image's study and referencing it (radfed.pacs, made with
highdicom). They are written under OUT/dicom/ and, with a DICOMweb root URL, stored there
(STOW-RS): the clinic's own PACS, never the coordinator.

The finding reported is the one the heat map explains: for two labels the task's second
label ("opacity"), for more the most likely finding of that image. Its probability is
p(finding) (all labels but the first) and the threshold the federation's pooled one as
a probability; without one, the clinic's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _probability(logodds: float | None) -> float | None:
    if logodds is None:
        return None
    return 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, logodds))))


def write_dicom_results(
    rows: list[dict[str, Any]],
    data_dir: Path,
    out_dir: Path,
    summary: dict[str, Any],
    labels: list[str],
    global_digest: str,
    dicomweb: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> int:
    """Write (and optionally store) an SC and an SR per predicted file; returns files written."""
    from PIL import Image
    from pydicom import dcmread

    from radfed.pacs import secondary_capture, store_instances, structured_report

    cut = summary["threshold_logit"].get("federation")
    if cut is None:
        cut = summary["threshold_logit"].get("clinic")
    threshold = _probability(cut)
    firsts = [r for r in rows if str(r["sample"]) == "0" and r["file"]]
    folder = out_dir / "dicom"
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for i, row in enumerate(firsts):
        source = dcmread(Path(data_dir) / row["file"])
        target = max(range(1, len(labels)), key=lambda k: float(row[f"p_{labels[k]}"])) if len(labels) > 1 else 0
        made = []
        if row.get("heatmap"):
            overlay = np.asarray(Image.open(out_dir / "heatmaps" / row["heatmap"]).convert("RGB"))
            made.append(
                secondary_capture(
                    source, overlay, instance_number=i + 1, model_name=str(summary.get("experiment") or "radfed")
                )
            )
        report = structured_report(
            source,
            finding=labels[target],
            probability=float(row["p_finding"]),
            threshold=threshold if threshold is not None else 0.5,
            model_name=str(summary.get("experiment") or "radfed"),
            model_digest=global_digest,
            model_version=f"{summary.get('kind')} round {summary.get('round')}",
            sc=made[0] if made else None,
            instance_number=i + 1,
        )
        made.append(report)
        for dataset, kind in zip(made, ("sc", "sr") if len(made) == 2 else ("sr",)):
            dataset.save_as(folder / f"{i:05d}-{kind}.dcm", enforce_file_format=True)
            written += 1
        if dicomweb:
            store_instances(dicomweb, made)
        if progress is not None:
            progress("DICOM results", i + 1, len(firsts))
    return written
