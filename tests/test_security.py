"""Onboarding and transport security with real processes on loopback.

One TLS SuperLink with SuperNode authentication (`coordinator superlink`, certificates
from `coordinator certs init`'s code), clinics enrolled with `coordinator clinic add`,
and `client-node start` refused — in one clear line each — when its key is unknown or
revoked, when it speaks plaintext to a TLS SuperLink, or when the SuperLink's certificate
comes from another CA. (An enrolled clinic training over TLS is the demo test.)
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest

from radfed.audit import Registry
from radfed.enrolment import BundleError, check_tls, read_bundle, speaks_tls
from radfed.pki import CertPaths, init_certs
from radfed.store import Store
from server.clinics import add_clinic
from tests.federation import Federation, cli, secure_federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    with secure_federation(tmp_path_factory.mktemp("secure-fed")) as federation:
        yield federation


def _start(fed: Federation, *args: str, timeout: float = 120):
    return cli(
        "client_node.cli",
        "start",
        "--data",
        str(fed.work / "data"),
        "--threads",
        "1",
        "--home",
        str(fed.work / "nodes"),
        *args,
        timeout=timeout,
    )


def _one_error_line(proc) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    return errors[0]


def _foreign_bundle(tmp: Path, address: str, same_ca: CertPaths | None) -> Path:
    """A well-formed bundle the federation never enrolled (own register; maybe own CA)."""
    certs = same_ca or init_certs(tmp / "other-pki")
    registry = Registry(Store(f"sqlite:///{tmp / 'other.db'}"))
    return add_clinic(registry, "stranger", address, certs, tmp / "stranger.radfed")


def test_unknown_key_is_refused(fed, tmp_path):
    bundle = _foreign_bundle(tmp_path, fed.address, CertPaths(fed.certs))
    line = _one_error_line(_start(fed, "--bundle", str(bundle)))
    assert "refused this clinic's node key" in line


def test_revoked_clinic_is_cut_off_and_refused(fed):
    bundle = fed.enrol("clinic-r")
    registry = Registry(Store(fed.db))
    node = lambda: registry.clinic("clinic-r").node_id  # noqa: E731
    fed.wait_for(lambda: node() is not None, "the supervisor to register clinic-r")
    proc = fed.start_clinic("clinic-r", fed.work / "data", bundle=bundle)
    fed.wait_for(lambda: fed.node_status().get(int(node())) == "online", "clinic-r to connect")
    fed.wait_for(
        lambda: any(e["kind"] == "connected" for e in registry.events(clinic="clinic-r")),
        "the supervisor to audit the connection",
        timeout=20,
    )

    listed = json.loads(cli("server.cli", "clinic", "list", "--db", fed.db, "--json").stdout)
    assert [(c["name"], c["status"]) for c in listed] == [("clinic-r", "active")]
    assert cli("server.cli", "clinic", "revoke", "clinic-r", "--db", fed.db).returncode == 0
    fed.wait_for(lambda: fed.node_status().get(int(node())) == "unregistered", "the key to be unregistered")
    fed.wait_for(lambda: proc.poll() is not None, "the revoked clinic's node to stop", timeout=90)

    line = _one_error_line(_start(fed, "--name", "clinic-r"))
    assert "refused this clinic's node key" in line and "revoked" in line
    kinds = [e["kind"] for e in registry.events(clinic="clinic-r")]
    assert kinds[:4] == ["enrolled", "registered", "connected", "revoked"]
    assert "disconnected" in kinds


def test_plaintext_node_against_tls_superlink_is_refused(fed):
    line = _one_error_line(_start(fed, "--insecure", "--superlink", fed.address, "--name", "plain"))
    assert "requires TLS" in line and "--bundle" in line


def test_certificate_from_another_ca_is_refused(fed, tmp_path):
    bundle = _foreign_bundle(tmp_path, fed.address, same_ca=None)
    line = _one_error_line(_start(fed, "--bundle", str(bundle)))
    assert "does not chain to the CA in your enrolment bundle" in line


def test_superlink_refuses_plaintext_off_loopback_and_missing_certs(tmp_path):
    line = _one_error_line(cli("server.cli", "superlink", "--insecure", "--host", "0.0.0.0"))
    assert "only allowed on a loopback address" in line
    line = _one_error_line(cli("server.cli", "superlink", "--certs", str(tmp_path / "none")))
    assert "coordinator certs init" in line


# ----------------------------------------------------------------- no processes needed


def test_certs_init_keys_private_and_hosts_in_certificate(tmp_path):
    proc = cli("server.cli", "certs", "init", "--hosts", "coord.example.org,10.1.2.3", "--certs", str(tmp_path / "pki"))
    assert proc.returncode == 0, proc.stderr
    for key in ("ca.key", "server.key"):
        assert (tmp_path / "pki" / key).stat().st_mode & 0o777 == 0o600
    info = json.loads(cli("server.cli", "certs", "show", "--certs", str(tmp_path / "pki"), "--json").stdout)
    for host in ("coord.example.org", "10.1.2.3", "127.0.0.1", "localhost"):
        assert host in info["superlink"]["hosts"]
    again = cli("server.cli", "certs", "init", "--certs", str(tmp_path / "pki"))
    assert again.returncode != 0 and "already exists" in again.stderr


def test_bundle_is_verified_and_damage_detected(tmp_path):
    certs = init_certs(tmp_path / "pki")
    registry = Registry(Store(f"sqlite:///{tmp_path / 'r.db'}"))
    path = add_clinic(registry, "clinic-a", "127.0.0.1:9092", certs, tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    bundle = read_bundle(path)
    assert bundle.clinic == "clinic-a" and bundle.public_key.startswith("ecdsa-sha2-nistp384 ")
    body = json.loads(path.read_text())
    body["superlink"] = "evil.example.org:9092"
    path.write_text(json.dumps(body))
    with pytest.raises(BundleError, match="checksum mismatch"):
        read_bundle(path)
    path.write_text("not json")
    with pytest.raises(BundleError, match="not a radfed enrolment bundle"):
        read_bundle(path)
    dup = cli(
        "server.cli",
        "clinic",
        "add",
        "clinic-a",
        "--certs",
        str(tmp_path / "pki"),
        "--db",
        f"sqlite:///{tmp_path / 'r.db'}",
        "--out",
        str(tmp_path / "x.radfed"),
    )
    assert dup.returncode != 0 and "already enrolled" in dup.stderr


class _TlsServer:
    """A bare TLS server on loopback presenting a given certificate (accepts, then closes)."""

    def __init__(self, certs: CertPaths | None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.ctx = None
        if certs:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(certs.server_cert, certs.server_key)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.ctx:
                    with self.ctx.wrap_socket(conn, server_side=True):
                        pass
                else:
                    conn.recv(100)
                    conn.close()
            except (OSError, ssl.SSLError):
                pass

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("case", ["expired", "not-yet-valid", "plaintext", "valid"])
def test_tls_check_names_the_problem(tmp_path, case):
    now = dt.datetime.now(dt.UTC)
    start = {"expired": now - dt.timedelta(days=30), "not-yet-valid": now + dt.timedelta(days=2)}.get(case)
    certs = init_certs(tmp_path / "pki", days=10 if case == "expired" else 825, not_before=start)
    server = _TlsServer(None if case == "plaintext" else certs)
    try:
        problem = check_tls(server.address, certs.ca_cert.read_text())
        expected = {
            "expired": "expired on",
            "not-yet-valid": "clock skew",
            "plaintext": "running without TLS",
            "valid": None,
        }[case]
        if expected is None:
            assert problem is None and speaks_tls(server.address)
        else:
            assert problem is not None and expected in problem, problem
    finally:
        server.close()


def test_app_gate_runs_only_approved_bundles(tmp_path):
    from flwr.cli.build import build_fab_from_disk

    from radfed.app_bundle import FAB_DIR, AppNotApproved, approved_hashes, check_fab, guarded_install

    approved = approved_hashes()
    own = build_fab_from_disk(FAB_DIR)
    assert check_fab(own, approved)
    changed = tmp_path / "fab"
    shutil.copytree(FAB_DIR, changed, ignore=shutil.ignore_patterns("__pycache__"))
    entry = changed / "radfed_clientapp.py"
    entry.write_text(entry.read_text() + "\nimport os  # anything else the coordinator might send\n")
    foreign = build_fab_from_disk(changed)
    with pytest.raises(AppNotApproved, match="not approved by this clinic"):
        check_fab(foreign, approved)
    installed = []
    gate = guarded_install(lambda content, **kw: installed.append(content), "this clinic")
    with pytest.raises(AppNotApproved):
        gate(foreign, skip_prompt=True)
    assert installed == []
    import hashlib

    assert check_fab(foreign, approved_hashes([hashlib.sha256(foreign).hexdigest()]))


def test_revoked_clinic_is_readmitted_with_a_new_key(fed, tmp_path):
    registry = Registry(Store(fed.db))
    old = read_bundle(fed.enrol("clinic-back"))
    fed.wait_for(lambda: registry.clinic("clinic-back").node_id, "clinic-back registered")
    old_node = int(registry.clinic("clinic-back").node_id)
    assert cli("server.cli", "clinic", "revoke", "clinic-back", "--db", fed.db).returncode == 0
    fed.wait_for(lambda: fed.node_status().get(old_node) == "unregistered", "the old key unregistered")
    proc = cli(
        "server.cli",
        "clinic",
        "readmit",
        "clinic-back",
        "--superlink",
        fed.address,
        "--out",
        str(tmp_path / "new.radfed"),
        "--certs",
        str(fed.certs),
        "--db",
        fed.db,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    new = read_bundle(tmp_path / "new.radfed")
    assert new.clinic == "clinic-back" and new.public_key != old.public_key
    fed.wait_for(lambda: registry.clinic("clinic-back").node_id not in (None, str(old_node)), "the new key registered")
    assert fed.node_status()[int(registry.clinic("clinic-back").node_id)] == "registered"
    assert fed.node_status()[old_node] == "unregistered"
    again = cli("server.cli", "clinic", "readmit", "clinic-back", "--db", fed.db, "--certs", str(fed.certs))
    assert again.returncode != 0 and "revoke it first" in again.stderr
