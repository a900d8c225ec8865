"""Lease fencing: a running job belongs to a live daemon; another daemon rescues it only
when its owner is gone (pid dead on this host, or heartbeat stale from another host)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from spoolq.claims import new_job_id
from spoolq.jobs import DaemonInfo, JobSpec, NewJob
from spoolq.store.sqlite import SqliteStore
from tests.conftest import DaemonProcess, Env, process_running, wait_until

FAST = 'heartbeat_interval = "0.3s"\nstale_after = "2s"\n'


def _wait_heartbeats(env: Env, d: DaemonProcess, n: int) -> None:
    """Until the daemon has beaten ``n`` times after its start (0.3 s apart)."""
    pid = d.proc.pid

    def beaten() -> bool:
        status = json.loads(env.cli("status", "--json", check=True).stdout)
        for info in status["daemons"]:
            if info["pid"] == pid:
                started = datetime.fromisoformat(info["started_at"])
                beat = datetime.fromisoformat(info["heartbeat_at"])
                return (beat - started).total_seconds() >= n * 0.3
        return False

    wait_until(beaten, 20, f"{n} heartbeats", interval=0.2)


def _blocking_job(env: Env, name: str) -> tuple[Path, Path]:
    release = env.root / f"release-{name}"
    runs = env.root / f"runs-{name}"
    env.publish(
        f"echo run >> {runs}; while [ ! -e {release} ]; do sleep 0.05; done\n", f"{name}.trigger"
    )
    return release, runs


def test_second_daemon_does_not_take_a_live_daemons_job(env: Env) -> None:
    env.write_config(FAST)
    a = env.start()
    release, runs = _blocking_job(env, "long")
    a.wait_for("started")
    b = env.start()  # same spool, same store
    # b has started up and been through several heartbeats (each one looks for jobs of
    # dead daemons to rescue) while the job runs.
    _wait_heartbeats(env, b, 3)
    assert not b.find("interrupted") and not a.find("interrupted")
    job = env.jobs()[0]
    assert job["state"] == "running" and job["attempts"] == 1
    release.touch()
    a.wait_for("succeeded")
    assert runs.read_text().split() == ["run"]


def test_live_daemon_rescues_the_job_of_a_killed_one(env: Env) -> None:
    env.write_config(FAST)
    a = env.start()
    release, runs = _blocking_job(env, "long")
    a.wait_for("started")
    b = env.start()
    a.kill()  # SIGKILL: its job's process group survives it
    b.wait_for("orphan_killed", timeout=20)
    b.wait_for("interrupted", timeout=20)
    wait_until(lambda: runs.exists() and len(runs.read_text().split()) == 2, 20, "the re-run")
    release.touch()
    b.wait_for("succeeded", timeout=20)
    job = env.job(env.jobs()[0]["id"])
    assert [a["reason"] for a in job["attempt_history"]] == ["interrupted", None]


def _foreign_running_job(env: Env, heartbeat_age: float) -> str:
    """A job running on another host whose daemon last beat ``heartbeat_age`` s ago."""
    env.state.mkdir(parents=True, exist_ok=True)
    (env.state / "claimed").mkdir(exist_ok=True)
    store = SqliteStore(env.state / "spoolq.db")
    try:
        now = time.time()
        other = f"{new_job_id()}@otherhost"
        store.register_daemon(
            DaemonInfo(other, "otherhost", 4242, now - 100, now - heartbeat_age, "")
        )
        job_id = new_job_id()
        store.set_lanes({"default": 1})
        store.enqueue(
            [
                NewJob(
                    id=job_id, lane="default", trigger=str(env.spool / "remote.trigger"),
                    claimed_path=str(env.state / "claimed" / f"{job_id}.00000000.remote.trigger"),
                    log=str(env.state / "logs" / f"{job_id}.log"),
                    spec=JobSpec(steps=(("true",),)), priority=0, timeout=None, retries=0,
                    retry_backoff=1.0, kill_grace=1.0, on_success="archive", created_at=now,
                )
            ],
            dedup_window=0,
            now=now,
        )  # fmt: skip
        assert store.claim_batch("default", other, now, limit=1)
    finally:
        store.close()
    return job_id


def test_stale_heartbeat_from_another_host_is_rescued(env: Env) -> None:
    env.write_config(FAST)
    job_id = _foreign_running_job(env, heartbeat_age=3600)
    d = env.start()
    d.wait_for("interrupted", job=job_id)
    d.wait_for("succeeded", job=job_id)


def test_fresh_heartbeat_from_another_host_is_left_alone(env: Env) -> None:
    env.write_config('heartbeat_interval = "0.3s"\nstale_after = "1h"\n')
    job_id = _foreign_running_job(env, heartbeat_age=0)
    d = env.start()
    _wait_heartbeats(env, d, 3)
    assert not d.find("interrupted")
    assert env.job(job_id)["state"] == "running"


def test_a_fenced_daemon_stops_its_copies_before_the_rerun(env: Env) -> None:
    """A peer declared this daemon dead (a stall longer than stale_after) and re-queued its
    job: at its next heartbeat the daemon kills its own copy, registers again, and the job
    runs once more - never two copies at once."""
    env.write_config(FAST)
    d = env.start()
    release, runs = _blocking_job(env, "long")
    started = d.wait_for("started")[0]
    wait_until(lambda: runs.exists(), 10, "the first run")
    store = SqliteStore(env.state / "spoolq.db")
    try:  # what a peer does to a daemon it believes dead
        daemon_id = store.daemons()[0].id
        store.unregister_daemon(daemon_id)
        store.requeue_interrupted([store.get(started["job"])], time.time())
    finally:
        store.close()
    d.wait_for("fenced", timeout=20)
    d.wait_for("started", count=2, timeout=20)
    wait_until(lambda: len(runs.read_text().split()) == 2, 20, "the re-run")
    assert not process_running(started["pid"])  # the first copy was stopped
    release.touch()
    d.wait_for("succeeded", timeout=20)
    history = env.job(started["job"])["attempt_history"]
    assert [a["reason"] for a in history] == ["interrupted", None]
