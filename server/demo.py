"""`coordinator demo`: a whole federation on one machine, as real processes on 127.0.0.1.

Writes generated DICOM for each clinic (unless already there), starts `coordinator
superlink` and one `client-node start` per clinic, runs one experiment through
`flwr run`, prints the leaderboard, and stops every process it started, also on Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from radfed.processes import free_port, reachable, stop_all
from radfed.spec import ExperimentSpec, spec_to_toml


@dataclass
class DemoOptions:
    clinics: int = 3
    rounds: int = 3
    workdir: Path = Path("radfed-demo")
    patients: int = 60
    image_size: int = 64
    backbone: str = "resnet18"
    seed: int = 0  # generated clinics and experiment (initialisation, split, shuffles)


def demo_spec(opts: DemoOptions) -> ExperimentSpec:
    """The experiment the demo runs: random-init backbone, full fine-tune, FedAvg, and the
    spec's default training recipe (chosen by bench/recipe.py; resnet18 rather than a
    random-init resnet50: on 2 cores it learns more per minute from 60 patients a clinic)."""
    return ExperimentSpec(
        name=f"demo-{opts.backbone}-{opts.clinics}clinics",
        backbone=opts.backbone,
        image_size=opts.image_size,
        rounds=opts.rounds,
        local_epochs=2,
        batch_size=16,
        freeze="none",
        strategy="fedavg",
        min_clinics=opts.clinics,
        clinic_timeout=180.0,
        seed=opts.seed,
    )


def _script(name: str) -> list[str]:
    """A radfed console script of this environment, or `python -m` as a fallback."""
    path = Path(sys.executable).parent / name
    module = {"coordinator": "server.cli", "client-node": "client_node.cli"}[name]
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_reachable(address: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while reachable(address, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"SuperLink did not start on {address}; see {log}")
        time.sleep(0.3)


def enrol_demo_clinics(work: Path, names: list[str], address: str, store) -> tuple:
    """A CA for the demo (made once per work folder) and one enrolment bundle per clinic."""
    from radfed.audit import Registry
    from radfed.pki import CertPaths, init_certs
    from server.clinics import add_clinic

    certs = CertPaths(work / "pki")
    if not certs.complete():
        init_certs(certs.folder, force=True)
    registry = Registry(store)
    bundles = []
    for name in names:
        bundle = work / "bundles" / f"{name}.radfed"
        if registry.clinic(name) is None or not bundle.is_file():
            if registry.clinic(name) is not None:
                raise RuntimeError(
                    f"clinic {name} is enrolled in {store.safe_url} but its bundle "
                    f"{bundle} is gone; use a fresh --workdir"
                )
            bundle.parent.mkdir(parents=True, exist_ok=True)
            add_clinic(registry, name, address, certs, bundle)
        bundles.append(bundle)
    return certs, bundles


def wait_registered(address: str, ca_cert: Path, count: int, timeout: float = 60) -> None:
    """Block until the SuperLink's supervisor has registered `count` clinic keys."""
    from server.control import ControlClient, ControlError

    control = ControlClient(address, ca_cert)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(control.nodes()) >= count:
                return
        except ControlError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the SuperLink did not register {count} clinic keys within {timeout:g} s")
        time.sleep(0.5)


def run_demo(opts: DemoOptions, console: Console) -> int:
    """Run the demo; returns the exit code (0 only if the run completed)."""
    from radfed.demo_data import write_federation
    from radfed.store import Store
    from server.clinics import EnrolmentError
    from server.launch import Connection, LaunchError, follow, submit
    from server.leaderboard import leaderboard_table, result_line, run_entry, warning_lines

    work = opts.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with console.status("writing generated DICOM clinics (skipped where present)"):
        folders = write_federation(work / "data", opts.clinics, n_patients=opts.patients, seed=opts.seed)
    db_url = f"sqlite:///{work / 'radfed.db'}"
    store = Store(db_url)
    port, control_port = free_port(), free_port()
    address, control = f"127.0.0.1:{port}", f"127.0.0.1:{control_port}"
    threads = max(1, (os.cpu_count() or 1) // opts.clinics)
    procs: list[subprocess.Popen] = []
    try:
        names = [f"clinic-{i}" for i in range(1, len(folders) + 1)]
        certs, bundles = enrol_demo_clinics(work, names, address, store)
        console.print(
            f"TLS and node authentication on {address}: a fresh CA in {certs.folder}, {len(bundles)} enrolled clinics"
        )
        link_log = work / "logs" / "superlink.log"
        procs.append(
            _spawn(
                _script("coordinator")
                + [
                    "superlink",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--control-port",
                    str(control_port),
                    "--certs",
                    str(certs.folder),
                    "--db",
                    db_url,
                    "--flwr-home",
                    str(work / "flwr" / "superlink"),
                ],
                link_log,
            )
        )
        _wait_reachable(address, procs[0], link_log)
        _wait_reachable(control, procs[0], link_log)
        wait_registered(control, certs.ca_cert, len(names))
        for name, folder, bundle in zip(names, folders, bundles):
            procs.append(
                _spawn(
                    _script("client-node")
                    + [
                        "start",
                        "--bundle",
                        str(bundle),
                        "--superlink",
                        address,
                        "--data",
                        str(folder),
                        "--threads",
                        str(threads),
                        "--home",
                        str(work / "nodes"),
                    ],
                    work / "logs" / f"{name}.log",
                )
            )
        spec = demo_spec(opts)
        (work / "experiment.toml").write_text(spec_to_toml(spec))
        conn = Connection(control, work / "flwr" / "cli", root_certificates=certs.ca_cert)
        run_id = submit(conn, spec, db_url, work / "checkpoints")
        console.print(
            f"run {run_id}: {opts.clinics} clinics x {opts.rounds} rounds, {spec.backbone} "
            f"at {spec.image_size}px (logs in {work / 'logs'})"
        )
        status = follow(conn, store, run_id, spec.rounds)
    except (LaunchError, RuntimeError, EnrolmentError) as e:
        console.print(f"[bold red]error:[/] {e}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping every demo process[/]")
        return 130
    finally:
        stop_all(procs)
    console.print(leaderboard_table(store))
    entry = run_entry(store, run_id)
    if entry is not None:
        console.print(f"run {run_id}: {result_line(entry)}", soft_wrap=True, highlight=False)
        for line in warning_lines(entry):
            console.print(line, style="yellow", soft_wrap=True, highlight=False)
    console.print(
        f"database: {db_url}\ncheckpoints: {work / 'checkpoints'}\n"
        f"leaderboard JSON: coordinator leaderboard --db {db_url} --json\n"
        f"dashboard: dashboard --db {db_url}\n"
        f"demo took {time.monotonic() - started:.0f} s",
        soft_wrap=True,
        highlight=False,
    )
    if status.get("status") != "completed":
        console.print(f"[bold red]error:[/] run {run_id} failed: {status.get('error')}")
        return 1
    return 0
