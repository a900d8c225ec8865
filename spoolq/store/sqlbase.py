"""The verbs of the store, written once over named SQL queries.

SQLite and PostgreSQL differ in how a transaction is opened and locked, in parameter
style, and in a few queries (``sql/<dialect>.sql``); the logic of each verb - what is read,
decided and written inside one transaction - lives here.

A verb says which of its statements it needs an answer from at once (``one``, ``all``) and
which not (``run``: no answer wanted; ``send``: the row is read later). PostgreSQL sends the
latter together with the next statements, in one round trip (pipeline mode); SQLite, in
process, runs every statement at once.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from spoolq.errors import JobNotFound, SpoolqError, StoreUnavailable
from spoolq.jobs import (
    Attempt,
    AttemptResult,
    DaemonInfo,
    Job,
    JobState,
    LaneStatus,
    LogTail,
    NewJob,
)
from spoolq.lifecycle import CANCELLED_REASON, INTERRUPTED, Outcome, Verdict, decide
from spoolq.store.base import Store
from spoolq.store.fleetverbs import FleetVerbs, lane_from_row
from spoolq.store.rows import Row, attempt_from_row, daemon_from_row, job_from_row
from spoolq.store.tracking import TrackingVerbs

Pending = Callable[[], Row | None]  # the row of a statement sent with Tx.send


class Tx(Protocol):
    """One open transaction: run a named query with bound parameters.

    ``one`` and ``all`` return the query's rows (and wait for them). ``run`` is for a
    statement whose result nobody reads, ``send`` for one whose single row is read later
    by calling what it returns. A store may hold both back and send them with the next
    statement that waits; they still run in order, and an error in one fails the
    transaction, at the latest when it ends."""

    def one(self, query: str, /, **params: Any) -> Row | None: ...
    def all(self, query: str, /, **params: Any) -> list[Row]: ...
    def run(self, query: str, /, **params: Any) -> None: ...
    def send(self, query: str, /, **params: Any) -> Pending: ...


class SqlStore(FleetVerbs, TrackingVerbs, Store):
    _outer: Tx | None = None  # the transaction of an open atomic() block

    @abc.abstractmethod
    def _begin(self) -> contextlib.AbstractContextManager[Tx]:
        """A write transaction that serializes with other writers as the verb needs."""

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Tx]:
        if self._outer is not None:  # inside atomic(): one transaction for every verb
            yield self._outer
            return
        with self._begin() as tx:
            yield tx

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        if self._outer is not None:
            yield
            return
        with self._begin() as tx:
            self._outer = tx
            try:
                yield
            finally:
                self._outer = None

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Tx]:
        """A read-only snapshot."""

    def _ids(self, ids: Sequence[str]) -> Any:
        """A list of ids as one bound parameter (an array, or JSON for SQLite)."""
        return list(ids)

    # -- intake ------------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], *, dedup_window: float, now: float) -> list[Job]:
        sent: list[tuple[NewJob, Pending]] = []
        with self._tx() as tx:
            for lane in sorted({job.lane for job in jobs}):
                tx.run("ensure_lane", name=lane)
            for job in jobs:
                reason = job.reason
                key = job.spec.idem_key if job.spec else None
                if reason is None and key is not None:
                    tx.run("lock_idem_key", key=key)
                    # (Waits for the inserts sent before it: a duplicate in this very batch
                    # is found too.)
                    dup = tx.one("find_duplicate", key=key, since=now - dedup_window)
                    if dup is not None:
                        reason = f"duplicate: id {key!r} is already job {dup['id']}"
                pending = tx.send(
                    "insert_job",
                    id=job.id,
                    state=(JobState.REJECTED if reason else JobState.QUEUED).value,
                    lane=job.lane,
                    priority=job.priority,
                    trigger=job.trigger,
                    claimed_path=job.claimed_path,
                    home=job.home,
                    log=job.log,
                    spec=job.spec.to_json() if job.spec else None,
                    idem_key=key,
                    retries=job.retries,
                    retry_backoff=job.retry_backoff,
                    timeout=job.timeout,
                    kill_grace=job.kill_grace,
                    on_success=job.on_success,
                    reason=reason,
                    created_at=job.created_at,
                    finished_at=now if reason else None,
                )
                sent.append((job, pending))
                if job.text is not None and reason is None:
                    tx.run("save_trigger_text", job_id=job.id, text=job.text)
            out = []
            for job, pending in sent:  # a batch of inserts: one round trip
                row = pending()
                if row is None:
                    # Already recorded: a retried batch whose commit did reach the store, or
                    # a claim revived twice. The id is the trigger's; one job stays one job.
                    row = tx.one("get_job", id=job.id)
                    assert row is not None
                    out.append(job_from_row(row))
                else:
                    out.append(job_from_row(row, job.spec))
        return out

    def known_ids(self, ids: Iterable[str]) -> dict[str, JobState]:
        batch = list(ids)
        found: dict[str, JobState] = {}
        with self._read() as tx:
            for i in range(0, len(batch), 5000):
                for row in tx.all("known_ids", ids=self._ids(batch[i : i + 5000])):
                    found[row["id"]] = JobState(row["state"])
        return found

    # -- dispatch ----------------------------------------------------------------------------
    def set_lanes(self, concurrency: dict[str, int]) -> None:
        with self._tx() as tx:
            for name, n in sorted(concurrency.items()):
                tx.run("set_lane_concurrency", name=name, concurrency=n)

    def claim_batch(
        self, lane: str, owner: str, now: float, home: str | None = None, limit: int | None = None
    ) -> list[Job]:
        with self._tx() as tx:
            # The lock first, then one statement that counts the free slots and fills them
            # (PostgreSQL: both in one round trip; the attempts go with the commit).
            locked = tx.send("lock_lane", lane=lane)
            rows = tx.all("start_batch", lane=lane, now=now, home=home, owner=owner, limit=limit)
            if rows and locked() is None:
                # The lane was created (by another connection) between the two statements:
                # its lock was not held while counting. Roll back; the next claim is exact
                # (transient, so the daemon would back off and retry).
                raise StoreUnavailable(
                    f"lane {lane!r} was created while being claimed; claim again"
                )
            rows.sort(key=lambda row: (-row["priority"], row["seq"]))  # RETURNING has no order
            host = owner.rpartition("@")[2]  # a daemon's id is id@host
            for row in rows:
                tx.run(
                    "insert_attempt",
                    job_id=row["id"],
                    n=row["attempts"],
                    now=now,
                    owner=owner,
                    host=host,
                )
            return [job_from_row(row) for row in rows]

    def mark_started(self, job_id: str, pid: int, pid_start: str) -> None:
        with self._tx() as tx:
            tx.run("mark_started", id=job_id, pid=pid, pid_start=pid_start)

    @staticmethod
    def _close_attempt(tx: Tx, job: Job, result: AttemptResult | None, now: float) -> None:
        tx.run(
            "close_attempt",
            job_id=job.id,
            n=job.attempts,
            now=now,
            exit_code=result.exit_code if result else None,
            reason=result.reason if result else "interrupted",
            wall_s=round(result.wall_s if result else now - (job.started_at or now), 6),
            cpu_s=round(result.cpu_s, 6) if result else None,
            max_rss_kb=result.max_rss_kb if result else None,
        )

    def end_attempt(
        self,
        job: Job,
        result: AttemptResult,
        stop_reason: str | None,
        now: float,
        *,
        cancel_requested: bool = False,
        rng: Callable[[], float] = random.random,
        log_tail: LogTail | None = None,
    ) -> Callable[[], Job]:
        with self._tx() as tx:

            def asked() -> bool:  # read only if the rules need it: a failure, not a success
                if cancel_requested:
                    return True
                cur = tx.one("get_job", id=job.id)
                return cur is not None and bool(cur["cancel_requested"])

            outcome = decide(job, result, stop_reason, asked, now, rng)
            interrupted = outcome.verdict is Verdict.REQUEUED
            self._close_attempt(tx, job, None if interrupted else result, now)
            ended = self._apply(tx, job, None if interrupted else result, outcome, now)
            if log_tail is not None and outcome.verdict not in (Verdict.RETRY, Verdict.REQUEUED):
                self._save_tail(tx, job.id, log_tail)  # (sent with the commit: no round trip)

        @functools.cache  # read once: a pipelined answer can be fetched only once
        def stored() -> Job:
            row = ended()
            # No row: the job was no longer running (a peer re-queued it): as it is now.
            return job_from_row(row, job.spec) if row is not None else self.get(job.id)

        return stored

    @staticmethod
    def _apply(
        tx: Tx, job: Job, result: AttemptResult | None, outcome: Outcome, now: float
    ) -> Pending:
        """Write the outcome of ``job``'s attempt to its row; the row, to be read later (none
        if that attempt no longer runs: a peer re-queued it while its daemon was silent)."""
        run = {"id": job.id, "owner": job.owner, "attempts": job.attempts}
        exit_code = result.exit_code if result else None
        reason = result.reason if result else INTERRUPTED
        if outcome.verdict in (Verdict.RETRY, Verdict.REQUEUED):
            return tx.send(
                "requeue_job",
                **run,
                exit_code=exit_code,
                reason=reason,
                not_before=outcome.not_before,
                failed=int(outcome.verdict is Verdict.RETRY),
            )
        return tx.send(
            "finish_job",
            **run,
            state=outcome.state.value,
            exit_code=exit_code,
            reason=CANCELLED_REASON if outcome.verdict is Verdict.CANCELLED else reason,
            now=now,
            failed=int(outcome.verdict is Verdict.FAILED),
        )

    def requeue_interrupted(self, jobs: Sequence[Job], now: float) -> list[Job]:
        out = []
        with self._tx() as tx:
            for seen in jobs:
                job_id = seen.id
                # Locked: two daemons rescuing the same dead daemon's job at once re-queue
                # it once; the second waits for the first's commit and finds it queued -
                # or, later still, running again under a live daemon: not the run it saw.
                cur = tx.one("get_job_locked", id=job_id)
                if (
                    cur is None
                    or cur["state"] != JobState.RUNNING.value
                    or (cur["owner"], cur["attempts"]) != (seen.owner, seen.attempts)
                ):
                    continue
                job = job_from_row(cur)
                outcome = decide(job, None, INTERRUPTED, bool(cur["cancel_requested"]), now)
                self._close_attempt(tx, job, None, now)
                row = self._apply(tx, job, None, outcome, now)()
                assert row is not None
                out.append(job_from_row(row))
        return out

    def running_jobs(self, owner: str | None = None) -> list[Job]:
        with self._read() as tx:
            if owner is None:
                return [job_from_row(r) for r in tx.all("running_jobs")]
            return [job_from_row(r) for r in tx.all("running_jobs_of", owner=owner)]

    def cancel_requests(self, owner: str) -> list[Job]:
        with self._read() as tx:
            return [job_from_row(r) for r in tx.all("cancel_requests", owner=owner)]

    def next_due(self, now: float, home: str | None = None) -> float | None:
        with self._read() as tx:
            row = tx.one("next_due", now=now, home=home)
        value = row["v"] if row else None
        return float(value) if value is not None else None

    def lanes_with_work(self, now: float, home: str | None = None) -> list[str]:
        with self._read() as tx:
            return [r["lane"] for r in tx.all("lanes_with_work", now=now, home=home)]

    # -- daemons -----------------------------------------------------------------------------
    def register_daemon(self, info: DaemonInfo) -> None:
        with self._tx() as tx:
            tx.run(
                "register_daemon",
                id=info.id,
                host=info.host,
                pid=info.pid,
                pid_start=info.pid_start,
                started_at=info.started_at,
                heartbeat_at=info.heartbeat_at,
                home=info.home,
            )

    def heartbeat(self, daemon_id: str, now: float) -> bool:
        with self._tx() as tx:
            tx.run("touch_home", id=daemon_id, now=now)
            return tx.one("heartbeat", id=daemon_id, now=now) is not None

    def unregister_daemon(self, daemon_id: str) -> None:
        with self._tx() as tx:
            tx.run("unregister_daemon", id=daemon_id)

    def daemons(self) -> list[DaemonInfo]:
        with self._read() as tx:
            rows = tx.all("daemons")
        return [daemon_from_row(r) for r in rows]

    # -- operators ---------------------------------------------------------------------------
    def get(self, ref: str) -> Job:
        with self._read() as tx:
            row = tx.one("get_job", id=ref)
            rows = [row] if row is not None else tx.all("find_by_prefix", prefix=ref.upper())
        if len(rows) > 1:
            raise JobNotFound(ref, ambiguous=len(rows))
        if not rows:
            raise JobNotFound(ref)
        return job_from_row(rows[0])

    def attempts(self, job_id: str) -> list[Attempt]:
        with self._read() as tx:
            rows = tx.all("attempts", job_id=job_id)
        return [attempt_from_row(r) for r in rows]

    def list_jobs(
        self, *, state: JobState | None = None, lane: str | None = None, limit: int = 100
    ) -> list[Job]:
        with self._read() as tx:
            rows = tx.all("list_jobs", state=state.value if state else None, lane=lane, limit=limit)
        return [job_from_row(r) for r in rows]

    def cancel(self, job_id: str, now: float) -> Job:
        with self._tx() as tx:
            row = tx.one("cancel_queued", id=job_id, now=now) or tx.one("request_cancel", id=job_id)
            if row is None:
                cur = tx.one("get_job", id=job_id)
                if cur is None:
                    raise JobNotFound(job_id)
                raise SpoolqError(f"job {job_id} is already {cur['state']}; nothing to cancel")
        return job_from_row(row)

    def retry(self, job_id: str, now: float) -> Job:
        with self._tx() as tx:
            row = tx.one("retry_job", id=job_id)
            if row is None:
                cur = tx.one("get_job", id=job_id)
                if cur is None:
                    raise JobNotFound(job_id)
                why = "it never parsed" if cur["spec"] is None else f"it is {cur['state']}"
                raise SpoolqError(f"job {job_id} cannot be retried: {why}")
        return job_from_row(row)

    def failed_ids(self) -> list[str]:
        with self._read() as tx:
            return [r["id"] for r in tx.all("failed_ids")]

    def set_paused(self, lane: str, paused: bool) -> None:
        with self._tx() as tx:
            tx.run("set_lane_paused", name=lane, paused=paused)

    def lane_status(self) -> list[LaneStatus]:
        with self._read() as tx:
            rows = tx.all("lane_status")
        return [lane_from_row(r, r["running"], r["queued"], r["oldest"]) for r in rows]

    def state_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobState}
        with self._read() as tx:
            counts.update({r["state"]: int(r["n"]) for r in tx.all("state_counts")})
        return counts

    def prune(self, finished_before: float, home: str | None = None) -> list[Job]:
        with self._tx() as tx:
            rows = tx.all("prune", before=finished_before, home=home)
            if rows:
                ids = [r["id"] for r in rows]
                tx.all("delete_attempts", ids=self._ids(ids))
                self._drop_extras(tx, ids)
        return [job_from_row(r) for r in rows]

    # -- web and metrics ---------------------------------------------------------------------
    def list_jobs_page(
        self,
        *,
        state: JobState | None = None,
        lane: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Job]:
        with self._read() as tx:
            after_seq = None
            if before is not None:
                cur = tx.one("get_job", id=before)
                if cur is None:
                    raise JobNotFound(before)
                after_seq = cur["seq"]
            rows = tx.all(
                "list_jobs_page",
                state=state.value if state else None,
                lane=lane,
                before=after_seq,
                limit=limit,
            )
        return [job_from_row(r) for r in rows]

    def finished_totals(self) -> list[tuple[str, str, int]]:
        with self._read() as tx:
            rows = tx.all("finished_totals")
        return [(r["lane"], r["outcome"], int(r["n"])) for r in rows]

    def rejected_totals(self) -> dict[str, int]:
        with self._read() as tx:
            return {r["reason"]: int(r["n"]) for r in tx.all("rejected_totals")}

    def overview(self) -> tuple[list[LaneStatus], dict[str, int]]:
        lanes = []
        with self._read() as tx:
            for r in tx.all("lane_overview"):
                oldest = tx.one("lane_oldest_queued", lane=r["name"]) if r["queued"] else None
                at = oldest["created_at"] if oldest else None
                lanes.append(lane_from_row(r, r["running"], r["queued"], at))
            settled = {r["state"]: int(r["n"]) for r in tx.all("settled_counts")}
            total = tx.one("job_total")
        counts = {s.value: 0 for s in JobState}
        counts.update(settled)
        counts["queued"] = sum(lane.queued for lane in lanes)
        counts["running"] = sum(lane.running for lane in lanes)
        rest = sum(counts.values())
        counts["succeeded"] = int(total["n"] if total else 0) - rest
        return lanes, counts
