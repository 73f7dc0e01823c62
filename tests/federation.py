"""Real processes for end-to-end tests: `coordinator superlink` and `client-node start`.

Started through radfed's own CLIs, on 127.0.0.1 with free ports, and always stopped
(with every descendant) by the fixtures that use them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from radfed.processes import free_port, reachable, spawn_bound, stop_all

ROOT = Path(__file__).resolve().parent.parent


def cli(module: str, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a radfed CLI (`server.cli`, `client_node.cli`, ...) to completion."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or os.environ.copy(),
        timeout=timeout,
    )


def spawn(module: str, *args: str, log: Path) -> subprocess.Popen:
    """Start a radfed CLI in the background, output to `log`.

    Bound to this process (parent-death signal): if a pytest worker is killed before its
    fixtures' teardown (Ctrl-C of a parallel run), its federation does not live on."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return spawn_bound(
            [sys.executable, "-m", module, *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )


@contextmanager
def secure_federation(work: Path):
    """A TLS SuperLink with node authentication and a small generated clinic in work/data."""
    from radfed.demo_data import write_clinic

    federation = Federation(work, secure=True)
    federation.start_superlink()
    write_clinic(work / "data", clinic_index=0, n_patients=4, prevalence=0.5)
    try:
        yield federation
    finally:
        federation.close()


class Federation:
    """A SuperLink and clinics on loopback; `close()` stops them all.

    `secure=True`: TLS with a fresh CA and SuperNode authentication, clinics enrolled
    with `coordinator clinic add` (as in production); otherwise plaintext (faster to set up).
    """

    def __init__(self, work: Path, secure: bool = False):
        self.work = work
        self.secure = secure
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"  # the clinics' door (Fleet API only)
        self.control_port = free_port()
        self.control = f"127.0.0.1:{self.control_port}"  # the coordinator's door
        self.procs: list[subprocess.Popen] = []
        self.db = f"sqlite:///{work / 'radfed.db'}"
        self.certs = work / "pki"
        self.cert_hosts: list[str] | None = None  # names in the SuperLink certificate (default loopback)

    def start_superlink(self, *extra: str) -> None:
        log = self.work / "logs" / "superlink.log"
        if self.secure:
            from radfed.pki import init_certs

            init_certs(self.certs, self.cert_hosts, force=True)
            mode = ["--certs", str(self.certs), "--db", self.db]
        else:
            mode = ["--insecure"]
        proc = spawn(
            "server.cli",
            "superlink",
            *mode,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--control-port",
            str(self.control_port),
            "--flwr-home",
            str(self.work / "flwr-link"),
            *extra,
            log=log,
        )
        self.procs.append(proc)
        self.superlink = proc
        deadline = time.monotonic() + 180  # a loaded 2-core machine starts it slowly
        while reachable(self.address, timeout=1.0) or reachable(self.control, timeout=1.0):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "SuperLink did not open its port"
            time.sleep(0.3)

    def enrol(self, name: str) -> Path:
        """`coordinator clinic add NAME`: the clinic's bundle (key registered by the supervisor)."""
        bundle = self.work / "bundles" / f"{name}.radfed"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        proc = cli(
            "server.cli",
            "clinic",
            "add",
            name,
            "--superlink",
            self.address,
            "--out",
            str(bundle),
            "--certs",
            str(self.certs),
            "--db",
            self.db,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return bundle

    def node_status(self) -> dict[int, str]:
        """The SuperLink's view of every registered node key (Control API)."""
        from server.control import ControlClient

        return ControlClient(self.control, self.certs / "ca.crt").nodes()

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.logs()}"
            time.sleep(0.5)

    def start_clinic(
        self, name: str, data: Path, fault: str = "", bundle: Path | None = None, *extra: str
    ) -> subprocess.Popen:
        options = ["--fault", fault] if fault else []
        if self.secure:
            target = ["--bundle", str(bundle or self.work / "bundles" / f"{name}.radfed")]
        else:
            target = ["--superlink", self.address, "--insecure", "--name", name]
        proc = spawn(
            "client_node.cli",
            "start",
            *target,
            "--data",
            str(data),
            "--threads",
            "1",
            "--home",
            str(self.work / "nodes"),
            *options,
            *extra,
            log=self.work / "logs" / f"{name}.log",
        )
        self.procs.append(proc)
        return proc

    def track(self, proc: subprocess.Popen) -> subprocess.Popen:
        """Stop `proc` (e.g. a background `coordinator run`) with the federation."""
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted((self.work / "logs").glob("*.log")))

    def all_pids(self) -> list[int]:
        from radfed.processes import descendants

        return [pid for p in self.procs for pid in [p.pid, *descendants(p.pid)]]

    def close(self) -> None:
        stop_all(self.procs)
