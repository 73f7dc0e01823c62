"""The clinic's gate in front of every ClientApp process: only approved app bundles run.

Flower ships the ClientApp code (the FAB) with each run, and every SuperNode would run
whatever a coordinator submitted. Flower's own check (`--trusted-entities`) only accepts
bundles signed through Flower Hub, which a self-hosted federation does not use. So
`client-node start` puts this module in front of Flower's `flwr-clientapp` (first on the
SuperNode's PATH): it computes the SHA-256 of the bundle it is handed and refuses it
before anything in it is unpacked or imported, unless the hash is approved
(radfed.app_bundle). By default the only approved bundle is the one this clinic's own
radfed installation would build, a thin entry point into the radfed code the clinic
installed and reviewed.
"""

from __future__ import annotations

from pathlib import Path

from radfed.app_bundle import (
    APPROVED_ENV,
    AppNotApproved,
    approved_from_env,
    approved_hashes,
    check_fab,
    local_app_hash,
    run_gated,
    write_shim as _write,
)

__all__ = [
    "APPROVED_ENV",
    "AppNotApproved",
    "approved_from_env",
    "approved_hashes",
    "check_fab",
    "local_app_hash",
    "main",
    "write_shim",
]


def main() -> None:
    """`flwr-clientapp`, with the approval check before the bundle is installed."""
    from flwr.supernode.cli import flwr_clientapp

    run_gated("flwr.supernode.runtime.run_clientapp", flwr_clientapp, "this clinic")


def write_shim(bin_dir: Path) -> Path:
    """A `flwr-clientapp` executable that runs `main` with this interpreter."""
    return _write(bin_dir, "flwr-clientapp", "client_node.app_guard")


if __name__ == "__main__":
    main()
