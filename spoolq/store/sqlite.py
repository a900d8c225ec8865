"""The embedded store: one SQLite file in WAL mode, one write transaction per verb.

``BEGIN IMMEDIATE`` takes the write lock up front, so the lane-limit check and the claim in
``claim_next`` cannot interleave with another process's claim. ``synchronous=NORMAL`` is
enough here: a commit lost to a power cut leaves the trigger in ``claimed/`` without a row,
and the start-up reconciliation turns it back into a job (see docs/guarantees.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from spoolq.errors import JobNotFound, SpoolqError, StoreError, StoreUnavailable
from spoolq.jobs import (
    Attempt,
    AttemptResult,
    DaemonInfo,
    Job,
    JobSpec,
    JobState,
    LaneStatus,
    NewJob,
)
from spoolq.store import queries
from spoolq.store.base import Store

BUSY_TIMEOUT_MS = 10_000


class SqliteStore(Store):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._q = queries.load("sqlite.sql")
        self._wake_dir = path.parent / "wake"
        self._connect()

    def _connect(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open the SQLite store {path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        with self._translate():
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._enable_wal()
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        self._inode = os.stat(path).st_ino

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

    # -- plumbing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if any(s in msg for s in ("locked", "busy", "readonly", "disk", "full", "unable")):
                raise StoreUnavailable(f"SQLite store {self.path}: {msg}") from exc
            raise StoreError(f"SQLite store {self.path}: {msg}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._translate():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, name: str, **params: Any) -> list[sqlite3.Row]:
        with self._translate():
            return self._db.execute(self._q[name], params).fetchall()

    def _migrate(self) -> None:
        for number, script in queries.migrations("sqlite"):
            if self._user_version() >= number:
                continue
            # Several processes may open the same fresh file at once (two daemons, a daemon
            # and a CLI): take the write lock first, then look at the version again, so each
            # migration runs exactly once. (executescript would commit the lock away.)
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

    def _enable_wal(self) -> None:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite reports "locked"
        # at once (without its busy handler) while another process opens the same file:
        # wait for it like busy_timeout would. Once in WAL, the mode sticks to the file.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def _user_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- intake ------------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], *, dedup_window: float, now: float) -> list[Job]:
        out = []
        with self._write() as db:
            for job in jobs:
                reason = job.reason
                key = job.spec.idem_key if job.spec else None
                if reason is None and key is not None:
                    dup = db.execute(
                        self._q["find_duplicate"], {"key": key, "since": now - dedup_window}
                    ).fetchone()
                    if dup is not None:
                        reason = f"duplicate: id {key!r} is already job {dup['id']}"
                db.execute(self._q["ensure_lane"], {"name": job.lane})
                db.execute(
                    self._q["insert_job"],
                    {
                        "id": job.id,
                        "state": JobState.REJECTED if reason else JobState.QUEUED,
                        "lane": job.lane,
                        "priority": job.priority,
                        "trigger": job.trigger,
                        "claimed_path": job.claimed_path,
                        "log": job.log,
                        "spec": job.spec.to_json() if job.spec else None,
                        "idem_key": key,
                        "retries": job.retries,
                        "retry_backoff": job.retry_backoff,
                        "timeout": job.timeout,
                        "kill_grace": job.kill_grace,
                        "on_success": job.on_success,
                        "reason": reason,
                        "created_at": job.created_at,
                        "finished_at": now if reason else None,
                    },
                )
                row = db.execute(self._q["get_job"], {"id": job.id}).fetchone()
                out.append(_job(row))
        return out

    def known_ids(self, ids: Iterable[str]) -> dict[str, JobState]:
        found: dict[str, JobState] = {}
        batch = list(ids)
        with self._translate():
            for i in range(0, len(batch), 500):
                chunk = batch[i : i + 500]
                marks = ",".join("?" * len(chunk))
                # A placeholder list is built from the count only; the values stay bound.
                sql = f"SELECT id, state FROM jobs WHERE id IN ({marks})"  # noqa: S608
                for row in self._db.execute(sql, chunk):
                    found[row["id"]] = JobState(row["state"])
        return found

    # -- dispatch ----------------------------------------------------------------------------
    def set_lanes(self, concurrency: dict[str, int]) -> None:
        with self._write() as db:
            for name, n in concurrency.items():
                db.execute(self._q["set_lane_concurrency"], {"name": name, "concurrency": n})

    def claim_next(self, lane: str, owner: str, now: float) -> Job | None:
        with self._write() as db:
            slots = db.execute(self._q["lane_slots"], {"lane": lane}).fetchone()
            if slots is None or slots["paused"] or slots["running"] >= slots["concurrency"]:
                return None
            nxt = db.execute(self._q["next_queued"], {"lane": lane, "now": now}).fetchone()
            if nxt is None:
                return None
            row = db.execute(
                self._q["start_job"], {"seq": nxt["seq"], "now": now, "owner": owner}
            ).fetchone()
            db.execute(
                self._q["insert_attempt"],
                {"job_id": row["id"], "n": row["attempts"], "now": now, "owner": owner},
            )
            return _job(row)

    def mark_started(self, job_id: str, pid: int, pid_start: str) -> None:
        with self._write() as db:
            db.execute(self._q["mark_started"], {"id": job_id, "pid": pid, "pid_start": pid_start})

    def _close_attempt(
        self, db: sqlite3.Connection, job: Job, result: AttemptResult, now: float
    ) -> None:
        db.execute(
            self._q["close_attempt"],
            {
                "job_id": job.id,
                "n": job.attempts,
                "now": now,
                "exit_code": result.exit_code,
                "reason": result.reason,
                "wall_s": round(result.wall_s, 6),
                "cpu_s": round(result.cpu_s, 6),
                "max_rss_kb": result.max_rss_kb,
            },
        )

    def finish(self, job: Job, result: AttemptResult, state: JobState, now: float) -> Job:
        with self._write() as db:
            self._close_attempt(db, job, result, now)
            row = db.execute(
                self._q["finish_job"],
                {
                    "id": job.id,
                    "state": state.value,
                    "exit_code": result.exit_code,
                    "reason": result.reason,
                    "now": now,
                    "failed": int(state is JobState.FAILED),
                },
            ).fetchone()
        if row is None:
            return self.get(job.id)
        return _job(row)

    def schedule_retry(self, job: Job, result: AttemptResult, not_before: float, now: float) -> Job:
        with self._write() as db:
            self._close_attempt(db, job, result, now)
            row = db.execute(
                self._q["requeue_job"],
                {
                    "id": job.id,
                    "exit_code": result.exit_code,
                    "reason": result.reason,
                    "not_before": not_before,
                    "failed": 1,
                },
            ).fetchone()
        if row is None:
            return self.get(job.id)
        return _job(row)

    def requeue_interrupted(self, job_ids: Sequence[str], now: float) -> list[Job]:
        out = []
        interrupted = AttemptResult(None, "interrupted", 0.0, 0.0, 0)
        with self._write() as db:
            for job_id in job_ids:
                cur = db.execute(self._q["get_job"], {"id": job_id}).fetchone()
                if cur is None or cur["state"] != JobState.RUNNING:
                    continue
                job = _job(cur)
                db.execute(
                    self._q["close_attempt"],
                    {
                        "job_id": job.id,
                        "n": job.attempts,
                        "now": now,
                        "exit_code": None,
                        "reason": "interrupted",
                        "wall_s": round(now - (job.started_at or now), 6),
                        "cpu_s": None,
                        "max_rss_kb": None,
                    },
                )
                row = db.execute(
                    self._q["requeue_job"],
                    {
                        "id": job.id,
                        "exit_code": interrupted.exit_code,
                        "reason": interrupted.reason,
                        "not_before": now,
                        "failed": 0,
                    },
                ).fetchone()
                out.append(_job(row))
        return out

    def running_jobs(self, owner: str | None = None) -> list[Job]:
        if owner is None:
            return [_job(r) for r in self._all("running_jobs")]
        return [_job(r) for r in self._all("running_jobs_of", owner=owner)]

    def cancel_requests(self, owner: str) -> list[Job]:
        return [_job(r) for r in self._all("cancel_requests", owner=owner)]

    def next_due(self, now: float) -> float | None:
        rows = self._all("next_due", now=now)
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def lanes_with_work(self, now: float) -> list[str]:
        return [r["lane"] for r in self._all("lanes_with_work", now=now)]

    # -- daemons -----------------------------------------------------------------------------
    def register_daemon(self, info: DaemonInfo) -> None:
        with self._write() as db:
            db.execute(
                self._q["register_daemon"],
                {
                    "id": info.id,
                    "host": info.host,
                    "pid": info.pid,
                    "pid_start": info.pid_start,
                    "started_at": info.started_at,
                    "heartbeat_at": info.heartbeat_at,
                },
            )

    def heartbeat(self, daemon_id: str, now: float) -> None:
        with self._write() as db:
            db.execute(self._q["heartbeat"], {"id": daemon_id, "now": now})

    def unregister_daemon(self, daemon_id: str) -> None:
        with self._write() as db:
            db.execute(self._q["unregister_daemon"], {"id": daemon_id})
        with contextlib.suppress(OSError):
            (self._wake_dir / f"{daemon_id}.fifo").unlink()

    def daemons(self) -> list[DaemonInfo]:
        return [
            DaemonInfo(
                r["id"], r["host"], r["pid"], r["started_at"], r["heartbeat_at"], r["pid_start"]
            )
            for r in self._all("daemons")
        ]

    # -- operators ---------------------------------------------------------------------------
    def get(self, ref: str) -> Job:
        rows = self._all("get_job", id=ref)
        if not rows:
            rows = self._all("find_by_prefix", prefix=ref.upper())
            if len(rows) > 1:
                raise JobNotFound(ref, ambiguous=len(rows))
        if not rows:
            raise JobNotFound(ref)
        return _job(rows[0])

    def attempts(self, job_id: str) -> list[Attempt]:
        return [
            Attempt(
                r["job_id"],
                r["n"],
                r["started_at"],
                r["finished_at"],
                r["exit_code"],
                r["reason"],
                r["wall_s"],
                r["cpu_s"],
                r["max_rss_kb"],
                r["owner"],
            )
            for r in self._all("attempts", job_id=job_id)
        ]

    def list_jobs(
        self, *, state: JobState | None = None, lane: str | None = None, limit: int = 100
    ) -> list[Job]:
        rows = self._all("list_jobs", state=state.value if state else None, lane=lane, limit=limit)
        return [_job(r) for r in rows]

    def cancel(self, job_id: str, now: float) -> Job:
        with self._write() as db:
            row = db.execute(self._q["cancel_queued"], {"id": job_id, "now": now}).fetchone()
            if row is None:
                row = db.execute(self._q["request_cancel"], {"id": job_id}).fetchone()
            if row is None:
                cur = db.execute(self._q["get_job"], {"id": job_id}).fetchone()
                if cur is None:
                    raise JobNotFound(job_id)
                raise SpoolqError(f"job {job_id} is already {cur['state']}; nothing to cancel")
        return _job(row)

    def retry(self, job_id: str, now: float) -> Job:
        with self._write() as db:
            row = db.execute(self._q["retry_job"], {"id": job_id}).fetchone()
            if row is None:
                cur = db.execute(self._q["get_job"], {"id": job_id}).fetchone()
                if cur is None:
                    raise JobNotFound(job_id)
                why = "it never parsed" if cur["spec"] is None else f"it is {cur['state']}"
                raise SpoolqError(f"job {job_id} cannot be retried: {why}")
        return _job(row)

    def failed_ids(self) -> list[str]:
        return [r["id"] for r in self._all("failed_ids")]

    def set_paused(self, lane: str, paused: bool) -> None:
        with self._write() as db:
            db.execute(self._q["set_lane_paused"], {"name": lane, "paused": int(paused)})

    def lane_status(self) -> list[LaneStatus]:
        return [
            LaneStatus(
                r["name"],
                r["concurrency"],
                r["running"],
                r["queued"],
                bool(r["paused"]),
                r["oldest"],
            )
            for r in self._all("lane_status")
        ]

    def state_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobState}
        counts.update({r["state"]: r["n"] for r in self._all("state_counts")})
        return counts

    def prune(self, finished_before: float) -> list[Job]:
        with self._write() as db:
            rows = db.execute(self._q["prunable"], {"before": finished_before}).fetchall()
            for r in rows:
                db.execute(self._q["delete_attempts"], {"id": r["id"]})
                db.execute(self._q["delete_job"], {"id": r["id"]})
        return [_job(r) for r in rows]

    # -- notification --------------------------------------------------------------------------
    # Each daemon owns a FIFO under <db dir>/wake/; a control command writes one byte into
    # every FIFO there. A FIFO opened read-write never reports EOF, and a writer opening
    # with O_NONBLOCK gets ENXIO when the daemon is gone, so stale ones are cleaned up.
    def listen(self, daemon_id: str) -> FifoListener:
        self._wake_dir.mkdir(parents=True, exist_ok=True)
        return FifoListener(self._wake_dir / f"{daemon_id}.fifo")

    def notify(self, exclude: str | None = None) -> None:
        try:
            names = os.listdir(self._wake_dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".fifo") or name == f"{exclude}.fifo":
                continue
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


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script, one at a time (sqlite3 runs one per execute)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") for ln in buf.splitlines() if ln.strip()
    ):
        raise StoreError(f"migration ends with an incomplete statement: {buf.strip()[:60]!r}")


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        seq=row["seq"],
        state=JobState(row["state"]),
        lane=row["lane"],
        priority=row["priority"],
        trigger=row["trigger"],
        claimed_path=row["claimed_path"],
        log=row["log"],
        spec=JobSpec.from_json(row["spec"]) if row["spec"] else None,
        idem_key=row["idem_key"],
        attempts=row["attempts"],
        failures=row["failures"],
        retries=row["retries"],
        retry_backoff=row["retry_backoff"],
        timeout=row["timeout"],
        kill_grace=row["kill_grace"],
        on_success=row["on_success"],
        exit_code=row["exit_code"],
        reason=row["reason"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        not_before=row["not_before"],
        owner=row["owner"],
        pid=row["pid"],
        cancel_requested=bool(row["cancel_requested"]),
        pid_start=row["pid_start"],
    )
