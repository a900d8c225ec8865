"""The producer API, ``spoolq.submit(...)``, called from a second Python process (as an ETL
step would) while the daemon runs."""

from __future__ import annotations

import ctypes
import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

from tests.conftest import Env

# inotify(7) event bits used below.
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x8, 0x40, 0x80
IN_CREATE, IN_Q_OVERFLOW = 0x100, 0x4000
WRITES = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE


def producer(env: Env, code: str, *args: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (``import spoolq`` done); its stdout lines."""
    res = subprocess.run(
        [sys.executable, "-c", f"import sys, spoolq\n{code}", *args],
        capture_output=True,
        text=True,
        env=env.env,
        cwd=env.root,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


class Inotify:
    """The kernel's view of a directory, read independently of spoolq's own watcher."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        mask = WRITES | IN_MOVED_FROM | IN_MOVED_TO
        wd = libc.inotify_add_watch(self.fd, os.fsencode(directory), mask)
        assert wd >= 0, os.strerror(ctypes.get_errno())
        self.events: list[tuple[int, str]] = []

    def drain(self) -> list[tuple[int, str]]:
        while True:
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return self.events
            pos = 0
            while pos < len(data):
                _wd, mask, _cookie, size = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16 : pos + 16 + size].rstrip(b"\0").decode()
                self.events.append((mask, name))
                pos += 16 + size

    def close(self) -> None:
        os.close(self.fd)


def test_submit_from_another_process_while_the_daemon_runs(env: Env) -> None:
    out = env.root / "out"
    out.mkdir()
    env.write_config(
        f"""
[lanes.api]
concurrency = 1

[jobs.greet]
argv = ["sh", "-c", 'printf %s "$1" > "$2"', "greet", "{{word}}", "{{out}}"]
params.word = {{ pattern = "^[a-z]+$" }}
params.out = {{ type = "path", under = "{out}" }}
"""
    )
    d = env.start()
    argv_path, tmpl_path = producer(
        env,
        "argv = ['sh', '-c', 'echo \"$WHO in $SPOOLQ_LANE\" > api.txt']\n"
        "print(spoolq.submit(sys.argv[1], argv=argv, lane='api', id='api-1', priority=3,"
        " timeout='90s', retries=1, env={'WHO': 'producer'}))\n"
        "print(spoolq.submit(sys.argv[1], job='greet', params={'word': 'hi', 'out': 'g.txt'}))",
        str(env.spool),
    )
    for path in (argv_path, tmpl_path):
        assert Path(path).is_absolute() and Path(path).parent == env.spool

    argv_job = d.wait_for("queued", trigger=argv_path)[0]["job"]
    tmpl_job = d.wait_for("queued", trigger=tmpl_path)[0]["job"]
    d.wait_for("succeeded", job=argv_job)
    d.wait_for("succeeded", job=tmpl_job)
    assert (env.spool / "api.txt").read_text() == "producer in api\n"
    assert (out / "g.txt").read_text() == "hi"

    job = env.job(argv_job)
    assert job["trigger"] == argv_path and job["lane"] == "api"
    assert (job["idempotency_key"], job["priority"], job["timeout"], job["retries"]) == (
        "api-1", 3, 90.0, 1,
    )  # fmt: skip
    assert env.job(tmpl_job)["trigger"] == tmpl_path

    # Contradictory arguments raise SpoolqError in the producer and publish nothing.
    errors = producer(
        env,
        "for kw in ({}, {'argv': ['true'], 'command': 'true'}, {'argv': 'true'},"
        " {'command': 'true', 'timeout': 'soon'}):\n"
        "    try:\n"
        "        spoolq.submit(sys.argv[1], **kw)\n"
        "    except spoolq.SpoolqError as exc:\n"
        "        print(type(exc).__name__)\n"
        "try:\n"
        "    spoolq.submit(sys.argv[1] + '/missing', argv=['true'])\n"
        "except spoolq.SpoolqError as exc:\n"
        "    print('missing-dir', exc)",
        str(env.spool),
    )
    assert errors[:4] == ["UsageError"] * 4
    assert errors[4].startswith("missing-dir") and "does not exist" in errors[4]
    assert sorted(p.name for p in env.spool.iterdir()) == [".spoolq", "api.txt"]


def test_the_returned_path_exists_until_the_daemon_claims_it(env: Env) -> None:
    (path,) = producer(
        env,
        "print(spoolq.submit(sys.argv[1], command='echo claimed > claimed.txt'))",
        str(env.spool),
    )
    trigger = Path(path)
    # No daemon yet: the trigger is there, complete, and readable only as spoolq demands.
    st = os.lstat(trigger)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert json.loads(trigger.read_text()) == {"command": "echo claimed > claimed.txt"}
    assert [p.name for p in env.spool.iterdir()] == [trigger.name]  # no temp file left

    d = env.start()
    job_id = d.wait_for("queued", trigger=path)[0]["job"]
    assert not trigger.exists()  # claimed: moved out of the spool
    d.wait_for("succeeded", job=job_id)
    assert (env.spool / "claimed.txt").read_text() == "claimed\n"
    assert Path(env.job(job_id)["file"]).parent == env.state / "done"


def test_200_rapid_submits_are_atomic_and_all_run(env: Env) -> None:
    d = env.start()
    watch = Inotify(env.spool)
    try:
        paths = producer(
            env,
            "for i in range(200):\n    print(spoolq.submit(sys.argv[1], argv=['true']))",
            str(env.spool),
        )
        assert len(set(paths)) == 200
        d.wait_for("succeeded", count=200, timeout=60)
        events = watch.drain()
    finally:
        watch.close()

    assert not d.find("rejected")
    jobs = env.jobs()
    assert len(jobs) == 200 and {j["state"] for j in jobs} == {"succeeded"}
    assert {j["trigger"] for j in jobs} == set(paths)
    assert [p.name for p in env.spool.iterdir()] == [".spoolq"]  # all claimed, no temp file

    names = {Path(p).name for p in paths}
    assert not [m for m, _ in events if m & IN_Q_OVERFLOW]
    # Under its .trigger name a file only ever arrives whole (moved in) and leaves (claimed);
    # it is never created, written or closed after writing there.
    written = [(m, n) for m, n in events if n in names and m & WRITES]
    assert written == [], written[:5]
    moved_in = [n for m, n in events if m & IN_MOVED_TO]
    assert sorted(moved_in) == sorted(names)
    # The writes did happen, under other (hidden, non-matching) names: the watch saw them.
    part_writes = {n for m, n in events if m & IN_CLOSE_WRITE}
    assert len(part_writes) == 200 and all(n.startswith(".") for n in part_writes)
