"""`coordinator simulate`: radfed's ServerApp and ClientApp on Flower's simulation engine.

Before a real federation a coordinator wants to know which strategy copes with its
clinics' differences (label skew, sites) and what a run costs, without asking any
clinic to start a node. `coordinator simulate` deals generated or consented pooled data
into N virtual clinics (server/virtual_clinics.py, radfed.partitions) and runs the very
ServerApp (server/app.py) and ClientApp (client_node/app.py) of a real run on Flower's
simulation engine: one process, Ray workers as the clinics' ClientApp processes, no
SuperLink, no network. Each virtual clinic reads only its own folder (client_node/
simulation.py gives it its node config). The run is recorded in the same store as a real
one, marked `simulated` (the leaderboard shows "N virtual clinics, PARTITION"); models
are not delivered to virtual clinics.

Flower's public `run_simulation` passes no run config, so the ServerApp is wrapped: the
wrapper fills the run config a `coordinator run` would send and calls server.app.main.
A progress bar follows the rounds through the store; a sampler thread records the peak
memory of the process tree (radfed.tree_memory), which includes Ray's workers.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from client_node.simulation import PARTITIONS_ENV
from radfed.partitions import Partitioning
from radfed.spec import ExperimentSpec
from radfed.store import Store
from radfed.tree_memory import TreeSampler
from server.leaderboard import run_entry
from server.membership import REGISTER_ENV
from server.virtual_clinics import VirtualFederation, generate, prepare


@dataclass
class SimulateOptions:
    """One `coordinator simulate` call (see server/cli.py for each option's meaning)."""

    spec: ExperimentSpec
    clinics: int
    partition: Partitioning
    data: list[Path] = field(default_factory=list)
    generate: str | None = None
    patients: int = 300
    workdir: Path = Path("radfed-simulate")
    db_url: str | None = None
    checkpoints: Path = Path("radfed-simulate/checkpoints")
    cpus_per_clinic: float = 1.0
    seed: int = 0


@dataclass
class RoundClock:
    """When the ServerApp started and when each round's figures reached the store."""

    flwr_run_id: str = ""
    started: float | None = None
    rounds_done_at: list[float] = field(default_factory=list)

    def round_seconds(self) -> list[float]:
        """Wall seconds per round; round 1 also holds the initial evaluation and the
        workers' start (importing torch), so it is the slowest."""
        marks = [self.started or 0.0, *self.rounds_done_at]
        return [round(b - a, 1) for a, b in zip(marks, marks[1:])]


def simulation_server_app(run_config: dict[str, str | int], clock: RoundClock) -> ServerApp:
    """radfed's ServerApp with the run config `coordinator run` would give it."""
    from server.app import main as server_main

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        context.run_config.update(run_config)
        clock.flwr_run_id, clock.started = str(context.run_id), time.monotonic()
        server_main(grid, context)

    return app


def pooled_sites(opts: SimulateOptions, say) -> list[Path]:
    """The `--data` folders, or freshly generated sites (kept for the next call)."""
    if opts.data:
        return [Path(d) for d in opts.data]
    say(f"generating {opts.patients} patients of '{opts.generate}' DICOM (skipped where present)")
    return generate(opts.generate or "demo", opts.workdir / "data", opts.patients, opts.seed)


@contextmanager
def _environment(map_path: Path):
    """The partition map for the Ray workers (they inherit this environment); quiet
    clinic logs; no enrolment register (virtual nodes are nobody's keys)."""
    saved = {k: os.environ.get(k) for k in (PARTITIONS_ENV, REGISTER_ENV, "RADFED_CLINIC_LOG_LEVEL")}
    os.environ[PARTITIONS_ENV] = str(map_path)
    os.environ.pop(REGISTER_ENV, None)
    os.environ.setdefault("RADFED_CLINIC_LOG_LEVEL", "WARNING")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _follow(store: Store, clock: RoundClock, rounds: int, peak, done: threading.Event, console: Console) -> None:
    """Progress bar: rounds recorded, last round's wall time, peak memory of the tree."""
    columns = (
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds  {task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("rounds", total=rounds, note="starting Ray and the ServerApp")
        while True:
            finished = done.wait(1.0)
            if not clock.flwr_run_id:
                if finished:
                    return
                continue
            status = store.run_status(clock.flwr_run_id) or {}
            recorded = int(status.get("rounds_recorded", 0) or 0)
            while len(clock.rounds_done_at) < min(recorded, rounds):
                clock.rounds_done_at.append(time.monotonic())
            last = clock.round_seconds()[-1:] or ["-"]
            bar.update(
                task,
                completed=min(recorded, rounds),
                note=f"last round {last[0]} s, peak memory {peak.total_mb / 1024:.1f} GB",
            )
            if finished:
                return


def run_simulation_here(opts: SimulateOptions, console: Console) -> dict:
    """Prepare the virtual clinics, run the experiment, return a summary (JSON-ready)."""
    from flwr.simulation import run_simulation

    from client_node.app import app as client_app

    if opts.spec.min_clinics > opts.clinics:
        raise ValueError(
            f"the experiment needs min_clinics = {opts.spec.min_clinics}; "
            f"simulate at least that many clinics (--clinics)"
        )
    t0 = time.monotonic()
    sites = pooled_sites(opts, console.print)
    with console.status("reading the pooled data and writing the virtual clinics") as status:
        fed = prepare(
            sites,
            opts.spec,
            opts.clinics,
            opts.partition,
            opts.workdir / "federation",
            seed=opts.seed,
            threads=max(1, int(opts.cpus_per_clinic)),
            progress=lambda text: status.update(text),
        )
    setup_s = time.monotonic() - t0
    console.print(
        f"{fed.describe(opts.partition)}: {fed.n_patients} patients from {fed.n_sites} sites, "
        f"{min(c['patients'] for c in fed.clinics)}-{max(c['patients'] for c in fed.clinics)} "
        f"patients a clinic; partition map {fed.map_path}",
        highlight=False,
    )
    store = Store(opts.db_url)
    clock = RoundClock()
    run_config = {
        "spec": opts.spec.to_json(),
        "database-url": store.url,
        "checkpoint-dir": str(Path(opts.checkpoints).resolve()),
        "holdout": "",
        "simulated": fed.describe(opts.partition),
    }
    backend = {"client_resources": {"num_cpus": opts.cpus_per_clinic, "num_gpus": 0.0}}
    done, error = threading.Event(), ""
    t1 = time.monotonic()
    with _environment(fed.map_path), TreeSampler() as peak:
        follower = threading.Thread(
            target=_follow, args=(store, clock, opts.spec.rounds, peak, done, console), daemon=True
        )
        follower.start()
        try:
            run_simulation(
                server_app=simulation_server_app(run_config, clock),
                client_app=client_app,
                num_supernodes=opts.clinics,
                backend_config=backend,
            )
        except Exception as err:  # noqa: BLE001 - the store says what failed; summarised below
            error = f"{type(err).__name__}: {err}".splitlines()[0]
        finally:
            done.set()
            follower.join(timeout=10)
    return _summary(opts, fed, store, clock, peak.as_dict(), setup_s, time.monotonic() - t1, error)


def _summary(
    opts: SimulateOptions,
    fed: VirtualFederation,
    store: Store,
    clock: RoundClock,
    memory: dict,
    setup_s: float,
    simulation_s: float,
    error: str,
) -> dict:
    status = store.run_status(clock.flwr_run_id) if clock.flwr_run_id else None
    status = status or {}
    entry = run_entry(store, clock.flwr_run_id) if status else None
    recorded = [r.get("duration_s") for r in (entry or {}).get("rounds", []) if r.get("server_round", 0) > 0]
    return {
        "clinics": opts.clinics,
        "partition": str(opts.partition),
        "rounds": opts.spec.rounds,
        "backbone": opts.spec.backbone,
        "image_size": opts.spec.image_size,
        "patients": fed.n_patients,
        "images": sum(c["images"] for c in fed.clinics),
        "flwr_run_id": clock.flwr_run_id,
        "run_id": status.get("run_id"),
        "status": status.get("status", "failed"),
        "error": status.get("error") or error or None,
        "final_auroc": status.get("final_auroc"),
        "setup_s": round(setup_s, 1),
        "simulation_s": round(simulation_s, 1),
        "round_s": clock.round_seconds(),
        "recorded_round_s": [round(d, 1) if d is not None else None for d in recorded],
        "peak_memory": memory,
        "cpus_per_clinic": opts.cpus_per_clinic,
        "cpus": os.cpu_count(),
    }
