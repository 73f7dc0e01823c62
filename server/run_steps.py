"""The steps of `coordinator run`, shared with `coordinator queue run-next`.

Connect to the SuperLink's control door, check a spec's strategy and privacy mode,
submit it, follow it round by round, and report the outcome in the leaderboard's
words: a queued experiment goes through exactly what a spec file goes through.
Each step prints one `error:` line and exits on failure (radfed.cli_errors).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from radfed.cli_errors import fail
from radfed.flower_env import radfed_home
from radfed.spec import ExperimentSpec
from radfed.store import Store
from server.launch import Connection, LaunchError, follow, stop, submit

err = Console(stderr=True)


def connection(control: str, insecure: bool, root_certificates: Path | None, credential: Path | None) -> Connection:
    """How to reach the control door: the coordinator's CA by default, a credential for a
    remote door; exits 2 when neither TLS material nor --insecure is there."""
    if not insecure and not root_certificates:
        from server.superlink import default_certs

        root_certificates = default_certs() / "ca.crt"
        if not root_certificates.is_file():
            fail(
                "pass --root-certificates CA.crt for a TLS SuperLink (none in ~/.radfed/pki), "
                "or --insecure for a loopback one",
                2,
            )
    if credential and not (credential.is_file() and credential.with_suffix(".key").is_file()):
        fail(
            f"{credential}: no coordinator credential there (NAME.pem with NAME.key beside it); "
            "issue one with `coordinator certs credential NAME`",
            2,
        )
    return Connection(control, radfed_home() / "flwr-cli", insecure, root_certificates, credential)


def check_spec(spec: ExperimentSpec, source: str) -> None:
    """The strategy's and privacy mode's parameters, as the ServerApp will need them; exits 2."""
    from strategies import StrategyError, check_privacy, check_strategy

    try:
        check_strategy(spec.strategy, spec.strategy_params)
        check_privacy(spec.privacy, spec.min_clinics, spec.strategy)
    except StrategyError as e:
        fail(f"{source}: {e}", 2)


def start(
    conn: Connection,
    store: Store,
    spec: ExperimentSpec,
    checkpoints: Path | None,
    holdout: str = "",
    extra: dict | None = None,
    what: str = "submitted",
    on_error: Callable[[str], None] | None = None,
) -> str:
    """Submit the run; returns Flower's run id. A refusal (SuperLink down...) calls
    `on_error(message)` first, then exits 1."""
    try:
        run_id = submit(
            conn, spec, store.url, checkpoints or radfed_home() / "checkpoints", holdout=holdout, extra=extra
        )
    except LaunchError as e:
        if on_error:
            on_error(str(e))
        fail(str(e))
    err.print(f"{what} run {run_id} ({spec.name}) to {conn.address}", highlight=False)
    return run_id


def follow_to_end(
    conn: Connection, store: Store, run_id: str, rounds: int, on_interrupt: Callable[[], None] | None = None
) -> dict:
    """Rounds as a progress bar until the run ends; Ctrl-C stops the run (and exits 130)."""
    try:
        return follow(conn, store, run_id, rounds)
    except KeyboardInterrupt:
        stop(conn, run_id)
        if on_interrupt:
            on_interrupt()
        fail(f"interrupted; asked the SuperLink to stop run {run_id}", 130)


def report(store: Store, status: dict, run_id: str) -> None:
    """'run N completed' and its figures; a failed run exits 1 with its reason."""
    if status.get("status") != "completed":
        fail(f"run {run_id} failed: {status.get('error') or 'unknown reason'}")
    err.print(f"run {run_id} completed", highlight=False)
    report_quality(store, run_id)


def report_quality(store: Store, run_id: str) -> None:
    """The headline (pooled AUROC with its 95 % CI over every clinic's validation
    patients), the clinic mean, the selected checkpoint, warnings about a degenerate model
    and, for a hold-out run, the held-out clinic's figures, in the leaderboard's words."""
    from server.leaderboard import holdout_rows, holdout_text, result_line, run_entry, warning_lines

    entry = run_entry(store, run_id)
    if entry is None:
        return
    err.print(result_line(entry), highlight=False, soft_wrap=True)
    for line in warning_lines(entry):
        err.print(line, style="yellow", highlight=False, soft_wrap=True)
    if entry.get("holdout") or holdout_rows(entry):
        err.print(f"held-out clinic (never trained on): {holdout_text(entry)}", highlight=False)
