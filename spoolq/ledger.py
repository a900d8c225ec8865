"""The daemon's bookkeeping: what it has done, said in the store, in the files and in the
log - claimed triggers recorded as jobs, outcomes announced and archived, jobs rescued from
dead daemons, and claimed/ reconciled with the store after a crash.

Owns the claimed-but-unrecorded triggers, the lanes that may have work ("dirty"), the
earliest retry time, and the log lines that say what happened to a job. Leaves the order
of the steps to the daemon, the files' places to ``claims``, the rules to ``lifecycle``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from spoolq.claims import Claimer
from spoolq.config import Config
from spoolq.errors import StoreUnavailable
from spoolq.events import EventLog
from spoolq.faults import crash_point
from spoolq.intake import Intake
from spoolq.jobs import Job, JobState, LogTail, NewJob
from spoolq.lifecycle import STOPPED_FOR_SHUTDOWN
from spoolq.logfiles import read_tail
from spoolq.procs import pid_start_time
from spoolq.progress import Progress
from spoolq.runner import RunningJob
from spoolq.store.base import Store


class Ledger:
    def __init__(
        self,
        config: Config,
        store: Store,
        claimer: Claimer,
        log: EventLog,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.claimer = claimer
        self.log = log
        self.clock = clock
        self.dirty: set[str] = set()  # lanes that may have a job to start
        # Claimed, not yet recorded: the store was down, or a job ended mid-batch.
        self.unsaved: list[NewJob] = []
        self.due_at: float | None = None  # the earliest retry time of a queued job
        self.known_lanes: set[str] = set()
        self.needs_reconcile = False
        # Jobs claimed in another state directory, running here (see ``_here``).
        self.brought: set[str] = set()
        self.host = socket.gethostname()

    # -- claimed triggers --------------------------------------------------------------------
    def enqueue(self, batch: list[NewJob]) -> list[Job]:
        """Record claimed triggers (with any an outage left unrecorded). They stay in
        ``unsaved`` until the caller's transaction has committed (``recorded``)."""
        self.unsaved += batch
        if not self.unsaved:
            return []
        stored = self.store.enqueue(
            self.unsaved, dedup_window=self.config.dedup_window, now=self.clock()
        )
        self.dirty.update(j.lane for j in stored if j.state is JobState.QUEUED)
        return stored

    def record(self, batch: list[NewJob]) -> None:
        self.recorded(self.enqueue(batch))

    def recorded(self, stored: list[Job]) -> None:
        """After the commit that recorded claimed triggers: forget them, say so. (Nothing
        stored: nothing was claimed, and the fault point is not passed either.)"""
        if not stored:
            return
        self.unsaved = []
        crash_point("enqueued")
        for job in stored:
            if job.state is JobState.REJECTED:
                self.claimer.place_rejected(job)
                self.log.warn("rejected", job=job.id, trigger=job.trigger, reason=job.reason)
                continue
            if job.lane not in self.known_lanes:
                self.known_lanes.add(job.lane)
                self.log.warn("unknown_lane", lane=job.lane, concurrency=1, job=job.id)
            self.log.emit("queued", job=job.id, lane=job.lane, trigger=job.trigger)

    def claim(self, intake: Intake, limit: int, stop: Callable[[], bool]) -> bool:
        """Claim up to ``limit`` triggers from the intake into ``unsaved``. False if
        ``stop()`` said to stop early (a running job ended: its slot is refilled first);
        what is not claimed stays in the intake."""
        for spool, path in intake.take(limit):
            if stop():
                intake.give_back(spool, path)
                return False
            try:
                job = self.claimer.claim(spool, path)
            except StoreUnavailable:
                # claimed/ cannot take it: this one and the rest wait for the retry.
                intake.give_back(spool, path)
                raise
            if job is not None:
                self.unsaved.append(job)
        return True

    def fill_slots(self, owner: str, home: str) -> list[Job]:
        """Claim every free slot of the lanes that may have work; a finishing job marks its
        lane dirty again, so a full lane costs no further claim until a slot frees."""
        if not self.dirty:
            return []
        lanes, self.dirty = self.dirty, set()
        claimed: list[Job] = []
        try:
            for lane in sorted(lanes):
                claimed += map(self._here, self.store.claim_batch(lane, owner, self.clock(), home))
        except StoreUnavailable:
            self.dirty |= lanes  # ask again once the store is back
            raise
        return claimed

    def _here(self, job: Job) -> Job:
        """A job claimed in another state directory (an any-host lane) runs from this one:
        its trigger content written into claimed/, its log in logs/, the store told."""
        local = self.claimer.here(job)
        if local is not job:
            self.brought.add(job.id)
            text = self.store.relocate(job.id, local.claimed_path, local.log)
            try:
                self.claimer.bring(local, text)
            except OSError as exc:  # it runs all the same, from its spec
                self.log.warn("trigger_not_written", job=job.id, error=str(exc))
        return local

    # -- attempts ------------------------------------------------------------------------------
    def started(self, rj: RunningJob) -> None:
        """Tell the store the pid of a job that has run for a while."""
        assert rj.pid is not None
        self.store.mark_started(rj.job.id, rj.pid, pid_start_time(rj.pid))
        rj.recorded_pid = rj.pid

    def ended_elsewhere_claimed(self, job_ids: list[str]) -> bool:
        """Whether one of these jobs, ended here, was claimed in another state directory
        (whose daemon keeps a copy of its trigger to archive: ``Fleet.offer``)."""
        found = self.brought.intersection(job_ids)
        self.brought -= found
        return bool(found)

    def progressed(self, readings: dict[str, Progress]) -> None:
        """Keep the running jobs' progress readings that are due (none: no store call)."""
        if readings:
            self.store.save_progress(readings)

    def end_attempt(self, rj: RunningJob) -> Callable[[], Job]:
        """Apply an ended attempt's outcome (inside the caller's transaction); the job as
        stored, to be read once that transaction is over."""
        assert rj.result is not None
        self.dirty.add(rj.job.lane)
        # The end of its log, for hosts that cannot read the file (kept if the job ends).
        found = read_tail(rj.job.log) if self.store.several_hosts else None
        return self.store.end_attempt(
            rj.job,
            rj.result,
            rj.stop_reason,
            self.clock(),
            cancel_requested=rj.cancelled,
            log_tail=LogTail(found[0], found[1], self.host) if found else None,
        )

    def ended(self, rj: RunningJob, new: Job) -> None:
        """After the commit of an attempt's outcome (``new`` is the job as stored): say
        it, and move a finished job's trigger to its archive."""
        job, result, stop_reason = rj.job, rj.result, rj.stop_reason
        assert result is not None
        fields: dict[str, Any] = {
            "job": job.id,
            "lane": job.lane,
            "attempt": job.attempts,
            "exit_code": result.exit_code,
            "reason": result.reason,
            "wall_s": round(result.wall_s, 3),
            "cpu_s": round(result.cpu_s, 3),
            "maxrss_kb": result.max_rss_kb,
            "trigger": job.trigger,
        }
        if new.state is JobState.RUNNING or new.attempts != job.attempts:
            # This daemon was silent for stale_after: a peer re-queued the job and it runs
            # again. That run's outcome counts, not this one's (which the store refused).
            self.log.warn("outcome_dropped", **fields, why="re-queued by a peer meanwhile")
            return
        if new.state is JobState.QUEUED and stop_reason == STOPPED_FOR_SHUTDOWN:
            self.log.warn("interrupted", **fields)
        elif new.state is JobState.QUEUED:
            self.due_at = min(self.due_at or new.not_before, new.not_before)
            self.log.warn("retry_scheduled", **fields, not_before=new.not_before)
        elif new.state is JobState.SUCCEEDED:
            self.log.emit("succeeded", **fields)
        else:
            self.log.warn(new.state.value, **fields)
        crash_point("finished")
        self.archive(new)

    def archive(self, job: Job) -> None:
        if job.state.finished and not self.claimer.archive(job):
            self.needs_reconcile = True  # tried again at the next heartbeat

    def unlaunched(self, job: Job) -> None:
        """A claimed job that could not start here: back to the queue (a new attempt)."""
        self.store.requeue_interrupted([job], self.clock())
        self.dirty.add(job.lane)

    def rescued(self, jobs: list[Job]) -> None:
        """Jobs of dead daemons, re-queued (or ended cancelled, as an operator asked)."""
        for job in jobs:
            self.dirty.add(job.lane)
            if job.state is JobState.CANCELLED:
                self.log.warn("cancelled", job=job.id, lane=job.lane, reason=job.reason)
                self.archive(job)
                continue
            self.log.warn("interrupted", job=job.id, lane=job.lane, attempt=job.attempts)

    # -- the store, asked ----------------------------------------------------------------------
    def look_for_work(self, home: str) -> None:
        """Ask the store which lanes have a job due now, and when the next retry is due."""
        now = self.clock()
        self.dirty.update(self.store.lanes_with_work(now, home))
        self.due_at = self.store.next_due(now, home)

    def reconcile(self, min_age: float) -> None:
        """claimed/ against the store: revive claims without a row, archive the triggers
        of finished jobs that a crash or a failed move left behind."""
        revived, finished, young = self.claimer.orphans(self.store.known_ids, min_age=min_age)
        # A claim too young to judge (a peer may be about to record it, or may have died
        # doing so): look again at the next heartbeat, even if nothing else happens.
        self.needs_reconcile = young > 0
        if revived:
            self.log.warn("orphans_recovered", count=len(revived))
            self.record(revived)
        for job_id in finished:
            # (Under its name here: an any-host job may have run, and ended, elsewhere.)
            self.claimer.archive(self.claimer.here(self.store.get(job_id)))
