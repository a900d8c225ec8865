"""Candidate triggers on their way to a claim: what the watchers report, what scans find,
and the rule that decides when a file seen only by a scan or a poll is complete.

``offer`` and the watcher callbacks run on the daemon's loop for inotify (read there) and
on watcher threads for polling and other platforms; everything else runs on the loop.
Scans are the guarantee behind the events: one at start, one right after an inotify
overflow, one per spool every ``rescan_interval``, one of each directory that appears in a
recursive spool.
"""

from __future__ import annotations

import collections
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from spoolq.config import SpoolConfig
from spoolq.watcher import scan_spool

WRITE_IDLE_LIMIT = 60.0  # seconds without a write before an unclosed file counts as complete

Entry = tuple[SpoolConfig, str, bool]  # spool, path, complete (the kernel said so)


class Intake:
    def __init__(
        self,
        spools: tuple[SpoolConfig, ...],
        state_root: Path,
        wake: Callable[[], None],
        on_dir: Callable[[SpoolConfig, str], None],
        *,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spools = spools
        self._state_root = state_root
        self._wake = wake
        self._on_dir = on_dir
        self._clock = clock
        self._mono = mono
        self._queue: collections.deque[Entry] = collections.deque()
        self._settling: dict[str, tuple[SpoolConfig, tuple[int, int], float]] = {}
        self._new_dirs: collections.deque[tuple[SpoolConfig, str]] = collections.deque()
        self._next_rescan = [mono() + s.rescan_interval for s in spools]
        self.overflowed = False
        # Paths the native watcher saw created or modified and not yet closed; the watcher
        # shares its set here (see InotifyWatcher.writing).
        self.writing: set[str] = set()

    # -- watchers (the loop's thread, or a watcher thread) ---------------------------------
    def offer(self, spool: SpoolConfig, path: str, complete: bool) -> None:
        self._queue.append((spool, path, complete))
        self._wake()

    def on_overflow(self) -> None:
        self.overflowed = True
        self._wake()

    def on_new_dir(self, spool: SpoolConfig, directory: str) -> None:
        self._new_dirs.append((spool, directory))
        self._wake()

    # -- the loop ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._queue)

    @property
    def pending(self) -> bool:
        """Work to do now (the loop must not sleep)."""
        return bool(self._queue or self._new_dirs or self.overflowed)

    def next_deadline(self) -> float:
        """Monotonic time of the next rescan or settle check."""
        marks = list(self._next_rescan)
        if self._settling:
            marks.append(min(due for _, _, due in self._settling.values()))
        return min(marks)

    def scan_all(self) -> None:
        mono = self._mono()
        for i, spool in enumerate(self._spools):
            self._scan(spool)
            self._next_rescan[i] = mono + spool.rescan_interval

    def timers(self) -> bool:
        """Run the scans and settle checks that are due; True if an overflow forced one."""
        mono = self._mono()
        forced = self.overflowed
        if forced:
            self.overflowed = False
            self.scan_all()
        for i, spool in enumerate(self._spools):
            # While the queue still holds paths (a backlog being claimed), the periodic
            # scan waits: it would queue every unclaimed file a second time. It runs at the
            # first pass after the queue is empty; an overflow still scans at once.
            if mono >= self._next_rescan[i] and not self._queue:
                self._scan(spool)
                self._next_rescan[i] = mono + spool.rescan_interval
                # Files that left while still open for writing (the watcher does not follow
                # moves out or deletions) are forgotten here.
                for path in [p for p in self.writing if not os.path.lexists(p)]:
                    self.writing.discard(path)
        while self._new_dirs:
            spool, directory = self._new_dirs.popleft()
            self._scan(spool, directory)
        for path, (spool, _, due) in list(self._settling.items()):
            if mono >= due:
                del self._settling[path]
                self._queue.append((spool, path, False))
        return forced

    def _scan(self, spool: SpoolConfig, top: str | None = None) -> None:
        target = spool if top is None else spool.model_copy(update={"path": Path(top)})
        for path in scan_spool(target, self._state_root):
            self._queue.append((spool, path, False))
            if spool.recursive:
                self._on_dir(spool, os.path.dirname(path))

    def take(self, limit: int) -> Iterator[tuple[SpoolConfig, str]]:
        """Up to ``limit`` distinct paths that are ready to be claimed, each taken off the
        queue only when the caller asks for it: a caller that stops early (the daemon, when
        a job ends mid-batch) leaves the rest queued, in order, at no cost."""
        seen: set[str] = set()
        given = 0
        while self._queue and given < limit:
            spool, path, complete = self._queue.popleft()
            if path in seen:
                continue
            seen.add(path)
            if not complete and not self._settled(spool, path):
                continue
            self._settling.pop(path, None)
            given += 1
            yield spool, path

    def give_back(self, spool: SpoolConfig, path: str) -> None:
        """Return a path ``take`` handed out but the caller could not claim: first in line
        again, and still known complete."""
        self._queue.appendleft((spool, path, True))

    def _settled(self, spool: SpoolConfig, path: str) -> bool:
        """Whether a file only seen by a scan or a poll is complete: size and mtime
        unchanged for ``settle`` seconds (or last modified longer ago than that)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._settling.pop(path, None)
            return False
        if not stat.S_ISREG(st.st_mode):
            return True  # nothing to wait for; the trust check will reject it
        if path in self.writing:
            if self._clock() - st.st_mtime < WRITE_IDLE_LIMIT:
                return False  # inotify will report IN_CLOSE_WRITE
            # No close event after a minute of silence: a file that appeared without an
            # open/close (a hard link whose first name was removed) or a lost event.
            self.writing.discard(path)
        key = (st.st_size, st.st_mtime_ns)
        if self._clock() - st.st_mtime >= spool.settle:
            return True
        mono = self._mono()
        prev = self._settling.get(path)
        if prev is not None and prev[1] == key and mono >= prev[2]:
            return True
        if prev is None or prev[1] != key:
            self._settling[path] = (spool, key, mono + spool.settle)
        return False
