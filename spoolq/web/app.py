"""The web app: the page, the JSON API, ``/metrics`` and ``/healthz`` in one ASGI app.

``create_app`` wires the parts together; it is the same app in ``spoolq web`` and inside
``spoolq run --http``. Every error answers JSON (API) or a short page with the reason and a
4xx/5xx status; a traceback never reaches the client.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from spoolq import __version__
from spoolq.store import Store
from spoolq.web import api, pages
from spoolq.web.context import WebContext
from spoolq.web.metrics import DaemonMetrics, StoreCollector
from spoolq.web.models import HealthOut


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(
        title="spoolq",
        version=__version__,
        description="The queue's status, jobs, logs and controls. Every /api route needs the "
        "token: 'Authorization: Bearer TOKEN'.",
        openapi_url=None,  # served below, behind the token like the rest of /api
        docs_url=None,  # the interactive docs load scripts from a CDN: not here
        redoc_url=None,
    )
    app.state.ctx = ctx
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(ctx))
    if ctx.in_daemon:
        ctx.log.observers.append(DaemonMetrics(registry).observe)

    static = importlib.resources.files("spoolq.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.get("/api/openapi.json", include_in_schema=False, dependencies=[Depends(api.authorized)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(
        "/healthz",
        response_model=HealthOut,
        summary="200 when the store answers (and, in a daemon, its watcher is alive)",
        responses={503: {"model": HealthOut, "description": "Not healthy"}},
    )
    def healthz() -> JSONResponse:
        def probe(store: Store) -> str | None:
            problem = store.verify()
            if problem is None:
                store.daemons()  # a query: the store answers
            return problem

        try:
            problem = ctx.call(probe)
        except HTTPException as exc:
            problem = str(exc.detail)
        watcher = ctx.healthy() if ctx.in_daemon else None
        ok = problem is None and watcher is not False
        body = HealthOut(ok=ok, store=problem or "ok", watcher=watcher)
        return JSONResponse(body.model_dump(exclude_none=True), 200 if ok else 503)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(pages.NotLoggedIn)
    def _login(request: Request, exc: pages.NotLoggedIn) -> Response:
        if request.url.path.startswith("/ui/"):
            return JSONResponse({"detail": "log in first"}, 401)
        return pages.login_form(request, back_to=exc.path)

    @app.exception_handler(RequestValidationError)
    def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _explain(exc.errors())}, 422)

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if request.url.path.startswith(("/api/", "/ui/")) or request.url.path in _PLAIN:
            return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=headers)
        return pages.error_page(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    def _crash(request: Request, exc: Exception) -> JSONResponse:
        ctx.log.error("web_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        return JSONResponse({"detail": "internal error; the server's log has the details"}, 500)

    return app


_PLAIN = ("/healthz", "/metrics")


def _explain(errors: Any) -> str:
    """FastAPI's validation errors as one sentence per bad parameter."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])!r}" if len(loc) > 1 else ".".join(loc)
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
