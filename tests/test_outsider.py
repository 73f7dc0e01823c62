"""An outsider against a real TLS SuperLink started by `coordinator superlink`.

The outsider has what any clinic bundle contains (the federation CA's certificate) or
skips certificate checks altogether, and network access to the clinics' door. Each
attack that worked against a single-port Flower SuperLink has its test here: Control and
Runtime API calls from the public door (raw HTTPS and Flower's own `flwr` CLI), a node key
registered behind the register's back, an unregister forced on one clinic, a foreign
ServerApp bundle, and killing the supervisor. The same calls on the control door succeed,
so each refusal is the door's doing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from radfed.app_bundle import FAB_DIR
from radfed.audit import Registry
from radfed.demo_data import write_clinic
from radfed.pki import CertPaths, node_keypair
from radfed.processes import descendants, reachable
from radfed.store import Store
from server.clinics import add_clinic
from server.control import ControlClient, ControlError
from server.doors import REFUSED_BODY
from server.launch import CONNECTION, Connection
from tests.federation import Federation, cli, secure_federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CONTROL_ROUTES = [
    "register-node",
    "unregister-node",
    "list-nodes",
    "list-runs",
    "start-run",
    "stop-run",
    "stream-logs",
    "get-login-details",
    "pull-artifacts",
]
RUNTIME_ROUTES = [
    "get-nodes",
    "push-messages",
    "pull-messages",
    "get-run",
    "get-fab",
    "list-apps-to-launch",
    "request-token",
    "responses",
]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    with secure_federation(tmp_path_factory.mktemp("outsider-fed")) as federation:
        yield federation


def _post(address: str, path: str, body: bytes = b"") -> httpx.Response:
    """What an outsider sends: HTTPS with certificate checks off, a protobuf body."""
    with httpx.Client(verify=False, timeout=10) as client:
        return client.post(f"https://{address}{path}", content=body, headers={"Content-Type": "application/protobuf"})


def _register_request() -> bytes:
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key
    from flwr.proto.control_pb2 import RegisterNodeRequest
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    key = public_key_to_bytes(load_ssh_public_key(node_keypair()[1].encode()))
    return RegisterNodeRequest(public_key=key, name="intruder").SerializeToString()


def test_public_door_refuses_every_control_and_runtime_call(fed):
    body = _register_request()
    paths = (
        [f"/v1/control/{r}" for r in CONTROL_ROUTES]
        + [f"/v1/runtime/{r}" for r in RUNTIME_ROUTES]
        + [
            "/docs",
            "/openapi.json",
            "/v1/fleet/../control/list-nodes",
            "/v1/fleet/%2e%2e/control/list-nodes",
            "/v1/fleet//v1/control/list-nodes",
            "/V1/CONTROL/LIST-NODES",
            "/v1/control/list-nodes?x=/v1/fleet/",
        ]
    )
    for path in paths:
        res = _post(fed.address, path, body)
        assert res.status_code == 404 and res.content == REFUSED_BODY, (path, res.status_code, res.text[:200])
    # the very same register-node request works on the coordinator's door (loopback)
    res = _post(fed.control, "/v1/control/register-node", body)
    assert res.status_code == 200, res.text[:200]
    # the Fleet API itself is served on the public door (refused by node auth, not by the door)
    res = _post(fed.address, "/v1/fleet/pull-messages", b"")
    assert res.content != REFUSED_BODY


def test_flower_cli_from_the_public_door_gets_nothing(fed, tmp_path):
    key = tmp_path / "intruder.pub"
    key.write_text(node_keypair()[1])
    outsider = Connection(fed.address, tmp_path / "flwr", root_certificates=fed.certs / "ca.crt")
    before = set(fed.node_status())
    attempts = {
        "register": outsider.flwr("supernode", "register", str(key), CONNECTION, timeout=60),
        "list nodes": outsider.flwr("supernode", "ls", CONNECTION, "--format", "json", timeout=60),
        "list runs": outsider.flwr("ls", CONNECTION, "--format", "json", timeout=60),
        "submit": outsider.flwr("run", str(FAB_DIR), CONNECTION, "--format", "json", timeout=120),
        "unregister": outsider.flwr("supernode", "unregister", "1", CONNECTION, timeout=60),
    }
    for what, proc in attempts.items():
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0 or '"success": false' in text, (what, text[-800:])
        assert "node-id" not in text and '"runs"' not in text and '"nodes"' not in text, (what, text[-800:])
    with pytest.raises(ControlError):
        ControlClient(fed.address, fed.certs / "ca.crt").nodes()
    assert set(fed.node_status()) == before  # nothing registered, nothing removed
    runs = Connection(fed.control, tmp_path / "flwr-ok", root_certificates=fed.certs / "ca.crt")
    listed = runs.flwr("ls", CONNECTION, "--format", "json", timeout=60)
    assert listed.returncode == 0 and '"runs"' in listed.stdout, listed.stdout + listed.stderr


def test_key_registered_behind_the_register_is_removed_and_alerted(fed, tmp_path):
    registry = Registry(Store(fed.db))
    other = Registry(Store(f"sqlite:///{tmp_path / 'other.db'}"))
    bundle = add_clinic(other, "clinic-1", fed.address, CertPaths(fed.certs), tmp_path / "rogue.radfed")
    rogue_key = other.clinic("clinic-1").public_key
    control = ControlClient(fed.control, fed.certs / "ca.crt")
    rogue_id = control.register(rogue_key, "clinic-1")  # through the coordinator's own door
    registered_at = time.monotonic()
    fed.wait_for(
        lambda: fed.node_status().get(rogue_id) == "unregistered",
        "the supervisor to remove the unknown key",
        timeout=20,
    )
    assert time.monotonic() - registered_at < 10
    alerts = [e for e in registry.events(kind="alert") if e["node_id"] == str(rogue_id)]
    assert len(alerts) == 1 and "not in the clinic register" in alerts[0]["detail"]
    listed = cli("server.cli", "audit", "--db", fed.db, "--kind", "alert", "--json")
    assert listed.returncode == 0 and f'"node_id": "{rogue_id}"' in listed.stdout
    # the rogue node is refused (its key is gone), in one line
    proc = cli(
        "client_node.cli",
        "start",
        "--bundle",
        str(bundle),
        "--data",
        str(fed.work / "data"),
        "--threads",
        "1",
        "--home",
        str(tmp_path / "nodes"),
        timeout=120,
    )
    assert proc.returncode != 0 and "refused this clinic's node key" in proc.stderr, proc.stderr[-1500:]


def test_forced_unregister_of_one_clinic_does_not_stop_revoking_another(fed, tmp_path):
    registry = Registry(Store(fed.db))
    for name in ("clinic-x", "clinic-y"):
        fed.enrol(name)
    node = lambda name: registry.clinic(name).node_id  # noqa: E731
    fed.wait_for(lambda: node("clinic-x") and node("clinic-y"), "both clinics to be registered")
    x_first = int(node("clinic-x"))
    control = ControlClient(fed.control, fed.certs / "ca.crt")
    control.unregister(x_first)  # forced from behind the register's back
    assert cli("server.cli", "clinic", "revoke", "clinic-y", "--db", fed.db).returncode == 0
    y = int(node("clinic-y"))
    fed.wait_for(lambda: fed.node_status().get(y) == "unregistered", "clinic-y's key to be unregistered", timeout=20)
    # Flower refuses clinic-x's key from now on: the supervisor says so, with the fix, and goes on
    log = fed.work / "logs" / "superlink.log"
    fed.wait_for(
        lambda: "clinic-x: its node key was unregistered outside radfed" in log.read_text(),
        "the supervisor to report clinic-x",
    )
    assert "coordinator clinic revoke clinic-x" in log.read_text()
    assert any(e["kind"] == "revoked" for e in registry.events(clinic="clinic-y"))


def test_foreign_serverapp_bundle_is_refused_before_it_is_unpacked(fed, tmp_path):
    marker = tmp_path / "foreign-serverapp-ran"
    foreign = tmp_path / "fab"
    shutil.copytree(FAB_DIR, foreign, ignore=shutil.ignore_patterns("__pycache__"))
    entry = foreign / "radfed_serverapp.py"
    entry.write_text(f"open({str(marker)!r}, 'w').write('read ca.key here')\n" + entry.read_text())
    conn = Connection(fed.control, tmp_path / "flwr", root_certificates=fed.certs / "ca.crt")
    submitted = conn.flwr("run", str(foreign), CONNECTION, "--format", "json", timeout=120)
    assert '"success": true' in submitted.stdout, submitted.stdout + submitted.stderr
    run_id = json.loads(submitted.stdout[submitted.stdout.find("{") :])["run-id"]

    def refused() -> bool:
        listed = conn.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json", timeout=60).stdout
        run = json.loads(listed[listed.find("{") :])["runs"][0]
        return run["status"] == "finished:failed" and "not approved by this coordinator" in run["status-details"]

    fed.wait_for(refused, "the ServerApp gate to refuse the bundle", timeout=90)
    assert not marker.exists()
    installed = list((fed.work / "flwr-link").rglob("radfed_serverapp.py"))
    assert all("foreign-serverapp-ran" not in p.read_text() for p in installed)


def test_superlink_dies_with_its_supervisor_and_restarts_on_the_same_ports(tmp_path):
    fed = Federation(tmp_path / "fed", secure=True)
    try:
        fed.start_superlink()
        tree = [fed.superlink.pid, *descendants(fed.superlink.pid)]
        assert len(tree) >= 3  # supervisor, the two-door SuperLink, Flower's SuperExec
        os.kill(fed.superlink.pid, signal.SIGKILL)
        fed.superlink.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in tree[1:]):
            assert time.monotonic() < deadline, f"orphans left: {tree[1:]}"
            time.sleep(0.2)
        assert reachable(fed.address, timeout=1) and reachable(fed.control, timeout=1)
        fed.procs.remove(fed.superlink)
        fed.start_superlink()  # same ports, at once
        assert reachable(fed.address) is None and reachable(fed.control) is None
        busy = cli(
            "server.cli",
            "superlink",
            "--certs",
            str(fed.certs),
            "--port",
            str(fed.port),
            "--control-port",
            str(fed.control_port),
            "--db",
            fed.db,
            timeout=60,
        )
        assert busy.returncode != 0 and "already in use" in busy.stderr
    finally:
        fed.close()


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(400)
def test_run_samples_only_the_register_and_names_clinics_by_key(tmp_path):
    """Membership is the register, and a clinic's name comes from its key.

    The supervisor is held back (`--sync-every 3600`) so that a key registered behind the
    register's back stays online during a run, and the test registers the clinics' keys
    itself. Three nodes are online: clinic-a (enrolled), clinic-b (enrolled, but its node
    claims to be clinic-a) and a rogue (key unknown to the register, also claiming
    clinic-a). The run samples two clinics; the rogue never receives a message.
    """
    from sqlmodel import Session, select

    from radfed.spec import ExperimentSpec, spec_to_toml
    from radfed.store import ClinicRoundResult

    fed = Federation(tmp_path / "fed", secure=True)
    try:
        fed.start_superlink("--sync-every", "3600")
        registry = Registry(Store(fed.db))
        control = ControlClient(fed.control, fed.certs / "ca.crt")
        other = Registry(Store(f"sqlite:///{tmp_path / 'other.db'}"))
        certs = CertPaths(fed.certs)
        bundles = {
            "clinic-a": fed.enrol("clinic-a"),
            "clinic-b": add_clinic(other, "clinic-a", fed.address, certs, tmp_path / "b.radfed"),
        }
        registry.add_clinic("clinic-b", other.clinic("clinic-a").public_key, "sha256:test")
        other.revoke("clinic-a")
        bundles["rogue"] = add_clinic(other, "rogue", fed.address, certs, tmp_path / "rogue.radfed")
        ids = {}
        for name, key in (
            ("clinic-a", registry.clinic("clinic-a").public_key),
            ("clinic-b", registry.clinic("clinic-b").public_key),
            ("rogue", other.clinic("rogue").public_key),
        ):
            ids[name] = control.register(key, "clinic-a")  # every node claims to be clinic-a
            if name != "rogue":
                registry.set_node_id(name, ids[name])
        for i, (name, bundle) in enumerate(bundles.items()):
            write_clinic(tmp_path / name, clinic_index=i, n_patients=6, prevalence=0.5)
            fed.start_clinic(name, tmp_path / name, "", bundle, "--home", str(tmp_path / "homes" / name))
        fed.wait_for(
            lambda: all(fed.node_status().get(n) == "online" for n in ids.values()), "three nodes online", timeout=120
        )
        spec = ExperimentSpec(
            name="members-only",
            backbone="resnet18",
            image_size=32,
            rounds=1,
            local_epochs=1,
            batch_size=8,
            learning_rate=1e-3,
            min_clinics=2,
            clinic_timeout=60.0,
            seed=0,
        )
        (tmp_path / "exp.toml").write_text(spec_to_toml(spec))
        proc = cli(
            "server.cli",
            "run",
            str(tmp_path / "exp.toml"),
            "--control",
            fed.control,
            "--root-certificates",
            str(fed.certs / "ca.crt"),
            "--db",
            fed.db,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:] + fed.logs()
        assert fed.node_status().get(ids["rogue"]) == "online"  # Flower offered it all along
        with Session(Store(fed.db).engine) as s:
            rows = {(r.clinic, r.node_id, r.phase) for r in s.exec(select(ClinicRoundResult))}
        named = {(clinic, node) for clinic, node, _ in rows}
        assert named == {("clinic-a", str(ids["clinic-a"])), ("clinic-b", str(ids["clinic-b"]))}, rows
        contributed = {(e["clinic"], e["node_id"]) for e in registry.events(kind="contributed")}
        assert contributed == named
        homes = tmp_path / "homes"
        assert not (homes / "rogue" / "rogue" / "outbox.jsonl").exists()  # it never answered a message
        assert (homes / "clinic-b" / "clinic-a" / "outbox.jsonl").exists()
    finally:
        fed.close()


def _public_ip() -> str | None:
    """This machine's first non-loopback IPv4 address, if any."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.254", 9))  # no packet is sent: it only picks the route
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_remote_control_door_needs_a_credential_from_the_federation_ca(tmp_path):
    from radfed.pki import init_certs, issue_credential
    from radfed.processes import free_port

    ip = _public_ip()
    if ip is None:
        pytest.skip("no non-loopback address to serve a remote control door on")
    fed = Federation(tmp_path / "fed", secure=True)
    fed.cert_hosts = ["localhost", "127.0.0.1", ip]
    remote = f"{ip}:{free_port(ip)}"
    try:
        fed.start_superlink("--remote-control", remote)
        fed.wait_for(lambda: reachable(remote, timeout=1) is None, "the remote control door")
        ca = fed.certs / "ca.crt"
        good = issue_credential(CertPaths(fed.certs), "alice", tmp_path / "cred")[0]
        stranger = init_certs(tmp_path / "other-pki")
        bad = issue_credential(stranger, "mallory", tmp_path / "bad")[0]
        # no client certificate, or one from another CA: the TLS handshake fails
        for cert in (None, bad):
            with pytest.raises(ControlError):
                ControlClient(remote, ca, credential=cert).nodes()
        with pytest.raises(httpx.HTTPError):
            _post(remote, "/v1/control/list-nodes")
        # a coordinator credential works for the Control API and for `flwr` (run submission's path)
        assert isinstance(ControlClient(remote, ca, credential=good).nodes(), dict)
        listed = Connection(remote, tmp_path / "flwr", root_certificates=ca, credential=good).flwr(
            "ls", CONNECTION, "--format", "json", timeout=60
        )
        assert listed.returncode == 0 and '"runs"' in listed.stdout, listed.stdout + listed.stderr
        refused = Connection(remote, tmp_path / "flwr2", root_certificates=ca).flwr(
            "ls", CONNECTION, "--format", "json", timeout=60
        )
        assert '"runs"' not in refused.stdout
    finally:
        fed.close()
