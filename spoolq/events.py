"""The daemon's log: one line per event, ``key=value`` for people or JSON for machines."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from spoolq.jobs import iso

_LEVELS = {"error": "ERROR", "warning": "WARN", "info": "INFO"}


def _value(v: object) -> str:
    text = str(v)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class EventLog:
    def __init__(self, fmt: str = "human", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        ts = iso(time.time())
        clean = {k: v for k, v in fields.items() if v is not None}
        if self.fmt == "json":
            line = json.dumps(
                {"ts": ts, "level": level, "event": event, **clean},
                default=str,
                ensure_ascii=False,
            )
        else:
            parts = [f"{k}={_value(v)}" for k, v in clean.items()]
            line = f"{ts} {_LEVELS.get(level, level.upper()):5} event={event} {' '.join(parts)}"
        with self._lock:
            try:
                self.stream.write(line.rstrip() + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # whoever read our log went away; the daemon carries on

    def warn(self, event: str, **fields: Any) -> None:
        self.emit(event, "warning", **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.emit(event, "error", **fields)
