"""Probes: the costs below spoolq's figures, measured on their own.

``python -m bench.probes`` prints what each bound in docs/performance.md rests on, on this
machine, now: creating a file (a job's log), starting a process with ``posix_spawn`` from
a bare loop and after 0.3, 1 and 3 ms of Python work (the state a daemon is in when it
starts the next job: a parent that has been busy gets its child started on the other,
idle CPU, and on a virtual machine waking a halted CPU can cost more than the spawn
itself), the life of the ``stamp`` child after the spawn returns, and one SQLite
transaction shaped like a busy lane's "finish one job, start the next". Medians of N tries.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import build_stamp, file_create_us
from spoolq.store import queries


def _median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def spawn_costs(exe: str, n: int, python_work_us: int) -> tuple[float, float]:
    """(posix_spawn call, child's remaining life) in microseconds, after ``python_work_us``
    of Python work before each spawn (0: a bare loop)."""
    env = dict(os.environ)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)]
    junk = [{"a": i, "b": str(i)} for i in range(100_000)]
    call, life = [], []
    try:
        for _ in range(n):
            end, i = time.perf_counter_ns() + python_work_us * 1000, 0
            while time.perf_counter_ns() < end:
                json.dumps(junk[i % len(junk)])
                i += 7919
            t0 = time.perf_counter_ns()
            pid = os.posix_spawn(exe, [exe], env, file_actions=actions, setsid=True)
            t1 = time.perf_counter_ns()
            os.waitpid(pid, 0)
            t2 = time.perf_counter_ns()
            call.append(t1 - t0)
            life.append(t2 - t1)
    finally:
        os.close(null)
    return _median_us(call), _median_us(life)


def handoff(directory: Path, n: int) -> float:
    """One write transaction as a busy lane commits it: close an attempt, finish a job,
    lock the lane, count its running jobs, start the next job, open its attempt."""
    db = sqlite3.connect(directory / "probe.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for _, script in queries.migrations("sqlite"):  # the store's schema as it is now
        db.executescript(script)
    db.execute("INSERT INTO lanes (name, concurrency) VALUES ('l', 1)")
    spec = json.dumps({"steps": [["/bin/true"]]})
    db.execute("BEGIN")
    for i in range(n + 1):
        db.execute(
            "INSERT INTO jobs (id, state, lane, trigger, claimed_path, log, spec, created_at)"
            " VALUES (?, 'queued', 'l', ?, ?, ?, ?, ?)",
            (f"J{i:025d}", f"/spool/t{i}", f"/state/claimed/t{i}", f"/state/logs/{i}", spec, i),
        )
    db.execute("COMMIT")
    db.execute("UPDATE jobs SET state = 'running', attempts = 1 WHERE seq = 1")
    db.execute(
        "INSERT INTO attempts (job_id, n, started_at) VALUES ('J' || printf('%025d', 0), 1, 0)"
    )
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        db.execute("BEGIN IMMEDIATE")
        prev = f"J{i:025d}"
        db.execute(
            "UPDATE attempts SET finished_at = ?, exit_code = 0, wall_s = 0.001 "
            "WHERE job_id = ? AND n = 1",
            (time.time(), prev),
        )
        db.execute(
            "UPDATE jobs SET state = 'succeeded', finished_at = ?, owner = NULL WHERE id = ?",
            (time.time(), prev),
        )
        db.execute("SELECT concurrency, paused FROM lanes WHERE name = 'l'").fetchone()
        db.execute("SELECT count(*) FROM jobs WHERE state = 'running' AND lane = 'l'").fetchone()
        row = db.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? "
            "WHERE seq = (SELECT seq FROM jobs INDEXED BY jobs_queue WHERE state = 'queued' "
            "AND lane = 'l' ORDER BY priority DESC, seq LIMIT 1) RETURNING id",
            (time.time(),),
        ).fetchone()
        db.execute(
            "INSERT INTO attempts (job_id, n, started_at) VALUES (?, 1, ?)", (row[0], time.time())
        )
        db.execute("COMMIT")
        times.append(time.perf_counter_ns() - t0)
    db.close()
    return _median_us(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.probes", description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=2000, help="tries per probe (default 2000)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spoolq-probes-") as tmp:
        work = Path(tmp)
        stamp = build_stamp(work)
        if stamp.kind == "python":
            print("no C compiler: the spawn probes would time Python's start-up", file=sys.stderr)
            return 1
        exe = stamp.argv[0]
        idle = spawn_costs(exe, args.n, 0)
        rows: list[tuple[str, Callable[[], float]]] = [
            ("create an empty file (a job's log)", lambda: file_create_us(work)),
            ("posix_spawn() call, from a bare loop", lambda: idle[0]),
        ]
        for work_us in (300, 1000, 3000):
            rows.append(
                (
                    f"posix_spawn() call, after {work_us} us of Python work",
                    lambda w=work_us: spawn_costs(exe, min(args.n, 1000), w)[0],
                )
            )
        rows += [
            ("stamp child: spawn returned -> reaped (bare loop)", lambda: idle[1]),
            ("SQLite: finish a job + start the next, one commit", lambda: handoff(work, args.n)),
        ]
        for label, probe in rows:
            print(f"{probe():9.1f} us  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
