"""The JSON shapes of the read commands, one definition for every surface: ``status``,
``jobs`` and ``show`` with ``--json``, and the web's JSON API. A job looks the same
everywhere because both build it here (``Job.to_dict`` and ``Attempt.to_dict`` underneath).
Reading the store is the caller's; rendering for people is ``display``'s and ``web``'s."""

from __future__ import annotations

import time
from typing import Any

from spoolq.config import Config
from spoolq.display import running_row
from spoolq.jobs import Attempt, Job, JobState, iso
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
        "waiting_homes": waiting_homes(store, config, now),
    }


def waiting_homes(store: Store, config: Config, now: float) -> list[dict[str, Any]]:
    """State directories with queued jobs that only their daemons may run, and no live
    daemon serving them: those jobs wait, and this says so (never silently stuck).
    ``waiting`` is the one line a person reads."""
    live = {d.home for d in store.daemons() if daemon_alive(d, now, config.stale_after)}
    known = {h.home: h for h in store.homes() if h.home not in live}
    queued = store.queued_by_home(list(known))
    out = []
    for home, (n, oldest) in sorted(queued.items()):
        if home in live:
            continue
        h = known.get(home)
        seen = iso(h.seen_at) if h is not None and h.seen_at else None
        last = f"last daemon seen {seen} on {h.host}" if h is not None and seen else "no daemon"
        out.append(
            {
                "home": home,
                "path": h.path if h is not None else None,
                "queued": n,
                "oldest_waiting_s": round(now - oldest, 3),
                "last_seen": seen,
                "last_host": h.host if h is not None and seen else None,
                "waiting": f"waiting for home {home} ({last})",
            }
        )
    return out


def waiting_for(store: Store, config: Config, now: float, jobs: list[Job]) -> dict[str, str]:
    """Per queued job of ``jobs`` whose home has no live daemon: what it waits for."""
    if not any(j.state is JobState.QUEUED and j.home for j in jobs):
        return {}
    homes = {h["home"]: h["waiting"] for h in waiting_homes(store, config, now)}
    return {j.id: homes[j.home] for j in jobs if j.state is JobState.QUEUED and j.home in homes}


def job_list(
    jobs: list[Job],
    waiting: dict[str, str] | None = None,
    ran: dict[str, tuple[str | None, str]] | None = None,
) -> list[dict[str, Any]]:
    """``spoolq jobs --json``; ``waiting`` (from ``waiting_for``) marks the jobs that wait
    for a home no live daemon serves, ``ran`` (``Store.last_attempts``) says on which host
    and by which daemon each job last ran."""
    waiting, ran = waiting or {}, ran or {}
    return [
        {
            **j.to_dict(),
            "waiting": waiting.get(j.id),
            "host": ran[j.id][0] if j.id in ran else None,
            "daemon": ran[j.id][1] if j.id in ran else None,
        }
        for j in jobs
    ]


def jobs_json(store: Store, config: Config, jobs: list[Job], now: float) -> list[dict[str, Any]]:
    """``spoolq jobs --json`` and ``GET /api/jobs`` alike: the jobs with what they wait for
    and where each last ran."""
    return job_list(
        jobs, waiting_for(store, config, now, jobs), store.last_attempts([j.id for j in jobs])
    )


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
