"""Progress of a long job: the lines a job writes to ``$SPOOLQ_PROGRESS``, what they mean,
and the rate and ETA made of successive readings.

Owns the formats (``42%``, ``1234/5000``, ``1234/5000 rows``, JSON ``{"done", "total",
"unit", "message"}``), reading the last line of a file a job may be rewriting - without ever
blocking, following a link or reading more than a small tail - and ``Progress``, the record
the store keeps. When to look at the file and when to save a reading is the supervisor's;
keeping it, the store's. ``report()`` is the helper a Python job calls (``spoolq.progress``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import time
from dataclasses import dataclass, replace
from typing import Any

TAIL_BYTES = 4096  # the last line must fit in this much of the file's end
MAX_LINE = 1024  # longer lines are not progress lines
MAX_UNIT = 32
MAX_MESSAGE = 200

_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_FRACTION = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)(?:\s+(\S.*))?$")


@dataclass(frozen=True, slots=True)
class Progress:
    """One reading of a job's progress, with the rate and ETA computed when it was taken."""

    done: float
    total: float | None = None
    unit: str | None = None
    message: str | None = None
    rate: float | None = None  # units of ``done`` per second over the attempt so far
    eta_s: float | None = None  # seconds left at that rate, when the total is known
    updated_at: float = 0.0  # when the reading was taken (UNIX seconds)
    attempt: int = 0

    @property
    def ratio(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    def to_dict(self) -> dict[str, Any]:
        def num(v: float | None) -> float | int | None:
            if v is None:
                return None
            return int(v) if float(v).is_integer() else round(v, 3)

        return {
            "done": num(self.done),
            "total": num(self.total),
            "unit": self.unit,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "rate": None if self.rate is None else round(self.rate, 3),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "message": self.message,
            "attempt": self.attempt,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Progress:
        """Back from ``to_dict`` (for the words, from the JSON a command printed)."""
        fields = ("done", "total", "unit", "message", "rate", "eta_s", "attempt")
        return cls(**{k: d[k] for k in fields if d.get(k) is not None})

    def describe(self) -> str:
        """For people: ``42% (1234/5000 rows, 12.5 rows/s, ETA 5m)``."""
        parts = []
        if self.total and self.unit != "%":
            parts.append(
                f"{_num(self.done)}/{_num(self.total)}" + (f" {self.unit}" if self.unit else "")
            )
        elif not self.total:
            parts.append(_num(self.done) + (f" {self.unit}" if self.unit else ""))
        if self.rate:
            parts.append(f"{_num(self.rate)} {self.unit or ''}/s".replace(" /s", "/s"))
        if self.eta_s is not None:
            parts.append(f"ETA {_duration(self.eta_s)}")
        head = f"{self.ratio * 100:.0f}%" if self.ratio is not None else ""
        text = f"{head} ({', '.join(parts)})" if head and parts else head or ", ".join(parts)
        return f"{text} {self.message}" if self.message else text


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _finite(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) and f >= 0 else None


def _text(v: object, limit: int) -> str | None:
    if not isinstance(v, str) or not v.strip():
        return None
    return "".join(c for c in v.strip() if c.isprintable())[:limit] or None


def parse(line: str) -> Progress | None:
    """A progress line, or None if it is not one (never raises)."""
    line = line.strip()
    if not line or len(line) > MAX_LINE:
        return None
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        done = _finite(doc.get("done"))
        if done is None:
            return None
        total = _finite(doc.get("total")) if doc.get("total") is not None else None
        if doc.get("total") is not None and total is None:
            return None
        return Progress(
            done, total, _text(doc.get("unit"), MAX_UNIT), _text(doc.get("message"), MAX_MESSAGE)
        )
    if m := _PERCENT.match(line):
        pct = float(m.group(1))
        return Progress(min(pct, 100.0), 100.0, "%") if pct <= 100 else None
    if m := _FRACTION.match(line):
        done, total = float(m.group(1)), float(m.group(2))
        if not (math.isfinite(done) and math.isfinite(total)):
            return None
        return Progress(done, total, _text(m.group(3), MAX_UNIT))
    return None


def last_reading(data: bytes) -> Progress | None:
    """The progress of the last line of ``data`` (the end of a file): the unfinished line
    after the last newline if it parses, else the last whole line."""
    lines = data.split(b"\n")
    # The first piece may be cut by the tail's start: only whole lines count.
    candidates = lines[-2:] if len(lines) >= 3 else lines[1:] if len(lines) == 2 else lines
    for raw in reversed(candidates):
        if not raw.strip():
            continue
        with contextlib.suppress(UnicodeDecodeError):
            found = parse(raw.decode("utf-8"))
            if found is not None:
                return found
    return None


Signature = tuple[int, int, int]  # a file's inode, size and mtime


def read_file(path: str, seen: Signature | None) -> tuple[Signature | None, Progress | None]:
    """Look at a progress file without blocking: ``(signature, reading)``. The reading is
    None when the file is absent, not a regular file, unchanged since ``seen`` (its inode,
    size and mtime) or holds no progress line. Never raises for what a job did to the file."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return seen, None
    if not stat.S_ISREG(st.st_mode):
        return seen, None  # a FIFO, a link, a directory: never opened
    sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    if sig == seen:
        return seen, None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return seen, None
    try:
        st = os.fstat(fd)  # what was opened, not what was looked at
        if not stat.S_ISREG(st.st_mode):
            return seen, None
        size = st.st_size
        start = max(0, size - TAIL_BYTES)
        data = os.pread(fd, TAIL_BYTES, start) if size else b""
    except OSError:
        return seen, None
    finally:
        os.close(fd)
    if start > 0 and b"\n" not in data:
        return sig, None  # one line longer than the tail: not a progress line
    if start == 0:
        data = b"\n" + data  # the file's first line is whole
    return sig, last_reading(data)


class Tracker:
    """Successive readings of one attempt: rate over the attempt so far, and ETA."""

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.first: tuple[float, float] | None = None  # (time, done) of the first reading
        self.latest: Progress | None = None

    def add(self, reading: Progress, now: float) -> Progress:
        if self.first is None or (self.latest is not None and reading.done < self.latest.done):
            self.first = (now, reading.done)  # a first reading, or the job started over
        t0, d0 = self.first
        rate = (reading.done - d0) / (now - t0) if now > t0 and reading.done > d0 else None
        eta = None
        if rate and reading.total is not None:
            eta = max(0.0, (reading.total - reading.done) / rate)
        if self.latest is not None and rate is None and reading.done == self.latest.done:
            rate, eta = self.latest.rate, self.latest.eta_s  # no news is no new rate
        self.latest = replace(reading, rate=rate, eta_s=eta, updated_at=now, attempt=self.attempt)
        return self.latest


_last_write = 0.0


def report(
    done: float,
    total: float | None = None,
    unit: str | None = None,
    message: str | None = None,
    *,
    every: float = 0.5,
) -> None:
    """Tell spoolq how far this job has come (``spoolq.progress``); does nothing outside a
    spoolq job. Writes at most every ``every`` seconds (and always the last step), each
    time a new file renamed into place, so that spoolq never reads half a line."""
    global _last_write
    path = os.environ.get("SPOOLQ_PROGRESS")
    if not path:
        return
    now = time.monotonic()
    if now - _last_write < every and not (total is not None and done >= total):
        return
    _last_write = now
    doc: dict[str, Any] = {"done": done}
    if total is not None:
        doc["total"] = total
    if unit:
        doc["unit"] = unit
    if message:
        doc["message"] = message
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc) + "\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
