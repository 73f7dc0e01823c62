"""Starting the coordinator's Flower SuperLink with radfed's settings.

Always without runtime dependency installation; plaintext only on a loopback address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from radfed.flower_env import flower_bin, flower_env
from radfed.processes import run_foreground


class SuperLinkError(RuntimeError):
    """A SuperLink setting that is refused; one line for the user."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class SuperLinkOptions:
    """What `coordinator superlink` takes; see its --help."""

    host: str = "127.0.0.1"
    port: int = 9092
    insecure: bool = False
    certs: Path | None = None
    database: Path | None = None
    flwr_home: Path | None = None

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{host}:{self.port}"


def superlink_command(opts: SuperLinkOptions) -> list[str]:
    """The `flower-superlink` command line; refuses plaintext off loopback."""
    cmd = [flower_bin("flower-superlink"), "--host", opts.host, "--port", str(opts.port),
           "--disable-runtime-dependency-installation"]
    if opts.database:
        cmd += ["--database", str(Path(opts.database).resolve())]
    if opts.insecure:
        if not is_loopback(opts.host):
            raise SuperLinkError(f"--insecure is only allowed on a loopback address, not {opts.host}; "
                                 "use TLS certificates for a SuperLink other machines reach")
        return cmd + ["--insecure"]
    certs = Path(opts.certs) if opts.certs else None
    files = [certs / n for n in ("ca.crt", "server.pem", "server.key")] if certs else []
    if not files or not all(f.is_file() for f in files):
        raise SuperLinkError("TLS needs a certificate folder with ca.crt, server.pem and server.key "
                             "(--certs DIR); for a loopback demo pass --insecure")
    return cmd + ["--ssl-ca-certfile", str(files[0].resolve()), "--ssl-certfile",
                  str(files[1].resolve()), "--ssl-keyfile", str(files[2].resolve())]



def run_superlink(opts: SuperLinkOptions) -> int:
    """Run the SuperLink in the foreground until Ctrl-C / SIGTERM."""
    return run_foreground(superlink_command(opts), flower_env(opts.flwr_home))
