"""The embedded store: one SQLite file in WAL mode, one write transaction per verb.

``BEGIN IMMEDIATE`` takes the write lock up front, so the lane-limit check and the claim in
``claim_batch`` cannot interleave with another process's claim. ``synchronous=NORMAL`` is
enough here: a commit lost to a power cut leaves the trigger in ``claimed/`` without a row,
and the start-up reconciliation turns it back into a job (see docs/guarantees.md).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from spoolq.errors import StoreError, StoreUnavailable
from spoolq.store import queries
from spoolq.store.rows import Row
from spoolq.store.sqlbase import Pending, SqlStore, Tx

BUSY_TIMEOUT_MS = 10_000
# Faults that pass (a lock, a full or read-only disk, a file that cannot be opened right
# now): the daemon backs off and retries. By SQLite's primary result code, not the message.
_TRANSIENT = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def _code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (extended codes keep it in the low byte);
    None for an error the library did not report."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _transient(exc: sqlite3.Error) -> bool:
    return _code(exc) in _TRANSIENT


class _SqliteTx:
    def __init__(self, db: sqlite3.Connection, q: dict[str, str]) -> None:
        self._db, self._q = db, q

    def one(self, query: str, /, **params: Any) -> Row | None:
        cur = self._db.execute(self._q[query], params)
        try:
            row: Row | None = cur.fetchone()
        finally:
            cur.close()  # an unfinished statement would hold a read transaction open
        return row

    def all(self, query: str, /, **params: Any) -> list[Row]:
        return self._db.execute(self._q[query], params).fetchall()

    # In process there is no round trip to save: every statement runs at once.
    def run(self, query: str, /, **params: Any) -> None:
        self._db.execute(self._q[query], params).close()

    def send(self, query: str, /, **params: Any) -> Pending:
        row = self.one(query, **params)
        return lambda: row


class SqliteStore(SqlStore):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._q = queries.load("sqlite.sql")
        self._wake_dir = path.parent / "wake"
        self._connect()

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            _private_file(self.path)
            self._db = sqlite3.connect(
                self.path,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open the SQLite store {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        with self._translate():
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA synchronous = NORMAL")
            # Switching a new file to WAL, and migrating it, can report "locked" at once
            # (without the busy handler) while another process does the same: retry.
            deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
            while True:
                try:
                    self._db.execute("PRAGMA journal_mode = WAL")
                    self._migrate()
                    break
                except sqlite3.OperationalError as exc:
                    locked = _code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                    if not locked or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            # Jobs reaching a final state flag this connection (TEMP triggers calling back):
            # the processes waiting for jobs are woken once the transaction commits.
            self._db.create_function("spoolq_job_ended", 0, self._job_ended, deterministic=False)
            self._db.execute(self._q["wake_waiters_on_update"])
            self._db.execute(self._q["wake_waiters_on_insert"])
        self._inode = os.stat(self.path).st_ino

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _transient(exc):
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Tx]:
        with self._translate():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._db, self._q)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                self._ended = False
                raise
            self._db.execute("COMMIT")
        if self._ended:
            self._ended = False
            self._wake_waiters()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Tx]:
        with self._translate():
            yield self._outer or _SqliteTx(self._db, self._q)

    def _ids(self, ids: Sequence[str]) -> Any:
        return json.dumps(list(ids))  # expanded by json_each() in the query

    def _migrate(self) -> None:
        for number, script in queries.migrations("sqlite"):
            if self._user_version() >= number:
                continue
            # Another process may be migrating the same new file right now: take the write
            # lock, then look at the version again, so each migration runs exactly once and
            # commits together with its version bump. (Not executescript: it would commit
            # the lock away first, and leave the transaction open when a statement fails.)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._user_version() < number:
                    for statement in _statements(script):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number:d}")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _user_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchall()[0][0])

    def close(self) -> None:
        self._db.close()

    def verify(self) -> str | None:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return f"{self.path} was deleted"
        except OSError as exc:
            return f"{self.path}: {exc.strerror}"
        return None if inode == self._inode else f"{self.path} was replaced by another file"

    def reopen(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._connect()

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- notification --------------------------------------------------------------------------
    # Each daemon owns a FIFO under <db dir>/wake/; a control command writes one byte into
    # every FIFO there. A FIFO opened read-write never reports EOF, and a writer opening
    # with O_NONBLOCK gets ENXIO when the daemon is gone, so stale ones are cleaned up.
    def listen(self, daemon_id: str) -> FifoListener:
        self._wake_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        return FifoListener(self._wake_dir / f"{daemon_id}.fifo")

    def notify(self, exclude: str | None = None, lanes: Sequence[str] | None = None) -> None:
        # (Daemons sharing a SQLite store share its state directory: all may take ``lanes``.)
        try:
            names = os.listdir(self._wake_dir)
        except FileNotFoundError:
            return
        self._write_fifos([n for n in names if n.endswith(".fifo") and n != f"{exclude}.fifo"])

    def _write_fifos(self, names: list[str]) -> None:
        for name in names:
            path = self._wake_dir / name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nobody reads it: its daemon is gone
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            try:
                os.write(fd, b"!")
            except BlockingIOError:
                pass  # already full of wake-ups
            finally:
                os.close(fd)

    # Processes waiting for jobs to end own FIFOs named wait-*.fifo beside the daemons'.
    _ended = False
    _waiters_seen: tuple[int, int, list[str]] | None = None  # (dir mtime, listed at, waiters)

    def _job_ended(self) -> None:
        self._ended = True

    def listen_ended(self) -> FifoListener | None:
        try:
            self._wake_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            return FifoListener(self._wake_dir / f"wait-{os.getpid()}-{os.urandom(4).hex()}.fifo")
        except OSError:
            return None  # not ours to write in: the waiter polls instead

    def _wake_waiters(self) -> None:
        """Write a byte into every waiter's FIFO. The directory is listed again only when
        its mtime changed (a waiter came or went): with nobody waiting, one stat."""
        try:
            mtime = os.stat(self._wake_dir).st_mtime_ns
        except OSError:
            return
        seen = self._waiters_seen
        # A listing taken in the same clock tick as the last change may miss a FIFO made
        # just after it (directory times are coarse): trust only one taken clearly later.
        if seen is None or seen[0] != mtime or seen[1] - mtime < 50_000_000:
            now = time.time_ns()
            try:
                names = os.listdir(self._wake_dir)
            except OSError:
                return
            seen = self._waiters_seen = (mtime, now, [n for n in names if n.startswith("wait-")])
        waiters = seen[2]
        if waiters:
            self._write_fifos(waiters)

    def unregister_daemon(self, daemon_id: str) -> None:
        super().unregister_daemon(daemon_id)
        with contextlib.suppress(OSError):
            (self._wake_dir / f"{daemon_id}.fifo").unlink()


def _private_file(path: Path) -> None:
    """Create the store file 0640 whatever the umask, and take an older one's read access
    from others: it holds every job's argv, env and reasons. The group stays the operators'
    way in. SQLite gives the -wal and -shm files the main file's mode when it makes them.

    An existing file is never opened here, only changed by its path: closing a descriptor of
    it would drop every POSIX lock this process holds on it, those of another connection
    in this process too (the web's, beside the daemon's). Without its lock that connection
    looks gone, and the next process to close the store deletes the WAL it still writes."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):  # absent, or not ours: leave it to its owner
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o037:
                file.chmod(mode & ~0o037)


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script, one at a time (sqlite3 runs one per execute)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if any(ln.strip() and not ln.strip().startswith("--") for ln in buf.splitlines()):
        raise StoreError(f"migration ends with an incomplete statement: {buf.strip()[:60]!r}")


class FifoListener:
    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.mkfifo(path, 0o600)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 4096):
                pass

    def close(self) -> None:
        os.close(self._fd)
        with contextlib.suppress(OSError):
            self.path.unlink()
