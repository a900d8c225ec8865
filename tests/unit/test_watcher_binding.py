"""The daemon reads watchdog's inotify fd in its own poll() (InotifyWatcher reaches two
private attributes of watchdog's InotifyFD for that): if a watchdog release renames them,
this fails before any daemon does."""

from __future__ import annotations

import os
import select
from pathlib import Path

from spoolq.config import SpoolConfig
from spoolq.watcher import InotifyWatcher


def test_inotify_watcher_is_read_in_the_callers_poll_and_closes_its_fd(tmp_path: Path) -> None:
    spool = SpoolConfig(path=tmp_path)
    offered: list[str] = []
    w = InotifyWatcher(
        [spool],
        tmp_path / ".spoolq",
        lambda _s, path, _complete: offered.append(path),
        lambda: None,
        lambda _s, _d: None,
    )
    w.start()
    fd = w.fileno()
    assert w.alive()
    (tmp_path / "x.trigger").write_text("true\n")
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    assert poll.poll(5000), "the inotify fd never became readable"
    w.dispatch()
    assert str(tmp_path / "x.trigger") in offered
    w.stop()  # returns at once: no reader thread to wait for
    assert not w.alive()
    try:
        os.fstat(fd)
    except OSError:
        return
    raise AssertionError("stop() left the inotify fd open")
