"""The demo's failure detail: each attempt labelled, with the last lines it wrote, shown
inline (the workspace, and so the log, is gone when the demo ends)."""

from __future__ import annotations

from spoolq.demo import attempt_tails, failure_lines
from spoolq.jobs import Attempt, Job, JobSpec, JobState

LOG = """\
--- spoolq 2026-12-07T14:44:17.719Z job=J1 attempt=1 step=1/1 cwd=/ws/spool: python -m load
load of /ws/staging/orders_w0_broken.csv into orders_w0_broken failed:
  Invalid Input Error: CSV Error on Line: 3
  Original Line: 1,2,SKU-1
  Invalid unicode (byte sequence mismatch) detected.
--- spoolq 2026-12-07T14:44:17.730Z attempt 1 ended: exit 1 (wall 0.4s)
--- spoolq 2026-12-07T14:44:18.300Z job=J1 attempt=2 step=1/1 cwd=/ws/spool: python -m load
only line of the second try

--- spoolq 2026-12-07T14:44:18.700Z attempt 2 ended: exit 1 (wall 0.4s)
"""


def test_attempt_tails_splits_the_log_by_attempt_and_keeps_the_last_lines() -> None:
    tails = attempt_tails(LOG, lines=3)
    assert tails[1] == [
        "  Invalid Input Error: CSV Error on Line: 3",
        "  Original Line: 1,2,SKU-1",
        "  Invalid unicode (byte sequence mismatch) detected.",
    ]
    assert tails[2] == ["only line of the second try"]
    assert attempt_tails("output of a job without notes\n") == {
        0: ["output of a job without notes"]
    }


def _job() -> Job:
    argv = ("python", "-m", "load", "--table", "orders_w0_broken", "/ws/x.csv")
    return Job(
        id="J1", seq=1, state=JobState.FAILED, lane="warehouse", priority=0,
        trigger="/ws/spool/J1.trigger", claimed_path="/ws/state/claimed/J1.trigger",
        log="/ws/state/logs/J1.log", spec=JobSpec(steps=(argv,), template="load"),
        idem_key=None, attempts=2, failures=2, retries=1, retry_backoff=0.5, timeout=None,
        kill_grace=10.0, on_success="archive", exit_code=1, reason="exit 1", created_at=0.0,
        started_at=1.0, finished_at=2.0, not_before=0.0, owner=None, pid=None,
        cancel_requested=False,
    )  # fmt: skip


def _attempt(n: int) -> Attempt:
    return Attempt("J1", n, 1.0, 2.0, 1, "exit 1", 0.4, 0.3, 40_000, None)


def test_failure_lines_label_each_attempt_and_point_to_keep() -> None:
    lines = failure_lines(_job(), [_attempt(1), _attempt(2)], LOG, keep=False)
    text = "\n".join(lines)
    assert lines[0].startswith("failed: orders_w0_broken after 2 attempts (exit 1)")
    assert "  attempt 1: exit 1" in lines and "  attempt 2: exit 1" in lines
    assert lines.index("  attempt 1: exit 1") < lines.index("  attempt 2: exit 1")
    assert "    | load of /ws/staging/orders_w0_broken.csv into orders_w0_broken failed:" in lines
    assert "    | only line of the second try" in lines
    assert "spoolq demo --keep" in lines[-1] and "/ws/state/logs/J1.log" in lines[-1]
    assert "--- spoolq" not in text  # spoolq's own notes are not the job's output
    kept = failure_lines(_job(), [_attempt(1)], LOG, keep=True)
    assert "--keep" not in kept[-1] and "kept" in kept[-1]
