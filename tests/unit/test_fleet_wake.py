"""Which ended jobs make a daemon wake its peers: only slots it did not fill again itself,
and only when it has peers. (The store's part, waking only the daemons with work in those
lanes, is in the store contract suite.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from spoolq.fleet import Fleet


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
    f.offer(["shared"], ["shared"], brought=True)
    assert store.calls == [(f.id, None)]
    alone, nobody = fleet(peers=False)
    alone.offer(["shared"], [], brought=True)
    assert nobody.calls == []
