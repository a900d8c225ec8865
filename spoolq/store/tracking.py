"""The verbs for following jobs from outside the loop, written once over named SQL: a
job's progress readings, finding the job a trigger became, and the duplicate check a
producer runs before publishing.

Mixed into ``SqlStore``, which provides the transactions (``_tx``, ``_read``) and the
dialect's list parameter (``_ids``); the notifications' outbox comes with them
(``OutboxVerbs``). How a store wakes the processes waiting for jobs to
end (``listen_ended``) is each dialect's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from spoolq.jobs import Job
from spoolq.progress import Progress
from spoolq.store.outbox import OutboxVerbs
from spoolq.store.rows import Row, job_from_row


def progress_from_row(row: Row) -> Progress:
    return Progress(
        done=row["done"],
        total=row["total"],
        unit=row["unit"],
        message=row["message"],
        rate=row["rate"],
        eta_s=row["eta_s"],
        updated_at=row["updated_at"],
        attempt=row["attempt"],
    )


class TrackingVerbs(OutboxVerbs):
    # Provided by SqlStore (typed loosely here: importing sqlbase would be a cycle).
    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _ids(self, ids: Sequence[str]) -> Any:
        raise NotImplementedError

    # -- progress, waiting, notifications ----------------------------------------------------
    def last_seq(self) -> int:
        with self._read() as tx:
            row = tx.one("last_seq")
        return int(row["v"]) if row and row["v"] is not None else 0

    def find_by_trigger(self, trigger: str, after: int = 0) -> Job | None:
        with self._read() as tx:
            row = tx.one("find_by_trigger", trigger=trigger, after=after)
        return job_from_row(row) if row is not None else None

    def find_active_key(self, key: str, since: float) -> str | None:
        with self._read() as tx:
            row = tx.one("find_duplicate", key=key, since=since)
        return str(row["id"]) if row is not None else None

    def save_progress(self, readings: Mapping[str, Progress]) -> None:
        if not readings:
            return
        with self._tx() as tx:
            for job_id, p in sorted(readings.items()):
                tx.run(
                    "save_progress",
                    job_id=job_id,
                    attempt=p.attempt,
                    done=p.done,
                    total=p.total,
                    unit=p.unit,
                    message=p.message,
                    rate=p.rate,
                    eta_s=p.eta_s,
                    updated_at=p.updated_at,
                )

    def progress_of(self, job_ids: Sequence[str]) -> dict[str, Progress]:
        if not job_ids:
            return {}
        with self._read() as tx:
            rows = tx.all("get_progress", ids=self._ids(list(job_ids)))
        return {r["job_id"]: progress_from_row(r) for r in rows}
