"""Behaviour of radfed.store against SQLite and PostgreSQL.

PostgreSQL comes from RADFED_TEST_POSTGRES_URL (default: local trust auth).  Each
test session works in its own fresh schema, dropped at the end, so repeated or
parallel runs never see each other's rows.  When the server cannot be reached the
PostgreSQL cases are skipped, unless RADFED_REQUIRE_POSTGRES=1 makes that a failure.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from radfed.store import Store, StoreError, default_database_url

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BIG_NODE_ID = 2**64 - 1  # Flower node ids are uint64; above 2**63 breaks BIGINT
BIG_RUN_ID = 2**63 + 12345


def _pg_base_url() -> str:
    """Test server URL, forced onto the psycopg 3 driver."""
    url = os.environ.get("RADFED_TEST_POSTGRES_URL") or DEFAULT_PG_URL
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A URL whose search_path points at a fresh schema for this test session."""
    base = _pg_base_url()
    schema = f"radfed_test_{secrets.token_hex(6)}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # unreachable server, missing role or database
        engine.dispose()
        reason = f"PostgreSQL at {make_url(base).render_as_string()} unusable: {str(exc).splitlines()[0]}"
        if os.environ.get("RADFED_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind; PostgreSQL tables are dropped after each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'radfed.db'}"
        return
    url = request.getfixturevalue("pg_schema_url")
    yield url
    cleaner = Store(url)
    SQLModel.metadata.drop_all(cleaner.engine)
    cleaner.close()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as opened:
        yield opened


def _finished_run(store: Store, name: str, auroc: float | None, status: str = "completed") -> int:
    """An experiment with one run of two rounds, finished with the given AUROC."""
    exp = store.create_experiment(name, json.dumps({"name": name}), "resnet50", "RadImageNet-ResNet50.pt", "fedavg")
    run = store.start_run(exp, f"{abs(hash(name))}", rounds_planned=2)
    for rnd in (1, 2):
        store.record_round(run, rnd, train_loss=1.0 / rnd, val_auroc=auroc, num_clinics=2, num_examples=40)
    store.finish_run(run, status, final_auroc=auroc, error="boom" if status == "failed" else None)
    return run


# ------------------------------------------------------------------- ranking


def test_leaderboard_ranks_by_auroc_with_none_last(store: Store) -> None:
    _finished_run(store, "middle", 0.71)
    _finished_run(store, "no-auroc", None, status="failed")
    _finished_run(store, "best", 0.93)
    _finished_run(store, "worst", 0.55, status="failed")
    running_exp = store.create_experiment("live", "{}", "densenet121", "random", "fedprox")
    store.start_run(running_exp, "7", rounds_planned=5)

    board = store.leaderboard()

    assert [e["experiment"] for e in board] == ["best", "middle", "worst", "no-auroc"]
    assert [e["rank"] for e in board] == [1, 2, 3, 4]
    assert [e["status"] for e in board] == ["completed", "completed", "failed", "failed"]
    assert board[2]["error"] == "boom"
    assert board[0]["backbone"] == "resnet50" and board[0]["weights"] == "RadImageNet-ResNet50.pt"
    assert [r["server_round"] for r in board[0]["rounds"]] == [1, 2]
    assert board[0]["finished_at"] >= board[0]["started_at"]
    live = [e for e in store.leaderboard(include_running=True) if e["status"] == "running"]
    assert [e["experiment"] for e in live] == ["live"]


def test_leaderboard_empty(store: Store) -> None:
    assert store.leaderboard() == []


# ------------------------------------------------------------------- rounds


def test_record_round_twice_updates_the_same_row(store: Store) -> None:
    exp = store.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, "1", rounds_planned=3)

    store.record_round(run, 1, train_loss=0.9, num_clinics=3, num_examples=300)
    store.record_round(run, 1, val_loss=0.8, val_accuracy=0.6, val_auroc=0.65)
    store.record_round(run, 1, val_auroc=0.66, train_loss=None)  # overwrites; None keeps
    store.finish_run(run, "completed", final_auroc=0.66)

    (entry,) = store.leaderboard()
    (round_1,) = entry["rounds"]
    assert round_1["server_round"] == 1
    assert round_1["train_loss"] == pytest.approx(0.9)
    assert round_1["val_loss"] == pytest.approx(0.8)
    assert round_1["val_accuracy"] == pytest.approx(0.6)
    assert round_1["val_auroc"] == pytest.approx(0.66)
    assert (round_1["num_clinics"], round_1["num_examples"]) == (3, 300)


def test_record_round_rejects_unknown_metric(store: Store) -> None:
    exp = store.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, "1", rounds_planned=1)
    with pytest.raises(ValueError, match="auroc"):
        store.record_round(run, 1, auroc=0.5)


def test_run_status_tracks_progress(store: Store) -> None:
    assert store.run_status("404") is None
    exp = store.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, 99, rounds_planned=3)
    store.record_round(run, 0, val_auroc=0.5)  # initial evaluation is not a training round
    store.record_round(run, 1, val_auroc=0.6)

    status = store.run_status(99)
    assert status is not None
    assert (status["run_id"], status["status"]) == (run, "running")
    assert (status["rounds_recorded"], status["rounds_planned"]) == (1, 3)

    store.finish_run(run, "failed", error="clinic-b dropped out")
    status = store.run_status("99")
    assert status is not None
    assert status["status"] == "failed" and status["error"] == "clinic-b dropped out"
    assert status["final_auroc"] is None and status["finished_at"] is not None


def test_finish_run_validates(store: Store) -> None:
    exp = store.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, "1", rounds_planned=1)
    with pytest.raises(ValueError):
        store.finish_run(run, "running")
    with pytest.raises(KeyError):
        store.finish_run(run + 1000, "completed")


# ------------------------------------------------------------------- checkpoints


def test_checkpoint_metric_is_filled_in_later(store: Store, tmp_path: Path) -> None:
    exp = store.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, "1", rounds_planned=2)
    store.record_checkpoint(run, 1, tmp_path / "round-1.pt", "a" * 64, "val_auroc")
    store.record_checkpoint(run, 2, str(tmp_path / "round-2.pt"), "b" * 64, "val_auroc", 0.5)

    assert store.set_checkpoint_metric(run, 1, 0.81) == 1
    assert store.set_checkpoint_metric(run, 3, 0.9) == 0  # no checkpoint that round
    store.set_checkpoint_metric(run, 2, 0.84)
    store.finish_run(run, "completed", final_auroc=0.84)

    checkpoints = store.leaderboard()[0]["checkpoints"]
    assert [(c["server_round"], c["metric_value"]) for c in checkpoints] == [(1, 0.81), (2, 0.84)]
    assert checkpoints[0]["path"] == str(tmp_path / "round-1.pt")
    assert checkpoints[0]["sha256"] == "a" * 64 and checkpoints[0]["metric_name"] == "val_auroc"


# ------------------------------------------------------------------- clinics and ids


def test_uint64_ids_round_trip_as_strings(store: Store) -> None:
    exp = store.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, BIG_RUN_ID, rounds_planned=1)
    store.record_clinic_result(run, 1, "clinic-a", BIG_NODE_ID, "train", 0.4, 120, device="cuda:0")
    store.record_clinic_result(
        run, 1, "clinic-b", str(2**63), "evaluate", 0.5, 80, accuracy=0.7, auroc=0.75, device="cpu"
    )
    store.finish_run(run, "completed", final_auroc=0.75)

    status = store.run_status(str(BIG_RUN_ID))
    assert status is not None and status["flwr_run_id"] == str(BIG_RUN_ID)
    clinics = store.leaderboard()[0]["clinics"]
    by_clinic = {c["clinic"]: c for c in clinics}
    assert by_clinic["clinic-a"]["node_id"] == str(BIG_NODE_ID)
    assert by_clinic["clinic-b"]["node_id"] == str(2**63)
    assert by_clinic["clinic-b"]["phase"] == "evaluate" and by_clinic["clinic-b"]["auroc"] == 0.75
    assert by_clinic["clinic-a"]["num_examples"] == 120 and by_clinic["clinic-a"]["device"] == "cuda:0"


def test_record_clinic_result_rejects_unknown_phase(store: Store) -> None:
    exp = store.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, "1", rounds_planned=1)
    with pytest.raises(ValueError):
        store.record_clinic_result(run, 1, "clinic-a", 1, "predict", 0.1, 10)


def test_leaderboard_is_json_serialisable(store: Store, tmp_path: Path) -> None:
    exp = store.create_experiment("e", json.dumps({"rounds": 1}), "resnet50", "random", "fedavg")
    run = store.start_run(exp, "1", rounds_planned=1)
    store.record_round(run, 1, val_auroc=float("nan"), val_loss=0.3)  # single-class AUROC
    store.record_clinic_result(run, 1, "clinic-a", BIG_NODE_ID, "evaluate", 0.3, 10, auroc=float("nan"))
    store.record_checkpoint(run, 1, tmp_path / "c.pt", "0" * 64, "val_auroc")
    store.finish_run(run, "completed", final_auroc=0.5)

    board = store.leaderboard()
    assert json.loads(json.dumps(board, allow_nan=False)) == board
    assert board[0]["rounds"][0]["val_auroc"] is None  # NaN is stored as "unknown"
    assert board[0]["clinics"][0]["auroc"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in board[0]["rounds"][0].values())


# ------------------------------------------------------------------- concurrency


def test_second_store_sees_committed_rows(store_url: str) -> None:
    """The ServerApp writes while the CLI/dashboard (other processes) poll."""
    writer = Store(store_url)
    reader = Store(store_url)
    try:
        exp = writer.create_experiment("e", "{}", "resnet50", "random", "fedavg")
        run = writer.start_run(exp, "5", rounds_planned=2)
        writer.record_round(run, 1, val_auroc=0.6)
        status = reader.run_status("5")
        assert status is not None and status["rounds_recorded"] == 1

        writer.record_round(run, 2, val_auroc=0.7)
        writer.finish_run(run, "completed", final_auroc=0.7)
        assert reader.run_status("5")["status"] == "completed"  # type: ignore[index]
        assert reader.leaderboard()[0]["final_auroc"] == 0.7
    finally:
        writer.close()
        reader.close()


def test_rows_survive_a_writer_that_never_closes(store_url: str) -> None:
    """Each write commits on its own, so a crashed ServerApp loses nothing recorded."""
    crashed = Store(store_url)
    exp = crashed.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    crashed.start_run(exp, "6", rounds_planned=2)
    crashed.engine.dispose()  # connections dropped without any explicit commit/close
    with Store(store_url) as fresh:
        assert fresh.run_status("6")["status"] == "running"  # type: ignore[index]


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    db = tmp_path / "radfed.db"
    Store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ------------------------------------------------------------------- URLs and errors


def test_default_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RADFED_HOME", str(tmp_path / "home"))
    url = default_database_url()
    assert url == f"sqlite:///{tmp_path / 'home' / 'radfed.db'}"
    assert (tmp_path / "home").is_dir()
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    assert default_database_url() == "postgresql://u@h/db"


def test_store_none_uses_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RADFED_HOME", str(tmp_path))
    with Store() as opened:
        opened.create_experiment("e", "{}", "resnet50", "random", "fedavg")
    assert (tmp_path / "radfed.db").exists()


def test_plain_postgresql_url_uses_psycopg(pg_schema_url: str) -> None:
    plain = pg_schema_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with Store(plain) as opened:
        assert opened.engine.dialect.driver == "psycopg"
        assert opened.leaderboard() == []
        SQLModel.metadata.drop_all(opened.engine)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "not a url"),
        ("mysql://u@h/db", "SQLite and PostgreSQL"),
        ("postgresql://alice:s3cret@127.0.0.1:1/radfed", "127.0.0.1:1"),
        ("postgresql+psycopg2://u@127.0.0.1/db", "psycopg"),
    ],
)
def test_bad_urls_raise_one_line_store_error(url: str, expected: str) -> None:
    with pytest.raises(StoreError) as info:
        Store(url)
    message = str(info.value)
    assert expected in message and "Fix:" in message
    assert "\n" not in message and "s3cret" not in message


def test_missing_sqlite_folder_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no-such-folder.*Fix:"):
        Store(f"sqlite:///{tmp_path / 'no-such-folder' / 'radfed.db'}")


# ------------------------------------------------------------------- learning quality


def test_quality_pooled_holdout_and_baseline_ratio(store: Store) -> None:
    """Per-clinic quality JSON (NaN stored as null), pooled round figures, the held-out
    clinic's row, and the federated ÷ centralised ratio against the comparable baseline."""
    spec = json.dumps({"name": "q", "backbone": "resnet18", "rounds": 2, "strategy": "fedavg"})
    exp = store.create_experiment("q", spec, "resnet18", "random", "fedavg")
    run = store.start_run(exp, "11", rounds_planned=2, holdout="clinic-3")
    store.record_clinic_result(
        run,
        2,
        "clinic-1",
        "1",
        "evaluate",
        loss=0.3,
        num_examples=20,
        auroc=0.9,
        quality={"auroc_low": 0.8, "auroc_high": math.nan},
    )
    store.record_clinic_result(
        run, 2, "clinic-3", "3", "holdout", loss=0.5, num_examples=12, auroc=0.7, quality={"sensitivity": 0.6}
    )
    store.record_round(run, 2, val_auroc=0.9, pooled={"auroc": 0.88, "ece": 0.05})
    store.record_round(run, 2, train_loss=0.1)  # a later partial write keeps the pooled figures
    store.finish_run(run, "completed", final_auroc=0.9)
    other = json.dumps({"name": "q", "backbone": "resnet18", "rounds": 3})  # another budget
    for spec_json, auroc, holdout in ((spec, 0.9, None), (other, 0.5, "clinic-3"), (spec, 0.8, "clinic-3")):
        base_exp = store.create_experiment("q", spec_json, "resnet18", "random", "centralized")
        store.record_baseline(
            base_exp,
            {"auroc": auroc, "auroc_low": auroc - 0.1, "images": 50, "patients": 20},
            {"clinic-1": {"auroc": auroc}},
            holdout=holdout,
        )

    [entry] = store.leaderboard()
    assert entry["holdout"] == "clinic-3"
    evaluate, holdout = [c for c in entry["clinics"] if c["phase"] in ("evaluate", "holdout")]
    assert evaluate["quality"] == {"auroc_low": 0.8, "auroc_high": None}
    assert holdout["clinic"] == "clinic-3" and holdout["quality"] == {"sensitivity": 0.6}
    assert entry["pooled"] == {"auroc": 0.88, "ece": 0.05}
    assert entry["baseline"]["auroc"] == 0.8 and entry["baseline"]["holdout"] == "clinic-3"
    assert entry["baseline"]["clinics"] == {"clinic-1": {"auroc": 0.8}}
    assert entry["vs_central"] == pytest.approx(0.88 / 0.8)
    json.dumps(entry)


# ------------------------------------------------------------ traffic and sweeps


def test_bytes_per_round_and_clinic_and_sweep_tags_reach_the_leaderboard(store: Store) -> None:
    exp = store.create_experiment(
        "s-radimagenet-resnet50-freeze-all-lr0.01",
        "{}",
        "resnet50",
        "r50.pth",
        "fedavg",
        sweep="s",
        weight_source="radimagenet",
    )
    run = store.start_run(exp, "1", rounds_planned=1)
    big = 3 * 2**31  # a round of a large model with many clinics passes 32 bits
    store.record_round(run, 1, bytes_down=big, bytes_up=4096, duration_s=2.5)
    store.record_round(run, 1, val_auroc=0.7)  # later writes keep the bytes
    store.record_clinic_result(run, 1, "clinic-a", BIG_NODE_ID, "train", 0.4, 10, bytes_down=big // 2, bytes_up=2048)
    store.finish_run(run, "completed", final_auroc=0.7)
    (entry,) = store.leaderboard()
    assert (entry["sweep"], entry["weight_source"]) == ("s", "radimagenet")
    (round1,) = entry["rounds"]
    assert (round1["bytes_down"], round1["bytes_up"], round1["duration_s"]) == (big, 4096, 2.5)
    (clinic,) = entry["clinics"]
    assert (clinic["bytes_down"], clinic["bytes_up"]) == (big // 2, 2048)


def test_a_database_from_before_a_new_column_gets_it(store_url: str) -> None:
    with Store(store_url) as first:
        with first.engine.begin() as conn:
            conn.execute(text("ALTER TABLE round_results DROP COLUMN bytes_down"))
    with Store(store_url) as reopened:  # adds the missing nullable column
        exp = reopened.create_experiment("e", "{}", "resnet50", "random", "fedavg")
        run = reopened.start_run(exp, "1", rounds_planned=1)
        reopened.record_round(run, 1, bytes_down=123)
        reopened.finish_run(run, "completed")
        assert reopened.leaderboard()[0]["rounds"][0]["bytes_down"] == 123


def test_data_cards_are_stored_once_per_clinic_and_listed(store: Store) -> None:
    run = _finished_run(store, "cards", 0.8)
    card = {"labels": ["normal", "opacity"], "train": {"total_images": 10}, "modalities": {"CR": 12}}
    store.record_data_card(run, "clinic-a", BIG_NODE_ID, {**card, "modalities": {"CR": 1}})
    store.record_data_card(run, "clinic-a", BIG_NODE_ID, card)  # a repeat replaces, never duplicates
    store.record_data_card(run, "clinic-b", 7, {**card, "modalities": {"DX": 3}})
    [entry] = store.leaderboard()
    cards = entry["data_cards"]
    assert [c["clinic"] for c in cards] == ["clinic-a", "clinic-b"]
    assert cards[0]["card"] == card and cards[0]["node_id"] == str(BIG_NODE_ID)
    assert cards[1]["card"]["modalities"] == {"DX": 3}
    json.dumps(entry)
