"""Starting the coordinator's SuperLink with radfed's settings: two doors and a supervisor.

Secure by default: TLS with the federation's certificates and SuperNode authentication,
so only clinics enrolled with `coordinator clinic add` can join. Plaintext (`--insecure`)
is refused off loopback. Always without runtime dependency installation.

The SuperLink runs as one child process (`server.doors`) with two listeners: the public
door clinics dial serves the Fleet API only; the control door (loopback) serves the
Control and Runtime APIs to this machine's `coordinator run`, the supervisor and the
ServerApp. `--remote-control HOST:PORT` adds the same APIs for other machines, behind
mutual TLS with the federation CA. The child dies with this process (parent-death signal), so the SuperLink never
serves without its supervisor. While it runs, the supervisor keeps the registered node
keys equal to the clinic register (registering, unregistering, removing unknown keys) and
writes connections and alerts to the audit trail. Every ServerApp the SuperLink starts
passes the app gate (server.app_guard) and samples only the register's active clinics.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from radfed.app_bundle import APPROVED_ENV, approved_hashes
from radfed.flower_env import flower_env, radfed_home
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


def dial_address(host: str, port: int) -> str:
    """HOST:PORT to connect to a listener bound to `host` (wildcards mean this machine)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    control_port: int | None = None  # the loopback control door; default: port + 1
    approve_apps: list[str] = field(default_factory=list)
    remote_control: str | None = None  # HOST:PORT of a mutual-TLS control door for other machines

    @property
    def address(self) -> str:
        """Where clinics connect (the public door)."""
        return dial_address(self.host, self.port)

    @property
    def control(self) -> str:
        """Where this machine's coordinator tools connect (the loopback control door)."""
        return dial_address("127.0.0.1", self.control_port or self.port + 1)

    def listeners(self) -> list[tuple[str, int, str]]:
        """(host, port, option) of every door this SuperLink opens."""
        doors = [(self.host, self.port, "--port"), ("127.0.0.1", self.control_port or self.port + 1, "--control-port")]
        if self.remote_control:
            host, port = split_address(self.remote_control)
            doors.append((host, port, "--remote-control"))
        return doors

    @property
    def cert_paths(self) -> CertPaths:
        return CertPaths(Path(self.certs) if self.certs else default_certs())


def state_file(opts: SuperLinkOptions) -> Path:
    """Flower's state (nodes, runs, messages) on disk, so a restarted SuperLink keeps it."""
    if opts.database:
        return Path(opts.database).resolve()
    home = Path(opts.flwr_home or radfed_home() / "superlink")
    home.mkdir(parents=True, exist_ok=True)
    return (home / "state.db").resolve()


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) → (host, port); SuperLinkError if malformed."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SuperLinkError(f"'{address}' is not HOST:PORT (e.g. 10.0.0.5:9094)")
    return host.strip("[]"), int(port)


def superlink_command(opts: SuperLinkOptions) -> list[str]:
    """The two-door SuperLink command line; refuses plaintext off loopback."""
    doors_open = opts.listeners()
    ports = [(host, port) for host, port, _ in doors_open]
    if len(set(p for _, p in ports)) < len(ports):
        raise SuperLinkError(
            "--port, --control-port and --remote-control need different ports: each door is a listener of its own"
        )
    doors = [sys.executable, "-m", "server.doors", "--public-host", opts.host, "--public-port", str(opts.port)]
    flower = ["--host", "127.0.0.1", "--port", str(doors_open[1][1]), "--disable-runtime-dependency-installation"]
    flower += ["--database", str(state_file(opts))]
    if opts.insecure:
        if not is_loopback(opts.host):
            raise SuperLinkError(
                f"--insecure is only allowed on a loopback address, not {opts.host}; "
                "use TLS (the default) for a SuperLink other machines reach"
            )
        if opts.remote_control:
            raise SuperLinkError("--remote-control needs TLS (mutual TLS with the federation CA); drop --insecure")
        return doors + ["--", *flower, "--insecure"]
    certs = opts.cert_paths
    if not certs.complete():
        raise SuperLinkError(
            f"no federation certificates in {certs.folder} (need ca.crt, ca.key, "
            "server.pem, server.key): run `coordinator certs init --hosts NAME,IP` "
            "first, or pass --insecure for a loopback-only demo"
        )
    if opts.remote_control:  # the control door for other machines: mutual TLS with the federation CA
        host, port = split_address(opts.remote_control)
        doors += ["--remote-host", host, "--remote-port", str(port), "--client-ca", str(certs.ca_cert.resolve())]
    return doors + [
        "--",
        *flower,
        "--ssl-ca-certfile",
        str(certs.ca_cert.resolve()),
        "--ssl-certfile",
        str(certs.server_cert.resolve()),
        "--ssl-keyfile",
        str(certs.server_key.resolve()),
        "--enable-supernode-auth",
    ]


def port_in_use(host: str, port: int) -> bool:
    """True if `host:port` cannot be bound now (another SuperLink, or any other server)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return True
    return False


def check_ports(opts: SuperLinkOptions) -> None:
    for host, port, what in opts.listeners():
        if port_in_use(host, port):
            raise SuperLinkError(
                f"{host}:{port} ({what}) is already in use: another `coordinator superlink` "
                "or another server holds it; stop it or pick another port"
            )


def superlink_env(opts: SuperLinkOptions) -> dict[str, str]:
    """Environment of the SuperLink and every process it starts (SuperExec, ServerApps)."""
    from server.app_guard import write_shim
    from server.membership import REGISTER_ENV

    home = opts.flwr_home or radfed_home() / "superlink"
    env = flower_env(home)
    shim_dir = write_shim(Path(home) / "bin").parent  # `flwr-serverapp` behind the app gate
    env["PATH"] = f"{shim_dir}:{env['PATH']}"
    env[APPROVED_ENV] = ",".join(sorted(approved_hashes(opts.approve_apps)))
    if not opts.insecure:  # node auth on: membership is the register
        env[REGISTER_ENV] = absolute_url(opts.db)
    return env


def absolute_url(db: str | None) -> str:
    """The database URL with a relative SQLite path made absolute (the ServerApp runs elsewhere)."""
    from radfed.store import default_database_url

    url = db or default_database_url()
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        url = prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def _supervisor(opts: SuperLinkOptions, reconcile_every: int = 5):
    """The periodic work beside the SuperLink: enrolment sync and connection audit (under
    node authentication) and, every few ticks, marking runs Flower has stopped as failed."""
    from radfed.audit import Registry
    from radfed.store import Store
    from server.clinics import Enrolment
    from server.control import ControlClient, ControlError
    from server.reconcile import Reconciler

    control = ControlClient(
        opts.control,
        opts.cert_paths.ca_cert,
        insecure=opts.insecure,
    )
    store = Store(opts.db)
    enrolment = None if opts.insecure else Enrolment(Registry(store), control)
    reconciler = Reconciler(store)
    state = {"up": False, "last_error": None, "ticks": 0}

    def say(line: str) -> None:
        print(f"radfed: {line}", file=sys.stderr, flush=True)

    def tick() -> None:
        if not state["up"]:
            if reachable(opts.control, timeout=1.0):
                return
            state["up"] = True
        if enrolment is not None:
            problem = enrolment.try_sync()
            if problem and problem != state["last_error"]:
                say(f"enrolment sync: {problem}")
            state["last_error"] = problem
        state["ticks"] += 1
        if state["ticks"] % reconcile_every == 1:
            try:
                for line in reconciler.check(control.runs()):
                    say(f"marked failed: {line}")
            except ControlError as e:
                say(f"run check: {e}")

    return tick


def run_superlink(opts: SuperLinkOptions, every: float = 2.0) -> int:
    """Run the SuperLink in the foreground until Ctrl-C / SIGTERM."""
    cmd = superlink_command(opts)
    check_ports(opts)
    return run_foreground(cmd, superlink_env(opts), tick=_supervisor(opts), every=every)
