"""The settle rule and de-duplication of the intake, with an injected clock."""

from __future__ import annotations

import os
from pathlib import Path

from spoolq.config import SpoolConfig
from spoolq.intake import WRITE_IDLE_LIMIT, Intake


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, settle: float = 1.0) -> tuple[Intake, SpoolConfig, Clock, list[int]]:
    spool = SpoolConfig(path=tmp_path, settle=settle, rescan_interval=3600)
    wakes: list[int] = []
    clock = Clock(os.stat(tmp_path).st_mtime)
    intake = Intake(
        (spool,), tmp_path / ".spoolq", lambda: wakes.append(1), lambda s, d: None,
        clock=clock, mono=clock,
    )  # fmt: skip
    return intake, spool, clock, wakes


def test_a_file_the_kernel_called_complete_is_ready_at_once(tmp_path: Path) -> None:
    intake, spool, _, wakes = make(tmp_path)
    path = str(tmp_path / "a.trigger")
    intake.offer(spool, path, True)
    intake.offer(spool, path, True)  # duplicate event
    assert wakes and intake.pending
    assert list(intake.take(10)) == [(spool, path)]


def test_a_scanned_file_waits_until_size_and_mtime_are_stable(tmp_path: Path) -> None:
    intake, spool, clock, _ = make(tmp_path, settle=1.0)
    path = tmp_path / "b.trigger"
    path.write_text("true\n")
    clock.t = os.stat(path).st_mtime + 0.1  # just written
    intake.offer(spool, str(path), False)
    assert list(intake.take(10)) == []
    clock.t += 0.5
    path.write_text("true\nfalse\n")  # still being written: the wait starts again
    os.utime(path, (clock.t, clock.t))
    assert intake.timers() is False
    intake.offer(spool, str(path), False)
    assert list(intake.take(10)) == []
    clock.t += 1.1  # stable for longer than settle
    intake.timers()
    assert list(intake.take(10)) == [(spool, str(path))]


def test_an_old_file_found_by_a_scan_is_ready_at_once(tmp_path: Path) -> None:
    intake, spool, clock, _ = make(tmp_path)
    path = tmp_path / "old.trigger"
    path.write_text("true\n")
    clock.t = os.stat(path).st_mtime + 60
    intake.scan_all()
    assert list(intake.take(10)) == [(spool, str(path))]


def test_a_file_still_open_for_writing_waits_for_its_close_or_a_silent_minute(
    tmp_path: Path,
) -> None:
    intake, spool, clock, _ = make(tmp_path)
    path = tmp_path / "open.trigger"
    path.write_text("true\n")
    intake.writing.add(str(path))
    clock.t = os.stat(path).st_mtime + 5
    intake.offer(spool, str(path), False)
    assert list(intake.take(10)) == []
    clock.t = os.stat(path).st_mtime + WRITE_IDLE_LIMIT + 1
    intake.offer(spool, str(path), False)
    assert list(intake.take(10)) == [(spool, str(path))]


def test_a_fifo_is_handed_on_at_once_to_be_rejected(tmp_path: Path) -> None:
    intake, spool, _, _ = make(tmp_path)
    fifo = tmp_path / "pipe.trigger"
    os.mkfifo(fifo)
    intake.offer(spool, str(fifo), False)
    assert list(intake.take(10)) == [(spool, str(fifo))]


def test_an_overflow_forces_a_full_scan(tmp_path: Path) -> None:
    intake, spool, clock, _ = make(tmp_path)
    (tmp_path / "lost.trigger").write_text("true\n")
    clock.t += 3600
    intake.on_overflow()
    assert intake.pending
    assert intake.timers() is True
    assert list(intake.take(10)) == [(spool, str(tmp_path / "lost.trigger"))]
    assert list(intake.take(10)) == []  # the state directory and nothing else


def test_a_batch_stopped_early_leaves_the_rest_first_in_line(tmp_path: Path) -> None:
    """The daemon stops a batch of claims when a job ends: the path it took but did not
    claim goes back, and what it never asked for stays queued, both ahead of what arrived
    since, in their order."""
    intake, spool, _, _ = make(tmp_path)
    a, b, c, d = (str(tmp_path / f"{n}.trigger") for n in "abcd")
    for path in (a, b, c):
        intake.offer(spool, path, True)
    taking = intake.take(10)
    assert next(taking) == (spool, a)
    assert next(taking) == (spool, b)
    intake.give_back(spool, b)  # taken, not claimed
    assert len(intake) == 2  # b again, and c that was never taken
    intake.offer(spool, d, True)
    assert list(intake.take(10)) == [(spool, b), (spool, c), (spool, d)]


def test_take_stops_at_its_limit(tmp_path: Path) -> None:
    intake, spool, _, _ = make(tmp_path)
    paths = [str(tmp_path / f"{n}.trigger") for n in "abc"]
    intake.offer(spool, paths[0], True)
    for path in paths:
        intake.offer(spool, path, True)  # a's second event does not count against the limit
    assert list(intake.take(2)) == [(spool, paths[0]), (spool, paths[1])]
    assert list(intake.take(2)) == [(spool, paths[2])]


def test_a_periodic_rescan_waits_while_a_backlog_is_still_queued(tmp_path: Path) -> None:
    """A rescan due while the queue still holds a backlog would queue every unclaimed file
    a second time (a million-file backlog takes minutes to claim): it runs once the queue is
    empty."""
    intake, _, clock, _ = make(tmp_path)
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.trigger").write_text("true\n")
    intake.scan_all()
    assert len(intake) == 3
    clock.t += 3601  # the periodic rescan is due
    intake.timers()
    assert len(intake) == 3  # not 6
    assert len(list(intake.take(10))) == 3
    intake.timers()  # queue empty: the rescan runs (nothing was claimed, all still there)
    assert len(intake) == 3
