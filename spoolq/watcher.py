"""Noticing triggers: kernel events as a fast hint, full scans as the guarantee.

On Linux the native watcher reads inotify through watchdog's ``InotifyFD`` directly rather
than through an Observer: the Observer's move-pairing queue holds every unmatched
IN_MOVED_FROM (which each claim produces) for half a second in front of later events, and it
hides the distinction between a file created (still being written) and a file moved in
(complete), and it does not surface IN_Q_OVERFLOW. Here every event reaches the daemon at
once, overflow triggers an immediate rescan, and a directly written file is taken at
IN_CLOSE_WRITE. InotifyFD's own thread is not started: the daemon polls the inotify fd in its
event loop and reads the events there, which saves a thread switch and a wake-up pipe on
every trigger's way to its claim. Polling (network filesystems) and other platforms use
watchdog's observers, with the ``settle`` rule deciding when a file is complete.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from spoolq.config import SpoolConfig

# offer(spool, path, complete): complete=True when the kernel told us the file is finished
# (moved in, or closed after writing); False when only a scan or a poll saw it.
Offer = Callable[[SpoolConfig, str, bool], None]


def matches(spool: SpoolConfig, name: str) -> bool:
    """Hidden names (``.x.part``) are never triggers: producers write there first."""
    if name.startswith("."):
        return False
    return any(fnmatch.fnmatchcase(name, p) for p in spool.patterns)


def _arrival(entry: os.DirEntry[str]) -> tuple[int, str, str]:
    try:
        mtime = entry.stat(follow_symlinks=False).st_mtime_ns
    except OSError:
        mtime = 0  # gone already: the claim will find out
    return mtime, entry.name, entry.path


def scan_spool(spool: SpoolConfig, exclude: Path) -> Iterator[str]:
    """The path of every matching entry of the spool (and its subdirectories when
    recursive), never descending into ``exclude`` (the state directory) or through symlinks.

    Oldest first (by mtime, then name): directory order is a hash order, and a backlog
    found by a scan (at start, after an overflow) must queue in the order it was published,
    so that equal priorities run first in, first out. Only small tuples are kept while
    sorting, not the directory entries (100,000 triggers at start)."""
    stack = [str(spool.path)]
    excluded = str(exclude)
    while stack:
        directory = stack.pop()
        found: list[tuple[int, str, str]] = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.path == excluded:
                        continue
                    if spool.recursive and entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif matches(spool, entry.name):
                        found.append(_arrival(entry))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        found.sort()
        for _mtime, _name, path in found:
            yield path


class Watcher:
    def start(self) -> None: ...
    def stop(self) -> None: ...

    def fileno(self) -> int | None:
        """An fd for the daemon's poll() if this watcher is read from the event loop."""
        return None

    def dispatch(self) -> None:
        """Read what is ready on ``fileno()`` and hand it over (event loop thread)."""

    def alive(self) -> bool:
        """Whether events still arrive (a health check asks)."""
        return True


class InotifyWatcher(Watcher):
    def __init__(
        self,
        spools: list[SpoolConfig],
        exclude: Path,
        offer: Offer,
        overflow: Callable[[], None],
        new_dir: Callable[[SpoolConfig, str], None],
    ) -> None:
        from watchdog.observers.inotify_c import InotifyConstants as C
        from watchdog.observers.inotify_c import InotifyFD

        self._C = C
        self._fd = InotifyFD()  # its thread is never started: see fileno() and dispatch()
        self._spools = spools
        self._exclude = str(exclude)
        self._offer = offer
        self._overflow = overflow
        self._new_dir = new_dir
        self._dirs: dict[int, tuple[SpoolConfig, str]] = {}
        self.writing: set[str] = set()  # created or modified, not yet closed
        # No IN_MOVED_FROM / IN_DELETE: every claim is a move out of the spool, and reading
        # that event back would cost the loop a wake-up per job. A file that leaves while
        # still being written stays in ``writing`` until the next rescan prunes it.
        self._mask = (
            C.IN_MOVED_TO | C.IN_CLOSE_WRITE | C.IN_CREATE | C.IN_MODIFY
            | C.IN_DELETE_SELF | C.IN_DONT_FOLLOW | C.IN_ONLYDIR
        )  # fmt: skip

    def start(self) -> None:
        for spool in self._spools:
            self._watch_tree(spool, str(spool.path), announce=False)

    def stop(self) -> None:
        # Unstarted, the InotifyFD still believes a reader may be blocked in read() unless
        # it has read once; say it has not, so that close() releases its fds itself.
        self._fd._is_reading = False
        self._fd.close()

    # Two private attributes of watchdog's InotifyFD, kept on purpose: its inotify binding
    # is what spoolq wants (event parsing, move pairing, overflow), but it has no public
    # accessor for the fd of an InotifyFD whose reader thread it does not run, and none
    # to tell close() that no reader is blocked. The version is pinned below 8 in
    # pyproject.toml, and tests/unit/test_watcher_binding.py fails if either goes away.
    def fileno(self) -> int:
        return self._fd._inotify_fd

    def alive(self) -> bool:
        try:
            os.fstat(self._fd._inotify_fd)
        except OSError:
            return False
        return True

    def dispatch(self) -> None:
        """Read the events that are ready (poll() said so: this does not block) and handle
        them on the caller's thread, overflow included."""
        for event in self._fd.read_events():
            self._fd.handle_event(event)

    def _watch_tree(self, spool: SpoolConfig, top: str, *, announce: bool) -> None:
        self._watch(spool, top)
        if not spool.recursive:
            return
        for root, dirs, _ in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(root, d) != self._exclude]
            for d in dirs:
                path = os.path.join(root, d)
                if not os.path.islink(path):
                    self._watch(spool, path)
        if announce:
            # Files may have landed before the watch existed: have the daemon scan them.
            self._new_dir(spool, top)

    def _watch(self, spool: SpoolConfig, path: str) -> None:
        from watchdog.observers.inotify_c import CallbackId, Mask  # Linux only

        try:
            wd = self._fd.add_callback(
                os.fsencode(path), Mask(self._mask), self, CallbackId(id(self))
            )
        except OSError:
            if path == str(spool.path):
                raise
            return
        self._dirs[wd] = (spool, path)

    # -- watchdog's WatchCallback protocol (called from dispatch()) -------------------------
    def on_event(self, event: object) -> None:
        C = self._C
        wd, mask, name = event.wd, event.mask, os.fsdecode(event.name)  # type: ignore[attr-defined]
        entry = self._dirs.get(wd)
        if entry is None or not name:
            return
        spool, directory = entry
        if not mask & C.IN_ISDIR and not matches(spool, name):
            return  # most events: a producer's hidden temporary file
        path = os.path.join(directory, name)
        if path == self._exclude:
            return
        if mask & C.IN_ISDIR:
            if spool.recursive and mask & (C.IN_CREATE | C.IN_MOVED_TO):
                self._watch_tree(spool, path, announce=True)
            elif mask & (C.IN_CREATE | C.IN_MOVED_TO) and matches(spool, name):
                self._offer(spool, path, True)  # a directory is never a trigger: reject
            return
        if mask & (C.IN_MOVED_TO | C.IN_CLOSE_WRITE):
            self.writing.discard(path)
            self._offer(spool, path, True)
        elif mask & (C.IN_CREATE | C.IN_MODIFY):
            try:
                st = os.lstat(path)
            except OSError:
                return
            # A hard link (link(2)) is created whole and never closed after writing: judge
            # it now (the trust check rejects it) instead of waiting for IN_CLOSE_WRITE.
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                self.writing.add(path)  # complete at IN_CLOSE_WRITE
            else:
                self._offer(spool, path, True)  # FIFO, symlink, socket: judge now

    def on_watch_deleted(self, wd: int) -> None:
        self._dirs.pop(wd, None)

    def on_queue_overflow(self) -> None:
        self.writing.clear()
        self._overflow()


class _Handler(FileSystemEventHandler):
    def __init__(self, spool: SpoolConfig, exclude: str, offer: Offer) -> None:
        self._spool = spool
        self._exclude = exclude + os.sep
        self._offer = offer

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "modified", "moved", "closed"):
            return
        path = os.fsdecode(event.dest_path or event.src_path)
        if path.startswith(self._exclude) or not matches(self._spool, os.path.basename(path)):
            return
        if event.is_directory and self._spool.recursive:
            return
        self._offer(self._spool, path, event.event_type == "closed")


class ObserverWatcher(Watcher):
    """watchdog's polling observer (NFS/SMB), or its native observer on other platforms."""

    def __init__(self, spools: list[SpoolConfig], exclude: Path, offer: Offer, polling: bool):
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        self._observer: BaseObserver
        if polling:
            interval = min(s.poll_interval for s in spools)
            self._observer = PollingObserver(timeout=interval)
        else:
            self._observer = Observer()
        for spool in spools:
            self._observer.schedule(
                _Handler(spool, str(exclude), offer), str(spool.path), recursive=spool.recursive
            )

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def alive(self) -> bool:
        return self._observer.is_alive()


def make_watchers(
    spools: list[SpoolConfig],
    exclude: Path,
    offer: Offer,
    overflow: Callable[[], None],
    new_dir: Callable[[SpoolConfig, str], None],
) -> list[Watcher]:
    native = [s for s in spools if s.watcher != "polling"]
    polling = [s for s in spools if s.watcher == "polling"]
    watchers: list[Watcher] = []
    if native:
        if sys.platform.startswith("linux"):
            watchers.append(InotifyWatcher(native, exclude, offer, overflow, new_dir))
        else:
            watchers.append(ObserverWatcher(native, exclude, offer, polling=False))
    if polling:
        watchers.append(ObserverWatcher(polling, exclude, offer, polling=True))
    return watchers
