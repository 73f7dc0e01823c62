"""The experiment queue: submissions from the dashboard's Submit page, validated like a
TOML spec; the coordinator's `queue list|show|approve|reject|run-next`; and one queued
experiment run end to end on a real SuperLink with two clinics, onto the leaderboard
with who submitted it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from radfed.audit import Registry
from radfed.experiment_queue import MAX_PENDING, ExperimentQueue, QueueError, spec_from_form
from radfed.store import Store
from radfed.weight_files import weights_dir
from tests.accounts import add_researcher, log_in_app, served_on
from tests.federation import cli
from tests.test_store import pg_schema_url, store_url  # noqa: F401 - fixtures: SQLite and PostgreSQL

SMALL = dict(
    name="queued-small",
    labels=["normal", "opacity"],
    backbone="resnet18",
    image_size=32,
    rounds=1,
    local_epochs=1,
    batch_size=8,
    min_clinics=2,
    seed=1,
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'radfed.db'}"


@pytest.fixture
def queue(db: str) -> ExperimentQueue:
    return ExperimentQueue(Store(db))


def _coordinator(*args: str, db: str, timeout: float = 60):
    return cli("server.cli", *args, "--db", db, timeout=timeout)


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- submissions ------------------------------------------------------------------------


def test_a_valid_form_is_queued_as_pending(queue: ExperimentQueue) -> None:
    sid = queue.submit(SMALL, "alice")
    (row,) = queue.submissions()
    assert row["id"] == sid and row["status"] == "pending" and row["submitted_by"] == "alice"
    assert row["spec"]["backbone"] == "resnet18" and row["spec"]["weights"] == "random"
    assert row["spec"]["label_smoothing"] == 0.1  # the spec's defaults fill in the rest
    assert [e["kind"] for e in queue.audit.events(researcher="alice")] == ["submitted"]


@pytest.mark.parametrize(
    "change, says",
    [
        ({"name": "../../etc/passwd"}, "experiment name"),
        ({"name": "x; rm -rf /"}, "experiment name"),
        ({"labels": ["normal", "../opacity"]}, "task labels"),
        ({"labels": ["only-one"]}, "task labels"),
        ({"weights": "/etc/passwd"}, "weights registry"),
        ({"weights": "../radfed.db"}, "weights registry"),
        ({"data": {"window": "lung"}}, "cannot be set from a submission"),
        ({"sweep": "x"}, "cannot be set from a submission"),
        ({"backbone": "vit_huge"}, "key 'backbone'"),
        ({"freeze": "__import__('os')"}, "key 'freeze'"),
        ({"rounds": 0}, "key 'rounds'"),
        ({"learning_rate": 0.0}, "key 'learning_rate'"),
        ({"strategy": "fedprox", "strategy_params": {"proximal_mu": -1.0}}, "proximal_mu"),
        ({"strategy": "fedavg", "strategy_params": {"eval": 1}}, "not a parameter of fedavg"),
        ({"privacy": {"mode": "secagg+"}}, "secagg+ needs min_clinics >= 3"),
        ({"privacy": {"mode": "client-fixed", "clipping_norm": 0.0}}, "privacy"),
    ],
)
def test_an_invalid_form_is_refused_in_one_line_and_nothing_is_queued(queue, change, says) -> None:
    with pytest.raises(QueueError) as refused:
        queue.submit({**SMALL, **change}, "alice")
    assert says in str(refused.value) and "\n" not in str(refused.value)
    assert queue.submissions() == [] and queue.audit.events(kind="submitted") == []


def test_weights_come_from_the_registry_only(queue: ExperimentQueue, tmp_path: Path) -> None:
    (weights_dir() / "radimagenet-resnet18.pt").write_bytes(b"not really weights")
    (tmp_path / "elsewhere.pt").write_bytes(b"x")
    spec = spec_from_form({**SMALL, "weights": "radimagenet-resnet18.pt"})
    assert spec.weights == str(weights_dir() / "radimagenet-resnet18.pt")
    with pytest.raises(QueueError):
        spec_from_form({**SMALL, "weights": str(tmp_path / "elsewhere.pt")})
    sid = queue.submit({**SMALL, "weights": "radimagenet-resnet18.pt"}, "alice")
    queue.approve(sid, "coordinator")
    row = queue.claim()
    assert queue.spec_of(row).weights == spec.weights
    (weights_dir() / "radimagenet-resnet18.pt").unlink()  # gone before it ran
    with pytest.raises(QueueError, match="no such file|weights registry"):
        queue.spec_of(row)


def test_a_researcher_cannot_flood_the_queue(queue: ExperimentQueue) -> None:
    for i in range(MAX_PENDING):
        queue.submit({**SMALL, "name": f"e{i}"}, "alice")
    with pytest.raises(QueueError, match="waiting for review already"):
        queue.submit(SMALL, "alice")
    queue.submit(SMALL, "bob")


def test_approved_submissions_are_claimed_once_in_order(store_url: str) -> None:  # noqa: F811 - fixture
    queue = ExperimentQueue(Store(store_url))
    first, second, third = (queue.submit({**SMALL, "name": n}, "alice") for n in ("a", "b", "c"))
    queue.approve(second, "coordinator")
    queue.approve(first, "coordinator")
    assert queue.claim().id == second  # in the order they were approved
    assert queue.claim().id == first
    assert queue.claim() is None  # the third is still pending
    with pytest.raises(QueueError, match="is pending, not approved"):
        queue.claim(third)
    queue.release(first)
    assert queue.get(first).status == "approved"


# -- the dashboard's Submit page --------------------------------------------------------


def _submit_app(monkeypatch, db: str) -> AppTest:
    def page() -> None:
        from dashboard.submit import submit_page

        submit_page()

    monkeypatch.setattr(sys, "argv", ["app", "--db", db])
    return AppTest.from_function(page, default_timeout=90)


def _fill_form(at: AppTest, name: str) -> AppTest:
    at.text_input(key="submit.name").input(name)
    at.selectbox(key="submit.backbone").set_value("resnet18")
    at.number_input(key="submit.image_size").set_value(32)
    at.number_input(key="submit.rounds").set_value(1)
    at.number_input(key="submit.batch_size").set_value(8)
    at.number_input(key="submit.seed").set_value(1)
    return at


def submit_through_the_page(monkeypatch, db: str, secret: str, name: str = "queued-small") -> AppTest:
    """Log in on the Submit page, fill the form, press Submit."""
    at = _submit_app(monkeypatch, db).run()
    at = log_in_app(at, "alice", secret, form="radfed-login-submit")
    assert not at.exception, at.exception
    _fill_form(at, name)
    at.button(key="submit.submit").click()
    return at.run()


@pytest.mark.e2e
def test_submit_page_needs_a_login_even_on_loopback(monkeypatch, db) -> None:
    add_researcher(db, "alice")
    with served_on("127.0.0.1"):
        at = _submit_app(monkeypatch, db).run()
    assert [t.label for t in at.text_input] == ["Name", "Secret"] and not at.selectbox


@pytest.mark.e2e
def test_submit_page_queues_a_valid_form_and_refuses_an_invalid_one(monkeypatch, db) -> None:
    secret = add_researcher(db, "alice")
    with served_on("0.0.0.0"):
        at = submit_through_the_page(monkeypatch, db, secret)
        assert not at.exception, at.exception
        assert not at.error and "Submitted as #1" in at.success[0].value
        assert at.dataframe[0].value["Status"].tolist() == ["pending"]
        at.text_input(key="submit.name").input("../escape")
        at.button(key="submit.submit").click()
        at.run()
        at.text_input(key="submit.labels").input("normal")
        at.text_input(key="submit.name").input("fine-name")
        at.button(key="submit.submit").click()
        at.run()
    assert len(at.error) == 1 and "task labels" in at.error[0].value and not at.success
    rows = ExperimentQueue(Store(db)).submissions()
    assert [(r["name"], r["submitted_by"]) for r in rows] == [("queued-small", "alice")]
    assert rows[0]["spec"]["image_size"] == 32


@pytest.mark.e2e
def test_submit_page_shows_the_coordinators_decision(monkeypatch, db) -> None:
    secret = add_researcher(db, "alice")
    queue = ExperimentQueue(Store(db))
    queue.reject(queue.submit(SMALL, "alice"), "coordinator", "use min_clinics = 3")
    queue.submit({**SMALL, "name": "by-bob"}, "bob")
    with served_on("0.0.0.0"):
        at = log_in_app(_submit_app(monkeypatch, db).run(), "alice", secret, form="radfed-login-submit")
    frame = at.dataframe[0].value
    assert frame["Experiment"].tolist() == ["queued-small"]  # not bob's
    assert frame["Status"].tolist() == ["rejected"] and frame["Reason"].tolist() == ["use min_clinics = 3"]


# -- the coordinator's commands ---------------------------------------------------------


@pytest.mark.e2e
def test_queue_cli_list_approve_reject_with_one_line_errors(queue: ExperimentQueue, db: str) -> None:
    first = queue.submit(SMALL, "alice")
    second = queue.submit({**SMALL, "name": "second"}, "bob")
    assert _coordinator("queue", "approve", str(first), "--reviewer", "carl", db=db).returncode == 0
    again = _coordinator("queue", "approve", str(first), db=db)
    assert again.returncode == 2 and f"submission {first} is approved by carl, not pending" in _one_line(again)
    unknown = _coordinator("queue", "approve", "999", db=db)
    assert unknown.returncode == 2 and "no submission 999" in _one_line(unknown)
    assert "no submission 999" in _one_line(_coordinator("queue", "reject", "999", "--reason", "x", db=db))
    assert "give a reason" in _one_line(_coordinator("queue", "reject", str(second), "--reason", " ", db=db))
    rejected = _coordinator("queue", "reject", str(second), "--reason", "too many rounds", "--reviewer", "carl", db=db)
    assert rejected.returncode == 0, rejected.stderr
    late = _coordinator("queue", "approve", str(second), db=db)
    assert late.returncode == 2 and "is rejected by carl" in _one_line(late)
    listed = json.loads(_coordinator("queue", "list", "--json", db=db).stdout)
    assert [(r["id"], r["status"], r["reviewer"], r["reason"]) for r in listed] == [
        (first, "approved", "carl", None),
        (second, "rejected", "carl", "too many rounds"),
    ]
    pending = json.loads(_coordinator("queue", "list", "--status", "pending", "--json", db=db).stdout)
    assert pending == []
    assert "unknown status" in _one_line(_coordinator("queue", "list", "--status", "weird", db=db))
    table = _coordinator("queue", "list", db=db)
    assert table.returncode == 0 and "alice" in table.stdout and "bob" in table.stdout
    shown = json.loads(_coordinator("queue", "show", str(first), db=db).stdout)
    assert shown["spec"]["name"] == "queued-small"
    kinds = [(e["kind"], e["researcher"]) for e in Registry(Store(db)).events()]
    assert ("approved", "alice") in kinds and ("rejected", "bob") in kinds


@pytest.mark.e2e
def test_run_next_with_nothing_approved_says_so(db: str) -> None:
    Store(db).close()
    proc = _coordinator("queue", "run-next", "--insecure", db=db)
    assert proc.returncode == 0 and "no approved submission is waiting" in _one_line(proc)


@pytest.mark.e2e
def test_run_next_with_the_superlink_down_puts_the_submission_back(queue: ExperimentQueue, db: str) -> None:
    from radfed.processes import free_port

    sid = queue.submit(SMALL, "alice")
    queue.approve(sid, "coordinator")
    proc = _coordinator("queue", "run-next", "--insecure", "--control", f"127.0.0.1:{free_port()}", db=db)
    assert proc.returncode == 1 and "not reachable" in proc.stderr.strip().splitlines()[-1]
    assert queue.get(sid).status == "approved"
    other = queue.submit({**SMALL, "name": "other"}, "bob")
    now = _coordinator(
        "queue", "approve", str(other), "--run", "--insecure", "--control", f"127.0.0.1:{free_port()}", db=db
    )
    assert now.returncode == 1 and "not reachable" in now.stderr.strip().splitlines()[-1]
    assert f"approved submission {other}" in now.stderr and queue.get(other).status == "approved"


def test_leaderboard_shows_who_submitted_a_run_also_after_a_resume(store_url: str) -> None:  # noqa: F811 - fixture
    queue = ExperimentQueue(Store(store_url))
    store = queue.store
    sid = queue.submit(SMALL, "alice")
    queue.approve(sid, "coordinator")
    queue.claim()
    queue.link(sid, "111")
    exp = store.create_experiment("queued-small", "{}", "resnet18", "random", "fedavg")
    run = store.start_run(exp, "111", rounds_planned=1)
    store.finish_run(run, "completed", final_auroc=0.7)
    other = store.start_run(store.create_experiment("by-hand", "{}", "resnet18", "random", "fedavg"), "222", 1)
    store.finish_run(other, "completed", final_auroc=0.6)
    board = {e["experiment"]: e for e in store.leaderboard()}
    assert board["queued-small"]["submitted_by"] == "alice" and board["by-hand"]["submitted_by"] is None
    store.resume_run(run, "333", from_round=0)
    entries = {e["experiment"]: e for e in store.leaderboard(include_running=True)}
    assert entries["queued-small"]["submitted_by"] == "alice"


# -- end to end -------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_submitted_approved_run_next_completes_on_the_leaderboard(monkeypatch, tmp_path, federation) -> None:
    """Submit on the dashboard page, approve on the CLI, `queue run-next` on a real
    SuperLink with two SuperNodes: the run completes and the leaderboard says who asked."""
    from radfed.demo_data import write_clinic

    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    secret = add_researcher(db, "alice")
    with served_on("0.0.0.0"):
        at = submit_through_the_page(monkeypatch, db, secret)
    assert not at.error and at.success, [e.value for e in at.error]
    (row,) = json.loads(_coordinator("queue", "list", "--json", db=db).stdout)
    approved = _coordinator("queue", "approve", str(row["id"]), db=db)
    assert approved.returncode == 0, approved.stderr
    for i in (1, 2):
        write_clinic(tmp_path / f"clinic-{i}", clinic_index=i - 1, n_patients=6, prevalence=0.5, seed=i)
        federation.start_clinic(f"clinic-{i}", tmp_path / f"clinic-{i}")
    proc = _coordinator("queue", "run-next", "--control", federation.control, "--insecure", db=db, timeout=360)
    assert proc.returncode == 0, proc.stderr[-3000:] + federation.logs()
    assert f"submission {row['id']} (queued-small) by alice" in proc.stderr
    (done,) = json.loads(_coordinator("queue", "list", "--json", db=db).stdout)
    assert done["status"] == "completed" and done["run"]
    board = json.loads(_coordinator("leaderboard", "--json", db=db).stdout)
    entry = next(e for e in board if e["flwr_run_id"] == done["run"])
    assert entry["status"] == "completed" and entry["submitted_by"] == "alice"
    assert entry["experiment"] == "queued-small" and entry["backbone"] == "resnet18"
    assert json.loads(entry["spec_json"])["image_size"] == 32
    assert sorted({c["clinic"] for c in entry["clinics"] if c["phase"] == "train"}) == ["clinic-1", "clinic-2"]
    table = _coordinator("leaderboard", db=db)
    assert "alice" in table.stdout
    kinds = [e["kind"] for e in Registry(Store(db)).events(researcher="alice")]
    assert kinds[-2:] == ["submitted", "approved"]
