"""`coordinator export`: one round of a run as a portable ONNX or TorchScript file, with its
model card (Markdown and JSON).

Mounted on the `coordinator` app by server/cli.py; the work is in server/export.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from radfed.cli_errors import fail as _fail

err = Console(stderr=True)


def export_command(
    run: Annotated[
        str,
        typer.Argument(
            help="The run: its Flower run id (as `coordinator run` prints it) "
            "or its store id (`run_id` in `coordinator leaderboard --json`)."
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="onnx (opset 18, dynamic batch) or torchscript (traced).")
    ] = "onnx",
    server_round: Annotated[
        int | None,
        typer.Option("--round", min=1, help="Round to export (default: the run's selected checkpoint, else the last)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the model and its card (default ~/.radfed/exports, where the dashboard looks)."),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Largest abs difference of logits allowed between the file and PyTorch.")
    ] = 1e-4,
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
    ] = None,
) -> None:
    """Export a run's checkpoint as ONNX or TorchScript, checked against PyTorch, with a model card.

    RUN is the run's Flower run id (as `coordinator run` prints it) or its store id
    (`run_id` in `coordinator leaderboard --json`).

    Writes EXPERIMENT-run-ID-round-N.onnx (or .pt) and beside it FILE.card.md and
    FILE.card.json: task and labels, backbone and weight source, the exact input the file
    expects (N x 1 x S x S float32 grey values in [0, 1]; the model converts to 3 channels
    and normalises itself), training clinics with their data cards' counts, rounds,
    strategy, privacy, pooled and per-clinic figures with 95 % CIs, the held-out clinic's,
    why this round, intended use and limits, and the file's sha256. Before anything is
    kept, the file is run (onnxruntime, torch.jit) on a fixed batch and compared with
    PyTorch; the largest difference is printed. The paths go to stdout, one per line.

    Examples:

    `coordinator export 8577920735297922023`

    `coordinator export 8577920735297922023 --format torchscript --out ./exports`

    `coordinator export 3 --round 2 --db sqlite:////srv/radfed/radfed.db`
    """
    from radfed.store import Store, StoreError
    from server.export import ExportError, export_run

    try:
        store = Store(db)
    except StoreError as e:
        _fail(str(e))
    try:
        done = export_run(store, run, fmt.strip().lower(), server_round, out, tolerance)
    except ExportError as e:
        _fail(str(e))
    check = done.exported.check
    err.print(f"round {done.server_round}: {done.reason}", highlight=False, soft_wrap=True)
    err.print(
        f"{done.exported.format} checked with {check.runtime} on a {check.batch_shape} batch: "
        f"max abs difference from PyTorch {check.max_abs_diff:.3g} (tolerance {check.tolerance:g}); "
        f"sha256 {done.sha256}",
        highlight=False,
        soft_wrap=True,
    )
    for path in (done.model, done.card_md, done.card_json):
        print(path)


def mount(app: typer.Typer) -> None:
    """Add `coordinator export` to the coordinator CLI."""
    app.command("export")(export_command)
