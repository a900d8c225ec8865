"""The daemon's log: one line per event, ``key=value`` for people or JSON for machines.

Inside the daemon's loop the log is buffered (``hold``): lines of one pass of the loop go
out in one write, before the loop sleeps or once the oldest has waited ``max_hold``;
warnings and errors go out at once (after what is held, so the order is kept), and so do
the lines of other threads (the notifier, the web), which no pass of the loop would flush
while it sleeps. A held line
is kept as its fields and its time, and formatted when it is written: the work happens
after the loop's pass (a job already started), not on a trigger's way to its start.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from spoolq.jobs import stamp

_LEVELS = {"error": "ERROR", "warning": "WARN", "info": "INFO"}
_JSON = json.JSONEncoder(default=str, ensure_ascii=False)


def _times(fields: dict[str, Any]) -> dict[str, Any]:
    """A point in time (a field named ``*_at`` or ``not_before``, given as epoch seconds) is
    written as ISO 8601 like each line's own time, never as a raw epoch."""
    for k, v in fields.items():
        if type(v) is float and (k == "not_before" or k.endswith("_at")):
            fields[k] = stamp(v)
    return fields


def _value(v: object) -> str:
    text = str(v)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class EventLog:
    def __init__(
        self, fmt: str = "human", stream: TextIO | None = None, max_hold: float = 0.1
    ) -> None:
        self.fmt = fmt
        self.max_hold = max_hold  # seconds a held line may wait while the loop is busy
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._held: list[tuple[float, str, str, dict[str, Any]]] | None = None
        self._held_since = 0.0
        self._holder = 0  # the thread whose info lines are held (the loop's)
        # Called with each event as it is emitted (e.g. the web's per-daemon histograms);
        # an observer must be quick and must not raise.
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        clean = _times({k: v for k, v in fields.items() if v is not None})
        for observe in self.observers:
            observe(event, clean)
        with self._lock:
            if self._held is not None and level == "info" and threading.get_ident() == self._holder:
                now = time.monotonic()
                if not self._held:
                    self._held_since = now
                self._held.append((time.time(), level, event, clean))
                if now - self._held_since < self.max_hold:
                    return
                self._write("")  # held long enough (a long pass of the loop): out with them
                return
            self._write(self._line(time.time(), level, event, clean))

    def _line(self, ts: float, level: str, event: str, fields: dict[str, Any]) -> str:
        when = stamp(ts)
        if self.fmt == "json":
            line = _JSON.encode({"ts": when, "level": level, "event": event, **fields})
        else:
            parts = [f"{k}={_value(v)}" for k, v in fields.items()]
            line = f"{when} {_LEVELS.get(level, level.upper()):5} event={event} {' '.join(parts)}"
        return line.rstrip() + "\n"

    def _write(self, text: str) -> None:
        if self._held:
            text = "".join(self._line(*held) for held in self._held) + text
            self._held.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # whoever read our log went away, or its disk is full: the daemon carries on

    def hold(self, on: bool = True) -> None:
        """Buffer info lines until ``flush`` (on) or write each at once (off)."""
        with self._lock:
            if not on:
                self._write("")
            self._held = [] if on else None
            self._holder = threading.get_ident()

    def flush(self) -> None:
        with self._lock:
            if self._held:
                self._write("")

    def warn(self, event: str, **fields: Any) -> None:
        self.emit(event, "warning", **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.emit(event, "error", **fields)
