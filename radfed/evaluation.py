"""Learning-quality figures a radiologist can read, as pure numpy/scikit-learn maths.

Every figure is about one binary question, "a finding" (any label but the first, e.g.
"opacity") against the first label ("normal"). Its score is the model's *log-odds* of a
finding, log p(finding) - log p(first label), computed from the logits in float64 and
rounded once to float32 (`finding_scores`). Every figure of one evaluation (AUROC, its
CI, threshold, sensitivity, specificity, ECE, and the pooled figures at the server) is
computed from those same numbers, so they agree for any score range: a saturated model
(|logit| > 50, where float32 probabilities are all exactly 0 or 1 and would tie) ranks
its images as its logits do.

- AUROC with a 95 % confidence interval from a bootstrap over *patients*: a patient's
  images are correlated, so resampling images would pretend there is more evidence than
  there is and give intervals that are too narrow (tests/test_evaluation.py shows it).
  The interval always holds its point estimate (see `contain`).
- Sensitivity and specificity at a threshold chosen on validation data (Youden's J),
  one rule for a clinic's own figures and the pooled ones (`youden_from_counts`).
- Calibration: expected calibration error over equal-width probability bins.

Pooled figures over clinics are in radfed.pooled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
ECE_BINS = 10


def finding_scores(logits: np.ndarray) -> np.ndarray:
    """Log-odds of "a finding" for N x C logits (or N log-odds), rounded to float32.

    Two classes: z1 - z0; more: logsumexp(z1..zC-1) - z0, i.e. log(1 - p0) - log(p0),
    computed without ever forming a probability, so it stays exact however confident the
    model is. Rounded once to float32 (7 significant digits): the pooled histograms key
    scores by their float32 value (radfed.pooled), and the clinic's own figures use the
    very same numbers. Non-finite outputs stay NaN/inf (`quality_report` counts them).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        score = z
    elif z.shape[1] == 2:
        score = z[:, 1] - z[:, 0]
    else:
        from scipy.special import logsumexp

        with np.errstate(invalid="ignore"):
            score = logsumexp(z[:, 1:], axis=1) - z[:, 0] if len(z) else np.zeros(0)
    with np.errstate(over="ignore"):
        return np.asarray(score, dtype=np.float32).astype(np.float64)


def finding_probability(scores: np.ndarray) -> np.ndarray:
    """p(finding) from log-odds (float64: 1.0 only beyond log-odds ~37)."""
    from scipy.special import expit

    return expit(np.asarray(scores, dtype=np.float64))


def finding_labels(labels: np.ndarray) -> np.ndarray:
    """True where an image carries any label but the first."""
    return np.asarray(labels) != 0


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy computed from the logits, argmax accuracy); NaN for no images.

    From the logits, not clamped probabilities: a confidently wrong model's loss is its
    true size (e.g. 60 nats), not a clamp's 16.
    """
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if len(y) == 0:
        return math.nan, math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        loss = float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y]))
    return loss, float(np.mean(np.argmax(z, axis=1) == y))


# ----------------------------------------------------------------------------- AUROC


def run_starts(ranked: np.ndarray) -> np.ndarray:
    """Indices where a new value begins in a sorted array (its runs of equal values)."""
    return np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])


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
    starts = run_starts(ranked)
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def finding_auroc(logits: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of a finding against the first label from N x C logits (NaN with one class)."""
    scores = finding_scores(logits)
    finite = ~np.isnan(scores)
    return float(weighted_auroc(scores[finite], finding_labels(labels)[finite], np.ones((1, int(finite.sum()))))[0])


def resample_counts(groups: np.ndarray, strata: np.ndarray | None, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """B x G draw counts per group: G groups drawn with replacement (within each stratum)."""
    n_groups = int(groups.max()) + 1
    counts = np.zeros((n_boot, n_groups), dtype=np.int64)
    stratum_of = np.zeros(n_groups, dtype=np.int64)
    if strata is not None:
        stratum_of[groups] = np.unique(np.asarray(strata), return_inverse=True)[1]
    for s in np.unique(stratum_of):
        members = np.flatnonzero(stratum_of == s)
        counts[:, members] = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size), size=n_boot)
    return counts


def percentile_interval(replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """(low, high) percentile interval of the finite replicates (NaN when none are)."""
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def contain(point: float, low: float, high: float) -> tuple[float, float]:
    """The interval widened, if need be, to hold its point estimate.

    A percentile bootstrap interval can miss its own point estimate when few patients
    make the resampled AUROC skewed (e.g. a replicate distribution piled at 1.0 with the
    point just below). A reader takes "0.91 [0.93-1.00]" for an error, so the interval
    is stretched to the point: never narrower than the percentile one.
    """
    if not math.isfinite(point) or not (math.isfinite(low) and math.isfinite(high)):
        return low, high
    return min(low, point), max(high, point)


def bootstrap_auroc(
    scores: np.ndarray,
    positive: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    strata: np.ndarray | None = None,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = CI_LEVEL,
    chunk: int = 250,
) -> tuple[float, float, float]:
    """(AUROC, CI low, CI high): percentile bootstrap resampling whole groups (patients).

    `groups` gives each image's patient; None resamples single images. Each resample
    draws as many patients as there are, with replacement, and keeps all their images,
    so an image's weight is how often its patient was drawn. With `strata` (each image's
    clinic) patients are drawn within their clinic, so every clinic keeps its size, as
    in the federated pooled interval. Seeded: the same inputs give the same interval,
    and it always holds the point (`contain`).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n = scores.size
    point = float(weighted_auroc(scores, positive, np.ones((1, n)))[0]) if n else math.nan
    if math.isnan(point):
        return point, math.nan, math.nan
    if groups is None:
        groups = np.arange(n)
    keys = np.asarray(groups) if strata is None else np.stack([np.asarray(strata), np.asarray(groups)], axis=1)
    groups = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):
        counts = resample_counts(groups, strata, min(chunk, n_boot - start), rng)
        values.append(weighted_auroc(scores, positive, counts[:, groups]))
    return (point, *contain(point, *percentile_interval(np.concatenate(values), level)))


# ----------------------------------------------------------------------------- operating point


def youden_from_counts(neg: np.ndarray, pos: np.ndarray) -> int:
    """Index of the best threshold among sorted distinct scores, given counts per score.

    A finding is called at score >= the threshold; Youden's J = sensitivity +
    specificity - 1 is maximised over every distinct score; ties go to the highest
    threshold (the fewest false alarms). -1 when a class is missing. The one rule for a
    clinic's own threshold and the pooled one, so one clinic alone gives both the same.
    """
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    if neg.sum() == 0 or pos.sum() == 0:
        return -1
    sens = np.cumsum(pos[::-1])[::-1] / pos.sum()
    spec = 1.0 - np.cumsum(neg[::-1])[::-1] / neg.sum()
    j = sens + spec - 1.0
    return int(np.flatnonzero(j >= j.max() - 1e-12)[-1])


def score_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct scores, negatives per score, positives per score)."""
    values, which = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    positive = np.asarray(positive, dtype=bool)
    which = which.reshape(-1)
    return (
        values,
        np.bincount(which[~positive], minlength=values.size),
        np.bincount(which[positive], minlength=values.size),
    )


def youden_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The score threshold (call a finding when score >= it) maximising sens + spec - 1."""
    values, neg, pos = score_counts(scores, positive)
    best = youden_from_counts(neg, pos)
    return float(values[best]) if best >= 0 else math.nan


def sensitivity_specificity(scores: np.ndarray, positive: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) when a finding is called at score >= threshold."""
    positive = np.asarray(positive, dtype=bool)
    called = np.asarray(scores, dtype=np.float64) >= threshold
    sens = float(called[positive].mean()) if positive.any() else math.nan
    spec = float((~called[~positive]).mean()) if (~positive).any() else math.nan
    return sens, spec


# ----------------------------------------------------------------------------- calibration


def calibration_bins(scores: np.ndarray, positive: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width probability bin: images, findings and the sum of p(finding)
    (summable over clinics). `scores` are log-odds."""
    prob = finding_probability(scores)
    which = np.clip((prob * n_bins).astype(int), 0, n_bins - 1)
    return {
        "count": np.bincount(which, minlength=n_bins).astype(float).tolist(),
        "findings": np.bincount(which, weights=np.asarray(positive, dtype=float), minlength=n_bins).tolist(),
        "score_sum": np.bincount(which, weights=prob, minlength=n_bins).tolist(),
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
    """ECE of p(finding) with `n_bins` equal-width bins; `scores` are log-odds."""
    return ece_from_bins(calibration_bins(scores, positive, n_bins))


# ----------------------------------------------------------------------------- one report


@dataclass
class QualityReport:
    """What one clinic (or the pooled centralised evaluation) reports: numbers only.

    `threshold` is p(finding) at the operating point and `threshold_logit` the same
    point as log-odds (the exact one: a saturated model's probabilities print as 1.000).
    `called_positive`: share of images with p(finding) > 0.5; `distinct_scores`: how
    many different scores the model gave (1 = constant predictions); `nonfinite`: images
    whose score was NaN, left out of every figure.
    """

    auroc: float
    auroc_low: float
    auroc_high: float
    sensitivity: float
    specificity: float
    threshold: float
    ece: float
    images: int
    patients: int
    threshold_logit: float = math.nan
    prevalence: float = math.nan
    called_positive: float = math.nan
    distinct_scores: int = 0
    nonfinite: int = 0

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready: NaN becomes None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def quality_report(
    logits: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray | None = None,
    *,
    threshold_logit: float | None = None,
    strata: np.ndarray | None = None,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
) -> QualityReport:
    """AUROC [95 % CI over patients], sensitivity/specificity and ECE for one evaluation set.

    `logits` are the model's N x C outputs (or N finding log-odds). The threshold is
    Youden's on this set unless one chosen elsewhere is given as log-odds (e.g. the
    federation's pooled validation threshold applied to a held-out clinic). `strata`
    (each image's clinic) resamples patients within their clinic, as the federated
    pooled interval does.
    """
    scores = finding_scores(logits)
    positive = finding_labels(labels)
    finite = ~np.isnan(scores)
    nonfinite = int((~finite).sum())
    if nonfinite:
        scores, positive = scores[finite], positive[finite]
        patients = None if patients is None else np.asarray(patients)[finite]
        strata = None if strata is None else np.asarray(strata)[finite]
    auroc, low, high = bootstrap_auroc(scores, positive, patients, strata=strata, n_boot=n_boot, seed=seed)
    cut = youden_threshold(scores, positive) if threshold_logit is None else float(threshold_logit)
    sens, spec = sensitivity_specificity(scores, positive, cut) if not math.isnan(cut) else (math.nan, math.nan)
    n_patients = len(np.unique(patients)) if patients is not None else len(scores)
    n = len(scores)
    return QualityReport(
        auroc,
        low,
        high,
        sens,
        spec,
        float(finding_probability(cut)) if not math.isnan(cut) else math.nan,
        expected_calibration_error(scores, positive) if n else math.nan,
        int(n),
        int(n_patients),
        threshold_logit=cut,
        prevalence=float(positive.mean()) if n else math.nan,
        called_positive=float((scores > 0).mean()) if n else math.nan,
        distinct_scores=int(np.unique(scores).size),
        nonfinite=nonfinite,
    )
