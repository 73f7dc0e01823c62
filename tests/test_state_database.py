"""The SuperLink's state database waits for a lock instead of failing a healthy run."""

from __future__ import annotations

import sqlite3

from server.doors import STATE_BUSY_TIMEOUT_MS, patient_state_database


def test_flower_connections_get_the_longer_busy_timeout(tmp_path):
    from flwr.supercore import sql_mixin

    before = dict(sql_mixin.SQLITE_PRAGMAS)
    try:
        patient_state_database()
        conn = sqlite3.connect(tmp_path / "state.db")
        sql_mixin._set_sqlite_pragmas(conn, None)  # what Flower runs on every new connection
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == STATE_BUSY_TIMEOUT_MS
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # the rest untouched
        conn.close()
    finally:
        sql_mixin.SQLITE_PRAGMAS = tuple(before.items())


def test_payloads_in_flight_stay_in_memory_while_the_state_stays_on_disk(tmp_path, monkeypatch):
    """Models in flight are not written to the state database (0.5 s per 45 MB on 2 cores);
    nodes, runs and messages still are, so a restart keeps the federation."""
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supercore.object_store.sql_object_store import SqlObjectStore
    from flwr.superlink import config_loader
    from flwr.superlink.federation import NoOpFederationManager

    from server.doors import payloads_in_memory

    monkeypatch.setattr(config_loader, "ObjectStoreFactory", config_loader.ObjectStoreFactory)
    database = str(tmp_path / "state.db")
    stores, _ = config_loader.get_objectstore_linkstate_factories(database, NoOpFederationManager())
    assert isinstance(stores.store(), SqlObjectStore)  # Flower's default: payloads on disk
    payloads_in_memory()
    payloads_in_memory()  # twice is harmless
    stores, links = config_loader.get_objectstore_linkstate_factories(database, NoOpFederationManager())
    assert isinstance(stores.store(), InMemoryObjectStore)
    assert links.objectstore_factory is stores
    links.state()  # the link state itself still opens the SQLite file
    assert (tmp_path / "state.db").stat().st_size > 0


def test_one_thread_at_a_time_uses_the_state_database_and_a_nested_session_does_not_wait(tmp_path, monkeypatch):
    """Two of Flower's request threads in the same SuperLink: their sessions take turns
    (without the lock they overlap, and collide on SQLite's write lock)."""
    import threading
    import time

    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore import sql_mixin
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager

    from server.doors import one_state_session_at_a_time

    monkeypatch.setattr(sql_mixin.SqlMixin, "session", sql_mixin.SqlMixin.session)  # restored after
    one_state_session_at_a_time()
    one_state_session_at_a_time()  # twice is harmless
    state = LinkStateFactory(str(tmp_path / "state.db"), NoOpFederationManager(), ObjectStoreFactory()).state()
    spans: list[tuple[float, float]] = []

    def hold() -> None:
        with state.session():
            with state.session():  # Flower nests sessions: the same thread goes on
                started = time.monotonic()
                time.sleep(0.2)
                spans.append((started, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    spans.sort()
    assert len(spans) == 3
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans


def test_a_run_status_read_sweeps_expired_tasks_at_most_once_a_second(tmp_path, monkeypatch):
    """Flower sweeps the task table before every run-status read (each object a round
    moves): radfed's SuperLink sweeps for such reads at most once a second, and every
    other caller still sweeps each time."""
    import time

    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.supercore.corestate.sql_corestate import SqlCoreState
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager

    import server.doors as doors

    for name in ("get_run_status", "get_run_info"):
        monkeypatch.setattr(SqlLinkState, name, getattr(SqlLinkState, name))  # restored after
    sweeps: list[float] = []
    flower_sweep = SqlCoreState._cleanup_expired_task_tokens

    def counted(self):
        sweeps.append(time.monotonic())
        flower_sweep(self)

    monkeypatch.setattr(SqlLinkState, "_cleanup_expired_task_tokens", counted)
    monkeypatch.setattr(doors, "SWEEP_EVERY_S", 0.3)
    state = LinkStateFactory(str(tmp_path / "state.db"), NoOpFederationManager(), ObjectStoreFactory()).state()
    state.get_run_status({1})
    state.get_run_status({1})
    assert len(sweeps) == 2  # Flower's own: a sweep per read

    doors.expired_tasks_swept_once_a_second()
    doors.expired_tasks_swept_once_a_second()  # twice is harmless
    sweeps.clear()
    for _ in range(20):
        state.get_run_status({1})
        state.get_run_info()
    assert len(sweeps) == 1, "twenty reads within 0.3 s sweep once"
    state._cleanup_expired_task_tokens()  # any other caller (claim, activate, finish...) sweeps at once
    assert len(sweeps) == 2
    time.sleep(0.35)
    state.get_run_status({1})
    assert len(sweeps) == 3, "a read after the interval sweeps again"
    assert state.get_run_status({1}) == {} and len(sweeps) == 3
