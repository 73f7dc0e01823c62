"""Starting a clinic's Flower SuperNode: checks first, then a supervised child process.

`client-node start` is a parent that validates the clinic's data and the SuperLink's
address (one clear line when either is wrong), writes the node config Flower passes to
every ClientApp, starts `flower-supernode` and forwards Ctrl-C / SIGTERM to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from radfed.flower_env import flower_bin, flower_env, radfed_home
from radfed.processes import free_port, reachable, run_foreground


class NodeError(RuntimeError):
    """Something a clinic's IT admin must fix before the node can start; one line."""


@dataclass
class NodeOptions:
    """Everything `client-node start` needs; see its --help for each field."""

    superlink: str
    data: Path
    name: str
    manifest: Path | None = None
    cache_dir: Path | None = None
    insecure: bool = False
    root_certificates: Path | None = None
    local_port: int = 0
    threads: int = 0
    workers: int = 1
    home: Path | None = None
    fault: str = ""

    @property
    def node_home(self) -> Path:
        return (self.home or radfed_home() / "nodes") / self.name


def node_config(opts: NodeOptions) -> dict[str, str | int]:
    """The key/values every ClientApp of this node sees as `context.node_config`."""
    cache = opts.cache_dir or opts.node_home / "cache"
    return {
        "clinic-name": opts.name,
        "data-path": str(opts.data.resolve()),
        "manifest": str(opts.manifest.resolve()) if opts.manifest else "",
        "cache-dir": str(Path(cache).resolve()),
        "threads": int(opts.threads),
        "workers": int(opts.workers),
        "state-dir": str((opts.node_home / "state").resolve()),
        "fault": opts.fault,
    }


def write_node_config(opts: NodeOptions) -> Path:
    """Write the node config as TOML (JSON string escapes are valid TOML escapes)."""
    opts.node_home.mkdir(parents=True, exist_ok=True)
    path = opts.node_home / "node-config.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in node_config(opts).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def check(opts: NodeOptions) -> None:
    """Refuse to start with one line when the data or the SuperLink is not usable."""
    from radfed.data import DataError, check_manifest

    if not opts.name.replace("-", "").replace("_", "").isalnum():
        raise NodeError(f"clinic name '{opts.name}' must be letters, digits, '-' or '_'")
    try:
        check_manifest(opts.data, opts.manifest)
    except DataError as err:
        raise NodeError(str(err)) from None
    why = reachable(opts.superlink)
    if why:
        raise NodeError(f"SuperLink {opts.superlink} is not reachable ({why}); check the address "
                        "and that `coordinator superlink` is running there")
    if not opts.insecure and not opts.root_certificates:
        raise NodeError("a TLS SuperLink needs its CA certificate: pass --root-certificates CA.crt "
                        "(or --insecure for a loopback demo SuperLink)")


def supernode_command(opts: NodeOptions) -> list[str]:
    """The `flower-supernode` command line for this clinic."""
    cmd = [flower_bin("flower-supernode"), "--superlink", opts.superlink,
           "--node-config", str(write_node_config(opts)),
           "--port", str(opts.local_port or free_port())]
    if opts.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(Path(opts.root_certificates).resolve())]
    return cmd



def run_supernode(opts: NodeOptions) -> int:
    """Start the SuperNode in the foreground; Ctrl-C or SIGTERM stop it and its children."""
    return run_foreground(supernode_command(opts), flower_env(opts.node_home / "flwr"))
