"""What becomes of a job when an attempt ends: the rules, with no processes and no store.

Owns ``decide()`` (succeeded, cancelled, re-queued, retry at a time, failed), the retry
back-off, and the one place where a cancel that arrives during an attempt overrides a
retry. The store applies an outcome inside the transaction that closes the attempt (it
supplies whether a cancel was requested, read in that same transaction); the daemon only
reports how the attempt ended.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from spoolq.jobs import AttemptResult, Job, JobState

BACKOFF_CAP = 3600.0
CANCELLED_REASON = "cancelled by operator"


class Verdict(enum.Enum):
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"  # the attempt was interrupted (shutdown, dead daemon): run again now
    RETRY = "retry"  # failed with retries left: run again at ``not_before``
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    not_before: float | None = None  # RETRY and REQUEUED: when the job may run again

    @property
    def state(self) -> JobState:
        """The job's state once the outcome is applied."""
        return _STATE[self.verdict]


_STATE = {
    Verdict.SUCCEEDED: JobState.SUCCEEDED,
    Verdict.CANCELLED: JobState.CANCELLED,
    Verdict.REQUEUED: JobState.QUEUED,
    Verdict.RETRY: JobState.QUEUED,
    Verdict.FAILED: JobState.FAILED,
}

# Why an attempt was stopped from outside, when it was (RunningJob.stop_reason, or
# "interrupted" for an attempt whose daemon died).
STOPPED_FOR_SHUTDOWN = "shutdown"
STOPPED_BY_CANCEL = "cancelled"
INTERRUPTED = "interrupted"


def decide(
    job: Job,
    result: AttemptResult | None,
    stop_reason: str | None,
    cancel_requested: bool | Callable[[], bool],
    now: float,
    rng: Callable[[], float] = random.random,
) -> Outcome:
    """The outcome of the attempt ``job`` was running.

    ``result`` is None for an attempt that never reported (its daemon died).
    ``cancel_requested`` is whether an operator asked to cancel the job; a callable is
    asked only when the answer matters (a store reads it only for the failures).
    """
    if result is not None and result.ok:
        return Outcome(Verdict.SUCCEEDED)  # it finished: a late cancel changes nothing
    if stop_reason == STOPPED_BY_CANCEL:
        return Outcome(Verdict.CANCELLED)
    asked = cancel_requested() if callable(cancel_requested) else cancel_requested
    if asked:
        # A cancel that arrived while this attempt was failing or being interrupted: the
        # job does not run again, whatever retries it has left.
        return Outcome(Verdict.CANCELLED)
    if result is None or stop_reason in (STOPPED_FOR_SHUTDOWN, INTERRUPTED):
        return Outcome(Verdict.REQUEUED, not_before=now)  # not the job's fault: no retry used
    if job.failures < job.retries:
        return Outcome(
            Verdict.RETRY, not_before=now + retry_delay(job.failures + 1, job.retry_backoff, rng)
        )
    return Outcome(Verdict.FAILED)


def retry_delay(failures: int, base: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped at an hour, +-20% jitter."""
    # The exponent is clamped: 2**1024 does not fit a float, and 2**64 * base is past the
    # cap for any base worth having.
    delay = min(BACKOFF_CAP, base * 2 ** min(64, max(0, failures - 1)))
    return float(min(BACKOFF_CAP, delay * (0.8 + 0.4 * rng())))


class Backoff:
    """A doubling wait after repeated faults: ``first``, 2x, 4x, ... up to ``cap``."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    @property
    def backing_off(self) -> bool:
        """Whether a fault happened since the last ``reset``."""
        return self.delay > self.first

    def failed(self) -> float:
        """A fault: the wait to use now (the next one doubles)."""
        delay = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first
