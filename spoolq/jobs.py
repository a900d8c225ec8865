"""The job's own vocabulary: states, the parsed trigger, the stored record."""

from __future__ import annotations

import enum
import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spoolq.statedir import archive_path


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED})


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a trigger asks for, after parsing and validation (templates already expanded).

    ``steps`` are argv lists run in order; the job fails at the first non-zero exit.
    Shell commands are already wrapped as ``/bin/sh -c CMD``.
    """

    steps: tuple[tuple[str, ...], ...]
    lane: str | None = None
    idem_key: str | None = None
    priority: int = 0
    timeout: float | None = None
    retries: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    template: str | None = None

    def to_json(self) -> str:
        # Spelled out rather than dataclasses.asdict(): this runs once per claim, and asdict
        # deep-copies (a tenth of a claim's time in a 100,000-trigger backlog).
        data = {
            "steps": self.steps,
            "lane": self.lane,
            "idem_key": self.idem_key,
            "priority": self.priority,
            "timeout": self.timeout,
            "retries": self.retries,
            "env": self.env,
            "cwd": self.cwd,
            "template": self.template,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        data["steps"] = tuple(tuple(s) for s in data["steps"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job about to be enqueued: the claimed trigger and its resolved settings."""

    id: str
    lane: str
    trigger: str  # absolute path the trigger was published under
    claimed_path: str  # where the trigger file now lives
    log: str
    spec: JobSpec | None  # None when the trigger was rejected before it parsed
    priority: int
    timeout: float | None
    retries: int
    retry_backoff: float
    kill_grace: float
    on_success: str
    created_at: float
    reason: str | None = None  # set for a job that is recorded as rejected
    home: str = ""  # identity of the state directory that claimed it; "": any daemon's
    text: str | None = None  # the trigger's content, kept in the store (any-host lanes)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    seq: int
    state: JobState
    lane: str
    priority: int
    trigger: str
    claimed_path: str
    log: str
    spec: JobSpec | None  # None for a trigger rejected before it parsed
    idem_key: str | None
    attempts: int
    failures: int
    retries: int
    retry_backoff: float
    timeout: float | None
    kill_grace: float
    on_success: str
    exit_code: int | None
    reason: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    not_before: float
    owner: str | None
    pid: int | None
    cancel_requested: bool
    pid_start: str | None = None
    home: str = ""  # the state directory whose daemons run it (its files are there); "": any

    @property
    def file_path(self) -> Path:
        """Where the trigger file is now (claimed/ while live, an archive dir when finished)."""
        return archive_path(self.claimed_path, self.state.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "lane": self.lane,
            "priority": self.priority,
            "trigger": self.trigger,
            "file": str(self.file_path),
            "attempts": self.attempts,
            "retries": self.retries,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "not_before": iso(self.not_before) if self.state is JobState.QUEUED else None,
            "log": self.log,
            "idempotency_key": self.idem_key,
            "timeout": self.timeout,
            "owner": self.owner,
            "pid": self.pid,
            "home": self.home or None,
            "steps": [list(s) for s in self.spec.steps] if self.spec else None,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: str
    n: int
    started_at: float
    finished_at: float | None
    exit_code: int | None
    reason: str | None
    wall_s: float | None
    cpu_s: float | None
    max_rss_kb: int | None
    owner: str | None  # the daemon that ran it
    host: str | None = None  # the host it ran on (None: recorded before hosts were)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "exit_code": self.exit_code,
            "reason": self.reason,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "max_rss_kb": self.max_rss_kb,
            "owner": self.owner,
            "daemon": self.owner,
            "host": self.host,
        }


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one run of a job ended, with what the kernel says it cost."""

    exit_code: int | None  # negative: killed by that signal
    reason: str | None  # None on success; "exit 3", "timeout", "cancelled", "interrupted", ...
    wall_s: float
    cpu_s: float
    max_rss_kb: int | None  # None: below the daemon's own size, so not measurable

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    pid_start: str = ""  # the kernel's start time of pid, to tell a reused pid apart
    home: str = ""  # the state directory it serves

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "home": self.home or None,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "heartbeat_at": iso(self.heartbeat_at),
        }


@dataclass(frozen=True, slots=True)
class HomeInfo:
    """A state directory that has had a daemon: where it is, and who was last seen
    serving it (kept after that daemon is gone)."""

    home: str
    path: str
    host: str
    daemon: str | None
    seen_at: float


@dataclass(frozen=True, slots=True)
class LogTail:
    """The end of a finished job's log, kept in the store for hosts that cannot read it."""

    tail: bytes
    size: int  # of the whole log
    host: str  # where the whole log is


@dataclass(frozen=True, slots=True)
class LaneStatus:
    name: str
    concurrency: int
    running: int
    queued: int
    paused: bool
    oldest_queued_at: float | None
    override: int | None = None  # set by an operator (spoolq lane), else None
    configured: int | None = None  # what the daemons' config says

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "overridden": self.override is not None,
            "configured_concurrency": self.configured,
            "running": self.running,
            "queued": self.queued,
            "paused": self.paused,
            "oldest_waiting_s": (
                round(now - self.oldest_queued_at, 3) if self.oldest_queued_at else None
            ),
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_second = [-1, ""]  # the last whole second stamp() formatted, and its text


def stamp(ts: float) -> str:
    """``iso(ts)`` for the clock's now, cheaply: the date and time to the second are made
    once a second (every event line and log note carries one)."""
    frac, whole_f = math.modf(ts)
    whole, us = int(whole_f), round(frac * 1e6)  # rounded to the microsecond, as datetime
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    if whole != _second[0]:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second[0] = whole
    return f"{_second[1]}.{us // 1000:03d}Z"
