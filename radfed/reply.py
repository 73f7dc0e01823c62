"""One definition of what a clinic reports about a model on its validation patients.

The ClientApp builds a `ClinicValidation` from the model's logits (`from_logits`) and
sends it as Flower metrics (`to_metrics`); the strategies read it back
(`ClinicValidation.from_metrics`), the recorder stores its fields under the same names,
and the dashboard labels them from `LABELS`. A figure therefore has one name and one
meaning from the clinic to the screen: "auroc" is always the finding-vs-first-label AUROC
of the float32 log-odds (radfed.evaluation), the same numbers its CI, threshold,
sensitivity, specificity and the pooled counts come from.

Wire names are `val_<field>`; the number of images is under the message's count key
("num-examples" for an evaluate reply, "val_examples" when a train reply also evaluates
the model it received).

A task with more than two labels also sends each class's one-vs-rest figures and counts
(radfed.per_class: `val_classes`, `val_class<k>_...`, `val_macro_auroc...`); a binary
task's message carries none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from radfed.evaluation import QualityReport, finding_labels, finding_scores, loss_and_accuracy, quality_report
from radfed.per_class import PerClass, per_class_figures
from radfed.pooled import REPLICATE_KEYS, SUMMARY_KEYS, bootstrap_summary, score_summary

PREFIX = "val_"
QUALITY_FIELDS = tuple(f.name for f in fields(QualityReport))
# What a person reads for each figure (dashboard, leaderboard): one wording everywhere.
LABELS = {
    "auroc": "AUROC",
    "auroc_low": "95% CI low",
    "auroc_high": "95% CI high",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "threshold": "Threshold p(finding)",
    "threshold_logit": "Threshold (log-odds)",
    "ece": "ECE",
    "images": "Images",
    "patients": "Patients",
    "prevalence": "Prevalence",
    "called_positive": "Called positive",
    "distinct_scores": "Distinct scores",
    "nonfinite": "Non-finite scores",
    "loss": "Loss",
    "accuracy": "Accuracy",
}
POOLED_AUROC = "pooled AUROC"  # the headline: over every clinic's validation patients, with its 95 % CI
CLINIC_MEAN_AUROC = "clinic mean AUROC"  # the clinics' AUROCs averaged, weighted by validation images
MACRO_AUROC = "macro AUROC"  # tasks with > 2 labels: mean of the classes' pooled one-vs-rest AUROCs


def format_auroc(auroc: float | None, low: float | None = None, high: float | None = None) -> str:
    """'0.912 [0.851–0.960]': the point and its interval at the same precision, so a shown
    point never seems to lie outside its shown interval (rounding is monotone); '-' for none."""
    if auroc is None or not math.isfinite(auroc):
        return "-"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{auroc:.3f}"
    return f"{auroc:.3f} [{low:.3f}–{high:.3f}]"


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


@dataclass
class ClinicValidation:
    """A clinic's figures for one model: loss and accuracy (argmax), the quality report,
    the counts (`summary`) that make the pooled figures at the server and, for a task
    with more than two labels, the per-class figures (`per_class`, else None)."""

    loss: float
    accuracy: float
    quality: QualityReport
    summary: dict[str, list[float]] = field(default_factory=dict)
    per_class: PerClass | None = None

    @property
    def auroc(self) -> float:
        return self.quality.auroc

    @property
    def examples(self) -> int:
        return self.quality.images + self.quality.nonfinite

    def to_metrics(self, count_key: str) -> dict[str, float | list[float]]:
        """Flower metrics: every figure as `val_<name>`, the counts as lists."""
        out: dict[str, float | list[float]] = {
            f"{PREFIX}loss": self.loss,
            f"{PREFIX}accuracy": self.accuracy,
            count_key: self.examples,
        }
        for name in QUALITY_FIELDS:
            out[f"{PREFIX}{name}"] = getattr(self.quality, name)
        out.update({f"{PREFIX}{k}": v for k, v in self.summary.items()})
        if self.per_class is not None:
            out.update(self.per_class.to_metrics(PREFIX))
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, float], lists: dict[str, list[float]]) -> ClinicValidation | None:
        """Read a reply's figures back (None when the reply carries no evaluation)."""
        if f"{PREFIX}auroc" not in metrics and f"{PREFIX}loss" not in metrics:
            return None
        values = {}
        for f in fields(QualityReport):
            raw = _float(metrics.get(f"{PREFIX}{f.name}", math.nan))
            values[f.name] = (int(raw) if math.isfinite(raw) else 0) if f.type in ("int", int) else raw
        summary = {k: lists[f"{PREFIX}{k}"] for k in SUMMARY_KEYS + REPLICATE_KEYS if f"{PREFIX}{k}" in lists}
        return cls(
            _float(metrics.get(f"{PREFIX}loss")),
            _float(metrics.get(f"{PREFIX}accuracy")),
            QualityReport(**values),
            summary,
            PerClass.from_metrics(metrics, lists, PREFIX),
        )

    def stored_quality(self) -> dict[str, float | None]:
        """The quality figures as the store keeps them with the clinic's row."""
        return self.quality.as_dict()

    def stored_per_class(self, labels: tuple[str, ...] | list[str] = ()) -> dict | None:
        """The per-class figures as the store keeps them with the clinic's row (None: binary task)."""
        return self.per_class.stored(labels) if self.per_class is not None else None


def from_logits(
    logits: np.ndarray, labels: np.ndarray, patients: np.ndarray | None = None, *, seed: int = 0
) -> ClinicValidation:
    """Every figure a clinic sends about a model, from its N x C logits on the validation
    split: cross-entropy loss from the logits themselves (exact however confident the
    model is), argmax accuracy, the quality report and the pooled counts with their
    patient-resampled replicates, all from the same float32 log-odds; with more than two
    classes, each class's one-vs-rest figures too (radfed.per_class)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    loss, accuracy = loss_and_accuracy(logits, labels)
    report = quality_report(logits, labels, patients, seed=seed)
    scores = finding_scores(logits)
    summary = {**score_summary(scores, labels), **bootstrap_summary(scores, labels, patients, salt=seed)}
    return ClinicValidation(loss, accuracy, report, summary, per_class_figures(logits, labels, patients, seed=seed))


__all__ = [
    "ClinicValidation",
    "from_logits",
    "format_auroc",
    "finding_labels",
    "LABELS",
    "POOLED_AUROC",
    "CLINIC_MEAN_AUROC",
    "MACRO_AUROC",
    "QUALITY_FIELDS",
    "PREFIX",
]
