"""What every route shares: the config, one store connection, the token, the event log.

A store connection is one transaction at a time, and the routes run on a thread pool: each
store call takes the lock, so requests never interleave inside one connection. Calls are
short (one verb); a followed log sleeps outside the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import HTTPException, Request

from spoolq.config import Config
from spoolq.errors import StoreError
from spoolq.events import EventLog
from spoolq.store import Store

T = TypeVar("T")


@dataclass
class WebContext:
    config: Config
    state_root: Path
    store: Store
    token: str
    log: EventLog
    healthy: Callable[[], bool] = lambda: True  # inside ``run``: the daemon's watcher is alive
    in_daemon: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` alone on the connection; a store failure is a 503."""
        with self._lock:
            try:
                return fn(self.store)
            except StoreError as exc:
                raise HTTPException(503, f"the store is not answering: {exc}") from None

    def audit(self, request: Request, action: str, via: str, **fields: Any) -> None:
        """Log a mutation: what, who (a proxy's user header, else the token) and from where."""
        client = request.client.host if request.client else "?"
        user = request.headers.get("x-forwarded-user") or request.headers.get("x-remote-user")
        self.log.emit(
            "web_action",
            action=action,
            **fields,
            user=user or f"token ({via})",
            client=client,
            forwarded_for=request.headers.get("x-forwarded-for"),
        )
