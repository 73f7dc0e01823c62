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
AUROC, Youden threshold, sensitivity, specificity and ECE (`pooled_quality`).

The pooled AUROC's 95 % CI is a bootstrap over patients stratified by clinic (each
clinic's patients resampled within it, as a centralised `bootstrap_auroc(..., strata=
clinic)` does): every clinic sends `REPLICATES` resampled score histograms on coarser
groups of neighbouring bins (`bootstrap_summary`), and replicate b of the federation is
the sum of the clinics' replicates b. A clinic draws its resamples from a seed the server cannot
know (a digest of its own scores), so the server cannot undo the mixing into
per-patient histograms; the same model and data still give the same interval.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np

N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
ECE_BINS = 10
# Score-histogram edges for pooled figures: fine in logit space, so that a confident
# model (scores near 0 or 1) still spreads over many bins, and an unsure one (all scores
# near 0.5, as in early rounds) too: 8000 bins of 0.0025 in logit (0.0006 in probability
# near 0.5), outer bins open-ended. Counts are sent as integers (mostly zeros: small).
HIST_EDGES = np.concatenate(([0.0], 1.0 / (1.0 + np.exp(-np.linspace(-10.0, 10.0, 7999))), [1.0]))
# The pooled CI: 500 patient resamples per clinic, each as counts per class on at most
# 100 groups of neighbouring fine bins (equal numbers of the clinic's images per group).
REPLICATES = 500
REPLICATE_GROUPS = 100


def finding_scores(probs: np.ndarray) -> np.ndarray:
    """Score of "a finding": 1 - p(first label), for N x C class probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    return 1.0 - probs[:, 0]


def finding_labels(labels: np.ndarray) -> np.ndarray:
    """True where an image carries any label but the first."""
    return np.asarray(labels) != 0


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


def resample_counts(groups: np.ndarray, strata: np.ndarray | None, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
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


def bootstrap_auroc(
    scores: np.ndarray, positive: np.ndarray, groups: np.ndarray | None = None, *,
    strata: np.ndarray | None = None, n_boot: int = N_BOOTSTRAP, seed: int = 0,
    level: float = CI_LEVEL, chunk: int = 250,
) -> tuple[float, float, float]:
    """(AUROC, CI low, CI high): percentile bootstrap resampling whole groups (patients).

    `groups` gives each image's patient; None resamples single images. Each resample
    draws as many patients as there are, with replacement, and keeps all their images,
    so an image's weight is how often its patient was drawn. With `strata` (each image's
    clinic) patients are drawn within their clinic, so every clinic keeps its size, as
    in the federated pooled interval. Seeded: the same inputs give the same interval.
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
    return (point, *percentile_interval(np.concatenate(values), level))


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
    threshold: float | None = None, strata: np.ndarray | None = None, seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
) -> QualityReport:
    """AUROC [95 % CI over patients], sensitivity/specificity and ECE for one evaluation set.

    The threshold is Youden's on this set unless one chosen elsewhere is given (e.g.
    the federation's pooled validation threshold applied to a held-out clinic). `strata`
    (each image's clinic) resamples patients within their clinic, as the federated
    pooled interval does.
    """
    scores = finding_scores(probs) if np.ndim(probs) == 2 else np.asarray(probs, dtype=np.float64)
    positive = finding_labels(labels)
    auroc, low, high = bootstrap_auroc(scores, positive, patients, strata=strata, n_boot=n_boot, seed=seed)
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
    bins = score_bins(scores)
    neg = np.bincount(bins[~positive], minlength=len(HIST_EDGES) - 1)
    pos = np.bincount(bins[positive], minlength=len(HIST_EDGES) - 1)
    cal = calibration_bins(scores, positive)
    return {"hist_neg": neg.tolist(), "hist_pos": pos.tolist(),
            "cal_count": cal["count"], "cal_findings": cal["findings"], "cal_score_sum": cal["score_sum"]}


SUMMARY_KEYS = ("hist_neg", "hist_pos", "cal_count", "cal_findings", "cal_score_sum")
REPLICATE_KEYS = ("boot_bins", "boot_neg", "boot_pos")


def private_seed(scores: np.ndarray, salt: int = 0) -> int:
    """A seed only the holder of `scores` can compute: a digest of them (and a salt)."""
    digest = hashlib.sha256(np.asarray(scores, dtype=np.float64).tobytes() + str(salt).encode())
    return int.from_bytes(digest.digest()[:8], "little")


def score_bins(scores: np.ndarray) -> np.ndarray:
    """Each score's bin on `HIST_EDGES` (0 .. len - 2)."""
    return np.clip(np.searchsorted(HIST_EDGES, scores, side="right") - 1, 0, len(HIST_EDGES) - 2)


def bin_groups(bins: np.ndarray, n_groups: int = REPLICATE_GROUPS) -> tuple[np.ndarray, np.ndarray]:
    """(each image's group, each group's fine bin): at most `n_groups` ranges of neighbouring
    bins holding about equal numbers of images; a bin is never split. A group sits at
    the bin of its middle image."""
    order = np.argsort(bins, kind="stable")
    ranked = bins[order]
    first = np.searchsorted(ranked, ranked, side="left")  # rank of the first image in its bin
    group_sorted = np.unique(first * n_groups // ranked.size, return_inverse=True)[1].reshape(-1)
    groups = np.empty_like(group_sorted)
    groups[order] = group_sorted
    starts = run_starts(group_sorted)
    ends = np.r_[starts[1:], ranked.size]
    return groups, ranked[(starts + ends - 1) // 2].astype(np.int64)


def bootstrap_summary(probs: np.ndarray, labels: np.ndarray, patients: np.ndarray | None = None, *,
                      n_boot: int = REPLICATES, salt: int = 0) -> dict[str, list[int]]:
    """What a clinic sends for the pooled CI: `n_boot` patient-resampled score histograms
    per class, as flattened B x G counts on G groups of neighbouring bins (`bin_groups`)
    placed at fine bins `boot_bins`.

    The resamples are drawn from `private_seed` of the clinic's scores, so the server
    does not know which patients each replicate repeated.
    """
    scores = finding_scores(probs)
    positive = finding_labels(labels)
    if scores.size == 0:
        return {}
    patient = np.arange(scores.size) if patients is None else \
        np.unique(np.asarray(patients), return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(private_seed(scores, salt))
    groups, bins = bin_groups(score_bins(scores))
    cell = groups * 2 + positive  # (group, class) of each image
    order = np.argsort(cell, kind="stable")
    starts = run_starts(cell[order])
    filled = cell[order][starts]  # the (group, class) cells that hold images
    counts = np.zeros((n_boot, bins.size * 2), dtype=np.int64)
    for start in range(0, n_boot, 100):  # B x N image weights in chunks: bounded memory
        weights = resample_counts(patient, None, min(100, n_boot - start), rng)[:, patient[order]]
        counts[start:start + len(weights), filled] = np.add.reduceat(weights, starts, axis=1)
    counts = counts.reshape(n_boot, bins.size, 2)
    return {"boot_bins": bins.tolist(), "boot_neg": counts[:, :, 0].reshape(-1).tolist(),
            "boot_pos": counts[:, :, 1].reshape(-1).tolist()}


def histogram_auroc(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """AUROC from per-class counts on shared, ordered bins (last axis), pairs in one bin as ties."""
    below = np.cumsum(neg, axis=-1) - neg
    den = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def _replicate_arrays(summary: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(bins, B x G negatives, B x G positives) of one clinic's replicates, None if unusable."""
    bins = np.asarray(summary.get("boot_bins", []), dtype=np.int64)
    neg = np.asarray(summary.get("boot_neg", []), dtype=np.float64)
    pos = np.asarray(summary.get("boot_pos", []), dtype=np.float64)
    if bins.size == 0 or neg.size != pos.size or neg.size % bins.size:
        return None
    return bins, neg.reshape(-1, bins.size), pos.reshape(-1, bins.size)


def pooled_interval(replicates: list[dict[str, list[float]]], point: float,
                    level: float = CI_LEVEL) -> tuple[float, float]:
    """The pooled AUROC's CI from every clinic's `bootstrap_summary` (NaN if one is missing).

    Replicate b is the sum of the clinics' replicates b, on the union of their bins: a
    bootstrap over patients stratified by clinic. Grouping neighbouring scores turns
    close pairs into ties and pulls each replicate towards 0.5, so the interval is
    shifted by the gap between the point AUROC (fine bins) and the AUROC of the mean
    replicate, then kept within [0, 1].
    """
    arrays = [_replicate_arrays(r) for r in replicates]
    if not arrays or any(a is None for a in arrays) or len({a[1].shape[0] for a in arrays}) != 1 \
            or not math.isfinite(point):
        return math.nan, math.nan
    union = np.unique(np.concatenate([a[0] for a in arrays]))
    neg = np.zeros((arrays[0][1].shape[0], union.size))
    pos = np.zeros_like(neg)
    for bins, clinic_neg, clinic_pos in arrays:
        at = np.searchsorted(union, bins)
        np.add.at(neg, (slice(None), at), clinic_neg)
        np.add.at(pos, (slice(None), at), clinic_pos)
    low, high = percentile_interval(histogram_auroc(neg, pos), level)
    coarse = float(histogram_auroc(neg.mean(axis=0), pos.mean(axis=0)))
    shift = point - coarse if math.isfinite(coarse) else 0.0
    return max(0.0, low + shift), min(1.0, high + shift)


def pooled_quality(summaries: list[dict[str, list[float]]]) -> dict[str, float | None]:
    """Pooled AUROC [95 % CI], Youden threshold, sensitivity, specificity and ECE from clinics'
    summaries (`score_summary`, plus `bootstrap_summary` for the CI).

    AUROC from the summed histograms counts pairs within one bin as ties (bins are
    narrow: the error is at most half the share of such pairs). The threshold is the
    lower edge of a bin. The CI is given only when every clinic sent its replicates.
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
    out["auroc"] = float(histogram_auroc(neg, pos))
    low, high = pooled_interval([s for s in usable if np.sum(s["cal_count"]) > 0], out["auroc"])
    out.update(auroc_low=low if math.isfinite(low) else None, auroc_high=high if math.isfinite(high) else None)
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
