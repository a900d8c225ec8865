"""One root exception; each subclass carries a message that tells the user what to do."""

from __future__ import annotations


class SpoolqError(Exception):
    """Root of every error spoolq raises on purpose."""

    exit_code = 1


class ConfigError(SpoolqError):
    """The configuration (file, flag or environment variable) is wrong. Exit code 2."""

    exit_code = 2


class UsageError(SpoolqError):
    """A command was called wrongly. Exit code 2."""

    exit_code = 2


class TriggerRejected(SpoolqError):
    """A trigger failed validation or a trust check; ``reason`` is what gets recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobNotFound(SpoolqError):
    def __init__(self, ref: str, *, ambiguous: int = 0) -> None:
        if ambiguous:
            msg = f"job id prefix {ref!r} matches {ambiguous} jobs; give more characters"
        else:
            msg = f"no job {ref!r} in this store (check --state-dir/--config point at the daemon's)"
        super().__init__(msg)
        self.ref = ref


class StoreError(SpoolqError):
    """The store failed; the message names it and says what to check."""


class StoreUnavailable(StoreError):
    """A transient store failure (locked, disk full, read-only): retry later."""


class WaitTimeout(SpoolqError, TimeoutError):
    """The jobs waited for did not end within the time given."""
