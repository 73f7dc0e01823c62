"""`coordinator sweep`: the paper's 24 scenarios for a task, run one after another.

Mounted on the `coordinator` app by server/cli.py; the grid and grouping live in
server/sweep.py, submission and following in server/launch.py (as `coordinator run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radfed.cli_errors import fail as _fail

out = Console()
err = Console(stderr=True)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def scenario_table(rows: list[dict]) -> Table:
    """The expanded sweep, one row per experiment, in run order."""
    table = Table(title=f"sweep: {len(rows)} scenarios", caption="experiment name: SWEEP-SOURCE-BACKBONE-FREEZE-lrLR")
    for col in ("#", "source", "backbone", "freeze", "lr", "size", "weights"):
        table.add_column(col, justify="right" if col in ("#", "lr", "size") else "left", overflow="fold")
    for i, row in enumerate(rows, start=1):
        table.add_row(
            str(i),
            row["source"],
            row["backbone"],
            row["freeze"],
            f"{row['learning_rate']:g}",
            str(row["image_size"]),
            Path(row["weights"]).name,
        )
    return table


def sweep_command(
    task: Annotated[
        Path, typer.Argument(help="Sweep task TOML: [sweep] name and weight files, [experiment] base keys.")
    ],
    source: Annotated[str, typer.Option(help="Weight source to sweep ([sweep.weights.SOURCE]).")] = "radimagenet",
    compare: Annotated[str | None, typer.Option(help="A second weight source run the same way, e.g. imagenet.")] = None,
    backbones: Annotated[str | None, typer.Option(help="Only these backbones, comma-separated.")] = None,
    freeze: Annotated[
        str | None, typer.Option(help="Only scenarios with this freeze policy: none, all or top-k.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Run only the first N scenarios.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the scenario table and exit.")] = False,
    control: Annotated[
        str, typer.Option(help="The SuperLink's control door HOST:PORT (`coordinator superlink` prints it).")
    ] = "127.0.0.1:9093",
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
    ] = None,
    checkpoints: Annotated[Path | None, typer.Option(help="Checkpoint folder (default ~/.radfed/checkpoints).")] = None,
    insecure: Annotated[bool, typer.Option(help="Plaintext connection to a loopback SuperLink.")] = False,
    root_certificates: Annotated[
        Path | None, typer.Option(help="CA certificate of the SuperLink (default ~/.radfed/pki/ca.crt).")
    ] = None,
    credential: Annotated[
        Path | None,
        typer.Option(
            help="Coordinator credential (NAME.pem from `coordinator certs credential`) for a remote control door."
        ),
    ] = None,
) -> None:
    """Run the RadImageNet paper's scenarios for a task (4 backbones x 6 = 24 per weight source).

    Per backbone: unfreeze all at lr 1e-3 and 1e-4; freeze all, and unfreeze the top 10
    layers, at lr 1e-2 and 1e-3. Experiments run in order, each as `coordinator run`
    would; a failed one is recorded and the sweep goes on. The leaderboard then shows
    mean ± sd AUROC per backbone and weight source.

    Example: `coordinator sweep pneumonia.toml --compare imagenet --control 127.0.0.1:9093`
    (add `--dry-run` to only print the scenario table, `--backbones resnet50 --limit 2` for a subset)
    """
    from server.sweep import SweepError, expand, load_task
    from strategies import StrategyError, check_strategy

    sources = [source] + ([compare] if compare and compare != source else [])
    try:
        scenarios = expand(load_task(task), sources, _split(backbones), freeze, limit)
        for scenario in scenarios[:1]:
            check_strategy(scenario.spec.strategy, scenario.spec.strategy_params)
    except SweepError as e:
        _fail(str(e), 2)
    except StrategyError as e:
        _fail(f"{task}: {e}", 2)
    out.print(scenario_table([s.row() for s in scenarios]))
    if dry_run:
        return
    if not insecure and not root_certificates:  # as `coordinator run`: the coordinator's own CA
        from server.superlink import default_certs

        root_certificates = default_certs() / "ca.crt"
        if not root_certificates.is_file():
            _fail(
                "pass --root-certificates CA.crt for a TLS SuperLink (none in ~/.radfed/pki), "
                "or --insecure for a loopback one",
                2,
            )
    raise typer.Exit(_run_all(scenarios, control, db, checkpoints, insecure, root_certificates, credential))


def _run_all(
    scenarios: list,
    control: str,
    db: str | None,
    checkpoints: Path | None,
    insecure: bool,
    root_certificates: Path | None,
    credential: Path | None = None,
) -> int:
    """Submit and follow each scenario; 0 when all completed, 1 otherwise."""
    from radfed.flower_env import radfed_home
    from radfed.results import summary
    from radfed.spec import spec_to_toml
    from radfed.store import Store, StoreError
    from server.launch import Connection, LaunchError, follow, stop, submit
    from server.leaderboard import sweep_table

    try:
        store = Store(db)
    except StoreError as e:
        _fail(str(e))
    conn = Connection(control, radfed_home() / "flwr-cli", insecure, root_certificates, credential)
    ckpt = checkpoints or radfed_home() / "checkpoints"
    sweep = scenarios[0].spec.sweep
    folder = radfed_home() / "sweeps" / sweep
    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for i, scenario in enumerate(scenarios, start=1):
        spec = scenario.spec
        (folder / f"{spec.name}.toml").write_text(spec_to_toml(spec))  # what ran, editable
        try:
            run_id = submit(conn, spec, store.url, ckpt)
        except LaunchError as e:
            _fail(f"scenario {i}/{len(scenarios)} ({spec.name}): {e}")
        err.print(f"[{i}/{len(scenarios)}] submitted run {run_id} ({spec.name})", highlight=False)
        try:
            status = follow(conn, store, run_id, spec.rounds)
        except KeyboardInterrupt:
            stop(conn, run_id)
            _fail(
                f"interrupted; asked the SuperLink to stop run {run_id}; "
                f"{i - 1} of {len(scenarios)} scenarios finished",
                130,
            )
        if status.get("status") != "completed":
            failed += 1
            err.print(
                f"[{i}/{len(scenarios)}] run {run_id} failed: {status.get('error') or 'unknown reason'}",
                highlight=False,
            )
    out.print(sweep_table(summary(store.leaderboard(), sweep), title=f"sweep {sweep}"))
    if failed:
        err.print(f"{failed} of {len(scenarios)} scenarios failed; see `coordinator leaderboard`", highlight=False)
    return 1 if failed else 0


def mount(app: typer.Typer) -> None:
    """Add `coordinator sweep` to the coordinator CLI."""
    app.command("sweep")(sweep_command)
