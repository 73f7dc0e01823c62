"""The experiment queue's table: who submitted which spec, and what became of it.

A researcher submits an experiment from the dashboard (dashboard/submit.py); the
coordinator approves or rejects it and approved ones run in order
(`coordinator queue ...`, server/queue_cli.py; the rules in radfed/experiment_queue.py).
The table lives here, apart from those rules, because radfed.store reads it for the
leaderboard's `submitted_by` and must not import the queue (which imports the store).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import Field, Session, SQLModel, select

SUBMISSION_STATUSES = ("pending", "approved", "rejected", "running", "completed", "failed")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Submission(SQLModel, table=True):
    """One experiment a researcher asked the coordinator to run.

    `spec_json` is the validated radfed.spec.ExperimentSpec as JSON (weights: a file of
    the coordinator's weights registry, by absolute path, or "random"); `flwr_run_id`
    links it to its run once started (the leaderboard's `submitted_by`).
    """

    __tablename__ = "submissions"

    id: int | None = Field(default=None, primary_key=True)
    submitted_by: str = Field(index=True)
    submitted_at: datetime = Field(default_factory=_utcnow)
    name: str
    spec_json: str
    status: str = Field(default="pending", index=True)
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    reason: str | None = None  # why it was rejected
    flwr_run_id: str | None = Field(default=None, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


def submitters(session: Session, flwr_run_ids: list[Any]) -> dict[str, str]:
    """Flower run id -> the researcher who submitted it, for the runs that came from the queue."""
    ids = sorted({str(i) for i in flwr_run_ids if i})
    if not ids:
        return {}
    rows = session.exec(
        select(Submission.flwr_run_id, Submission.submitted_by).where(Submission.flwr_run_id.in_(ids))
    ).all()  # type: ignore[union-attr]
    return {str(run): who for run, who in rows}
