"""Noticing triggers when kernel events are lost (inotify queue overflow) and where there
are none (polling, as on network filesystems)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Env


def _states(env: Env) -> dict[str, int]:
    states = json.loads(env.cli("status", "--json", check=True).stdout)["states"]
    return {k: v for k, v in states.items() if v}


@pytest.mark.slow
def test_inotify_queue_overflow_triggers_an_immediate_rescan(env: Env) -> None:
    max_events = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if max_events > 20000:
        pytest.skip(
            f"fs.inotify.max_queued_events is {max_events}: overflowing it takes too long "
            "(the kernel's default is 16384: sysctl fs.inotify.max_queued_events=16384)"
        )
    n = max_events + 500
    # A rescan every hour: only the overflow can make the daemon look again in time.
    env.write_config(f'[[spool]]\npath = "{env.spool}"\nrescan_interval = "1h"\n')
    d = env.start(spool=False)
    env.cli("pause", "default", check=True)  # claimed and queued, never run
    staging = env.root / "staging"
    staging.mkdir()
    for i in range(n):
        fd = os.open(staging / f"t{i:06}.trigger", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"true\n")
        os.close(fd)
    # While the daemon is stopped nobody reads its inotify queue: one IN_MOVED_TO per
    # trigger fills it past max_queued_events, and the kernel drops the rest.
    d.signal(signal.SIGSTOP)
    try:
        for i in range(n):
            name = f"t{i:06}.trigger"
            os.rename(staging / name, env.spool / name)
    finally:
        d.signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while len(d.find("queued")) < n:
        assert time.monotonic() < deadline, f"{len(d.find('queued'))} of {n} claimed after 60 s"
        assert d.proc.poll() is None
        time.sleep(0.2)
    assert d.find("rescan")
    assert _states(env) == {"queued": n}
    assert not list(env.spool.glob("*.trigger"))
    assert d.stop() == 0


def test_polling_watcher_picks_up_atomic_and_direct_triggers(env: Env) -> None:
    env.write_config(
        f'[[spool]]\npath = "{env.spool}"\nwatcher = "polling"\npoll_interval = "0.2s"\n'
        'settle = "0.3s"\nrescan_interval = "1h"\n'
    )
    d = env.start(spool=False)
    atomic = env.publish(f"touch {env.root / 'atomic.txt'}\n", name="atomic.trigger")
    d.wait_for("succeeded", trigger=str(atomic))
    direct = env.spool / "direct.trigger"
    fd = os.open(direct, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, f"echo one >> {env.root / 'direct.txt'}\n".encode())
    os.write(fd, f"echo two >> {env.root / 'direct.txt'}\n".encode())
    os.close(fd)
    d.wait_for("succeeded", trigger=str(direct))
    assert (env.root / "atomic.txt").exists()
    assert (env.root / "direct.txt").read_text() == "one\ntwo\n"
    assert sorted(Path(j["trigger"]).name for j in env.jobs()) == [
        "atomic.trigger",
        "direct.trigger",
    ]
    assert d.stop() == 0
