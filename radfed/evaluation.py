"""Learning-quality figures a radiologist can read, as pure numpy/scikit-learn maths.

Every figure is about one binary question, "a finding" (any label but the first, e.g.
"opacity") against the first label ("normal"), scored by 1 - p(first label); with two
labels that is the usual positive-class probability.

- AUROC with a 95 % confidence interval from a bootstrap over *patients*: a patient's
  images are correlated, so resampling images would pretend there is more evidence than
  there is and give intervals that are too narrow (tests/test_evaluation.py shows it).
- Sensitivity and specificity at a threshold chosen on validation data (Youden's J).
- Calibration: expected calibration error over equal-width probability bins.

Pooled federated figures: a clinic cannot send its scores, but it can send counts per
score bin and per class (`score_summary`); summed over clinics they give the pooled
AUROC, Youden threshold, sensitivity, specificity and ECE (`pooled_quality`). A pooled
*confidence interval* needs patient grouping across clinics and is not computed
from these sums.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
ECE_BINS = 10
# Score-histogram edges for pooled figures: fine in logit space, so that a confident
# model (scores near 0 or 1) still spreads over many bins.
# 1000 bins of 0.02 in logit (0.005 in probability near 0.5), outer bins open-ended.
HIST_EDGES = np.concatenate(([0.0], 1.0 / (1.0 + np.exp(-np.linspace(-10.0, 10.0, 999))), [1.0]))


def finding_scores(probs: np.ndarray) -> np.ndarray:
    """Score of "a finding": 1 - p(first label), for N x C class probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    return 1.0 - probs[:, 0]


def finding_labels(labels: np.ndarray) -> np.ndarray:
    """True where an image carries any label but the first."""
    return np.asarray(labels) != 0


# ----------------------------------------------------------------------------- AUROC


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of `weights` (B x N image weights), ties counted one half.

    Mann-Whitney form: the weighted share of (positive, negative) pairs ranked the right
    way. Sorting once and summing weights per tied score makes B resamples O(B x N).
    NaN where a row has no positive or no negative weight.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if scores.size == 0:
        return np.full(weights.shape[0], np.nan)
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_auroc(
    scores: np.ndarray, positive: np.ndarray, groups: np.ndarray | None = None, *,
    n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = CI_LEVEL, chunk: int = 250,
) -> tuple[float, float, float]:
    """(AUROC, CI low, CI high): percentile bootstrap resampling whole groups (patients).

    `groups` gives each image's patient index (0..P-1); None resamples single images.
    Each resample draws P patients with replacement and keeps all their images, so an
    image's weight is how often its patient was drawn. Seeded: the same inputs and seed
    give the same interval on every machine.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n = scores.size
    point = float(weighted_auroc(scores, positive, np.ones((1, n)))[0]) if n else math.nan
    if math.isnan(point):
        return point, math.nan, math.nan
    groups = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    n_groups = int(groups.max()) + 1
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=min(chunk, n_boot - start))
        values.append(weighted_auroc(scores, positive, counts[:, groups]))
    replicates = np.concatenate(values)
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0:
        return point, math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return point, float(low), float(high)


# ----------------------------------------------------------------------------- operating point


def youden_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The score threshold (predict a finding when score >= it) maximising sens + spec - 1."""
    from sklearn.metrics import roc_curve

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return math.nan
    fpr, tpr, thresholds = roc_curve(positive, np.asarray(scores, dtype=np.float64))
    best = int(np.argmax(tpr[1:] - fpr[1:])) + 1  # thresholds[0] is +inf: nothing positive
    return float(thresholds[best])


def sensitivity_specificity(scores: np.ndarray, positive: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) when a finding is called at score >= threshold."""
    positive = np.asarray(positive, dtype=bool)
    called = np.asarray(scores, dtype=np.float64) >= threshold
    sens = float(called[positive].mean()) if positive.any() else math.nan
    spec = float((~called[~positive]).mean()) if (~positive).any() else math.nan
    return sens, spec


# ----------------------------------------------------------------------------- calibration


def calibration_bins(scores: np.ndarray, positive: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width score bin: images, findings and the sum of scores (summable over clinics)."""
    scores = np.asarray(scores, dtype=np.float64)
    which = np.clip((scores * n_bins).astype(int), 0, n_bins - 1)
    return {
        "count": np.bincount(which, minlength=n_bins).astype(float).tolist(),
        "findings": np.bincount(which, weights=np.asarray(positive, dtype=float), minlength=n_bins).tolist(),
        "score_sum": np.bincount(which, weights=scores, minlength=n_bins).tolist(),
    }


def ece_from_bins(bins: dict[str, list[float]]) -> float:
    """Expected calibration error: sum over bins of |findings - predicted| / images."""
    count = np.asarray(bins["count"], dtype=np.float64)
    total = count.sum()
    if total == 0:
        return math.nan
    gap = np.abs(np.asarray(bins["findings"]) - np.asarray(bins["score_sum"]))
    return float(gap.sum() / total)


def expected_calibration_error(scores: np.ndarray, positive: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of the finding score with `n_bins` equal-width bins."""
    return ece_from_bins(calibration_bins(scores, positive, n_bins))


# ----------------------------------------------------------------------------- one report


@dataclass
class QualityReport:
    """What one clinic (or the pooled centralised evaluation) reports: numbers only."""

    auroc: float
    auroc_low: float
    auroc_high: float
    sensitivity: float
    specificity: float
    threshold: float
    ece: float
    images: int
    patients: int

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready: NaN becomes None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def quality_report(
    probs: np.ndarray, labels: np.ndarray, patients: np.ndarray | None = None, *,
    threshold: float | None = None, seed: int = 0, n_boot: int = N_BOOTSTRAP,
) -> QualityReport:
    """AUROC [95 % CI over patients], sensitivity/specificity and ECE for one evaluation set.

    The threshold is Youden's on this set unless one chosen elsewhere is given (e.g.
    the federation's pooled validation threshold applied to a held-out clinic).
    """
    scores = finding_scores(probs) if np.ndim(probs) == 2 else np.asarray(probs, dtype=np.float64)
    positive = finding_labels(labels)
    auroc, low, high = bootstrap_auroc(scores, positive, patients, n_boot=n_boot, seed=seed)
    cut = youden_threshold(scores, positive) if threshold is None else float(threshold)
    sens, spec = sensitivity_specificity(scores, positive, cut) if math.isfinite(cut) else (math.nan, math.nan)
    n_patients = len(np.unique(patients)) if patients is not None else len(scores)
    return QualityReport(auroc, low, high, sens, spec, cut, expected_calibration_error(scores, positive),
                         int(len(scores)), int(n_patients))


# ----------------------------------------------------------------------------- pooled over clinics


def score_summary(probs: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """What a clinic sends for pooled figures: per-class score histograms and calibration bins.

    Counts per bin only: no image, patient or order can be recovered from them.
    """
    scores = finding_scores(probs)
    positive = finding_labels(labels)
    neg, _ = np.histogram(scores[~positive], bins=HIST_EDGES)
    pos, _ = np.histogram(scores[positive], bins=HIST_EDGES)
    cal = calibration_bins(scores, positive)
    return {"hist_neg": neg.astype(float).tolist(), "hist_pos": pos.astype(float).tolist(),
            "cal_count": cal["count"], "cal_findings": cal["findings"], "cal_score_sum": cal["score_sum"]}


SUMMARY_KEYS = ("hist_neg", "hist_pos", "cal_count", "cal_findings", "cal_score_sum")


def pooled_quality(summaries: list[dict[str, list[float]]]) -> dict[str, float | None]:
    """Pooled AUROC, Youden threshold, sensitivity, specificity and ECE from clinics' summaries.

    AUROC from the summed histograms counts pairs within one bin as ties (bins are
    narrow: the error is at most half the share of such pairs). The threshold is the
    lower edge of a bin. No confidence interval: see the module docstring.
    """
    usable = [s for s in summaries if all(k in s and len(s[k]) for k in SUMMARY_KEYS)]
    if not usable:
        return {}
    total = {k: np.sum([np.asarray(s[k], dtype=np.float64) for s in usable], axis=0) for k in SUMMARY_KEYS}
    neg, pos = total["hist_neg"], total["hist_pos"]
    n_neg, n_pos = neg.sum(), pos.sum()
    out: dict[str, float | None] = {"images": float(n_neg + n_pos), "clinics": float(len(usable))}
    out["ece"] = ece_from_bins({"count": total["cal_count"], "findings": total["cal_findings"],
                                "score_sum": total["cal_score_sum"]})
    if n_neg == 0 or n_pos == 0:
        out.update(auroc=None, sensitivity=None, specificity=None, threshold=None)
        return out
    below = np.cumsum(neg) - neg
    out["auroc"] = float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))
    # calling a finding at score >= edge k: positives and negatives in bins k..end
    sens = np.cumsum(pos[::-1])[::-1] / n_pos
    spec = 1.0 - np.cumsum(neg[::-1])[::-1] / n_neg
    best = int(np.argmax(sens + spec - 1.0))
    out.update(sensitivity=float(sens[best]), specificity=float(spec[best]),
               threshold=float(HIST_EDGES[best]))
    return out


def operating_point(summary: dict[str, list[float]], threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of one clinic's histograms at a threshold chosen elsewhere.

    Exact for a threshold that is a histogram edge (as `pooled_quality` chooses): a finding
    is called at score >= threshold, i.e. in that edge's bin and above.
    """
    neg = np.asarray(summary["hist_neg"], dtype=np.float64)
    pos = np.asarray(summary["hist_pos"], dtype=np.float64)
    k = min(int(np.searchsorted(HIST_EDGES, threshold - 1e-12)), len(pos))
    sens = float(pos[k:].sum() / pos.sum()) if pos.sum() else math.nan
    spec = float(neg[:k].sum() / neg.sum()) if neg.sum() else math.nan
    return sens, spec
