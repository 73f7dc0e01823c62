"""Which Flower app bundles (FABs) may run here: the installation's own, or approved hashes.

Flower ships the app code with each run and its executors would run whatever arrives:
a SuperNode any ClientApp, a SuperLink any ServerApp. radfed runs only the bundle its own
installation builds from `radfed/fab` (Flower's FAB build is deterministic, so both sides
compute the same SHA-256), or a hash the operator approved explicitly. The gates in
`client_node/app_guard.py` (clinics) and `server/app_guard.py` (coordinator) check the
hash before anything in the bundle is unpacked or imported.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

APPROVED_ENV = "RADFED_APPROVED_APPS"
FAB_DIR = Path(__file__).resolve().parent / "fab"


class AppNotApproved(RuntimeError):
    """A run's app bundle is not on this machine's approved list."""


@lru_cache(maxsize=1)
def local_app_hash() -> str:
    """SHA-256 of the app bundle this installation builds (Flower's FAB build is deterministic)."""
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(FAB_DIR)).hexdigest()


def approved_hashes(extra: list[str] | None = None) -> set[str]:
    return {local_app_hash(), *(h.strip().lower() for h in (extra or []) if h.strip())}


def approved_from_env() -> set[str]:
    """The hashes the starting command approved, as passed to the app processes."""
    return {h for h in os.environ.get(APPROVED_ENV, "").split(",") if h}


def check_fab(content: bytes, approved: set[str], who: str = "this clinic") -> str:
    """The bundle's hash if approved; AppNotApproved (a PHI-free one-liner) if not."""
    digest = hashlib.sha256(content).hexdigest()
    if digest not in approved:
        raise AppNotApproved(
            f"app bundle sha256:{digest[:16]} is not approved by {who}; it runs only the "
            "radfed app of its own installation (or hashes it approved with --approve-app)"
        )
    return digest


def guarded_install(install, who: str):
    """Flower's `install_from_fab`, refusing unapproved bundles before unpacking them."""
    approved = approved_from_env()

    def install_checked(fab_content: bytes, *args, **kwargs):
        check_fab(fab_content, approved, who)
        return install(fab_content, *args, **kwargs)

    return install_checked


def run_gated(runner_module: str, entry, who: str) -> None:
    """Run a Flower app executor (`entry`) whose `runner_module` installs bundles only if approved."""
    import importlib

    from radfed.processes import die_with_parent

    die_with_parent()  # the executor that started this app process dies: so does the app
    # flwr's packages re-export functions under their modules' names: patch the module itself
    runner = importlib.import_module(runner_module)
    runner.install_from_fab = guarded_install(runner.install_from_fab, who)
    entry()


def write_shim(bin_dir: Path, command: str, module: str) -> Path:
    """An executable `command` that runs `python -m module` with this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / command
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
    shim.chmod(0o755)
    return shim
