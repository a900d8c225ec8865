"""Two connections to one SQLite store in one process (the daemon's and its web's): what
one commits stays visible to other processes, whatever they open and close meanwhile."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from spoolq.store.sqlite import SqliteStore


def other_process_count(db: Path) -> int:
    """Open, read and close the store from another process (as ``spoolq jobs`` does)."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(db.execute('SELECT count(*) FROM lanes').fetchone()[0]); db.close()"
    )
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_a_second_connection_does_not_cost_the_first_its_locks(tmp_path: Path) -> None:
    db = tmp_path / "spoolq.db"
    first = SqliteStore(db)
    second = SqliteStore(db)  # opened after: must not release the first one's locks
    try:
        first.set_lanes({"a": 1})
        assert other_process_count(db) == 1  # that process closed its connection: not last
        first.set_lanes({"b": 1})
        second.set_lanes({"c": 1})
        assert other_process_count(db) == 3
        assert Path(f"{db}-wal").exists()  # the WAL both connections write in is still there
    finally:
        second.close()
        first.close()
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT count(*) FROM lanes").fetchone()[0] == 3
