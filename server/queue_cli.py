"""`coordinator queue …`: review the experiments researchers submitted from the dashboard, and run them.

Examples:

    coordinator queue list
    coordinator queue list --status pending --json
    coordinator queue show 3
    coordinator queue approve 3
    coordinator queue reject 4 --reason "min_clinics must be 3 for this task"
    coordinator queue run-next --control 127.0.0.1:9093
    coordinator queue approve 5 --run --control 127.0.0.1:9093
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from radfed.cli_errors import fail as _fail

HELP = "\n\n".join(
    [
        "Review and run the experiments researchers submitted from the dashboard.",
        "Examples:",
        *(f"`{line.strip()}`" for line in __doc__.split("Examples:")[1].strip().splitlines()),
    ]
)
queue_app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")
out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
]
ReviewerOption = Annotated[
    str | None, typer.Option("--reviewer", help="Who decides, for the record (default: this login's user name).")
]
ControlOption = Annotated[
    str, typer.Option(help="The SuperLink's control door HOST:PORT (`coordinator superlink` prints it).")
]
CheckpointsOption = Annotated[Path | None, typer.Option(help="Checkpoint folder (default ~/.radfed/checkpoints).")]
InsecureOption = Annotated[bool, typer.Option(help="Plaintext connection to a loopback SuperLink.")]
CaOption = Annotated[Path | None, typer.Option(help="CA certificate of the SuperLink (default ~/.radfed/pki/ca.crt).")]
CredentialOption = Annotated[
    Path | None,
    typer.Option(
        help="Coordinator credential (NAME.pem from `coordinator certs credential`) for a remote control door."
    ),
]


def _queue(db: str | None):
    from radfed.experiment_queue import ExperimentQueue
    from radfed.store import Store, StoreError

    try:
        return ExperimentQueue(Store(db))
    except StoreError as e:
        _fail(str(e))


def _reviewer(name: str | None) -> str:
    return (name or getpass.getuser() or "coordinator").strip()


@queue_app.command("list")
def queue_list(
    db: DbOption = None,
    status: Annotated[
        str | None, typer.Option(help="Only this status: pending, approved, rejected, running, completed or failed.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, with each spec.")] = False,
) -> None:
    """Submissions, oldest first: who, when, what, status, reviewer, the run once started.

    Examples:

    `coordinator queue list`

    `coordinator queue list --status pending --json`
    """
    from radfed.experiment_queue import QueueError

    try:
        rows = _queue(db).submissions(status=status)
    except QueueError as e:
        _fail(str(e), 2)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="experiment queue (`coordinator queue show ID` for a spec)")
    for col in ("id", "name", "by", "submitted", "what", "status", "reviewer", "reason / error", "run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        when = (r["submitted_at"] or "")[:16].replace("T", " ")
        what = f"{r['backbone']}, {r['strategy']}, {r['rounds']} rounds"
        table.add_row(
            *(
                escape(str(cell))
                for cell in (
                    r["id"],
                    r["name"],
                    r["submitted_by"],
                    when,
                    what,
                    r["status"],
                    r["reviewer"] or "",
                    r["reason"] or r["error"] or "",
                    r["run"] or "",
                )
            )
        )
    out.print(table)


@queue_app.command("show")
def queue_show(
    sid: Annotated[int, typer.Argument(metavar="ID", help="The submission's id.")], db: DbOption = None
) -> None:
    """One submission with its whole spec (JSON), to review before approving.

    Example: `coordinator queue show 3`
    """
    queue = _queue(db)
    row = queue.get(sid)
    if row is None:
        _fail(f"no submission {sid}; `coordinator queue list` shows them", 2)
    print(json.dumps(queue.as_dict(row), indent=2))


@queue_app.command("approve")
def queue_approve(
    sid: Annotated[int, typer.Argument(metavar="ID", help="The pending submission to approve.")],
    run_now: Annotated[bool, typer.Option("--run", help="Start it now, as `queue run-next` would.")] = False,
    reviewer: ReviewerOption = None,
    db: DbOption = None,
    control: ControlOption = "127.0.0.1:9093",
    checkpoints: CheckpointsOption = None,
    insecure: InsecureOption = False,
    root_certificates: CaOption = None,
    credential: CredentialOption = None,
) -> None:
    """Approve a pending submission: it runs at its turn (`coordinator queue run-next`).

    Examples:

    `coordinator queue approve 3`

    `coordinator queue approve 3 --run --control 127.0.0.1:9093`
    """
    from radfed.experiment_queue import QueueError

    queue = _queue(db)
    if run_now:
        _check_connection(control, insecure, root_certificates, credential)
    try:
        row = queue.approve(sid, _reviewer(reviewer))
    except QueueError as e:
        _fail(str(e), 2)
    err.print(f"approved submission {sid} ({row.name}) by {row.submitted_by}", highlight=False, soft_wrap=True)
    if run_now:
        _run(queue, sid, control, checkpoints, insecure, root_certificates, credential)


@queue_app.command("reject")
def queue_reject(
    sid: Annotated[int, typer.Argument(metavar="ID", help="The pending (or approved) submission to reject.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, in a sentence: the researcher reads it.")],
    reviewer: ReviewerOption = None,
    db: DbOption = None,
) -> None:
    """Reject a submission with a reason (shown to the researcher on the dashboard).

    Example: `coordinator queue reject 4 --reason "use min_clinics = 3 for this task"`
    """
    from radfed.experiment_queue import QueueError

    try:
        row = _queue(db).reject(sid, _reviewer(reviewer), reason)
    except QueueError as e:
        _fail(str(e), 2)
    err.print(f"rejected submission {sid} ({row.name}) by {row.submitted_by}", highlight=False, soft_wrap=True)


@queue_app.command("run-next")
def queue_run_next(
    db: DbOption = None,
    control: ControlOption = "127.0.0.1:9093",
    checkpoints: CheckpointsOption = None,
    insecure: InsecureOption = False,
    root_certificates: CaOption = None,
    credential: CredentialOption = None,
) -> None:
    """Start the oldest approved submission exactly as `coordinator run SPEC` would, and follow it.

    The run is linked to the submission (the leaderboard shows who submitted it); exit 0
    when it completed or nothing was waiting, 1 when it failed.

    Examples:

    `coordinator queue run-next --control 127.0.0.1:9093`

    `coordinator queue run-next --insecure --control 127.0.0.1:9093`   (loopback SuperLink without TLS)
    """
    queue = _queue(db)
    _check_connection(control, insecure, root_certificates, credential)
    _run(queue, None, control, checkpoints, insecure, root_certificates, credential)


def _check_connection(control, insecure, root_certificates, credential) -> None:
    """Refuse bad TLS options before a submission changes state."""
    from server.run_steps import connection

    connection(control, insecure, root_certificates, credential)


def _run(
    queue,
    sid: int | None,
    control: str,
    checkpoints: Path | None,
    insecure: bool,
    root_certificates: Path | None,
    credential: Path | None,
) -> None:
    """Claim the submission (approved -> running), start and follow its run, record the outcome."""
    from radfed.experiment_queue import QueueError
    from server.run_steps import connection, follow_to_end, report, start

    conn = connection(control, insecure, root_certificates, credential)
    try:
        row = queue.claim(sid)
    except QueueError as e:
        _fail(str(e), 2)
    if row is None:
        err.print(
            "no approved submission is waiting; `coordinator queue list --status pending` shows those to review",
            highlight=False,
            soft_wrap=True,
        )
        return
    sid = int(row.id)
    try:
        spec = queue.spec_of(row)
    except QueueError as e:
        queue.finish(sid, "failed", str(e))
        _fail(f"submission {sid} cannot run: {e}")
    err.print(
        f"submission {sid} ({spec.name}) by {row.submitted_by}, approved by {row.reviewer}",
        highlight=False,
        soft_wrap=True,
    )
    run_id = start(
        conn,
        queue.store,
        spec,
        checkpoints,
        what=f"submission {sid}: submitted",
        on_error=lambda _message: queue.release(sid),
    )
    queue.link(sid, run_id)
    status = follow_to_end(
        conn,
        queue.store,
        run_id,
        spec.rounds,
        on_interrupt=lambda: queue.finish(sid, "failed", "interrupted by the coordinator"),
    )
    queue.finish(sid, "completed" if status.get("status") == "completed" else "failed", status.get("error"))
    report(queue.store, status, run_id)


def mount(app: typer.Typer) -> None:
    """Add `coordinator queue` to the coordinator CLI."""
    app.add_typer(queue_app, name="queue")
