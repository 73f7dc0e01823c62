"""Figures pooled over clinics from what each clinic may send: counts per score.

A clinic cannot send its images' scores with their patients, but it can send how many of
its validation images of each class got each score (`score_summary`); summed over clinics
those counts give the pooled AUROC, Youden threshold, sensitivity, specificity and ECE
(`pooled_quality`).

Scores are the float32 finding log-odds of radfed.evaluation.finding_scores, and a
histogram's "bins" are the float32 values themselves, as order-preserving integer keys
(`score_keys`), sent sparsely (only the values that occur). So the pooled figures are
*exact*: the pooled AUROC equals scikit-learn's on the pooled raw scores, ties included,
for any score range (a saturated model with |logit| > 50, constant scores, two clinics
whose scores never overlap). What the server learns per clinic is the multiset of
(score, class) pairs: no image, patient or order.

The pooled AUROC's 95 % CI is a bootstrap over patients stratified by clinic (each
clinic's patients resampled within it, as a centralised `bootstrap_auroc(..., strata=
clinic)` does): every clinic sends `REPLICATES` resampled score histograms on at most
`REPLICATE_GROUPS` groups of neighbouring scores (`bootstrap_summary`), and replicate b
of the federation is the sum of the clinics' replicates b. A clinic draws its resamples
from a seed the server cannot know (a digest of its own scores), so the server cannot
undo the mixing into per-patient histograms; the same model and data still give the same
interval, and the interval always holds the point (`evaluation.contain`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from radfed.evaluation import (
    CI_LEVEL,
    calibration_bins,
    contain,
    ece_from_bins,
    finding_labels,
    finding_probability,
    percentile_interval,
    resample_counts,
    run_starts,
    youden_from_counts,
)

REPLICATES = 500
REPLICATE_GROUPS = 100
SUMMARY_KEYS = ("hist_keys", "hist_neg", "hist_pos", "cal_count", "cal_findings", "cal_score_sum")
REPLICATE_KEYS = ("boot_bins", "boot_neg", "boot_pos")
_SIGN = 0x7FFFFFFF


def score_keys(scores: np.ndarray) -> np.ndarray:
    """Order-preserving int64 keys of float32 scores: a < b exactly when key(a) < key(b).

    The float32 bit pattern read as an integer orders non-negative floats; negative
    floats are mirrored (-magnitude bits). -0.0 and 0.0 share key 0. Keys fit in 32
    bits, so they survive Flower's metric lists and a float64 round trip unchanged.
    """
    bits = np.asarray(scores, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & _SIGN), bits)


def key_scores(keys: np.ndarray) -> np.ndarray:
    """The float32 scores (as float64) of keys made by `score_keys`."""
    keys = np.asarray(keys, dtype=np.int64)
    bits = np.where(keys < 0, (-keys) | 0x80000000, keys).astype(np.uint32)
    return bits.view(np.float32).astype(np.float64)


def score_summary(scores: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """What a clinic sends for pooled figures: per-class counts for each score that occurs
    (`hist_keys` sorted, `hist_neg`, `hist_pos`) and calibration bins. NaN scores (a
    broken model) are left out, as in the clinic's own figures."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = finding_labels(labels)
    finite = ~np.isnan(scores)
    scores, positive = scores[finite], positive[finite]
    keys, which = np.unique(score_keys(scores), return_inverse=True)
    which = which.reshape(-1)
    cal = calibration_bins(scores, positive)
    return {
        "hist_keys": keys.tolist(),
        "hist_neg": np.bincount(which[~positive], minlength=keys.size).tolist(),
        "hist_pos": np.bincount(which[positive], minlength=keys.size).tolist(),
        "cal_count": cal["count"],
        "cal_findings": cal["findings"],
        "cal_score_sum": cal["score_sum"],
    }


def private_seed(scores: np.ndarray, salt: int = 0) -> int:
    """A seed only the holder of `scores` can compute: a digest of them (and a salt)."""
    digest = hashlib.sha256(np.asarray(scores, dtype=np.float64).tobytes() + str(salt).encode())
    return int.from_bytes(digest.digest()[:8], "little")


def bin_groups(bins: np.ndarray, n_groups: int = REPLICATE_GROUPS) -> tuple[np.ndarray, np.ndarray]:
    """(each image's group, each group's key): at most `n_groups` ranges of neighbouring
    score keys holding about equal numbers of images; a key is never split. A group sits
    at the key of its middle image."""
    order = np.argsort(bins, kind="stable")
    ranked = bins[order]
    first = np.searchsorted(ranked, ranked, side="left")  # rank of the first image with that key
    group_sorted = np.unique(first * n_groups // ranked.size, return_inverse=True)[1].reshape(-1)
    groups = np.empty_like(group_sorted)
    groups[order] = group_sorted
    starts = run_starts(group_sorted)
    ends = np.r_[starts[1:], ranked.size]
    return groups, ranked[(starts + ends - 1) // 2].astype(np.int64)


def bootstrap_summary(
    scores: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray | None = None,
    *,
    n_boot: int = REPLICATES,
    salt: int = 0,
    seed: int | None = None,
) -> dict[str, list[int]]:
    """What a clinic sends for the pooled CI: `n_boot` patient-resampled score histograms
    per class, as flattened B x G counts on G groups of neighbouring scores (`bin_groups`)
    placed at keys `boot_bins`.

    The resamples are drawn from `private_seed` of the clinic's scores, so the server
    does not know which patients each replicate repeated. `seed` (another private seed)
    replaces it: several questions asked of the same images (radfed.per_class, one per
    class) then resample the same patients in replicate b, so the server may combine
    their replicates b into one (the macro mean's interval).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = finding_labels(labels)
    finite = ~np.isnan(scores)
    if not finite.all():
        scores, positive = scores[finite], positive[finite]
        patients = None if patients is None else np.asarray(patients)[finite]
    if scores.size == 0:
        return {}
    patient = (
        np.arange(scores.size)
        if patients is None
        else np.unique(np.asarray(patients), return_inverse=True)[1].reshape(-1)
    )
    rng = np.random.default_rng(private_seed(scores, salt) if seed is None else seed)
    groups, bins = bin_groups(score_keys(scores))
    cell = groups * 2 + positive  # (group, class) of each image
    order = np.argsort(cell, kind="stable")
    starts = run_starts(cell[order])
    filled = cell[order][starts]  # the (group, class) cells that hold images
    counts = np.zeros((n_boot, bins.size * 2), dtype=np.int64)
    for start in range(0, n_boot, 100):  # B x N image weights in chunks: bounded memory
        weights = resample_counts(patient, None, min(100, n_boot - start), rng)[:, patient[order]]
        counts[start : start + len(weights), filled] = np.add.reduceat(weights, starts, axis=1)
    counts = counts.reshape(n_boot, bins.size, 2)
    return {
        "boot_bins": bins.tolist(),
        "boot_neg": counts[:, :, 0].reshape(-1).tolist(),
        "boot_pos": counts[:, :, 1].reshape(-1).tolist(),
    }


def histogram_auroc(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """AUROC from per-class counts on shared, ordered scores (last axis), equal scores as ties."""
    below = np.cumsum(neg, axis=-1) - neg
    den = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def on_union(keyed: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(union of keys, summed negatives, summed positives) of several (keys, neg, pos)
    count sets; counts may carry leading axes (replicates)."""
    union = np.unique(np.concatenate([k for k, _, _ in keyed]))
    shape = np.asarray(keyed[0][1]).shape[:-1] + (union.size,)
    neg, pos = np.zeros(shape), np.zeros(shape)
    for keys, n, p in keyed:
        at = np.searchsorted(union, keys)
        index = (slice(None),) * (neg.ndim - 1) + (at,)
        np.add.at(neg, index, n)
        np.add.at(pos, index, p)
    return union, neg, pos


def _replicate_arrays(summary: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(keys, B x G negatives, B x G positives) of one clinic's replicates, None if unusable."""
    bins = np.asarray(summary.get("boot_bins", []), dtype=np.int64)
    neg = np.asarray(summary.get("boot_neg", []), dtype=np.float64)
    pos = np.asarray(summary.get("boot_pos", []), dtype=np.float64)
    if bins.size == 0 or neg.size != pos.size or neg.size % bins.size:
        return None
    return bins, neg.reshape(-1, bins.size), pos.reshape(-1, bins.size)


def pooled_interval(
    replicates: list[dict[str, list[float]]], point: float, level: float = CI_LEVEL
) -> tuple[float, float]:
    """The pooled AUROC's CI from every clinic's `bootstrap_summary` (NaN if one is missing).

    Replicate b is the sum of the clinics' replicates b: a bootstrap over patients
    stratified by clinic. Grouping neighbouring scores turns close pairs into ties and
    pulls each replicate towards 0.5, so the interval is shifted by the gap between the
    exact point AUROC and the AUROC of the mean replicate, kept within [0, 1] and made
    to hold the point.
    """
    found = replicate_aurocs(replicates)
    if found is None or not math.isfinite(point):
        return math.nan, math.nan
    aurocs, coarse = found
    low, high = percentile_interval(aurocs, level)
    shift = point - coarse if math.isfinite(coarse) else 0.0
    return contain(point, max(0.0, low + shift), min(1.0, high + shift))


def replicate_aurocs(replicates: list[dict[str, list[float]]]) -> tuple[np.ndarray, float] | None:
    """(the B pooled replicate AUROCs, the AUROC of the mean replicate) from every clinic's
    `bootstrap_summary`; None when one is missing or their replicate counts differ.
    `pooled_interval` reads its interval off them; radfed.per_class averages several
    questions' replicates b into the macro mean's replicate b."""
    arrays = [_replicate_arrays(r) for r in replicates]
    if not arrays or any(a is None for a in arrays) or len({a[1].shape[0] for a in arrays}) != 1:
        return None
    _, neg, pos = on_union(arrays)  # type: ignore[arg-type]
    return histogram_auroc(neg, pos), float(histogram_auroc(neg.mean(axis=0), pos.mean(axis=0)))


def _counts(summary: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(summary["hist_keys"], dtype=np.int64),
        np.asarray(summary["hist_neg"], dtype=np.float64),
        np.asarray(summary["hist_pos"], dtype=np.float64),
    )


def usable(summary: dict[str, list[float]]) -> bool:
    """A summary with calibration bins and consistent per-score counts."""
    if not all(k in summary for k in SUMMARY_KEYS) or not len(summary["cal_count"]):
        return False
    return len(summary["hist_keys"]) == len(summary["hist_neg"]) == len(summary["hist_pos"])


def pooled_quality(summaries: list[dict[str, list[float]]]) -> dict[str, float | None]:
    """Pooled AUROC [95 % CI], Youden threshold, sensitivity, specificity, ECE and the
    health figures (prevalence, share called positive, distinct scores) from clinics'
    summaries (`score_summary`, plus `bootstrap_summary` for the CI).

    Exact: every count sits at its float32 score. The CI is given only when every clinic
    with images sent its replicates. `threshold` is p(finding) at the operating point,
    `threshold_logit` the same point as log-odds.
    """
    kept = [s for s in summaries if usable(s)]
    if not kept:
        return {}
    cal = {
        k: np.sum([np.asarray(s[k], dtype=np.float64) for s in kept], axis=0)
        for k in ("cal_count", "cal_findings", "cal_score_sum")
    }
    keys, neg, pos = on_union([_counts(s) for s in kept])
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    n = n_neg + n_pos
    values = key_scores(keys)
    out: dict[str, float | None] = {"images": n, "clinics": float(len(kept))}
    out["ece"] = (
        ece_from_bins({"count": cal["cal_count"], "findings": cal["cal_findings"], "score_sum": cal["cal_score_sum"]})
        if n
        else None
    )
    out.update(
        prevalence=n_pos / n if n else None,
        distinct_scores=float(keys.size),
        called_positive=float((neg + pos)[values > 0].sum() / n) if n else None,
    )
    if n_neg == 0 or n_pos == 0:
        out.update(
            auroc=None,
            auroc_low=None,
            auroc_high=None,
            sensitivity=None,
            specificity=None,
            threshold=None,
            threshold_logit=None,
        )
        return out
    out["auroc"] = float(histogram_auroc(neg, pos))
    low, high = pooled_interval([s for s in kept if np.sum(s["cal_count"]) > 0], out["auroc"])
    out.update(auroc_low=low if math.isfinite(low) else None, auroc_high=high if math.isfinite(high) else None)
    best = youden_from_counts(neg, pos)
    out.update(
        sensitivity=float(pos[best:].sum() / n_pos),
        specificity=float(neg[:best].sum() / n_neg),
        threshold_logit=float(values[best]),
        threshold=float(finding_probability(values[best])),
    )
    return out


def operating_point(summary: dict[str, list[float]], threshold_logit: float) -> tuple[float, float]:
    """(sensitivity, specificity) of one clinic's counts at a threshold chosen elsewhere
    (log-odds; a finding is called at score >= it). Exact: the counts sit at their scores."""
    keys, neg, pos = _counts(summary)
    called = key_scores(keys) >= threshold_logit
    sens = float(pos[called].sum() / pos.sum()) if pos.sum() else math.nan
    spec = float(neg[~called].sum() / neg.sum()) if neg.sum() else math.nan
    return sens, spec
