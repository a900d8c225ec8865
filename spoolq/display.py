"""Human output of the read commands: rich tables, colour only on a terminal, and job data
always printed as plain text (a reason or a command is never read as markup)."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from spoolq.jobs import Attempt, Job, JobState, iso
from spoolq.progress import Progress
from spoolq.triggers import SHELL

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Bar
    from rich.progress import TaskID
    from rich.table import Table
    from rich.text import Text


# rich is imported only for human output: --json, submit and the control commands start
# faster without it (scripts call them in loops).
@functools.cache
def _out() -> Console:
    from rich.console import Console

    # Piped output keeps whole lines (ids, paths) instead of wrapping at 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def print_text(text: str) -> None:
    """Job data (commands, reasons, paths) is printed as is, never read as rich markup."""
    _out().print(text, markup=False)


def _table(*columns: str, title: str | None = None, **col: Any) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, **col)
    return table


def _row(table: Table, *cells: object) -> None:
    """Add a row of plain text (a Text cell is not parsed as markup)."""
    from rich.text import Text

    table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in cells))


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def summary(job: Job, width: int = 60) -> str:
    """What a job runs, on one short line: ``template: argv`` for a job template, the shell
    command itself for a shell step, else the argv; ``(+N steps)`` when there are more."""
    if job.spec is None or not job.spec.steps:
        return ""
    first = job.spec.steps[0]
    text = first[2] if len(first) == 3 and first[:2] == (SHELL, "-c") else shlex.join(first)
    text = " ".join(text.split())  # a multi-line shell command on one line
    if job.spec.template:
        text = f"{job.spec.template}: {text}"
    more = f" (+{len(job.spec.steps) - 1} steps)" if len(job.spec.steps) > 1 else ""
    if len(text) + len(more) > width:
        text = text[: max(0, width - len(more) - 1)] + "…"
    return text + more


def running_row(job: Job, now: float) -> dict[str, Any]:
    """A running job as ``status --json`` lists it: the job's own JSON, plus how long its
    attempt has run and the one-line summary of what it runs."""
    started = job.started_at if job.started_at is not None else now
    return {**job.to_dict(), "elapsed_s": round(now - started, 3), "command": summary(job)}


def _state_style(state: JobState) -> Text:
    from rich.text import Text

    colour = {
        JobState.SUCCEEDED: "green",
        JobState.FAILED: "red",
        JobState.RUNNING: "cyan",
        JobState.REJECTED: "magenta",
        JobState.CANCELLED: "yellow",
    }.get(state)
    return Text(state.value, style=colour or "")


def render_status(
    lanes: list[dict[str, Any]],
    states: dict[str, int],
    daemons: list[dict[str, Any]],
    running: Sequence[Job] = (),
    now: float = 0.0,
    waiting: Sequence[dict[str, Any]] = (),
    progress: Mapping[str, str] | None = None,
) -> None:
    table = _table("lane", title="lanes")
    for col in ("concurrency", "running", "queued", "paused", "oldest waiting"):
        table.add_column(col, justify="right")
    for lane in lanes:
        wait = lane["oldest_waiting_s"]
        limit = lane["concurrency"]
        if lane.get("overridden"):
            limit = f"{limit} (overridden)"
        _row(
            table, lane["name"], limit, lane["running"], lane["queued"],
            "yes" if lane["paused"] else "", _age(wait) if wait is not None else "",
        )  # fmt: skip
    _out().print(table)
    for home in waiting:
        print_text(f"{home['queued']} job(s) {home['waiting']}, at {home['path'] or '?'}")
    if running:
        _render_running(running, now, progress or {})
    print_text("  ".join(f"{k} {v}" for k, v in states.items()))
    if not daemons:
        print_text("daemon: none running on this store")
    for d in daemons:
        mark = "alive" if d["alive"] else "stale"
        print_text(
            f"daemon {d['id']} pid {d['pid']} on {d['host']} since {d['started_at']} ({mark})"
        )


def _render_running(running: Sequence[Job], now: float, progress: Mapping[str, str]) -> None:
    """The running jobs under their lane (the lane named once), longest-running first,
    with their progress where they report it."""
    table = _table("lane", "job", "elapsed", "att", "trigger", "command", title="running")
    if progress:
        table.add_column("progress")
    ordered = sorted(running, key=lambda j: (j.lane, j.started_at or now))
    for i, j in enumerate(ordered):
        same_lane = i > 0 and ordered[i - 1].lane == j.lane
        started = j.started_at if j.started_at is not None else now
        _row(
            table, "" if same_lane else j.lane, j.id, _elapsed(now - started), j.attempts,
            os.path.basename(j.trigger), summary(j, 50),
            *([progress.get(j.id, "")] if progress else []),
        )  # fmt: skip
    _out().print(table)


def render_jobs(found: list[Job], waiting: dict[str, str] | None = None) -> None:
    """Newest first: the trigger's name as it was published and what the job runs; a
    queued job whose home has no live daemon says so in its reason."""
    waiting = waiting or {}
    table = _table("id", "state", "lane", "att", "exit", "created", overflow="fold")
    table.add_column("trigger", overflow="fold")
    table.add_column("command", overflow="ellipsis", no_wrap=True, max_width=60)
    table.add_column("reason", overflow="fold")
    for j in found:
        _row(
            table, j.id, _state_style(j.state), j.lane, j.attempts,
            "" if j.exit_code is None else j.exit_code, iso(j.created_at) or "",
            os.path.basename(j.trigger), summary(j), waiting.get(j.id) or j.reason or "",
        )  # fmt: skip
    _out().print(table)


def render_job(data: dict[str, Any], attempts: list[Attempt]) -> None:
    for key in ("id", "state", "lane", "priority", "trigger", "file", "log", "attempts",
                "retries", "exit_code", "reason", "created_at", "started_at", "finished_at",
                "idempotency_key", "timeout", "owner", "pid", "home", "progress"):  # fmt: skip
        if data.get(key) is not None:
            print_text(f"{key:>16}: {data[key]}")
    for step in data["steps"] or []:
        print_text(f"{'step':>16}: {shlex.join(step)}")
    if attempts:
        table = _table(
            "#", "started", "finished", "wall s", "cpu s", "peak rss", "exit", "reason",
            "host", title="attempts",
        )  # fmt: skip
        for a in attempts:
            _row(
                table, a.n, iso(a.started_at) or "", iso(a.finished_at) or "",
                "" if a.wall_s is None else f"{a.wall_s:.3f}",
                "" if a.cpu_s is None else f"{a.cpu_s:.3f}",
                "" if a.max_rss_kb is None else f"{a.max_rss_kb / 1024:.1f} MiB",
                "" if a.exit_code is None else a.exit_code, a.reason or "", a.host or "",
            )  # fmt: skip
        _out().print(table)


def progress_bar(console: Console | None = None) -> Bar:
    """A bar per job, as ``show -f`` and the demo draw them: what is running (the task's
    description), the bar, the reading in words (done/total, rate, ETA), the time elapsed.
    Not started: ``show -f`` runs it, the demo renders it inside its own live view."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    return Bar(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[text]}"),
        TimeElapsedColumn(), console=console or _out(), transient=False,
    )  # fmt: skip


def show_reading(bar: Bar, task: TaskID, reading: Progress | None, idle: str = "") -> None:
    """Draw a stored progress reading on a task of ``progress_bar`` (``idle`` where there
    is none: the job reports nothing, or nothing yet)."""
    if reading is not None:
        total = reading.total if reading.total else None
        bar.update(task, completed=reading.done, total=total, text=reading.describe())
    else:
        bar.update(task, text=idle)


def follow_progress(read: Callable[[], tuple[Job, Progress | None]], every: float = 1.0) -> None:
    """``show -f``: a progress bar (elapsed time only for a job that reports nothing),
    redrawn from the store every ``every`` seconds until the job ends; then its outcome."""
    import time

    job, reading = read()
    bar = progress_bar()
    with bar:
        task = bar.add_task(job.id, total=None, text="")
        while not job.state.finished:
            show_reading(bar, task, reading, job.state.value)
            time.sleep(every)
            job, reading = read()
        if reading is not None and reading.total:
            show_reading(bar, task, reading)
    why = f": {job.reason}" if job.reason and job.state is not JobState.SUCCEEDED else ""
    print_text(f"{job.id} {job.state.value}{why}")
