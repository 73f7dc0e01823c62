"""tests.generators: every registered federation loads through radfed's own loader, has
the stated label mix, its clinics really differ in the stated header facts, and it is
deterministic per seed."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pydicom
import pytest

from radfed.data import load_clinic
from tests.generators import GENERATORS, SITES

pytestmark = pytest.mark.e2e

N_PATIENTS = 10


@pytest.fixture(scope="module")
def federations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("gens")
    return {name: gen(root / name, 3, n_patients=N_PATIENTS, seed=0) for name, gen in GENERATORS.items()}


def _first_header(folder: Path) -> pydicom.Dataset:
    path = next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "labels.csv")
    return pydicom.dcmread(path, stop_before_pixels=True)


def _manifest_labels(folder: Path) -> list[str]:
    with (folder / "labels.csv").open(newline="") as fh:
        return [row["label"] for row in csv.DictReader(fh)]


def test_registry_has_demo_and_two_more() -> None:
    assert "demo" in GENERATORS and len(GENERATORS) >= 3
    assert all(gen.__doc__ and "linic" in gen.__doc__ for gen in GENERATORS.values())


@pytest.mark.parametrize("name", list(GENERATORS))
def test_clinics_load_with_every_image(name: str, federations: dict[str, list[Path]]) -> None:
    folders = federations[name]
    assert [f.name for f in folders] == ["clinic-1", "clinic-2", "clinic-3"]
    for folder in folders:
        data = load_clinic(folder, ("normal", "opacity"), 32)
        assert data.rejected == []
        assert len(data.train) + len(data.val) == len(_manifest_labels(folder))
        assert data.train.images.shape[1:] == (3, 32, 32) or data.train.images.shape[-2:] == (32, 32)


@pytest.mark.parametrize("name", sorted(SITES))
def test_prevalences_and_headers_as_stated(name: str, federations: dict[str, list[Path]]) -> None:
    sites = SITES[name]
    facts = []
    for folder, site in zip(federations[name], sites):
        labels = _manifest_labels(folder)
        assert len(labels) == 2 * N_PATIENTS  # two images per patient
        assert labels.count("opacity") == 2 * round(N_PATIENTS * site.prevalence)
        ds = _first_header(folder)
        p = site.profile
        assert (ds.Rows, ds.Columns, ds.BitsStored, ds.PhotometricInterpretation, ds.Modality) == (
            p.rows,
            p.columns,
            p.bits_stored,
            p.photometric,
            p.modality,
        )
        assert ds.file_meta.TransferSyntaxUID == p.syntax
        facts.append((ds.Rows, ds.Columns, ds.BitsStored, ds.file_meta.TransferSyntaxUID))
    assert len(set(facts)) == len(facts)  # no two clinics share size, depth and syntax
    for i in range(3):  # each header fact differs between at least two clinics
        assert len({f[i] for f in facts}) > 1
    assert "MONOCHROME1" in {s.profile.photometric for s in sites}
    assert len({s.prevalence for s in sites}) == len(sites)
    assert len({(s.brightness, s.gamma, s.noise) for s in sites}) == len(sites)


@pytest.mark.parametrize("name", sorted(SITES))
def test_deterministic_per_seed(name: str, tmp_path: Path) -> None:
    def digest(folder: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    a = GENERATORS[name](tmp_path / "a", 1, n_patients=3, seed=5)[0]
    b = GENERATORS[name](tmp_path / "b", 1, n_patients=3, seed=5)[0]
    c = GENERATORS[name](tmp_path / "c", 1, n_patients=3, seed=6)[0]
    assert digest(a) == digest(b) != digest(c)
