"""Who may read the store: the state directory is 0750 and the SQLite store with its -wal
and -shm files 0640 whatever the umask, so jobs' argv, env and reasons stay with the daemon's
user and group. Real daemons, real files."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, Env

STORE_FILES = ("spoolq.db", "spoolq.db-wal", "spoolq.db-shm")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start_under(env: Env, umask: int) -> DaemonProcess:
    old = os.umask(umask)  # the daemon inherits it; restored before anything else runs here
    try:
        return env.start()
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o002, 0o022], ids=["umask002", "umask022"])
def test_state_dir_0750_and_store_files_0640(env: Env, umask: int) -> None:
    d = start_under(env, umask)
    job = env.publish("echo private\n")
    d.wait_for("succeeded")
    assert mode(env.state) == 0o750
    for name in STORE_FILES:  # the daemon holds the store open: the WAL files exist now
        assert mode(env.state / name) == 0o640, name
    assert mode(env.state / "logs") == 0o750
    [entry] = env.jobs()
    assert mode(Path(entry["log"])) == 0o640
    assert entry["trigger"] == str(job)
    assert d.stop() == 0


def test_an_older_world_readable_store_is_made_0640(env: Env) -> None:
    env.state.mkdir(mode=0o750)
    db = env.state / "spoolq.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    d = env.start()
    assert mode(db) == 0o640
    for name in STORE_FILES[1:]:
        assert mode(env.state / name) == 0o640, name
    assert d.stop() == 0
