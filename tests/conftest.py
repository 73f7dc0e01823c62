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


# ----------------------------------------------------------------- parallel runs (pytest-xdist)
# scripts/test runs the suite in worker processes (`-n`): most of the suite's time is spent
# waiting on real federations (heartbeats, timeouts, round trips), not computing.  Every test
# already has its own tmp folder, RADFED_HOME, FLWR_HOME and free loopback ports, and
# test_store's PostgreSQL schema is per session, i.e. per worker.

# Modules whose module-scoped fixture (a running federation, an imported Keras) their tests
# share: each is dealt to one worker as a whole, so the fixture is set up once.  Every other
# test is dealt out on its own, to whichever worker is free.
SHARED_FIXTURE_MODULES = {
    "test_security",
    "test_outsider",
    "test_strategies_e2e",
    "test_weights",
    "test_demo_data",
    "test_dashboard",
    "test_dashboard_browser",
}

# The slow ones first, so that no long test starts last and keeps one worker busy while
# the others idle.  Measured serially on 2 busy cores (seconds): recovery 284 and 248, the
# strategies module ~310 in all, the dashboard in a browser ~300 (its demo federation
# and 18 page loads), outsider ~200, the small demo 120, security ~90, e2e 30.
SLOW_FIRST = [
    "test_recovery.py::test_clinic_killed_and_clinic_revoked_mid_run",
    "test_recovery.py::test_superlink_killed_mid_run_then_resumed",
    "test_strategies_e2e.py",
    "test_simulate.py::test_simulate_iid_generated_then_dirichlet_on_data_folders",
    "test_dashboard_browser.py",
    "test_submit_browser.py",
    "test_outsider.py",
    "test_demo.py::test_small_demo_two_clinics_end_to_end",
    "test_security.py",
    "test_multiclass.py",
    "test_series_e2e.py",
    "test_e2e.py",
    "test_queue.py::test_submitted_approved_run_next_completes_on_the_leaderboard",
    "test_prediction.py",
]


def _rank(item: pytest.Item) -> int:
    nodeid = item.nodeid.split("/")[-1]
    for i, prefix in enumerate(SLOW_FIRST):
        if nodeid.startswith(prefix):
            return i
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: file order otherwise


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Deal out work units in collection order (above): a whole module for
    SHARED_FIXTURE_MODULES, otherwise one test.  (xdist's own `--dist loadgroup` marks do
    not group under pytest 9, whose node ids xdist can no longer suffix.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if Path(module).stem in SHARED_FIXTURE_MODULES else nodeid

    config.option.loadscopereorder = False  # keep the order above, not biggest units first
    return Scheduler(config, log)


@pytest.fixture(autouse=True)
def dashboard_on_loopback():
    """AppTest runs the dashboard with no --server.address; the dashboard asks for a login
    whenever it does not listen on loopback (dashboard.login_rule), so tests run it as
    `dashboard` does by default, on 127.0.0.1 (tests of the login rule set their own)."""
    import sys

    if "streamlit" not in sys.modules:
        yield
        return
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    try:
        yield
    finally:
        config.set_option("server.address", before)


@pytest.fixture(autouse=True)
def main_module_kept():
    """Streamlit's script runner (AppTest) installs the page as `__main__` and leaves it there;
    a later test in the same worker that starts a spawn process pool (radfed.data.workers)
    would then re-run that page in every child, which dies (BrokenProcessPool)."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None and sys.modules.get("__main__") is not main:
        sys.modules["__main__"] = main
