"""The store interface: the job's own verbs, each one transaction.

Lane limits, priorities and ``not_before`` are decided inside ``claim_batch``'s
transaction, so they hold for every process sharing the store. Nothing above this package
writes SQL, and how a store sends its statements (PostgreSQL's pipeline) stays inside it.
"""

from __future__ import annotations

import abc
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from spoolq.jobs import (
    Attempt,
    AttemptResult,
    DaemonInfo,
    HomeInfo,
    Job,
    JobState,
    LaneStatus,
    LogTail,
    NewJob,
)
from spoolq.progress import Progress
from spoolq.store.outbox import Notification


class Listener(Protocol):
    """Something the daemon can poll() on to learn that another process changed the store."""

    def fileno(self) -> int: ...
    def drain(self) -> None: ...
    def close(self) -> None: ...


class Store(abc.ABC):
    """A durable home for jobs. Implementations: SQLite (one host), PostgreSQL (many)."""

    name: str
    # Shared by daemons on several hosts: it keeps what one host has and the others need
    # (the tail of a finished job's log). An embedded store is one host's: its logs are here.
    several_hosts = False

    # -- lifecycle -------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Run the verbs called inside the block as one transaction: all or nothing."""

    @abc.abstractmethod
    def verify(self) -> str | None:
        """A description of the problem if the store is gone or replaced, else None."""

    @abc.abstractmethod
    def reopen(self) -> None:
        """Connect again (after ``verify`` reported a problem); creates a fresh store."""

    # -- producers and the daemon's intake --------------------------------------------------
    @abc.abstractmethod
    def enqueue(self, jobs: Sequence[NewJob], *, dedup_window: float, now: float) -> list[Job]:
        """Record claimed triggers as jobs (one transaction for the batch).

        A job with ``reason`` set is recorded as rejected. A job whose idempotency key
        matches a queued, running, or recently succeeded job is recorded as rejected with a
        ``duplicate of ...`` reason. Returns the stored jobs in input order.
        """

    @abc.abstractmethod
    def known_ids(self, ids: Iterable[str]) -> dict[str, JobState]:
        """States of those ids that exist (used to reconcile claimed/ after a crash)."""

    # -- the daemon's dispatch --------------------------------------------------------------
    @abc.abstractmethod
    def set_lanes(self, concurrency: dict[str, int]) -> None:
        """Declare lanes and their concurrency (the config of the latest daemon wins)."""

    @abc.abstractmethod
    def claim_batch(
        self, lane: str, owner: str, now: float, home: str | None = None, limit: int | None = None
    ) -> list[Job]:
        """In one transaction, move as many queued jobs of ``lane`` to running as the lane
        has free slots (at most ``limit``), unless it is paused: priority first, then FIFO,
        skipping jobs whose ``not_before`` is later. With ``home``, only jobs claimed under
        that home (a state directory's identity), whose trigger and log live there, and
        jobs with no home; the lane limit counts the running jobs of every home. Each
        attempt records its daemon (``owner``, ``id@host``) and that host."""

    @abc.abstractmethod
    def mark_started(self, job_id: str, pid: int, pid_start: str) -> None: ...

    @abc.abstractmethod
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
        """Close the running attempt of ``job`` and apply what ``lifecycle.decide`` makes of
        it (succeeded, cancelled, re-queued, retry later, failed), in one transaction that
        also reads whether an operator asked to cancel the job meanwhile. A job that ends
        keeps ``log_tail`` (the end of its log) in the store.

        The job as stored is read when the returned function is first called (later calls
        return the same job). Called once the transaction (``atomic()``) has committed, it
        costs no round trip of its own: a store that sends statements together sends this
        one with the next statement that waits. After a rolled-back transaction its answer
        means nothing."""

    @abc.abstractmethod
    def requeue_interrupted(self, jobs: Sequence[Job], now: float) -> list[Job]:
        """Jobs whose daemon died mid-run, each as the caller saw it running: close the
        attempt as interrupted and queue them again - or, if an operator asked to cancel
        them meanwhile, end them cancelled. A job no longer in that attempt under that
        owner (another rescuer re-queued it, a live daemon has claimed it since) is left
        alone."""

    @abc.abstractmethod
    def running_jobs(self, owner: str | None = None) -> list[Job]: ...

    @abc.abstractmethod
    def cancel_requests(self, owner: str) -> list[Job]:
        """Running jobs of ``owner`` that an operator asked to cancel."""

    @abc.abstractmethod
    def next_due(self, now: float, home: str | None = None) -> float | None:
        """The earliest future ``not_before`` of a queued job (to sleep until then)."""

    @abc.abstractmethod
    def lanes_with_work(self, now: float, home: str | None = None) -> list[str]:
        """Lanes that have a queued job due now."""

    # -- daemons ----------------------------------------------------------------------------
    @abc.abstractmethod
    def register_daemon(self, info: DaemonInfo) -> None: ...

    @abc.abstractmethod
    def heartbeat(self, daemon_id: str, now: float) -> bool:
        """Record that the daemon is alive. False if its registration is gone: another
        daemon found it silent for ``stale_after`` and re-queued its running jobs."""

    @abc.abstractmethod
    def unregister_daemon(self, daemon_id: str) -> None: ...

    @abc.abstractmethod
    def daemons(self) -> list[DaemonInfo]: ...

    # -- operators ----------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, ref: str) -> Job:
        """A job by id or unique id prefix; raises JobNotFound."""

    @abc.abstractmethod
    def attempts(self, job_id: str) -> list[Attempt]: ...

    @abc.abstractmethod
    def list_jobs(
        self, *, state: JobState | None = None, lane: str | None = None, limit: int = 100
    ) -> list[Job]:
        """Newest first."""

    @abc.abstractmethod
    def cancel(self, job_id: str, now: float) -> Job:
        """Queued: cancelled at once. Running: flagged for its daemon to terminate.
        Finished: raises SpoolqError."""

    @abc.abstractmethod
    def retry(self, job_id: str, now: float) -> Job:
        """Queue a finished job again with a fresh set of retries; history is kept."""

    @abc.abstractmethod
    def failed_ids(self) -> list[str]: ...

    @abc.abstractmethod
    def set_paused(self, lane: str, paused: bool) -> None: ...

    @abc.abstractmethod
    def lane_status(self) -> list[LaneStatus]: ...

    @abc.abstractmethod
    def state_counts(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def prune(self, finished_before: float, home: str | None = None) -> list[Job]:
        """Delete finished jobs (and their attempts) older than the cutoff; return them.
        With ``home``, only jobs whose files live there (their host prunes the others)."""

    # -- several hosts -------------------------------------------------------------------------
    @abc.abstractmethod
    def adopt_home(self, info: HomeInfo, legacy: str) -> int:
        """A daemon serves the state directory ``info.home``: record it as seen now, and
        give the jobs recorded under the directory's old name ``legacy`` (host:path) its
        identity. Returns how many were adopted."""

    @abc.abstractmethod
    def homes(self) -> list[HomeInfo]: ...

    @abc.abstractmethod
    def queued_by_home(self, homes: Sequence[str]) -> dict[str, tuple[int, float]]:
        """Per home of ``homes`` with queued jobs: their count and oldest created_at."""

    @abc.abstractmethod
    def set_lane_limit(self, lane: str, concurrency: int | None) -> LaneStatus | None:
        """Override a lane's concurrency for every daemon (kept until reset: ``None``,
        back to the config's). None if there is no such lane to reset."""

    @abc.abstractmethod
    def log_tail(self, job_id: str) -> LogTail | None: ...

    @abc.abstractmethod
    def trigger_text(self, job_id: str) -> str | None:
        """The trigger's content, if the store keeps it (any-host lanes)."""

    @abc.abstractmethod
    def last_attempts(self, job_ids: Sequence[str]) -> dict[str, tuple[str | None, str]]:
        """Per job of ``job_ids`` that has run: the host and daemon of its latest attempt
        (the host is None for an attempt recorded before hosts were)."""

    @abc.abstractmethod
    def relocate(self, job_id: str, claimed_path: str, log: str) -> str | None:
        """A job claimed in another state directory runs in this one: record where its
        trigger and log are now; its trigger content, if the store keeps it."""

    @abc.abstractmethod
    def release_home(self, job_id: str, text: str | None = None) -> Job | None:
        """Let any daemon run ``job_id`` (its trigger content is in the store); None if the
        store does not hold its content. ``text``: that content, read by the operator from
        the job's own state directory, kept first (in the same transaction)."""

    @abc.abstractmethod
    def prunable_elsewhere(self, finished_before: float, home: str) -> dict[str, int]:
        """Per other home: finished jobs older than the cutoff that ``prune`` with ``home``
        leaves (their files are there)."""

    # -- change notification between processes ------------------------------------------------
    @abc.abstractmethod
    def listen(self, daemon_id: str) -> Listener: ...

    @abc.abstractmethod
    def notify(self, exclude: str | None = None, lanes: Sequence[str] | None = None) -> None:
        """Wake every daemon listening on this store but ``exclude`` (after a change).
        With ``lanes`` (slots freed in them), only those that may have a job to start there."""

    # -- web and metrics ------------------------------------------------------------------------
    @abc.abstractmethod
    def list_jobs_page(
        self,
        *,
        state: JobState | None = None,
        lane: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Job]:
        """``list_jobs``, newest first, starting after the job ``before`` (a full job id,
        the last one of the previous page); raises JobNotFound if there is no such job."""

    @abc.abstractmethod
    def finished_totals(self) -> list[tuple[str, str, int]]:
        """(lane, outcome, count) of every job that ever finished: kept by the store in the
        transaction that finishes it, never lowered (not by ``prune``)."""

    @abc.abstractmethod
    def rejected_totals(self) -> dict[str, int]:
        """Rejected triggers ever recorded, per kind of reason (never lowered)."""

    @abc.abstractmethod
    def overview(self) -> tuple[list[LaneStatus], dict[str, int]]:
        """``lane_status()`` and ``state_counts()`` in one read, for what is asked often
        (status, the page, /metrics): the queued jobs are counted once, along the lane
        index, and a lane's oldest waiting job is the first queued one in claim order."""

    # -- progress, waiting, notifications ---------------------------------------------------------
    @abc.abstractmethod
    def last_seq(self) -> int:
        """The sequence number of the newest job (0 for none): jobs recorded later have a
        higher one."""

    @abc.abstractmethod
    def find_by_trigger(self, trigger: str, after: int = 0) -> Job | None:
        """The newest job made from a trigger published at ``trigger`` (an absolute path),
        among those recorded after sequence number ``after``."""

    @abc.abstractmethod
    def find_active_key(self, key: str, since: float) -> str | None:
        """The id of a job with idempotency key ``key`` that would make a new trigger with
        that key a duplicate (queued, running, or succeeded after ``since``)."""

    @abc.abstractmethod
    def save_progress(self, readings: Mapping[str, Progress]) -> None:
        """Keep the latest progress reading of each job (by id), replacing the last one."""

    @abc.abstractmethod
    def progress_of(self, job_ids: Sequence[str]) -> dict[str, Progress]:
        """The latest progress reading kept for each of those jobs that has one."""

    @abc.abstractmethod
    def listen_ended(self) -> Listener | None:
        """A listener that wakes when any job reaches a final state (after the commit),
        for processes that wait for jobs; None where this store cannot make one."""

    @abc.abstractmethod
    def set_notify_targets(self, targets: Sequence[tuple[str, str, str | None]]) -> None:
        """Declare (target, event, lane or None) for every notify target: from then on,
        each job that reaches that event records a notification in the same transaction."""

    @abc.abstractmethod
    def claim_notifications(
        self, owner: str, now: float, lease: float, limit: int = 20
    ) -> list[Notification]:
        """Notifications due now that no sender holds (or whose sender's daemon is gone),
        held for daemon ``owner`` for ``lease`` seconds."""

    @abc.abstractmethod
    def notification_sent(self, notification_id: str, now: float) -> None: ...

    @abc.abstractmethod
    def notification_failed(
        self, notification_id: str, error: str, next_at: float, gave_up_at: float | None
    ) -> None:
        """Try again at ``next_at``, or never (``gave_up_at`` set)."""

    @abc.abstractmethod
    def next_notification(self) -> float | None:
        """When the earliest unsent notification is due."""

    @abc.abstractmethod
    def notification_backlog(self) -> dict[str, tuple[int, int]]:
        """Per target: unsent notifications, and how many of them failed at least once."""
