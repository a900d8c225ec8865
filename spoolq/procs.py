"""What the kernel knows about processes: liveness, start times, process groups, and the
daemon's own file descriptors.

Owns the ``/proc`` readings (a pid with its start time names one process even after the
pid is reused; a job's processes carry ``SPOOLQ_JOB_ID`` in their environment), group
signalling, and the fd hygiene that keeps the daemon's files out of jobs. Leaves running a
job to ``runner`` and deciding what a dead process means to ``fleet`` and ``lifecycle``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from spoolq.jobs import DaemonInfo


def killpg(pgid: int, sig: int) -> None:
    """Signal a whole process group; a group already gone (or not ours) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether group ``pgid`` has a member that is more than a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(live_members(pgid))


def _stat_fields(pid: str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ')'.
    return data[data.rfind(b")") + 2 :].split()


def live_members(pgid: int) -> list[int]:
    """Pids of group ``pgid`` that are more than zombies. killpg(pgid, 0) succeeds for a
    group whose members are all dead but not yet reaped: orphans are reaped by init, which
    can take seconds (or forever when init does not reap, e.g. spoolq as PID 1 in a
    container), and a cancelled or timed-out job would wait for kill_grace meanwhile. A
    process still tearing itself down after SIGKILL (freeing a large memory) is not a
    zombie yet, and counts as alive: it may still hold what the job held."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return [pgid]  # no procfs: trust killpg
    want = str(pgid).encode()
    found = []
    for name in names:
        if not name.isdigit():
            continue
        fields = _stat_fields(name)
        # After the command name: state, ppid, pgrp, ...
        if fields and len(fields) > 2 and fields[2] == want and fields[0] != b"Z":
            found.append(int(name))
    return found


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def pid_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), '' if unknown; with the
    pid it names one process even after the pid is reused."""
    fields = _stat_fields(str(pid))
    return fields[19].decode() if fields and len(fields) > 19 else ""


def process_alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or pid_start_time(pid) == start


def job_process_groups(job_id: str, pid: int | None = None, start: str = "") -> set[int]:
    """Process groups on this host still running the job: the recorded pid's group if that
    process is still the one we started, and every live process whose environment carries
    ``SPOOLQ_JOB_ID=<job_id>``. The environment is set before ``exec``, so this also finds
    a job whose pid never reached the store (the daemon died right after the spawn), the
    steps after the first, and children that moved to a session of their own."""
    groups: set[int] = set()
    if pid and process_alive(pid, start):
        groups.add(pid)
    marker = f"SPOOLQ_JOB_ID={job_id}\0".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if marker not in fh.read() + b"\0":
                    continue
            fields = _stat_fields(entry.name)
            if fields and fields[0] != b"Z":
                groups.add(os.getpgid(int(entry.name)))
        except (OSError, ProcessLookupError):
            continue  # gone, or not ours to read
    return {g for g in groups if group_alive(g)}


def daemon_alive(info: DaemonInfo, now: float, stale_after: float) -> bool:
    """On this host the kernel knows (pid and its start time: a kill -9 shows at once); a
    daemon on another host is alive while its heartbeat is fresh."""
    if info.host == socket.gethostname():
        return process_alive(info.pid, info.pid_start)
    return info.heartbeat_at >= now - stale_after


def ensure_std_fds() -> None:
    """Open /dev/null on any of fds 0-2 that is closed, so that no file the daemon opens
    later gets one of those numbers (a job's stdin/stdout/stderr are dup2()ed onto them)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if null > 2:
                os.close(null)
    # Python found them closed at start and set the streams to None: the event log writes
    # to sys.stderr.
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115


def seal_fds() -> None:
    """Make every fd above stderr close-on-exec: fds inherited from whoever started the
    daemon, and those libraries open without O_CLOEXEC (inotify_init), must not reach jobs."""
    for name in os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
