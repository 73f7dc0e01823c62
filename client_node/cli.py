"""`client-node`: what a clinic's IT admin runs. Data stays here; only weights leave.

Examples:

    client-node demo-data ./clinic-a
    client-node check-data ./clinic-a
    client-node enroll clinic-a.radfed
    client-node start --data /pacs/export
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from client_node.node import NodeError, NodeOptions, check, run_supernode
from radfed.cli_errors import fail as _fail

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  rich_markup_mode="markdown")
err = Console(stderr=True)


@app.command()
def start(
    data: Annotated[Path, typer.Option(help="Folder with this clinic's DICOM files and labels.csv.")],
    bundle: Annotated[Optional[Path], typer.Option(help="Enrolment bundle from the coordinator (installs it).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Which enrolled clinic to run (default: the only one).")] = None,
    superlink: Annotated[Optional[str], typer.Option(help="SuperLink HOST:PORT (default: from the bundle).")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Label manifest CSV (default DATA/labels.csv).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where preprocessed images are cached.")] = None,
    insecure: Annotated[bool, typer.Option(help="Plaintext, no node key (loopback demo SuperLinks only).")] = False,
    approve_app: Annotated[Optional[list[str]], typer.Option(help="Also run app bundles with this SHA-256; repeatable.")] = None,
    local_port: Annotated[int, typer.Option(help="Port of the node's local ClientApp API (0: any free).")] = 0,
    isolation: Annotated[str, typer.Option(help="worker: one warm ClientApp process (fast); subprocess: Flower's process per message.")] = "worker",
    threads: Annotated[int, typer.Option(help="CPU threads for training (0: all cores).")] = 0,
    workers: Annotated[int, typer.Option(help="Processes decoding DICOM in parallel.")] = 1,
    home: Annotated[Optional[Path], typer.Option(help="Folder for node state (default ~/.radfed/nodes).")] = None,
    fault: Annotated[str, typer.Option(hidden=True, help="TEST ONLY: corrupt updates ('nan' or 'scale').")] = "",
) -> None:
    """Join a federation: start this clinic's Flower SuperNode on its own data.

    Connects over TLS with the clinic's enrolled node key; checks first that the
    SuperLink is reachable and its certificate chains to the bundle's CA. Only the
    radfed app bundle of this installation runs here (plus any --approve-app hash).
    What leaves the clinic is logged to NODE_HOME/outbox.jsonl.

    Example: `client-node start --bundle clinic-a.radfed --data /pacs/export`
    """
    opts = NodeOptions(superlink, data, name, labels, cache_dir, insecure, bundle,
                       local_port, threads, workers, home, fault, list(approve_app or []), isolation)
    if isolation not in ("worker", "subprocess"):
        _fail(f"--isolation must be worker or subprocess, not {isolation!r}", 2)
    try:
        opts = check(opts)
    except NodeError as e:
        _fail(str(e))
    err.print(f"clinic [bold]{opts.name}[/] joining {opts.superlink} with data {data}"
              f"{' (PLAINTEXT)' if insecure else ''}", highlight=False)
    code = run_supernode(opts, report=lambda line: err.print(f"[bold red]error:[/] {line}",
                                                             highlight=False, soft_wrap=True))
    raise typer.Exit(code)


@app.command()
def enroll(
    bundle: Annotated[Path, typer.Argument(help="The enrolment bundle (.radfed) from the coordinator.")],
    home: Annotated[Optional[Path], typer.Option(help="Folder for node state (default ~/.radfed/nodes).")] = None,
) -> None:
    """Verify an enrolment bundle and install it (CA, node key 0600) for `client-node start`.

    Example: `client-node enroll clinic-a.radfed` then `client-node start --data /pacs/export`
    """
    from client_node.node import enroll as install

    try:
        clinic, folder = install(bundle, home)
    except NodeError as e:
        _fail(str(e))
    err.print(f"enrolled as clinic [bold]{clinic}[/] ({folder}); the bundle file can now be deleted",
              highlight=False, soft_wrap=True)


@app.command("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="Folder to write the clinic's files into.")],
    patients: Annotated[int, typer.Option(help="Number of fake patients.")] = 60,
    prevalence: Annotated[float, typer.Option(help="Fraction of patients with the finding.")] = 0.5,
    clinic_index: Annotated[int, typer.Option(help="Which clinic style to imitate (sizes, bits, MONOCHROME1...).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write generated chest-radiograph DICOM files and labels.csv (fake patients only).

    Example: `client-node demo-data ./clinic-a --patients 60 --prevalence 0.3`
    """
    from radfed.demo_data import write_clinic

    summary = write_clinic(directory, clinic_index=clinic_index, n_patients=patients,
                           prevalence=prevalence, seed=seed)
    err.print(f"wrote demo clinic to {directory}: {json.dumps(summary, default=str)}", highlight=False)


@app.command("check-data")
def check_data(
    directory: Annotated[Path, typer.Argument(help="The clinic's DICOM folder.")],
    labels: Annotated[Optional[Path], typer.Option(help="Label manifest CSV (default DIR/labels.csv).")] = None,
    task_labels: Annotated[str, typer.Option(help="Comma-separated class names of the task.")] = "normal,opacity",
    image_size: Annotated[int, typer.Option(help="Model input size.")] = 224,
    as_json: Annotated[bool, typer.Option("--json", help="Print the data card as JSON.")] = False,
    window: Annotated[Optional[str], typer.Option(help="CT window: lung, mediastinum, brain, bone, abdomen or CENTER/WIDTH.")] = None,
    frame_policy: Annotated[str, typer.Option(help="Multi-frame files: middle or all.")] = "middle",
    label_source: Annotated[str, typer.Option(help="manifest, folders (DIR/<label>/...) or tag.")] = "manifest",
    label_tag: Annotated[Optional[str], typer.Option(help="DICOM keyword holding the label (label-source tag).")] = None,
    label_map: Annotated[Optional[list[str]], typer.Option(help="VALUE=LABEL for label-source tag; repeatable.")] = None,
    filter_: Annotated[Optional[list[str]], typer.Option("--filter", help="KEYWORD=V1,V2 (Modality, BodyPartExamined, SeriesDescription); repeatable.")] = None,
    workers: Annotated[int, typer.Option(help="Processes decoding DICOM in parallel.")] = 1,
    slice_policy: Annotated[str, typer.Option(help="Slices of a labelled study/series: middle, even:K or all.")] = "middle",
    slice_stack: Annotated[int, typer.Option(help="Channels per sample: 1, or 3 (2.5D: a slice and its neighbours).")] = 1,
) -> None:
    """Print this clinic's data card (counts only) and every rejected file with its reason and fix.

    The card stays on this screen: it lists relative file paths of rejected files.
    Exits non-zero only when no usable image is left.

    Example: `client-node check-data ./clinic-a --labels ./clinic-a/labels.csv`
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from radfed.data import REJECTION_HELP, DataError, DataOptions, format_card, load_clinic

    def pairs(items: Optional[list[str]], option: str) -> dict[str, str]:
        out = {}
        for item in items or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                _fail(f"{option} expects KEY=VALUE, got {item!r}", 2)
            out[key.strip()] = value.strip()
        return out

    try:
        window_opt: object = window
        if window and "/" in window:
            window_opt = tuple(float(v) for v in window.split("/", 1))
        options = DataOptions(
            window=window_opt, frame_policy=frame_policy, label_source=label_source, label_tag=label_tag,
            label_map=pairs(label_map, "--label-map") or None,
            filters={k: [v.strip() for v in vals.split(",") if v.strip()] for k, vals in pairs(filter_, "--filter").items()},
            slice_policy=slice_policy, slice_stack=slice_stack,
        )
    except ValueError as e:
        _fail(str(e), 2)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True, disable=as_json)
    tasks: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task("reading headers" if stage == "headers" else "decoding pixels", total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        with bar:
            data = load_clinic(directory, task_labels.split(","), image_size, manifest=labels,
                               options=options, workers=workers, progress=progress)
    except DataError as e:
        for where, reason in e.rejected:
            err.print(f"rejected {where}: {reason}; {REJECTION_HELP.get(reason, '')}", highlight=False, soft_wrap=True)
        _fail(str(e))
    card = data.card()
    if as_json:
        print(json.dumps(card, indent=2, default=str))
        return
    err.print(format_card(card), highlight=False, soft_wrap=True, markup=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
