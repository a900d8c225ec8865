"""Waiting for jobs: how long ``spoolq wait`` takes to return after the last of its jobs
ends, and the CPU it spends while it waits (it sleeps on the store's wake-up, not a poll).

    uv run python -m bench.wait                 # 50 jobs, 3 runs
    uv run python -m bench.wait --jobs 200 --runs 5
    uv run python -m bench.wait --url postgresql://postgres@127.0.0.1:5432/test

Each run starts a daemon (lane concurrency 4), publishes ``--jobs`` triggers of
``sleep 0.05`` and at once runs ``spoolq wait`` on their paths. The lag is the waiter's
exit (wall clock) less the time of the last ``succeeded`` event in the daemon's log. With
``--url``, the store is PostgreSQL (a schema of its own, dropped afterwards): the waiter
is woken by ``LISTEN``/``NOTIFY`` instead of its FIFO.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SPOOLQ, Daemon, clean_env, print_medians, progress


def _event_times(log: Path, event: str) -> list[float]:
    times = []
    for line in log.read_text().splitlines():
        if f'"event": "{event}"' in line:
            ts = json.loads(line)["ts"].replace("Z", "+00:00")
            times.append(dt.datetime.fromisoformat(ts).timestamp())
    return times


def one_run(work: Path, jobs: int, url: str | None = None) -> dict[str, float]:
    from bench.pg import schema

    spool = work / "spool"
    spool.mkdir()
    with schema(url) if url else contextlib.nullcontext("") as store_url:
        return _timed(work, spool, jobs, {"SPOOLQ_STORE": store_url} if store_url else {})


def _timed(work: Path, spool: Path, jobs: int, store: dict[str, str]) -> dict[str, float]:
    with Daemon(work, spool, {"default": 4}, env=store) as d:
        d.wait_ready()
        paths = []
        for i in range(jobs):
            tmp = spool / f".w{i}.part"
            tmp.write_text('{"argv": ["sleep", "0.05"]}')
            tmp.chmod(0o644)
            final = spool / f"w{i}.trigger"
            os.rename(tmp, final)
            paths.append(str(final))
        waiter = subprocess.Popen(
            [SPOOLQ, "--state-dir", str(d.state), "wait", *paths],
            stdout=subprocess.DEVNULL,
            env={**clean_env(), **store},
        )
        _, status, usage = os.wait4(waiter.pid, 0)
        exited = time.time()
        waiter.returncode = os.waitstatus_to_exitcode(status)
        if waiter.returncode != 0:
            raise RuntimeError(f"spoolq wait exited {waiter.returncode}")
        ends = _event_times(d.log, "succeeded")
    if len(ends) != jobs:
        raise RuntimeError(f"{len(ends)} of {jobs} jobs succeeded")
    return {
        "lag_ms": (exited - max(ends)) * 1000,
        "cpu_ms": (usage.ru_utime + usage.ru_stime) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wait", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=50, help="jobs waited for (default 50)")
    p.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    p.add_argument("--url", help="a PostgreSQL server to keep the store on (default: SQLite)")
    args = p.parse_args(argv)
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-wait-") as tmp:
        for run in range(args.runs):
            progress(f"run {run + 1}/{args.runs}: spoolq wait on {args.jobs} jobs")
            work = Path(tmp) / f"run{run}"
            work.mkdir()
            for key, value in one_run(work, args.jobs, args.url).items():
                rows.setdefault(key, []).append(value)
    labels = {
        "lag_ms": "ms from the last job's end to the waiter's exit",
        "cpu_ms": "ms of CPU the waiter used (start-up included)",
    }
    print_medians(rows, labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
