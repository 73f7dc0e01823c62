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
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
        raise EnrolmentError(f"clinic name '{name}' must be 1-63 letters, digits, '-' or '_' "
                             "(it names the clinic in every record; no patient data)")
    if not certs.complete():
        raise EnrolmentError(f"no federation CA in {certs.folder}; run `coordinator certs init` first")
    existing = registry.clinic(name)
    if existing is not None:
        raise EnrolmentError(f"clinic '{name}' is already enrolled ({existing.status}); "
                             "pick another name, or revoke it first to issue a new key")
    private, public = node_keypair()
    bundle = Bundle(clinic=name, superlink=superlink, ca_pem=certs.ca_cert.read_text(),
                    private_key=private, public_key=public,
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path = out or Path(f"{name}{SUFFIX}")
    if path.is_dir():
        path = path / f"{name}{SUFFIX}"
    write_bundle(path, bundle)
    registry.add_clinic(name, public, fingerprint(public))
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
    """Keeps the SuperLink's registered node keys equal to the register's active clinics."""

    registry: Registry
    control: ControlClient
    known: dict[int, str] = field(default_factory=dict)  # node id → last seen status

    def sync(self) -> list[str]:
        """Register/unregister as needed; record connections; returns what changed."""
        changes: list[str] = []
        nodes = self.control.nodes()
        for clinic in self.registry.clinics():
            node = int(clinic.node_id) if clinic.node_id else None
            registered = node is not None and nodes.get(node) in ("registered", "online", "offline")
            if clinic.status == "active" and not registered:
                node_id = self.control.register(clinic.public_key, clinic.name)
                self.registry.set_node_id(clinic.name, node_id)
                self.registry.event("registered", clinic=clinic.name, node_id=node_id,
                                    detail=f"node key {clinic.fingerprint}")
                nodes[node_id] = "registered"
                changes.append(f"registered {clinic.name}")
            elif clinic.status == "revoked" and registered:
                self.control.unregister(node)  # type: ignore[arg-type]
                nodes[node] = "unregistered"  # type: ignore[index]
                changes.append(f"unregistered {clinic.name}")
        self._connections(nodes)
        return changes

    def _connections(self, nodes: dict[int, str]) -> None:
        names = self.registry.clinic_by_node()
        for node_id, status in nodes.items():
            before = self.known.get(node_id)
            if status == "online" and before != "online":
                self.registry.event("connected", clinic=names.get(str(node_id)), node_id=node_id)
            elif before == "online" and status != "online":
                self.registry.event("disconnected", clinic=names.get(str(node_id)), node_id=node_id,
                                    detail=status)
            self.known[node_id] = status

    def try_sync(self) -> str | None:
        """`sync`, turning a Control API failure into a message (the supervisor keeps going)."""
        try:
            self.sync()
        except ControlError as e:
            return str(e)
        return None
