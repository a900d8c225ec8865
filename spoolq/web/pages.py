"""The status page: HTML rendered on the server from the same store reads as the API.

``/`` shows the lanes, the running jobs and the recent ones (filterable by state and lane);
``/jobs/{id}`` one job with its attempts and its log. A small script (``static/spoolq.js``)
fetches the live part of the page again twice a second and swaps it in, follows the log by
byte offset, and sends the buttons' POSTs to the JSON API. No build step, nothing loaded from
elsewhere. Without the token the page answers 401 with the login form; logging in sets an
HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from spoolq.config import LANE_NAME
from spoolq.display import summary
from spoolq.errors import JobNotFound
from spoolq.jobs import Job, JobState, iso
from spoolq.serialize import status_dict
from spoolq.web.auth import COOKIE, presented, valid
from spoolq.web.context import WebContext

router = APIRouter(include_in_schema=False)
RECENT = 50
_env = Environment(
    loader=PackageLoader("spoolq.web", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


_env.globals.update(summary=summary, age=age, iso=iso)


def _render(name: str, http_status: int = 200, **data: Any) -> HTMLResponse:
    html = _env.get_template(name).render(**data)
    return HTMLResponse(html, http_status, headers={"Cache-Control": "no-store"})


def error_page(code: int, message: str) -> HTMLResponse:
    return _render("error.html", code, title=str(code), code=code, message=message, where="")


def _where(ctx: WebContext) -> str:
    return f"{ctx.store.name} store · {socket.gethostname()}"


class NotLoggedIn(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


def logged_in(request: Request) -> WebContext:
    ctx = _ctx(request)
    if not valid(ctx.token, presented(request)[0]):
        raise NotLoggedIn(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return ctx


Page = Annotated[WebContext, Depends(logged_in)]


def login_form(
    request: Request, error: str = "", http_status: int = 401, back_to: str | None = None
) -> HTMLResponse:
    nxt = back_to or request.query_params.get("next") or "/"
    return _render(
        "login.html", http_status, title="Log in", error=error, next=_safe_next(nxt), where=""
    )


def _safe_next(nxt: str) -> str:
    """Only a path on this server (never ``//host`` or a URL) to go to after logging in."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return login_form(request, http_status=200)


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = _ctx(request)
    body = (await request.body())[:4096].decode("utf-8", "replace")
    form = urllib.parse.parse_qs(body)
    token = (form.get("token") or [""])[0].strip()
    nxt = _safe_next((form.get("next") or ["/"])[0])
    client = request.client.host if request.client else "?"
    if not valid(ctx.token, token):
        ctx.log.warn("web_login_refused", client=client)
        return login_form(
            request, "That is not the token. It is in the server's token_file.", back_to=nxt
        )
    ctx.log.emit("web_login", client=client)
    resp = RedirectResponse(nxt, 303)
    resp.set_cookie(
        COOKIE,
        ctx.token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return resp


@router.post("/logout")
def logout() -> Response:
    resp = RedirectResponse("/login", 303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


def _filters(state: str | None, lane: str | None) -> tuple[JobState | None, str | None]:
    try:
        st = JobState(state) if state else None
    except ValueError:
        raise HTTPException(
            400, f"state={state!r}: use one of {[s.value for s in JobState]}"
        ) from None
    if lane and not _lane_ok(lane):
        raise HTTPException(400, f"lane={lane!r} is not a lane name")
    return st, lane or None


def _lane_ok(lane: str) -> bool:
    return re.match(LANE_NAME, lane) is not None


def _overview(ctx: WebContext, state: str | None, lane: str | None) -> dict[str, Any]:
    st, ln = _filters(state, lane)

    def read(store: Any) -> dict[str, Any]:
        running = store.running_jobs()
        return {
            "status": status_dict(store, ctx.config, None, running[::-1]),
            "running": running,
            "progress": _current(running, store.progress_of([j.id for j in running])),
            "recent": store.list_jobs_page(state=st, lane=ln, limit=RECENT),
        }

    data = ctx.call(read)
    data.update(now=time.time(), state=state or "", lane=lane or "", states=list(JobState))
    return data


@router.get("/")
def index(
    ctx: Page,
    state: Annotated[str | None, Query()] = None,
    lane: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    data = _overview(ctx, state, lane)
    query = urllib.parse.urlencode({k: v for k, v in (("state", state), ("lane", lane)) if v})
    return _render("index.html", title="Queue", where=_where(ctx), query=query, **data)


@router.get("/ui/overview")
def overview(
    ctx: Page,
    state: Annotated[str | None, Query()] = None,
    lane: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    return _render("overview.html", **_overview(ctx, state, lane))


def _current(jobs: list[Job], readings: dict[str, Any]) -> dict[str, Any]:
    """The readings of the jobs' running attempts (an earlier attempt's is not theirs)."""
    return {
        j.id: r
        for j in jobs
        if j.state is JobState.RUNNING and (r := readings.get(j.id)) and r.attempt == j.attempts
    }


def _job_data(ctx: WebContext, job_id: str) -> dict[str, Any]:
    if not job_id.isalnum() or len(job_id) > 26:
        raise HTTPException(404, f"no job {job_id!r}")
    try:
        job = ctx.call(lambda s: s.get(job_id))
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    attempts = ctx.call(lambda s: s.attempts(job.id))
    progress = _current([job], ctx.call(lambda s: s.progress_of([job.id])))
    return {"job": job, "attempts": attempts, "now": time.time(), "progress": progress}


@router.get("/jobs/{job_id}")
def job_page(ctx: Page, job_id: str) -> HTMLResponse:
    data = _job_data(ctx, job_id)
    return _render("job.html", title=f"Job {data['job'].id}", where=_where(ctx), **data)


@router.get("/ui/jobs/{job_id}")
def job_live(ctx: Page, job_id: str) -> HTMLResponse:
    return _render("job_live.html", **_job_data(ctx, job_id))
