"""A labelled unit's output from its slices' outputs, so a study counts once in every figure.

A CT study is labelled once but reaches the model as many slices (radfed.data.slices).
Scored per slice, a 200-slice study would weigh 200 times as much as a radiograph in
the AUROC, and its slices, being one patient's one finding, would pass for independent
evidence. So a clinic's validation figures (radfed.reply.from_logits) are computed per
labelled unit: study, series, manifest folder, or the image itself when it is labelled
on its own (plain 2-D data, where this changes nothing).

The rule: a unit's class log-probabilities are the mean of its slices' (log-softmax of
the logits), so with two labels its finding log-odds are exactly the mean of its slices'
finding log-odds. The mean, not the max, because

- every slice is trained with its unit's label, so each slice's log-odds is an estimate
  of the unit's, and the mean is the pooled estimate;
- the max of n noisy scores grows with n: a 300-slice study would outrank a 40-slice
  one for its protocol, not its finding, and the AUROC would measure slice counts;
- the mean of log-odds keeps the score's scale, so thresholds and calibration (ECE)
  read the same as for single images.

The max suits a model trained as multiple-instance learning for focal findings, which
radfed's slice-level training is not. With more than two labels the unit's
log-probabilities are still the slice mean (a normalised geometric mean of the slice
probabilities); its finding log-odds follow from those.
"""

from __future__ import annotations

import numpy as np


def unit_outputs(
    logits: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray | None,
    units: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(U x C unit log-probabilities, U labels, U patient indices or None) from N x C slice
    logits; units in order of first appearance. Without ``units`` (or with each sample its
    own unit) the input comes back unchanged, so figures stay exactly per image.

    Raises ValueError when a unit's slices carry different labels or patients: a unit is
    one labelled thing of one patient (radfed.data rejects anything else).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if units is None:
        return logits, labels, patients
    units = np.asarray(units).astype(np.int64)
    if units.shape != labels.shape or logits.shape[:1] != labels.shape:
        raise ValueError(
            f"units ({units.shape}), labels ({labels.shape}) and logits ({logits.shape}) must have one entry per sample"
        )
    _, first, inverse = np.unique(units, return_index=True, return_inverse=True)
    if len(first) == len(units):  # every sample its own unit: per-image figures as they are
        return logits, labels, patients
    order = np.argsort(first, kind="stable")  # unit ids in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = rank[inverse.reshape(-1)]
    counts = np.bincount(group, minlength=len(order)).astype(np.float64)
    from scipy.special import log_softmax

    with np.errstate(invalid="ignore", over="ignore"):
        log_probs = log_softmax(logits, axis=1) if logits.size else logits
    summed = np.zeros((len(order), logits.shape[1]), dtype=np.float64)
    np.add.at(summed, group, log_probs)
    unit_labels = labels[first[order]]
    if np.any(labels != unit_labels[group]):
        raise ValueError("a unit's slices carry different labels")
    unit_patients = None
    if patients is not None:
        patients = np.asarray(patients)
        unit_patients = patients[first[order]]
        if np.any(patients != unit_patients[group]):
            raise ValueError("a unit's slices belong to different patients")
    return summed / counts[:, None], unit_labels, unit_patients


def split_validation(logits: np.ndarray, split, seed: int):
    """A split's validation figures (radfed.reply.ClinicValidation) per labelled unit: the one
    definition the ClientApp, a delivered model's card and `client-node predict` share."""
    from radfed.reply import from_logits

    patients = split.patients.numpy() if split.patients is not None else None
    units = split.units.numpy() if split.units is not None else None
    unit_logits, labels, patients = unit_outputs(np.asarray(logits), split.labels.numpy(), patients, units)
    return from_logits(unit_logits, labels, patients, seed=seed)
