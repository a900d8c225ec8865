"""The log pool: a job's log is a spare file linked into place, never a replaced log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolq.logfiles import LogPool
from tests.conftest import wait_until


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[LogPool]:
    p = LogPool(str(tmp_path / ".logpool"), size=4)
    try:
        yield p
    finally:
        p.close()


def _spares(pool: LogPool) -> list[str]:
    return os.listdir(pool.directory)


def test_a_log_is_a_spare_linked_into_place_and_the_spare_name_goes(
    pool: LogPool, tmp_path: Path
) -> None:
    wait_until(lambda: len(_spares(pool)) == 4, 10, "the pool to fill")
    logs = [tmp_path / f"job{i}.log" for i in range(3)]
    for i, log in enumerate(logs):
        fd = pool.open(str(log))
        try:
            os.write(fd, f"job {i}\n".encode())
        finally:
            os.close(fd)
    for i, log in enumerate(logs):
        assert log.read_bytes() == f"job {i}\n".encode()
        assert log.stat().st_mode & 0o777 == 0o640
    # Half empty, the pool's thread refills it and removes the spares' old names; each log
    # keeps its inode under its own name only.
    wait_until(lambda: all(log.stat().st_nlink == 1 for log in logs), 10, "spare names gone")
    wait_until(lambda: len(_spares(pool)) == 4, 10, "the pool to refill")


def test_an_existing_log_is_appended_to_not_replaced(pool: LogPool, tmp_path: Path) -> None:
    log = tmp_path / "retry.log"
    log.write_bytes(b"attempt 1\n")
    wait_until(lambda: len(_spares(pool)) == 4, 10, "the pool to fill")
    fd = pool.open(str(log))
    try:
        os.write(fd, b"attempt 2\n")
    finally:
        os.close(fd)
    assert log.read_bytes() == b"attempt 1\nattempt 2\n"
    assert len(_spares(pool)) == 4  # the spare stays for the next job


def test_with_the_pool_empty_a_log_is_created_directly(tmp_path: Path) -> None:
    pool = LogPool(str(tmp_path / ".logpool"), size=0)
    try:
        fd = pool.open(str(tmp_path / "direct.log"))
        os.close(fd)
        assert (tmp_path / "direct.log").exists()
    finally:
        pool.close()


def test_close_removes_the_spares_and_a_new_pool_removes_a_dead_daemons(tmp_path: Path) -> None:
    directory = tmp_path / ".logpool"
    pool = LogPool(str(directory), size=3)
    wait_until(lambda: len(os.listdir(directory)) == 3, 10, "the pool to fill")
    pool.close()
    assert os.listdir(directory) == []
    # Spares named after a process that no longer exists are a killed daemon's.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (directory / f"{dead}-0a1b2c3d-0").touch()
    # And those named after this very pid are an earlier daemon's (a container's pid 1).
    (directory / f"{os.getpid()}-0a1b2c3d-0").touch()
    # A daemon on another host sharing the directory may have the same pid: not ours.
    (directory / f"{dead}-0a1b2c3d-0-other-host.example").touch()
    pool = LogPool(str(directory), size=0)
    try:
        assert os.listdir(directory) == [f"{dead}-0a1b2c3d-0-other-host.example"]
    finally:
        pool.close()
