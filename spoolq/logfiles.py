"""Job log files, created ahead of time.

Creating a file is the most expensive system call on a job's path (on some filesystems
inode allocation costs a millisecond of kernel time; a rename costs microseconds). A small
thread keeps a few empty log files ready under hidden names; a job's log is one of them
renamed to ``<job-id>.log``. The thread runs while the event loop waits, or on the other
core, and sleeps once the pool is full.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from collections import deque

from spoolq.procs import process_alive

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
MODE = 0o640


TAIL_BYTES = 64 * 1024  # of a finished job's log, kept in the store for other hosts


def read_tail(path: str, limit: int = TAIL_BYTES) -> tuple[bytes, int] | None:
    """The last ``limit`` bytes of the log at ``path`` and its whole size (never reads
    more than that); None if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - limit)
        return os.pread(fd, size - start, start), size
    except OSError:
        return None
    finally:
        os.close(fd)


def open_log(path: str) -> int:
    """Open (creating if needed) a job log for appending."""
    return os.open(path, _FLAGS | os.O_CREAT, MODE)


class LogPool:
    """Spare empty files in ``directory`` (beside logs/, same filesystem, out of sight),
    each kept open: a job's log is a spare's inode given its real name by ``link()``, and
    the fd already open on it goes to the job. The spare's old name is removed later by
    the pool's thread."""

    def __init__(self, directory: str, size: int = 8) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o750, exist_ok=True)
        self.size = size
        self._ready: deque[tuple[str, int]] = deque()  # (spare path, fd open on it)
        self._spent: deque[str] = deque()  # spare names whose inode now has a log's name
        self._wanted = threading.Event()
        self._stopping = False
        # pid-token-n-host: the token tells this pool's spares from those of an earlier
        # daemon that had the same pid (in a container the daemon is often pid 1 at every
        # start); the host keeps us off the spares of a daemon elsewhere sharing the dir.
        me, token, host = os.getpid(), os.urandom(4).hex(), socket.gethostname()
        self._names = (f"{me}-{token}-{i}-{host}" for i in itertools.count())
        for name in os.listdir(directory):  # spares of daemons that were killed
            owner, _, rest = name.partition("-")
            theirs = rest.split("-", 2)[2] if rest.count("-") >= 2 else host
            if (
                owner.isdigit()
                and theirs == host
                and (int(owner) == me or not process_alive(int(owner), ""))
            ):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
        self._thread = threading.Thread(target=self._fill, name="spoolq-logpool", daemon=True)
        self._wanted.set()
        self._thread.start()

    def _fill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            while self._spent:
                with contextlib.suppress(OSError):
                    os.unlink(self._spent.popleft())
            while not self._stopping and len(self._ready) < self.size:
                path = os.path.join(self.directory, next(self._names))
                try:
                    fd = os.open(path, _FLAGS | os.O_CREAT | os.O_EXCL, MODE)
                except OSError:
                    break  # full or read-only disk: open() makes logs directly meanwhile
                self._ready.append((path, fd))
            if self._stopping:
                return

    def open(self, path: str) -> int:
        """The log at ``path`` opened for appending: a pooled file linked into place, an
        existing log (a retry: link() refuses to replace it), or - if the pool is empty - a
        new file."""
        try:
            return self._link_spare(path)
        finally:
            # After the spare's old name is in _spent, so that the wake-up removes it too
            # (woken before, the thread could drain _spent just ahead of it and sleep).
            if len(self._ready) < self.size // 2 and not self._wanted.is_set():
                self._wanted.set()  # refill in halves: one wake-up of the thread per few jobs

    def _link_spare(self, path: str) -> int:
        while self._ready:
            spare, fd = self._ready.popleft()
            try:
                os.link(spare, path)
            except FileExistsError:
                self._ready.appendleft((spare, fd))  # still a spare, for the next job
                break
            except OSError:
                os.close(fd)
                self._spent.append(spare)
                continue
            self._spent.append(spare)
            return fd
        return open_log(path)

    def close(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join(5)
        while self._ready:
            spare, fd = self._ready.popleft()
            os.close(fd)
            self._spent.append(spare)
        while self._spent:
            with contextlib.suppress(OSError):
                os.unlink(self._spent.popleft())
