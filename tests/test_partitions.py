"""The virtual clinics' partitioners (radfed.partitions): whole patients, sizes, skew, sites."""

from __future__ import annotations

import numpy as np
import pytest

from radfed.partitions import (
    MIN_PATIENTS,
    PartitionError,
    Partitioning,
    Patient,
    label_counts,
    parse_partition,
    partition,
)


def _patients(n: int, prevalence: float = 0.5, sites: int = 1, seed: int = 0) -> list[Patient]:
    rng = np.random.default_rng(seed)
    return [
        Patient(
            key=f"p{i}",
            label=int(rng.random() < prevalence),
            site=i % sites,
            files=((i % sites, f"p{i}/a.dcm"), (i % sites, f"p{i}/b.dcm")),
        )
        for i in range(n)
    ]


def test_parse_partition():
    assert parse_partition("iid") == Partitioning("iid")
    assert parse_partition(" By-Site ") == Partitioning("by-site")
    assert parse_partition("dirichlet:0.5") == Partitioning("dirichlet", 0.5)
    assert str(parse_partition("dirichlet:0.50")) == "dirichlet:0.5"
    for bad in ("dirichlet", "dirichlet:0", "dirichlet:-1", "dirichlet:x", "random", "dirichlet:inf"):
        with pytest.raises(PartitionError):
            parse_partition(bad)


@pytest.mark.parametrize("how", ["iid", "dirichlet:0.1", "dirichlet:1", "dirichlet:100"])
@pytest.mark.parametrize("n_clinics", [1, 4, 50])
def test_every_patient_once_and_clinics_big_enough(how, n_clinics):
    patients = _patients(237)
    clinics = partition(patients, n_clinics, how, seed=3)
    assert len(clinics) == n_clinics
    flat = [i for clinic in clinics for i in clinic]
    assert sorted(flat) == list(range(len(patients)))  # each patient in exactly one clinic
    assert min(len(c) for c in clinics) >= MIN_PATIENTS
    assert max(len(c) for c in clinics) - min(len(c) for c in clinics) <= 1  # equal shares


def test_deterministic_per_seed():
    patients = _patients(100)
    assert partition(patients, 7, "dirichlet:0.3", seed=1) == partition(patients, 7, "dirichlet:0.3", seed=1)
    assert partition(patients, 7, "iid", seed=1) != partition(patients, 7, "iid", seed=2)


def _skew(patients, clinics) -> float:
    """Mean absolute difference between a clinic's prevalence and the pooled one."""
    counts = np.array(label_counts(patients, clinics, 2), dtype=float)
    prevalence = counts[:, 1] / counts.sum(axis=1)
    pooled = sum(p.label for p in patients) / len(patients)
    return float(np.mean(np.abs(prevalence - pooled)))


def test_dirichlet_alpha_controls_label_skew():
    patients = _patients(1000, prevalence=0.5)
    skewed = _skew(patients, partition(patients, 20, "dirichlet:0.1", seed=0))
    mild = _skew(patients, partition(patients, 20, "dirichlet:100", seed=0))
    iid = _skew(patients, partition(patients, 20, "iid", seed=0))
    assert skewed > 0.3  # most clinics nearly one class
    assert mild < 0.12 and iid < 0.12
    assert skewed > 3 * mild


def test_by_site_keeps_sites_apart():
    patients = _patients(120, sites=3)
    clinics = partition(patients, 6, "by-site", seed=0, n_sites=3)
    for j, clinic in enumerate(clinics):
        assert {patients[i].site for i in clinic} == {j // 2}  # clinics 0,1: site 0; 2,3: site 1...
    with pytest.raises(PartitionError, match="multiple of 3"):
        partition(patients, 4, "by-site", n_sites=3)


def test_too_few_patients_is_refused():
    with pytest.raises(PartitionError, match="too few|cannot make"):
        partition(_patients(9), 5, "iid")
    with pytest.raises(PartitionError, match="site 2"):  # one site too small for its share
        partition([*_patients(40, sites=1), Patient("x", 0, 1), Patient("y", 1, 1)], 4, "by-site", n_sites=2)
