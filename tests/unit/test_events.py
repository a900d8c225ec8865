"""The daemon's event log: what an operator reads, in the order things happened, with the
time each thing happened, however the lines were buffered."""

from __future__ import annotations

import io
import json
import threading

import pytest

from spoolq import events
from spoolq.events import EventLog


class Clocks:
    """time.time and time.monotonic as the test sets them."""

    def __init__(self) -> None:
        self.wall = 1_790_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Clocks:
    c = Clocks()
    monkeypatch.setattr(events.time, "time", lambda: c.wall)
    monkeypatch.setattr(events.time, "monotonic", lambda: c.mono)
    return c


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_held_lines_wait_for_flush_and_keep_the_time_they_were_emitted(clocks: Clocks) -> None:
    out = io.StringIO()
    log = EventLog("json", out)
    log.hold()
    log.emit("queued", job="A")
    clocks.advance(0.05)
    log.emit("started", job="A", pid=42)
    assert out.getvalue() == ""
    clocks.advance(0.03)
    log.flush()
    got = lines(out)
    assert [(e["event"], e["job"]) for e in got] == [("queued", "A"), ("started", "A")]
    assert got[0]["ts"] == "2026-09-21T14:13:20.000Z"  # emitted, not written (80 ms later)
    assert got[1]["ts"] == "2026-09-21T14:13:20.050Z"
    assert got[1]["pid"] == 42


def test_a_warning_goes_out_at_once_after_the_lines_held_before_it(clocks: Clocks) -> None:
    out = io.StringIO()
    log = EventLog("json", out)
    log.hold()
    log.emit("queued", job="A")
    log.warn("rejected", job="B", reason="world-writable")
    assert [(e["event"], e["level"]) for e in lines(out)] == [
        ("queued", "info"),
        ("rejected", "warning"),
    ]


def test_another_threads_line_goes_out_at_once_after_the_lines_held_before_it(
    clocks: Clocks,
) -> None:
    """The loop holds its own lines until it sleeps; a line of the notifier's thread or the
    web's would wait with them for as long as the loop sleeps (a heartbeat)."""
    out = io.StringIO()
    log = EventLog("json", out)
    log.hold()  # by the loop's thread
    log.emit("queued", job="A")
    sender = threading.Thread(target=lambda: log.emit("notified", job="A", target="ops"))
    sender.start()
    sender.join()
    assert [e["event"] for e in lines(out)] == ["queued", "notified"]
    log.emit("started", job="A")  # the loop's own: held again
    assert len(lines(out)) == 2


def test_lines_held_longer_than_max_hold_are_written_by_the_next_line(clocks: Clocks) -> None:
    out = io.StringIO()
    log = EventLog("human", out, max_hold=0.1)
    log.hold()
    log.emit("queued", job="A")
    clocks.advance(0.2)  # a long pass of the loop
    log.emit("started", job="A", trigger="/spool/a b.trigger")
    text = out.getvalue().splitlines()
    assert len(text) == 2
    assert "event=queued job=A" in text[0]
    assert 'trigger="/spool/a b.trigger"' in text[1]  # quoted: it has a space


def test_hold_off_writes_what_is_held_and_then_each_line_at_once(clocks: Clocks) -> None:
    out = io.StringIO()
    log = EventLog("json", out)
    log.hold()
    log.emit("queued", job="A")
    log.hold(False)
    assert [e["event"] for e in lines(out)] == ["queued"]
    log.emit("stopped")
    assert [e["event"] for e in lines(out)] == ["queued", "stopped"]
