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
from typing import Annotated

import typer
from rich.console import Console

from client_node.node import NodeError, NodeOptions, check, run_supernode
from radfed.cli_errors import fail as _fail

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")
err = Console(stderr=True)


@app.command()
def start(
    data: Annotated[Path, typer.Option(help="Folder with this clinic's DICOM files and labels.csv.")],
    bundle: Annotated[Path | None, typer.Option(help="Enrolment bundle from the coordinator (installs it).")] = None,
    name: Annotated[str | None, typer.Option(help="Which enrolled clinic to run (default: the only one).")] = None,
    superlink: Annotated[str | None, typer.Option(help="SuperLink HOST:PORT (default: from the bundle).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Label manifest CSV (default DATA/labels.csv).")] = None,
    file_column: Annotated[
        str | None, typer.Option(help="The manifest's file column, if not a usual name (file, path, filename...).")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="The manifest's label column, if not a usual name (label, class, finding...).")
    ] = None,
    label_map: Annotated[
        list[str] | None,
        typer.Option(
            help="VALUE=LABEL: this export's label value (manifest cell, folder name, tag value) for a task label; repeatable."
        ),
    ] = None,
    label_source: Annotated[
        str | None,
        typer.Option(help="manifest, folders (DATA/<label>/...) or tag (default: labels.csv, else class folders)."),
    ] = None,
    label_tag: Annotated[str | None, typer.Option(help="DICOM keyword holding the label (label-source tag).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Where preprocessed images are cached.")] = None,
    insecure: Annotated[bool, typer.Option(help="Plaintext, no node key (loopback demo SuperLinks only).")] = False,
    approve_app: Annotated[
        list[str] | None, typer.Option(help="Also run app bundles with this SHA-256; repeatable.")
    ] = None,
    local_port: Annotated[int, typer.Option(help="Port of the node's local ClientApp API (0: any free).")] = 0,
    isolation: Annotated[
        str,
        typer.Option(
            help="thread: the warm ClientApp inside the SuperNode process (fastest); worker: a warm ClientApp "
            "process beside it (a crash spares the SuperNode); subprocess: Flower's process per message."
        ),
    ] = "thread",
    threads: Annotated[int, typer.Option(help="CPU threads for training (0: all cores).")] = 0,
    workers: Annotated[int, typer.Option(help="Processes decoding DICOM in parallel.")] = 1,
    home: Annotated[Path | None, typer.Option(help="Folder for node state (default ~/.radfed/nodes).")] = None,
    fault: Annotated[str, typer.Option(hidden=True, help="TEST ONLY: corrupt updates ('nan' or 'scale').")] = "",
) -> None:
    """Join a federation: start this clinic's Flower SuperNode on its own data.

    Connects over TLS with the clinic's enrolled node key; checks first that the
    SuperLink is reachable and its certificate chains to the bundle's CA. Only the
    radfed app bundle of this installation runs here (plus any --approve-app hash).
    What leaves the clinic is logged to NODE_HOME/outbox.jsonl. How this clinic's export
    names its columns and labels (--file-column, --label-column, --label-map,
    --label-source) is set here, for every experiment it joins.

    Examples:

    client-node start --bundle clinic-a.radfed --data /pacs/export

    client-node start --data /pacs/export --label-column finding --label-map 1=opacity --label-map 0=normal

    client-node start --data /pacs/by-class --label-source folders --label-map pneumonia=opacity
    """
    local = _local_options(file_column, label_column, label_map, label_source, label_tag)
    opts = NodeOptions(
        superlink,
        data,
        name,
        labels,
        cache_dir,
        insecure,
        bundle,
        local_port,
        threads,
        workers,
        home,
        fault,
        list(approve_app or []),
        isolation,
        data_options=local,
    )
    if isolation not in ("thread", "worker", "subprocess"):
        _fail(f"--isolation must be thread, worker or subprocess, not {isolation!r}", 2)
    try:
        opts = check(opts)
    except NodeError as e:
        _fail(str(e))
    err.print(
        f"clinic [bold]{opts.name}[/] joining {opts.superlink} with data {data}"
        f"{' (PLAINTEXT)' if insecure else ''}; {opts.labels_from}",
        highlight=False,
    )
    code = run_supernode(
        opts, report=lambda line: err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    )
    raise typer.Exit(code)


@app.command()
def enroll(
    bundle: Annotated[Path, typer.Argument(help="The enrolment bundle (.radfed) from the coordinator.")],
    home: Annotated[Path | None, typer.Option(help="Folder for node state (default ~/.radfed/nodes).")] = None,
) -> None:
    """Verify an enrolment bundle and install it (CA, node key 0600) for `client-node start`.

    Example: `client-node enroll clinic-a.radfed` then `client-node start --data /pacs/export`
    """
    from client_node.node import enroll as install

    try:
        clinic, folder = install(bundle, home)
    except NodeError as e:
        _fail(str(e))
    err.print(
        f"enrolled as clinic [bold]{clinic}[/] ({folder}); the bundle file can now be deleted",
        highlight=False,
        soft_wrap=True,
    )


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

    summary = write_clinic(directory, clinic_index=clinic_index, n_patients=patients, prevalence=prevalence, seed=seed)
    err.print(f"wrote demo clinic to {directory}: {json.dumps(summary, default=str)}", highlight=False)


@app.command("check-data")
def check_data(
    directory: Annotated[Path, typer.Argument(help="The clinic's DICOM folder.")],
    labels: Annotated[Path | None, typer.Option(help="Label manifest CSV (default DIR/labels.csv).")] = None,
    task_labels: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated class names of the task (default: the manifest's own values, or the label map's)."
        ),
    ] = None,
    image_size: Annotated[int, typer.Option(help="Model input size.")] = 224,
    as_json: Annotated[bool, typer.Option("--json", help="Print the data card as JSON.")] = False,
    window: Annotated[
        str | None, typer.Option(help="CT window: lung, mediastinum, brain, bone, abdomen or CENTER/WIDTH.")
    ] = None,
    frame_policy: Annotated[str, typer.Option(help="Multi-frame files: middle or all.")] = "middle",
    label_source: Annotated[str, typer.Option(help="manifest, folders (DIR/<label>/...) or tag.")] = "manifest",
    label_tag: Annotated[str | None, typer.Option(help="DICOM keyword holding the label (label-source tag).")] = None,
    label_map: Annotated[
        list[str] | None,
        typer.Option(
            help="VALUE=LABEL: an export's label value (manifest cell, folder name, tag value) for a task label; repeatable."
        ),
    ] = None,
    file_column: Annotated[str | None, typer.Option(help="The manifest's file column, if not a usual name.")] = None,
    label_column: Annotated[str | None, typer.Option(help="The manifest's label column, if not a usual name.")] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="KEYWORD=V1,V2 (Modality, BodyPartExamined, SeriesDescription); repeatable."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Processes decoding DICOM in parallel.")] = 1,
    slice_policy: Annotated[
        str, typer.Option(help="Slices of a labelled study/series: middle, even:K or all.")
    ] = "middle",
    slice_stack: Annotated[
        int, typer.Option(help="Channels per sample: 1, or 3 (2.5D: a slice and its neighbours).")
    ] = 1,
) -> None:
    """Print this clinic's data card (counts only) and every rejected file with its reason and fix.

    The card stays on this screen: it lists relative file paths of rejected files.
    Without --task-labels the labels are the manifest's own values (or the label map's
    targets); without any labels (no manifest) the folder is audited: what decodes,
    modalities, equipment, sizes, syntaxes, rejections, and a note that labels are
    missing (exit 0). Exits non-zero only when labelled data leaves no usable image.

    Examples:

    client-node check-data ./clinic-a

    client-node check-data /pacs/export --labels export.csv --label-column finding --label-map 1=opacity --label-map 0=normal --task-labels normal,opacity

    client-node check-data /pacs/by-class --label-source folders
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from radfed.data import (
        REJECTION_HELP,
        DataError,
        DataOptions,
        audit_folder,
        format_audit,
        format_card,
        load_clinic,
        task_labels as labels_of,
    )

    try:
        window_opt: object = window
        if window and "/" in window:
            window_opt = tuple(float(v) for v in window.split("/", 1))
        options = DataOptions(
            window=window_opt,
            frame_policy=frame_policy,
            label_source=label_source,
            label_tag=label_tag,
            label_map=_pairs(label_map, "--label-map") or None,
            file_column=file_column,
            label_column=label_column,
            filters={
                k: [v.strip() for v in vals.split(",") if v.strip()] for k, vals in _pairs(filter_, "--filter").items()
            },
            slice_policy=slice_policy,
            slice_stack=slice_stack,
        )
    except ValueError as e:
        _fail(str(e), 2)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=as_json,
    )
    tasks: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task("reading headers" if stage == "headers" else "decoding pixels", total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        names = [n.strip() for n in task_labels.split(",")] if task_labels else labels_of(directory, labels, options)
        if not names:
            with bar:
                card = audit_folder(directory, image_size, options, workers=workers, progress=progress)
            print(json.dumps(card, indent=2, default=str)) if as_json else err.print(
                format_audit(card), highlight=False, soft_wrap=True, markup=False
            )
            return
        if not task_labels and not as_json:
            err.print(
                f"task labels (from the data; set them with --task-labels): {', '.join(names)}",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
        with bar:
            data = load_clinic(
                directory, names, image_size, manifest=labels, options=options, workers=workers, progress=progress
            )
    except DataError as e:
        for where, reason in e.rejected:
            err.print(f"rejected {where}: {reason}; {REJECTION_HELP.get(reason, '')}", highlight=False, soft_wrap=True)
        _fail(str(e))
    except ValueError as e:
        _fail(str(e), 2)
    card = data.card()
    if as_json:
        print(json.dumps(card, indent=2, default=str))
        return
    err.print(format_card(card), highlight=False, soft_wrap=True, markup=False)


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="A run id (its delivered model under the node home) or a model file.")],
    data: Annotated[Path, typer.Option(help="Folder of DICOM files to predict (labelled or not).")],
    out: Annotated[Path, typer.Option(help="Folder for predictions.csv, heatmaps/ and summary.json.")],
    kind: Annotated[str, typer.Option(help="With a run id: final, or selected (the run's best round).")] = "final",
    name: Annotated[str | None, typer.Option(help="Which enrolled clinic's models (default: the only one).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Label manifest CSV (default DATA/labels.csv, if any).")] = None,
    file_column: Annotated[str | None, typer.Option(help="The manifest's file column, if not a usual name.")] = None,
    label_column: Annotated[str | None, typer.Option(help="The manifest's label column, if not a usual name.")] = None,
    label_map: Annotated[list[str] | None, typer.Option(help="VALUE=LABEL, as for start; repeatable.")] = None,
    label_source: Annotated[str | None, typer.Option(help="manifest, folders or tag, as for start.")] = None,
    label_tag: Annotated[str | None, typer.Option(help="DICOM keyword holding the label (label-source tag).")] = None,
    cam: Annotated[bool, typer.Option(help="Write a Grad-CAM heat map overlay per image.")] = True,
    cam_layer: Annotated[
        str | None,
        typer.Option(
            help="The network stage the heat maps read (e.g. layer1); default: the deepest with a map of at least 7 px."
        ),
    ] = None,
    dicom_out: Annotated[
        bool,
        typer.Option(
            help="Also write a DICOM Secondary Capture (heat map) and Structured Report (finding) per file under OUT/dicom."
        ),
    ] = False,
    dicomweb: Annotated[
        str | None,
        typer.Option(help="Store those DICOM results in this DICOMweb root (STOW-RS), e.g. the clinic's PACS."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Processes decoding DICOM in parallel.")] = 1,
    home: Annotated[Path | None, typer.Option(help="Folder for node state (default ~/.radfed/nodes).")] = None,
) -> None:
    """Predict a folder with a model a run delivered here: probabilities, calls, heat maps.

    Everything stays on this machine. With labels (a manifest or class folders) the
    clinic's training/validation split is the federation's, and the AUROC on the
    validation patients is printed beside the one the federation recorded.

    Examples:

    client-node predict --model 1234567890 --data /pacs/export --out ./predictions

    client-node predict --model 1234567890 --kind selected --data /pacs/new-studies --out ./new --no-cam

    client-node predict --model ~/.radfed/nodes/clinic-a/models/run-1234567890/final.pt --data /pacs/export --out ./p

    client-node predict --model 1234567890 --data /pacs/export --out ./p --dicom-out --dicomweb http://pacs:8042/dicom-web
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from client_node.node import nodes_home_for
    from radfed.data import DataError
    from radfed.pacs import DicomWebError
    from radfed.prediction import ModelFileError, predict_folder, resolve_model_file

    if kind not in ("final", "selected"):
        _fail(f"--kind must be final or selected, not {kind!r}", 2)
    local = _local_options(file_column, label_column, label_map, label_source, label_tag)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            words = {"headers": "reading headers", "pixels": "decoding pixels"}.get(stage, stage)
            tasks[stage] = bar.add_task(words, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        path = Path(model).expanduser()
        if not path.is_file():
            path = resolve_model_file(model, nodes_home_for(home, name) / "models", kind)
        with bar:
            summary = predict_folder(
                path,
                data,
                out,
                manifest=labels,
                local_options=local,
                cam=cam,
                workers=workers,
                dicom_out=dicom_out,
                dicomweb=dicomweb,
                cam_layer=cam_layer,
                progress=progress,
            )
    except (ModelFileError, DataError, NodeError, DicomWebError) as e:
        _fail(str(e))
    except ValueError as e:
        _fail(str(e), 2)
    err.print(
        f"predicted {summary['images']} images with the {summary['kind']} model of "
        f"{summary['experiment']} (round {summary['round']}); {summary['heatmaps']} heat maps; "
        f"{summary['rejected']} files rejected; written to {out}",
        highlight=False,
        soft_wrap=True,
    )
    if summary.get("dicom_files"):
        err.print(
            f"{summary['dicom_files']} DICOM results in {out / 'dicom'}"
            + (f", stored at {dicomweb}" if dicomweb else ""),
            highlight=False,
            soft_wrap=True,
        )
    if "validation" in summary:
        v = summary["validation"]
        figure = (
            "not defined (one class only)"
            if v.get("auroc") is None
            else (
                f"{v['auroc']:.6f}"
                + (
                    f" [{v['auroc_low']:.3f}-{v['auroc_high']:.3f}]"
                    if v.get("auroc_low") is not None and v.get("auroc_high") is not None
                    else ""
                )
            )
        )
        err.print(
            f"validation patients: AUROC {figure} on {v['images']} images, {v['patients']} patients",
            highlight=False,
            soft_wrap=True,
        )


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """KEY=VALUE options as a dict; one line and exit 2 on anything else."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            _fail(f"{option} expects KEY=VALUE, got {item!r}", 2)
        out[key.strip()] = value.strip()
    return out


def _local_options(
    file_column: str | None,
    label_column: str | None,
    label_map: list[str] | None,
    label_source: str | None,
    label_tag: str | None,
) -> dict:
    """A clinic's own data settings for `start` (radfed.data.options.CLINIC_KEYS), checked now."""
    from radfed.data import DataOptions

    local = {
        "file_column": file_column,
        "label_column": label_column,
        "label_map": _pairs(label_map, "--label-map") or None,
        "label_source": label_source,
        "label_tag": label_tag,
    }
    local = {k: v for k, v in local.items() if v is not None}
    try:
        DataOptions().with_local(local)
    except ValueError as e:
        _fail(str(e), 2)
    return local


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
