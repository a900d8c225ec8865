"""spoolq: turn a directory into a durable job queue.

``submit`` and ``wait`` are imported on first use: a job that only reports its progress
(``spoolq.progress``) starts without loading the configuration's machinery."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from spoolq.errors import SpoolqError, WaitTimeout
from spoolq.progress import report as progress

if TYPE_CHECKING:
    from spoolq.api import submit, wait

try:
    __version__ = version("spoolq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["SpoolqError", "WaitTimeout", "__version__", "progress", "submit", "wait"]


def __getattr__(name: str) -> Any:
    if name in ("submit", "wait"):
        from spoolq import api

        return getattr(api, name)
    raise AttributeError(f"module 'spoolq' has no attribute {name!r}")
