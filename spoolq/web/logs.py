"""``GET /api/jobs/{id}/log``: a job's log file, whole, in byte ranges, or followed.

A ``Range: bytes=A-B`` header (or ``?offset=N``) gives part of it (206 with
``Content-Range``); a range past the end is clamped to it, one that starts past it is a 416.
``?follow=1`` streams from the offset on, as the job writes, until the job has ended and its
tail is sent. The file is read where the store says it is; a log on another host is not
here to read (404 saying so).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path as FilePath
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse

from spoolq.errors import JobNotFound
from spoolq.jobs import Job
from spoolq.web.context import WebContext

router = APIRouter()
CHUNK = 1 << 16
FOLLOW_POLL = 0.2  # seconds between looks at a followed log that has nothing new
STATE_POLL = 1.0  # seconds between asking the store whether a followed job has ended
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_OFFSET = 1 << 62  # larger is no file's size; it would overflow a seek


def _job(ctx: WebContext, ref: str) -> Job:
    try:
        return ctx.call(lambda s: s.get(ref))
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from None


def _size(path: FilePath, job: Job, follow: bool) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        if follow:
            return 0  # not started yet: it will appear
        raise HTTPException(
            404, f"no log yet for job {job.id} (or it is on another host)"
        ) from None


def _parse_range(header: str, size: int) -> tuple[int, int]:
    """``bytes=A-B`` -> [start, end) within a file of ``size`` bytes."""
    m = _RANGE.match(header.strip())
    if not m or m.groups() == ("", ""):
        raise HTTPException(422, f"Range {header!r}: use one range, bytes=START-END or bytes=-N")
    first, last = m.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size
    elif last != "" and int(last) < int(first):
        return 0, size  # not a valid range: ignored, the whole log (RFC 9110)
    else:
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    if start >= end:
        raise HTTPException(
            416,
            f"Range {header!r}: the log has {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def _read(path: FilePath, start: int, end: int) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0 and (chunk := fh.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


def _read_once(path: FilePath, pos: int) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(pos)
            return fh.read(CHUNK)
    except FileNotFoundError:
        return b""


async def _follow(ctx: WebContext, job: Job, path: FilePath, pos: int) -> AsyncIterator[bytes]:
    """What the job writes, from ``pos`` on, until it has ended. Inside a daemon this runs
    beside its loop: a look at the file's size every FOLLOW_POLL, the store asked about
    the job only about once a second."""
    ended = job.state.finished
    asked = time.monotonic()
    while True:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        chunk = _read_once(path, pos) if size > pos else b""  # a local file read: short
        if chunk:
            pos += len(chunk)
            yield chunk
            continue
        if ended:
            return  # ended, and the tail after that was read
        if time.monotonic() - asked >= STATE_POLL:
            asked = time.monotonic()
            now = await anyio.to_thread.run_sync(lambda: ctx.call(lambda s: s.get(job.id)))
            ended = now.state.finished
            if ended:
                continue  # one more look: the tail it wrote before it ended
        await asyncio.sleep(FOLLOW_POLL)


@router.get(
    "/jobs/{job_id}/log",
    summary="A job's log: whole, a byte range, or followed",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "The log (or, followed, as written)"},
        206: {"content": {"text/plain": {}}, "description": "The requested byte range"},
        416: {"description": "The range starts past the end of the log"},
    },
)
def get_log(
    request: Request,
    job_id: Annotated[str, Path(pattern=r"^[0-9A-Za-z]{1,26}$")],
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET, description="Start here")] = None,
    follow: Annotated[bool, Query(description="Keep streaming until the job ends")] = False,
    range_: Annotated[
        str | None,
        Header(alias="range", pattern=r"^bytes=\d*-\d*$", description="bytes=START-END"),
    ] = None,
) -> StreamingResponse:
    ctx: WebContext = request.app.state.ctx
    job = _job(ctx, job_id)
    path = FilePath(job.log)
    size = _size(path, job, follow)
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    media = "text/plain; charset=utf-8"
    if follow:
        start = offset or 0
        if range_ and size:
            start, _end = _parse_range(range_, size)
        return StreamingResponse(_follow(ctx, job, path, start), media_type=media, headers=headers)
    if range_ is None and offset is None:
        return StreamingResponse(_read(path, 0, size), media_type=media, headers=headers)
    if range_ is None:  # ?offset=N: the rest of the log from N on (empty if none yet)
        start = min(offset or 0, size)
        headers["X-Log-Size"] = str(size)
        return StreamingResponse(_read(path, start, size), media_type=media, headers=headers)
    start, end = _parse_range(range_, size)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    return StreamingResponse(_read(path, start, end), 206, media_type=media, headers=headers)
