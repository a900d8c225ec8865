"""SQLite faults are told apart by SQLite's result code: a lock passes (the daemon backs off
and retries), a broken query does not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spoolq.store.sqlite import _transient


def error_of(fn: object) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as info:
        fn()  # type: ignore[operator]
    return info.value


def test_a_locked_database_is_transient_and_a_bad_query_is_not(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(db, isolation_level=None, timeout=0.01)
    try:
        assert _transient(error_of(lambda: other.execute("BEGIN IMMEDIATE")))
        assert not _transient(error_of(lambda: other.execute("SELECT * FROM missing")))
        assert not _transient(error_of(lambda: other.execute("INSERT INTO t VALUES (")))
    finally:
        other.close()
        holder.close()


def test_a_read_only_file_is_transient(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        assert _transient(error_of(lambda: ro.execute("INSERT INTO t VALUES (1)")))
    finally:
        ro.close()
