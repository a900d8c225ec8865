"""What an ended attempt becomes, as a table: the rules alone, no process, no store."""

from __future__ import annotations

import pytest

from spoolq.jobs import AttemptResult, Job, JobState
from spoolq.lifecycle import BACKOFF_CAP, Backoff, Outcome, Verdict, decide, retry_delay

NOW = 1_800_000_000.0
OK = AttemptResult(exit_code=0, reason=None, wall_s=1.0, cpu_s=0.1, max_rss_kb=100)
EXIT3 = AttemptResult(exit_code=3, reason="exit 3", wall_s=1.0, cpu_s=0.1, max_rss_kb=100)
TERMED = AttemptResult(exit_code=-15, reason="timeout", wall_s=1.0, cpu_s=0.1, max_rss_kb=100)


def job(failures: int = 0, retries: int = 0, backoff: float = 5.0) -> Job:
    return Job(
        id="01JOB0000000000000000000000",
        seq=1,
        lane="default",
        trigger="/spool/x.trigger",
        claimed_path="/spool/.spoolq/claimed/x",
        log="/spool/.spoolq/logs/x.log",
        spec=None,
        priority=0,
        timeout=None,
        retries=retries,
        retry_backoff=backoff,
        kill_grace=10.0,
        on_success="archive",
        idem_key=None,
        state=JobState.RUNNING,
        attempts=failures + 1,
        failures=failures,
        exit_code=None,
        reason=None,
        created_at=NOW - 100,
        started_at=NOW - 1,
        finished_at=None,
        not_before=0.0,
        owner="d1",
        pid=None,
        cancel_requested=False,
    )


def middle() -> float:
    return 0.5  # no jitter: the delay is exactly base * 2**(failures)


S, C, Q, R, F = (Verdict.SUCCEEDED, Verdict.CANCELLED, Verdict.REQUEUED, Verdict.RETRY,
                 Verdict.FAILED)  # fmt: skip


@pytest.mark.parametrize(
    ("result", "stop", "cancel", "failures", "retries", "verdict", "after"),
    [
        # an attempt that succeeded stays succeeded, even if a cancel came too late
        (OK, None, False, 0, 0, S, None),
        (OK, None, True, 0, 3, S, None),
        # the operator's cancel stopped it
        (TERMED, "cancelled", False, 0, 3, C, None),
        # a cancel that arrived while it was failing: no retry, whatever is left
        (EXIT3, None, True, 0, 3, C, None),
        (TERMED, "timeout", True, 0, 3, C, None),
        # interrupted (shutdown, or its daemon died): run again now, no retry used
        (TERMED, "shutdown", False, 0, 0, Q, 0.0),
        (None, "interrupted", False, 2, 2, Q, 0.0),
        (None, "interrupted", True, 0, 0, C, None),
        # failures: retry while retries are left, each time twice as late
        (EXIT3, None, False, 0, 2, R, 5.0),
        (EXIT3, None, False, 1, 2, R, 10.0),
        (TERMED, "timeout", False, 1, 3, R, 10.0),
        (EXIT3, None, False, 2, 2, F, None),
        (TERMED, "timeout", False, 0, 0, F, None),
    ],
)
def test_decide(
    result: AttemptResult | None,
    stop: str | None,
    cancel: bool,
    failures: int,
    retries: int,
    verdict: Verdict,
    after: float | None,
) -> None:
    out = decide(job(failures, retries), result, stop, cancel, NOW, middle)
    assert out.verdict is verdict
    assert out.not_before == (None if after is None else NOW + after)


def test_the_cancel_flag_is_read_only_when_it_can_change_the_outcome() -> None:
    asked: list[bool] = []

    def cancel_requested() -> bool:
        asked.append(True)
        return True

    assert decide(job(), OK, None, cancel_requested, NOW).verdict is Verdict.SUCCEEDED
    assert not asked, "a success must not cost a read of the cancel flag"
    assert decide(job(0, 3), EXIT3, None, cancel_requested, NOW).verdict is Verdict.CANCELLED
    assert asked


def test_states_after_each_verdict() -> None:
    assert Outcome(Verdict.RETRY, NOW).state is JobState.QUEUED
    assert Outcome(Verdict.REQUEUED, NOW).state is JobState.QUEUED
    assert Outcome(Verdict.CANCELLED).state is JobState.CANCELLED


def test_retry_delay_doubles_with_jitter_and_is_capped() -> None:
    assert retry_delay(1, 5.0, middle) == 5.0
    assert retry_delay(3, 5.0, middle) == 20.0
    assert retry_delay(1, 5.0, lambda: 0.0) == pytest.approx(4.0)  # -20 %
    assert retry_delay(1, 5.0, lambda: 1.0) == pytest.approx(6.0)  # +20 %
    assert retry_delay(10_000, 5.0, lambda: 1.0) == BACKOFF_CAP


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert not b.backing_off
    assert [b.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.backing_off
    b.reset()
    assert b.failed() == 0.5
