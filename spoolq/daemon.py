"""``spoolq run``: the event loop, and the order of its steps.

Owns poll(), signals, and the order in which one pass (``step()``) does things: reap ended
jobs and record their outcome, fire timers, claim new triggers, start what the lanes
allow. What each step means lives elsewhere: running jobs in ``supervisor``, other daemons
in ``fleet``, outcomes in ``lifecycle``, bookkeeping in ``ledger``, store faults in
``guard``, files in ``claims`` and ``statedir``.

Everything that touches the store happens on the loop's thread. inotify, the jobs' pidfds,
a wake-up pipe (watcher threads, signals) and the store's listener (control commands) are
all read in one poll(); with nothing to do it sleeps until the next timer, so an idle
daemon costs no CPU.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from spoolq import logfiles
from spoolq.claims import Claimer
from spoolq.config import Config
from spoolq.errors import StoreUnavailable
from spoolq.events import EventLog
from spoolq.faults import crash_point
from spoolq.fleet import Fleet
from spoolq.guard import StoreGuard, until_it_works
from spoolq.intake import Intake
from spoolq.jobs import Job
from spoolq.ledger import Ledger
from spoolq.logfiles import LogPool
from spoolq.procs import seal_fds
from spoolq.statedir import StateDir
from spoolq.store.base import Listener, Store
from spoolq.supervisor import Supervisor, job_env
from spoolq.trust import TrustPolicy
from spoolq.watcher import InotifyWatcher, Watcher, make_watchers

INGEST_BATCH = 64  # claims per transaction and per pass of the loop


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
        self.policy = TrustPolicy.from_names(
            config.security.trusted_owners, config.security.max_trigger_bytes
        )
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_pending = False
        self._poll = select.poll()
        self.supervisor = Supervisor(
            job_env(config.security.env_passthrough, os.environ),
            log,
            self._poll,
            mono=mono,
            open_log=logfiles.open_log,
        )
        self.fleet = Fleet(
            store, self.supervisor, log, stale_after=config.stale_after, clock=clock, state=state
        )
        self.id = self.fleet.id
        # After a store fault, a heartbeat is the real write that opens each retry.
        self.guard = StoreGuard(log, mono, lambda: self.fleet.beat(self.clock()))
        self._signals = 0
        self._stopping = False
        self._next_heartbeat = 0.0
        self._fence_after = config.stale_after - config.heartbeat_interval  # beats overdue
        self._watchers: list[Watcher] = []
        self._watcher_fds: dict[int, Watcher] = {}  # watchers read in the loop, by fd
        self._loop_thread = 0  # set by start()
        self._shutdown_deadline: float | None = None

    # -- the whole life ------------------------------------------------------------------------
    def run(self) -> int:
        self._open()
        old_handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            self._begin()
            self.log.hold()  # one write per pass of the loop (see step)
            while not self.step():
                pass
        finally:
            self.log.hold(False)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.close()
        self.log.emit("stopped", daemon=self.id)
        return 0

    def start(self) -> None:
        """Everything before the first pass: directories, the store (retried until it
        answers), rescue of dead daemons' jobs, watchers, and the start-up scan."""
        self._open()
        self._begin()

    def _open(self) -> None:
        self._loop_thread = threading.get_ident()
        self.state.prepare(self.config, self.policy)
        self._claimer = Claimer(self.config, self.state, self.policy, self.clock, self.log.warn)
        self.ledger = Ledger(self.config, self.store, self._claimer, self.log, self.clock)
        self._logs = LogPool(str(self.state.log_pool))
        self.supervisor.open_log = self._logs.open
        self.supervisor.progress_dir = str(self.state.progress)
        self._intake = Intake(
            self.config.spool,
            self.state.root,
            self._wake,
            self._claimer.remember_dir,
            clock=self.clock,
            mono=self.mono,
        )
        self._listener: Listener = self.store.listen(self.id)
        self._listener_fd = self._listener.fileno()
        self._poll.register(self._wake_r, select.POLLIN)
        self._poll.register(self._listener_fd, select.POLLIN)

    def _begin(self) -> None:
        until_it_works(self._bootstrap_store, self.log, self._wait_for_store)
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

    def close(self) -> None:
        self._stop_watchers()
        self.supervisor.abandon_all()
        with contextlib.suppress(Exception):
            self.fleet.unregister()
        self._listener.close()
        self._claimer.close()
        self._logs.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def healthy(self) -> bool:
        """Whether the daemon is watching its spools (for a health check)."""
        return (
            not self._stopping and bool(self._watchers) and all(w.alive() for w in self._watchers)
        )

    # -- one pass of the loop ----------------------------------------------------------------
    def step(self, timeout: float | None = None) -> bool:
        """Wait for something to do (at most ``timeout`` seconds, if given), then do one
        pass of work. True once the daemon has stopped (the last job is recorded)."""
        wait = self._timeout()
        if timeout is not None:
            wait = timeout if wait is None else min(wait, timeout)
        if wait != 0:
            self.log.flush()  # before sleeping (a busy pass flushes by age: EventLog)
        for fd, _ in self._poll.poll(None if wait is None else max(0, wait * 1000)):
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
                self._listener.drain()
                self._listener_moved()
                self.guard.run(self._control)
                # An operator on another host may have cancelled or retried a job whose
                # trigger lives here: put files where the states say, at the next beat.
                self.ledger.needs_reconcile = True
                self.fleet.peers = True  # (perhaps one that just joined: wake it, see beat)
            elif self.supervisor.owns(fd):
                self.supervisor.exited(fd)
        self._handle_signals()
        self.supervisor.tick()
        if self.mono() - self._next_heartbeat > self._fence_after:
            # Silent past stale_after (stalled): fenced? Know it before an outcome or a claim.
            self.guard.run(self._timers)
        self.guard.run(self._record_pids)
        self.guard.run(self._record_ended)
        self.guard.run(self._timers)
        if not self._stopping:
            self.guard.run(self._take_intake)
        self.guard.run(self._dispatch)
        if self.guard.end_pass():
            self._intake.overflowed = True  # rescan: triggers seen while down were dropped
            self.ledger.needs_reconcile = True
        return self._stopping and not self.supervisor.running and not self.supervisor.ended

    def _timeout(self) -> float | None:
        mono = self.mono()
        # Job timers (timeouts, kill escalation, orphans) never wait for the store.
        marks = self.supervisor.deadlines()
        if self._shutdown_deadline is not None:
            marks.append(self._shutdown_deadline)
        if self.guard.waiting:
            # Backing off from a store fault: everything else waits for the retry time.
            return min([self.guard.retry_at, *marks]) - mono
        # Work for the next pass (checked before the other timers: a busy pass skips them).
        if self.supervisor.ended or self.supervisor.has_gone:
            return 0  # a job that could not start ended in this pass, an orphan died
        if (self._intake.pending and not self._stopping) or self.ledger.unsaved:
            # (Stopping, the intake is left alone: what it holds stays in the spool.)
            return 0
        if self.ledger.dirty and not self._stopping:
            # Lanes with work found outside the loop's own steps (the start-up bootstrap:
            # jobs already queued, jobs just rescued) must not wait for the next timer.
            return 0
        marks.append(self._next_heartbeat)
        if not self._stopping:  # stopping, the intake's timers are not run any more
            marks.append(self._intake.next_deadline())
        if self.ledger.due_at is not None:
            marks.append(mono + (self.ledger.due_at - self.clock()))
        return max(0.0, min(marks) - mono)

    # -- the store -----------------------------------------------------------------------------
    def _wait_for_store(self, delay: float) -> None:
        self._poll.poll(delay * 1000)  # a signal wakes it (set_wakeup_fd)
        if self._signals:
            raise SystemExit(0)

    def _bootstrap_store(self) -> None:
        """Everything the store must know before jobs flow: lanes, this daemon, rescued
        jobs of dead daemons, and claimed triggers a crash left without a row."""
        now = self.clock()
        lanes = self.config.lane_limits()
        self.store.set_lanes(lanes)
        self.ledger.known_lanes = set(lanes)
        self.fleet.register(now)
        self.ledger.rescued(self.fleet.rescue(now))
        self.ledger.reconcile(min_age=10.0 if self.fleet.peers else 0.0)
        self.ledger.look_for_work(self._claimer.home)

    def _recover_lost_store(self, problem: str) -> None:
        """The store file vanished or was replaced under us. Running jobs cannot be
        recorded any more: stop them (they run again, at least once), open a fresh store,
        and rebuild it from the triggers in claimed/."""
        self.log.error(
            "store_lost",
            problem=problem,
            action="stopping running jobs, opening a fresh store, re-creating jobs from claimed/",
        )
        self.supervisor.stop_all()
        self.state.ensure()  # the whole state directory may have gone with it
        self._claimer.reopen()
        self.store.reopen()
        self._bootstrap_store()

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

    # -- wake-ups and signals (any thread) -----------------------------------------------------
    def _wake(self) -> None:
        if threading.get_ident() == self._loop_thread:
            return  # an offer made by the loop itself: it looks at the intake before sleeping
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def _handle_signals(self) -> None:
        if self._signals == 0:
            return
        if not self._stopping:
            self._stopping = True
            self._stop_watchers()
            grace = self.config.shutdown_grace
            self._shutdown_deadline = None if grace is None else self.mono() + grace
            self.log.emit("stopping", running=len(self.supervisor.running), grace=grace)
        if self._signals >= 2 or (
            self._shutdown_deadline is not None and self.mono() >= self._shutdown_deadline
        ):
            self._signals = max(self._signals, 2)
            self._shutdown_deadline = None
            self.supervisor.terminate_all("shutdown")
        if self._signals >= 3:
            raise SystemExit(1)  # jobs are re-queued by the next start

    def _stop_watchers(self) -> None:
        for fd in self._watcher_fds:
            self._poll.unregister(fd)
        self._watcher_fds.clear()
        for w in self._watchers:
            w.stop()
        self._watchers = []

    # -- steps of a pass -------------------------------------------------------------------------
    def _record_pids(self) -> None:
        """Record the pid of each job that has run for a while (a later daemon uses it to
        kill the job's processes if this one dies), and the jobs' progress when due."""
        for rj in self.supervisor.pids_to_record():
            self.ledger.started(rj)
        self.ledger.progressed(self.supervisor.progress_to_save(self.clock()))

    def _record_ended(self) -> None:
        """Commit the outcome of ended jobs, start what their slots allow, and only then do
        the bookkeeping (archive renames, log lines): in a busy lane the next job is
        already running while we tidy up after the last one."""
        ended = self.supervisor.ended
        if not ended:
            return
        # One transaction: the outcomes, the triggers claimed while the jobs ran (see
        # _take_intake), and the claims of the slots they free.
        with self.store.atomic():
            done = [(rj, self.ledger.end_attempt(rj)) for rj in ended]
            stored = self.ledger.enqueue([])
            claimed = self._claim_dirty()
        freed = [rj.job.lane for rj in ended]
        brought = self.ledger.ended_elsewhere_claimed([rj.job.id for rj in ended])
        ended.clear()
        self.ledger.recorded(stored)
        try:
            self._launch_all(claimed)
        finally:
            unread: StoreUnavailable | None = None
            for rj, read in done:
                try:
                    job = read()  # reads the store again only if a peer re-queued it
                except StoreUnavailable as exc:
                    unread = unread or exc  # the outcome is committed; tidy up the others
                    continue
                self.ledger.ended(rj, job)
            self.fleet.offer(freed, [j.lane for j in claimed], everyone=brought or self._stopping)
            if unread is not None:
                raise unread

    def _timers(self) -> None:
        mono = self.mono()
        if self.ledger.unsaved:
            self.ledger.record([])
        self.ledger.rescued(self.fleet.settle(self.clock()))
        if mono >= self._next_heartbeat:
            self._next_heartbeat = mono + self.config.heartbeat_interval
            now = self.clock()
            problem = self.store.verify()
            if problem:
                self._recover_lost_store(problem)
            self.fleet.beat(now)
            seal_fds()  # a reconnected store or listener may hold new fds
            self._claimer.refresh()
            if self._listener_fd < 0:
                self._listener.drain()  # reconnects
                self._listener_moved()
            if self.ledger.needs_reconcile:
                self.ledger.reconcile(min_age=10.0 if self.fleet.peers else 0.0)
            self.ledger.rescued(self.fleet.rescue(now))
            self._control()
        if self.ledger.due_at is not None and self.clock() >= self.ledger.due_at:
            self.ledger.look_for_work(self._claimer.home)
        if not self._stopping and self._intake.timers():
            self.log.warn("rescan", why="event queue overflow or store recovery")

    def _control(self) -> None:
        """Another process changed the store: cancel requests, paused lanes, retried jobs."""
        for job in self.store.cancel_requests(self.id):
            if job.id in self.supervisor.running:
                self.log.emit("cancelling", job=job.id, lane=job.lane)
                self.supervisor.cancel(job.id)
        self.ledger.look_for_work(self._claimer.home)

    # -- claiming --------------------------------------------------------------------------------
    def _take_intake(self) -> None:
        """Claim one batch; the rest waits for the next pass (which does not sleep while
        the intake holds work), so that through any backlog ended jobs are reaped, timeouts
        fire and a SIGTERM is heard within one batch. A batch also ends the moment a
        running job ends: its slot is refilled first, in the transaction that records what
        was claimed so far. So in a burst claiming happens while jobs run."""
        if not len(self._intake):
            return
        if not self.ledger.claim(self._intake, INGEST_BATCH, self.supervisor.any_exited):
            return  # claimed so far: in ledger.unsaved, recorded by _record_ended
        # One transaction records the batch and claims the slots it can fill.
        with self.store.atomic():
            stored = self.ledger.enqueue([])
            claimed = self._claim_dirty()
        self.ledger.recorded(stored)
        self._launch_all(claimed)

    # -- starting --------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._launch_all(self._claim_dirty())

    def _claim_dirty(self) -> list[Job]:
        """Claim every free slot of the lanes that may have work (none while stopping)."""
        return [] if self._stopping else self.ledger.fill_slots(self.id, self._claimer.home)

    def _launch_all(self, jobs: list[Job]) -> None:
        """Start claimed jobs. One that cannot start for a reason that is not its own (its
        log cannot be created) goes back to the queue; the others still start."""
        trouble: OSError | None = None
        for job in jobs:
            crash_point("started")
            try:
                rj = self.supervisor.launch(job)
            except OSError as exc:
                self.ledger.unlaunched(job)  # queued again, tried again at the next retry
                self.fleet.offer([job.lane], [])  # its slot is free for a peer meanwhile
                trouble = exc
                continue
            fields: dict[str, Any] = {"lane": job.lane, "attempt": job.attempts}
            self.log.emit("started", job=job.id, pid=rj.pid, trigger=job.trigger, **fields)
            self.supervisor.watch(rj)
        if trouble is not None:
            raise StoreUnavailable(f"cannot create job logs in {self.state.root}: {trouble}")
