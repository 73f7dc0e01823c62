"""The quality maths (radfed.evaluation) against cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from radfed import evaluation as ev


def _scores(n_pos: int, n_neg: int, shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)])
    return scores, np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]


def test_weighted_auroc_matches_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(1)
    scores = np.round(rng.uniform(size=300), 1)  # many ties
    positive = rng.uniform(size=300) < 0.4
    weights = rng.integers(0, 4, size=(3, 300))
    got = ev.weighted_auroc(scores, positive, weights)
    want = [roc_auc_score(positive, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_separable_classes_give_auroc_one_with_a_degenerate_interval():
    scores, positive = np.r_[np.linspace(0.6, 1, 20), np.linspace(0, 0.4, 20)], np.r_[[True] * 20, [False] * 20]
    assert ev.bootstrap_auroc(scores, positive, seed=0) == (1.0, 1.0, 1.0)


def test_interval_matches_the_hanley_mcneil_normal_interval():
    """Known answer: for a large binormal sample the bootstrap 95 % interval agrees with
    the analytic one, AUROC +- 1.96 SE (Hanley & McNeil 1982), and covers the true AUROC."""
    n = 400
    scores, positive = _scores(n, n, shift=1.0)
    auroc, low, high = ev.bootstrap_auroc(scores, positive, n_boot=2000, seed=7)
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    se = math.sqrt((auroc * (1 - auroc) + (n - 1) * (q1 - auroc**2) + (n - 1) * (q2 - auroc**2)) / n**2)
    assert low == pytest.approx(auroc - 1.96 * se, abs=0.01)
    assert high == pytest.approx(auroc + 1.96 * se, abs=0.01)
    true_auroc = norm.cdf(1.0 / math.sqrt(2))  # P(X_pos > X_neg) for unit-variance normals
    assert low < true_auroc < high


def test_patient_bootstrap_differs_from_image_bootstrap_when_patients_have_several_images():
    """4 identical images per patient: resampling patients must give exactly the interval of
    the 40 distinct images, while resampling images pretends to 4x the evidence."""
    scores, positive = _scores(20, 20, shift=1.0, seed=3)
    patients = np.repeat(np.arange(40), 4)
    by_patient = ev.bootstrap_auroc(np.repeat(scores, 4), np.repeat(positive, 4), patients, seed=5)
    distinct = ev.bootstrap_auroc(scores, positive, seed=5)
    by_image = ev.bootstrap_auroc(np.repeat(scores, 4), np.repeat(positive, 4), seed=5)
    assert by_patient == pytest.approx(distinct, abs=1e-12)
    width = lambda ci: ci[2] - ci[1]  # noqa: E731
    assert width(by_image) < 0.7 * width(by_patient)


def test_youden_threshold_sensitivity_specificity_and_ece():
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.6, 0.8, 0.9, 0.3])
    positive = np.array([0, 0, 0, 1, 1, 1, 1, 1], bool)
    assert ev.youden_threshold(scores, positive) == 0.4
    assert ev.sensitivity_specificity(scores, positive, 0.4) == (0.8, 1.0)
    # ECE by hand: bins of width 0.1; each bin |findings - sum of scores| / 8
    by_hand = (0.1 + 0.2 + abs(1 - 0.65) + 0.6 + 0.4 + 0.2 + 0.1) / 8
    assert ev.expected_calibration_error(scores, positive) == pytest.approx(by_hand)


def test_quality_report_on_probabilities_and_single_class_sets():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    report = ev.quality_report(probs, np.array([0, 1, 0, 1]), np.array([0, 1, 2, 3]), seed=0)
    assert report.auroc == 1.0 and report.sensitivity == 1.0 and report.specificity == 1.0
    assert report.images == 4 and report.patients == 4
    single = ev.quality_report(probs, np.zeros(4, int))
    assert math.isnan(single.auroc) and single.as_dict()["auroc"] is None


def test_pooled_figures_from_clinic_summaries_match_the_pooled_data():
    clinics = []
    for shift in (1.5, 2.0, 1.0):
        scores, positive = _scores(60, 90, shift, seed=int(shift * 10))
        p = 1 / (1 + np.exp(-scores))
        clinics.append((np.c_[1 - p, p], positive.astype(int)))
    pooled = ev.pooled_quality([ev.score_summary(p, y) for p, y in clinics])
    probs = np.concatenate([p for p, _ in clinics])
    labels = np.concatenate([y for _, y in clinics])
    exact = ev.quality_report(probs, labels, n_boot=10)
    assert pooled["auroc"] == pytest.approx(exact.auroc, abs=0.003)
    assert pooled["ece"] == pytest.approx(exact.ece, abs=1e-12)
    assert pooled["images"] == len(labels)
    sens, spec = ev.sensitivity_specificity(probs[:, 1], labels == 1, pooled["threshold"])
    assert (pooled["sensitivity"], pooled["specificity"]) == pytest.approx((sens, spec))
    assert pooled["sensitivity"] + pooled["specificity"] >= exact.sensitivity + exact.specificity - 0.03
    # a clinic's operating point at the pooled threshold, from its histograms alone
    first = ev.score_summary(*clinics[0])
    want = ev.sensitivity_specificity(clinics[0][0][:, 1], clinics[0][1] == 1, pooled["threshold"])
    assert ev.operating_point(first, pooled["threshold"]) == pytest.approx(want)
