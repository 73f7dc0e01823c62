"""The federation's register of clinics and its audit trail, in the radfed database.

Enrolments, revocations, registrations with the SuperLink, node connections and
disconnections, which clinic contributed to which round and which updates were
excluded: one row per event, written by the coordinator's commands, the SuperLink
supervisor and the ServerApp's recorder, read by `coordinator audit` and the dashboard.
Researchers' logins, downloads and submissions, and the coordinator's decisions on
them, are recorded under the researcher's name (radfed.researchers, radfed.experiment_queue).
Rows name clinics, researchers and Flower node ids only, never anything about a patient.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel, select

from radfed.store import Store

EVENT_KINDS = (
    "enrolled",
    "revoked",
    "registered",
    "connected",
    "disconnected",
    "contributed",
    "excluded",
    "late",
    "alert",
    "lost",
    "failed",
    "delivered",
    # researchers (dashboard) and the coordinator's review of their submissions
    "login",
    "login-failed",
    "logout",
    "downloaded",
    "submitted",
    "approved",
    "rejected",
    "account",
)
CLINIC_STATUSES = ("active", "revoked")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Clinic(SQLModel, table=True):
    """An enrolled clinic: its node key (public half only) and whether it may connect."""

    __tablename__ = "clinics"
    __table_args__ = (UniqueConstraint("name", name="uq_clinic_name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    public_key: str
    fingerprint: str
    status: str = "active"
    node_id: str | None = None  # assigned by the SuperLink at registration (uint64 as text)
    enrolled_at: datetime = Field(default_factory=_utcnow)
    revoked_at: datetime | None = None


class AuditEvent(SQLModel, table=True):
    """One thing that happened in the federation, for the audit trail."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=_utcnow, index=True)
    kind: str = Field(index=True)
    clinic: str | None = Field(default=None, index=True)
    node_id: str | None = None
    flwr_run_id: str | None = None
    server_round: int | None = None
    detail: str | None = None
    researcher: str | None = Field(default=None, index=True)  # who, for researchers' events


_TABLES = [Clinic.__table__, AuditEvent.__table__]  # type: ignore[attr-defined]


class Registry:
    """Clinics and audit events on top of a Store's engine (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_tables(_TABLES)

    def _session(self):
        return self.store.session()  # one engine, one error policy

    # -- clinics -------------------------------------------------------------------

    def add_clinic(self, name: str, public_key: str, fingerprint: str) -> None:
        with self._session() as s:
            s.add(Clinic(name=name, public_key=public_key, fingerprint=fingerprint))
            s.commit()
        self.event("enrolled", clinic=name, detail=f"node key {fingerprint}")

    def clinic(self, name: str) -> Clinic | None:
        with self._session() as s:
            return s.exec(select(Clinic).where(Clinic.name == name)).first()

    def clinics(self) -> list[Clinic]:
        with self._session() as s:
            return list(s.exec(select(Clinic).order_by(Clinic.name)))

    def set_node_id(self, name: str, node_id: int | None) -> None:
        self._update(name, node_id=None if node_id is None else str(node_id))

    def readmit(self, name: str, public_key: str, fingerprint: str) -> None:
        """A revoked clinic active again with a new key (the old one stays unregistered)."""
        self._update(
            name, status="active", public_key=public_key, fingerprint=fingerprint, node_id=None, revoked_at=None
        )
        self.event("enrolled", clinic=name, detail=f"re-admitted with a new node key {fingerprint}")

    def revoke(self, name: str) -> None:
        self._update(name, status="revoked", revoked_at=_utcnow())
        self.event("revoked", clinic=name)

    def _update(self, name: str, **values: Any) -> None:
        with self._session() as s:
            row = s.exec(select(Clinic).where(Clinic.name == name)).one()
            for key, value in values.items():
                setattr(row, key, value)
            s.add(row)
            s.commit()

    def clinic_by_node(self) -> dict[str, str]:
        """Registered node id → clinic name (the SuperLink ties each id to one key)."""
        return {c.node_id: c.name for c in self.clinics() if c.node_id}

    # -- audit ---------------------------------------------------------------------

    def event(
        self,
        kind: str,
        clinic: str | None = None,
        node_id: int | str | None = None,
        flwr_run_id: str | None = None,
        server_round: int | None = None,
        detail: str | None = None,
        researcher: str | None = None,
    ) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown audit event kind {kind!r}; one of {', '.join(EVENT_KINDS)}")
        with self._session() as s:
            s.add(
                AuditEvent(
                    kind=kind,
                    clinic=clinic,
                    node_id=None if node_id is None else str(node_id),
                    flwr_run_id=flwr_run_id,
                    server_round=server_round,
                    detail=detail,
                    researcher=researcher,
                )
            )
            s.commit()

    def events(
        self, kind: str | None = None, clinic: str | None = None, limit: int = 1000, researcher: str | None = None
    ) -> list[dict[str, Any]]:
        with self._session() as s:
            query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)  # type: ignore[union-attr]
            if kind:
                query = query.where(AuditEvent.kind == kind)
            if clinic:
                query = query.where(AuditEvent.clinic == clinic)
            if researcher:
                query = query.where(AuditEvent.researcher == researcher)
            rows = list(s.exec(query))
        return [
            {
                "at": r.at.isoformat(),
                "kind": r.kind,
                "clinic": r.clinic,
                "node_id": r.node_id,
                "run": r.flwr_run_id,
                "round": r.server_round,
                "detail": r.detail,
                "researcher": r.researcher,
            }
            for r in reversed(rows)
        ]
