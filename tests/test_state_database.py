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
