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
