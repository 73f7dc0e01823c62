"""SQL record of radfed experiments: runs, rounds, per-clinic results, checkpoints and
each clinic's data card (its data mix, counts only).

The ServerApp writes here while the coordinator CLI and the dashboard read, often
from other processes, so every write is its own short transaction and SQLite runs
in WAL mode with a busy timeout.  PostgreSQL (psycopg 3 driver) is supported for
shared deployments.

Privacy: only clinic names, Flower node ids, numbers and equipment/format names
(modality, manufacturer, transfer syntax) are stored -- never patient data, file
names of studies, or anything derived from a single patient.  The score histograms kept
with each clinic's evaluation (how many validation images of each class got each score,
radfed.pooled.score_summary) are what the clinic already sends for the pooled figures:
the multiset of (score, class) pairs, with no image, patient or order.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, UniqueConstraint, event, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import defer
from sqlalchemy.pool import StaticPool
from sqlmodel import Field, Session, SQLModel, create_engine, select

from radfed.ranking import annotate
from radfed.submissions import submitters  # also registers the submissions table

__all__ = [
    "Baseline",
    "Checkpoint",
    "ClinicDataCard",
    "ClinicRoundResult",
    "Experiment",
    "RoundResult",
    "Run",
    "Store",
    "StoreError",
    "default_database_url",
]

RUN_STATUSES = ("running", "completed", "failed")
FINISHED_STATUSES = ("completed", "failed")
PHASES = ("train", "evaluate", "excluded", "late", "lost", "revoked", "failed", "holdout")
ROUND_FLOAT_FIELDS = ("train_loss", "val_loss", "val_accuracy", "val_auroc", "duration_s")
ROUND_INT_FIELDS = ("num_clinics", "num_examples", "bytes_down", "bytes_up")
ROUND_JSON_FIELDS = ("pooled", "per_class")
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10


class StoreError(RuntimeError):
    """The database cannot be used; the message is one line naming the URL and the fix."""


def _utcnow() -> datetime:
    """Aware UTC timestamp; SQLModel stores it as UTC on SQLite and PostgreSQL alike."""
    return datetime.now(UTC)


def default_database_url() -> str:
    """`DATABASE_URL` if set, else an absolute SQLite URL under `$RADFED_HOME` (~/.radfed).

    Absolute, so that the ServerApp, the CLIs and the dashboard -- started from
    different working directories -- all open the same file.
    """
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    home = Path(os.environ.get("RADFED_HOME") or "~/.radfed").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'radfed.db'}"


# --------------------------------------------------------------------------- tables


class Experiment(SQLModel, table=True):
    """One experiment spec (backbone, weights, strategy...) that may be run many times."""

    __tablename__ = "experiments"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    spec_json: str
    backbone: str
    weights: str  # "random" or the weight file's name
    strategy: str
    sweep: str | None = Field(default=None, index=True)  # `coordinator sweep` name, if any
    weight_source: str | None = None  # the sweep's weight source label ("radimagenet"...)
    privacy: str = '{"mode": "none"}'  # JSON: differential privacy mode and parameters used
    created_at: datetime = Field(default_factory=_utcnow)


class Run(SQLModel, table=True):
    """One Flower run of an experiment; Flower run ids are uint64, hence TEXT."""

    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    flwr_run_id: str = Field(index=True)
    status: str = "running"
    started_at: datetime = Field(default_factory=_utcnow)
    finished_at: datetime | None = None
    error: str | None = None
    final_auroc: float | None = None  # pooled AUROC of the final model (radfed.ranking)
    rounds_planned: int = 0
    selected_round: int | None = None  # the checkpoint kept as best: highest pooled AUROC
    stopped_early: str | None = None  # why the run ended before its planned rounds (spec patience)
    holdout: str | None = None  # leave-one-clinic-out: the clinic kept out of training
    resumed_from: str | None = None  # earlier Flower run ids of this run, oldest first ("a,b")
    simulated: str | None = None  # `coordinator simulate`: "100 virtual clinics, iid" (no real clinic took part)


class RoundResult(SQLModel, table=True):
    """Aggregated (federated) metrics of one server round; one row per (run, round)."""

    __tablename__ = "round_results"
    __table_args__ = (UniqueConstraint("run_id", "server_round", name="uq_round_run_round"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    server_round: int
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_auroc: float | None = None
    num_clinics: int | None = None
    num_examples: int | None = None
    duration_s: float | None = None
    # pooled over clinics from their score histograms (radfed.evaluation.pooled_quality)
    pooled: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # tasks with more than two labels: each class's pooled one-vs-rest AUROC [CI] and the
    # macro mean (radfed.per_class.pooled_per_class); None for binary tasks
    per_class: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # model bytes the server sent to clinics in the round, and the clinics sent back
    bytes_down: int | None = Field(default=None, sa_type=BigInteger)
    bytes_up: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=_utcnow)


class ClinicRoundResult(SQLModel, table=True):
    """What one clinic reported in one round (numbers only, no patient data)."""

    __tablename__ = "clinic_round_results"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    server_round: int
    clinic: str
    node_id: str  # Flower node ids are uint64: TEXT keeps ids above 2**63 intact
    phase: str  # "train" | "evaluate"
    loss: float | None = None
    accuracy: float | None = None
    auroc: float | None = None
    num_examples: int = 0
    device: str | None = None
    note: str | None = None  # why an update was excluded, or that a clinic replied late
    # evaluate/holdout rows: AUROC CI over patients, sensitivity, specificity, threshold, ECE
    quality: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # evaluate/holdout rows of tasks with more than two labels: each class's one-vs-rest
    # AUROC [CI] and the macro mean (radfed.per_class.PerClass.stored)
    per_class: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # evaluate/holdout rows: the clinic's score histogram and calibration bins as it sent
    # them (radfed.pooled.SUMMARY_KEYS), so the dashboard can draw ROC curves, reliability
    # diagrams and confusion matrices; read by `Store.score_histograms`, not the leaderboard
    scores: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # model bytes sent to this clinic for this phase, and what it sent back
    bytes_down: int | None = Field(default=None, sa_type=BigInteger)
    bytes_up: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=_utcnow)


class ClinicDataCard(SQLModel, table=True):
    """One clinic's data mix for a run, sent once with its first reply: counts per label,
    split, modality, equipment, size bucket, transfer syntax and rejection reason only."""

    __tablename__ = "clinic_data_cards"
    __table_args__ = (UniqueConstraint("run_id", "clinic", name="uq_data_card_run_clinic"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    clinic: str
    node_id: str
    card_json: str  # JSON object of counts (radfed.data.ClinicData.shared_card)
    created_at: datetime = Field(default_factory=_utcnow)


class Checkpoint(SQLModel, table=True):
    """A saved global model; the metric is filled in once that round is evaluated."""

    __tablename__ = "checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    server_round: int
    path: str
    sha256: str
    metric_name: str
    metric_value: float | None = None
    created_at: datetime = Field(default_factory=_utcnow)


class Baseline(SQLModel, table=True):
    """A centralised baseline of an experiment: the same model, policy, budget and seed
    trained on the union of the clinics' training splits (`coordinator baseline`).

    The pooled figures are columns; `clinics` holds each clinic's validation figures.
    """

    __tablename__ = "baselines"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    holdout: str | None = None
    auroc: float | None = None
    auroc_low: float | None = None
    auroc_high: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    threshold: float | None = None
    ece: float | None = None
    num_examples: int = 0
    num_patients: int = 0
    clinics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    duration_s: float | None = None
    created_at: datetime = Field(default_factory=_utcnow)


# --------------------------------------------------------------------------- helpers


def _json_ready(value: Any) -> Any:
    """Numbers for a JSON column: NaN and infinities become null (PostgreSQL refuses them)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        number = value.item() if hasattr(value, "item") else value
        return None if isinstance(number, float) and not math.isfinite(number) else number
    return value


def _safe_url(url: str) -> str:
    """The URL with its password masked, for messages that end up in logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: mask anything that looks like user:password@
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _normalise_url(url: str) -> str:
    """Route plain `postgresql://` / `postgres://` URLs to the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _first_line(exc: BaseException) -> str:
    """Drivers write multi-line errors; the StoreError message must stay one line."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def _float(value: Any) -> float | None:
    """Plain float or None: numpy scalars and NaN (single-class AUROC) are normalised."""
    if value is None:
        return None
    result = float(value)
    return None if math.isnan(result) or math.isinf(result) else result


def _int(value: Any) -> int | None:
    """Plain int or None, so numpy ints reach the driver as Python ints."""
    return None if value is None else int(value)


def _iso(value: datetime | None) -> str | None:
    """ISO-8601 UTC string for JSON output."""
    if value is None:
        return None
    aware = value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def _row_dict(row: SQLModel, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON-serialisable dict of a table row (datetimes as ISO strings)."""
    columns = [c.name for c in row.__table__.columns if c.name not in drop]  # type: ignore[attr-defined]
    values = {name: getattr(row, name) for name in columns}
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in values.items()}


# What makes a centralised baseline comparable to a run: the same task, model, policy,
# budget, split and seed (the strategy and the deployment settings may differ).
BUDGET_KEYS = (
    "name",
    "labels",
    "backbone",
    "weights",
    "image_size",
    "rounds",
    "local_epochs",
    "batch_size",
    "learning_rate",
    "freeze",
    "unfreeze_top",
    "val_fraction",
    "seed",
    "data",
)


def budget_key(spec_json: str) -> str:
    """The part of a spec a centralised baseline must share with a federated run."""
    try:
        spec = json.loads(spec_json)
    except (TypeError, ValueError):
        return str(spec_json)
    if not isinstance(spec, dict):
        return str(spec_json)
    return json.dumps({k: spec.get(k) for k in BUDGET_KEYS}, sort_keys=True)


def _attach_baselines(entries: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> None:
    """Give each run its final pooled figures, the newest comparable baseline (same budget,
    same held-out clinic) and the ratio federated ÷ centralised pooled AUROC."""
    newest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for base in baselines:  # newest first
        newest.setdefault((budget_key(base["spec_json"]), base["holdout"]), base)
    for entry in entries:
        final = [r for r in entry["rounds"] if r.get("pooled")]
        entry["pooled"] = final[-1]["pooled"] if final else None
        base = newest.get((budget_key(entry["spec_json"]), entry["holdout"]))
        entry["baseline"] = {k: v for k, v in base.items() if k != "spec_json"} if base else None
        fed = (entry["pooled"] or {}).get("auroc")
        entry["vs_central"] = fed / base["auroc"] if fed is not None and base and base["auroc"] else None


# --------------------------------------------------------------------------- store


class Store:
    """Reads and writes the radfed record; safe to open from several processes at once."""

    def __init__(self, url: str | None = None) -> None:
        """Open (and create the tables of) the database at `url`, or the default one.

        Raises StoreError with one line naming the URL and the fix when the URL is
        bad or the database cannot be reached, so CLIs can print it and exit.
        """
        self.url = _normalise_url(url or default_database_url())
        self.safe_url = _safe_url(self.url)
        self.engine = self._create_engine()
        try:
            SQLModel.metadata.create_all(self.engine)
            self._add_missing_columns()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreError(self._unreachable_message(exc)) from exc

    # -- connection ------------------------------------------------------------

    def _create_engine(self) -> Engine:
        """Build the engine for SQLite or PostgreSQL; other databases are refused."""
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise StoreError(
                f"invalid database URL {self.safe_url!r}: {_first_line(exc)}. Fix: use e.g. "
                "sqlite:////abs/path/radfed.db or postgresql+psycopg://user:pass@host:5432/db"
            ) from exc
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"unsupported database URL {self.safe_url!r}: radfed supports SQLite and "
                "PostgreSQL. Fix: use sqlite:////abs/path/radfed.db or "
                "postgresql+psycopg://user:pass@host:5432/db"
            )
        try:
            if backend == "sqlite":
                return self._sqlite_engine(parsed.database)
            return self._postgres_engine(parsed.query)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise StoreError(
                f"cannot use database URL {self.safe_url!r}: {_first_line(exc)}. Fix: use "
                "sqlite:///... or postgresql+psycopg://... (psycopg 3 is the installed driver)"
            ) from exc

    def _sqlite_engine(self, database: str | None) -> Engine:
        """SQLite in WAL mode with a busy timeout: one process writes while others read."""
        in_memory = not database or database == ":memory:"
        engine = create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            poolclass=StaticPool if in_memory else None,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine

    def _postgres_engine(self, query: Any) -> Engine:
        """PostgreSQL via psycopg 3; pre-ping because the dashboard outlives server restarts."""
        connect_args = {} if "connect_timeout" in query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)

    def ensure_tables(self, tables: list[Any]) -> None:
        """Create `tables` (SQLAlchemy Table objects other modules define, e.g. radfed.audit's)
        and add the nullable columns newer code gave them, on this store's engine.

        For modules imported after this Store was opened: `Store()` itself only creates
        the tables known at that moment.
        """
        try:
            SQLModel.metadata.create_all(self.engine, tables=tables)
            self._add_missing_columns(tables)
        except (OperationalError, InterfaceError) as exc:
            raise StoreError(self._unreachable_message(exc)) from exc

    def session(self) -> Any:
        """A short session (context manager) for the tables other modules define on this
        store: one engine and one error policy (a lost database is a one-line StoreError)."""
        return self._session()

    def _add_missing_columns(self, tables: list[Any] | None = None) -> None:
        """Add nullable columns newer code defines to tables an older radfed created.

        `create_all` creates missing tables only; a database from before a column was
        added would otherwise fail on every read. Only nullable columns are added.
        """
        from sqlalchemy import inspect, text

        for table in tables if tables is not None else SQLModel.metadata.sorted_tables:
            present = {c["name"] for c in inspect(self.engine).get_columns(table.name)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                kind = column.type.compile(dialect=self.engine.dialect)
                try:
                    with self.engine.begin() as conn:
                        conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                except SQLAlchemyError:  # another process added it first
                    columns = {c["name"] for c in inspect(self.engine).get_columns(table.name)}
                    if column.name not in columns:
                        raise

    def _unreachable_message(self, exc: BaseException) -> str:
        """One line: what failed, on which URL, and how to fix it."""
        if self.engine.dialect.name == "sqlite":
            fix = "check that the folder exists and is writable, or pass another --db / DATABASE_URL"
        else:
            fix = (
                "check that PostgreSQL is running at that host and port, the database "
                "exists and the user may log in, or pass another --db / DATABASE_URL"
            )
        return f"cannot open database {self.safe_url!r}: {_first_line(exc)}. Fix: {fix}"

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A short session; a lost or locked database surfaces as a one-line StoreError.

        Integrity errors (unknown run id...) are programming errors and propagate as is.
        """
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except (OperationalError, InterfaceError) as exc:
            raise StoreError(self._unreachable_message(exc)) from exc

    def close(self) -> None:
        """Release all pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    # -- writes ------------------------------------------------------------------

    def _add(self, row: SQLModel) -> int:
        """Insert one row in its own transaction and return its id."""
        with self._session() as session:
            session.add(row)
            session.commit()
            return row.id  # type: ignore[attr-defined,no-any-return]

    def create_experiment(
        self,
        name: str,
        spec_json: str,
        backbone: str,
        weights: str,
        strategy: str,
        sweep: str | None = None,
        weight_source: str | None = None,
        privacy: dict[str, Any] | None = None,
    ) -> int:
        """Record an experiment spec; returns its id for `start_run`.

        `sweep` and `weight_source` tag the experiments of one `coordinator sweep`, so the
        leaderboard groups them exactly (not by parsing names). `privacy` is the resolved
        differential-privacy table (mode and every parameter).
        """
        return self._add(
            Experiment(
                name=name,
                spec_json=spec_json,
                backbone=backbone,
                weights=str(weights),
                strategy=strategy,
                sweep=sweep or None,
                weight_source=weight_source or None,
                privacy=json.dumps(privacy or {"mode": "none"}, sort_keys=True),
            )
        )

    def start_run(
        self,
        experiment_id: int,
        flwr_run_id: int | str,
        rounds_planned: int,
        holdout: str | None = None,
        simulated: str | None = None,
    ) -> int:
        """Record a run as "running"; returns the run id the other writes take.
        `simulated` describes the virtual clinics of a `coordinator simulate` run."""
        return self._add(
            Run(
                experiment_id=experiment_id,
                flwr_run_id=str(flwr_run_id),
                rounds_planned=int(rounds_planned),
                holdout=holdout or None,
                simulated=simulated or None,
            )
        )

    def finish_run(
        self,
        run_id: int,
        status: str,
        final_auroc: float | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a run "completed" or "failed" with its final pooled AUROC / error."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, not {status!r}")
        stmt = (
            update(Run)
            .where(Run.id == run_id)  # type: ignore[arg-type]
            .values(status=status, final_auroc=_float(final_auroc), error=error, finished_at=_utcnow())
        )
        self._execute_update(stmt, f"no run with id {run_id}")

    def _execute_update(self, stmt: Any, missing: str | None = None) -> int:
        """Run one UPDATE in its own transaction; optionally fail if it matched nothing."""
        with self._session() as session:
            count = session.execute(stmt).rowcount
            session.commit()
        if missing and count == 0:
            raise KeyError(missing)
        return int(count)

    def record_round(self, run_id: int, server_round: int, **metrics: Any) -> None:
        """Insert or update the aggregated metrics of a round.

        Accepts train_loss, val_loss, val_accuracy, val_auroc, duration_s, num_clinics,
        num_examples, bytes_down, bytes_up, `pooled` (a dict of pooled quality figures) and
        `per_class` (pooled per-class figures of a task with more than two labels).  Only the given,
        non-None metrics overwrite an existing row, so the fit and the evaluate step of
        one round can each record their half without erasing the other's.  Unknown
        names raise ValueError (typos).
        """
        unknown = set(metrics) - set(ROUND_FLOAT_FIELDS) - set(ROUND_INT_FIELDS) - set(ROUND_JSON_FIELDS)
        if unknown:
            raise ValueError(f"unknown round metrics: {sorted(unknown)}")
        values = {
            k: _json_ready(v) if k in ROUND_JSON_FIELDS else _float(v) if k in ROUND_FLOAT_FIELDS else _int(v)
            for k, v in metrics.items()
        }
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(RoundResult).values(run_id=run_id, server_round=int(server_round), created_at=_utcnow(), **values)
        known = {k: v for k, v in values.items() if v is not None}
        if known:
            stmt = stmt.on_conflict_do_update(index_elements=["run_id", "server_round"], set_=known)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["run_id", "server_round"])
        with self._session() as session:
            session.execute(stmt)
            session.commit()

    def record_clinic_result(
        self,
        run_id: int,
        server_round: int,
        clinic: str,
        node_id: int | str,
        phase: str,
        loss: float | None,
        num_examples: int,
        accuracy: float | None = None,
        auroc: float | None = None,
        device: str | None = None,
        note: str | None = None,
        quality: dict[str, Any] | None = None,
        bytes_down: int | None = None,
        bytes_up: int | None = None,
        per_class: dict[str, Any] | None = None,
        scores: dict[str, Any] | None = None,
    ) -> int:
        """Record what one clinic reported for one round's phase.

        "excluded" rows mark an update the server's guards refused, "late" rows a
        clinic that did not reply before the round timeout; `note` says why.
        "holdout" rows are the final model evaluated at a clinic kept out of training.
        `quality` holds the clinic's AUROC CI, sensitivity, specificity, threshold, ECE;
        `per_class` (tasks with more than two labels) each class's AUROC [CI] and the macro mean;
        `scores` the clinic's score histogram and calibration bins (radfed.pooled.score_summary).
        """
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
        return self._add(
            ClinicRoundResult(
                run_id=run_id,
                server_round=int(server_round),
                clinic=str(clinic),
                node_id=str(node_id),
                phase=phase,
                loss=_float(loss),
                accuracy=_float(accuracy),
                auroc=_float(auroc),
                num_examples=int(num_examples),
                device=device,
                note=note,
                quality=_json_ready(quality) if quality else None,
                bytes_down=_int(bytes_down),
                bytes_up=_int(bytes_up),
                per_class=_json_ready(per_class) if per_class else None,
                scores=_json_ready(scores) if scores else None,
            )
        )

    def record_baseline(
        self,
        experiment_id: int,
        pooled: dict[str, Any],
        clinics: dict[str, Any],
        holdout: str | None = None,
        duration_s: float | None = None,
    ) -> int:
        """Record a centralised baseline: pooled figures (radfed.evaluation.QualityReport
        keys) and each clinic's, for the leaderboard's federated ÷ centralised ratio."""
        return self._add(
            Baseline(
                experiment_id=experiment_id,
                holdout=holdout or None,
                auroc=_float(pooled.get("auroc")),
                auroc_low=_float(pooled.get("auroc_low")),
                auroc_high=_float(pooled.get("auroc_high")),
                sensitivity=_float(pooled.get("sensitivity")),
                specificity=_float(pooled.get("specificity")),
                threshold=_float(pooled.get("threshold")),
                ece=_float(pooled.get("ece")),
                num_examples=int(pooled.get("images") or 0),
                num_patients=int(pooled.get("patients") or 0),
                clinics=_json_ready(clinics),
                duration_s=_float(duration_s),
            )
        )

    def baselines(self) -> list[dict[str, Any]]:
        """Every baseline with its experiment's name, newest first."""
        with self._session() as session:
            pairs = session.exec(
                select(Baseline, Experiment)
                .join(Experiment, Baseline.experiment_id == Experiment.id)  # type: ignore[arg-type]
                .order_by(Baseline.id.desc())  # type: ignore[union-attr]
            ).all()
        return [{**_row_dict(b), "experiment": e.name, "spec_json": e.spec_json} for b, e in pairs]

    def record_data_card(self, run_id: int, clinic: str, node_id: int | str, card: dict[str, Any]) -> None:
        """Store a clinic's data card for a run; a second card from the same clinic replaces the first."""
        card_json = json.dumps(card, sort_keys=True, separators=(",", ":"))
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(ClinicDataCard).values(
            run_id=run_id, clinic=str(clinic), node_id=str(node_id), card_json=card_json, created_at=_utcnow()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "clinic"], set_={"node_id": str(node_id), "card_json": card_json}
        )
        with self._session() as session:
            session.execute(stmt)
            session.commit()

    def record_checkpoint(
        self,
        run_id: int,
        server_round: int,
        path: str | os.PathLike[str],
        sha256: str,
        metric_name: str,
        metric_value: float | None = None,
    ) -> int:
        """Record a saved global model; the metric may follow via `set_checkpoint_metric`."""
        return self._add(
            Checkpoint(
                run_id=run_id,
                server_round=int(server_round),
                path=str(path),
                sha256=sha256,
                metric_name=metric_name,
                metric_value=_float(metric_value),
            )
        )

    def select_round(self, run_id: int, server_round: int) -> None:
        """Mark the round whose checkpoint is the run's selected model (best pooled AUROC)."""
        self._execute_update(
            update(Run)
            .where(Run.id == run_id)  # type: ignore[arg-type]
            .values(selected_round=int(server_round)),
            f"no run with id {run_id}",
        )

    def stop_early(self, run_id: int, server_round: int, note: str) -> None:
        """Record that early stopping made `server_round` the run's last (with why)."""
        self._execute_update(
            update(Run)
            .where(Run.id == run_id)  # type: ignore[arg-type]
            .values(stopped_early=note[:500]),
            f"no run with id {run_id}",
        )

    def selected_round(self, run_id: int) -> int | None:
        """The round `select_round` marked (None before any)."""
        with self._session() as session:
            run = session.get(Run, run_id)
        return run.selected_round if run is not None else None

    def set_checkpoint_metric(self, run_id: int, server_round: int, metric_value: float | None) -> int:
        """Fill in the metric of the round's checkpoint(s) once evaluated.

        Returns how many checkpoints were updated (0 when that round saved none,
        which is normal when checkpoints are kept only every few rounds).
        """
        stmt = (
            update(Checkpoint)
            .where(Checkpoint.run_id == run_id, Checkpoint.server_round == int(server_round))  # type: ignore[arg-type]
            .values(metric_value=_float(metric_value))
        )
        return self._execute_update(stmt)

    # -- reads -------------------------------------------------------------------

    def run_row(self, flwr_run_id: int | str) -> Run | None:
        """The run a Flower run id belongs to (its current id, or one it was resumed from)."""
        key = str(flwr_run_id)
        with self._session() as session:
            run = session.exec(select(Run).where(Run.flwr_run_id == key)).first()
            if run is None:
                for candidate in session.exec(select(Run).where(Run.resumed_from.is_not(None))):  # type: ignore[union-attr]
                    if key in str(candidate.resumed_from).split(","):
                        return candidate
            return run

    def experiment_spec(self, experiment_id: int) -> str:
        """The spec JSON an experiment was created with."""
        with self._session() as session:
            exp = session.get(Experiment, experiment_id)
        if exp is None:
            raise StoreError(f"no experiment with id {experiment_id}")
        return exp.spec_json

    def checkpoints_of(self, run_id: int) -> list[dict[str, Any]]:
        """Every checkpoint row of a run, newest round first."""
        with self._session() as session:
            rows = session.exec(
                select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.server_round.desc())
            ).all()  # type: ignore[attr-defined]
        return [
            {"round": r.server_round, "path": r.path, "sha256": r.sha256, "metric_value": r.metric_value} for r in rows
        ]

    def score_histograms(self, run_id: int, server_round: int | None = None) -> list[dict[str, Any]]:
        """The score histograms the clinics sent with their evaluations of a run (one round,
        or every round), ordered by round, phase and clinic: {"server_round", "clinic",
        "phase", "scores"}. Kept out of `leaderboard`, which every dashboard page reads,
        because only the ROC and calibration views need them."""
        crr = ClinicRoundResult
        query = select(crr).where(crr.run_id == run_id, crr.phase.in_(("evaluate", "holdout")))  # type: ignore[attr-defined]
        if server_round is not None:
            query = query.where(crr.server_round == int(server_round))
        with self._session() as session:
            rows = session.exec(query.order_by(crr.server_round, crr.phase, crr.clinic, crr.id)).all()  # type: ignore[arg-type]
        return [
            {"server_round": r.server_round, "clinic": r.clinic, "phase": r.phase, "scores": r.scores}
            for r in rows
            if r.scores
        ]  # JSON null and SQL NULL alike: none sent

    def resume_run(self, run_id: int, flwr_run_id: int | str, from_round: int) -> None:
        """Continue a run after round `from_round` under a new Flower run id.

        Rows of later rounds (a round interrupted before its checkpoint) and the evaluation
        of round `from_round` (made again by the clinics on resume) are removed, so that
        no round is counted twice; the run is `running` again and keeps its earlier ids.
        """
        from sqlalchemy import delete

        with self._session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise StoreError(f"no run with id {run_id}")
            earlier = [x for x in (run.resumed_from or "").split(",") if x] + [run.flwr_run_id]
            run.resumed_from, run.flwr_run_id = ",".join(earlier), str(flwr_run_id)
            run.status, run.error, run.finished_at, run.final_auroc = "running", None, None, None
            session.add(run)
            crr, rr, ck = ClinicRoundResult, RoundResult, Checkpoint
            session.exec(
                delete(crr).where(
                    crr.run_id == run_id,
                    (crr.server_round > from_round)
                    | (  # type: ignore[call-overload]
                        (crr.server_round == from_round) & (crr.phase == "evaluate")
                    ),
                )
            )
            session.exec(delete(rr).where(rr.run_id == run_id, rr.server_round > from_round))  # type: ignore[call-overload]
            session.exec(delete(ck).where(ck.run_id == run_id, ck.server_round > from_round))  # type: ignore[call-overload]
            session.commit()

    def running_runs(self) -> list[tuple[int, str]]:
        """(store id, Flower run id) of every run still marked running."""
        with self._session() as session:
            rows = session.exec(select(Run).where(Run.status == "running")).all()
        return [(int(r.id), str(r.flwr_run_id)) for r in rows]  # type: ignore[arg-type]

    def run_status(self, flwr_run_id: int | str) -> dict[str, Any] | None:
        """Progress of the (latest) run with this Flower run id, or None if unknown.

        `rounds_recorded` counts recorded rounds numbered 1 and up (round 0 is the
        initial evaluation, not a training round).
        """
        with self._session() as session:
            run = session.exec(
                select(Run).where(Run.flwr_run_id == str(flwr_run_id)).order_by(Run.id.desc())  # type: ignore[union-attr]
            ).first()
            if run is None:
                return None
            rounds = session.exec(
                select(func.count())
                .select_from(RoundResult)
                .where(RoundResult.run_id == run.id, RoundResult.server_round > 0)
            ).one()
        return {
            "run_id": run.id,
            "flwr_run_id": run.flwr_run_id,
            "experiment_id": run.experiment_id,
            "status": run.status,
            "rounds_recorded": int(rounds),
            "rounds_planned": run.rounds_planned,
            "error": run.error,
            "final_auroc": run.final_auroc,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
        }

    def leaderboard(self, include_running: bool = False, running_only: bool = False) -> list[dict[str, Any]]:
        """Finished runs ranked by pooled AUROC (descending, None last; radfed.ranking).

        Each entry is JSON-serialisable and carries its rounds, per-clinic results
        and checkpoints so the dashboard needs a single call.  `include_running`
        adds runs still in progress (ranked the same way) for live views;
        `running_only` reads those alone (the dashboard's Live page, every few seconds).
        """
        statuses = ("running",) if running_only else RUN_STATUSES if include_running else FINISHED_STATUSES
        with self._session() as session:
            pairs = session.exec(
                select(Run, Experiment)
                .join(Experiment, Run.experiment_id == Experiment.id)  # type: ignore[arg-type]
                .where(Run.status.in_(statuses))  # type: ignore[attr-defined]
            ).all()
            run_ids = [run.id for run, _ in pairs]
            children = self._children(session, run_ids)
            who = submitters(
                session,
                [run.flwr_run_id for run, _ in pairs]
                + [earlier for run, _ in pairs for earlier in (run.resumed_from or "").split(",") if earlier],
            )
        entries = [self._entry(run, exp, children) for run, exp in pairs]
        for entry in entries:  # a resumed run keeps its submitter: look its earlier ids up too
            ids = [entry["flwr_run_id"], *(entry["resumed_from"] or "").split(",")]
            entry["submitted_by"] = next((who[i] for i in ids if i in who), None)
        _attach_baselines(entries, self.baselines() if entries else [])
        return annotate(entries)

    @staticmethod
    def _children(session: Session, run_ids: list[Any]) -> dict[str, dict[int, list[dict[str, Any]]]]:
        """Rounds, clinic results, checkpoints and data cards of the given runs, grouped by run id."""
        tables = {
            "rounds": (RoundResult, (RoundResult.server_round,)),
            "clinics": (
                ClinicRoundResult,
                (
                    ClinicRoundResult.server_round,
                    ClinicRoundResult.phase,
                    ClinicRoundResult.clinic,
                    ClinicRoundResult.id,
                ),
            ),
            "checkpoints": (Checkpoint, (Checkpoint.server_round, Checkpoint.id)),
            "data_cards": (ClinicDataCard, (ClinicDataCard.clinic, ClinicDataCard.id)),
        }
        grouped: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for key, (table, order) in tables.items():
            grouped[key] = defaultdict(list)
            if not run_ids:
                continue
            query = select(table).where(table.run_id.in_(run_ids)).order_by(*order)  # type: ignore[attr-defined]
            if table is ClinicRoundResult:  # the histograms stay in the database (`score_histograms`)
                query = query.options(defer(ClinicRoundResult.scores))  # type: ignore[arg-type]
            rows = session.exec(query).all()
            for row in rows:
                item = _row_dict(row, drop=("run_id", "scores"))  # histograms: `score_histograms`
                if key == "data_cards":
                    item["card"] = json.loads(item.pop("card_json"))
                grouped[key][row.run_id].append(item)
        return grouped

    @staticmethod
    def _entry(run: Run, exp: Experiment, children: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
        """One leaderboard entry (rank is filled in after sorting)."""
        return {
            "rank": None,
            "run_id": run.id,
            "flwr_run_id": run.flwr_run_id,
            "experiment_id": exp.id,
            "experiment": exp.name,
            "backbone": exp.backbone,
            "weights": exp.weights,
            "strategy": exp.strategy,
            "spec_json": exp.spec_json,
            "sweep": exp.sweep,
            "weight_source": exp.weight_source,
            "privacy": json.loads(exp.privacy),
            "status": run.status,
            "final_auroc": run.final_auroc,
            "error": run.error,
            "rounds_planned": run.rounds_planned,
            "holdout": run.holdout,
            "resumed_from": run.resumed_from,
            "selected_round": run.selected_round,
            "simulated": run.simulated,
            "stopped_early": run.stopped_early,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "rounds": children["rounds"][run.id],  # type: ignore[index]
            "clinics": children["clinics"][run.id],  # type: ignore[index]
            "checkpoints": children["checkpoints"][run.id],  # type: ignore[index]
            "data_cards": children["data_cards"][run.id],  # type: ignore[index]
        }
