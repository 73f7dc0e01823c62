"""A delivered model's predictions on a clinic's own folder, with heat maps.

`client-node predict` runs it. The images go through the same data options and
preprocessing as training (radfed.data), the model is the one the clinic received
(radfed.delivery: its own BatchNorm statistics), and every figure uses the federation's
definitions (radfed.evaluation), so on the clinic's validation patients the AUROC is the
one the federation recorded for it. Everything is written to the clinic's disk:

    OUT/predictions.csv  one row per image (sample): file, sample, split, label if known,
                         p(class) per class, p(finding), its log-odds, the call at the
                         federation's pooled threshold and at this clinic's own, and where
                         the heat map peaks;
    OUT/heatmaps/*.png   a Grad-CAM overlay per image (radfed.heatmap);
    OUT/summary.json     the model, thresholds, counts and (with labels) validation figures.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radfed.data import ClinicData, DataOptions, Split, load_clinic, unlabelled_images
from radfed.data.labels import LabelLookup
from radfed.data.manifest import MANIFEST_NAME
from radfed.data.sources import class_folders
from radfed.delivery import MODELS_FOLDER, ModelFileError, load_model_file, sha256_file
from radfed.evaluation import finding_scores
from radfed.models import create_model
from radfed.spec import ExperimentSpec, data_options
from radfed.training import predict_logits
from radfed.unit_scores import split_validation, unit_outputs

Progress = Callable[[str, int, int], None]


def resolve_model_file(model: str, models_dir: Path, kind: str = "final") -> Path:
    """A model file path, or a run id (its delivered `kind` model under models_dir)."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    run = model.removeprefix("run-")
    candidate = models_dir / f"run-{run}" / f"{kind}.pt"
    if candidate.is_file():
        return candidate
    held = sorted(p.name.removeprefix("run-") for p in models_dir.glob("run-*") if p.is_dir())
    raise ModelFileError(
        f"no model {model!r}: not a file, and no {kind} model of run {run} in "
        f"{models_dir} (runs delivered here: {', '.join(held) or 'none'})"
    )


def _has_labels(data_dir: Path, manifest: Path | None, options: DataOptions, labels: list[str]) -> bool:
    if manifest is not None or (data_dir / MANIFEST_NAME).exists() or options.label_source != "manifest":
        return True
    return bool(class_folders(data_dir, LabelLookup(labels, options.label_map)))


def _safe(relpath: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", relpath.replace("/", "__"))[-120:]


def _targets(logits: np.ndarray) -> list[int]:
    """The class Grad-CAM explains per image: the most likely finding (any class but the first)."""
    return [1 + int(np.argmax(row[1:])) for row in logits] if logits.shape[1] > 1 else [0] * len(logits)


def predict_folder(
    model_file: Path,
    data_dir: Path,
    out_dir: Path,
    *,
    manifest: Path | None = None,
    local_options: dict[str, Any] | None = None,
    cam: bool = True,
    cache_dir: Path | None = None,
    workers: int = 1,
    dicom_out: bool = False,
    cam_layer: str | None = None,
    dicomweb: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Predict every usable image of data_dir with a delivered model; returns the summary.
    `dicom_out` / `dicomweb`: also the results as DICOM SC + SR (radfed.prediction_dicom)."""
    payload = load_model_file(model_file)
    spec = ExperimentSpec.from_json(str(payload["spec"]))
    model = create_model(spec.backbone, len(spec.labels), "random", normalisation=str(payload["normalisation"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    options = data_options(spec.data).with_local(local_options or {})
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    labelled = _has_labels(data_dir, manifest, options, list(spec.labels))
    if labelled:
        data: ClinicData = load_clinic(
            data_dir,
            spec.labels,
            spec.image_size,
            manifest=manifest,
            val_fraction=spec.val_fraction,
            seed=spec.seed,
            cache_dir=cache_dir,
            workers=workers,
            options=options,
            progress=progress,
        )
        parts, rejected = [("train", data.train), ("val", data.val)], data.rejected
    else:
        split, rejected = unlabelled_images(
            data_dir, spec.image_size, options, cache_dir=cache_dir, workers=workers, progress=progress
        )
        parts = [("", split)]
    pooled_cut = _number((payload.get("pooled") or {}).get("threshold_logit"))
    own_cut = _number((payload.get("clinic") or {}).get("threshold_logit"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    unit_rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "model": str(model_file),
        "model_sha256": sha256_file(Path(model_file)),
        "experiment": payload.get("experiment"),
        "flwr_run_id": payload.get("flwr_run_id"),
        "kind": payload.get("kind"),
        "round": payload.get("round"),
        "labels": list(spec.labels),
        "threshold_logit": {"federation": pooled_cut, "clinic": own_cut},
        "labelled": labelled,
        "rejected": len(rejected),
        "heatmaps": 0,
    }
    total = sum(len(part) for _, part in parts)
    done = 0
    for name, part in parts:
        logits = predict_logits(model, part.pixels).numpy()
        if name == "val" and len(part):
            summary["validation"] = split_validation(logits, part, spec.seed).quality.as_dict()
        maps = _heatmaps(model, part, logits, out_dir, name, cam, progress, done, total, cam_layer)
        rows += _rows(name, part, logits, spec, pooled_cut, own_cut, maps)
        unit_rows += _unit_rows(name, part, logits, spec, pooled_cut)
        done += len(part)
    if unit_rows:
        _write_csv(out_dir / "units.csv", unit_rows)
        summary["units"] = len(unit_rows)
    summary["images"] = len(rows)
    summary["heatmaps"] = sum(1 for r in rows if r.get("heatmap"))
    _write_csv(out_dir / "predictions.csv", rows)
    if dicom_out or dicomweb:
        from radfed.prediction_dicom import write_dicom_results

        summary["dicom_files"] = write_dicom_results(
            rows,
            data_dir,
            out_dir,
            summary,
            list(spec.labels),
            str(payload.get("global_digest", "")),
            dicomweb,
            progress,
        )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _heatmaps(
    model: torch.nn.Module,
    part: Split,
    logits: np.ndarray,
    out_dir: Path,
    name: str,
    cam: bool,
    progress: Progress | None,
    done: int,
    total: int,
    layer_name: str | None = None,
) -> list[tuple[str, int, int]]:
    """(png name, peak row, peak column) per image; empty names without --cam."""
    if not cam or not len(part):
        return [("", -1, -1)] * len(part)
    from PIL import Image

    from radfed.heatmap import heatmaps, overlay, peak

    counted = [done]

    def step(n: int) -> None:
        counted[0] += n
        if progress is not None:
            progress("heat maps", counted[0], total)

    maps = heatmaps(model, part.pixels, _targets(logits), layer_name=layer_name, progress=step)
    folder = out_dir / "heatmaps"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, heat in enumerate(maps):
        png = f"{name or 'image'}-{i:05d}-{_safe((part.files or [''] * len(part))[i])}.png"
        image = part.pixels[i, 0].numpy()
        Image.fromarray(overlay(image, heat, size=max(256, image.shape[-1]))).save(folder / png)
        out.append((png, *peak(heat)))
    return out


def _rows(
    name: str,
    part: Split,
    logits: np.ndarray,
    spec: ExperimentSpec,
    pooled_cut: float | None,
    own_cut: float | None,
    maps: list[tuple[str, int, int]],
) -> list[dict[str, Any]]:
    scores = finding_scores(logits)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    files = part.files or [""] * len(part)
    seen: dict[str, int] = {}
    rows = []
    for i in range(len(part)):
        sample = seen[files[i]] = seen.get(files[i], -1) + 1
        label = int(part.labels[i])
        row: dict[str, Any] = {
            "file": files[i],
            "sample": sample,
            "split": name,
            "label": spec.labels[label] if label >= 0 else "",
        }
        row.update({f"p_{c}": f"{probs[i, k]:.6f}" for k, c in enumerate(spec.labels)})
        row["p_finding"] = f"{1.0 / (1.0 + math.exp(-float(np.clip(scores[i], -700, 700)))):.6f}"
        row["finding_logodds"] = f"{float(scores[i]):.7g}"
        row["call_federation"] = "" if pooled_cut is None else int(scores[i] >= pooled_cut)
        row["call_clinic"] = "" if own_cut is None else int(scores[i] >= own_cut)
        row["heatmap"], row["cam_row"], row["cam_col"] = maps[i]
        rows.append(row)
    return rows


def _unit_rows(
    name: str, part: Split, logits: np.ndarray, spec: ExperimentSpec, pooled_cut: float | None
) -> list[dict[str, Any]]:
    """One row per labelled unit (study, series, folder) when the data options group slices:
    its score is the federation's (radfed.unit_scores: mean of the slices' log-probabilities)."""
    if part.units is None or len(set(part.units.tolist())) == len(part):
        return []
    units = part.units.numpy()
    unit_logp, labels, _ = unit_outputs(logits, part.labels.numpy(), None, units)
    first = {}
    for i, unit in enumerate(units.tolist()):
        first.setdefault(unit, i)
    files = part.files or [""] * len(part)
    scores = finding_scores(unit_logp)
    out = []
    for k, (unit, i) in enumerate(sorted(first.items(), key=lambda item: item[1])):
        label = int(labels[k])
        out.append(
            {
                "split": name,
                "unit": k,
                "first_file": files[i],
                "samples": int((units == unit).sum()),
                "label": spec.labels[label] if label >= 0 else "",
                "p_finding": f"{1.0 / (1.0 + math.exp(-float(np.clip(scores[k], -700, 700)))):.6f}",
                "finding_logodds": f"{float(scores[k]):.7g}",
                "call_federation": "" if pooled_cut is None else int(scores[k] >= pooled_cut),
            }
        )
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        if not rows:
            fh.write("file\n")
            return
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


__all__ = ["MODELS_FOLDER", "ModelFileError", "predict_folder", "resolve_model_file"]
