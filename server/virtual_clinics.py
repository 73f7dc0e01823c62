"""Pooled data → N virtual clinic folders and the partition map `coordinator simulate` runs on.

The pooled data is consented or generated DICOM: one folder per site (each `--data DIR`,
or each generated clinic). Its labelled images are read the way a clinic reads them
(radfed.data: manifest or class folders, the spec's data options), grouped into patients
by their one-way patient key, and dealt into clinics by radfed.partitions. Each virtual
clinic becomes a folder of symbolic links to its patients' files (`site-K/<path in that
site>`) with a `labels.csv` naming each file's task label, so the unchanged ClientApp
loads it like any clinic export. The partition map (`partitions.json`) holds each
clinic's node config (data, cache and state folders, clinic name, threads) and counts per
clinic, never a patient key or a path below the data folders.

Labels are written per image: a study- or series-labelled CT/MR export becomes per-slice
labels, so slice policies that group a study do not apply in simulation.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client_node.simulation import MAP_VERSION
from radfed.data.headers import HeaderCache
from radfed.data.labels import LabelLookup
from radfed.data.sources import labelled_images
from radfed.data.workers import Workers
from radfed.partitions import Partitioning, Patient, label_counts, partition
from radfed.spec import ExperimentSpec, data_options

GENERATED = ("demo", "nodules", "effusion")
MAP_NAME = "partitions.json"


@dataclass
class VirtualFederation:
    """What `prepare` made: the partition map's path and one summary row per clinic."""

    map_path: Path
    clinics: list[dict]  # name, patients, images, patients per label (counts only)
    n_patients: int
    n_sites: int

    def describe(self, how: Partitioning) -> str:
        """'100 virtual clinics, dirichlet:0.5' (the run's `simulated` field)."""
        return f"{len(self.clinics)} virtual clinics, {how}"


def generate(kind: str, folder: Path, patients: int, seed: int, sites: int = 3) -> list[Path]:
    """Generated pooled data: `sites` sites (the generators' scanners) sharing `patients`.

    `demo` is radfed.demo_data (part of the package); `nodules` and `effusion` are the
    test suite's generators (tests/generators.py), available from a source checkout only.
    """
    per_site = max(1, -(-patients // sites))
    if kind == "demo":
        from radfed.demo_data import write_federation as writer
    elif kind in GENERATED:
        try:  # not part of an installed radfed: only a checkout has the test suite
            from tests.generators import GENERATORS
        except ImportError:
            raise ValueError(
                f"--generate {kind} needs a radfed source checkout (tests/generators.py); "
                "--generate demo works anywhere"
            ) from None
        writer = GENERATORS[kind]
    else:
        raise ValueError(f"--generate must be one of {', '.join(GENERATED)}, not {kind!r}")
    return writer(folder / f"{kind}-{patients}p-seed{seed}", sites, n_patients=per_site, seed=seed)


def read_patients(
    sites: list[Path], spec: ExperimentSpec, progress: Callable[[str], None] | None = None
) -> tuple[list[Patient], dict[tuple[int, str], str]]:
    """The labelled images of every site grouped by patient (a patient's files stay together,
    even across sites), and each image's task label name by (site, relative path).
    Unreadable or unlabelled files are left out, as a clinic would leave them out."""
    options = data_options(spec.data)
    lookup = LabelLookup(spec.labels, options.label_map)
    files: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for index, site in enumerate(sites):
        if progress:
            progress(f"reading site {index + 1}/{len(sites)}")
        pool = Workers(1)
        try:
            headers = HeaderCache(site, options.label_tag, None, pool)
            _, images, _, _ = labelled_images(site, lookup, None, None, options, headers, None)
        finally:
            pool.close()
        for im in images:
            files[im.patient].append((index, im.relpath, im.label))
    patients, labels = [], {}
    for key in sorted(files):
        entries = files[key]
        label = Counter(lab for *_, lab in entries).most_common(1)[0][0]
        site = Counter(s for s, *_ in entries).most_common(1)[0][0]
        patients.append(Patient(key, label, site, tuple((s, rel) for s, rel, _ in entries)))
        labels.update({(s, rel): spec.labels[lab] for s, rel, lab in entries})
    return patients, labels


def prepare(
    sites: list[Path],
    spec: ExperimentSpec,
    n_clinics: int,
    how: Partitioning,
    out: Path,
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> VirtualFederation:
    """Write `out/clinic-NNN` folders and `out/partitions.json` for `n_clinics` clinics."""
    sites = [Path(s).resolve() for s in sites]
    patients, labels = read_patients(sites, spec, progress)
    if progress:
        progress(f"partitioning {len(patients)} patients into {n_clinics} clinics ({how})")
    clinics = partition(patients, n_clinics, how, seed=seed, n_sites=len(sites))
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    counts = label_counts(patients, clinics, len(spec.labels))
    width = max(3, len(str(n_clinics)))
    entries, rows = [], []
    for k, members in enumerate(clinics):
        name = f"virtual-{k + 1:0{width}d}"
        folder = out / "clinics" / name
        images = _write_clinic(folder / "data", [patients[i] for i in members], sites, labels)
        node = {
            "data-path": str(folder / "data"),
            "cache-dir": str(folder / "cache"),
            "state-dir": str(folder / "state"),
            "models-dir": str(folder / "models"),
            "clinic-name": name,
            "threads": int(threads),
        }
        row = {
            "name": name,
            "patients": len(members),
            "images": images,
            "patients_per_label": dict(zip(spec.labels, counts[k])),
        }
        entries.append({**row, "node_config": node})
        rows.append(row)
    map_path = out / MAP_NAME
    map_path.write_text(
        json.dumps(
            {"version": MAP_VERSION, "partition": str(how), "seed": seed, "sites": len(sites), "clinics": entries},
            indent=1,
        ),
        encoding="utf-8",
    )
    return VirtualFederation(map_path, rows, len(patients), len(sites))


def _write_clinic(folder: Path, patients: list[Patient], sites: list[Path], labels: dict[tuple[int, str], str]) -> int:
    """Links to the patients' files and a labels.csv (file,label) written last; returns images."""
    if folder.exists():  # a fresh folder each time: links from an earlier partition must not stay
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_symlink() or path.is_file() else path.rmdir()
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for patient in patients:
        for site, rel in patient.files:
            link = folder / f"site-{site + 1}" / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(sites[site] / rel, link)
            rows.append((f"site-{site + 1}/{rel}", labels[(site, rel)]))
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        writer.writerows(sorted(rows))
    return len(rows)
