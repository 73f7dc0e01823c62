"""ROC curves, reliability diagrams and confusion matrices from the score histograms the
clinics send (radfed.pooled.score_summary), as the store keeps them with each evaluation.

A clinic never sends an image's score with its patient, but it sends how many validation
images of each class got each float32 score, and calibration bins. Those counts are
enough for an exact ROC curve (every distinct score is a threshold), the confusion
matrix at any threshold, and a reliability diagram; summed over clinics they give the
pooled ones, the same counts the pooled AUROC and its Youden threshold came from. Pure
numpy and pandas: no Streamlit here, so it is tested on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from radfed.pooled import histogram_auroc, key_scores, on_union

Histogram = tuple[np.ndarray, np.ndarray, np.ndarray]  # (score keys, negatives, positives)


def histogram(scores: dict[str, Any]) -> Histogram:
    """(keys, negatives, positives) of one stored summary."""
    return (
        np.asarray(scores["hist_keys"], dtype=np.int64),
        np.asarray(scores["hist_neg"], dtype=np.float64),
        np.asarray(scores["hist_pos"], dtype=np.float64),
    )


def pooled(summaries: list[dict[str, Any]]) -> Histogram:
    """The clinics' histograms summed on the union of their scores."""
    return on_union([histogram(s) for s in summaries])


def auroc(hist: Histogram) -> float:
    """AUROC of the counts (NaN without both classes): equals the recorded figure."""
    _, neg, pos = hist
    return float(histogram_auroc(neg, pos))


def roc_frame(hist: Histogram) -> pd.DataFrame:
    """(fpr, tpr, step) from the highest score down: each distinct score is a threshold
    ('finding' at score >= it); starts at (0, 0) and ends at (1, 1)."""
    _, neg, pos = hist
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return pd.DataFrame(columns=["fpr", "tpr", "step"])
    fpr = np.r_[0.0, np.cumsum(neg[::-1]) / n_neg]
    tpr = np.r_[0.0, np.cumsum(pos[::-1]) / n_pos]
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "step": np.arange(fpr.size)})


def confusion(hist: Histogram, threshold_logit: float) -> dict[str, int]:
    """Counts at a threshold on the finding log-odds (a finding is called at score >= it,
    as radfed.pooled.operating_point): true/false positives and negatives."""
    keys, neg, pos = hist
    called = key_scores(keys) >= threshold_logit
    return {
        "tp": int(pos[called].sum()),
        "fn": int(pos[~called].sum()),
        "fp": int(neg[called].sum()),
        "tn": int(neg[~called].sum()),
    }


def rates(counts: dict[str, int]) -> tuple[float, float]:
    """(sensitivity, specificity) of confusion counts (NaN where a class is absent)."""
    positives, negatives = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    return (
        counts["tp"] / positives if positives else float("nan"),
        counts["tn"] / negatives if negatives else float("nan"),
    )


def confusion_frame(counts: dict[str, int], labels: tuple[str, str]) -> pd.DataFrame:
    """The matrix as four rows for the heat map: truth, call, images, text, share of the row."""
    negative, finding = labels
    cells = [
        (finding, f"called {finding}", counts["tp"]),
        (finding, f"called {negative}", counts["fn"]),
        (negative, f"called {finding}", counts["fp"]),
        (negative, f"called {negative}", counts["tn"]),
    ]
    totals = {finding: counts["tp"] + counts["fn"], negative: counts["fp"] + counts["tn"]}
    rows = []
    for truth, call, images in cells:
        share = images / totals[truth] if totals[truth] else 0.0
        rows.append(
            {"truth": truth, "call": call, "images": images, "share": share, "text": f"{images} ({100 * share:.0f} %)"}
        )
    return pd.DataFrame(rows)


def reliability_frame(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """Per non-empty calibration bin (summed over the given clinics): images, mean
    predicted p(finding) and observed share of findings."""
    count = np.sum([np.asarray(s["cal_count"], dtype=np.float64) for s in summaries], axis=0)
    findings = np.sum([np.asarray(s["cal_findings"], dtype=np.float64) for s in summaries], axis=0)
    score_sum = np.sum([np.asarray(s["cal_score_sum"], dtype=np.float64) for s in summaries], axis=0)
    kept = count > 0
    return pd.DataFrame(
        {
            "bin": np.flatnonzero(kept),
            "images": count[kept].astype(int),
            "predicted": score_sum[kept] / count[kept],
            "observed": findings[kept] / count[kept],
        }
    )
