"""Check a backbone weight file before an experiment uses it.

Reads the file locally (PyTorch RadImageNet checkpoint, Keras `*_notop.h5`, or a
torchvision/timm state_dict), converts it into a fresh model and reports which keys
matched. A file that does not provide the whole backbone is refused (exit 1).

Researchers submitting from the dashboard may only choose files in the weights
registry folder ($RADFED_WEIGHTS_DIR, default ~/.radfed/weights): inspect a file, then
copy it there.

Examples:

    coordinator weights inspect RadImageNet-ResNet50_notop.h5 --arch resnet50
    coordinator weights inspect resnet50.pt --arch resnet50 --json
    coordinator weights list
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radfed.cli_errors import fail as _fail

weights_app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")
out = Console()
err = Console(stderr=True)


@weights_app.callback()
def _group() -> None:
    """Inspect backbone weight files (RadImageNet PyTorch/Keras, torchvision/timm)."""


@weights_app.command("inspect")
def inspect(
    path: Annotated[Path, typer.Argument(help="Local weight file (.pt/.pth or .h5).")],
    arch: Annotated[
        str,
        typer.Option("--arch", help="Backbone: resnet50, densenet121, inception_v3, inception_resnet_v2, resnet18."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="Accept a file that covers only part of the backbone.")
    ] = False,
) -> None:
    """Load PATH into a fresh ARCH model and report matched/missing/unexpected keys.

    Example: `coordinator weights inspect RadImageNet-ResNet50_notop.h5 --arch resnet50`
    """
    from radfed.models import WeightsError, list_models
    from radfed.weights import inspect_weights

    if arch not in list_models():
        _fail(f"unknown backbone '{arch}'; allowed: {', '.join(list_models())}")
    try:
        report, refusal = inspect_weights(path, arch, allow_partial=allow_partial)
    except WeightsError as e:
        _fail(str(e))
    if report is None:
        _fail(refusal or f"{path}: cannot read")
    if as_json:
        data = {"path": str(path), "arch": arch, "accepted": refusal is None, **report.as_dict()}
        out.print_json(json.dumps(data))
    else:
        table = Table(title=f"{path.name} -> {arch} ({report.source_format}, inputs: {report.normalisation})")
        table.add_column("keys")
        table.add_column("count", justify="right")
        table.add_column("first few")
        for name in ("matched", "missing", "unexpected", "mismatched", "head_skipped"):
            keys = getattr(report, name)
            table.add_row(name.replace("_", " "), str(len(keys)), ", ".join(keys[:3]))
        out.print(table)
    if refusal is not None:
        _fail(refusal)


@weights_app.command("list")
def list_registry(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """The weights registry: the files dashboard submissions may choose (besides "random").

    Example: `coordinator weights list --json`
    """
    from radfed.weight_files import weight_files, weights_dir

    folder = weights_dir()
    rows = [{"name": name, "bytes": (folder / name).stat().st_size} for name in weight_files(folder)]
    if as_json:
        print(json.dumps({"folder": str(folder), "files": rows}, indent=2))
        return
    table = Table(title=f"weights registry {folder} (copy inspected files here)")
    table.add_column("file")
    table.add_column("MB", justify="right")
    for row in rows:
        table.add_row(row["name"], f"{row['bytes'] / 1e6:.1f}")
    out.print(table)
