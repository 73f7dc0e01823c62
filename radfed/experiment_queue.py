"""The experiment queue: researchers submit, the coordinator approves or rejects, approved
experiments run in order.

A submission is a form's values (dashboard/submit.py), never a file or code: it is
turned into an ExperimentSpec with the same validation as a TOML spec (radfed.spec,
strategies), plus two rules of its own: names and task labels are plain words, and the
weights are "random" or a file of the coordinator's weights registry (radfed.weight_files).
Status moves pending -> approved | rejected, approved -> running (claimed by one
`coordinator queue run-next` at a time, atomically) -> completed | failed. Each step
is in the audit trail under the researcher's or reviewer's name.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import select

from radfed.audit import Registry
from radfed.spec import ExperimentSpec, SpecError, from_mapping
from radfed.store import Store
from radfed.submissions import SUBMISSION_STATUSES, Submission
from radfed.weight_files import WeightsChoiceError, in_registry, resolve_weights

# What a researcher may set; the rest keeps the spec's defaults (timeouts, data options,
# sweep tags are the coordinator's business).
FORM_KEYS = (
    "name",
    "labels",
    "backbone",
    "weights",
    "image_size",
    "rounds",
    "local_epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "label_smoothing",
    "warmup_rounds",
    "augment",
    "bn_policy",
    "freeze",
    "unfreeze_top",
    "strategy",
    "strategy_params",
    "min_clinics",
    "min_accept",
    "val_fraction",
    "seed",
    "patience",
    "privacy",
)
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
MAX_LABELS = 32
MAX_PENDING = 10  # per researcher: the coordinator reviews, nobody floods the queue
MAX_REASON = 500


class QueueError(ValueError):
    """A submission or review step that cannot be done; one line for the user."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.utcoffset() is not None else value.replace(tzinfo=UTC)).isoformat()


def _check_strategy_and_privacy(spec: ExperimentSpec, source: str) -> None:
    """As `coordinator run` checks a spec file: the strategy's and privacy mode's parameters."""
    from strategies import StrategyError, check_privacy, check_strategy  # imports Flower

    try:
        check_strategy(spec.strategy, spec.strategy_params)
        check_privacy(spec.privacy, spec.min_clinics, spec.strategy)
    except StrategyError as e:
        raise QueueError(f"{source}: {e}") from None


def spec_from_form(form: dict[str, Any]) -> ExperimentSpec:
    """A dashboard form's values as a validated spec, or QueueError with one line."""
    source = "submission"
    unknown = sorted(set(form) - set(FORM_KEYS))
    if unknown:
        raise QueueError(f"{source}: {unknown[0]!r} cannot be set from a submission; allowed: {', '.join(FORM_KEYS)}")
    name = form.get("name")
    if not isinstance(name, str) or not EXPERIMENT_NAME.match(name):
        raise QueueError(
            f"{source}: experiment name {name!r}: use 1-64 letters, digits and . _ - "
            "(starting with a letter or digit), e.g. pneumonia-resnet50"
        )
    labels = form.get("labels", ("normal", "opacity"))
    if (
        not isinstance(labels, (list, tuple))
        or not all(isinstance(x, str) and LABEL.match(x) for x in labels)
        or not 2 <= len(labels) <= MAX_LABELS
    ):
        raise QueueError(
            f"{source}: task labels {labels!r}: give 2-{MAX_LABELS} distinct names of letters, "
            "digits, _ and - (e.g. normal, opacity)"
        )
    try:
        weights = resolve_weights(str(form.get("weights", "random")))
        spec = from_mapping({**form, "weights": weights}, source=source, check_files=True)
    except (SpecError, WeightsChoiceError) as e:
        raise QueueError(str(e)) from None
    _check_strategy_and_privacy(spec, source)
    return spec


class ExperimentQueue:
    """Submissions on a Store's database, with their audit trail."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_tables([Submission.__table__])  # type: ignore[attr-defined]
        self.audit = Registry(store)

    # -- researchers -------------------------------------------------------------------

    def submit(self, form: dict[str, Any], researcher: str) -> int:
        """Validate a form and queue it as pending; returns the submission id."""
        spec = spec_from_form(form)
        with self.store.session() as s:
            pending = s.exec(
                select(func.count())
                .select_from(Submission)
                .where(Submission.submitted_by == researcher, Submission.status == "pending")
            ).one()
            if pending >= MAX_PENDING:
                raise QueueError(
                    f"{researcher} has {pending} submissions waiting for review already "
                    f"(at most {MAX_PENDING}); wait for the coordinator to review them"
                )
            row = Submission(submitted_by=researcher, name=spec.name, spec_json=spec.to_json())
            s.add(row)
            s.commit()
            sid = int(row.id)  # type: ignore[arg-type]
        self.audit.event("submitted", researcher=researcher, detail=f"submission {sid}: {spec.name}")
        return sid

    # -- reading -----------------------------------------------------------------------

    def get(self, sid: int) -> Submission | None:
        with self.store.session() as s:
            return s.get(Submission, sid)

    def submissions(self, status: str | None = None, submitted_by: str | None = None) -> list[dict[str, Any]]:
        """Every submission (oldest first), as plain dicts; running ones are first brought up
        to date with their run (a `run-next` that died leaves its run's outcome in the store)."""
        if status and status not in SUBMISSION_STATUSES:
            raise QueueError(f"unknown status {status!r}; one of {', '.join(SUBMISSION_STATUSES)}")
        self.reconcile()
        with self.store.session() as s:
            query = select(Submission).order_by(Submission.id)  # type: ignore[arg-type]
            if status:
                query = query.where(Submission.status == status)
            if submitted_by:
                query = query.where(Submission.submitted_by == submitted_by)
            rows = list(s.exec(query))
        return [self.as_dict(r) for r in rows]

    @staticmethod
    def as_dict(row: Submission) -> dict[str, Any]:
        spec = json.loads(row.spec_json)
        return {
            "id": row.id,
            "name": row.name,
            "submitted_by": row.submitted_by,
            "submitted_at": _iso(row.submitted_at),
            "status": row.status,
            "reviewer": row.reviewer,
            "reviewed_at": _iso(row.reviewed_at),
            "reason": row.reason,
            "run": row.flwr_run_id,
            "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at),
            "error": row.error,
            "backbone": spec.get("backbone"),
            "strategy": spec.get("strategy"),
            "rounds": spec.get("rounds"),
            "spec": spec,
        }

    def reconcile(self) -> None:
        """Running submissions whose run finished in the store take its outcome."""
        with self.store.session() as s:
            running = list(
                s.exec(select(Submission).where(Submission.status == "running", Submission.flwr_run_id.is_not(None)))
            )  # type: ignore[union-attr]
        for row in running:
            status = self.store.run_status(row.flwr_run_id) or {}  # type: ignore[arg-type]
            if status.get("status") in ("completed", "failed"):
                self.finish(int(row.id), status["status"], status.get("error"))  # type: ignore[arg-type]

    # -- the coordinator ---------------------------------------------------------------

    def approve(self, sid: int, reviewer: str) -> Submission:
        """pending -> approved; QueueError for an unknown id or one already reviewed."""
        row = self._move(sid, ("pending",), "approved", reviewer=reviewer, reviewed_at=_utcnow())
        self.audit.event("approved", researcher=row.submitted_by, detail=f"submission {sid}: {row.name}; by {reviewer}")
        return row

    def reject(self, sid: int, reviewer: str, reason: str) -> Submission:
        """pending or approved -> rejected, with the reason the researcher will read."""
        reason = " ".join(str(reason).split())
        if not reason:
            raise QueueError("give a reason: --reason TEXT (the researcher reads it on the dashboard)")
        if len(reason) > MAX_REASON:
            raise QueueError(f"the reason is {len(reason)} characters; at most {MAX_REASON}")
        row = self._move(
            sid, ("pending", "approved"), "rejected", reviewer=reviewer, reviewed_at=_utcnow(), reason=reason
        )
        self.audit.event(
            "rejected", researcher=row.submitted_by, detail=f"submission {sid}: {row.name}; by {reviewer}: {reason}"
        )
        return row

    def claim(self, sid: int | None = None) -> Submission | None:
        """approved -> running for `sid`, or the oldest approved one; None when none waits.
        Atomic: two `run-next` at once never start the same submission."""
        while True:
            with self.store.session() as s:
                query = select(Submission.id).where(Submission.status == "approved")
                if sid is not None:
                    query = query.where(Submission.id == sid)
                first = s.exec(query.order_by(Submission.reviewed_at, Submission.id)).first()  # type: ignore[arg-type]
            if first is None:
                if sid is not None:
                    self._refuse(sid, ("approved",))
                return None
            try:
                return self._move(int(first), ("approved",), "running", started_at=_utcnow())
            except QueueError:
                if sid is not None:
                    raise  # taken by another run-next just now

    def release(self, sid: int) -> None:
        """running -> approved again: its run could not even be submitted (SuperLink down)."""
        self._move(sid, ("running",), "approved", started_at=None)

    def link(self, sid: int, flwr_run_id: str) -> None:
        """The Flower run this submission started (the leaderboard's `submitted_by`)."""
        with self.store.session() as s:
            s.execute(update(Submission).where(Submission.id == sid).values(flwr_run_id=str(flwr_run_id)))  # type: ignore[arg-type]
            s.commit()

    def finish(self, sid: int, status: str, error: str | None = None) -> bool:
        """running -> completed | failed; False when it was no longer running (another
        process, e.g. a `queue list` that reconciled it, recorded the outcome first)."""
        if status not in ("completed", "failed"):
            raise ValueError(f"finish: status {status!r}")
        try:
            self._move(sid, ("running",), status, finished_at=_utcnow(), error=error)
        except QueueError:
            return False
        return True

    def spec_of(self, row: Submission) -> ExperimentSpec:
        """The submission's spec, validated again now (the weights file may have left the
        registry since, the database may have been altered): QueueError when unusable."""
        source = f"submission {row.id}"
        try:
            spec = from_mapping(json.loads(row.spec_json), source=source, check_files=True)
        except (SpecError, ValueError) as e:
            raise QueueError(str(e)) from None
        if not in_registry(spec.weights):
            raise QueueError(
                f"{source}: weights {spec.weights!r} are no longer in the coordinator's "
                "weights registry (`coordinator weights list`)"
            )
        _check_strategy_and_privacy(spec, source)
        return spec

    def _move(self, sid: int, allowed: tuple[str, ...], status: str, **values: Any) -> Submission:
        """One conditional UPDATE: the move happens only from an allowed status."""
        with self.store.session() as s:
            done = s.execute(
                update(Submission)
                .where(Submission.id == sid, Submission.status.in_(allowed))  # type: ignore[attr-defined]
                .values(status=status, **values)
            )
            s.commit()
        if done.rowcount != 1:
            self._refuse(sid, allowed)
        return self.get(sid)  # type: ignore[return-value]

    def _refuse(self, sid: int, allowed: tuple[str, ...]) -> None:
        row = self.get(sid)
        if row is None:
            raise QueueError(f"no submission {sid}; `coordinator queue list` shows them")
        who = f" by {row.reviewer}" if row.reviewer and row.status in ("approved", "rejected") else ""
        raise QueueError(f"submission {sid} is {row.status}{who}, not {' or '.join(allowed)}")
