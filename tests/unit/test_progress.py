"""Progress lines: the formats as a table, the last line of a file a job may be rewriting
(or replacing with something hostile), rate and ETA, and the helper for Python jobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import spoolq
from spoolq.progress import TAIL_BYTES, Progress, Tracker, last_reading, parse, read_file

P = Progress


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("42%", P(42, 100, "%")),
        ("  42.5 % ", P(42.5, 100, "%")),
        ("100%", P(100, 100, "%")),
        ("101%", None),
        ("1234/5000", P(1234, 5000)),
        ("1234 / 5000", P(1234, 5000)),
        ("1234/5000 rows", P(1234, 5000, "rows")),
        ("0/0", P(0, 0)),
        (
            '{"done": 1234, "total": 5000, "unit": "rows", "message": "sales"}',
            P(1234, 5000, "rows", "sales"),
        ),
        ('{"done": 7}', P(7)),
        ('{"done": 7, "total": null}', P(7)),
        ('{"done": -1, "total": 5}', None),
        ('{"done": true, "total": 5}', None),
        ('{"done": "7", "total": 5}', None),
        ('{"done": 1, "total": "x"}', None),
        ('{"done": 1e999}', None),  # infinity
        ('{"done": 1, "unit": "\\u0007bell"}', P(1, None, "bell")),
        ("[1, 2]", None),
        ("{not json", None),
        ("", None),
        ("loading...", None),
        ("-5%", None),
        ("12/", None),
        ("nan/5", None),
        ("1/" + "9" * 2000, None),  # longer than a progress line
    ],
)
def test_formats(line: str, expected: Progress | None) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("data", "done"),
    [
        (b"\n10%\n20%\n", 20),
        (b"\n10%\n20%", 20),  # the unfinished last line parses: it counts
        (b"\n10%\n2", 10),  # ... it does not (being written): the last whole line
        (b"\n10%\n\xff\xfe\n", None),  # a bad last line is ignored: the last value stays
        (b"\n\xff\xfe", None),
        (b"cut-off-start-of-a-line 99%\n30%\n", 30),
    ],
)
def test_the_last_line_counts(data: bytes, done: int | None) -> None:
    found = last_reading(data)
    assert (found.done if found else None) == done


def test_a_file_is_read_once_per_change_and_hostile_ones_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p"
    assert read_file(str(path), None) == (None, None)  # absent
    path.write_text("10%\n")
    sig, reading = read_file(str(path), None)
    assert reading == P(10, 100, "%")
    assert read_file(str(path), sig) == (sig, None)  # unchanged: not read again
    path.write_text("25%\n")
    sig, reading = read_file(str(path), sig)
    assert reading is not None and reading.done == 25
    # One line bigger than the tail: not a progress line, never read whole.
    path.write_bytes(b"\n" + b"x" * (TAIL_BYTES * 4) + b" 50%")
    assert read_file(str(path), None)[1] is None
    path.write_bytes(b"\xff\xfe\x00garbage\x00" * 1000)
    assert read_file(str(path), None)[1] is None
    path.unlink()
    os.mkfifo(path)  # opening a FIFO to read would block: never opened
    assert read_file(str(path), None) == (None, None)
    path.unlink()
    target = tmp_path / "elsewhere"
    target.write_text("99%\n")
    path.symlink_to(target)  # never followed
    assert read_file(str(path), None) == (None, None)
    path.unlink()
    path.mkdir()
    assert read_file(str(path), None) == (None, None)


def test_rate_and_eta_over_the_attempt() -> None:
    t = Tracker(attempt=2)
    first = t.add(P(100, 1000, "rows"), now=10.0)
    assert (first.rate, first.eta_s, first.attempt, first.updated_at) == (None, None, 2, 10.0)
    later = t.add(P(300, 1000, "rows"), now=20.0)
    assert later.rate == pytest.approx(20.0)
    assert later.eta_s == pytest.approx(35.0)
    same = t.add(P(300, 1000, "rows"), now=21.0)  # over the attempt so far
    assert same.rate == pytest.approx(200 / 11)
    again = t.add(P(0, 1000, "rows"), now=30.0)  # started over: measured afresh
    assert again.rate is None


def test_the_json_shape_and_the_words_for_people() -> None:
    p = P(1234, 5000, "rows", None, 12.5, 61.28, 5.0, 1)
    assert p.to_dict() == {
        "done": 1234,
        "total": 5000,
        "unit": "rows",
        "ratio": 0.2468,
        "rate": 12.5,
        "eta_s": 61.3,
        "message": None,
        "attempt": 1,
    }
    assert p.describe() == "25% (1234/5000 rows, 12.5 rows/s, ETA 61s)"
    assert P(42, 100, "%").describe() == "42%"
    assert P(7, None, "files").describe() == "7 files"
    assert P(7).to_dict()["ratio"] is None
    assert Progress.from_dict(p.to_dict()).describe() == p.describe()


def test_the_helper_writes_a_whole_line_and_is_a_no_op_outside_spoolq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPOOLQ_PROGRESS", raising=False)
    spoolq.progress(1, 10)  # nothing to do, nothing raised
    path = tmp_path / "job"
    monkeypatch.setenv("SPOOLQ_PROGRESS", str(path))
    spoolq.progress(10, 10, unit="rows", message="done", every=0)
    assert json.loads(path.read_text()) == {
        "done": 10,
        "total": 10,
        "unit": "rows",
        "message": "done",
    }
    assert parse(path.read_text()) == P(10, 10, "rows", "done")
    assert os.listdir(tmp_path) == ["job"]  # no temporary file left behind
    monkeypatch.setenv("SPOOLQ_PROGRESS", str(tmp_path / "no-such-dir" / "job"))
    spoolq.progress(1, 2, every=0)  # cannot write: the job goes on


def test_leftover_progress_files_are_swept_once_nobody_wrote_them_for_an_hour(
    tmp_path: Path,
) -> None:
    import select
    import time

    from spoolq.events import EventLog
    from spoolq.supervisor import PROGRESS_STALE, Supervisor

    sup = Supervisor({}, EventLog("json"), select.poll(), mono=time.monotonic, open_log=os.open)
    sup.progress_dir = str(tmp_path)
    old = time.time() - PROGRESS_STALE - 60
    for name in ("ended-job", "ended-job.123.tmp", "peers-running-job"):
        (tmp_path / name).write_text("50%\n")
    for name in ("ended-job", "ended-job.123.tmp"):
        os.utime(tmp_path / name, (old, old))
    assert sup.progress_to_save(time.time()) == {}  # no running job: nothing read, a sweep
    assert os.listdir(tmp_path) == ["peers-running-job"]
