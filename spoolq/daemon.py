"""``spoolq run``: one event loop that claims triggers, dispatches jobs and reaps them.

Everything that touches the store happens on the loop's thread. The inotify fd is read in
the loop's own poll(); watcher threads (polling, other platforms) only hand paths over
(``offer``) and wake the loop through a pipe; children are waited for through pidfds in the
same poll(); control commands from other processes arrive as a byte on the
store's listener. With nothing to do the loop sleeps in poll() until the next timer
(heartbeat, rescan), so an idle daemon costs no CPU.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import random
import select
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from spoolq.claims import Claimer, StateDir, new_job_id
from spoolq.config import Config
from spoolq.errors import ConfigError, StoreUnavailable
from spoolq.events import EventLog
from spoolq.faults import crash_point
from spoolq.intake import Intake
from spoolq.jobs import DaemonInfo, Job, JobState, NewJob
from spoolq.logfiles import LogPool
from spoolq.runner import (
    RunningJob,
    daemon_alive,
    job_process_groups,
    kill_orphan_groups,
    pid_start_time,
    seal_fds,
)
from spoolq.store.base import Store
from spoolq.trust import TrustPolicy, check_directory
from spoolq.watcher import InotifyWatcher, Watcher, make_watchers

BACKOFF_CAP = 3600.0
STORE_RETRY_MAX = 30.0
INGEST_BATCH = 64  # claims per transaction and per pass of the loop
PID_RECORD_AFTER = 0.5  # seconds a job runs before its pid is written to the store


def retry_delay(failures: int, base: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped at an hour, +-20% jitter."""
    # The exponent is clamped: 2**1024 does not fit a float, and 2**64 * base is past the
    # cap for any base worth having.
    delay = min(BACKOFF_CAP, base * 2 ** min(64, max(0, failures - 1)))
    return float(min(BACKOFF_CAP, delay * (0.8 + 0.4 * rng())))


class Daemon:
    def __init__(
        self,
        config: Config,
        state: StateDir,
        store: Store,
        log: EventLog,
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.state = state
        self.store = store
        self.log = log
        self.clock = clock
        self.mono = mono
        self.host = socket.gethostname()
        self.id = f"{new_job_id()}@{self.host}"
        self.policy = TrustPolicy.from_names(
            config.security.trusted_owners, config.security.max_trigger_bytes
        )
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_pending = False
        self._poll = select.poll()
        self._exits = select.poll()  # the running jobs' pidfds alone: "has a job ended?"
        self._running: dict[str, RunningJob] = {}
        self._by_fd: dict[int, RunningJob] = {}
        self._dirty: set[str] = set()
        # Claimed, not yet recorded: the store was down, or a job ended mid-batch (_take_intake).
        self._unsaved: list[NewJob] = []
        self._unrecorded: list[RunningJob] = []  # ended, not yet recorded (store down)
        self._store_retry_at = 0.0
        self._store_backoff = 0.5
        self._store_probed = False  # backing off, a real write went through in this pass
        self._pass_failed = False  # a step of this pass of the loop met a store fault
        self._signals = 0
        self._stopping = False
        self._next_heartbeat = 0.0
        self._due_at: float | None = None
        self._peers = False
        self._known_lanes: set[str] = set()
        self._watchers: list[Watcher] = []
        self._watcher_fds: dict[int, Watcher] = {}  # watchers read in the loop, by fd
        self._loop_thread = 0  # set by run()
        self._shutdown_deadline: float | None = None
        self._env_base = self._passthrough_env()
        self._needs_reconcile = False

    # -- start-up --------------------------------------------------------------------------
    def run(self) -> int:
        self._loop_thread = threading.get_ident()
        self._check_dirs()
        self.state.ensure()
        self._claimer = Claimer(self.config, self.state, self.policy, self.clock, self.log.warn)
        self._logs = LogPool(str(self.state.root / ".logpool"))
        self._intake = Intake(
            self.config.spool,
            self.state.root,
            self._wake,
            self._claimer.remember_dir,
            clock=self.clock,
            mono=self.mono,
        )
        listener = self.store.listen(self.id)
        self._listener = listener
        self._listener_fd = listener.fileno()
        old_handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            self._start(listener)
            self.log.hold()  # one write per pass of the loop (see _loop)
            self._loop(listener)
        finally:
            self.log.hold(False)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self._stop_watchers()
            for rj in self._running.values():
                rj.abandon()
            with contextlib.suppress(Exception):
                self.store.unregister_daemon(self.id)
            listener.close()
            self._claimer.close()
            self._logs.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        self.log.emit("stopped", daemon=self.id)
        return 0

    def _check_dirs(self) -> None:
        if not self.config.spool:
            raise ConfigError("no spool directory: pass one (spoolq run DIR) or add [[spool]]")
        allow = self.config.security.allow_insecure_dirs
        devices = []
        for spool in self.config.spool:  # spools first: the state dir is often inside one
            try:
                st = os.stat(spool.path)
            except FileNotFoundError:
                raise ConfigError(
                    f"spool directory {spool.path} does not exist (create it or fix [[spool]] path)"
                ) from None
            if not stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"spool {spool.path} is not a directory")
            check_directory(str(spool.path), "spool directory", self.policy, allow)
            devices.append((spool, st.st_dev))
        self.state.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        check_directory(str(self.state.root), "state directory", self.policy, allow, private=True)
        state_dev = os.stat(self.state.root).st_dev
        for spool, dev in devices:
            if dev != state_dev:
                raise ConfigError(
                    f"state_dir {self.state.root} and spool {spool.path} are on different "
                    "filesystems; claiming needs rename(2): put state_dir beside the spool"
                )

    def _start(self, listener: object) -> None:
        self._poll.register(self._wake_r, select.POLLIN)
        self._poll.register(self._listener_fd, select.POLLIN)
        self._until_store_works(self._bootstrap_store)
        self._watchers = make_watchers(
            list(self.config.spool),
            self.state.root,
            self._intake.offer,
            self._intake.on_overflow,
            self._intake.on_new_dir,
        )
        for w in self._watchers:
            w.start()
            if isinstance(w, InotifyWatcher):
                self._intake.writing = w.writing
            fd = w.fileno()
            if fd is not None:
                self._watcher_fds[fd] = w
                self._poll.register(fd, select.POLLIN)
        self._intake.scan_all()
        seal_fds()
        self._next_heartbeat = self.mono() + self.config.heartbeat_interval
        self.log.emit(
            "ready",
            daemon=self.id,
            pid=os.getpid(),
            spools=",".join(str(s.path) for s in self.config.spool),
            state_dir=str(self.state.root),
            store=self.store.name,
            pending=len(self._intake),
        )

    def _until_store_works(self, step: Callable[[], None]) -> None:
        """At start there is nothing to fall back on: retry with backoff, stay stoppable."""
        delay = 0.5
        while True:
            try:
                step()
                return
            except StoreUnavailable as exc:
                self.log.error("store_unavailable", error=str(exc), retry_in=delay)
            self._poll.poll(delay * 1000)
            if self._signals:
                raise SystemExit(0)
            delay = min(STORE_RETRY_MAX, delay * 2)

    def _bootstrap_store(self) -> None:
        """Everything the store must know before jobs flow: lanes, this daemon, rescued
        jobs of dead daemons, and claimed triggers a crash left without a row."""
        now = self.clock()
        lanes = {name: lane.concurrency for name, lane in self.config.lanes.items()}
        for spool in self.config.spool:
            lanes.setdefault(spool.lane, 1)
        lanes.setdefault("default", 1)
        for tmpl in self.config.jobs.values():
            if tmpl.lane:
                lanes.setdefault(tmpl.lane, 1)
        self.store.set_lanes(lanes)
        self._known_lanes = set(lanes)
        self._register(now)
        others_alive = self._rescue(now)
        self._reconcile(min_age=10.0 if others_alive else 0.0)
        self._dirty.update(self.store.lanes_with_work(now, self._claimer.home))
        self._due_at = self.store.next_due(now, self._claimer.home)

    def _reconcile(self, min_age: float) -> None:
        """claimed/ against the store: revive claims without a row, archive the triggers
        of finished jobs that a crash or a failed move left behind."""
        self._needs_reconcile = False
        revived, finished = self._claimer.orphans(self.store.known_ids, min_age=min_age)
        if revived:
            self.log.warn("orphans_recovered", count=len(revived))
            self._record(revived)
        self._archive_finished(finished)

    def _listener_moved(self) -> None:
        """A listener whose connection dropped has a new fd, or none until it reconnects."""
        fd = self._listener.fileno()
        if fd == self._listener_fd:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._poll.unregister(self._listener_fd)
        if fd >= 0:
            self._poll.register(fd, select.POLLIN)
        self._listener_fd = fd

    def _register(self, now: float) -> None:
        self.store.register_daemon(
            DaemonInfo(self.id, self.host, os.getpid(), now, now, pid_start_time(os.getpid()))
        )

    def _beat(self, now: float) -> None:
        if self.store.heartbeat(self.id, now):
            return
        # Fenced: another daemon saw no heartbeat from us for stale_after (a long stall)
        # and re-queued our running jobs. Our copies must not run beside their re-runs.
        self.log.error(
            "fenced",
            daemon=self.id,
            running=len(self._running),
            action="stopping running jobs (already re-queued by a peer), registering again",
        )
        self._stop_all_running()
        self._register(now)

    def _stop_all_running(self) -> None:
        """Kill every running job without recording anything (the store has moved on)."""
        for rj in list(self._running.values()):
            if rj.pidfd is not None and rj.pidfd in self._by_fd:
                self._unwatch_exit(rj.pidfd)
            rj.stop_now()
        self._running.clear()
        self._unrecorded.clear()

    def _recover_lost_store(self, problem: str) -> None:
        """The store file vanished or was replaced under us. Running jobs cannot be
        recorded any more: stop them (they run again, at least once), open a fresh store,
        and rebuild it from the triggers in claimed/."""
        self.log.error(
            "store_lost",
            problem=problem,
            action="stopping running jobs, opening a fresh store, re-creating jobs from claimed/",
        )
        self._stop_all_running()
        self.state.ensure()  # the whole state directory may have gone with it
        self._claimer.reopen()
        self.store.reopen()
        self._bootstrap_store()

    def _rescue(self, now: float) -> bool:
        """Re-queue jobs whose daemon is gone; return whether another live daemon exists."""
        live = {self.id}
        for d in self.store.daemons():
            if d.id == self.id:
                continue
            if daemon_alive(d, now, self.config.stale_after):
                live.add(d.id)
            else:
                self.store.unregister_daemon(d.id)
                self.log.warn("daemon_gone", daemon=d.id, host=d.host, pid=d.pid)
        self._peers = len(live) > 1
        stale = [j for j in self.store.running_jobs() if j.owner not in live]
        for job in stale:
            if (job.owner or "").rpartition("@")[2] != self.host:
                continue  # another host's processes are out of reach (and died with it)
            groups = job_process_groups(job.id, job.pid, job.pid_start or "")
            if kill_orphan_groups(groups, job.kill_grace, time.sleep):
                self.log.warn("orphan_killed", job=job.id, process_groups=len(groups))
        for job in self.store.requeue_interrupted([j.id for j in stale], now):
            self._dirty.add(job.lane)
            if job.state is JobState.CANCELLED:
                self.log.warn("cancelled", job=job.id, lane=job.lane, reason=job.reason)
                if not self._claimer.archive(job):
                    self._needs_reconcile = True
                continue
            self.log.warn("interrupted", job=job.id, lane=job.lane, attempt=job.attempts)
        return self._peers

    def _stop_watchers(self) -> None:
        for fd in self._watcher_fds:
            self._poll.unregister(fd)
        self._watcher_fds.clear()
        for w in self._watchers:
            w.stop()
        self._watchers = []

    # -- wake-ups (any thread) ---------------------------------------------------------------
    def _wake(self) -> None:
        if threading.get_ident() == self._loop_thread:
            return  # an offer made by the loop itself: it looks at the intake before sleeping
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self, listener: object) -> None:
        drain = getattr(listener, "drain")  # noqa: B009 - Listener protocol
        while True:
            timeout = self._timeout()
            if timeout != 0:
                self.log.flush()  # before sleeping (a busy pass flushes by age: EventLog)
            for fd, _ in self._poll.poll(None if timeout is None else max(0, timeout * 1000)):
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 4096):
                            pass
                    # Only after the drain: a watcher that offers in between writes a byte
                    # of its own, and what it offered is taken below in this iteration.
                    self._wake_pending = False
                elif fd in self._watcher_fds:
                    self._watcher_fds[fd].dispatch()
                elif fd == self._listener_fd:
                    drain()
                    self._listener_moved()
                    self._guarded(self._control)
                    # An operator on another host may have cancelled or retried a job whose
                    # trigger lives here: put files where the states say, at the next beat.
                    self._needs_reconcile = True
                else:
                    rj = self._by_fd.get(fd)
                    if rj is not None:
                        self._unwatch_exit(fd)
                        rj.on_exit()
                        self._after_step(rj)
            self._handle_signals()
            self._tick_jobs()
            self._guarded(self._record_pids)
            self._guarded(self._record_ended)
            self._guarded(self._timers)
            if not self._stopping:
                self._guarded(self._take_intake)
            self._guarded(self._dispatch)
            self._recovered()
            if self._stopping and not self._running and not self._unrecorded:
                return

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a step that uses the store; on a transient store fault, back off and log."""
        if self.mono() < self._store_retry_at:
            return
        try:
            if self._store_backoff > 0.5 and not self._store_probed:
                # After a fault, a real write first (a step with nothing to do would
                # succeed without touching the store); _recovered() decides at the end of
                # the pass.
                self._beat(self.clock())
                self._store_probed = True
            step()
        except StoreUnavailable as exc:
            self._store_probed = False
            self._pass_failed = True
            self.log.error("store_unavailable", error=str(exc), retry_in=self._store_backoff)
            self._store_retry_at = self.mono() + self._store_backoff
            self._store_backoff = min(STORE_RETRY_MAX, self._store_backoff * 2)

    def _recovered(self) -> None:
        """After a fault, the store counts as back only once a whole pass of the loop went
        through, the retried work included: a fault that a heartbeat does not touch (job
        logs that cannot be created, a claimed/ that cannot be written) keeps doubling the
        wait instead of a recovery, and a spool rescan, announced at every retry."""
        if self._store_probed and not self._pass_failed:
            self._store_probed = False
            self.log.emit("store_recovered")
            self._store_backoff = 0.5
            self._intake.overflowed = True  # rescan: triggers seen while down were dropped
            self._needs_reconcile = True
        self._pass_failed = False

    def _timeout(self) -> float | None:
        mono = self.mono()
        # Job timers (timeouts, kill escalation) never wait for the store.
        marks = [d for rj in self._running.values() if (d := rj.deadline()) is not None]
        if self._shutdown_deadline is not None:
            marks.append(self._shutdown_deadline)
        if self._store_retry_at > mono:
            # Backing off from a store fault: everything else waits for the retry time.
            return min([self._store_retry_at, *marks]) - mono
        # Work for the next pass (checked before the other timers: a busy pass skips them).
        if self._unrecorded:
            return 0  # a job that could not start at all ended in this pass: record it now
        if (self._intake.pending and not self._stopping) or self._unsaved:
            # (Stopping, the intake is left alone: what it holds stays in the spool.)
            return 0
        if self._dirty and not self._stopping:
            # Lanes with work found outside the loop's own steps (the start-up bootstrap:
            # jobs already queued, jobs just rescued) must not wait for the next timer.
            return 0
        marks.append(self._next_heartbeat)
        if not self._stopping:  # stopping, the intake's timers are not run any more
            marks.append(self._intake.next_deadline())
        marks += [
            rj.started + PID_RECORD_AFTER
            for rj in self._running.values()
            if rj.pid and rj.pid != rj.recorded_pid
        ]
        if self._due_at is not None:
            marks.append(mono + (self._due_at - self.clock()))
        return max(0.0, min(marks) - mono)

    def _handle_signals(self) -> None:
        if self._signals == 0:
            return
        if self._signals >= 1 and not self._stopping:
            self._stopping = True
            self._stop_watchers()
            grace = self.config.shutdown_grace
            self._shutdown_deadline = None if grace is None else self.mono() + grace
            self.log.emit("stopping", running=len(self._running), grace=grace)
        if self._signals >= 2 or (
            self._shutdown_deadline is not None and self.mono() >= self._shutdown_deadline
        ):
            self._shutdown_deadline = None
            for rj in self._running.values():
                rj.terminate("shutdown")
        if self._signals >= 3:
            raise SystemExit(1)  # jobs are re-queued by the next start

    def _tick_jobs(self) -> None:
        """Timeouts and kill escalation: no store needed, so never skipped."""
        mono = self.mono()
        if self._shutdown_deadline is not None and mono >= self._shutdown_deadline:
            self._signals = max(self._signals, 2)
            self._handle_signals()
        for rj in list(self._running.values()):
            d = rj.deadline()
            if d is not None and mono >= d:
                rj.tick()
                self._after_step(rj)

    def _record_pids(self) -> None:
        """Record the pid of each job that has run for a while (operators see it; a later
        daemon uses it, beside the SPOOLQ_JOB_ID environment scan, to kill the job's
        processes if this daemon dies). Short jobs are not worth a transaction each."""
        mono = self.mono()
        for rj in list(self._running.values()):
            pid = rj.pid
            if pid and pid != rj.recorded_pid and mono - rj.started >= PID_RECORD_AFTER:
                self.store.mark_started(rj.job.id, pid, pid_start_time(pid))
                rj.recorded_pid = pid

    def _record_ended(self) -> None:
        """Commit the outcome of ended jobs, start what their slots allow, and only then do
        the bookkeeping (archive renames, log lines): in a busy lane the next job is
        already running while we tidy up after the last one."""
        if not self._unrecorded:
            return
        # One transaction: the outcomes, the triggers claimed while the jobs ran (see
        # _take_intake), and the claims of the slots they free.
        with self.store.atomic():
            done = [(rj, self._commit_outcome(rj)) for rj in self._unrecorded]
            stored = self._enqueue([])
            claimed = self._claim_dirty()
        self._unrecorded.clear()
        self._recorded(stored)
        try:
            self._launch_all(claimed)
        finally:
            unread: StoreUnavailable | None = None
            for rj, ended in done:
                try:
                    job = ended()  # reads the store again only if a peer re-queued it
                except StoreUnavailable as exc:
                    unread = unread or exc  # the outcome is committed; tidy up the others
                    continue
                self._after_outcome(rj, job)
            if self._peers:
                # Slots freed: peers may start their queued jobs (one wake-up per batch).
                self.store.notify(exclude=self.id)
            if unread is not None:
                raise unread

    def _timers(self) -> None:
        mono = self.mono()
        if self._unsaved:
            self._record([])
        if mono >= self._next_heartbeat:
            self._next_heartbeat = mono + self.config.heartbeat_interval
            now = self.clock()
            problem = self.store.verify()
            if problem:
                self._recover_lost_store(problem)
            self._beat(now)
            seal_fds()  # a reconnected store or listener may hold new fds
            self._claimer.refresh()
            if self._listener_fd < 0:
                self._listener.drain()  # reconnects
                self._listener_moved()
            if self._needs_reconcile:
                self._reconcile(min_age=10.0 if self._peers else 0.0)
            self._rescue(now)
            self._control()
            self._due_at = self.store.next_due(now, self._claimer.home)
        if self._due_at is not None and self.clock() >= self._due_at:
            now = self.clock()
            self._dirty.update(self.store.lanes_with_work(now, self._claimer.home))
            self._due_at = self.store.next_due(now, self._claimer.home)
        if not self._stopping and self._intake.timers():
            self.log.warn("rescan", why="event queue overflow or store recovery")

    # -- claiming ----------------------------------------------------------------------------
    def _take_intake(self) -> None:
        """Claim one batch. The rest waits for the next pass of the loop (which does not
        sleep while the intake holds work), so that through a backlog of any size ended
        jobs are reaped and their slots refilled, timeouts fire and a SIGTERM is heard
        within one batch.

        A batch also ends the moment a running job ends: its slot is refilled first, and
        what was claimed so far is recorded in that same transaction. So in a burst the
        claiming happens while jobs run, not while a lane waits."""
        if not len(self._intake):
            return
        for spool, path in self._intake.take(INGEST_BATCH):
            if self._by_fd and self._exits.poll(0):
                self._intake.give_back(spool, path)  # the rest is still queued
                return  # claimed so far: in _unsaved, recorded by _record_ended
            try:
                job = self._claimer.claim(spool, path)
            except StoreUnavailable:
                # claimed/ cannot take it: this one and the rest wait for the retry.
                self._intake.give_back(spool, path)
                raise
            if job is not None:
                self._unsaved.append(job)
        # One transaction records the batch and claims the slots it can fill.
        with self.store.atomic():
            stored = self._enqueue([])
            claimed = self._claim_dirty()
        self._recorded(stored)
        self._launch_all(claimed)

    def _record(self, batch: list[NewJob]) -> None:
        self._recorded(self._enqueue(batch))

    def _recorded(self, stored: list[Job]) -> None:
        """After the commit that recorded claimed triggers: forget them, say so. (Nothing
        stored: nothing was claimed, and the fault point is not passed either.)"""
        if not stored:
            return
        self._unsaved = []
        crash_point("enqueued")
        self._announce(stored)

    def _enqueue(self, batch: list[NewJob]) -> list[Job]:
        """Record claimed triggers (with any an outage left unrecorded). They stay in
        ``_unsaved`` until the caller's transaction has committed."""
        self._unsaved += batch
        if not self._unsaved:
            return []
        stored = self.store.enqueue(
            self._unsaved, dedup_window=self.config.dedup_window, now=self.clock()
        )
        self._dirty.update(j.lane for j in stored if j.state is JobState.QUEUED)
        return stored

    def _announce(self, stored: list[Job]) -> None:
        for job in stored:
            if job.state is JobState.REJECTED:
                self._claimer.place_rejected(job)
                self.log.warn("rejected", job=job.id, trigger=job.trigger, reason=job.reason)
                continue
            if job.lane not in self._known_lanes:
                self._known_lanes.add(job.lane)
                self.log.warn("unknown_lane", lane=job.lane, concurrency=1, job=job.id)
            self.log.emit("queued", job=job.id, lane=job.lane, trigger=job.trigger)

    def _archive_finished(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._claimer.archive(self.store.get(job_id))

    # -- running -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._launch_all(self._claim_dirty())

    def _launch_all(self, jobs: list[Job]) -> None:
        """Start claimed jobs. One that cannot start for a reason that is not its own (its
        log cannot be created) goes back to the queue; the others still start."""
        trouble: OSError | None = None
        for job in jobs:
            crash_point("started")
            try:
                self._launch(job)
            except OSError as exc:
                self.store.requeue_interrupted([job.id], self.clock())
                self._dirty.add(job.lane)  # tried again at the next retry
                trouble = exc
        if trouble is not None:
            raise StoreUnavailable(f"cannot create job logs in {self.state.root}: {trouble}")

    def _claim_dirty(self) -> list[Job]:
        """Claim every free slot of the lanes that may have work; a finishing job marks its
        lane dirty again, so a full lane costs no further claim until a slot frees."""
        if self._stopping or not self._dirty:
            return []
        lanes, self._dirty = self._dirty, set()
        claimed: list[Job] = []
        try:
            for lane in sorted(lanes):
                now = self.clock()
                claimed += self.store.claim_batch(lane, self.id, now, self._claimer.home)
        except StoreUnavailable:
            self._dirty |= lanes  # ask again once the store is back
            raise
        return claimed

    def _launch(self, job: Job) -> None:
        assert job.spec is not None
        env = {
            **self._env_base,
            **job.spec.env,
            "SPOOLQ_JOB_ID": job.id,
            "SPOOLQ_LANE": job.lane,
            "SPOOLQ_ATTEMPT": str(job.attempts),
            "SPOOLQ_TRIGGER": job.claimed_path,
        }
        cwd = job.spec.cwd or os.path.dirname(job.trigger)
        rj = RunningJob(job, env, cwd, clock=self.mono, open_log=self._logs.open)
        rj.start()  # OSError: the log cannot be opened (see _launch_all)
        self._running[job.id] = rj
        self.log.emit(
            "started",
            job=job.id,
            lane=job.lane,
            attempt=job.attempts,
            pid=rj.pid,
            trigger=job.trigger,
        )
        self._after_step(rj)

    def _after_step(self, rj: RunningJob) -> None:
        if rj.result is not None:
            # Recorded by _record_ended, which retries while the store is unavailable.
            self._running.pop(rj.job.id, None)
            self._unrecorded.append(rj)
            return
        if rj.pidfd is not None and rj.pidfd not in self._by_fd:
            self._by_fd[rj.pidfd] = rj
            self._poll.register(rj.pidfd, select.POLLIN)
            self._exits.register(rj.pidfd, select.POLLIN)

    def _unwatch_exit(self, pidfd: int) -> None:
        """The other half of _after_step's registration (a step reaped, or killed)."""
        del self._by_fd[pidfd]
        self._poll.unregister(pidfd)
        self._exits.unregister(pidfd)

    def _commit_outcome(self, rj: RunningJob) -> Callable[[], Job]:
        """Record how the job ended (inside the caller's transaction); the job as stored, to
        be read once that transaction is over."""
        result = rj.result
        assert result is not None
        job = rj.job
        now = self.clock()
        self._dirty.add(job.lane)
        if result.ok:
            state = JobState.SUCCEEDED
        elif rj.stop_reason == "cancelled" or rj.cancelled:
            state = JobState.CANCELLED
        elif rj.stop_reason == "shutdown":
            requeued = self.store.requeue_interrupted([job.id], now)
            new = requeued[0] if requeued else self.store.get(job.id)
            return lambda: new
        elif job.failures < job.retries:
            delay = retry_delay(job.failures + 1, job.retry_backoff)
            again = self.store.schedule_retry(job, result, now + delay, now)
            self._due_at = min(self._due_at or again.not_before, again.not_before)
            return lambda: again
        else:
            state = JobState.FAILED
        return self.store.finish_deferred(job, result, state, now)

    def _after_outcome(self, rj: RunningJob, new: Job) -> None:
        job, result = rj.job, rj.result
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
        if new.state is JobState.QUEUED and rj.stop_reason == "shutdown":
            self.log.warn("interrupted", **fields)
        elif new.state is JobState.QUEUED:
            self.log.warn("retry_scheduled", **fields, not_before=new.not_before)
        elif new.state is JobState.SUCCEEDED:
            self.log.emit("succeeded", **fields)
        else:
            self.log.warn(new.state.value, **fields)
        crash_point("finished")
        if new.state.finished and not self._claimer.archive(new):
            self._needs_reconcile = True

    def _control(self) -> None:
        """Something changed in the store (another process): cancel requests, paused or
        resumed lanes, retried jobs."""
        for job in self.store.cancel_requests(self.id):
            rj = self._running.get(job.id)
            if rj is not None:
                self.log.emit("cancelling", job=job.id, lane=job.lane)
                rj.cancelled = True  # even if it is already stopping (a timeout's grace)
                rj.terminate("cancelled")
        now = self.clock()
        self._dirty.update(self.store.lanes_with_work(now, self._claimer.home))
        self._due_at = self.store.next_due(now, self._claimer.home)

    def _passthrough_env(self) -> dict[str, str]:
        allowed = self.config.security.env_passthrough
        if allowed == "*":
            return dict(os.environ)
        return {
            k: v for k, v in os.environ.items() if any(fnmatch.fnmatchcase(k, p) for p in allowed)
        }
