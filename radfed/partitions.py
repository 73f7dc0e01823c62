"""Splitting pooled patients into N virtual clinics for `coordinator simulate`.

A simulation is only worth its numbers if its clinics look like a federation's: each
clinic holds whole patients (a patient's images never land in two clinics, as they never
leave one hospital), and the spread of labels and sites across clinics is chosen on
purpose. Three ways are offered:

- ``iid``: patients shuffled and dealt into N clinics of (nearly) equal size;
- ``dirichlet:ALPHA``: label skew. Each clinic draws its class mix from a
  Dirichlet(ALPHA, ..., ALPHA) over the classes and fills its (equal) share of patients
  from those classes while they last; small ALPHA (0.1) gives clinics of mostly one class,
  large ALPHA (100) approaches iid;
- ``by-site``: the pooled data's own sites (each `--data DIR`) are kept apart; N must be a
  multiple of the number of sites and each site is dealt evenly into N / sites clinics.

Every clinic gets at least `MIN_PATIENTS` patients, so that the patient-level
train/validation split (radfed.data.split) leaves both sides non-empty. Deterministic
per seed; no torch, no file access (server/virtual_clinics.py reads and writes the files).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_PATIENTS = 2  # one for training and one for validation at the least
KINDS = ("iid", "dirichlet:ALPHA", "by-site")


class PartitionError(ValueError):
    """A partition that cannot be made (bad name, too few patients); one line for the user."""


@dataclass(frozen=True)
class Patient:
    """One patient of the pooled data: a one-way key, their label and where their images are.

    `label` is the most common label of their images (what label skew sorts by); `site`
    the index of the `--data` folder most of their images come from; `files` (site index,
    path relative to that site) every image, all of which go to one clinic.
    """

    key: str
    label: int
    site: int
    files: tuple[tuple[int, str], ...] = field(default=())


@dataclass(frozen=True)
class Partitioning:
    """A parsed `--partition`: its kind and, for dirichlet, its ALPHA."""

    kind: str
    alpha: float = 0.0

    def __str__(self) -> str:
        return f"dirichlet:{self.alpha:g}" if self.kind == "dirichlet" else self.kind


def parse_partition(text: str) -> Partitioning:
    """'iid', 'by-site' or 'dirichlet:ALPHA' (ALPHA > 0)."""
    text = text.strip().lower()
    if text in ("iid", "by-site"):
        return Partitioning(text)
    if text.startswith("dirichlet:"):
        try:
            alpha = float(text.split(":", 1)[1])
        except ValueError:
            alpha = float("nan")
        if not alpha > 0 or not np.isfinite(alpha):
            raise PartitionError(f"dirichlet needs a positive ALPHA, e.g. dirichlet:0.5; got {text!r}")
        return Partitioning("dirichlet", alpha)
    raise PartitionError(f"unknown partition {text!r}; use one of {', '.join(KINDS)}")


def partition(
    patients: Sequence[Patient], n_clinics: int, how: Partitioning | str, seed: int = 0, n_sites: int | None = None
) -> list[list[int]]:
    """Indices into `patients` for each of `n_clinics` clinics; every patient in exactly one."""
    how = parse_partition(how) if isinstance(how, str) else how
    if n_clinics < 1:
        raise PartitionError("--clinics must be at least 1")
    if len(patients) < n_clinics * MIN_PATIENTS:
        raise PartitionError(
            f"{len(patients)} patients cannot make {n_clinics} clinics of at least "
            f"{MIN_PATIENTS} patients; use more patients or fewer clinics"
        )
    rng = np.random.default_rng([seed, 20_18])
    if how.kind == "iid":
        clinics = _deal(list(rng.permutation(len(patients))), n_clinics)
    elif how.kind == "dirichlet":
        clinics = _dirichlet(patients, n_clinics, how.alpha, rng)
    else:
        clinics = _by_site(patients, n_clinics, n_sites, rng)
    _check(clinics, len(patients))
    return clinics


def _deal(order: list[int], n: int) -> list[list[int]]:
    """`order` cut into n consecutive runs whose sizes differ by at most one."""
    return [[int(i) for i in chunk] for chunk in np.array_split(np.asarray(order, dtype=np.int64), n)]


def _dirichlet(patients: Sequence[Patient], n: int, alpha: float, rng: np.random.Generator) -> list[list[int]]:
    """Equal-sized clinics, each filled from its own Dirichlet(alpha) class mix.

    A clinic takes each next patient from a class drawn from its mix among the classes
    that still have patients (renormalised), so no clinic is left short; the clinics are
    filled in a random order so that no clinic always gets the leftovers.
    """
    classes = sorted({p.label for p in patients})
    pools = {c: [int(i) for i in rng.permutation([i for i, p in enumerate(patients) if p.label == c])] for c in classes}
    sizes = [len(chunk) for chunk in np.array_split(np.arange(len(patients)), n)]
    clinics: list[list[int]] = [[] for _ in range(n)]
    for k in rng.permutation(n):
        mix = rng.dirichlet([alpha] * len(classes))
        for _ in range(sizes[k]):
            left = np.array([len(pools[c]) for c in classes], dtype=float)
            weights = mix * (left > 0)
            weights = weights / weights.sum() if weights.sum() > 0 else left / left.sum()
            c = classes[int(rng.choice(len(classes), p=weights))]
            clinics[k].append(pools[c].pop())
    return clinics


def _by_site(patients: Sequence[Patient], n: int, n_sites: int | None, rng: np.random.Generator) -> list[list[int]]:
    """Each site dealt evenly into n / sites clinics (clinic j holds only site j // per_site)."""
    sites = n_sites if n_sites is not None else 1 + max(p.site for p in patients)
    if n % sites:
        raise PartitionError(f"by-site keeps the {sites} sites apart: --clinics must be a multiple of {sites}")
    per_site = n // sites
    clinics: list[list[int]] = []
    for site in range(sites):
        members = [i for i, p in enumerate(patients) if p.site == site]
        if len(members) < per_site * MIN_PATIENTS:
            raise PartitionError(
                f"site {site + 1} has {len(members)} patients, too few for {per_site} clinics "
                f"of at least {MIN_PATIENTS}; use fewer clinics or more patients"
            )
        clinics += _deal([members[int(i)] for i in rng.permutation(len(members))], per_site)
    return clinics


def _check(clinics: list[list[int]], n_patients: int) -> None:
    """Every patient exactly once, every clinic big enough (a bug here would leak patients)."""
    seen = Counter(i for clinic in clinics for i in clinic)
    if sorted(seen) != list(range(n_patients)) or any(v != 1 for v in seen.values()):
        raise RuntimeError("partition lost or repeated a patient")
    if any(len(clinic) < MIN_PATIENTS for clinic in clinics):
        raise RuntimeError("partition left a clinic with too few patients")


def label_counts(patients: Sequence[Patient], clinics: list[list[int]], n_labels: int) -> list[list[int]]:
    """Patients per label in each clinic (what the partition summary prints)."""
    return [[sum(1 for i in clinic if patients[i].label == c) for c in range(n_labels)] for clinic in clinics]
