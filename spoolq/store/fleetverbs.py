"""The store's verbs for several hosts, written once over named SQL: homes (state
directories) and who serves them, run-time lane limits, log tails and trigger content kept
for hosts that do not have the files.

A mixin of ``SqlStore``: each verb is one transaction through its ``_tx`` or ``_read``.
What these mean for the daemon is ``fleet``'s; what an operator sees, ``operate``'s.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from typing import Any

from spoolq.jobs import HomeInfo, Job, LaneStatus, LogTail
from spoolq.store.rows import Row, job_from_row


def lane_from_row(
    r: Row, running: int = 0, queued: int = 0, oldest: float | None = None
) -> LaneStatus:
    return LaneStatus(
        name=r["name"],
        concurrency=r["concurrency"],
        running=running,
        queued=queued,
        paused=bool(r["paused"]),
        oldest_queued_at=oldest,
        override=r["override"],
        configured=r["configured"],
    )


class FleetVerbs(abc.ABC):
    @abc.abstractmethod
    def _tx(self) -> contextlib.AbstractContextManager[Any]: ...

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Any]: ...

    @abc.abstractmethod
    def _ids(self, ids: Sequence[str]) -> Any: ...

    def adopt_home(self, info: HomeInfo, legacy: str) -> int:
        with self._tx() as tx:
            tx.run(
                "register_home",
                home=info.home,
                path=info.path,
                host=info.host,
                daemon=info.daemon,
                now=info.seen_at,
            )
            if legacy == info.home:
                return 0
            # (RETURNING: the count; the rows are few, old jobs of this directory.)
            n = len(tx.all("adopt_home", home=info.home, legacy=legacy) or [])
            tx.run("forget_home", home=legacy)
        return n

    def homes(self) -> list[HomeInfo]:
        with self._read() as tx:
            rows = tx.all("homes")
        return [HomeInfo(r["home"], r["path"], r["host"], r["daemon"], r["seen_at"]) for r in rows]

    def queued_by_home(self, homes: Sequence[str]) -> dict[str, tuple[int, float]]:
        if not homes:
            return {}
        with self._read() as tx:
            rows = tx.all("queued_by_home", homes=self._ids(homes))
        return {r["home"]: (int(r["n"]), float(r["oldest"])) for r in rows}

    def set_lane_limit(self, lane: str, concurrency: int | None) -> LaneStatus | None:
        with self._tx() as tx:
            if concurrency is None:
                row = tx.one("reset_lane_override", name=lane)
            else:
                row = tx.one("set_lane_override", name=lane, n=concurrency)
        return lane_from_row(row) if row is not None else None

    def log_tail(self, job_id: str) -> LogTail | None:
        with self._read() as tx:
            row = tx.one("log_tail", job_id=job_id)
        if row is None:
            return None
        return LogTail(bytes(row["tail"]), int(row["size"]), row["host"])

    def trigger_text(self, job_id: str) -> str | None:
        with self._read() as tx:
            row = tx.one("trigger_text", job_id=job_id)
        return None if row is None else str(row["text"])

    def last_attempts(self, job_ids: Sequence[str]) -> dict[str, tuple[str | None, str]]:
        found = {}
        with self._read() as tx:
            for i in range(0, len(job_ids), 5000):
                for r in tx.all("last_attempts", ids=self._ids(job_ids[i : i + 5000])):
                    found[r["job_id"]] = (r["host"], r["owner"])
        return found

    def relocate(self, job_id: str, claimed_path: str, log: str) -> str | None:
        with self._tx() as tx:
            row = tx.one("relocate", id=job_id, claimed_path=claimed_path, log=log)
        return None if row is None or row["text"] is None else str(row["text"])

    def release_home(self, job_id: str, text: str | None = None) -> Job | None:
        with self._tx() as tx:
            if text is not None:
                tx.run("save_trigger_text", job_id=job_id, text=text)
            row = tx.one("release_home", id=job_id)
        return job_from_row(row) if row is not None else None

    def prunable_elsewhere(self, finished_before: float, home: str) -> dict[str, int]:
        with self._read() as tx:
            rows = tx.all("prunable_elsewhere", before=finished_before, home=home)
        return {r["home"]: int(r["n"]) for r in rows}

    @staticmethod
    def _save_tail(tx: Any, job_id: str, tail: LogTail) -> None:
        tx.run("save_log_tail", job_id=job_id, tail=tail.tail, size=tail.size, host=tail.host)

    def _drop_extras(self, tx: Any, ids: list[str]) -> None:
        """What pruned jobs kept beside their rows: log tails, trigger content."""
        tx.run("delete_log_tails", ids=self._ids(ids))
        tx.run("delete_trigger_texts", ids=self._ids(ids))
