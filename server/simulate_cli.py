"""`coordinator simulate`: try an experiment on N virtual clinics before a real federation.

Mounted on the `coordinator` app by server/cli.py; the work is in server/simulate.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from radfed.cli_errors import fail as _fail
from radfed.flower_env import radfed_home

err = Console(stderr=True)


def simulate_command(
    experiment: Annotated[Path, typer.Argument(help="Experiment TOML file (as for `coordinator run`).")],
    clinics: Annotated[int, typer.Option(min=1, help="Number of virtual clinics.")] = 10,
    partition: Annotated[
        str,
        typer.Option(
            help="How patients are dealt into clinics: iid, dirichlet:ALPHA (label skew; 0.1 strong, "
            "100 mild) or by-site (each --data folder kept apart; --clinics a multiple of the sites)."
        ),
    ] = "iid",
    data: Annotated[
        list[Path] | None,
        typer.Option(help="A site's folder of consented pooled DICOM (labels.csv or class folders); repeatable."),
    ] = None,
    generate: Annotated[
        str | None, typer.Option(help="Generate the pooled data instead: demo, nodules or effusion (3 sites).")
    ] = None,
    patients: Annotated[int, typer.Option(min=2, help="Generated patients in all (with --generate).")] = 300,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Folder for generated data and the virtual clinics (default ~/.radfed/simulate)."),
    ] = None,
    checkpoints: Annotated[Path | None, typer.Option(help="Checkpoint folder (default ~/.radfed/checkpoints).")] = None,
    cpus_per_clinic: Annotated[
        float, typer.Option(min=0.1, help="CPU cores Ray gives each ClientApp worker (and its torch threads).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the partition (and of generated data).")] = 0,
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary (times, memory) as JSON.")] = False,
) -> None:
    """Run an experiment on N virtual clinics with Flower's simulation engine (Ray).

    The pooled data (consented `--data` folders, or `--generate`d DICOM) is split by
    patient into N virtual clinics, never one patient's images in two; the same ServerApp
    and ClientApp as `coordinator run` then train on them in this process and Ray
    workers, with no SuperLink and no clinic. The run lands in the store like a real one
    and `coordinator leaderboard` marks it "simulated: N virtual clinics, PARTITION". The
    summary gives the wall time of each round and the peak memory (RSS) of this process
    and its Ray workers. Only data that may be pooled belongs here.

    Examples:

    `coordinator simulate experiment.toml --generate demo --patients 300 --clinics 10`

    `coordinator simulate experiment.toml --generate nodules --clinics 50 --partition dirichlet:0.5`

    `coordinator simulate experiment.toml --data /consented/site-a --data /consented/site-b --clinics 4 --partition by-site`

    `coordinator simulate experiment.toml --generate demo --clinics 100 --patients 400 --json`
    """
    import importlib.util

    from radfed.partitions import PartitionError, parse_partition
    from radfed.spec import SpecError, load_spec
    from radfed.store import StoreError
    from server.run_steps import check_spec
    from server.simulate import SimulateOptions, run_simulation_here

    if importlib.util.find_spec("ray") is None:
        _fail("Flower's simulation engine needs Ray: pip install 'radfed[simulate]'", 2)
    if bool(data) == bool(generate):
        _fail("give the pooled data: --data DIR (repeatable) or --generate demo|nodules|effusion", 2)
    try:
        spec = load_spec(experiment)
        how = parse_partition(partition)
    except (SpecError, PartitionError) as e:
        _fail(str(e), 2)
    check_spec(spec, str(experiment))
    home = radfed_home()
    opts = SimulateOptions(
        spec,
        clinics,
        how,
        list(data or []),
        generate,
        patients,
        (workdir or home / "simulate").resolve(),
        db,
        checkpoints or home / "checkpoints",
        cpus_per_clinic,
        seed,
    )
    try:
        summary = run_simulation_here(opts, err)
    except (ValueError, PartitionError, StoreError, OSError) as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    rounds = ", ".join(f"{s:g}" for s in summary["round_s"]) or "-"
    memory = summary["peak_memory"]
    err.print(
        f"run {summary['flwr_run_id']}: {summary['status']}"
        + (f" ({summary['error']})" if summary["error"] else "")
        + f"; pooled AUROC {summary['final_auroc'] if summary['final_auroc'] is not None else '-'}"
        f"\nwall time per round: {rounds} s (setup {summary['setup_s']:g} s)"
        f"\npeak memory: {memory['total_mb']} MB in all ({memory['driver_mb']} MB this process, "
        f"{memory['children_mb']} MB in {memory['processes']} Ray processes, RSS summed)",
        highlight=False,
        soft_wrap=True,
    )
    if as_json:
        print(json.dumps(summary))
    if summary["status"] != "completed":
        raise typer.Exit(1)


def mount(app: typer.Typer) -> None:
    """Add `coordinator simulate` to the coordinator CLI."""
    app.command("simulate")(simulate_command)
