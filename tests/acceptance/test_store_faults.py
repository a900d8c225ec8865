"""Store and state-directory faults: the daemon logs, backs off, keeps every trigger, and
resumes when the fault clears - it never crash-loops and never drops a trigger."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import Env, needs_root


def test_write_lock_held_by_another_process(env: Env) -> None:
    """Another process holds the SQLite write lock longer than the busy timeout."""
    d = env.start()
    env.publish("true\n")
    d.wait_for("succeeded")
    db = sqlite3.connect(env.state / "spoolq.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        out = env.root / "ran"
        env.publish(f"touch {out}\n")
        d.wait_for("store_unavailable", timeout=30)
        assert not out.exists()  # nothing ran while the store could not record it
        assert d.proc.poll() is None
    finally:
        db.execute("ROLLBACK")
        db.close()
    d.wait_for("succeeded", count=2, timeout=60)
    assert (env.root / "ran").exists()
    assert d.proc.poll() is None
    assert [j["state"] for j in env.jobs()] == ["succeeded", "succeeded"]


@contextlib.contextmanager
def _bind_readonly(path: Path) -> Iterator[None]:
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@needs_root
def test_state_dir_read_only_then_writable_again(env: Env) -> None:
    env.write_config('heartbeat_interval = "0.5s"\n')
    d = env.start()
    env.publish("true\n", name="before.trigger")
    d.wait_for("succeeded")
    with _bind_readonly(env.state):
        trigger = env.publish("true\n", name="during.trigger")
        d.wait_for("store_unavailable", timeout=30)
        # Safe: still in the spool, or claimed (renames may pass where file creation in
        # logs/ cannot); nothing ran without its log.
        claimed = [p.name for p in (env.state / "claimed").iterdir()]
        assert trigger.exists() or any(n.endswith(".during.trigger") for n in claimed)
        assert not d.find("started", trigger=str(trigger))
        assert d.proc.poll() is None
    d.wait_for("store_recovered", timeout=60)
    d.wait_for("succeeded", count=2, timeout=60)
    assert not trigger.exists()
    names = sorted(Path(j["trigger"]).name for j in env.jobs())
    assert names == ["before.trigger", "during.trigger"]


@needs_root
def test_job_logs_that_cannot_be_created_back_off_without_false_recoveries(env: Env) -> None:
    """The store answers but no job log can be created (logs/ read-only): the daemon backs
    off, doubling the wait, instead of announcing a recovery (and rescanning the spool)
    after every heartbeat; the job runs once logs can be created again."""
    env.write_config('heartbeat_interval = "0.5s"\n')
    d = env.start()
    env.publish("true\n", name="before.trigger")
    d.wait_for("succeeded")
    with _bind_readonly(env.state / "logs"):
        trigger = env.publish("true\n", name="during.trigger")
        d.wait_for("store_unavailable", count=3, timeout=60)
        assert not d.find("store_recovered")
        assert [e["retry_in"] for e in d.find("store_unavailable")][:3] == [0.5, 1.0, 2.0]
        assert not d.find("started", trigger=str(trigger))
    d.wait_for("store_recovered", timeout=60)
    d.wait_for("succeeded", trigger=str(trigger), timeout=60)
    assert d.stop() == 0


@needs_root
def test_disk_full_at_start_then_space_freed(env: Env, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        spool = mnt / "spool"
        spool.mkdir()
        (spool / "a.trigger").write_text("true\n")
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        os.close(fd)
        env.spool = spool
        env.state = spool / ".spoolq"
        d = env.start(ready=False)
        d.wait_for("store_unavailable", timeout=30)
        assert (spool / "a.trigger").exists()
        filler.unlink()
        d.wait_for("ready", timeout=60)
        d.wait_for("succeeded", timeout=30)
        assert not (spool / "a.trigger").exists()
        assert d.stop() == 0
    finally:
        for daemon in env.daemons:
            if daemon.proc.poll() is None:
                daemon.kill()
        subprocess.run(["umount", str(mnt)], check=True)


def test_store_file_deleted_under_a_running_daemon(env: Env) -> None:
    env.write_config('heartbeat_interval = "0.3s"\n')
    d = env.start()
    env.publish("true\n", name="first.trigger")
    d.wait_for("succeeded")
    env.cli("pause", "default", check=True)
    queued = env.publish("true\n", name="queued.trigger")
    d.wait_for("queued", trigger=str(queued))
    for suffix in ("", "-wal", "-shm"):
        (env.state / f"spoolq.db{suffix}").unlink(missing_ok=True)
    d.wait_for("store_lost", timeout=30)
    # The fresh store was rebuilt from claimed/: the queued job is back, under its id,
    # and runs (the pause was recorded in the lost store).
    d.wait_for("succeeded", count=2, timeout=30)
    env.publish("true\n", name="after.trigger")
    d.wait_for("succeeded", count=3, timeout=30)
    names = sorted(Path(j["trigger"]).name for j in env.jobs())
    assert "queued.trigger" in names and "after.trigger" in names
    assert not list((env.state / "claimed").iterdir())
    assert d.proc.poll() is None
