"""Starting a clinic's Flower SuperNode: checks first, then a supervised child process.

`client-node start` is a parent that validates the clinic's enrolment, data and the
SuperLink (one clear line when any is wrong: unreachable, wrong CA, expired certificate,
clock skew, plaintext against TLS), writes the node config Flower passes to every
ClientApp, starts `flower-supernode` with the clinic's node key, forwards Ctrl-C /
SIGTERM, and turns Flower's refusal codes into one line (unknown or revoked key).
Every ClientApp process it allows runs behind the app gate (client_node/app_guard.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from radfed.flower_env import flower_env, radfed_home
from radfed.processes import free_port, reachable, run_foreground, spawn_bound, stop_tree


class NodeError(RuntimeError):
    """Something a clinic's IT admin must fix before the node can start; one line."""


ENROLMENT = "enrolment"
# Flower's refusals, as the SuperNode prints them, and what they mean for a clinic
# (most specific first).
REFUSALS = {
    "[code: 2004]": "the SuperLink refused this clinic's node key (not enrolled there, or revoked); "
    "ask the coordinator (`coordinator clinic list`) for a current bundle",
    "[code: 2001]": "the SuperLink requires an enrolled clinic key; start with --bundle FILE "
    "from the coordinator (`coordinator clinic add NAME`)",
    "Exit Code: 305": "the SuperNode could not establish its connection to the SuperLink; see the lines above",
}


@dataclass
class NodeOptions:
    """Everything `client-node start` needs; see its --help for each field."""

    superlink: str | None
    data: Path
    name: str | None
    manifest: Path | None = None
    cache_dir: Path | None = None
    insecure: bool = False
    bundle: Path | None = None
    local_port: int = 0
    threads: int = 0
    workers: int = 1
    home: Path | None = None
    fault: str = ""
    approve_apps: list[str] = field(default_factory=list)
    isolation: str = "thread"  # the warm ClientApp in the SuperNode ("thread"), beside it ("worker"), or Flower's
    data_options: dict = field(default_factory=dict)  # the clinic's own (radfed.data.options.CLINIC_KEYS)
    labels_from: str = ""  # where the labels come from, in words (set by check)

    @property
    def nodes_home(self) -> Path:
        return self.home or radfed_home() / "nodes"

    @property
    def node_home(self) -> Path:
        return self.nodes_home / str(self.name)

    @property
    def enrolment(self) -> Path:
        return self.node_home / ENROLMENT


def enroll(bundle_path: Path, home: Path | None = None) -> tuple[str, Path]:
    """Verify a bundle and install it under the node's home; returns (clinic, folder)."""
    from radfed.enrolment import BundleError, install_bundle, read_bundle

    try:
        bundle = read_bundle(bundle_path)
    except BundleError as e:
        raise NodeError(str(e)) from None
    folder = (home or radfed_home() / "nodes") / bundle.clinic / ENROLMENT
    install_bundle(bundle, folder)
    return bundle.clinic, folder


def _enrolled_clinics(nodes_home: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in nodes_home.glob(f"*/{ENROLMENT}/enrolment.json"))


def resolve(opts: NodeOptions) -> NodeOptions:
    """Fill name and SuperLink from the bundle or the installed enrolment (TLS runs)."""
    if opts.insecure:
        if not opts.superlink or not opts.name:
            raise NodeError("--insecure needs --superlink HOST:PORT and --name NAME")
        return opts
    if opts.bundle:
        opts.name, _ = enroll(opts.bundle, opts.nodes_home)
    if not opts.name:
        enrolled = _enrolled_clinics(opts.nodes_home)
        if len(enrolled) != 1:
            raise NodeError(
                "no enrolment found: pass --bundle FILE from the coordinator (or run `client-node enroll FILE` once)"
                if not enrolled
                else f"several clinics are enrolled here ({', '.join(enrolled)}); pass --name"
            )
        opts.name = enrolled[0]
    info = opts.enrolment / "enrolment.json"
    if not info.is_file():
        raise NodeError(
            f"clinic '{opts.name}' is not enrolled on this machine; pass --bundle FILE "
            "(or run `client-node enroll FILE`)"
        )
    opts.superlink = opts.superlink or json.loads(info.read_text())["superlink"]
    return opts


def nodes_home_for(home: Path | None, name: str | None) -> Path:
    """A clinic's node home on this machine (for commands run beside `start`, e.g. predict):
    --name's, else the only one there is; NodeError (one line) otherwise."""
    nodes = home or radfed_home() / "nodes"
    if name:
        return nodes / name
    found = sorted(
        d.name
        for d in nodes.glob("*")
        if d.is_dir() and ((d / "node-config.toml").is_file() or (d / "models").is_dir())
    )
    if len(found) != 1:
        raise NodeError(
            f"no clinic has run on this machine under {nodes}; pass --home or a model file"
            if not found
            else f"several clinics run on this machine ({', '.join(found)}); pass --name"
        )
    return nodes / found[0]


def node_config(opts: NodeOptions) -> dict[str, str | int]:
    """The key/values every ClientApp of this node sees as `context.node_config`."""
    cache = opts.cache_dir or opts.node_home / "cache"
    return {
        "clinic-name": str(opts.name),
        "data-path": str(opts.data.resolve()),
        "manifest": str(opts.manifest.resolve()) if opts.manifest else "",
        "cache-dir": str(Path(cache).resolve()),
        "threads": int(opts.threads),
        "workers": int(opts.workers),
        "state-dir": str((opts.node_home / "state").resolve()),
        "models-dir": str((opts.node_home / "models").resolve()),
        "outbox-log": str((opts.node_home / "outbox.jsonl").resolve()),
        "fault": opts.fault,
        "data-options": json.dumps(opts.data_options, sort_keys=True),
    }


def write_node_config(opts: NodeOptions) -> Path:
    """Write the node config as TOML (JSON string escapes are valid TOML escapes)."""
    opts.node_home.mkdir(parents=True, exist_ok=True)
    path = opts.node_home / "node-config.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in node_config(opts).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def check(opts: NodeOptions) -> NodeOptions:
    """Refuse to start with one line when enrolment, data or the SuperLink is not usable."""
    from radfed.data import DataError, DataOptions, preflight
    from radfed.enrolment import check_tls, speaks_tls

    opts = resolve(opts)
    if not str(opts.name).replace("-", "").replace("_", "").isalnum():
        raise NodeError(f"clinic name '{opts.name}' must be letters, digits, '-' or '_'")
    try:
        opts.labels_from = preflight(opts.data, opts.manifest, DataOptions().with_local(opts.data_options))
    except DataError as err:
        raise NodeError(str(err)) from None
    why = reachable(str(opts.superlink))
    if why:
        raise NodeError(
            f"SuperLink {opts.superlink} is not reachable ({why}); check the address "
            "and that `coordinator superlink` is running there"
        )
    if opts.insecure:
        if speaks_tls(str(opts.superlink)):
            raise NodeError(
                f"SuperLink {opts.superlink} requires TLS: a plaintext (--insecure) node "
                "cannot join; start with your enrolment bundle (--bundle FILE) instead"
            )
        return opts
    problem = check_tls(str(opts.superlink), (opts.enrolment / "ca.crt").read_text())
    if problem:
        raise NodeError(problem)
    return opts


def supernode_command(opts: NodeOptions) -> list[str]:
    """The `flower-supernode` command line for this clinic (with radfed's pacing of
    Flower's message loop, client_node/supernode.py)."""
    opts.local_port = opts.local_port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "client_node.supernode",
        "--superlink",
        str(opts.superlink),
        "--node-config",
        str(write_node_config(opts)),
        "--port",
        str(opts.local_port),
    ]
    if opts.isolation in ("thread", "worker"):
        cmd += ["--isolation", "process"]  # client_node/worker.py serves the ClientApp tasks
    if opts.insecure:
        return cmd + ["--insecure"]
    return cmd + [
        "--root-certificates",
        str((opts.enrolment / "ca.crt").resolve()),
        "--auth-supernode-private-key",
        str((opts.enrolment / "node.key").resolve()),
    ]


class _Worker:
    """The warm ClientApp worker beside the SuperNode, restarted if it dies."""

    def __init__(self, port: int, env: dict[str, str]):
        self.cmd = [sys.executable, "-m", "client_node.worker", "--runtime-api", f"127.0.0.1:{port}"]
        self.env = env
        self.proc = spawn_bound(self.cmd, env=env)

    def check(self) -> None:
        if self.proc.poll() is not None:
            print(
                f"radfed: ClientApp worker exited ({self.proc.returncode}); restarting it", file=sys.stderr, flush=True
            )
            self.proc = spawn_bound(self.cmd, env=self.env)

    def stop(self) -> None:
        stop_tree(self.proc)

    def restart(self) -> None:
        """A fresh worker: nothing of a task cut off by an outage survives."""
        stop_tree(self.proc)
        self.proc = spawn_bound(self.cmd, env=self.env)


def explain(line: str) -> str | None:
    """One line for a clinic's admin when Flower prints a known refusal, else None."""
    return next((meaning for marker, meaning in REFUSALS.items() if marker in line), None)


KEY_REFUSED = REFUSALS["[code: 2004]"]
RECONNECTED = "Connection successful after"  # Flower's line after a connection outage
STALE_SESSION_S = 90.0  # Flower counts a crashed node online for 2 missed 30 s heartbeats
RESYNC_S = 12.0  # the coordinator's supervisor (re)registers keys every 2 s after a restart
MAX_BACKOFF_S = 30.0


def run_supernode(opts: NodeOptions, report=print, say=None) -> int:
    """Run the SuperNode until Ctrl-C / SIGTERM, reconnecting by itself.

    When the SuperNode exits (the SuperLink restarted or dropped it, the network went
    away), it is started again with back-off once the SuperLink is reachable. It gives up,
    with one line naming the reason, only when the SuperLink refuses this clinic for a
    real reason: its key is unknown or revoked (after waiting out a session the SuperLink
    may still hold from a crash of this node), or it demands an enrolled key. Every
    ClientApp it starts passes the app gate first (only approved bundles run).
    """
    from client_node.app_guard import APPROVED_ENV, approved_hashes, write_shim
    from client_node.supernode import IN_PROCESS_ENV

    said: list[str] = []

    def say_once(line: str) -> None:  # the same news is not repeated at every retry
        if not said or said[-1] != line:
            said.append(line)
            (say or (lambda text: print(f"radfed: {text}", file=sys.stderr, flush=True)))(line)

    shim_dir = write_shim(opts.node_home / "bin").parent
    env = flower_env(opts.node_home / "flwr")
    env["PATH"] = f"{shim_dir}:{env['PATH']}"
    env[APPROVED_ENV] = ",".join(sorted(approved_hashes(opts.approve_apps)))
    env[IN_PROCESS_ENV] = "1" if opts.isolation == "thread" else "0"
    session = opts.node_home / "session"  # exists while a SuperNode of this clinic may hold one
    crashed = session.exists()  # the previous `client-node start` did not end cleanly
    session.write_text(str(os.getpid()))
    cmd = supernode_command(opts)
    worker = _Worker(opts.local_port, env) if opts.isolation == "worker" else None
    refused_since: float | None = None
    backoff = 1.0
    try:
        while True:
            seen: list[str] = []
            outage = []  # the SuperNode reconnected after losing the SuperLink

            # on_line and tick run within this iteration only (run_foreground below), so they
            # see this iteration's lists
            def on_line(line: str) -> None:
                meaning = explain(line)
                if meaning and meaning not in seen:  # noqa: B023
                    seen.append(meaning)  # noqa: B023
                if RECONNECTED in line:
                    outage.append(line)  # noqa: B023

            def tick() -> bool:
                if worker:
                    worker.check()
                # Flower 1.42's SuperNode can stay wedged after an outage that cut a message
                # transfer (it never hands later runs' tasks on): start a fresh session.
                return bool(outage)  # noqa: B023

            started = time.monotonic()
            code = run_foreground(cmd, env, on_line=on_line, tick=tick, every=2.0)
            if outage:
                say_once("the SuperLink was away and is back: starting a fresh SuperNode session")
                if worker:
                    worker.restart()
                continue
            refusal = min(seen, key=list(REFUSALS.values()).index) if seen else None
            if time.monotonic() - started > 60:  # it was connected: a fresh start of troubles
                backoff, refused_since, crashed = 1.0, None, False
            if refusal == KEY_REFUSED:
                refused_since = refused_since or started
                window = STALE_SESSION_S if crashed else RESYNC_S
                if time.monotonic() - refused_since < window:
                    say_once(
                        "the SuperLink still holds this clinic's previous session (a node that stopped "
                        "abruptly counts as online for up to a minute); retrying"
                        if crashed
                        else "the SuperLink refused this clinic's key; retrying while the coordinator re-registers keys"
                    )
                    time.sleep(min(backoff, 5.0))
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
            if refusal and refusal != REFUSALS["Exit Code: 305"]:
                report(refusal)
                return code or 1
            say_once(f"SuperNode exited (status {code}); reconnecting to {opts.superlink} in {backoff:g} s")
            time.sleep(backoff)
            while reachable(str(opts.superlink), timeout=3.0):
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                say_once(f"SuperLink {opts.superlink} is not reachable; retrying with back-off")
                time.sleep(backoff)
    finally:
        if worker:
            worker.stop()
        session.unlink(missing_ok=True)
