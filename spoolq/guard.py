"""Living through store faults: the daemon's back-off while the store (or the state
directory) does not answer, and the rule for when it counts as back.

Owns the retry time, the doubling wait, the probe (a real write) that opens each retry,
and the recovery that is announced only after a whole clean pass of the loop. Leaves what
each step does to the daemon.
"""

from __future__ import annotations

from collections.abc import Callable

from spoolq.errors import StoreUnavailable
from spoolq.events import EventLog
from spoolq.lifecycle import Backoff

RETRY_FIRST = 0.5
RETRY_MAX = 30.0


class StoreGuard:
    def __init__(self, log: EventLog, mono: Callable[[], float], probe: Callable[[], None]) -> None:
        self.log = log
        self.mono = mono
        self.probe = probe  # a real write: a step with nothing to do proves nothing
        self.retry_at = 0.0
        self._backoff = Backoff(RETRY_FIRST, RETRY_MAX)
        self._probed = False  # backing off, a real write went through in this pass
        self._pass_failed = False  # a step of this pass met a store fault

    @property
    def waiting(self) -> bool:
        """Backing off: steps that need the store are skipped until ``retry_at``."""
        return self.retry_at > self.mono()

    def run(self, step: Callable[[], None]) -> None:
        """Run a step that uses the store; on a transient store fault, back off and log."""
        if self.mono() < self.retry_at:
            return
        try:
            if self._backoff.backing_off and not self._probed:
                self.probe()
                self._probed = True
            step()
        except StoreUnavailable as exc:
            self._probed = False
            self._pass_failed = True
            delay = self._backoff.failed()
            self.log.error("store_unavailable", error=str(exc), retry_in=delay)
            self.retry_at = self.mono() + delay

    def end_pass(self) -> bool:
        """At the end of a pass of the loop: whether the store has just come back. A fault
        that a probe does not touch (job logs that cannot be created, a claimed/ that
        cannot be written) keeps doubling the wait instead of a recovery announced at
        every retry."""
        back = self._probed and not self._pass_failed
        if back:
            self._probed = False
            self.log.emit("store_recovered")
            self._backoff.reset()
        self._pass_failed = False
        return back


def until_it_works(step: Callable[[], None], log: EventLog, wait: Callable[[float], None]) -> None:
    """At start there is nothing to fall back on: retry ``step`` with back-off. ``wait``
    sleeps (and may raise to stop)."""
    backoff = Backoff(RETRY_FIRST, RETRY_MAX)
    while True:
        try:
            step()
            return
        except StoreUnavailable as exc:
            delay = backoff.failed()
            log.error("store_unavailable", error=str(exc), retry_in=delay)
        wait(delay)
