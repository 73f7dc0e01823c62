"""The coordinator's gate in front of every ServerApp process: only approved app bundles run.

A SuperLink's SuperExec starts `flwr-serverapp` for every submitted run, and that process
installs and imports whatever bundle the run carries, as the coordinator's user, next to
`ca.key` and the database. `coordinator superlink` puts this module first on the
SuperLink's PATH as `flwr-serverapp`: it hashes the bundle and refuses it before anything
in it is unpacked or imported unless it is the bundle of this radfed installation (or a
hash approved with `coordinator superlink --approve-app`), as clinics do for ClientApps.
"""

from __future__ import annotations

from pathlib import Path

from radfed.app_bundle import run_gated, write_shim as _write


def main() -> None:
    """`flwr-serverapp`, with the approval check before the bundle is installed."""
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    from radfed.processes import exit_soon_after_parent

    exit_soon_after_parent()  # the SuperLink's SuperExec gone: this ServerApp goes too
    run_gated("flwr.superlink.runtime.run_serverapp", flwr_serverapp, "this coordinator")


def write_shim(bin_dir: Path) -> Path:
    """A `flwr-serverapp` executable that runs `main` with this interpreter."""
    return _write(bin_dir, "flwr-serverapp", "server.app_guard")


if __name__ == "__main__":
    main()
