"""The store's verbs for the web and /metrics, on every store: the finished and rejected
totals (bumped with the state change, never lowered) and the paged job list."""

from __future__ import annotations

import pytest

from spoolq.errors import JobNotFound
from spoolq.jobs import JobState
from spoolq.store import Store
from tests.integration.test_store_contract import (
    EXIT3,
    T0,
    claim_next,
    enqueue1,
    finish,
    run_to,
)


def totals(store: Store) -> dict[tuple[str, str], int]:
    return {(lane, outcome): n for lane, outcome, n in store.finished_totals()}


def test_finished_totals_count_each_ending_once_and_survive_prune(store: Store) -> None:
    store.set_lanes({"default": 10, "db": 1})
    assert totals(store) == {}
    run_to(store, JobState.SUCCEEDED)
    run_to(store, JobState.SUCCEEDED)
    run_to(store, JobState.FAILED, lane="db")
    run_to(store, JobState.CANCELLED)
    queued = enqueue1(store)
    store.cancel(queued.id, T0 + 3)  # cancelled while queued: a state change too
    enqueue1(store, reason="key 'x': unknown")
    enqueue1(store, reason="owner nobody is not trusted (add it to [security] trusted_owners)")
    run_to(store, JobState.RUNNING)  # not finished: not counted
    expected = {
        ("default", "succeeded"): 2,
        ("db", "failed"): 1,
        ("default", "cancelled"): 2,
        ("default", "rejected"): 2,
    }
    assert totals(store) == expected
    assert store.rejected_totals() == {"invalid": 1, "untrusted": 1}
    assert len(store.prune(T0 + 1000)) == 7
    assert totals(store) == expected  # prune deletes rows, never what they counted
    assert store.rejected_totals() == {"invalid": 1, "untrusted": 1}


def test_a_retried_job_counts_each_of_its_endings(store: Store) -> None:
    store.set_lanes({"default": 1})
    failed = run_to(store, JobState.FAILED)
    store.retry(failed.id, T0 + 10)
    running = claim_next(store, "default", "d1", T0 + 11)
    assert running is not None
    finish(store, running, EXIT3, JobState.FAILED, T0 + 12)
    assert totals(store) == {("default", "failed"): 2}


def test_duplicates_are_counted_as_rejected_duplicates(store: Store) -> None:
    store.set_lanes({"default": 1})
    enqueue1(store, key="k1")
    dup = enqueue1(store, key="k1")
    assert dup.state is JobState.REJECTED
    assert store.rejected_totals() == {"duplicate": 1}


def test_list_jobs_page_walks_newest_first_without_overlap(store: Store) -> None:
    store.set_lanes({"default": 100, "db": 100})
    ids = [enqueue1(store, lane="db" if i % 3 == 0 else "default").id for i in range(10)]
    seen: list[str] = []
    before = None
    while True:
        page = store.list_jobs_page(limit=4, before=before)
        if not page:
            break
        seen += [j.id for j in page]
        before = page[-1].id
    assert seen == ids[::-1]
    db = store.list_jobs_page(lane="db", limit=2, before=ids[9])
    assert [j.id for j in db] == [ids[6], ids[3]]
    assert store.list_jobs_page(state=JobState.RUNNING) == []
    with pytest.raises(JobNotFound):
        store.list_jobs_page(before="01ZZZZZZZZZZZZZZZZZZZZZZZZ")


def test_overview_is_lane_status_and_state_counts_in_one_read(store: Store) -> None:
    store.set_lanes({"default": 2, "db": 1})
    run_to(store, JobState.SUCCEEDED)
    run_to(store, JobState.FAILED, lane="db")
    run_to(store, JobState.RUNNING)
    for i in range(4):
        enqueue1(store, now=T0 + 10 + i, priority=i % 2, lane="db")
    enqueue1(store, reason="key 'x': unknown")
    store.set_paused("db", True)
    lanes, counts = store.overview()
    assert lanes == store.lane_status()
    assert counts == store.state_counts()
    db = next(lane for lane in lanes if lane.name == "db")
    assert db.queued == 4 and db.oldest_queued_at == T0 + 10 and db.paused
