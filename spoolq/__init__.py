"""spoolq: turn a directory into a durable job queue."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from spoolq.api import submit, wait
from spoolq.errors import SpoolqError, WaitTimeout
from spoolq.progress import report as progress

try:
    __version__ = version("spoolq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["SpoolqError", "WaitTimeout", "__version__", "progress", "submit", "wait"]
