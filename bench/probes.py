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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import durable
from bench.common import build_stamp, file_create_us


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
    """One write transaction as a busy lane commits it (bench/durable.py's HANDOFF): close
    an attempt, finish a job, read the lane, count its running jobs, start the next job,
    open its attempt."""
    db = durable.queued_db(directory / "probe.db", n + 1)
    prev = durable.handoff(db, None)
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        prev = durable.handoff(db, prev)
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
