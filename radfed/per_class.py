"""Per-class figures for a task with more than two labels: one-vs-rest AUROC of every
class, with its 95 % CI over patients, at each clinic and pooled over clinics, and their
macro mean.

The headline of every task stays "any finding vs the first label" (radfed.evaluation):
with labels `normal, nodule, effusion` it says whether the model tells abnormal from
normal, not whether it tells a nodule from an effusion. That is what these figures add.

- Class k's score is the model's float32 log-odds of class k against every other class,
  z_k - logsumexp(z_j, j != k), computed from the logits in float64 and rounded once
  (`class_scores`), as the headline's score is: exact however confident the model, and
  the pooled figures can key their histograms by the same float32 values. It orders
  images as softmax p_k does, so the AUROC is scikit-learn's one-vs-rest AUROC. Class 0's
  score is minus the headline's, so its AUROC *is* the headline AUROC.
- A clinic's interval: patients resampled once per replicate and the same resample used
  for every class (the draws `evaluation.bootstrap_auroc` would make with the same seed,
  so each class's interval is exactly that function's); the macro mean's replicate b is
  the mean of the classes' replicates b.
- Pooled: each class's counts per score (`pooled.score_summary`) summed over clinics, as
  for the headline, so the pooled AUROC equals scikit-learn's on the pooled raw scores.
  Its CI comes from the clinics' patient-resampled histograms (`pooled.bootstrap_summary`).
  A clinic draws every class's replicate b from one private seed, so replicate b of
  every class resamples the same patients, and the macro interval is the percentile
  interval of the mean over classes of the federation's replicates b (each class's
  replicates shifted as `pooled.pooled_interval` shifts them).
- The macro mean is defined only when every class's AUROC is: a mean over the classes
  that happen to be present would not be comparable between clinics or runs. A class
  without positives (or without negatives) at a clinic has no AUROC there (None), and
  still has a pooled one when another clinic has it.

Every interval holds its point (`evaluation.contain`). Binary tasks carry none of this:
their messages and rows are as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radfed.evaluation import N_BOOTSTRAP, contain, percentile_interval, resample_counts, weighted_auroc
from radfed.pooled import (
    REPLICATE_KEYS,
    REPLICATES,
    SUMMARY_KEYS,
    bootstrap_summary,
    pooled_quality,
    private_seed,
    replicate_aurocs,
    score_summary,
    usable,
)

MAX_CLASSES = 256  # a reply claiming more classes than this is not read (a malformed message)
CLASS_FIGURES = ("auroc", "auroc_low", "auroc_high", "images", "positives")
MACRO = ("macro_auroc", "macro_auroc_low", "macro_auroc_high")


def class_scores(logits: np.ndarray) -> np.ndarray:
    """N x K float32 log-odds (as float64) of each class against the others from N x K logits."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64)
    out = np.zeros(z.shape)
    if z.size:
        for k in range(z.shape[1]):
            with np.errstate(invalid="ignore"):
                out[:, k] = z[:, k] - logsumexp(np.delete(z, k, axis=1), axis=1)
    with np.errstate(over="ignore"):
        return out.astype(np.float32).astype(np.float64)


def class_bootstrap(
    scores: np.ndarray,
    positive: np.ndarray,
    patients: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    chunk: int = 250,
) -> tuple[np.ndarray, np.ndarray]:
    """(K point AUROCs, K x B replicate AUROCs) of K questions asked of the same N images
    (`scores`, `positive`: K x N), each replicate drawing whole patients once for all K.

    The draws are `evaluation.bootstrap_auroc`'s for the same seed and chunks, so each
    row's percentile interval is that function's; NaN rows for a class without both
    positives and negatives.
    """
    scores, positive = np.atleast_2d(scores).astype(np.float64), np.atleast_2d(positive).astype(bool)
    k, n = scores.shape
    if n == 0:
        return np.full(k, np.nan), np.full((k, 0), np.nan)
    points = np.array([weighted_auroc(scores[i], positive[i], np.ones((1, n)))[0] for i in range(k)])
    groups = np.arange(n) if patients is None else np.unique(np.asarray(patients), return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):
        weights = resample_counts(groups, None, min(chunk, n_boot - start), rng)[:, groups]
        values.append(np.stack([weighted_auroc(scores[i], positive[i], weights) for i in range(k)]))
    return points, np.concatenate(values, axis=1)


def _number(value: float | None) -> float | None:
    """JSON-ready: NaN and infinities become None."""
    return None if value is None or not math.isfinite(float(value)) else value


def label_of(k: int, labels: tuple[str, ...] | list[str]) -> str:
    """Class k's name from the task's labels ('class k' if they do not match)."""
    return str(labels[k]) if 0 <= k < len(labels) else f"class {k}"


@dataclass
class ClassFigures:
    """One class's one-vs-rest figures at one clinic and the counts that pool them."""

    auroc: float
    auroc_low: float
    auroc_high: float
    images: int
    positives: int
    summary: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class PerClass:
    """A clinic's per-class figures for a task with more than two labels, and their macro
    mean with its interval (NaN when a class has no AUROC here)."""

    classes: list[ClassFigures]
    macro_auroc: float = math.nan
    macro_auroc_low: float = math.nan
    macro_auroc_high: float = math.nan

    def to_metrics(self, prefix: str) -> dict[str, float | int | list[float]]:
        """Flower metrics: `<prefix>classes` = K, the macro figures, and for class k
        `<prefix>class<k>_<figure>` and its counts `<prefix>class<k>_<summary key>`."""
        out: dict[str, float | int | list[float]] = {f"{prefix}classes": len(self.classes)}
        out.update({f"{prefix}{name}": float(getattr(self, name)) for name in MACRO})
        for k, figures in enumerate(self.classes):
            out.update({f"{prefix}class{k}_{name}": getattr(figures, name) for name in CLASS_FIGURES})
            out.update({f"{prefix}class{k}_{name}": values for name, values in figures.summary.items()})
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, float], lists: dict[str, list[float]], prefix: str) -> PerClass | None:
        """Read `to_metrics` back (None for a binary task's reply, or a malformed count)."""
        count = metrics.get(f"{prefix}classes")
        if count is None or not math.isfinite(count) or not 2 < count <= MAX_CLASSES:
            return None
        classes = []
        for k in range(int(count)):
            head = f"{prefix}class{k}_"
            value = {name: float(metrics.get(head + name, math.nan)) for name in CLASS_FIGURES}
            summary = {name: lists[head + name] for name in SUMMARY_KEYS + REPLICATE_KEYS if head + name in lists}
            classes.append(
                ClassFigures(
                    value["auroc"],
                    value["auroc_low"],
                    value["auroc_high"],
                    _count(value["images"]),
                    _count(value["positives"]),
                    summary,
                )
            )
        return cls(classes, *(float(metrics.get(f"{prefix}{name}", math.nan)) for name in MACRO))

    def stored(self, labels: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        """What the clinic's row keeps (JSON): each class's figures by name, and the macro mean."""
        classes = [
            {"label": label_of(k, labels), **{name: _number(getattr(c, name)) for name in CLASS_FIGURES}}
            for k, c in enumerate(self.classes)
        ]
        return {"classes": classes, **{name: _number(getattr(self, name)) for name in MACRO}}


def _count(value: float) -> int:
    return int(value) if math.isfinite(value) else 0


def per_class_figures(
    logits: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray | None = None,
    *,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    replicates: int = REPLICATES,
) -> PerClass | None:
    """A clinic's per-class figures from its N x K validation logits (None for K <= 2).

    Images with a NaN class score (a broken model) are left out of every class, so every
    class's figures are about the same images and the same patients.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] <= 2:
        return None
    k = z.shape[1]
    scores = class_scores(z)
    labels = np.asarray(labels).astype(np.int64)
    finite = ~np.isnan(scores).any(axis=1)
    scores, labels = scores[finite], labels[finite]
    patients = None if patients is None else np.asarray(patients)[finite]
    positive = labels[None, :] == np.arange(k)[:, None]  # K x N: image is of class k
    points, values = class_bootstrap(scores.T, positive, patients, n_boot=n_boot, seed=seed)
    shared = private_seed(scores, seed)  # one patient draw per replicate for every class
    classes = []
    for i in range(k):
        low, high = contain(float(points[i]), *percentile_interval(values[i]))
        answer = positive[i].astype(np.int64)
        summary = {
            **score_summary(scores[:, i], answer),
            **bootstrap_summary(scores[:, i], answer, patients, n_boot=replicates, seed=shared),
        }
        classes.append(ClassFigures(float(points[i]), low, high, int(answer.size), int(answer.sum()), summary))
    macro = float(points.mean()) if np.isfinite(points).all() else math.nan
    low, high = (
        contain(macro, *percentile_interval(values.mean(axis=0))) if math.isfinite(macro) else (math.nan, math.nan)
    )
    return PerClass(classes, macro, low, high)


def _shifted_replicates(summaries: list[dict[str, list[float]]], point: float | None) -> np.ndarray | None:
    """A class's B pooled replicate AUROCs, shifted and kept in [0, 1] as the pooled
    interval's are (radfed.pooled.pooled_interval); None without a point or replicates."""
    found = replicate_aurocs(summaries) if point is not None else None
    if found is None:
        return None
    values, coarse = found
    return np.clip(values + (point - coarse if math.isfinite(coarse) else 0.0), 0.0, 1.0)


def pooled_per_class(clinics: list[PerClass], labels: tuple[str, ...] | list[str] = ()) -> dict[str, Any] | None:
    """Per-class pooled AUROC [95 % CI] over clinics and the macro mean (None when no
    clinic sent per-class counts, e.g. under secure aggregation, whose legacy messages
    carry no lists). Clinics that sent another number of classes than the first are left out."""
    if not clinics:
        return None
    k = len(clinics[0].classes)
    same = [c for c in clinics if len(c.classes) == k]
    if not any(usable(c.summary) for clinic in same for c in clinic.classes):
        return None
    classes, replicates = [], []
    for i in range(k):
        summaries = [c.classes[i].summary for c in same if usable(c.classes[i].summary)]
        pooled = pooled_quality(summaries)
        point = pooled.get("auroc")
        with_images = [s for s in summaries if np.sum(s["cal_count"]) > 0]
        classes.append(
            {
                "label": label_of(i, labels),
                "auroc": point,
                "auroc_low": pooled.get("auroc_low"),
                "auroc_high": pooled.get("auroc_high"),
                "images": int(pooled.get("images") or 0),
                "positives": int(sum(np.sum(s["hist_pos"]) for s in summaries)),
                "clinics": len(with_images),
            }
        )
        replicates.append(_shifted_replicates(with_images, point))
    out: dict[str, Any] = {"classes": classes, **{name: None for name in MACRO}}
    points = [c["auroc"] for c in classes]
    if all(p is not None for p in points):
        macro = float(np.mean(points))
        out["macro_auroc"] = macro
        if all(r is not None for r in replicates) and len({r.size for r in replicates}) == 1:  # type: ignore[union-attr]
            low, high = contain(macro, *percentile_interval(np.mean(replicates, axis=0)))
            out.update(macro_auroc_low=_number(low), macro_auroc_high=_number(high))
    return out


__all__ = [
    "MACRO",
    "ClassFigures",
    "PerClass",
    "class_bootstrap",
    "class_scores",
    "label_of",
    "per_class_figures",
    "pooled_per_class",
]
