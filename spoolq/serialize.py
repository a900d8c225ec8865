"""The JSON shapes of the read commands, one definition for every surface: ``status``,
``jobs`` and ``show`` with ``--json``, and the web's JSON API. A job looks the same
everywhere because both build it here (``Job.to_dict`` and ``Attempt.to_dict`` underneath).
Reading the store is the caller's; rendering for people is ``display``'s and ``web``'s."""

from __future__ import annotations

import time
from typing import Any

from spoolq.config import Config
from spoolq.display import running_row
from spoolq.jobs import Attempt, Job
from spoolq.procs import daemon_alive
from spoolq.progress import Progress
from spoolq.store import Store


def daemon_rows(store: Store, now: float, config: Config) -> list[dict[str, Any]]:
    return [
        {**d.to_dict(), "alive": daemon_alive(d, now, config.stale_after)} for d in store.daemons()
    ]


def status_dict(
    store: Store, config: Config, now: float | None = None, running: list[Job] | None = None
) -> dict[str, Any]:
    """``spoolq status --json``: lanes, totals per state, the daemons on this store, and the
    running jobs (``running``, when the caller has read them already)."""
    now = time.time() if now is None else now
    if running is None:  # along the running index, newest first like ``list_jobs``
        running = store.running_jobs()[::-1]
    lanes, states = store.overview()
    progress = store.progress_of([j.id for j in running])
    return {
        "lanes": [lane.to_dict(now) for lane in lanes],
        "states": states,
        "daemons": daemon_rows(store, now, config),
        "running_jobs": [
            {**running_row(j, now), "progress": progress_dict(j, progress.get(j.id))}
            for j in running
        ],
    }


def job_list(jobs: list[Job]) -> list[dict[str, Any]]:
    """``spoolq jobs --json``."""
    return [j.to_dict() for j in jobs]


def job_detail(
    job: Job, attempts: list[Attempt], progress: Progress | None = None
) -> dict[str, Any]:
    """``spoolq show --json``: the job with its progress and every attempt."""
    return {
        **job.to_dict(),
        "progress": progress_dict(job, progress),
        "attempt_history": [a.to_dict() for a in attempts],
    }


def progress_dict(job: Job, progress: Progress | None) -> dict[str, Any] | None:
    """``progress`` of a job: the latest reading of its latest attempt (``done, total,
    unit, ratio, rate, eta_s, message``), or None if that attempt reported none."""
    if progress is None or progress.attempt != job.attempts:
        return None
    return progress.to_dict()
