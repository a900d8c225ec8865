"""The contract every ``Store`` must honour, run against each implementation.

Each test gets a ``store`` (and a ``kit`` that can open more connections to the same store,
as other processes would). Times are injected (``now``), never slept on. SQLite: a real file
in ``tmp_path``. PostgreSQL: a fresh schema on $SPOOLQ_TEST_POSTGRES, skipped when no server
answers there. SQLite-only details (migrations, the file itself) come last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import select
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from spoolq.claims import new_job_id
from spoolq.errors import JobNotFound, SpoolqError, StoreError, StoreUnavailable
from spoolq.jobs import AttemptResult, DaemonInfo, Job, JobSpec, JobState, NewJob
from spoolq.store import Listener, Store, open_store, queries
from spoolq.store.sqlbase import SqlStore
from spoolq.store.sqlite import SqliteStore
from tests.conftest import POSTGRES_URL, import_or_skip, postgres_admin, wait_until

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
DAY = 86_400.0
WINDOW = 14 * DAY
OK = AttemptResult(exit_code=0, reason=None, wall_s=1.5, cpu_s=0.25, max_rss_kb=2048)
EXIT3 = AttemptResult(exit_code=3, reason="exit 3", wall_s=0.5, cpu_s=0.125, max_rss_kb=1024)
KILLED = AttemptResult(exit_code=-15, reason="cancelled", wall_s=0.75, cpu_s=0.0, max_rss_kb=512)


# The daemon's verbs, shaped for tests: a claim of one job, and an attempt ended with a
# chosen outcome. Each goes through the same store verb as the daemon (claim_batch,
# end_attempt), with the job's retry settings set so that the rules reach that outcome.
def claim_next(
    store: Store, lane: str, owner: str, now: float, home: str | None = None
) -> Job | None:
    jobs = store.claim_batch(lane, owner, now, home, limit=1)
    return jobs[0] if jobs else None


def finish(store: Store, job: Job, result: AttemptResult, state: JobState, now: float) -> Job:
    """End ``job``'s attempt as ``state``: succeeded (an ok result), failed (no retries
    left), or cancelled (stopped by an operator's cancel)."""
    if state is JobState.FAILED:
        job = dataclasses.replace(job, retries=job.failures)
    stop = "cancelled" if state is JobState.CANCELLED else None
    return store.end_attempt(job, result, stop, now)()


def schedule_retry(
    store: Store, job: Job, result: AttemptResult, *, not_before: float, now: float
) -> Job:
    """End ``job``'s attempt as a failure with a retry due at ``not_before`` (the back-off
    set so that, with the jitter at its middle, the delay is exactly that)."""
    backoff = (not_before - now) / 2**job.failures
    job = dataclasses.replace(
        job, retries=max(job.retries, job.failures + 1), retry_backoff=backoff
    )
    return store.end_attempt(job, result, None, now, rng=lambda: 0.5)()


# Where the PostgreSQL runs look for a server; without one they are skipped (failed in CI).
POSTGRES = POSTGRES_URL


class StoreKit:
    """Opens stores of one kind. ``open()`` is another connection to the *same* store, as a
    second process would have; ``url`` and ``state_dir`` let a real second process do the
    same through ``open_store``."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.state_dir = tmp_path / "state"
        self._opened: list[Store] = []
        self._cleanup: list[Callable[[], None]] = []
        if kind == "sqlite":
            self.url = f"sqlite:///{self.state_dir / 'spoolq.db'}"
        elif kind == "postgresql":
            self.url = self._postgres_schema()
        else:  # pragma: no cover
            raise AssertionError(f"unknown store kind {kind}")

    def _postgres_schema(self) -> str:
        """A fresh schema per test on the server, dropped afterwards."""
        admin = postgres_admin()
        schema = f"spoolq_c_{uuid.uuid4().hex[:12]}"
        admin.execute(f"CREATE SCHEMA {schema}")

        def drop() -> None:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()

        self._cleanup.append(drop)
        sep = "&" if "?" in POSTGRES else "?"
        return f"{POSTGRES}{sep}options=-csearch_path%3D{schema}"

    def open(self) -> Store:
        store = open_store(self.url, self.state_dir)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()
        for cleanup in self._cleanup:
            cleanup()


# One entry per store implementation; every test below runs against each.
STORE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def new_job(
    *,
    lane: str = "default",
    priority: int = 0,
    key: str | None = None,
    reason: str | None = None,
    parsed: bool = True,
    retries: int = 0,
    created_at: float = T0,
    job_id: str | None = None,
    home: str = "",
    state_dir: Path = Path("/srv/state"),
) -> NewJob:
    job_id = job_id or new_job_id()
    spec = (
        JobSpec(
            steps=(("/bin/sh", "-c", "echo hi"), ("true",)),
            lane=lane,
            idem_key=key,
            priority=priority,
            env={"A": "1"},
            cwd="/srv/spool",
        )
        if parsed
        else None
    )
    return NewJob(
        id=job_id,
        lane=lane,
        trigger=f"/srv/spool/{job_id}.trigger",
        claimed_path=str(state_dir / "claimed" / f"{job_id}.x.trigger"),
        log=str(state_dir / "logs" / f"{job_id}.log"),
        spec=spec,
        priority=priority,
        timeout=90.0,
        retries=retries,
        retry_backoff=5.0,
        kill_grace=10.0,
        on_success="archive",
        created_at=created_at,
        reason=reason,
        home=home,
    )


def enqueue1(store: Store, now: float = T0, **kw: object) -> Job:
    (job,) = store.enqueue([new_job(created_at=now, **kw)], dedup_window=WINDOW, now=now)  # type: ignore[arg-type]
    return job


def run_to(store: Store, state: JobState, *, now: float = T0, **kw: object) -> Job:
    """A job taken through the store to ``state`` (it is the only job in its lane)."""
    job = enqueue1(store, now, **kw)
    if state is JobState.QUEUED:
        return job
    if state is JobState.REJECTED:
        raise AssertionError("use reason= to make a rejected job")
    running = claim_next(store, job.lane, "d1", now + 1)
    assert running is not None and running.id == job.id
    if state is JobState.RUNNING:
        return running
    result = {JobState.SUCCEEDED: OK, JobState.FAILED: EXIT3, JobState.CANCELLED: KILLED}[state]
    return finish(store, running, result, state, now + 2)


def claim_all(store: Store, lane: str, owner: str, now: float) -> list[Job]:
    got = []
    while (job := claim_next(store, lane, owner, now)) is not None:
        got.append(job)
    return got


# -- enqueue ---------------------------------------------------------------------------------
def test_enqueue_records_each_job_queued_with_everything_it_was_given(store: Store) -> None:
    given = [new_job(lane="db", priority=p) for p in (0, 5, -1)]
    stored = store.enqueue(given, dedup_window=WINDOW, now=T0 + 1)
    assert [j.id for j in stored] == [g.id for g in given]
    for g, j in zip(given, stored, strict=True):
        assert j.state is JobState.QUEUED
        assert (j.lane, j.priority, j.trigger, j.claimed_path, j.log) == (
            g.lane, g.priority, g.trigger, g.claimed_path, g.log
        )  # fmt: skip
        assert j.spec == g.spec
        assert (j.timeout, j.retries, j.retry_backoff, j.kill_grace) == (90.0, 0, 5.0, 10.0)
        assert j.on_success == "archive"
        assert (j.attempts, j.failures, j.reason, j.exit_code) == (0, 0, None, None)
        assert (j.created_at, j.started_at, j.finished_at) == (T0, None, None)
        assert store.get(j.id) == j


def test_enqueue_with_a_reason_records_a_rejected_job_that_never_runs(store: Store) -> None:
    job = enqueue1(store, reason="key 'argv': not a list", parsed=False)
    assert job.state is JobState.REJECTED
    assert job.reason == "key 'argv': not a list"
    assert job.spec is None
    assert job.finished_at == T0
    assert claim_next(store, "default", "d1", T0 + 1) is None


@pytest.mark.parametrize("original", [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED])
def test_enqueue_rejects_a_duplicate_of_a_live_or_recently_succeeded_job(
    store: Store, original: JobState
) -> None:
    first = run_to(store, original, key="load-2024-01-01")
    dup = enqueue1(store, T0 + 3 * DAY, key="load-2024-01-01")
    assert dup.state is JobState.REJECTED
    assert dup.reason is not None
    assert "duplicate" in dup.reason
    assert first.id in dup.reason
    assert store.get(first.id).state is original


@pytest.mark.parametrize("original", [JobState.FAILED, JobState.CANCELLED])
def test_enqueue_allows_the_key_again_after_a_failure_or_cancel(
    store: Store, original: JobState
) -> None:
    run_to(store, original, key="k")
    again = enqueue1(store, T0 + 10, key="k")
    assert again.state is JobState.QUEUED


def test_enqueue_allows_the_key_again_after_a_rejected_job(store: Store) -> None:
    enqueue1(store, key="k", reason="bad env")
    assert enqueue1(store, T0 + 1, key="k").state is JobState.QUEUED


def test_enqueue_allows_the_key_once_the_success_is_older_than_the_window(store: Store) -> None:
    run_to(store, JobState.SUCCEEDED, key="k")  # finished at T0 + 2
    assert enqueue1(store, T0 + 2 + WINDOW - 1, key="k").state is JobState.REJECTED
    assert enqueue1(store, T0 + 2 + WINDOW + 1, key="k").state is JobState.QUEUED


def test_enqueue_dedups_within_one_batch_and_leaves_other_keys_alone(store: Store) -> None:
    a, b, c = new_job(key="k"), new_job(key="k"), new_job(key="other")
    stored = store.enqueue([a, b, c], dedup_window=WINDOW, now=T0)
    assert [j.state for j in stored] == [JobState.QUEUED, JobState.REJECTED, JobState.QUEUED]
    assert stored[1].reason is not None and a.id in stored[1].reason


def test_known_ids_returns_the_states_of_ids_that_exist(store: Store) -> None:
    queued = enqueue1(store)
    rejected = enqueue1(store, reason="nope")
    unknown = [new_job_id() for _ in range(1200)]  # more than one batch of placeholders
    found = store.known_ids([*unknown[:700], queued.id, *unknown[700:], rejected.id])
    assert found == {queued.id: JobState.QUEUED, rejected.id: JobState.REJECTED}
    assert store.known_ids([]) == {}


# -- claim_next ------------------------------------------------------------------------------
def test_claim_next_returns_none_when_there_is_nothing_to_do(store: Store) -> None:
    assert claim_next(store, "default", "d1", T0) is None
    store.set_lanes({"db": 2})
    assert claim_next(store, "db", "d1", T0) is None
    assert claim_next(store, "never-heard-of", "d1", T0) is None


def test_claim_next_starts_an_attempt_owned_by_the_claimer(store: Store) -> None:
    queued = enqueue1(store)
    job = claim_next(store, "default", "d1", T0 + 5)
    assert job is not None and job.id == queued.id
    assert job.state is JobState.RUNNING
    assert (job.attempts, job.started_at, job.owner) == (1, T0 + 5, "d1")
    (attempt,) = store.attempts(job.id)
    assert (attempt.n, attempt.started_at, attempt.finished_at, attempt.owner) == (
        1, T0 + 5, None, "d1"
    )  # fmt: skip


@pytest.mark.parametrize("limit", [1, 3])
def test_claim_next_never_exceeds_the_lane_concurrency(store: Store, limit: int) -> None:
    store.set_lanes({"db": limit})
    store.enqueue([new_job(lane="db") for _ in range(limit + 2)], dedup_window=WINDOW, now=T0)
    running = claim_all(store, "db", "d1", T0)
    assert len(running) == limit
    finish(store, running[0], OK, JobState.SUCCEEDED, T0 + 1)
    again = claim_all(store, "db", "d1", T0 + 1)
    assert len(again) == 1
    assert len(store.running_jobs()) == limit


def test_lanes_have_separate_limits_and_an_unknown_lane_gets_one_slot(store: Store) -> None:
    store.set_lanes({"db": 1, "web": 2})
    store.enqueue(
        [new_job(lane=lane) for lane in ("db", "db", "web", "web", "web", "adhoc", "adhoc")],
        dedup_window=WINDOW,
        now=T0,
    )
    assert len(claim_all(store, "db", "d1", T0)) == 1
    assert len(claim_all(store, "web", "d1", T0)) == 2
    assert len(claim_all(store, "adhoc", "d1", T0)) == 1
    status = {s.name: s for s in store.lane_status()}
    assert status["adhoc"].concurrency == 1


def test_set_lanes_latest_concurrency_wins(store: Store) -> None:
    store.set_lanes({"db": 1})
    store.enqueue([new_job(lane="db") for _ in range(3)], dedup_window=WINDOW, now=T0)
    assert len(claim_all(store, "db", "d1", T0)) == 1
    store.set_lanes({"db": 3})
    assert len(claim_all(store, "db", "d1", T0)) == 2
    assert {s.name: s.concurrency for s in store.lane_status()}["db"] == 3


def test_a_paused_lane_queues_but_starts_nothing_until_resumed(store: Store) -> None:
    store.set_lanes({"db": 2})
    store.set_paused("db", True)
    job = enqueue1(store, lane="db")
    assert job.state is JobState.QUEUED
    assert claim_next(store, "db", "d1", T0 + 1) is None
    (status,) = [s for s in store.lane_status() if s.name == "db"]
    assert (status.paused, status.queued, status.running) == (True, 1, 0)
    store.set_paused("db", False)
    claimed = claim_next(store, "db", "d1", T0 + 2)
    assert claimed is not None and claimed.id == job.id


def test_pausing_a_lane_nobody_declared_yet_holds_its_first_job(store: Store) -> None:
    store.set_paused("later", True)
    enqueue1(store, lane="later")
    assert claim_next(store, "later", "d1", T0) is None


def test_claim_next_takes_higher_priority_first_then_fifo(store: Store) -> None:
    store.set_lanes({"default": 10})
    jobs = store.enqueue(
        [new_job(priority=p) for p in (0, 5, 0, 5, -3, 9)], dedup_window=WINDOW, now=T0
    )
    order = [j.id for j in claim_all(store, "default", "d1", T0)]
    assert order == [jobs[i].id for i in (5, 1, 3, 0, 2, 4)]


def test_claim_next_skips_a_job_whose_not_before_is_later(store: Store) -> None:
    store.set_lanes({"default": 5})
    waiting = run_to(store, JobState.RUNNING, retries=1)
    schedule_retry(store, waiting, EXIT3, not_before=T0 + 60, now=T0 + 2)
    later = enqueue1(store, T0 + 3)
    claimed = claim_next(store, "default", "d1", T0 + 4)
    assert claimed is not None and claimed.id == later.id  # the due one, though younger
    assert claim_next(store, "default", "d1", T0 + 59.9) is None
    due = claim_next(store, "default", "d1", T0 + 60)
    assert due is not None and due.id == waiting.id


def test_claim_batch_fills_the_free_slots_in_one_call(store: Store) -> None:
    store.set_lanes({"db": 3})
    jobs = store.enqueue(
        [new_job(lane="db", priority=p) for p in (0, 0, 5, 0, 1)], dedup_window=WINDOW, now=T0
    )
    first = claim_next(store, "db", "d1", T0)
    assert first is not None and first.id == jobs[2].id
    batch = store.claim_batch("db", "d2", T0 + 1)
    assert [j.id for j in batch] == [jobs[4].id, jobs[0].id]  # priority, then FIFO
    assert all(j.state is JobState.RUNNING and j.owner == "d2" for j in batch)
    assert all(len(store.attempts(j.id)) == 1 for j in batch)
    assert store.claim_batch("db", "d2", T0 + 1) == []  # full
    finish(store, first, OK, JobState.SUCCEEDED, T0 + 2)
    assert [j.id for j in store.claim_batch("db", "d2", T0 + 2)] == [jobs[1].id]


def test_claim_batch_respects_limit_pause_and_not_before(store: Store) -> None:
    store.set_lanes({"db": 5})
    waiting = run_to(store, JobState.RUNNING, lane="db", retries=1)
    schedule_retry(store, waiting, EXIT3, not_before=T0 + 60, now=T0 + 2)
    store.enqueue([new_job(lane="db") for _ in range(3)], dedup_window=WINDOW, now=T0 + 3)
    assert len(store.claim_batch("db", "d1", T0 + 3, limit=1)) == 1
    store.set_paused("db", True)
    assert store.claim_batch("db", "d1", T0 + 3) == []
    store.set_paused("db", False)
    batch = store.claim_batch("db", "d1", T0 + 3)
    assert len(batch) == 2
    assert waiting.id not in {j.id for j in batch}  # not due before T0 + 60
    assert [j.id for j in store.claim_batch("db", "d1", T0 + 60)] == [waiting.id]
    assert store.claim_batch("db", "d1", T0 + 60) == []
    assert store.claim_batch("nowhere", "d1", T0) == []


@pytest.mark.postgres
def test_a_claim_starts_no_more_than_the_limit_whatever_plan_the_server_picks(
    tmp_path: Path,
) -> None:
    """With hash joins, sorts and materializing off, PostgreSQL plans a claim as a nested
    loop; a subquery it may run once per row must not let one claim reach past the limit."""
    kit = StoreKit("postgresql", tmp_path)
    try:
        setup = kit.open()
        setup.set_lanes({"db": 1})
        setup.enqueue([new_job(lane="db") for _ in range(6)], dedup_window=WINDOW, now=T0)
        off = ("hashjoin", "mergejoin", "material", "hashagg", "sort")
        kit.url += "".join(f"%20-cenable_{name}%3Doff" for name in off)
        assert len(kit.open().claim_batch("db", "d1", T0 + 1)) == 1
        assert len(setup.running_jobs()) == 1
    finally:
        kit.close()


@pytest.mark.postgres
def test_two_claims_racing_the_first_jobs_of_a_new_lane_never_exceed_its_limit(
    tmp_path: Path,
) -> None:
    """On PostgreSQL each statement of a claim sees what was committed when it began. Two
    daemons claim in a lane that does not exist yet: each one's lock of the lane row finds
    nothing, so holds nothing; then, before they count the lane's running jobs, the lane and
    its first jobs are committed. Both counts would see the one slot free. The interleaving
    is made to happen on the server: a third connection holds a table lock that the claims'
    counting statement must wait for (its snapshot is taken once the wait is over), and
    commits the new lane and its jobs in the same transaction that lets go of the lock."""
    psycopg = import_or_skip("psycopg", "uv sync --all-extras (the postgres extra)")
    kit = StoreKit("postgresql", tmp_path)
    with contextlib.ExitStack() as stack:
        stack.callback(kit.close)
        setup = kit.open()
        # The jobs, made by the store itself in a lane of their own; the gate moves them.
        setup.enqueue([new_job(lane="staging") for _ in range(2)], dedup_window=WINDOW, now=T0)
        claimers = [kit.open(), kit.open()]
        gate = stack.enter_context(psycopg.connect(kit.url))
        watch = stack.enter_context(psycopg.connect(kit.url, autocommit=True))
        gate.execute("LOCK TABLE spoolq_jobs IN EXCLUSIVE MODE")
        results: list[object] = [None, None]

        def claim(i: int) -> None:
            try:
                results[i] = claimers[i].claim_batch("db", f"d{i}", T0 + 1)
            except BaseException as exc:
                results[i] = exc

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE relation = 'spoolq_jobs'::regclass AND NOT granted"
        )
        wait_until(
            lambda: watch.execute(waiting).fetchone() == (2,),
            30,
            "both claims to have locked their (missing) lane and to wait to count",
        )
        gate.execute("INSERT INTO spoolq_lanes (name, concurrency) VALUES ('db', 1)")
        gate.execute("UPDATE spoolq_jobs SET lane = 'db' WHERE lane = 'staging'")
        gate.commit()
        for t in threads:
            t.join(30)
        # Each claim took what the limit allows, or was refused as a transient fault (the
        # daemon backs off and claims again); none was left half done.
        assert all(isinstance(r, list | StoreUnavailable) for r in results), results
        claimed = [job for r in results if isinstance(r, list) for job in r]
        assert len(claimed) <= 1, f"{len(claimed)} jobs started in a lane of 1"
        assert len(setup.running_jobs()) == len(claimed)
        assert len(setup.claim_batch("db", "d3", T0 + 2)) == 1 - len(claimed)
        assert len(setup.running_jobs()) == 1


def test_a_home_claims_only_its_own_jobs_but_shares_the_lane_limit(store: Store) -> None:
    """Daemons on different hosts share lanes; each runs only the triggers it claimed."""
    store.set_lanes({"db": 2})
    a1 = enqueue1(store, lane="db", home="hostA:/s")
    b1 = enqueue1(store, T0 + 1, lane="db", home="hostB:/s")
    a2 = enqueue1(store, T0 + 2, lane="db", home="hostA:/s")
    b2 = enqueue1(store, T0 + 3, lane="db", home="hostB:/s")
    assert store.lanes_with_work(T0 + 5, home="hostA:/s") == ["db"]
    got_a = claim_next(store, "db", "dA", T0 + 5, home="hostA:/s")
    assert got_a is not None and got_a.id == a1.id
    got_b = store.claim_batch("db", "dB", T0 + 5, home="hostB:/s")
    assert [j.id for j in got_b] == [b1.id]  # one slot left of 2, though B has 2 waiting
    assert claim_next(store, "db", "dA", T0 + 5, home="hostA:/s") is None
    finish(store, got_a, OK, JobState.SUCCEEDED, T0 + 6)
    again = claim_next(store, "db", "dA", T0 + 6, home="hostA:/s")
    assert again is not None and again.id == a2.id
    assert store.lanes_with_work(T0 + 6, home="hostA:/s") == []
    assert store.lanes_with_work(T0 + 6, home="hostB:/s") == ["db"]
    assert store.lanes_with_work(T0 + 6) == ["db"]
    assert store.get(b2.id).state is JobState.QUEUED


def test_next_due_can_be_asked_for_one_home(store: Store) -> None:
    store.set_lanes({"default": 5})
    for home, wait in (("hostA:/s", 300), ("hostB:/s", 60)):
        running = run_to(store, JobState.RUNNING, home=home, retries=1)
        schedule_retry(store, running, EXIT3, not_before=T0 + wait, now=T0 + 2)
    assert store.next_due(T0 + 2) == T0 + 60
    assert store.next_due(T0 + 2, home="hostA:/s") == T0 + 300
    assert store.next_due(T0 + 2, home="hostC:/s") is None


# -- running a job ---------------------------------------------------------------------------
def test_mark_started_records_the_process(store: Store) -> None:
    job = run_to(store, JobState.RUNNING)
    store.mark_started(job.id, 4242, "12345")
    got = store.get(job.id)
    assert (got.pid, got.pid_start) == (4242, "12345")


def test_mark_started_does_not_touch_a_job_that_is_no_longer_running(store: Store) -> None:
    job = run_to(store, JobState.SUCCEEDED)
    store.mark_started(job.id, 4242, "12345")
    assert store.get(job.id).pid is None


@pytest.mark.parametrize(
    ("state", "result", "failures"),
    [
        (JobState.SUCCEEDED, OK, 0),
        (JobState.FAILED, EXIT3, 1),
        (JobState.CANCELLED, KILLED, 0),
    ],
)
def test_finish_ends_the_job_and_records_the_attempt(
    store: Store, state: JobState, result: AttemptResult, failures: int
) -> None:
    running = run_to(store, JobState.RUNNING)
    store.mark_started(running.id, 4242, "1")
    done = finish(store, store.get(running.id), result, state, T0 + 9)
    assert done.state is state
    # A cancelled job's reason is the same however it was cancelled: queued or running.
    reason = "cancelled by operator" if state is JobState.CANCELLED else result.reason
    assert (done.exit_code, done.reason, done.finished_at) == (
        result.exit_code, reason, T0 + 9
    )  # fmt: skip
    assert (done.failures, done.attempts) == (failures, 1)
    assert (done.owner, done.pid) == (None, None)
    assert store.get(running.id) == done
    (attempt,) = store.attempts(running.id)
    assert (attempt.exit_code, attempt.reason, attempt.finished_at) == (
        result.exit_code, result.reason, T0 + 9
    )  # fmt: skip
    assert (attempt.wall_s, attempt.cpu_s, attempt.max_rss_kb) == (
        result.wall_s, result.cpu_s, result.max_rss_kb
    )  # fmt: skip
    assert store.running_jobs() == []
    assert claim_next(store, "default", "d1", T0 + 10) is None


def test_a_hand_off_reads_the_finished_job_after_its_transaction(store: Store) -> None:
    """The daemon's hand-off: finish one job and fill its slot in one transaction, and read
    the finished job only afterwards (on PostgreSQL, no round trip of its own)."""
    store.set_lanes({"db": 1})
    running = run_to(store, JobState.RUNNING, lane="db")
    waiting = enqueue1(store, T0 + 1, lane="db")
    with store.atomic():
        read = store.end_attempt(running, OK, None, T0 + 5)
        started = store.claim_batch("db", "d1", T0 + 5)
    assert [j.id for j in started] == [waiting.id]  # the slot it freed, same transaction
    done = read()
    assert (done.id, done.state, done.finished_at, done.owner) == (
        running.id, JobState.SUCCEEDED, T0 + 5, None
    )  # fmt: skip
    assert store.get(running.id) == done
    assert read() == done  # read once, kept


def test_finishing_a_job_a_peer_requeued_leaves_it_as_the_peer_left_it(store: Store) -> None:
    """A stalled daemon's job was re-queued by another; the late outcome must not end it."""
    running = run_to(store, JobState.RUNNING)
    (requeued,) = store.requeue_interrupted([running], T0 + 5)
    assert requeued.state is JobState.QUEUED
    late = finish(store, running, OK, JobState.SUCCEEDED, T0 + 6)
    assert late.state is JobState.QUEUED and late == store.get(running.id)


def test_a_late_outcome_leaves_alone_the_run_a_peer_started_since(store: Store) -> None:
    """A daemon silent for stale_after: a peer re-queued its job and another daemon runs
    it again. The silent daemon's late outcome, success or failure, must neither end the
    new run (its lane slot would count as free) nor rewrite the interrupted attempt."""
    running = run_to(store, JobState.RUNNING)
    store.requeue_interrupted([running], T0 + 5)
    again = claim_next(store, running.lane, "d2", T0 + 6)
    assert again is not None
    assert finish(store, running, OK, JobState.SUCCEEDED, T0 + 7) == again
    assert schedule_retry(store, running, EXIT3, not_before=T0 + 9, now=T0 + 8) == again
    assert store.get(running.id) == again
    first, second = store.attempts(running.id)
    assert (first.reason, first.finished_at, first.exit_code) == ("interrupted", T0 + 5, None)
    assert (second.owner, second.finished_at) == ("d2", None)
    done = finish(store, again, OK, JobState.SUCCEEDED, T0 + 10)
    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 2)


def test_schedule_retry_counts_the_failure_and_queues_the_job_for_later(store: Store) -> None:
    running = run_to(store, JobState.RUNNING, retries=2)
    again = schedule_retry(store, running, EXIT3, not_before=T0 + 30, now=T0 + 2)
    assert again.state is JobState.QUEUED
    assert (again.failures, again.attempts, again.not_before) == (1, 1, T0 + 30)
    assert (again.exit_code, again.reason) == (3, "exit 3")
    assert again.owner is None
    (attempt,) = store.attempts(running.id)
    assert (attempt.exit_code, attempt.reason, attempt.finished_at) == (3, "exit 3", T0 + 2)

    second = claim_next(store, "default", "d2", T0 + 30)
    assert second is not None
    assert (second.attempts, second.failures, second.owner) == (2, 1, "d2")
    assert [a.n for a in store.attempts(running.id)] == [1, 2]
    assert finish(store, second, EXIT3, JobState.FAILED, T0 + 31).failures == 2


def test_requeue_interrupted_closes_the_attempt_without_counting_a_failure(
    store: Store,
) -> None:
    store.set_lanes({"default": 5})
    lost = run_to(store, JobState.RUNNING)
    other = run_to(store, JobState.SUCCEEDED)
    requeued = store.requeue_interrupted(
        [lost, other, dataclasses.replace(lost, id=new_job_id())], T0 + 50
    )
    assert [j.id for j in requeued] == [lost.id]
    (job,) = requeued
    assert job.state is JobState.QUEUED
    assert (job.failures, job.attempts, job.owner) == (0, 1, None)
    (attempt,) = store.attempts(lost.id)
    assert (attempt.reason, attempt.exit_code, attempt.finished_at) == (
        "interrupted", None, T0 + 50
    )  # fmt: skip
    assert store.get(other.id).state is JobState.SUCCEEDED
    rerun = claim_next(store, "default", "d2", T0 + 50)  # due at once
    assert rerun is not None and rerun.id == lost.id and rerun.attempts == 2


def test_a_rescue_leaves_alone_a_job_a_live_daemon_has_claimed_since(store: Store) -> None:
    """Two daemons saw a dead daemon's job running. The first re-queued it and a live
    daemon claimed it again; the second's rescue, of the run it saw, must not touch the
    new run (it would run twice at once)."""
    seen = run_to(store, JobState.RUNNING)  # under the dead daemon "d1"
    assert [j.state for j in store.requeue_interrupted([seen], T0 + 5)] == [JobState.QUEUED]
    again = claim_next(store, seen.lane, "d2", T0 + 6)
    assert again is not None and (again.id, again.attempts) == (seen.id, 2)
    assert store.requeue_interrupted([seen], T0 + 7) == []
    assert store.get(seen.id) == again
    (first, second) = store.attempts(seen.id)
    assert (first.reason, second.finished_at) == ("interrupted", None)


@pytest.mark.postgres
def test_two_daemons_rescuing_the_same_job_at_once_requeue_it_once(tmp_path: Path) -> None:
    """Two daemons see a dead daemon's job running and both re-queue it. The second one
    reads the job while the first one's transaction, not yet committed, re-queues it: it
    must wait for that commit, find the job queued and leave it alone - not fail (which
    would end the daemon) nor close the attempt a second time."""
    psycopg = import_or_skip("psycopg", "uv sync --all-extras (the postgres extra)")
    kit = StoreKit("postgresql", tmp_path)
    with contextlib.ExitStack() as stack:
        stack.callback(kit.close)
        first = kit.open()
        app = f"spoolq_c_{uuid.uuid4().hex[:8]}"
        second = open_store(f"{kit.url}&application_name={app}", kit.state_dir)
        stack.callback(second.close)
        watch = stack.enter_context(psycopg.connect(kit.url, autocommit=True))
        running = run_to(first, JobState.RUNNING)
        results: list[object] = []

        def rescue() -> None:
            try:
                results.append(second.requeue_interrupted([running], T0 + 6))
            except BaseException as exc:
                results.append(exc)

        waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        waiting += " AND wait_event_type = 'Lock'"
        with first.atomic():
            (requeued,) = first.requeue_interrupted([running], T0 + 5)
            rescuer = threading.Thread(target=rescue)
            rescuer.start()
            wait_until(
                lambda: watch.execute(waiting, (app,)).fetchone() == (1,),
                30,
                "the second rescue to wait for the first one's commit",
            )
        rescuer.join(30)
        assert results == [[]]
        assert first.get(running.id) == requeued
        assert (requeued.state, requeued.attempts) == (JobState.QUEUED, 1)
        (attempt,) = first.attempts(running.id)
        assert (attempt.reason, attempt.finished_at) == ("interrupted", T0 + 5)


def test_running_jobs_lists_all_or_one_owners(store: Store) -> None:
    store.set_lanes({"default": 5})
    store.enqueue([new_job() for _ in range(3)], dedup_window=WINDOW, now=T0)
    a = claim_next(store, "default", "d1", T0)
    b = claim_next(store, "default", "d2", T0)
    c = claim_next(store, "default", "d1", T0)
    assert a and b and c
    assert [j.id for j in store.running_jobs()] == [a.id, b.id, c.id]
    assert [j.id for j in store.running_jobs("d1")] == [a.id, c.id]
    assert [j.id for j in store.running_jobs("d3")] == []


# -- operators: cancel, retry ----------------------------------------------------------------
def test_cancel_a_queued_job_means_it_never_runs(store: Store) -> None:
    job = enqueue1(store)
    cancelled = store.cancel(job.id, T0 + 1)
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at == T0 + 1
    assert claim_next(store, "default", "d1", T0 + 2) is None


def test_cancel_a_running_job_asks_its_owner_to_stop_it(store: Store) -> None:
    job = run_to(store, JobState.RUNNING)
    flagged = store.cancel(job.id, T0 + 3)
    assert flagged.state is JobState.RUNNING
    assert flagged.cancel_requested
    assert [j.id for j in store.cancel_requests("d1")] == [job.id]
    assert store.cancel_requests("d2") == []
    done = finish(store, store.get(job.id), KILLED, JobState.CANCELLED, T0 + 4)
    assert done.state is JobState.CANCELLED
    assert store.cancel_requests("d1") == []


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
def test_cancel_a_finished_job_is_an_error_that_changes_nothing(
    store: Store, state: JobState
) -> None:
    job = run_to(store, state)
    with pytest.raises(SpoolqError, match="already") as exc:
        store.cancel(job.id, T0 + 5)
    assert not isinstance(exc.value, JobNotFound)
    assert store.get(job.id) == job


def test_cancel_an_unknown_job_raises_job_not_found(store: Store) -> None:
    with pytest.raises(JobNotFound):
        store.cancel(new_job_id(), T0)


def test_retry_grants_fresh_retries_and_keeps_the_history(store: Store) -> None:
    running = run_to(store, JobState.RUNNING, retries=1)
    queued = schedule_retry(store, running, EXIT3, not_before=T0 + 10, now=T0 + 2)
    second = claim_next(store, "default", "d1", queued.not_before)
    assert second is not None
    failed = finish(store, second, EXIT3, JobState.FAILED, T0 + 11)
    assert (failed.failures, failed.attempts) == (2, 2)
    assert store.failed_ids() == [failed.id]

    again = store.retry(failed.id, T0 + 100)
    assert again.state is JobState.QUEUED
    assert (again.failures, again.attempts, again.finished_at, again.reason) == (0, 2, None, None)
    assert store.failed_ids() == []
    third = claim_next(store, "default", "d1", T0 + 100)  # due at once
    assert third is not None and third.attempts == 3
    assert [(a.n, a.reason) for a in store.attempts(failed.id)] == [
        (1, "exit 3"),
        (2, "exit 3"),
        (3, None),
    ]


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.CANCELLED])
def test_retry_runs_a_succeeded_or_cancelled_job_again(store: Store, state: JobState) -> None:
    job = run_to(store, state)
    assert store.retry(job.id, T0 + 5).state is JobState.QUEUED
    assert claim_next(store, "default", "d1", T0 + 5) is not None


def test_retry_refuses_live_unparsed_and_unknown_jobs(store: Store) -> None:
    queued = enqueue1(store)
    with pytest.raises(SpoolqError, match="queued"):
        store.retry(queued.id, T0)
    garbage = enqueue1(store, reason="invalid JSON", parsed=False)
    with pytest.raises(SpoolqError, match="never parsed"):
        store.retry(garbage.id, T0)
    with pytest.raises(JobNotFound):
        store.retry(new_job_id(), T0)
    assert store.get(queued.id).state is JobState.QUEUED


# -- operators: reading ----------------------------------------------------------------------
def test_get_accepts_a_full_id_or_a_unique_prefix(store: Store) -> None:
    ids = ["01HAAAAAAAAAAAAAAAAAAAAAA1", "01HAAAAAAAAAAAAAAAAAAAAAA2", "01HBBBBBBBBBBBBBBBBBBBBBB1"]
    for job_id in ids:
        enqueue1(store, job_id=job_id)
    assert store.get(ids[0]).id == ids[0]
    assert store.get("01HB").id == ids[2]
    assert store.get("01hb").id == ids[2]  # ids are case-insensitive Crockford base32
    assert store.get("01HAAAAAAAAAAAAAAAAAAAAAA2").id == ids[1]
    with pytest.raises(JobNotFound, match="matches 2 jobs"):
        store.get("01HA")
    with pytest.raises(JobNotFound, match="no job"):
        store.get("01HC")
    with pytest.raises(JobNotFound):
        store.get(new_job_id())


def test_list_jobs_is_newest_first_with_filters_and_limit(store: Store) -> None:
    store.set_lanes({"db": 5, "web": 5})
    db1 = enqueue1(store, lane="db")
    web1 = enqueue1(store, T0 + 1, lane="web")
    db2 = enqueue1(store, T0 + 2, lane="db")
    rej = enqueue1(store, T0 + 3, lane="web", reason="bad")
    claimed = claim_next(store, "db", "d1", T0 + 4)
    assert claimed is not None and claimed.id == db1.id

    def ids(**kw: object) -> list[str]:
        return [j.id for j in store.list_jobs(**kw)]  # type: ignore[arg-type]

    assert ids() == [rej.id, db2.id, web1.id, db1.id]
    assert ids(limit=2) == [rej.id, db2.id]
    assert ids(lane="db") == [db2.id, db1.id]
    assert ids(state=JobState.QUEUED) == [db2.id, web1.id]
    assert ids(state=JobState.RUNNING) == [db1.id]
    assert ids(state=JobState.QUEUED, lane="web") == [web1.id]
    assert ids(state=JobState.FAILED) == []


def test_lane_status_and_state_counts_describe_the_queue(store: Store) -> None:
    store.set_lanes({"db": 2, "web": 1})
    store.enqueue(
        [new_job(lane="db", created_at=T0 + i) for i in range(4)], dedup_window=WINDOW, now=T0
    )
    claim_all(store, "db", "d1", T0 + 10)
    enqueue1(store, T0 + 11, lane="web", reason="bad")
    store.set_paused("web", True)
    status = {s.name: s for s in store.lane_status()}
    assert set(status) >= {"db", "web"}
    db, web = status["db"], status["web"]
    assert (db.concurrency, db.running, db.queued, db.paused) == (2, 2, 2, False)
    assert db.oldest_queued_at == T0 + 2  # the two oldest are running
    assert (web.concurrency, web.running, web.queued, web.paused) == (1, 0, 0, True)
    assert web.oldest_queued_at is None
    counts = store.state_counts()
    assert counts == {
        "queued": 2, "running": 2, "succeeded": 0, "failed": 0, "cancelled": 0, "rejected": 1
    }  # fmt: skip


def test_state_counts_count_every_state_and_follow_each_change(store: Store) -> None:
    """What ``spoolq status`` shows: one count per state, and each job in exactly one."""
    store.set_lanes({"default": 10})
    wanted = {  # queued last: run_to claims the lane's next queued job
        JobState.SUCCEEDED: 4, JobState.FAILED: 2, JobState.CANCELLED: 1,
        JobState.RUNNING: 2, JobState.QUEUED: 3,
    }  # fmt: skip
    made = {state: [run_to(store, state) for _ in range(n)] for state, n in wanted.items()}
    enqueue1(store, reason="bad")
    assert store.state_counts() == {
        "queued": 3, "running": 2, "succeeded": 4, "failed": 2, "cancelled": 1, "rejected": 1
    }  # fmt: skip
    assert sorted(store.failed_ids()) == sorted(j.id for j in made[JobState.FAILED])
    again = store.retry(made[JobState.FAILED][0].id, T0 + 10)  # failed -> queued
    assert again.state is JobState.QUEUED
    finish(store, made[JobState.RUNNING][0], OK, JobState.SUCCEEDED, T0 + 11)
    assert store.state_counts() == {
        "queued": 4, "running": 1, "succeeded": 5, "failed": 1, "cancelled": 1, "rejected": 1
    }  # fmt: skip
    assert store.failed_ids() == [made[JobState.FAILED][1].id]


def test_prune_deletes_only_finished_jobs_older_than_the_cutoff(store: Store) -> None:
    store.set_lanes({"default": 10})
    old_ok = run_to(store, JobState.SUCCEEDED)  # finished T0 + 2
    old_failed = run_to(store, JobState.FAILED)
    old_rejected = enqueue1(store, reason="bad")  # finished T0
    new_ok = run_to(store, JobState.SUCCEEDED, now=T0 + 100)
    live = run_to(store, JobState.RUNNING)
    waiting = enqueue1(store)
    pruned = store.prune(T0 + 50)
    assert {j.id for j in pruned} == {old_ok.id, old_failed.id, old_rejected.id}
    assert {j.state for j in pruned} == {JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED}
    for job in pruned:
        with pytest.raises(JobNotFound):
            store.get(job.id)
        assert store.attempts(job.id) == []
    assert {j.id for j in store.list_jobs()} == {new_ok.id, live.id, waiting.id}
    assert len(store.attempts(new_ok.id)) == 1
    assert store.prune(T0 + 50) == []


# -- daemons and the schedule ----------------------------------------------------------------
def test_daemons_register_heartbeat_and_unregister(store: Store) -> None:
    a = DaemonInfo("d1@h", "h", 100, T0, T0, "s1")
    b = DaemonInfo("d2@h", "h", 200, T0 + 1, T0 + 1, "s2")
    store.register_daemon(a)
    store.register_daemon(b)
    assert store.daemons() == [a, b]
    store.heartbeat("d1@h", T0 + 30)
    assert store.daemons()[0].heartbeat_at == T0 + 30
    store.unregister_daemon("d1@h")
    assert store.daemons() == [b]
    # Registering again (as after a store reconnect) keeps one row and refreshes it.
    store.register_daemon(DaemonInfo("d2@h", "h", 200, T0 + 1, T0 + 40, "s2"))
    assert [(d.id, d.pid, d.heartbeat_at) for d in store.daemons()] == [("d2@h", 200, T0 + 40)]


def test_next_due_and_lanes_with_work_follow_not_before(store: Store) -> None:
    store.set_lanes({"db": 5, "web": 5})
    assert store.next_due(T0) is None
    assert store.lanes_with_work(T0) == []
    for lane, wait in (("db", 300), ("web", 60)):
        running = run_to(store, JobState.RUNNING, lane=lane, retries=1)
        schedule_retry(store, running, EXIT3, not_before=T0 + wait, now=T0 + 2)
    assert store.next_due(T0 + 2) == T0 + 60
    assert store.lanes_with_work(T0 + 2) == []
    assert store.lanes_with_work(T0 + 60) == ["web"]
    assert store.next_due(T0 + 60) == T0 + 300
    enqueue1(store, T0 + 61, lane="db")
    assert sorted(store.lanes_with_work(T0 + 61)) == ["db", "web"]
    assert store.next_due(T0 + 300) is None


# -- notification between processes --------------------------------------------------------
def readable(listener: Listener, timeout_ms: int) -> bool:
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    return bool(poller.poll(timeout_ms))


def daemon_id(name: str) -> str:
    # Unique: a PostgreSQL server's notification channels are shared by every test run on it.
    return f"{name}-{uuid.uuid4().hex[:8]}@h"


def daemon_listening(store: Store, daemon: str) -> Listener:
    """What a daemon does at start: register on the store, then listen for wake-ups."""
    store.register_daemon(DaemonInfo(daemon, "h", os.getpid(), T0, T0, ""))
    return store.listen(daemon)


def test_notify_from_another_connection_wakes_every_listening_daemon(kit: StoreKit) -> None:
    daemon_a, daemon_b, control = kit.open(), kit.open(), kit.open()
    la = daemon_listening(daemon_a, daemon_id("a"))
    lb = daemon_listening(daemon_b, daemon_id("b"))
    try:
        assert not readable(la, 0)
        control.notify()
        assert readable(la, 5000)
        assert readable(lb, 5000)
        la.drain()
        lb.drain()
        assert not readable(la, 0)
        assert not readable(lb, 0)
        control.notify()  # and again, after a drain
        assert readable(la, 5000)
    finally:
        la.close()
        lb.close()


def test_notify_does_not_wake_the_excluded_daemon(kit: StoreKit) -> None:
    """A daemon that changed the store itself need not be woken by its own notify()."""
    daemon_a, daemon_b = kit.open(), kit.open()
    a, b = daemon_id("a"), daemon_id("b")
    la = daemon_listening(daemon_a, a)
    lb = daemon_listening(daemon_b, b)
    try:
        daemon_a.notify(exclude=a)
        assert readable(lb, 5000)  # once this arrived, one for a would have too
        assert not readable(la, 0)
    finally:
        la.close()
        lb.close()


def test_notify_after_a_daemon_left_is_harmless(kit: StoreKit) -> None:
    daemon, control = kit.open(), kit.open()
    gone_id = daemon_id("gone")
    gone = daemon_listening(daemon, gone_id)
    gone.close()
    daemon.unregister_daemon(gone_id)
    live = daemon_listening(daemon, daemon_id("live"))
    try:
        control.notify()
        control.notify()
        assert readable(live, 5000)
    finally:
        live.close()


def test_freed_slots_wake_only_the_daemons_with_work_in_those_lanes(kit: StoreKit) -> None:
    """A daemon whose jobs freed slots wakes the peers that may fill them: those with a job
    queued in the lane for their home, or for any home. On SQLite every daemon shares the
    one state directory (and home), so every one is woken."""
    stores = {name: kit.open() for name in ("ended", "busy", "idle", "other")}
    ids = {name: daemon_id(name) for name in stores}
    listeners = {}
    for name, store in stores.items():
        store.register_daemon(DaemonInfo(ids[name], "h", os.getpid(), T0, T0, "", f"home-{name}"))
        listeners[name] = store.listen(ids[name])
    try:
        enqueue1(stores["busy"], lane="db", home="home-busy")
        enqueue1(stores["other"], lane="web", home="home-other")
        stores["ended"].notify(exclude=ids["ended"], lanes=["db"])
        assert readable(listeners["busy"], 5000)
        # Sent in one statement: had the others been woken, it would have arrived by now.
        woken = {n for n in ("idle", "other", "ended") if readable(listeners[n], 200)}
        assert woken == ({"idle", "other"} if kit.kind == "sqlite" else set())
        for lst in listeners.values():
            lst.drain()
        enqueue1(stores["busy"], lane="db", home="")  # an any-host job: anyone may take it
        stores["ended"].notify(exclude=ids["ended"], lanes=["web", "db"])
        for name in ("busy", "idle", "other"):
            assert readable(listeners[name], 5000), name
        assert not readable(listeners["ended"], 0)
    finally:
        for lst in listeners.values():
            lst.close()


# -- several connections, as several processes ----------------------------------------------
LIMIT = 2
ROUNDS = 100


def test_concurrent_claims_from_two_connections_never_exceed_the_lane_limit(
    kit: StoreKit,
) -> None:
    """Two threads with their own connections race for the last slots of a lane, round after
    round. Nothing finishes during a round, so exactly LIMIT claims may succeed."""
    control = kit.open()
    control.set_lanes({"db": LIMIT})
    claimers = [kit.open(), kit.open()]
    barrier = threading.Barrier(3, timeout=30)
    got: list[list[Job]] = [[], []]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for r in range(ROUNDS):
                barrier.wait()
                if i == 0:
                    got[i] = claim_all(claimers[i], "db", f"w{i}", T0 + r)
                else:  # the other claims a batch at a time
                    got[i] = []
                    while batch := claimers[i].claim_batch("db", f"w{i}", T0 + r):
                        got[i] += batch
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    total = 0
    finished = False
    try:
        for r in range(ROUNDS):
            control.enqueue(
                [new_job(lane="db") for _ in range(LIMIT + 2)], dedup_window=WINDOW, now=T0 + r
            )
            barrier.wait()  # go
            barrier.wait()  # both claimed all they could
            claimed = got[0] + got[1]
            assert len(claimed) == LIMIT, f"round {r}: {len(got[0])} + {len(got[1])} claims"
            assert len({j.id for j in claimed}) == LIMIT
            assert len(control.running_jobs()) == LIMIT
            total += len(claimed)
            for job in claimed:
                finish(control, job, OK, JobState.SUCCEEDED, T0 + r)
        finished = True
    except threading.BrokenBarrierError:
        pass  # a worker failed: its error is reported below
    finally:
        if not finished:
            barrier.abort()  # release the workers so that the failure is reported
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert total == LIMIT * ROUNDS
    assert control.state_counts()["succeeded"] == LIMIT * ROUNDS


CLAIMER = """
import sys
from pathlib import Path
from spoolq.store import open_store

store = open_store(sys.argv[1], Path(sys.argv[2]))
print("ready", flush=True)
for line in sys.stdin:
    word, now = line.split()
    if word == "quit":
        break
    print("start", flush=True)
    ids = []
    while job := store.claim_batch("db", "child", float(now), limit=1):
        ids.append(job[0].id)
    print(" ".join(ids) or "-", flush=True)
store.close()
"""


@pytest.mark.timeout(60)
def test_a_second_process_claiming_at_the_same_time_never_exceeds_the_lane_limit(
    kit: StoreKit,
) -> None:
    limit, rounds = 4, 60
    store = kit.open()
    store.set_lanes({"db": limit})
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, kit.url, str(kit.state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        child_claims = 0
        for r in range(rounds):
            now = T0 + r
            store.enqueue(
                [new_job(lane="db") for _ in range(limit + 2)], dedup_window=WINDOW, now=now
            )
            child.stdin.write(f"go {now}\n")
            child.stdin.flush()
            if r % 2:
                # Every other round the child gets a head start, so that both sides win
                # some races whatever the machine's load.
                assert child.stdout.readline() == "start\n"
                mine = claim_all(store, "db", "parent", now)
            else:
                mine = claim_all(store, "db", "parent", now)
                assert child.stdout.readline() == "start\n"
            line = child.stdout.readline()
            assert line, "the claiming child died"
            theirs = [] if line.strip() == "-" else line.split()
            child_claims += len(theirs)
            assert len(mine) + len(theirs) == limit, f"round {r}: {len(mine)} + {len(theirs)}"
            running = store.running_jobs()
            assert len(running) == limit
            assert {j.id for j in running} == {j.id for j in mine} | set(theirs)
            for job in running:
                finish(store, job, OK, JobState.SUCCEEDED, now)
        child.stdin.write("quit 0\n")
        child.stdin.flush()
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdin.close()
        child.stdout.close()
    # Not part of the contract, but without it the test raced nothing.
    assert 0 < child_claims < limit * rounds


# -- SQLite specifics ------------------------------------------------------------------------
def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


LATEST = max(n for n, _ in queries.migrations("sqlite"))


def test_sqlite_fresh_file_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "new" / "spoolq.db"
    store = SqliteStore(path)
    store.close()
    assert user_version(path) == LATEST
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def back_to_schema_1(db: sqlite3.Connection) -> None:
    """Make a store file look as the first release left it: drop what every later migration
    created, and make again (from migration 1) what they dropped, so that a new migration
    is undone here without being listed."""
    first, *later = [script for _, script in queries.migrations("sqlite")]
    later_sql = "\n".join(later)
    added = re.findall(r"\bALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)", later_sql, re.I)
    altered = re.findall(r"\bALTER\s+TABLE\b", later_sql, re.I)
    assert len(altered) == len(added), "undo this kind of ALTER TABLE here"
    kinds = ("TRIGGER", "VIEW", "INDEX", "TABLE")  # dependants first
    created = re.findall(
        r"\bCREATE\s+(?:UNIQUE\s+)?(TRIGGER|VIEW|INDEX|TABLE)\s+(?:IF NOT EXISTS\s+)?(\w+)",
        later_sql,
        re.I,
    )
    for kind, name in sorted(created, key=lambda c: kinds.index(c[0].upper())):
        db.execute(f"DROP {kind} IF EXISTS {name}")
    for table, column in added:
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    dropped = re.findall(
        r"\bDROP\s+(TRIGGER|VIEW|INDEX|TABLE)\s+(?:IF EXISTS\s+)?(\w+)", later_sql, re.I
    )
    for kind, name in dropped:
        (create,) = re.findall(rf"\bCREATE\s+(?:UNIQUE\s+)?{kind}\s+{name}\b[^;]*", first, re.I)
        db.execute(create)
    db.execute("PRAGMA user_version = 1")


def test_sqlite_file_of_version_1_is_upgraded_with_its_jobs(tmp_path: Path) -> None:
    """A store written by the first release (schema 1, with the index on every state)
    opens, moves to the latest schema and counts what it held."""
    path = tmp_path / "spoolq.db"
    store = SqliteStore(path)
    store.set_lanes({"default": 10})
    done = run_to(store, JobState.SUCCEEDED)
    failed = run_to(store, JobState.FAILED)
    queued = enqueue1(store)
    store.close()
    db = sqlite3.connect(path)
    release_1 = sqlite3.connect(":memory:")
    try:
        back_to_schema_1(db)
        db.commit()
        release_1.executescript(queries.migrations("sqlite")[0][1])
        objects = "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        assert set(db.execute(objects)) == set(release_1.execute(objects))
    finally:
        db.close()
        release_1.close()
    store = SqliteStore(path)
    try:
        assert user_version(path) == LATEST
        assert [j.id for j in store.list_jobs()] == [queued.id, failed.id, done.id]
        counts = store.state_counts()
        assert (counts["succeeded"], counts["failed"], counts["queued"]) == (1, 1, 1)
        assert store.failed_ids() == [failed.id]
    finally:
        store.close()


# Every named query, except the listings an operator asks for (newest first, a page at a
# time: walking the table backwards from its end is their plan). With 100,000 jobs queued,
# a daemon query walking the whole jobs table costs ~30 ms a heartbeat: 0.3 % of a core at
# idle, three times the idle target, which is how `running_jobs` was caught. A new query is
# checked as soon as it is added to sqlite.sql.
LISTINGS = {"list_jobs", "list_jobs_page"}
# Once per daemon start, not per heartbeat: a state directory's jobs recorded under its old
# name (host:path) take its identity.
ONCE = {"adopt_home"}
SQLITE_QUERIES = sorted(set(queries.load("sqlite.sql")) - LISTINGS - ONCE)


@pytest.mark.parametrize("name", SQLITE_QUERIES)
def test_sqlite_queries_never_walk_the_whole_jobs_table(tmp_path: Path, name: str) -> None:
    store = SqliteStore(tmp_path / "spoolq.db")
    try:
        sql = queries.load("sqlite.sql")[name]
        params = dict.fromkeys(re.findall(r":(\w+)", sql))
        plan = [row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        store.close()
    scans = [step for step in plan if re.match(r"SCAN (jobs|j)\b(?! USING)", step)]
    assert not scans, f"{name}: {plan}"


def test_the_listings_allowed_to_walk_the_table_are_queries_that_exist() -> None:
    assert set(queries.load("sqlite.sql")) >= LISTINGS | ONCE


def test_sqlite_reopening_is_idempotent_and_keeps_the_jobs(tmp_path: Path) -> None:
    path = tmp_path / "spoolq.db"
    store = SqliteStore(path)
    job = enqueue1(store)
    store.close()
    for _ in range(2):
        store = SqliteStore(path)
        assert store.get(job.id) == job
        store.close()
    assert user_version(path) == LATEST


OPENER = """
import sys
from pathlib import Path
from spoolq.store.sqlite import SqliteStore

print("ready", flush=True)
for line in sys.stdin:  # a path: open (create, migrate) the store there and write to it
    try:
        store = SqliteStore(Path(line.strip()))
        store.set_lanes({sys.argv[1]: 1})
        store.close()
        print("ok", flush=True)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".replace("\\n", " "), flush=True)
"""


def test_sqlite_two_processes_opening_a_fresh_file_at_once_both_work(tmp_path: Path) -> None:
    """Two daemons (or a daemon and a CLI) started together on a new state directory: two
    processes, since SQLite's locks between processes are not those between threads."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, f"lane{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for attempt in range(10):
            path = tmp_path / f"race{attempt}" / "spoolq.db"
            for child in children:  # both are waiting on their stdin: go at once
                assert child.stdin is not None
                child.stdin.write(f"{path}\n")
                child.stdin.flush()
            answers = [child.stdout.readline() for child in children if child.stdout]
            assert answers == ["ok\n", "ok\n"], f"attempt {attempt}: {answers}"
            assert user_version(path) == LATEST
            store = SqliteStore(path)
            try:
                assert {"lane0", "lane1"} <= {lane.name for lane in store.lane_status()}
                enqueue1(store)
            finally:
                store.close()
    finally:
        for child in children:
            if child.stdin:
                child.stdin.close()
            try:
                child.wait(30)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait(10)
                if child.stdout:
                    child.stdout.close()


def test_sqlite_verify_notices_a_replaced_file_and_reopen_recovers(tmp_path: Path) -> None:
    path = tmp_path / "spoolq.db"
    store = SqliteStore(path)
    try:
        assert store.verify() is None
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        assert "deleted" in (store.verify() or "")
        store.reopen()
        assert store.verify() is None
        assert store.list_jobs() == []
        enqueue1(store)
        assert len(store.list_jobs()) == 1
    finally:
        store.close()


# -- atomic: several verbs, one transaction ---------------------------------------------------
def test_atomic_commits_several_verbs_together(kit: StoreKit) -> None:
    store, other = kit.open(), kit.open()
    store.set_lanes({"default": 1})
    running = run_to(store, JobState.RUNNING)
    store.enqueue([new_job()], dedup_window=WINDOW, now=T0)
    with store.atomic():
        finish(store, running, OK, JobState.SUCCEEDED, T0 + 1)
        nxt = claim_next(store, "default", "d1", T0 + 1)
    assert nxt is not None  # the slot freed inside the same transaction was taken
    assert other.get(running.id).state is JobState.SUCCEEDED
    assert other.get(nxt.id).state is JobState.RUNNING


def test_atomic_rolls_back_every_verb_on_error(kit: StoreKit) -> None:
    store, other = kit.open(), kit.open()
    store.set_lanes({"default": 1})
    running = run_to(store, JobState.RUNNING)
    with pytest.raises(RuntimeError), store.atomic():
        finish(store, running, OK, JobState.SUCCEEDED, T0 + 1)
        raise RuntimeError("crash between the verbs")
    assert other.get(running.id).state is JobState.RUNNING


def test_a_failing_statement_fails_its_whole_transaction_and_the_store_goes_on(
    kit: StoreKit,
) -> None:
    """PostgreSQL sends a statement nobody waits for only with the next one, or with the
    commit: its error must still fail the transaction, undo what came before it, and leave
    the connection ready for the next transaction."""
    store, other = kit.open(), kit.open()
    store.set_lanes({"default": 1})
    running = run_to(store, JobState.RUNNING)
    assert isinstance(store, SqlStore)
    with pytest.raises(StoreError), store.atomic():
        finish(store, running, OK, JobState.SUCCEEDED, T0 + 1)
        with store._tx() as tx:  # its attempt row exists: a second one breaks the key
            tx.run("insert_attempt", job_id=running.id, n=running.attempts, now=T0, owner="x")
    assert other.get(running.id).state is JobState.RUNNING
    assert store.get(running.id).state is JobState.RUNNING
    finish(store, running, OK, JobState.SUCCEEDED, T0 + 2)
    assert other.get(running.id).state is JobState.SUCCEEDED


@pytest.mark.postgres
def test_postgresql_what_a_failed_rollback_left_open_is_never_committed_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If ending a failed transaction does not get through (a lost rollback; an interrupt
    inside psycopg's pipeline code), the next verb must not run on that connection: its
    COMMIT would commit the failed verb's writes too."""
    psycopg = import_or_skip("psycopg", "uv sync --all-extras (the postgres extra)")
    kit = StoreKit("postgresql", tmp_path)
    try:
        store, other = kit.open(), kit.open()
        store.set_lanes({"default": 1})
        running = run_to(store, JobState.RUNNING)

        def lost(self: object) -> None:
            raise psycopg.OperationalError("the rollback did not get through")

        monkeypatch.setattr(psycopg.Connection, "rollback", lost)
        with pytest.raises(RuntimeError), store.atomic():
            finish(store, running, OK, JobState.SUCCEEDED, T0 + 1)
            raise RuntimeError("the daemon is interrupted between two verbs")
        monkeypatch.undo()
        store.set_paused("default", True)  # the next verb, with a commit of its own
        assert other.get(running.id).state is JobState.RUNNING
        assert other.lane_status()[0].paused
    finally:
        kit.close()


def test_enqueue_of_an_id_already_recorded_keeps_one_job(store: Store) -> None:
    """A batch retried after a commit whose answer was lost must not fail or double."""
    job = new_job()
    first = store.enqueue([job], dedup_window=WINDOW, now=T0)
    again = store.enqueue([job], dedup_window=WINDOW, now=T0 + 1)
    assert [j.id for j in again] == [first[0].id]
    assert len(store.list_jobs()) == 1


def test_a_job_cancelled_while_its_attempt_fails_is_not_retried(store: Store) -> None:
    running = run_to(store, JobState.RUNNING, retries=3)
    store.cancel(running.id, T0 + 1)  # flagged: its daemon has not seen it yet
    after = schedule_retry(store, running, EXIT3, not_before=T0 + 60, now=T0 + 2)
    assert after.state is JobState.CANCELLED
