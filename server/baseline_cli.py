"""`coordinator baseline`: the centralised baseline of an experiment, recorded for the leaderboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from radfed.cli_errors import fail as _fail
from radfed.reply import format_auroc

out = Console()
err = Console(stderr=True)


def baseline(
    experiment: Annotated[Path, typer.Argument(help="Experiment TOML file (the federated run's).")],
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            help="A clinic's data folder, DIR or NAME=DIR (NAME as its client-node --name; "
            "default: the folder's name). Repeat for each clinic.",
        ),
    ],
    holdout: Annotated[
        str | None,
        typer.Option(help="Leave this clinic out of training and evaluate on it (compare with `run --holdout`)."),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes decoding DICOM.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Centralised baseline: FOR GENERATED OR CONSENTED DATA ONLY (it pools the clinics' images).

    Trains the experiment's model with the same weights, freeze policy, seed and budget
    (rounds x local_epochs epochs over the same training patients) on the union of the
    clinics' training splits, evaluates on each clinic's validation split and pooled
    (AUROC with 95 % CI over patients, sensitivity/specificity at Youden's threshold,
    ECE), and records it so the leaderboard shows federated ÷ centralised.

    Example: `coordinator baseline experiment.toml --data demo/clinic-1 --data demo/clinic-2 --data demo/clinic-3`
    """
    from radfed.spec import SpecError, load_spec
    from server.baseline import BaselineError, check_holdout, clinic_folders

    try:
        spec = load_spec(experiment)
        folders = clinic_folders(data)
        check_holdout(folders, holdout)
    except (SpecError, BaselineError) as e:
        _fail(str(e), 2)
    from radfed.data import DataError
    from radfed.models import WeightsError
    from radfed.store import Store, StoreError
    from server.baseline import run_baseline

    try:
        store = Store(db)
    except StoreError as e:
        _fail(str(e))
    steps = len(folders) + spec.rounds
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("centralised baseline", total=steps, note="loading clinics")
            result = run_baseline(
                spec, folders, holdout, workers, step=lambda note: bar.update(task, advance=1, note=note)
            )
    except (BaselineError, DataError, WeightsError) as e:
        _fail(str(e))
    weights = "random" if spec.weights == "random" else Path(spec.weights).name
    with store:
        exp_id = store.create_experiment(spec.name, spec.to_json(), spec.backbone, weights, "centralized")
        baseline_id = store.record_baseline(exp_id, result.pooled, result.clinics, holdout, result.seconds)
    if as_json:
        print(
            json.dumps(
                {
                    "baseline_id": baseline_id,
                    "experiment": spec.name,
                    "holdout": holdout,
                    "pooled": result.pooled,
                    "clinics": result.clinics,
                    "seconds": round(result.seconds, 1),
                    "seed": spec.seed,
                }
            )
        )
        return
    out.print(_table(result.pooled, result.clinics, holdout))
    err.print(f"recorded baseline {baseline_id} of {spec.name} in {store.safe_url}", highlight=False)


def _table(pooled: dict[str, Any], clinics: dict[str, dict[str, Any]], holdout: str | None) -> Table:
    table = Table(title="centralised baseline (validation splits; CI over patients)")
    for col in ("clinic", "AUROC [95% CI]", "sensitivity", "specificity", "threshold", "ECE", "images", "patients"):
        table.add_column(col, justify="left" if col == "clinic" else "right")

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows = [(f"{name} (held out)" if name == holdout else name, q) for name, q in clinics.items()]
    for name, q in [*rows, ("all (pooled)", pooled)]:
        table.add_row(
            name,
            format_auroc(q.get("auroc"), q.get("auroc_low"), q.get("auroc_high")),
            num(q.get("sensitivity")),
            num(q.get("specificity")),
            num(q.get("threshold")),
            num(q.get("ece")),
            str(q.get("images")),
            str(q.get("patients")),
        )
    return table
