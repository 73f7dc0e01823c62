"""The quality maths (radfed.evaluation) against cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from radfed import evaluation as ev, pooled as pl


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
    # ECE by hand: bins of width 0.1; each bin |findings - sum of p(finding)| / 8
    by_hand = (0.1 + 0.2 + abs(1 - 0.65) + 0.6 + 0.4 + 0.2 + 0.1) / 8
    assert ev.expected_calibration_error(np.log(scores / (1 - scores)), positive) == pytest.approx(by_hand)


def test_quality_report_on_logits_and_single_class_sets():
    probs = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]))
    report = ev.quality_report(probs, np.array([0, 1, 0, 1]), np.array([0, 1, 2, 3]), seed=0)
    assert report.auroc == 1.0 and report.sensitivity == 1.0 and report.specificity == 1.0
    assert report.images == 4 and report.patients == 4
    single = ev.quality_report(probs, np.zeros(4, int))
    assert math.isnan(single.auroc) and single.as_dict()["auroc"] is None


def test_pooled_figures_from_clinic_summaries_match_the_pooled_data():
    clinics = []
    for shift in (1.5, 2.0, 1.0):
        scores, positive = _scores(60, 90, shift, seed=int(shift * 10))
        clinics.append((np.c_[np.zeros_like(scores), scores], positive.astype(int)))
    pooled = pl.pooled_quality([pl.score_summary(ev.finding_scores(z), y) for z, y in clinics])
    logits = np.concatenate([z for z, _ in clinics])
    labels = np.concatenate([y for _, y in clinics])
    exact = ev.quality_report(logits, labels, n_boot=10)
    assert pooled["auroc"] == exact.auroc == pytest.approx(roc_auc_score(labels, logits[:, 1]), abs=1e-12)
    assert pooled["ece"] == pytest.approx(exact.ece, abs=1e-12)
    assert pooled["images"] == len(labels)
    assert pooled["threshold_logit"] == exact.threshold_logit  # one rule, the same numbers
    assert (pooled["sensitivity"], pooled["specificity"]) == (exact.sensitivity, exact.specificity)
    # a clinic's operating point at the pooled threshold, from its counts alone
    first = pl.score_summary(ev.finding_scores(clinics[0][0]), clinics[0][1])
    want = ev.sensitivity_specificity(ev.finding_scores(clinics[0][0]), clinics[0][1] == 1, pooled["threshold_logit"])
    assert pl.operating_point(first, pooled["threshold_logit"]) == want


def _clinics_with_patients(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """3 clinics of different sizes and separations; 3 correlated images per patient."""
    rng = np.random.default_rng(seed)
    out = []
    for n_patients, shift in ((30, 1.5), (50, 1.0), (20, 2.5)):
        positive = rng.uniform(size=n_patients) < 0.4
        patient_score = rng.normal(shift * positive, 1.0)
        scores = np.repeat(patient_score, 3) + rng.normal(0, 0.3, 3 * n_patients)
        out.append((scores, np.repeat(positive, 3).astype(int), np.repeat(np.arange(n_patients), 3)))
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
    summaries = [{**pl.score_summary(p, y), **pl.bootstrap_summary(p, y, g)} for p, y, g in clinics]
    pooled = pl.pooled_quality(summaries)
    probs = np.concatenate([p for p, _, _ in clinics])
    central = ev.quality_report(
        probs,
        np.concatenate([y for _, y, _ in clinics]),
        np.concatenate([g for _, _, g in clinics]),
        strata=np.concatenate([np.full(len(y), i) for i, (_, y, _) in enumerate(clinics)]),
        n_boot=4000,
        seed=1,
    )
    assert pooled["auroc"] == pytest.approx(central.auroc, abs=0.003)
    assert pooled["auroc_low"] == pytest.approx(central.auroc_low, abs=0.015)
    assert pooled["auroc_high"] == pytest.approx(central.auroc_high, abs=0.015)
    assert pooled["auroc_low"] < pooled["auroc"] < pooled["auroc_high"]
    # resampling images instead of patients would be too narrow: the pooled CI is not that
    by_image = ev.quality_report(probs, np.concatenate([y for _, y, _ in clinics]), n_boot=2000, seed=1)
    assert (by_image.auroc_high - by_image.auroc_low) < 0.8 * (pooled["auroc_high"] - pooled["auroc_low"])


def test_pooled_interval_needs_every_clinics_replicates_and_their_seed_stays_private():
    clinics = _clinics_with_patients(seed=2)
    full = [{**pl.score_summary(p, y), **pl.bootstrap_summary(p, y, g)} for p, y, g in clinics]
    partial = full[:2] + [pl.score_summary(*clinics[2][:2])]
    assert pl.pooled_quality(partial)["auroc_low"] is None  # its patients' variance would be missing
    assert pl.pooled_quality(partial)["auroc"] == pytest.approx(pl.pooled_quality(full)["auroc"])
    # a clinic with no validation images has no variance to add: the CI stands without it
    none, no_labels = np.zeros(0), np.zeros(0, int)
    empty = {**pl.score_summary(none, no_labels), **pl.bootstrap_summary(none, no_labels)}
    assert pl.pooled_quality(full + [empty])["auroc_low"] == pl.pooled_quality(full)["auroc_low"]
    # the same scores give the same replicates; a server that knows the run seed but not the
    # scores cannot draw them (the seed is a digest of the clinic's own scores)
    p, y, g = clinics[0]
    assert pl.bootstrap_summary(p, y, g) == pl.bootstrap_summary(p, y, g)
    assert pl.private_seed(p) != pl.private_seed(p + 1e-6)
    groups = len(full[0]["boot_bins"])
    assert groups <= pl.REPLICATE_GROUPS and len(full[0]["boot_pos"]) == pl.REPLICATES * groups


# ----------------------------------------------------------------------------- every figure agrees


def _agrees(figures: dict, scores: np.ndarray, labels: np.ndarray) -> None:
    """Point, CI, threshold, sensitivity and specificity tell one story about `scores`."""
    positive = labels != 0
    if positive.all() or not positive.any():
        assert figures["auroc"] is None and figures["threshold_logit"] is None
        return
    assert figures["auroc"] == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    if figures.get("auroc_low") is not None:
        assert figures["auroc_low"] <= figures["auroc"] <= figures["auroc_high"]
    cut = figures["threshold_logit"]
    assert cut in set(scores)  # an operating point the model actually produced
    assert (figures["sensitivity"], figures["specificity"]) == ev.sensitivity_specificity(scores, positive, cut)
    assert figures["threshold"] == pytest.approx(1 / (1 + np.exp(-np.float64(cut))))
    assert figures["called_positive"] == pytest.approx(np.mean(scores > 0))


def _federation(kind: str, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """3 clinics of (N x 2 logits, labels, patients) in one failure mode."""
    rng = np.random.default_rng(seed)
    out = []
    for c, n in enumerate((24, 40, 16)):
        labels = (rng.uniform(size=n) < 0.4).astype(int)
        labels[:2] = [0, 1]
        z = rng.normal(1.5 * labels, 1.0)
        if kind == "saturated":  # ranking intact inside a clinic, every score beyond 50, shifted per clinic
            z = 60.0 + 40.0 * c + 30.0 * z
        elif kind == "ties":
            z = np.round(z)
        elif kind == "constant":
            z = np.full(n, 7.25)
        elif kind == "one-class":
            labels[:] = 1 if c == 1 else labels
        elif kind == "tiny":
            z, labels = z[:3], labels[:3]
        logits = np.c_[np.zeros_like(z), z].astype(np.float32)
        out.append((logits, labels, np.arange(len(labels)) // 2))
    return out


@pytest.mark.parametrize("kind", ["saturated", "ties", "constant", "one-class", "tiny"])
def test_every_figure_agrees_for_any_score_range(kind):
    """A clinic's own figures and the pooled ones (from counts alone) against scikit-learn
    on the raw scores: saturated logits (|logit| > 50), ties, constant scores, one-class
    validation sets and three-image clinics."""
    clinics = _federation(kind)
    summaries = []
    for logits, labels, patients in clinics:
        report = ev.quality_report(logits, labels, patients, n_boot=200).as_dict()
        scores = ev.finding_scores(logits)
        _agrees(report, scores, labels)
        alone = pl.pooled_quality(
            [{**pl.score_summary(scores, labels), **pl.bootstrap_summary(scores, labels, patients)}]
        )
        for key in ("auroc", "threshold_logit", "sensitivity", "specificity", "called_positive", "distinct_scores"):
            assert alone[key] == report[key], key  # a federation of one clinic is that clinic
        summaries.append({**pl.score_summary(scores, labels), **pl.bootstrap_summary(scores, labels, patients)})
    pooled = pl.pooled_quality(summaries)
    scores = np.concatenate([ev.finding_scores(z) for z, _, _ in clinics])
    labels = np.concatenate([y for _, y, _ in clinics])
    _agrees(pooled, scores, labels)
    if kind == "constant":
        assert pooled["auroc"] == 0.5 and (pooled["auroc_low"], pooled["auroc_high"]) == (0.5, 0.5)
        assert pooled["distinct_scores"] == 1
    if kind == "saturated":
        assert np.all(1 / (1 + np.exp(-scores.astype(np.float32))) == 1.0)  # probabilities all tie
        # ranked well inside each clinic, shifted between them: worse pooled, as deployed
        assert pooled["auroc"] < min(ev.quality_report(z, y).auroc for z, y, _ in clinics)
        assert pooled["called_positive"] == 1.0


def test_intervals_hold_their_point_on_small_and_skewed_sets():
    """Percentile intervals of tiny sets can miss their point; radfed's never do."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(4, 12))
        labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        z = rng.normal(2.0 * labels, 1.0)
        auroc, low, high = ev.bootstrap_auroc(z, labels == 1, n_boot=200, seed=seed)
        assert low <= auroc <= high
        s = pl.score_summary(z, labels)
        pooled = pl.pooled_quality([{**s, **pl.bootstrap_summary(z, labels, n_boot=100)}])
        assert pooled["auroc_low"] <= pooled["auroc"] <= pooled["auroc_high"]


def test_score_keys_keep_float32_order_and_values():
    values = np.array([-np.inf, -1e30, -60.5, -1.0, -1e-30, -0.0, 0.0, 1e-30, 1.0, 60.5, 3e38, np.inf], np.float32)
    keys = pl.score_keys(values)
    assert np.all(np.diff(keys[[0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11]]) > 0) and keys[5] == keys[6] == 0
    np.testing.assert_array_equal(pl.key_scores(keys), values.astype(np.float64))
    assert np.all(np.abs(keys) < 2**31)  # exact in float64 and in Flower's int metrics


def test_clinic_reply_round_trips_through_flower_metrics():
    """One definition: what the ClientApp sends is what the server reads, by the same names."""
    from flwr.app import MetricRecord

    from radfed.reply import ClinicValidation, from_logits

    logits, labels, patients = _federation("saturated")[0]
    sent = from_logits(logits, labels, patients, seed=3)
    record = MetricRecord(sent.to_metrics("num-examples"))  # Flower accepts every value as is
    metrics = {k: float(v) for k, v in record.items() if not isinstance(v, list)}
    lists = {k: [float(x) for x in v] for k, v in record.items() if isinstance(v, list)}
    back = ClinicValidation.from_metrics(metrics, lists)
    assert back.stored_quality() == sent.stored_quality()
    assert back.summary == {k: [float(x) for x in v] for k, v in sent.summary.items()}
    assert back.loss == pytest.approx(sent.loss) and sent.loss > 10  # exact cross-entropy, not clamped
    assert pl.pooled_quality([back.summary])["auroc"] == sent.auroc
