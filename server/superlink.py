"""Starting the coordinator's Flower SuperLink with radfed's settings.

Secure by default: TLS with the federation's certificates and SuperNode authentication,
so only clinics enrolled with `coordinator clinic add` can join. Plaintext (`--insecure`)
is refused off loopback. Always without runtime dependency installation. While the
SuperLink runs, its supervisor keeps the registered node keys in step with the clinic
register and writes connections and disconnections to the audit trail.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from radfed.flower_env import flower_bin, flower_env, radfed_home
from radfed.pki import CertPaths
from radfed.processes import reachable, run_foreground


class SuperLinkError(RuntimeError):
    """A SuperLink setting that is refused; one line for the user."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_certs() -> Path:
    """Where `coordinator certs init` puts the federation's CA and SuperLink certificate."""
    return radfed_home() / "pki"


@dataclass
class SuperLinkOptions:
    """What `coordinator superlink` takes; see its --help."""

    host: str = "127.0.0.1"
    port: int = 9092
    insecure: bool = False
    certs: Path | None = None
    database: Path | None = None
    flwr_home: Path | None = None
    db: str | None = None  # radfed database holding the clinic register

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{host}:{self.port}"

    @property
    def cert_paths(self) -> CertPaths:
        return CertPaths(Path(self.certs) if self.certs else default_certs())


def superlink_command(opts: SuperLinkOptions) -> list[str]:
    """The `flower-superlink` command line; refuses plaintext off loopback."""
    cmd = [flower_bin("flower-superlink"), "--host", opts.host, "--port", str(opts.port),
           "--disable-runtime-dependency-installation"]
    if opts.database:
        cmd += ["--database", str(Path(opts.database).resolve())]
    if opts.insecure:
        if not is_loopback(opts.host):
            raise SuperLinkError(f"--insecure is only allowed on a loopback address, not {opts.host}; "
                                 "use TLS (the default) for a SuperLink other machines reach")
        return cmd + ["--insecure"]
    certs = opts.cert_paths
    if not certs.complete():
        raise SuperLinkError(f"no federation certificates in {certs.folder} (need ca.crt, ca.key, "
                             "server.pem, server.key): run `coordinator certs init --hosts NAME,IP` "
                             "first, or pass --insecure for a loopback-only demo")
    return cmd + ["--ssl-ca-certfile", str(certs.ca_cert.resolve()), "--ssl-certfile",
                  str(certs.server_cert.resolve()), "--ssl-keyfile", str(certs.server_key.resolve()),
                  "--enable-supernode-auth"]


def _supervisor(opts: SuperLinkOptions):
    """The periodic work beside a secure SuperLink: enrolment sync and connection audit."""
    from radfed.audit import Registry
    from radfed.store import Store
    from server.clinics import Enrolment
    from server.control import ControlClient

    control = ControlClient(opts.address, opts.cert_paths.ca_cert,
                            flwr_home=(opts.flwr_home or radfed_home() / "superlink") / "control")
    enrolment = Enrolment(Registry(Store(opts.db)), control)
    state = {"up": False, "last_error": None}

    def tick() -> None:
        if not state["up"]:
            if reachable(opts.address, timeout=1.0):
                return
            state["up"] = True
        problem = enrolment.try_sync()
        if problem and problem != state["last_error"]:
            print(f"radfed: enrolment sync: {problem}", file=sys.stderr, flush=True)
        state["last_error"] = problem

    return tick


def run_superlink(opts: SuperLinkOptions, every: float = 2.0) -> int:
    """Run the SuperLink in the foreground until Ctrl-C / SIGTERM."""
    cmd = superlink_command(opts)
    tick = None if opts.insecure else _supervisor(opts)
    return run_foreground(cmd, flower_env(opts.flwr_home), tick=tick, every=every)
