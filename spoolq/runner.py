"""One running attempt of a job and its spawn: its own process group, output straight to
its log file, resource use from the kernel, and termination by escalation (SIGTERM to the
group, grace, SIGKILL).

Owns one attempt's processes. The supervisor owns the set of running attempts and the
waiting: each running step exposes a pidfd to poll, and ``deadline()`` tells when the loop
must come back to escalate a timeout or cancel. Reading ``/proc`` is ``procs``'s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import shlex
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from spoolq import logfiles
from spoolq.faults import crash_point
from spoolq.jobs import AttemptResult, Job, stamp
from spoolq.procs import group_alive, killpg, signame

Clock = Callable[[], float]
GROUP_RECHECK = 0.05  # seconds between checks that a terminated job's group has exited


@dataclass
class _Usage:
    cpu_s: float = 0.0
    max_rss_kb: int | None = None  # None: no step's peak could be told from the daemon's
    # The daemon's own peak RSS when the current step was spawned. A child started with
    # posix_spawn (vfork) has its peak RSS seeded from the daemon's at exec: a figure at or
    # below this says nothing about the job.
    floor_kb: int = 0


@dataclass
class RunningJob:
    """One attempt of a job: its steps run one after the other in the same log."""

    job: Job
    env: Mapping[str, str]
    cwd: str
    clock: Clock = time.monotonic
    open_log: Callable[[str], int] = logfiles.open_log
    started: float = field(init=False)
    step: int = field(init=False, default=0)
    leader: int | None = field(init=False, default=None)  # pid of the running step
    pidfd: int | None = field(init=False, default=None)
    stop_reason: str | None = field(init=False, default=None)  # timeout | cancelled | ...
    kill_at: float | None = field(init=False, default=None)  # when SIGKILL follows SIGTERM
    # After the leader of a terminated step is reaped, when to look again whether the rest
    # of its group is gone. A fixed time: a deadline recomputed as "now + 50 ms" on every
    # loop pass is never reached, which held the job until kill_grace ran out.
    recheck_at: float | None = field(init=False, default=None)
    result: AttemptResult | None = field(init=False, default=None)
    recorded_pid: int | None = field(init=False, default=None)  # the pid the store knows
    cancelled: bool = field(init=False, default=False)  # an operator asked for it
    _usage: _Usage = field(init=False, default_factory=_Usage)
    _log_fd: int = field(init=False, default=-1)
    _pgid: int = field(init=False, default=0)
    _exit_code: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def steps(self) -> tuple[tuple[str, ...], ...]:
        assert self.job.spec is not None
        return self.job.spec.steps

    @property
    def pid(self) -> int | None:
        return self.leader

    # -- starting ----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the log and start the first step. On failure to start, ``result`` is set."""
        self._log_fd = self.open_log(self.job.log)
        self._spawn()

    def _note(self, text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._log_fd, f"--- spoolq {stamp(time.time())} {text}\n".encode())

    def _spawn(self) -> None:
        argv = self.steps[self.step]
        self._note(
            f"job={self.job.id} attempt={self.job.attempts} step={self.step + 1}/"
            f"{len(self.steps)} cwd={self.cwd}: {shlex.join(argv)}"
        )
        self._usage.floor_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            self.leader = spawn(argv, self.env, self.cwd, self._log_fd)
        except OSError as exc:
            why = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            if exc.filename and exc.filename != argv[0]:
                why += f" ({exc.filename})"
            self._note(why)
            self._end(None, why)
            return
        # The child is running and its pid is not yet in the store: a daemon killed here
        # leaves a job that only its SPOOLQ_JOB_ID marker leads the next start to.
        crash_point("spawned")
        self.pidfd = os.pidfd_open(self.leader)

    # -- waiting -----------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When the event loop must call ``tick`` even if nothing else happens."""
        if self.kill_at is not None:
            if self.leader is None and self.recheck_at is not None:
                return min(self.kill_at, self.recheck_at)
            return self.kill_at
        if self.job.timeout is not None:
            return self.started + self.job.timeout
        return None

    def tick(self) -> None:
        """Escalate a timeout or a pending termination whose time has come."""
        now = self.clock()
        if self.result is not None:
            return
        if self.stop_reason is None and self.job.timeout is not None:
            if now >= self.started + self.job.timeout:
                self.terminate("timeout")
            return
        if self.kill_at is None:
            return
        if self.leader is None:
            # Leader gone; wait for the rest of the group until the grace ends.
            if not group_alive(self._pgid) or now >= self.kill_at:
                killpg(self._pgid, signal.SIGKILL)
                self._end(self._exit_code, self.stop_reason)
            else:
                self.recheck_at = now + GROUP_RECHECK
        elif now >= self.kill_at:
            self._note(f"still running {self.job.kill_grace:g}s after SIGTERM: SIGKILL")
            killpg(self.leader, signal.SIGKILL)
            self.kill_at = now + 3600  # wait for the reap; SIGKILL cannot be ignored

    def terminate(self, reason: str) -> None:
        """SIGTERM to the whole group now; SIGKILL after kill_grace."""
        if self.result is not None or self.stop_reason is not None:
            return
        self.stop_reason = reason
        self._note(f"terminating ({reason}): SIGTERM to the process group")
        if self.leader is not None:
            killpg(self.leader, signal.SIGTERM)
        self.kill_at = self.clock() + self.job.kill_grace

    def on_exit(self) -> None:
        """The current step's leader has exited (its pidfd is readable): reap it."""
        assert self.leader is not None and self.pidfd is not None
        pid, status, ru = os.wait4(self.leader, 0)
        code = os.waitstatus_to_exitcode(status)
        self._usage.cpu_s += ru.ru_utime + ru.ru_stime
        if ru.ru_maxrss > self._usage.floor_kb:
            self._usage.max_rss_kb = max(self._usage.max_rss_kb or 0, ru.ru_maxrss)
        os.close(self.pidfd)
        self.pidfd = None
        self._pgid = pid
        self.leader = None
        if self.stop_reason is not None:
            self._exit_code = code
            if group_alive(pid) and self.kill_at is not None:
                self.recheck_at = self.clock() + GROUP_RECHECK
                return  # tick() finishes once the group is gone or the grace ends
            self._end(code, self.stop_reason)
            return
        if code != 0:
            reason = f"exit {code}" if code > 0 else f"killed by {signame(-code)}"
            if len(self.steps) > 1:
                reason += f" at step {self.step + 1}/{len(self.steps)}"
            self._note(reason)
            self._end(code, reason)
            return
        if self.step + 1 < len(self.steps):
            self.step += 1
            self._spawn()
            return
        self._end(0, None)

    def _end(self, code: int | None, reason: str | None) -> None:
        wall = self.clock() - self.started
        self.result = AttemptResult(
            exit_code=code,
            reason=reason,
            wall_s=wall,
            cpu_s=self._usage.cpu_s,
            max_rss_kb=self._usage.max_rss_kb,
        )
        self._note(
            f"attempt {self.job.attempts} ended: {reason or 'ok'} "
            f"(wall {wall:.3f}s, cpu {self._usage.cpu_s:.3f}s, maxrss {_kb(self._usage)})"
        )
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1

    def stop_now(self) -> None:
        """Terminate the group and wait for it (blocking, at most kill_grace + a moment);
        for emergencies where the event loop cannot wait."""
        if self.leader is not None and self.pidfd is not None:
            killpg(self.leader, signal.SIGTERM)
            exited = select.poll()
            exited.register(self.pidfd, select.POLLIN)
            if not exited.poll(self.job.kill_grace * 1000):
                killpg(self.leader, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.leader, 0)
            killpg(self.leader, signal.SIGKILL)  # anything the leader left behind
            self.leader = None
        self.abandon()

    def abandon(self) -> None:
        """Release our fds without touching the processes (daemon exits, job re-queued)."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self._close_log()


def _kb(usage: _Usage) -> str:
    if usage.max_rss_kb is None:
        return f"not measurable (under the daemon's {usage.floor_kb} KB)"
    return f"{usage.max_rss_kb} KB"


# -- starting a process --------------------------------------------------------------------
# posix_spawn() rather than subprocess.Popen: glibc's posix_spawn is a vfork+exec without
# Popen's Python-level set-up (the error pipe, the handle juggling), ~20 % less time per
# start. What Popen would add is done here instead: the executable is looked up in the
# *job's* PATH, the working directory is entered by the daemon just for the spawn (one
# thread starts jobs, and the daemon uses absolute paths only), the signals Python ignores
# are reset to default, and no fd leaks because every fd the daemon holds is close-on-exec
# (seal_fds(); ensure_std_fds() keeps 0-2 from being one of ours).
_RESET_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name)
)
_devnull = -1
_home = -1  # the daemon's own working directory, returned to after each spawn


def spawn(argv: tuple[str, ...], env: Mapping[str, str], cwd: str, log_fd: int) -> int:
    """Start ``argv`` in its own session and process group, stdin /dev/null, stdout and
    stderr ``log_fd``; return its pid. OSError (with the failing name) if it cannot run."""
    global _devnull, _home
    if _devnull < 0:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if _home < 0:
        flags = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            _home = os.open(".", flags)
        except OSError:  # started in a directory since removed
            _home = os.open("/", flags)
    # Entered by path every time, as Popen's child would (a mount placed over the directory
    # since the last job counts), and left right after for the daemon's own directory: a
    # job's directory is not held busy (umount) between jobs, and anything a library names
    # relative to where the daemon was started (a libpq sslrootcert=...) still resolves.
    # FileNotFoundError names cwd, as Popen's would.
    os.chdir(cwd)
    try:
        name = argv[0]
        exe = name if "/" in name else _lookup(name, env)
        actions = [
            (os.POSIX_SPAWN_DUP2, _devnull, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ]
        try:
            return os.posix_spawn(
                exe, argv, env, file_actions=actions, setsid=True, setsigdef=_RESET_SIGNALS
            )
        except OSError as exc:
            if exc.filename is None:
                exc.filename = name
            raise
    finally:
        os.fchdir(_home)


def _lookup(name: str, env: Mapping[str, str]) -> str:
    """The first executable ``name`` along the job's PATH (relative entries are relative to
    the job's cwd, which is the daemon's during the spawn)."""
    denied = None  # as Popen: a file found but not executable is "Permission denied"
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, name)
        if os.path.isdir(candidate):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        if denied is None and os.path.exists(candidate):
            denied = candidate
    if denied is not None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
