"""Shared fixtures: an isolated RADFED_HOME and FLWR_HOME per test, real federations."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.federation import Federation


@pytest.fixture(autouse=True)
def radfed_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test's radfed and Flower state inside its own tmp folder."""
    home = tmp_path / "radfed-home"
    monkeypatch.setenv("RADFED_HOME", str(home))
    monkeypatch.setenv("FLWR_HOME", str(home / "flwr"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return home


@pytest.fixture
def federation(tmp_path: Path):
    """A real SuperLink on a free loopback port; clinics are added by the test."""
    fed = Federation(tmp_path / "fed")
    fed.start_superlink()
    try:
        yield fed
    finally:
        fed.close()
