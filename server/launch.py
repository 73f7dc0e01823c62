"""Submitting an experiment to a SuperLink and following it to the end.

`flwr run` (Flower's own CLI) packs radfed's thin app bundle and submits it; radfed
writes the connection it needs into its own FLWR_HOME, then follows the run through
the database the ServerApp writes (rounds as a progress bar) and through Flower's own
view of the run (for a ServerApp that died before it could write anything), asked over
the Control API from this process: a `flwr ls` process would cost 1-2 s of CPU at every
look, taken from the clinics and the SuperLink when they share the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from radfed.app_bundle import FAB_DIR
from radfed.flower_env import flower_bin, flower_env
from radfed.processes import reachable
from radfed.spec import ExperimentSpec
from radfed.store import Store

CONNECTION = "radfed"


class LaunchError(RuntimeError):
    """A run that could not be submitted or did not finish; one line for the user."""


@dataclass
class Connection:
    """How the coordinator's CLI reaches the SuperLink's Control API."""

    address: str
    flwr_home: Path
    insecure: bool = False
    root_certificates: Path | None = None
    credential: Path | None = None  # client certificate for a remote control door (mutual TLS)

    def write(self) -> None:
        """Write FLWR_HOME/config.toml so `flwr` commands find the `radfed` connection."""
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f"[superlink.{CONNECTION}]",
            f'address = "{self.address}"',
            f"insecure = {str(self.insecure).lower()}",
        ]
        if self.root_certificates:
            lines.append(f'root-certificates = "{Path(self.root_certificates).resolve()}"')
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a `flwr` subcommand against this connection."""
        self.write()
        if not self.credential:
            return subprocess.run(
                [flower_bin("flwr"), *args],
                capture_output=True,
                text=True,
                env=flower_env(self.flwr_home),
                timeout=timeout,
            )
        from server.control_tls import CERT_ENV

        env = flower_env(self.flwr_home, **{CERT_ENV: str(Path(self.credential).resolve())})
        return subprocess.run(
            [sys.executable, "-m", "server.control_tls", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )

    def control(self, timeout: float = 60):
        """This connection's Control API, asked from this process (server.control)."""
        from server.control import ControlClient

        root = None if self.insecure or not self.root_certificates else Path(self.root_certificates)
        return ControlClient(self.address, root, self.insecure, credential=self.credential, timeout=timeout)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes


def submit(
    conn: Connection,
    spec: ExperimentSpec,
    database_url: str,
    checkpoint_dir: Path,
    holdout: str = "",
    extra: dict[str, str | int] | None = None,
) -> str:
    """Submit the experiment; returns Flower's run id. `holdout` names a clinic kept out
    of training and evaluated on the final model (leave-one-clinic-out); `extra`: more
    run-config keys (a resumed run's, server.resume)."""
    why = reachable(conn.address)
    if why:
        raise LaunchError(
            f"SuperLink {conn.address} is not reachable ({why}); "
            "start it with `coordinator superlink` or fix --control (its control door)"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(
            f"spec = {_toml_string(spec.to_json())}\n"
            f"database-url = {_toml_string(database_url)}\n"
            f"checkpoint-dir = {_toml_string(str(Path(checkpoint_dir).resolve()))}\n"
            f"holdout = {_toml_string(holdout)}\n"
        )
        for key, value in (extra or {}).items():
            fh.write(f"{key} = {value if isinstance(value, int) else _toml_string(str(value))}\n")
        overrides = fh.name
    try:
        proc = conn.flwr("run", str(FAB_DIR), CONNECTION, "--run-config", overrides, "--format", "json")
    finally:
        Path(overrides).unlink(missing_ok=True)
    reply = _json_reply(proc.stdout)
    if not reply.get("success") or not reply.get("run-id"):
        detail = reply.get("error-message") or (proc.stderr or proc.stdout).strip()[-300:]
        raise LaunchError(f"SuperLink {conn.address} refused the run: {' '.join(detail.split())}")
    return str(reply["run-id"])


def _json_reply(stdout: str) -> dict:
    """The JSON object `flwr ... --format json` prints (pretty-printed, maybe after notices)."""
    start = stdout.find("{")
    try:
        return json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def flower_status(conn: Connection, run_id: str, timeout: float = 60) -> str | None:
    """Flower's own view of a run ("running", "finished:failed", ... as `flwr ls` prints
    it), "" if Flower does not know it, or None if it could not be asked (no answer in
    `timeout` seconds: a loaded SuperLink is slow, not a lost run)."""
    return conn.control(timeout).run_status(run_id)


def stop(conn: Connection, run_id: str) -> None:
    """Ask the SuperLink to stop a run (Ctrl-C in `coordinator run`)."""
    conn.flwr("stop", run_id, CONNECTION, timeout=60)


def follow(
    conn: Connection, store: Store, run_id: str, rounds: int, poll: float = 1.0, flower_every: float | None = None
) -> dict:
    """Show round progress until the run ends; returns the store's final status dict.

    Flower's own view is checked every `flower_every` seconds: a run Flower reports
    finished, or no longer knows, twice in a row while the store still says running
    (its ServerApp died with the SuperLink, say) is marked failed with the reason.
    """
    from server.reconcile import stale_reason

    if flower_every is None:  # a look is one Control API request from this process
        flower_every = float(os.environ.get("RADFED_FOLLOW_EVERY", "5"))

    columns = (
        TextColumn("[bold]run {task.fields[run]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds  {task.fields[note]}"),
        TimeElapsedColumn(),
    )
    last_flower, suspect = time.monotonic(), None
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("rounds", total=rounds, run=run_id, note="waiting for clinics")
        while True:
            status = store.run_status(run_id) or {}
            done = int(status.get("rounds_recorded", 0) or 0)
            bar.update(task, completed=min(done, rounds), note=_note(status))
            if status.get("status") in ("completed", "failed"):
                return status
            if time.monotonic() - last_flower > flower_every:
                last_flower = time.monotonic()
                if reachable(conn.address):
                    bar.update(task, note="SuperLink unreachable; waiting for it")
                    suspect = None
                else:
                    flwr_state = flower_status(conn, run_id)
                    if flwr_state is None:  # no answer is no evidence: ask again next time
                        continue
                    reason = stale_reason(flwr_state or None)
                    if reason and reason == suspect:
                        status = store.run_status(run_id) or {}
                        if status.get("status") in ("completed", "failed"):
                            return status
                        if status.get("run_id") is not None:
                            store.finish_run(status["run_id"], "failed", error=reason)
                        return {**status, "status": "failed", "error": reason}
                    suspect = reason
            time.sleep(poll)


def _note(status: dict) -> str:
    if not status:
        return "waiting for the ServerApp"
    return "running" if status.get("rounds_recorded") else "waiting for clinics"
