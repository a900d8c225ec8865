"""The human tables of `jobs` and `status`: what a job runs in one short line, the trigger's
published name, and the running jobs under their lane with their elapsed time."""

from __future__ import annotations

from typing import Any

import pytest

from spoolq.display import render_jobs, render_status, running_row, summary
from spoolq.jobs import Job, JobSpec, JobState
from spoolq.triggers import SHELL

NOW = 1_796_627_247.0


def make_job(steps: tuple[tuple[str, ...], ...] | None, **kw: Any) -> Job:
    fields: dict[str, Any] = dict(  # noqa: C408 - reads like the dataclass's fields
        id="01M98FCW5PH5BCWC4G7ZGG02BV", seq=1, state=JobState.QUEUED, lane="default",
        priority=0, trigger="/var/spool/etl/sales.trigger",
        claimed_path="/var/spool/etl/.spoolq/claimed/01M98FCW5PH5BCWC4G7ZGG02BV.trigger",
        log="/var/spool/etl/.spoolq/logs/01M98FCW5PH5BCWC4G7ZGG02BV.log",
        spec=JobSpec(steps=steps) if steps is not None else None, idem_key=None, attempts=0,
        failures=0, retries=0, retry_backoff=5.0, timeout=None, kill_grace=10.0,
        on_success="archive", exit_code=None, reason=None, created_at=NOW - 100,
        started_at=None, finished_at=None, not_before=0.0, owner=None, pid=None,
        cancel_requested=False,
    )  # fmt: skip
    fields.update(kw)
    return Job(**fields)


@pytest.mark.parametrize(
    ("steps", "template", "shown"),
    [
        (((SHELL, "-c", "echo hello"),), None, "echo hello"),
        (((SHELL, "-c", "make load\n  TABLE=sales"),), None, "make load TABLE=sales"),
        ((("python3", "-m", "etl.load", "a b.csv"),), None, "python3 -m etl.load 'a b.csv'"),
        ((("true",), ("false",), ("true",)), None, "true (+2 steps)"),
        ((("python", "-m", "load", "--table", "t1"),), "load", "load: python -m load --table t1"),
    ],
)
def test_summary_says_what_the_job_runs(
    steps: tuple[tuple[str, ...], ...], template: str | None, shown: str
) -> None:
    job = make_job(steps)
    if template:
        job = make_job(None, spec=JobSpec(steps=steps, template=template))
    assert summary(job) == shown


def test_summary_is_short_and_empty_for_a_trigger_that_never_parsed() -> None:
    long = make_job(((SHELL, "-c", "x" * 200), ("true",)))
    text = summary(long, width=40)
    assert len(text) == 40 and text.endswith("… (+1 steps)")
    assert summary(make_job(None)) == ""


def test_jobs_table_shows_the_published_name_and_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    render_jobs([make_job(((SHELL, "-c", "echo hello"),))])
    out = capsys.readouterr().out
    assert "sales.trigger" in out and "echo hello" in out and "command" in out


def test_status_lists_running_jobs_under_their_lane_with_elapsed_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = [
        make_job((("sleep", "60"),), id="J-DB-2", lane="db", state=JobState.RUNNING,
                 started_at=NOW - 5, attempts=1),
        make_job((("sleep", "600"),), id="J-WEB", lane="web", state=JobState.RUNNING,
                 started_at=NOW - 3725, attempts=1),
        make_job((("sleep", "61"),), id="J-DB-1", lane="db", state=JobState.RUNNING,
                 started_at=NOW - 125, attempts=2),
    ]  # fmt: skip
    lanes = [{"name": n, "concurrency": 2, "running": r, "queued": 0, "paused": False,
              "oldest_waiting_s": None} for n, r in (("db", 2), ("web", 1))]  # fmt: skip
    render_status(lanes, {"running": 3}, [], running, NOW)
    out = capsys.readouterr().out
    lines = [ln.strip().strip("│") for ln in out.splitlines() if "J-" in ln]
    rows = [[c.strip() for c in ln.split("│")] for ln in lines]
    assert [r[:3] for r in rows] == [
        ["db", "J-DB-1", "2m05s"],
        ["", "J-DB-2", "5s"],
        ["web", "J-WEB", "1h02m"],
    ]  # fmt: skip  (the lane named once, above its jobs; the longest-running first)
    assert rows[0][3:] == ["2", "sales.trigger", "sleep 61"]


def test_running_row_adds_to_the_job_json() -> None:
    job = make_job((("sleep", "60"),), state=JobState.RUNNING, started_at=NOW - 2.5)
    row = running_row(job, NOW)
    assert row == {**job.to_dict(), "elapsed_s": 2.5, "command": "sleep 60"}
