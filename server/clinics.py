"""Enrolling, revoking and registering clinics: the coordinator's side of onboarding.

A clinic exists for the federation when it is in the register (radfed database) with
status `active`; the SuperLink knows it when its node key is registered there (Flower's
SuperNode authentication). `Enrolment.sync` keeps the two in step: it registers active
clinics the SuperLink does not know yet and unregisters revoked ones. The SuperLink
supervisor runs it at start (a SuperLink without a state file forgets registrations when
it restarts) and then every few seconds, so `coordinator clinic add|revoke` take effect
whether or not the SuperLink is running when they are typed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from radfed.audit import Registry
from radfed.enrolment import SUFFIX, Bundle, write_bundle
from radfed.pki import CertPaths, fingerprint, node_keypair
from server.control import ControlClient, ControlError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class EnrolmentError(RuntimeError):
    """A clinic operation that is refused; one line."""


def add_clinic(registry: Registry, name: str, superlink: str, certs: CertPaths, out: Path | None) -> Path:
    """Create a clinic's key pair and bundle, and put it in the register (active)."""
    if not NAME.match(name):
        raise EnrolmentError(
            f"clinic name '{name}' must be 1-63 letters, digits, '-' or '_' "
            "(it names the clinic in every record; no patient data)"
        )
    if not certs.complete():
        raise EnrolmentError(f"no federation CA in {certs.folder}; run `coordinator certs init` first")
    existing = registry.clinic(name)
    if existing is not None:
        raise EnrolmentError(
            f"clinic '{name}' is already enrolled ({existing.status}); "
            "pick another name, or revoke it first to issue a new key"
        )
    path, public = _issue_bundle(name, superlink, certs, out)
    registry.add_clinic(name, public, fingerprint(public))
    return path


def _issue_bundle(name: str, superlink: str, certs: CertPaths, out: Path | None) -> tuple[Path, str]:
    """A fresh node key pair written into the clinic's bundle; returns (path, public key)."""
    private, public = node_keypair()
    bundle = Bundle(
        clinic=name,
        superlink=superlink,
        ca_pem=certs.ca_cert.read_text(),
        private_key=private,
        public_key=public,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    path = out or Path(f"{name}{SUFFIX}")
    if path.is_dir():
        path = path / f"{name}{SUFFIX}"
    write_bundle(path, bundle)
    return path, public


def readmit_clinic(registry: Registry, name: str, superlink: str, certs: CertPaths, out: Path | None) -> Path:
    """Issue a revoked clinic a new key pair and bundle; it is active again under its name.

    The old key stays refused (the SuperLink unregistered it); the supervisor registers
    the new one within seconds. Its records keep the same clinic name.
    """
    clinic = registry.clinic(name)
    if clinic is None:
        raise EnrolmentError(f"no clinic named '{name}' is enrolled; use `coordinator clinic add {name}`")
    if clinic.status != "revoked":
        raise EnrolmentError(
            f"clinic '{name}' is {clinic.status}; revoke it first "
            f"(`coordinator clinic revoke {name}`) to issue a new key"
        )
    if not certs.complete():
        raise EnrolmentError(f"no federation CA in {certs.folder}; run `coordinator certs init` first")
    path, public = _issue_bundle(name, superlink, certs, out)
    registry.readmit(name, public, fingerprint(public))
    return path


def revoke_clinic(registry: Registry, name: str) -> None:
    clinic = registry.clinic(name)
    if clinic is None:
        known = ", ".join(c.name for c in registry.clinics()) or "none"
        raise EnrolmentError(f"no clinic named '{name}' is enrolled (enrolled: {known})")
    if clinic.status == "revoked":
        raise EnrolmentError(f"clinic '{name}' is already revoked")
    registry.revoke(name)


@dataclass
class Enrolment:
    """Keeps the SuperLink's registered node keys equal to the register's active clinics.

    Fails closed: each clinic is synced on its own (a Control API error for one never stops
    the others), a key the register does not know is unregistered and audited as an alert,
    and a revoked clinic stays out of every run (server.membership) until its key is gone.
    """

    registry: Registry
    control: ControlClient
    known: dict[int, str] = field(default_factory=dict)  # node id → last seen status
    alerted: set[int] = field(default_factory=set)  # unknown node ids already audited
    retry_after: dict[str, tuple[float, str]] = field(default_factory=dict)  # clinic → (time, problem)
    backoff: float = 60.0  # seconds before a failed registration is tried again

    def sync(self) -> list[str]:
        """Register/unregister as needed; record connections; returns what changed.

        Raises ControlError naming every clinic whose sync failed, after trying them all.
        """
        changes: list[str] = []
        problems: list[str] = []
        nodes = self.control.nodes()
        clinics = self.registry.clinics()
        for clinic in clinics:
            after, problem = self.retry_after.get(clinic.name, (0.0, ""))
            if time.monotonic() < after:  # a failed clinic is retried every `backoff` seconds
                problems.append(problem)
                continue
            try:
                change = self._sync_clinic(clinic, nodes)
            except ControlError as e:
                self.retry_after[clinic.name] = (time.monotonic() + self.backoff, f"{clinic.name}: {e}")
                problems.append(f"{clinic.name}: {e}")
                continue
            self.retry_after.pop(clinic.name, None)
            if change:
                changes.append(change)
        ours = {int(c.node_id) for c in self.registry.clinics() if c.status == "active" and c.node_id}
        for node_id, status in sorted(nodes.items()):
            if node_id in ours or status == "unregistered":
                continue
            try:
                changes.append(self._remove_unknown(node_id, status, clinics))
            except ControlError as e:
                problems.append(f"node {node_id}: {e}")
            nodes[node_id] = "unregistered"
        self._connections(nodes)
        if problems:
            raise ControlError("; ".join(problems))
        return changes

    def _sync_clinic(self, clinic, nodes: dict[int, str]) -> str | None:
        node = int(clinic.node_id) if clinic.node_id else None
        registered = node is not None and nodes.get(node) in ("registered", "online", "offline")
        if clinic.status == "active" and not registered:
            try:
                node_id = self.control.register(clinic.public_key, clinic.name)
            except ControlError as e:
                if "412" not in str(e) and "already in use" not in str(e):
                    raise
                raise ControlError(  # Flower keeps an unregistered key and refuses it again
                    f"its node key was unregistered outside radfed and the SuperLink refuses it now; "
                    f"issue a new key: `coordinator clinic revoke {clinic.name}`, then "
                    f"`coordinator clinic readmit {clinic.name}`"
                ) from None
            self.registry.set_node_id(clinic.name, node_id)
            self.registry.event(
                "registered", clinic=clinic.name, node_id=node_id, detail=f"node key {clinic.fingerprint}"
            )
            nodes[node_id] = "registered"
            return f"registered {clinic.name}"
        if clinic.status == "revoked" and registered:
            self.control.unregister(node)  # type: ignore[arg-type]
            nodes[node] = "unregistered"  # type: ignore[index]
            return f"unregistered {clinic.name}"
        return None

    def _remove_unknown(self, node_id: int, status: str, clinics: list) -> str:
        """Unregister a node key that no active clinic holds; audit it once as an alert."""
        revoked = {int(c.node_id): c.name for c in clinics if c.status == "revoked" and c.node_id}
        self.control.unregister(node_id)
        if node_id not in self.alerted and node_id not in revoked:
            self.alerted.add(node_id)
            self.registry.event(
                "alert", node_id=node_id, detail=f"node key not in the clinic register ({status}); unregistered"
            )
        return f"removed unknown node {node_id}"

    def _connections(self, nodes: dict[int, str]) -> None:
        names = self.registry.clinic_by_node()
        for node_id, status in nodes.items():
            before = self.known.get(node_id)
            if status == "online" and before != "online":
                self.registry.event("connected", clinic=names.get(str(node_id)), node_id=node_id)
            elif before == "online" and status != "online":
                self.registry.event("disconnected", clinic=names.get(str(node_id)), node_id=node_id, detail=status)
            self.known[node_id] = status

    def try_sync(self) -> str | None:
        """`sync`, turning a Control API failure into a message (the supervisor keeps going)."""
        try:
            self.sync()
        except ControlError as e:
            return str(e)
        return None
