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


def _clinics_with_patients(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """3 clinics of different sizes and separations; 3 correlated images per patient."""
    rng = np.random.default_rng(seed)
    out = []
    for n_patients, shift in ((30, 1.5), (50, 1.0), (20, 2.5)):
        positive = rng.uniform(size=n_patients) < 0.4
        patient_score = rng.normal(shift * positive, 1.0)
        scores = np.repeat(patient_score, 3) + rng.normal(0, 0.3, 3 * n_patients)
        p = 1 / (1 + np.exp(-scores))
        out.append((np.c_[1 - p, p], np.repeat(positive, 3).astype(int), np.repeat(np.arange(n_patients), 3)))
    return out


def test_stratified_resampling_keeps_every_clinic_at_its_size():
    groups = np.r_[np.arange(5), np.arange(5, 12)]
    strata = np.r_[np.zeros(5, int), np.ones(7, int)]
    counts = ev.resample_counts(groups, strata, 200, np.random.default_rng(0))
    assert (counts[:, :5].sum(axis=1) == 5).all() and (counts[:, 5:].sum(axis=1) == 7).all()
    free = ev.resample_counts(groups, None, 200, np.random.default_rng(0))
    assert (free.sum(axis=1) == 12).all() and len(set(free[:, :5].sum(axis=1))) > 1


def test_federated_pooled_interval_matches_the_centralised_stratified_bootstrap():
    """Known answer: summing the clinics' patient-resampled histograms gives the interval a
    central bootstrap over the pooled scores, patients drawn within clinics, gives."""
    clinics = _clinics_with_patients()
    summaries = [{**ev.score_summary(p, y), **ev.bootstrap_summary(p, y, g)} for p, y, g in clinics]
    pooled = ev.pooled_quality(summaries)
    probs = np.concatenate([p for p, _, _ in clinics])
    central = ev.quality_report(probs, np.concatenate([y for _, y, _ in clinics]),
                                np.concatenate([g for _, _, g in clinics]),
                                strata=np.concatenate([np.full(len(y), i) for i, (_, y, _) in enumerate(clinics)]),
                                n_boot=4000, seed=1)
    assert pooled["auroc"] == pytest.approx(central.auroc, abs=0.003)
    assert pooled["auroc_low"] == pytest.approx(central.auroc_low, abs=0.015)
    assert pooled["auroc_high"] == pytest.approx(central.auroc_high, abs=0.015)
    assert pooled["auroc_low"] < pooled["auroc"] < pooled["auroc_high"]
    # resampling images instead of patients would be too narrow: the pooled CI is not that
    by_image = ev.quality_report(probs, np.concatenate([y for _, y, _ in clinics]), n_boot=2000, seed=1)
    assert (by_image.auroc_high - by_image.auroc_low) < 0.8 * (pooled["auroc_high"] - pooled["auroc_low"])


def test_pooled_interval_needs_every_clinics_replicates_and_their_seed_stays_private():
    clinics = _clinics_with_patients(seed=2)
    full = [{**ev.score_summary(p, y), **ev.bootstrap_summary(p, y, g)} for p, y, g in clinics]
    partial = full[:2] + [ev.score_summary(*clinics[2][:2])]
    assert ev.pooled_quality(partial)["auroc_low"] is None  # its patients' variance would be missing
    assert ev.pooled_quality(partial)["auroc"] == pytest.approx(ev.pooled_quality(full)["auroc"])
    # a clinic with no validation images has no variance to add: the CI stands without it
    none, no_labels = np.zeros((0, 2)), np.zeros(0, int)
    empty = {**ev.score_summary(none, no_labels), **ev.bootstrap_summary(none, no_labels)}
    assert ev.pooled_quality(full + [empty])["auroc_low"] == ev.pooled_quality(full)["auroc_low"]
    # the same scores give the same replicates; a server that knows the run seed but not the
    # scores cannot draw them (the seed is a digest of the clinic's own scores)
    p, y, g = clinics[0]
    assert ev.bootstrap_summary(p, y, g) == ev.bootstrap_summary(p, y, g)
    assert ev.private_seed(p[:, 1]) != ev.private_seed(p[:, 1] + 1e-9)
    groups = len(full[0]["boot_bins"])
    assert groups <= ev.REPLICATE_GROUPS and len(full[0]["boot_pos"]) == ev.REPLICATES * groups
