"""The store's verbs for following jobs from outside the loop, on every store: a job found
by its trigger, the duplicate check before publishing, progress readings kept and dropped
with their job, and the wake-up of processes waiting for jobs to end."""

from __future__ import annotations

import contextlib
import select
import time
from dataclasses import replace
from pathlib import Path

import pytest

from spoolq.jobs import DaemonInfo, JobState
from spoolq.progress import Progress
from spoolq.store.base import Store
from tests.integration.test_store_contract import (
    T0,
    WINDOW,
    StoreKit,
    claim_next,
    enqueue1,
    new_job,
    run_to,
)


def test_a_job_is_found_by_its_trigger_newest_first_after_a_sequence_number(
    store: Store,
) -> None:
    assert store.last_seq() == 0
    trigger = "/srv/spool/load.trigger"  # a name used twice
    (old,) = store.enqueue([replace(new_job(), trigger=trigger)], dedup_window=WINDOW, now=T0)
    after = store.last_seq()
    assert after == old.seq
    enqueue1(store)  # another trigger in between
    (new,) = store.enqueue([replace(new_job(), trigger=trigger)], dedup_window=WINDOW, now=T0)
    assert store.find_by_trigger(trigger, after=0) == new
    assert store.find_by_trigger(trigger, after=new.seq - 1) == new
    assert store.find_by_trigger(trigger, after=new.seq) is None
    assert store.find_by_trigger("/no/such.trigger") is None


def test_an_active_key_is_found_as_the_duplicate_check_would(store: Store) -> None:
    assert store.find_active_key("k", T0 - WINDOW) is None
    job = enqueue1(store, key="k")
    assert store.find_active_key("k", T0 - WINDOW) == job.id
    store.cancel(job.id, T0 + 1)
    assert store.find_active_key("k", T0 - WINDOW) is None


def test_progress_is_kept_replaced_and_dropped_with_its_job(store: Store) -> None:
    job = run_to(store, JobState.RUNNING)
    assert store.progress_of([job.id]) == {}
    first = Progress(10, 100, "rows", None, 2.0, 45.0, T0 + 5, 1)
    store.save_progress({job.id: first})
    assert store.progress_of([job.id, "other"]) == {job.id: first}
    later = Progress(50, 100, "rows", "halfway", 4.0, 12.5, T0 + 10, 1)
    store.save_progress({job.id: later})
    assert store.progress_of([job.id]) == {job.id: later}
    store.cancel(job.id, T0 + 11)  # flagged; the job is pruned once finished
    other = run_to(store, JobState.SUCCEEDED, lane="other")
    store.save_progress({other.id: first})
    assert [j.id for j in store.prune(T0 + 100)] == [other.id]
    assert store.progress_of([other.id]) == {}


def test_a_job_ending_wakes_a_waiter_of_another_connection(kit: StoreKit) -> None:
    waiter_store, daemon_store = kit.open(), kit.open()
    listener = waiter_store.listen_ended()
    assert listener is not None
    try:
        job = enqueue1(daemon_store)
        running = claim_next(daemon_store, job.lane, "d1", T0 + 1)
        assert running is not None
        if kit.kind == "sqlite":  # (PostgreSQL's channel is shared by the whole server)
            # Nothing has ended yet: nothing to read (a queued or started job wakes nobody).
            assert select.select([listener.fileno()], [], [], 0.2)[0] == []
        daemon_store.cancel(job.id, T0 + 2)  # only flagged: still running
        listener.drain()
        rejected = enqueue1(daemon_store, reason="bad trigger")
        assert rejected.state is JobState.REJECTED
        assert select.select([listener.fileno()], [], [], 30)[0] == [listener.fileno()]
        listener.drain()
    finally:
        listener.close()


@pytest.mark.postgres
def test_postgresql_notifies_job_ends_only_while_someone_waits(tmp_path: Path, pg_url: str) -> None:
    """A notifying commit takes a lock every notifying commit on the server shares: a job's
    end notifies only while a waiter is registered (listen_ended registers, close lets go).
    (SQLite writes into each waiter's FIFO: with none, into nothing.)"""
    import psycopg

    kit = StoreKit("postgresql", tmp_path)
    daemon_store = kit.open()
    with (
        contextlib.closing(kit),
        psycopg.connect(kit.url, autocommit=True) as raw,
    ):  # hears; no waiter
        schema = raw.execute("SELECT current_schema()").fetchone()
        raw.execute("LISTEN spoolq_ended")

        def heard(timeout: float) -> bool:
            # (Other schemas on the server share the channel: only ours counts.)
            return any(n.payload == schema[0] for n in raw.notifies(timeout=timeout, stop_after=1))

        run_to(daemon_store, JobState.SUCCEEDED)
        enqueue1(daemon_store, reason="bad trigger")
        assert not heard(0.3)
        listener = kit.open().listen_ended()
        assert listener is not None
        try:
            run_to(daemon_store, JobState.SUCCEEDED, lane="other")
            assert heard(30)
        finally:
            listener.close()
        run_to(daemon_store, JobState.FAILED, lane="third")
        assert not heard(0.3)


def test_notifications_are_recorded_with_the_state_change_and_claimed_once(
    store: Store,
) -> None:
    store.set_notify_targets(
        [("ops", "failed", None), ("ops", "started", None), ("wh", "succeeded", "warehouse")]
    )
    failed = run_to(store, JobState.FAILED)  # started, then failed
    loaded = run_to(store, JobState.SUCCEEDED, lane="warehouse")  # started, then succeeded
    enqueue1(store, reason="bad trigger")  # rejected: nobody asked for it
    now = time.time() + 1
    due = store.claim_notifications("d1", now, lease=60)
    assert sorted((n.target, n.event, n.job_id, n.attempts) for n in due) == sorted(
        [
            ("ops", "started", failed.id, 1),
            ("ops", "failed", failed.id, 1),
            ("ops", "started", loaded.id, 1),
            ("wh", "succeeded", loaded.id, 1),
        ]
    )
    assert len({n.id for n in due}) == 4
    # Held by d1 - unless d1's daemon has no registration (dead): then taken at once.
    store.register_daemon(DaemonInfo("d3", "h", 1, now, now, "s"))
    due = sorted(store.claim_notifications("d3", now, lease=60), key=lambda n: n.event)
    assert [n.attempts for n in due] == [2, 2, 2, 2]
    assert store.claim_notifications("d4", now, lease=60) == []  # d3 is alive
    assert len(store.claim_notifications("d4", now + 61, lease=60)) == 4  # its lease ran out
    store.notification_sent(due[0].id, now)
    store.notification_failed(due[1].id, "HTTP 500", now + 100, None)
    store.notification_failed(due[2].id, "gave up", now, now)
    store.notification_failed(due[3].id, "HTTP 500", now + 200, None)
    assert store.next_notification() == now + 100
    assert store.notification_backlog() == {"ops": (1, 1), "wh": (1, 1)}
    (again,) = store.claim_notifications("d3", now + 150, lease=1)
    assert again.id == due[1].id and again.attempts == 4
    store.set_notify_targets([])
    run_to(store, JobState.SUCCEEDED, lane="warehouse")
    assert [n.id for n in store.claim_notifications("d3", now + 1000, lease=60)] == [
        due[1].id,
        due[3].id,
    ]
