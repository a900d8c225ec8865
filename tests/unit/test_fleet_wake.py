"""Which ended jobs make a daemon wake its peers: only slots it did not fill again itself,
and only when it has peers. (The store's part, waking only the daemons with work in those
lanes, is in the store contract suite.)"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from spoolq.events import EventLog
from spoolq.fleet import Fleet
from spoolq.jobs import DaemonInfo, Job, JobState
from spoolq.store.sqlite import SqliteStore
from tests.integration.test_store_contract import new_job


class RecordingStore:
    """Only what ``Fleet.offer`` uses: the wake-ups it asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[str] | None]] = []

    def notify(self, exclude: str | None = None, lanes: Sequence[str] | None = None) -> None:
        self.calls.append((exclude, None if lanes is None else list(lanes)))


def fleet(peers: bool) -> tuple[Fleet, RecordingStore]:
    store = RecordingStore()
    f = Fleet(
        cast(Any, store), cast(Any, None), cast(Any, None), stale_after=30, clock=lambda: 0.0,
        state=cast(Any, None),
    )  # fmt: skip
    f.peers = peers
    return f, store


@pytest.mark.parametrize(
    ("freed", "refilled", "woken"),
    [
        (["db"], ["db"], None),  # the slot is ours again: nobody else could take it
        (["db", "db"], ["db"], ["db"]),  # one of two left free
        (["db"], [], ["db"]),  # nothing of ours was queued there
        (["db", "web"], ["web", "web"], ["db"]),  # claims in another lane fill nothing here
        (["web", "db", "db"], [], ["db", "web"]),  # one wake-up, each lane once
    ],
)
def test_peers_are_woken_for_the_slots_left_free(
    freed: list[str], refilled: list[str], woken: list[str] | None
) -> None:
    f, store = fleet(peers=True)
    f.offer(freed, refilled)
    assert store.calls == ([] if woken is None else [(f.id, woken)])


def test_a_daemon_alone_on_its_store_wakes_nobody() -> None:
    f, store = fleet(peers=False)
    f.offer(["db"], [])
    assert store.calls == []


def test_a_job_claimed_elsewhere_that_ended_here_wakes_every_peer() -> None:
    """Its claiming daemon keeps a copy of the trigger to archive, and may have nothing
    queued in that lane: it is woken even if the slot was filled again here."""
    f, store = fleet(peers=True)
    f.offer(["shared"], ["shared"], everyone=True)
    assert store.calls == [(f.id, None)]
    alone, nobody = fleet(peers=False)
    alone.offer(["shared"], [], everyone=True)
    assert nobody.calls == []


class NotifyRecordingStore(SqliteStore):
    """A real store that keeps the wake-ups asked of it."""

    calls: list[tuple[str | None, list[str] | None]]

    def notify(self, exclude: str | None = None, lanes: Sequence[str] | None = None) -> None:
        self.calls.append((exclude, None if lanes is None else list(lanes)))


class NoProcessesHere:
    """A supervisor with nothing running and nothing to reap (the dead daemon's host is
    another one)."""

    def __init__(self) -> None:
        self.orphans: dict[str, Any] = {}

    def unknown(self, job_id: str) -> bool:
        return True

    def reap(self, job: Job) -> bool:
        return False


def test_a_dead_daemons_rescued_jobs_free_their_slots_for_the_peers(tmp_path: Path) -> None:
    """The slots a dead daemon's jobs held are free once they are re-queued: the peers with
    work in those lanes hear of it (the rescuer itself may have none there)."""
    store = NotifyRecordingStore(tmp_path / "spoolq.db")
    store.calls = []
    now = 1_800_000_000.0
    store.set_lanes({"db": 1})
    store.register_daemon(DaemonInfo("dead@elsewhere", "elsewhere", 1, now - 99, now - 99))
    store.register_daemon(DaemonInfo("peer@h2", "h2", 1, now, now, "", "home-2"))
    store.enqueue([new_job(lane="db", home="home-1")], dedup_window=0, now=now - 99)
    (held,) = store.claim_batch("db", "dead@elsewhere", now - 99, "home-1")
    f = Fleet(
        store, cast(Any, NoProcessesHere()), EventLog("json", io.StringIO()), stale_after=30,
        clock=lambda: now, state=cast(Any, None),
    )  # fmt: skip
    try:
        assert [j.id for j in f.rescue(now)] == [held.id]
        assert store.calls == [(f.id, ["db"])]
        # One an operator asked to cancel ends there: every peer hears it (whoever holds a
        # copy of its trigger archives it).
        (again,) = store.claim_batch("db", "dead@elsewhere", now, "home-1")
        store.cancel(again.id, now)  # running: only flagged
        (cancelled,) = f.rescue(now)
        assert cancelled.state is JobState.CANCELLED
        assert store.calls[1:] == [(f.id, None)]
    finally:
        store.close()
