"""The types of the JSON API, from which the OpenAPI document is made.

The data itself is built by ``spoolq.serialize`` (the same as ``--json``); these models only
describe it. They allow extra keys, so a field added to the shared serializer shows in the
API at once instead of being filtered out.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from spoolq.jobs import JobState


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AttemptOut(_Open):
    n: int
    started_at: str
    finished_at: str | None
    exit_code: int | None
    reason: str | None
    wall_s: float | None
    cpu_s: float | None
    max_rss_kb: int | None
    owner: str | None


class JobOut(_Open):
    id: str
    state: JobState
    lane: str
    priority: int
    trigger: str
    attempts: int
    retries: int
    exit_code: int | None
    reason: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    log: str
    steps: list[list[str]] | None


class JobDetailOut(JobOut):
    attempt_history: list[AttemptOut]


class LaneOut(_Open):
    name: str
    concurrency: int
    running: int
    queued: int
    paused: bool
    oldest_waiting_s: float | None


class DaemonOut(_Open):
    id: str
    host: str
    pid: int
    started_at: str
    heartbeat_at: str
    alive: bool


class StatusOut(_Open):
    lanes: list[LaneOut]
    states: dict[str, int]
    daemons: list[DaemonOut]


class HealthOut(BaseModel):
    ok: bool
    store: str
    watcher: bool | None = None


class ErrorOut(BaseModel):
    """Every 4xx and 5xx answer: what went wrong, in words."""

    detail: str


ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (400, "Bad input (a malformed Range header)"),
        (401, "No valid token"),
        (404, "No such job or lane"),
        (409, "Not possible in the job's state"),
        (422, "Invalid parameter"),
        (503, "The store is not answering"),
    )
}
