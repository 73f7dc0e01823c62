"""The clinic's gate in front of every ClientApp process: only approved app bundles run.

Flower ships the ClientApp code (the FAB) with each run, and every SuperNode would run
whatever a coordinator submitted. Flower's own check (`--trusted-entities`) only accepts
bundles signed through Flower Hub, which a self-hosted federation does not use. So
`client-node start` puts this module in front of Flower's `flwr-clientapp` (first on the
SuperNode's PATH): it computes the SHA-256 of the bundle it is handed and refuses it
before anything in it is unpacked or imported, unless the hash is approved. By default
the only approved bundle is the one this clinic's own radfed installation would build,
a thin entry point into the radfed code the clinic installed and reviewed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

APPROVED_ENV = "RADFED_APPROVED_APPS"
FAB_DIR = Path(__file__).resolve().parent.parent / "radfed" / "fab"


class AppNotApproved(RuntimeError):
    """A run's app bundle is not on this clinic's approved list."""


@lru_cache(maxsize=1)
def local_app_hash() -> str:
    """SHA-256 of the app bundle this installation builds (Flower's FAB build is deterministic)."""
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(FAB_DIR)).hexdigest()


def approved_hashes(extra: list[str] | None = None) -> set[str]:
    return {local_app_hash(), *(h.strip().lower() for h in (extra or []) if h.strip())}


def approved_from_env() -> set[str]:
    """The hashes `client-node start` approved, as it passes them to the ClientApp processes."""
    return {h for h in os.environ.get(APPROVED_ENV, "").split(",") if h}


def check_fab(content: bytes, approved: set[str]) -> str:
    """The bundle's hash if approved; AppNotApproved (a PHI-free one-liner) if not."""
    digest = hashlib.sha256(content).hexdigest()
    if digest not in approved:
        raise AppNotApproved(
            f"app bundle sha256:{digest[:16]} is not approved by this clinic; it runs only the "
            "radfed app of its own installation (or hashes it approved with --approve-app)")
    return digest


def _guarded_install(install):
    approved = approved_from_env()

    def install_checked(fab_content: bytes, *args, **kwargs):
        check_fab(fab_content, approved)
        return install(fab_content, *args, **kwargs)

    return install_checked


def main() -> None:
    """`flwr-clientapp`, with the approval check before the bundle is installed."""
    import flwr.supernode.runtime.run_clientapp as runner
    from flwr.supernode.cli import flwr_clientapp

    runner.install_from_fab = _guarded_install(runner.install_from_fab)
    flwr_clientapp()


def write_shim(bin_dir: Path) -> Path:
    """A `flwr-clientapp` executable that runs `main` with this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "flwr-clientapp"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m client_node.app_guard "$@"\n')
    shim.chmod(0o755)
    return shim


if __name__ == "__main__":
    main()
