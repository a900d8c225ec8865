"""The notifications' outbox, written once over named SQL: which events each notify target
wants, and the rows a sender claims, then marks sent or failed.

The rows themselves are written by a trigger on the jobs table, in the transaction that
changes a job's state (see the migrations), so nothing here runs on a job's path. Mixed
into ``SqlStore`` through ``TrackingVerbs``; sending is ``spoolq.notify``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Notification:
    """One event for one target, as the outbox keeps it until it is sent."""

    id: str  # for receivers to drop a repeat (delivery is at least once)
    target: str
    event: str
    job_id: str
    created_at: float
    attempts: int  # this one included


class OutboxVerbs:
    # Provided by SqlStore (typed loosely here: importing sqlbase would be a cycle).
    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def set_notify_targets(self, targets: Sequence[tuple[str, str, str | None]]) -> None:
        with self._tx() as tx:
            tx.run("clear_notify_targets")
            for target, event, lane in targets:
                tx.run("add_notify_target", target=target, event=event, lane=lane)

    def claim_notifications(
        self, owner: str, now: float, lease: float, limit: int = 20
    ) -> list[Notification]:
        with self._tx() as tx:
            rows = tx.all(
                "claim_notifications", owner=owner, now=now, until=now + lease, limit=limit
            )
        return sorted(
            (
                Notification(
                    r["id"], r["target"], r["event"], r["job_id"], r["created_at"], r["attempts"]
                )
                for r in rows
            ),
            key=lambda n: n.created_at,
        )

    def notification_sent(self, notification_id: str, now: float) -> None:
        with self._tx() as tx:
            tx.run("notification_sent", id=notification_id, now=now)

    def notification_failed(
        self, notification_id: str, error: str, next_at: float, gave_up_at: float | None
    ) -> None:
        with self._tx() as tx:
            tx.run(
                "notification_failed",
                id=notification_id,
                error=error[:500],
                next_at=next_at,
                failed_at=gave_up_at,
            )

    def next_notification(self) -> float | None:
        with self._read() as tx:
            row = tx.one("next_notification")
        return float(row["v"]) if row and row["v"] is not None else None

    def notification_backlog(self) -> dict[str, tuple[int, int]]:
        with self._read() as tx:
            rows = tx.all("notification_backlog")
        return {r["target"]: (int(r["pending"]), int(r["failing"])) for r in rows}
