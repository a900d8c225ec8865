"""Human output of the read commands: rich tables, colour only on a terminal, and job data
always printed as plain text (a reason or a command is never read as markup)."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

import click

from spoolq.jobs import Attempt, Job, JobState, iso

if TYPE_CHECKING:
    from rich.console import Console
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
    lanes: list[dict[str, Any]], states: dict[str, int], daemons: list[dict[str, Any]]
) -> None:
    table = _table("lane", title="lanes")
    for col in ("concurrency", "running", "queued", "paused", "oldest waiting"):
        table.add_column(col, justify="right")
    for lane in lanes:
        wait = lane["oldest_waiting_s"]
        _row(
            table, lane["name"], lane["concurrency"], lane["running"], lane["queued"],
            "yes" if lane["paused"] else "", _age(wait) if wait is not None else "",
        )  # fmt: skip
    _out().print(table)
    print_text("  ".join(f"{k} {v}" for k, v in states.items()))
    if not daemons:
        print_text("daemon: none running on this store")
    for d in daemons:
        mark = "alive" if d["alive"] else "stale"
        print_text(
            f"daemon {d['id']} pid {d['pid']} on {d['host']} since {d['started_at']} ({mark})"
        )


def render_jobs(found: list[Job]) -> None:
    table = _table(
        "id", "state", "lane", "att", "exit", "created", "trigger", "reason", overflow="fold"
    )
    for j in found:
        _row(
            table, j.id, _state_style(j.state), j.lane, j.attempts,
            "" if j.exit_code is None else j.exit_code, iso(j.created_at) or "",
            os.path.basename(j.trigger), j.reason or "",
        )  # fmt: skip
    _out().print(table)


def render_job(data: dict[str, Any], attempts: list[Attempt]) -> None:
    for key in ("id", "state", "lane", "priority", "trigger", "file", "log", "attempts",
                "retries", "exit_code", "reason", "created_at", "started_at", "finished_at",
                "idempotency_key", "timeout", "owner", "pid"):  # fmt: skip
        if data.get(key) is not None:
            print_text(f"{key:>16}: {data[key]}")
    for step in data["steps"] or []:
        print_text(f"{'step':>16}: {shlex.join(step)}")
    if attempts:
        table = _table(
            "#", "started", "finished", "wall s", "cpu s", "peak rss", "exit", "reason",
            title="attempts",
        )  # fmt: skip
        for a in attempts:
            _row(
                table, a.n, iso(a.started_at) or "", iso(a.finished_at) or "",
                "" if a.wall_s is None else f"{a.wall_s:.3f}",
                "" if a.cpu_s is None else f"{a.cpu_s:.3f}",
                "" if a.max_rss_kb is None else f"{a.max_rss_kb / 1024:.1f} MiB",
                "" if a.exit_code is None else a.exit_code, a.reason or "",
            )  # fmt: skip
        _out().print(table)
