"""`coordinator`: run the SuperLink, launch experiments, read the leaderboard.

Examples:

    coordinator demo --clinics 3 --rounds 3
    coordinator certs init --hosts coordinator.example.org
    coordinator clinic add clinic-a --superlink coordinator.example.org:9092
    coordinator superlink --host 0.0.0.0 --port 9092
    coordinator run experiment.toml                      (on the coordinator: the control door 127.0.0.1:9093)
    coordinator leaderboard --json
    coordinator export 8577920735297922023 --format onnx     (the selected round, with its model card)
    coordinator baseline experiment.toml --data clinic-1 --data clinic-2   (generated/consented data only)
    coordinator researcher add alice                     (a dashboard account; its secret is printed once)
    coordinator queue approve 3 --run                    (an experiment a researcher submitted)
    coordinator simulate experiment.toml --generate demo --clinics 100   (virtual clinics, Flower's simulation engine)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from radfed.cli_errors import fail as _fail
from radfed.flower_env import radfed_home

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")


def _mount_subcommands() -> None:
    from server import export_cli, queue_cli, researcher_cli, security_cli, simulate_cli, sweep_cli
    from server.weights_cli import weights_app

    app.add_typer(weights_app, name="weights", help="Inspect weight files before an experiment uses them.")
    security_cli.mount(app)
    app.command("baseline")(__import__("server.baseline_cli", fromlist=["baseline"]).baseline)
    sweep_cli.mount(app)
    export_cli.mount(app)
    researcher_cli.mount(app)
    queue_cli.mount(app)
    simulate_cli.mount(app)


out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
]


def _store(db: str | None):
    from radfed.store import Store, StoreError

    try:
        return Store(db)
    except StoreError as e:
        _fail(str(e))


@app.command()
def superlink(
    host: Annotated[str, typer.Option(help="Address of the clinics' door (0.0.0.0 for other machines).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the clinics' door: the Fleet API only.")] = 9092,
    control_port: Annotated[
        int | None,
        typer.Option(help="Port of the control door on 127.0.0.1: Control and Runtime APIs (default: --port + 1)."),
    ] = None,
    remote_control: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of a control door for other machines; mutual TLS: clients need a "
            "`coordinator certs credential`."
        ),
    ] = None,
    insecure: Annotated[bool, typer.Option(help="Plaintext, no node authentication; loopback only.")] = False,
    certs: Annotated[
        Path | None, typer.Option(help="Folder from `coordinator certs init` (default ~/.radfed/pki).")
    ] = None,
    database: Annotated[
        Path | None,
        typer.Option(help="SuperLink state file: nodes and runs survive a restart (default: state.db in --flwr-home)."),
    ] = None,
    flwr_home: Annotated[Path | None, typer.Option(help="Flower's home for this SuperLink.")] = None,
    approve_app: Annotated[
        list[str] | None, typer.Option(help="Also run ServerApp bundles with this SHA-256; repeatable.")
    ] = None,
    sync_every: Annotated[
        float, typer.Option(hidden=True, min=0.2, help="Seconds between enrolment syncs (tests).")
    ] = 2.0,
    db: DbOption = None,
) -> None:
    """Run the Flower SuperLink clinics connect to (foreground; Ctrl-C stops it).

    Two doors: clinics dial `--host:--port`, which serves the Fleet API only; the
    coordinator's commands (`coordinator run`, `flwr`) use the control door on
    127.0.0.1:`--control-port`, or from another machine `--remote-control` with a
    coordinator credential (mutual TLS). TLS and SuperNode authentication by default:
    only clinics enrolled with `coordinator clinic add` can join; their keys are
    (re)registered at start, unknown keys are removed and audited, revocations apply
    within seconds. Only this installation's radfed ServerApp runs.

    Examples:

    `coordinator superlink --host 0.0.0.0 --port 9092`

    `coordinator superlink --host 0.0.0.0 --port 9092 --control-port 9093 --database /var/lib/radfed/superlink.db`

    `coordinator superlink --host 0.0.0.0 --port 9092 --remote-control 10.0.0.5:9094`
    """
    from server.superlink import SuperLinkError, SuperLinkOptions, check_ports, run_superlink, superlink_command

    opts = SuperLinkOptions(
        host,
        port,
        insecure,
        certs,
        database,
        flwr_home or radfed_home() / "superlink",
        db,
        control_port,
        list(approve_app or []),
        remote_control,
    )
    try:
        superlink_command(opts)
        check_ports(opts)
    except SuperLinkError as e:
        _fail(str(e))
    if insecure:
        err.print(f"[yellow]warning:[/] SuperLink on {host}:{port} WITHOUT TLS (loopback demo only)")
    remote = f"; remote control door {remote_control} (mutual TLS)" if remote_control else ""
    err.print(f"clinics' door {opts.address} (Fleet API only); control door {opts.control}{remote}", highlight=False)
    raise typer.Exit(run_superlink(opts, every=sync_every))


@app.command()
def run(
    experiment: Annotated[
        Path | None, typer.Argument(help="Experiment TOML file (not with --attach/--resume).")
    ] = None,
    control: Annotated[
        str, typer.Option(help="The SuperLink's control door HOST:PORT (`coordinator superlink` prints it).")
    ] = "127.0.0.1:9093",
    db: DbOption = None,
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
    holdout: Annotated[
        str | None,
        typer.Option(
            help="Leave-one-clinic-out: train without this clinic (its --name), then evaluate the final model there."
        ),
    ] = None,
    attach: Annotated[str | None, typer.Option(help="Follow a run already submitted (its run id).")] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Continue a failed or interrupted run (its run id) from its last intact checkpoint."),
    ] = None,
) -> None:
    """Launch a federated experiment and show its rounds until it finishes.

    Examples:

    `coordinator run experiment.toml --control 127.0.0.1:9093`

    `coordinator run experiment.toml --holdout clinic-3`   (leave one clinic out)

    `coordinator run --attach 8577920735297922023`   (follow a run again)

    `coordinator run --resume 8577920735297922023`   (continue after a crash, from its last checkpoint)
    """
    from server.run_steps import connection, follow_to_end, report, start

    if sum(x is not None for x in (experiment, attach, resume)) != 1:
        _fail("give an experiment file, or --attach RUN, or --resume RUN (one of them)", 2)
    conn = connection(control, insecure, root_certificates, credential)
    store = _store(db)
    if attach:
        known = store.run_status(attach)
        if known is None:
            _fail(f"no run {attach} in {store.url}; `coordinator leaderboard` lists them", 2)
        run_id, rounds = attach, int(known["rounds_planned"])
    else:
        spec, extra, rounds = _submission(experiment, resume, store, holdout)
        what = f"continuing run {resume} after round {extra['resume-round']} as" if resume else "submitted"
        run_id = start(
            conn,
            store,
            spec,
            checkpoints,
            holdout=extra.pop("holdout", (holdout or "").strip()),
            extra=extra,
            what=what,
        )
    report(store, follow_to_end(conn, store, run_id, rounds), run_id)


def _submission(experiment: Path | None, resume: str | None, store, holdout: str | None):
    """(spec, extra run config, rounds) of a new run or of a resumed one; exits on a bad spec."""
    from radfed.spec import ExperimentSpec, SpecError, load_spec
    from server.resume import ResumeError, resume_point
    from server.run_steps import check_spec

    if resume:
        if holdout:
            _fail("--holdout comes from the resumed run; leave it out with --resume", 2)
        try:
            point = resume_point(store, resume)
        except ResumeError as e:
            _fail(str(e), 2)
        return (
            ExperimentSpec.from_json(point.spec_json),
            {**point.run_config(), "holdout": point.holdout},
            point.rounds_planned,
        )
    try:
        spec = load_spec(experiment)  # type: ignore[arg-type]
    except SpecError as e:
        _fail(str(e), 2)
    check_spec(spec, str(experiment))
    return spec, {}, spec.rounds


@app.command()
def leaderboard(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON with per-round and per-clinic results.")] = False,
) -> None:
    """Experiments ranked by pooled AUROC (final model, all clinics' validation patients).

    Example: `coordinator leaderboard --db sqlite:////tmp/radfed.db --json`
    """
    from server.leaderboard import leaderboard_json, leaderboard_table

    store = _store(db)
    if as_json:
        print(leaderboard_json(store))
    else:
        out.print(leaderboard_table(store))


@app.command("strategies")
def list_strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable: {strategies, privacy}.")] = False,
) -> None:
    """Every aggregation strategy and differential-privacy mode an experiment can name.

    Example: `coordinator strategies --json`
    """
    import json

    from rich.table import Table

    from strategies import describe, describe_privacy

    rows, modes = describe(), describe_privacy()
    if as_json:
        print(json.dumps({"strategies": rows, "privacy": modes}, indent=2))
        return
    table = Table(title="strategies (spec: strategy = NAME, strategy_params = { ... })")
    for col in ("name", "Flower class", "what it does", "parameters (default)"):
        table.add_column(col)
    for row in rows:
        params = ", ".join(f"{k}={v['default']}" for k, v in row["params"].items())
        table.add_row(row["name"], row["flower_class"], row["summary"], params)
    out.print(table)
    table = Table(title="differential privacy (spec: [experiment.privacy] mode = MODE, ...)")
    for col in ("mode", "Flower class", "what it does", "parameters (default)"):
        table.add_column(col)
    for row in modes:
        params = ", ".join(f"{k}={v['default']}" for k, v in row["params"].items())
        table.add_row(row["mode"], row["flower_class"] or "-", row["summary"], params)
    out.print(table)


@app.command()
def demo(
    clinics: Annotated[int, typer.Option(min=1, max=8, help="Number of simulated clinics.")] = 3,
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 3,
    workdir: Annotated[Path, typer.Option(help="Folder for data, database, checkpoints, logs.")] = Path("radfed-demo"),
    patients: Annotated[int, typer.Option(min=8, help="Fake patients per clinic.")] = 60,
    image_size: Annotated[int, typer.Option(help="Model input size.")] = 64,
    backbone: Annotated[str, typer.Option(help="Backbone architecture.")] = "resnet18",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the generated clinics and of the experiment.")] = 0,
) -> None:
    """The whole federation on this machine: generated DICOM, SuperLink, clinics, one run.

    Example: `coordinator demo --clinics 3 --rounds 3 --workdir ./radfed-demo`
    """
    from server.demo import DemoOptions, run_demo

    code = run_demo(DemoOptions(clinics, rounds, workdir, patients, image_size, backbone, seed), out)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


_mount_subcommands()


if __name__ == "__main__":
    main()
