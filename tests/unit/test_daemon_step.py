"""The daemon's loop driven one pass at a time (``Daemon.step``) with a clock the test
moves, a real SQLite store, real trigger files and real job processes: the rules that
only show over time (timeouts, back-offs, fencing, rescue) without waiting for them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolq.config import load_config
from spoolq.daemon import Daemon
from spoolq.errors import StoreUnavailable
from spoolq.events import EventLog
from spoolq.jobs import DaemonInfo, Job, JobSpec, JobState, NewJob
from spoolq.statedir import StateDir
from spoolq.store.base import Store
from spoolq.store.sqlite import SqliteStore
from tests.conftest import process_running, publish


class Clock:
    """Wall and monotonic time that move only when the test says."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1_000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class Harness:
    def __init__(self, root: Path, config_text: str, wrap: Callable[[Store], Any] | None) -> None:
        self.spool = root / "spool"
        self.spool.mkdir(exist_ok=True)
        cfg = root / "spoolq.toml"
        cfg.write_text(config_text)
        self.config = load_config(cfg, extra_spools=[self.spool], env={})
        self.state = StateDir(self.spool / ".spoolq")
        self.state.root.mkdir(mode=0o750, exist_ok=True)
        self.store = SqliteStore(self.state.db)
        self.clock = Clock()
        self.out = io.StringIO()
        self.daemon = Daemon(
            self.config,
            self.state,
            wrap(self.store) if wrap else self.store,
            EventLog("json", self.out),
            clock=lambda: self.clock.wall,
            mono=lambda: self.clock.mono,
        )

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        self.daemon.log.flush()
        found = []
        for line in self.out.getvalue().splitlines():
            ev = json.loads(line)
            if ev["event"] == name and all(str(ev.get(k)) == str(v) for k, v in fields.items()):
                found.append(ev)
        return found

    def step_until(self, predicate: Callable[[], Any], what: str, *, advance: float = 0.0) -> Any:
        """Run passes of the loop (each waits at most 50 ms of real time for an event)
        until ``predicate`` holds, moving the test's clock by ``advance`` per pass."""
        deadline = time.monotonic() + 15.0
        while True:
            self.clock.advance(advance)
            self.daemon.step(0.05)
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after 15 s:\n{self.out.getvalue()}")

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.daemon.step(0.01)

    def publish(self, doc: dict[str, Any], name: str) -> Path:
        return publish(self.spool, json.dumps(doc), name)

    def job_of(self, trigger: Path) -> Job | None:
        return next(
            (j for j in self.store.list_jobs(limit=1000) if j.trigger == str(trigger)), None
        )

    def state_of(self, trigger: Path) -> JobState | None:
        job = self.job_of(trigger)
        return job.state if job else None


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(config_text: str = "", wrap: Callable[[Store], Any] | None = None) -> Harness:
        h = Harness(tmp_path, config_text, wrap)
        made.append(h)
        h.daemon.start()
        return h

    yield make
    for h in made:
        h.daemon.supervisor.stop_all()
        for orphan in h.daemon.supervisor.orphans.values():
            for g in orphan.groups:
                with contextlib.suppress(OSError):
                    os.killpg(g, signal.SIGKILL)
        h.daemon.close()
        h.store.close()


def dead_daemons_job(tmp_path: Path, kill_grace: float) -> Job:
    """A job left running by a daemon on this host that was killed: its registration and
    the job's row, as the dead daemon left them."""
    state = tmp_path / "spool" / ".spoolq"
    state.mkdir(parents=True, mode=0o750)
    store = SqliteStore(state / "spoolq.db")
    host = socket.gethostname()
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"01DEADDAEMON00000000000000@{host}"
    store.register_daemon(DaemonInfo(dead, host, gone.pid, 1.0, 1.0, "1"))
    job_id = "01J0RPHAN00000000000000000"
    store.enqueue(
        [
            NewJob(
                id=job_id,
                lane="orphans",
                trigger=str(tmp_path / "spool" / "old.trigger"),
                claimed_path=str(state / "claimed" / f"{job_id}.0000abcd.old.trigger"),
                log=str(state / "logs" / f"{job_id}.log"),
                spec=JobSpec(steps=(("true",),)),
                priority=0,
                timeout=None,
                retries=0,
                retry_backoff=5.0,
                kill_grace=kill_grace,
                on_success="delete",
                created_at=1.0,
                reason=None,
                home=StateDir(state).home,
            )
        ],
        dedup_window=0,
        now=1.0,
    )
    store.set_lanes({"orphans": 1})
    [job] = store.claim_batch("orphans", dead, 2.0)
    store.close()
    return job


def deaf_process(job_id: str) -> subprocess.Popen[bytes]:
    """A process of the job's that ignores SIGTERM, in a session of its own."""
    return subprocess.Popen(
        ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"],
        env={**os.environ, "SPOOLQ_JOB_ID": job_id},
        start_new_session=True,
    )


def test_a_timeout_fires_while_a_dead_daemons_job_is_being_reaped(
    tmp_path: Path, harness: Callable[..., Harness]
) -> None:
    old = dead_daemons_job(tmp_path, kill_grace=30.0)
    orphan = deaf_process(old.id)
    try:
        h = harness()
        # The rescue has begun (SIGTERM sent, and ignored): the old job stays running.
        assert old.id in h.daemon.supervisor.orphans
        assert h.store.get(old.id).state is JobState.RUNNING

        slow = h.publish({"argv": ["sleep", "60"], "timeout": 5}, "slow.trigger")
        h.step_until(lambda: h.events("started"), "start of the slow job")
        h.clock.advance(6)  # past the slow job's timeout, well inside the orphan's grace
        h.step_until(lambda: h.state_of(slow) is JobState.FAILED, "the timeout")
        job = h.job_of(slow)
        assert job is not None and job.reason == "timeout"
        assert h.store.get(old.id).state is JobState.RUNNING
        assert process_running(orphan.pid), "the orphan's grace has not run out"

        h.clock.advance(30)  # the orphan's grace is over: SIGKILL, re-queued once gone
        h.step_until(
            lambda: h.events("interrupted", job=old.id), "re-queue of the orphan", advance=0.05
        )
        assert not process_running(orphan.pid)
        assert h.events("orphan_killed", job=old.id)
        # Only now does the old job run again.
        h.step_until(lambda: h.store.get(old.id).state is JobState.SUCCEEDED, "its rerun")
        assert [a.reason for a in h.store.attempts(old.id)] == ["interrupted", None]
    finally:
        orphan.kill()
        orphan.wait()


def test_an_orphan_that_does_not_go_away_keeps_its_job_running_and_is_named(
    tmp_path: Path, harness: Callable[..., Harness]
) -> None:
    old = dead_daemons_job(tmp_path, kill_grace=1.0)
    stubborn = deaf_process(old.id)
    try:
        h = harness()
        h.clock.advance(1.5)
        h.step_until(lambda: not process_running(stubborn.pid), "the SIGKILL")
        stubborn.wait()
        # A process of the old attempt that outlives SIGKILL (stuck in uninterruptible
        # sleep on a dead mount, say), played by a new process with the job's marker: to
        # the rescue, the job's processes are still there.
        stubborn = deaf_process(old.id)
        h.clock.advance(10)
        h.step_until(lambda: h.events("orphan_alive", job=old.id), "the warning")
        assert str(stubborn.pid) in h.events("orphan_alive", job=old.id)[0]["pids"]
        assert h.store.get(old.id).state is JobState.RUNNING
        assert not h.events("interrupted", job=old.id)
    finally:
        stubborn.kill()
        stubborn.wait()


def test_a_cancel_during_the_retry_backoff_means_the_job_never_runs_again(
    harness: Callable[..., Harness],
) -> None:
    h = harness('[defaults]\nretries = 3\nretry_backoff = "60s"\n')
    runs = h.spool.parent / "runs"
    trig = h.publish({"command": f"echo x >> {runs}; exit 3"}, "flaky.trigger")
    h.step_until(lambda: h.events("retry_scheduled"), "the first failure")
    job = h.job_of(trig)
    assert job is not None and job.state is JobState.QUEUED and job.not_before > h.clock.wall

    cancelled = h.store.cancel(job.id, h.clock.wall)  # as `spoolq cancel` does
    h.store.notify()
    assert cancelled.state is JobState.CANCELLED
    h.clock.advance(3600)  # long past the retry time
    h.steps(20)
    h.clock.advance(h.config.heartbeat_interval)
    h.step_until(lambda: any((h.state.root / "cancelled").iterdir()), "the archived trigger")

    assert runs.read_text() == "x\n", "the job ran again after its cancel"
    final = h.store.get(job.id)
    assert (final.state, final.attempts) == (JobState.CANCELLED, 1)


def test_a_cancel_that_arrives_while_an_attempt_fails_overrides_its_retry(
    harness: Callable[..., Harness],
) -> None:
    h = harness('[defaults]\nretries = 3\nretry_backoff = "1s"\n')
    gate = h.spool.parent / "gate"
    trig = h.publish(
        {"command": f"while [ ! -e {gate} ]; do sleep 0.01; done; exit 3"}, "fails.trigger"
    )
    h.step_until(lambda: h.state_of(trig) is JobState.RUNNING, "the start")
    job = h.job_of(trig)
    assert job is not None
    # The operator's cancel reaches the store, but not the daemon (no wake-up): the
    # attempt then fails on its own, and the store's rule sees the cancel.
    h.store.cancel(job.id, h.clock.wall)
    gate.touch()
    h.step_until(lambda: (s := h.state_of(trig)) is not None and s.finished, "the end")
    final = h.store.get(job.id)
    assert final.state is JobState.CANCELLED
    assert final.reason == "cancelled by operator"
    assert not h.events("retry_scheduled")


def test_fenced_after_a_lost_registration_it_stops_its_copy_before_the_rerun(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    pids = h.spool.parent / "pids"
    trig = h.publish({"command": f"echo $$ >> {pids}; exec sleep 60"}, "long.trigger")
    h.step_until(lambda: pids.exists() and pids.read_text().endswith("\n"), "the job running")
    first = int(pids.read_text().split()[0])
    job = h.job_of(trig)
    assert job is not None

    # A peer found this daemon silent for stale_after: it removed the registration and
    # re-queued the job.
    h.store.unregister_daemon(h.daemon.id)
    h.store.requeue_interrupted([job], h.clock.wall)
    h.clock.advance(h.config.heartbeat_interval)
    h.step_until(lambda: h.events("fenced"), "fencing")
    assert not process_running(first), "the fenced copy must stop"
    assert h.daemon.id in {d.id for d in h.store.daemons()}, "registered again"
    h.step_until(lambda: len(pids.read_text().split()) == 2, "the rerun")
    assert h.store.get(job.id).attempts == 2


class FlakyStore:
    """The real store, made to fail (as a store that stops answering does) while
    ``down`` is set. A fake only for injecting the fault."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False
        self.calls_while_down = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name in ("listen", "close", "name"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.calls_while_down += 1
                raise StoreUnavailable("database is locked")
            return attr(*args, **kwargs)

        return call


def test_a_store_fault_backs_off_doubling_then_recovers_and_runs_what_waited(
    harness: Callable[..., Harness],
) -> None:
    made: dict[str, FlakyStore] = {}

    def wrap(real: Store) -> FlakyStore:
        made["store"] = FlakyStore(real)
        return made["store"]

    h = harness(wrap=wrap)
    store = made["store"]
    store.down = True
    done = h.spool.parent / "done"
    trig = h.publish({"command": f"touch {done}"}, "waits.trigger")
    h.step_until(lambda: h.events("store_unavailable"), "the first fault")
    tried = store.calls_while_down
    h.steps(10)
    assert store.calls_while_down == tried, "no store call before the retry time"
    waits = []
    for _ in range(3):
        waits.append(float(h.events("store_unavailable")[-1]["retry_in"]))
        h.clock.advance(waits[-1])
        n = len(h.events("store_unavailable"))
        h.step_until(lambda n=n: len(h.events("store_unavailable")) > n, "the next fault")
    assert waits == [0.5, 1.0, 2.0]
    # Claimed (the rename needs no store), not recorded, not run: it waits in claimed/.
    assert not done.exists() and not trig.exists() and any(h.state.claimed.iterdir())

    store.down = False
    h.clock.advance(float(h.events("store_unavailable")[-1]["retry_in"]))
    h.step_until(lambda: done.exists(), "the waiting job")
    assert len(h.events("store_recovered")) == 1
    h.step_until(lambda: h.state_of(trig) is JobState.SUCCEEDED, "its outcome")


def test_a_claim_committed_unseen_is_queued_again_and_runs_once(
    harness: Callable[..., Harness],
) -> None:
    """The connection dropped as the daemon's claim committed: the store says the job runs
    under this daemon, which never started it. At its next heartbeat the daemon finds it,
    queues it again, and runs it - once."""
    h = harness("[lanes.db]\nconcurrency = 1\n")
    runs = h.spool.parent / "runs"
    h.store.set_paused("db", True)
    trig = h.publish({"command": f"echo x >> {runs}", "lane": "db"}, "load.trigger")
    h.step_until(lambda: h.state_of(trig) is JobState.QUEUED, "the job queued")
    h.store.set_paused("db", False)  # (the daemon is not told)
    (ghost,) = h.store.claim_batch("db", h.daemon.id, h.clock.wall, h.state.home)
    assert ghost.state is JobState.RUNNING and not runs.exists()

    h.clock.advance(h.config.heartbeat_interval)
    h.step_until(lambda: h.events("claim_not_started", job=ghost.id), "the lost claim found")
    h.step_until(lambda: h.state_of(trig) is JobState.SUCCEEDED, "the run")
    assert runs.read_text() == "x\n"
    assert [a.reason for a in h.store.attempts(ghost.id)] == ["interrupted", None]


def test_a_late_outcome_does_not_end_the_run_a_peer_started_since(
    harness: Callable[..., Harness],
) -> None:
    """This daemon was silent for stale_after; a peer re-queued its job and another daemon
    runs it again. When this one's copy ends, its outcome is dropped: the job stays with
    the new run, and its trigger stays where that run needs it."""
    h = harness()
    gate = h.spool.parent / "gate"
    trig = h.publish({"command": f"while [ ! -e {gate} ]; do sleep 0.01; done"}, "t.trigger")
    h.step_until(lambda: h.state_of(trig) is JobState.RUNNING, "the job running")
    job = h.job_of(trig)
    assert job is not None
    h.store.requeue_interrupted([job], h.clock.wall)  # the peer's rescue ...
    (again,) = h.store.claim_batch(job.lane, "d2@elsewhere", h.clock.wall, h.state.home)
    gate.touch()  # ... and this daemon's copy ends only now
    h.step_until(lambda: h.events("outcome_dropped", job=job.id), "the outcome dropped")
    assert h.store.get(job.id) == again
    assert Path(again.claimed_path).exists()
    assert not h.events("succeeded")


def test_a_daemon_silent_past_stale_after_checks_its_fencing_before_it_records_or_claims(
    harness: Callable[..., Harness],
) -> None:
    """This daemon was stalled (SIGSTOP, a VM paused) past stale_after; a peer removed its
    registration and re-queued its job, whose copy ended during the stall. Waking, the
    daemon must find itself fenced first: before, it recorded the late outcome (dropped)
    and in that same transaction refilled the lane's slot - claiming and starting a job
    that its fencing then killed and queued again (logged as ``claim_not_started``): a
    wasted, interrupted attempt. Found by ``bench.fleet_chaos --hosts --stalls``."""
    h = harness("[lanes.db]\nconcurrency = 1\n")
    runs = h.spool.parent / "runs"
    gate = h.spool.parent / "gate"
    first = h.publish(
        {"command": f"while [ ! -e {gate} ]; do sleep 0.01; done; echo a >> {runs}", "lane": "db"},
        "a.trigger",
    )
    h.step_until(lambda: h.state_of(first) is JobState.RUNNING, "the job running")
    job = h.job_of(first)
    assert job is not None
    second = h.publish({"command": f"echo b >> {runs}", "lane": "db"}, "b.trigger")
    h.step_until(lambda: h.state_of(second) is JobState.QUEUED, "the second job queued")

    # The stall: a peer's rescue, the copy's end, and stale_after gone by, all unseen.
    h.store.unregister_daemon(h.daemon.id)
    h.store.requeue_interrupted([job], h.clock.wall)
    gate.touch()
    deadline = time.monotonic() + 10
    while "a" not in (runs.read_text() if runs.exists() else ""):
        assert time.monotonic() < deadline, "the copy did not end"
        time.sleep(0.01)
    h.clock.advance(h.config.stale_after + h.config.heartbeat_interval)

    h.step_until(lambda: h.events("fenced"), "fencing")
    h.step_until(
        lambda: {h.state_of(first), h.state_of(second)} == {JobState.SUCCEEDED}, "both jobs"
    )
    assert not h.events("claim_not_started"), h.out.getvalue()
    assert [a.reason for a in h.store.attempts(job.id)] == ["interrupted", None]
    second_job = h.job_of(second)
    assert second_job is not None
    assert [a.reason for a in h.store.attempts(second_job.id)] == [None]
