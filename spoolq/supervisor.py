"""The running jobs of one daemon, and the leftover processes of dead ones.

Owns launching an attempt (the environment it gets included), watching its pidfd in the
daemon's poll(), its timers (timeouts, kill escalation), stopping all of them, the pids
worth recording, and the reaping of orphans: process groups of a dead daemon's job, which
get SIGTERM, then SIGKILL after the job's kill_grace, and are watched until the kernel
says they are gone - without ever blocking the loop. Leaves what an ended attempt means to
``lifecycle`` and the store, and when to rescue to ``fleet``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from spoolq.events import EventLog
from spoolq.jobs import Job
from spoolq.procs import group_alive, job_process_groups, killpg, live_members
from spoolq.progress import Progress, Signature, Tracker, read_file
from spoolq.runner import RunningJob

PID_RECORD_AFTER = 0.5  # seconds a job runs before its pid is written to the store
ORPHAN_RECHECK = 0.05  # seconds between looks at a dying orphan's processes
ORPHAN_PATIENCE = 5.0  # seconds after SIGKILL before an orphan that lives on is reported
PROGRESS_EVERY = 1.0  # seconds between looks at the progress files of running jobs
PROGRESS_SAVE_EVERY = 5.0  # seconds between a job's progress writes to the store
PROGRESS_SWEEP_EVERY = 60.0  # seconds between removals of files no running job owns
PROGRESS_STALE = 3600.0  # ... untouched for this long (a peer sharing the directory may own it)


def job_env(passthrough: str | Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The daemon's variables a job inherits: those ``env_passthrough`` names (globs; "*"
    is all of them). The daemon's own virtualenv is taken off PATH, so that a job's
    ``python3`` is the one the operator expects, not spoolq's - unless PATH is set on
    purpose by the trigger or the job template."""
    if passthrough == "*":
        env = dict(environ)
    else:
        patterns = list(passthrough)
        env = {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    if "PATH" in env and sys.prefix != sys.base_prefix:
        venv_bin = os.path.join(sys.prefix, "bin")
        kept = [p for p in env["PATH"].split(os.pathsep) if os.path.abspath(p or ".") != venv_bin]
        env["PATH"] = os.pathsep.join(kept)
    return env


@dataclass
class Orphan:
    """A dead daemon's job whose processes are still alive on this host."""

    job: Job
    groups: set[int]
    kill_at: float  # SIGKILL then
    report_at: float  # still alive then: tell the operator
    check_at: float
    killed: bool = False
    reported: bool = False
    pids: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        env_base: Mapping[str, str],
        log: EventLog,
        poll: select.poll,
        *,
        mono: Callable[[], float],
        open_log: Callable[[str], int],
    ) -> None:
        self.env_base = dict(env_base)
        self.log = log
        self._poll = poll  # the daemon's: a job's pidfd wakes the loop
        self._exits = select.poll()  # the running jobs' pidfds alone: "has a job ended?"
        self.mono = mono
        self.open_log = open_log
        self.running: dict[str, RunningJob] = {}
        self._by_fd: dict[int, RunningJob] = {}
        self.ended: list[RunningJob] = []  # ended, outcome not yet recorded
        self.orphans: dict[str, Orphan] = {}  # by job id
        self._gone: list[Job] = []  # orphans whose processes are all gone
        self.progress_dir: str | None = None  # where jobs write progress (None: they do not)
        self._progress: dict[str, _Followed] = {}  # by job id: jobs that wrote some
        self._progress_at = 0.0  # the next look at the progress files
        self._sweep_at = 0.0

    # -- running jobs ------------------------------------------------------------------------
    def launch(self, job: Job) -> RunningJob:
        """Start an attempt of ``job``. OSError: its log cannot be opened."""
        assert job.spec is not None
        env = {
            **self.env_base,
            **job.spec.env,
            "SPOOLQ_JOB_ID": job.id,
            "SPOOLQ_LANE": job.lane,
            "SPOOLQ_ATTEMPT": str(job.attempts),
            "SPOOLQ_TRIGGER": job.claimed_path,
        }
        if self.progress_dir is not None:
            env["SPOOLQ_PROGRESS"] = f"{self.progress_dir}{os.sep}{job.id}"
        cwd = job.spec.cwd or os.path.dirname(job.trigger)
        rj = RunningJob(job, env, cwd, clock=self.mono, open_log=self.open_log)
        rj.start()
        self.running[job.id] = rj
        return rj

    def watch(self, rj: RunningJob) -> None:
        """After a step of ``rj`` (started, reaped, escalated): an ended attempt waits to be
        recorded; a running one has its current pidfd in the poll."""
        if rj.result is not None:
            self.running.pop(rj.job.id, None)
            self.ended.append(rj)
            if rj.job.id in self._progress:  # (a job that never wrote any: the sweep's)
                del self._progress[rj.job.id]
                _unlink(self._progress_file(rj.job.id))
            return
        if rj.pidfd is not None and rj.pidfd not in self._by_fd:
            self._by_fd[rj.pidfd] = rj
            self._poll.register(rj.pidfd, select.POLLIN)
            self._exits.register(rj.pidfd, select.POLLIN)

    def _unwatch(self, pidfd: int) -> None:
        del self._by_fd[pidfd]
        self._poll.unregister(pidfd)
        self._exits.unregister(pidfd)

    def owns(self, fd: int) -> bool:
        return fd in self._by_fd

    def unknown(self, job_id: str) -> bool:
        """Whether no attempt of this job runs here, nor ended unrecorded, nor is reaped."""
        return (
            job_id not in self.running
            and job_id not in self.orphans
            and all(rj.job.id != job_id for rj in self.ended)
        )

    def exited(self, fd: int) -> None:
        """The pidfd ``fd`` is readable: its step ended."""
        rj = self._by_fd[fd]
        self._unwatch(fd)
        rj.on_exit()
        self.watch(rj)

    def any_exited(self) -> bool:
        """Whether a running job's step has ended (without waiting)."""
        return bool(self._by_fd) and bool(self._exits.poll(0))

    def cancel(self, job_id: str) -> bool:
        rj = self.running.get(job_id)
        if rj is None:
            return False
        rj.cancelled = True  # even if it is already stopping (a timeout's grace)
        rj.terminate("cancelled")
        return True

    def terminate_all(self, reason: str) -> None:
        for rj in self.running.values():
            rj.terminate(reason)

    def stop_all(self) -> None:
        """Kill every running job now, recording nothing (the store has moved on)."""
        for rj in list(self.running.values()):
            if rj.pidfd is not None and rj.pidfd in self._by_fd:
                self._unwatch(rj.pidfd)
            rj.stop_now()
        self.running.clear()
        self.ended.clear()

    def abandon_all(self) -> None:
        """The daemon exits: let go of the jobs' fds (the next start re-queues them)."""
        for rj in self.running.values():
            rj.abandon()

    def pids_to_record(self) -> list[RunningJob]:
        """Jobs that have run for a while and whose pid the store does not know yet (short
        jobs are not worth a transaction each)."""
        mono = self.mono()
        return [
            rj
            for rj in self.running.values()
            if rj.pid and rj.pid != rj.recorded_pid and mono - rj.started >= PID_RECORD_AFTER
        ]

    # -- timers ------------------------------------------------------------------------------
    def deadlines(self) -> list[float]:
        """When the loop must come back even if nothing happens."""
        marks = [d for rj in self.running.values() if (d := rj.deadline()) is not None]
        marks += [
            rj.started + PID_RECORD_AFTER
            for rj in self.running.values()
            if rj.pid and rj.pid != rj.recorded_pid
        ]
        marks += [o.check_at for o in self.orphans.values()]
        if self.progress_dir is not None and self.running:
            oldest = min(rj.started for rj in self.running.values())
            marks.append(max(self._progress_at, oldest + PROGRESS_EVERY))
        return marks

    # -- progress ----------------------------------------------------------------------------
    def _progress_file(self, job_id: str) -> str:
        return f"{self.progress_dir}{os.sep}{job_id}"

    def progress_to_save(self, now: float) -> dict[str, Progress]:
        """Once a second, the last line of each running job's progress file, if it changed
        (read without blocking, a small tail at most); the readings due to be kept in the
        store (a job's at most every PROGRESS_SAVE_EVERY seconds). A job younger than a
        second is not looked at: short jobs cost nothing."""
        mono = self.mono()
        if self.progress_dir is None or mono < self._progress_at:
            return {}
        self._progress_at = mono + PROGRESS_EVERY
        due: dict[str, Progress] = {}
        for job_id, rj in self.running.items():
            if mono - rj.started < PROGRESS_EVERY:
                continue
            followed = self._progress.get(job_id)
            sig, reading = read_file(
                self._progress_file(job_id), followed.sig if followed else None
            )
            if reading is None and followed is None:
                continue
            if followed is None:
                followed = self._progress[job_id] = _Followed(Tracker(rj.job.attempts))
            followed.sig = sig
            if reading is not None:
                followed.unsaved = followed.tracker.add(reading, now)
            if followed.unsaved is not None and mono >= followed.save_at:
                followed.save_at = mono + PROGRESS_SAVE_EVERY
                due[job_id], followed.unsaved = followed.unsaved, None
        if mono >= self._sweep_at:
            self._sweep_at = mono + PROGRESS_SWEEP_EVERY
            self._sweep()
        return due

    def _sweep(self) -> None:
        """Remove progress files that no running job of this daemon owns and that nobody
        wrote for an hour (a job that wrote some and ended within a second, a daemon that
        died). A daemon sharing the state directory may run the job of a younger one."""
        assert self.progress_dir is not None
        try:
            names = os.listdir(self.progress_dir)
        except OSError:
            return
        stale = time.time() - PROGRESS_STALE
        for name in names:
            if name.split(".", 1)[0] in self.running:
                continue
            path = f"{self.progress_dir}{os.sep}{name}"
            with contextlib.suppress(OSError):
                if os.lstat(path).st_mtime < stale:
                    _unlink(path)

    def tick(self) -> None:
        """Timeouts and kill escalation of running jobs, and the orphans' progress. Needs no
        store, so it is never skipped."""
        mono = self.mono()
        for rj in list(self.running.values()):
            d = rj.deadline()
            if d is not None and mono >= d:
                rj.tick()
                self.watch(rj)
        for orphan in list(self.orphans.values()):
            if mono >= orphan.check_at:
                self._tick_orphan(orphan, mono)

    # -- orphans of dead daemons -------------------------------------------------------------
    def reap(self, job: Job) -> bool:
        """Start killing what is left of ``job``'s processes on this host (SIGTERM now).
        False if nothing is left: the job may run again at once."""
        if job.id in self.orphans:
            return True
        groups = job_process_groups(job.id, job.pid, job.pid_start or "")
        if not groups:
            return False
        for g in groups:
            killpg(g, signal.SIGTERM)
        mono = self.mono()
        self.orphans[job.id] = Orphan(
            job,
            groups,
            kill_at=mono + job.kill_grace,
            report_at=mono + job.kill_grace + ORPHAN_PATIENCE,
            check_at=mono + ORPHAN_RECHECK,
        )
        return True

    def _tick_orphan(self, orphan: Orphan, mono: float) -> None:
        job = orphan.job
        # Steps started after the first, or children in a session of their own, are found
        # again by their SPOOLQ_JOB_ID at every look.
        orphan.groups = {g for g in orphan.groups if group_alive(g)} | job_process_groups(
            job.id, job.pid, job.pid_start or ""
        )
        if not orphan.groups:
            del self.orphans[job.id]
            self.log.warn("orphan_killed", job=job.id, lane=job.lane)
            self._gone.append(job)
            return
        if mono >= orphan.kill_at and not orphan.killed:
            orphan.killed = True
            for g in orphan.groups:
                killpg(g, signal.SIGKILL)
        if mono >= orphan.report_at and not orphan.reported:
            orphan.reported = True
            pids = sorted(p for g in orphan.groups for p in live_members(g))
            self.log.warn(
                "orphan_alive",
                job=job.id,
                lane=job.lane,
                pids=",".join(map(str, pids)),
                action="the job stays running until these processes are gone",
            )
        # Patient at first (a SIGKILLed process can take a moment to free its memory), then
        # once a second for one that will not die (uninterruptible sleep on a dead mount).
        orphan.check_at = mono + (ORPHAN_RECHECK if not orphan.reported else 1.0)

    @property
    def has_gone(self) -> bool:
        return bool(self._gone)

    def take_gone(self) -> list[Job]:
        """Orphaned jobs whose every process is gone since the last call."""
        gone, self._gone = self._gone, []
        return gone

    def give_back(self, jobs: list[Job]) -> None:
        """Jobs from ``take_gone`` the store could not re-queue: offered again next time."""
        self._gone = jobs + self._gone


@dataclass
class _Followed:
    """A running job's progress as the supervisor follows it."""

    tracker: Tracker
    sig: Signature | None = None  # the file as last read
    save_at: float = 0.0  # the next reading is kept in the store from then on
    unsaved: Progress | None = None  # the latest reading, until it is kept


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
