"""The JSON API under ``/api``: typed routes over the store's verbs and the shared
serializer, so a job here is what ``spoolq show --json`` prints.

Mutations use the verbs the CLI uses, put the trigger file where the new state says (when
it lives on this host), wake the daemons (``store.notify``), and are logged with who asked
and from where. A job or lane that does not exist is a 404 naming it; an action the job's
state does not allow is a 409 saying why.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from spoolq.config import LANE_NAME
from spoolq.errors import JobNotFound, SpoolqError
from spoolq.jobs import Job, JobState
from spoolq.serialize import job_detail, jobs_json, status_dict
from spoolq.statedir import StateDir
from spoolq.store import Store
from spoolq.web.auth import presented, valid
from spoolq.web.context import WebContext
from spoolq.web.logs import router as log_router
from spoolq.web.models import ERRORS, JobDetailOut, JobOut, LaneOut, StatusOut

# A job id or a unique prefix of one (ULID letters): nothing that could name a path.
JOB_ID = r"^[0-9A-Za-z]{1,26}$"
JobId = Annotated[str, Path(pattern=JOB_ID, description="A job id, or a unique prefix of one")]
Lane = Annotated[str, Path(pattern=LANE_NAME, description="A lane name")]


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


Ctx = Annotated[WebContext, Depends(context)]


def authorized(request: Request, ctx: Ctx) -> str:
    """The way the request proved it holds the token (``bearer`` or ``cookie``), else 401."""
    given, via = presented(request)
    if not valid(ctx.token, given):
        raise HTTPException(
            401,
            "a valid token is needed: send 'Authorization: Bearer TOKEN' (the token is in "
            "the file the server logged as token_file)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return via


Via = Annotated[str, Depends(authorized)]

router = APIRouter(prefix="/api", responses=ERRORS, dependencies=[Depends(authorized)])
router.include_router(log_router)


def find_job(ctx: WebContext, ref: str) -> Job:
    try:
        return ctx.call(lambda s: s.get(ref))
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/status", response_model=StatusOut, summary="Lanes, totals per state, daemons")
def get_status(ctx: Ctx) -> dict[str, Any]:
    return ctx.call(lambda s: status_dict(s, ctx.config))


@router.get("/jobs", response_model=list[JobOut], summary="Jobs, newest first")
def get_jobs(
    ctx: Ctx,
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    lane: Annotated[str | None, Query(pattern=LANE_NAME, description="Only this lane")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 100,
    before: Annotated[
        str | None,
        Query(pattern=r"^[0-9A-Za-z]{26}$", description="Jobs older than this job id (paging)"),
    ] = None,
) -> list[dict[str, Any]]:
    def read(store: Store) -> list[dict[str, Any]]:
        found = store.list_jobs_page(state=state, lane=lane, limit=limit, before=before)
        return jobs_json(store, ctx.config, found, time.time())

    try:
        return ctx.call(read)
    except JobNotFound:
        raise HTTPException(404, f"before={before}: no job {before!r} in this store") from None


@router.get("/jobs/{job_id}", response_model=JobDetailOut, summary="One job and its attempts")
def get_job(ctx: Ctx, job_id: JobId) -> dict[str, Any]:
    job = find_job(ctx, job_id)
    attempts = ctx.call(lambda s: s.attempts(job.id))
    progress = ctx.call(lambda s: s.progress_of([job.id])).get(job.id)
    return job_detail(job, attempts, progress)


def _mutate(ctx: WebContext, action: Any) -> Any:
    """Run a control verb, then wake the daemons (even after an error: as the CLI does)."""

    def run(store: Store) -> Any:
        try:
            return action(store)
        finally:
            store.notify()

    return ctx.call(run)


@router.post("/jobs/{job_id}/retry", response_model=JobOut, summary="Queue a finished job again")
def retry_job(ctx: Ctx, via: Via, request: Request, job_id: JobId) -> dict[str, Any]:
    job = find_job(ctx, job_id)
    if not job.state.finished:
        raise HTTPException(409, f"job {job.id} is {job.state.value}: retry it once it has ended")
    try:
        new = _mutate(ctx, lambda s: s.retry(job.id, time.time()))
    except SpoolqError as exc:
        raise HTTPException(409, str(exc)) from None
    StateDir(ctx.state_root).place(new.claimed_path, new.state.value)
    ctx.audit(request, "retry", via, job=job.id, lane=job.lane)
    return new.to_dict()  # type: ignore[no-any-return]


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job")
def cancel_job(ctx: Ctx, via: Via, request: Request, job_id: JobId) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one is terminated by its daemon (the
    answer still says running, with the cancel requested)."""
    job = find_job(ctx, job_id)
    if job.state.finished:
        raise HTTPException(409, f"job {job.id} is already {job.state.value}; nothing to cancel")
    try:
        new = _mutate(ctx, lambda s: s.cancel(job.id, time.time()))
    except SpoolqError as exc:
        raise HTTPException(409, str(exc)) from None
    if new.state is JobState.CANCELLED:
        StateDir(ctx.state_root).place(new.claimed_path, new.state.value)
    ctx.audit(request, "cancel", via, job=job.id, lane=job.lane)
    return new.to_dict()  # type: ignore[no-any-return]


def _set_paused(ctx: WebContext, request: Request, via: str, lane: str, paused: bool) -> Any:
    def run(store: Store) -> Any:
        if lane not in {ln.name for ln in store.overview()[0]} and lane not in ctx.config.lanes:
            return None
        store.set_paused(lane, paused)
        store.notify()
        return next(ln for ln in store.overview()[0] if ln.name == lane)

    found = ctx.call(run)
    if found is None:
        raise HTTPException(404, f"no lane {lane!r}: no config or job names it")
    ctx.audit(request, "pause" if paused else "resume", via, lane=lane)
    return found.to_dict(time.time())


@router.post("/lanes/{lane}/pause", response_model=LaneOut, summary="Start nothing in a lane")
def pause_lane(ctx: Ctx, via: Via, request: Request, lane: Lane) -> dict[str, Any]:
    return _set_paused(ctx, request, via, lane, True)  # type: ignore[no-any-return]


@router.post("/lanes/{lane}/resume", response_model=LaneOut, summary="Start jobs in a lane again")
def resume_lane(ctx: Ctx, via: Via, request: Request, lane: Lane) -> dict[str, Any]:
    return _set_paused(ctx, request, via, lane, False)  # type: ignore[no-any-return]
