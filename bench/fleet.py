"""A fleet's throughput: 1, 2 and 3 daemons on one PostgreSQL store.

``python -m bench.fleet [--url URL] [--size N] [--runs R]`` starts each fleet in a schema of
its own (dropped afterwards), each daemon with a spool and state directory of its own, and
renames N triggers of a near-``true`` job (it stamps its start) into the spools at once,
round robin. Two shapes of work: one lane of concurrency 3, and three lanes of concurrency
1. Reported: jobs/s from the first rename to the last job's start (its own stamp), and to
the last job's finish (the store's ``finished_at``), and the daemons' CPU per job,
medians of the runs.

The lane limits hold across the fleet, so more daemons add claimers and runners, not slots:
on this 2-core machine the daemons, the server and the jobs share two cores. Not part of
``python -m bench`` (a server is needed); numbers: docs/performance.md, "PostgreSQL".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    Daemon,
    Publisher,
    Stamp,
    build_stamp,
    cpu_sample,
    progress,
    read_stamps,
    scratch,
    trigger_text,
    wait_for,
)
from bench.pg import DEFAULT_URL, schema

STAMP_WIDTH = 20  # "%019d\n"
SHAPES = {"one lane c=3": {"default": 3}, "three lanes c=1": {"l0": 1, "l1": 1, "l2": 1}}


def finished(store_url: str) -> tuple[int, float]:
    """Jobs succeeded so far and the last finish time."""
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(max(finished_at), 0) FROM spoolq_jobs"
            " WHERE state = 'succeeded'"
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def fleet_burst(
    url: str, stamp: Stamp, work: Path, daemons: int, shape: str, n: int
) -> dict[str, float]:
    lanes = SHAPES[shape]
    names = list(lanes)
    tag = f"fleet-d{daemons}-{shape.split()[0]}"
    with schema(url) as store_url, scratch(work, tag) as root, contextlib.ExitStack() as stack:
        stamps = root / "stamps"
        spools, fleet = [], []
        for i in range(daemons):
            home = root / f"host{i}"
            spool = home / "spool"
            spool.mkdir(parents=True)
            spools.append(Publisher(spool))
            fleet.append(
                stack.enter_context(Daemon(home, spool, lanes, env={"SPOOLQ_STORE": store_url}))
            )
        for d in fleet:
            d.wait_ready()
        pairs = [
            spools[k % daemons].prepare(trigger_text(stamp.cmd(stamps), names[k % len(names)]))
            for k in range(n)
        ]
        time.sleep(0.5)
        before = [cpu_sample(d.pid) for d in fleet]
        t0 = time.time_ns()
        for pair in pairs:
            os.rename(*pair)

        def started() -> bool:
            try:
                return os.stat(stamps).st_size >= n * STAMP_WIDTH
            except FileNotFoundError:
                return False

        wait_for(started, 120 + n / 20, f"{n} jobs to start")
        done = wait_for(lambda: (f := finished(store_url))[0] >= n and f, 120, "jobs to finish")
        cpu = sum(cpu_sample(d.pid).cpu_s(b) for d, b in zip(fleet, before, strict=True))
        last_start = max(read_stamps(stamps))
    return {
        "jobs_per_s_started": n / ((last_start - t0) / 1e9),
        "jobs_per_s_finished": n / (done[1] - t0 / 1e9),
        # The daemons' own CPU (all of them) per job: where a core's time goes on our side.
        "daemon_cpu_ms_per_job": cpu / n * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("SPOOLQ_BENCH_POSTGRES", DEFAULT_URL))
    p.add_argument("--size", type=int, default=1500, help="triggers per burst (default 1500)")
    p.add_argument("--runs", type=int, default=1, help="runs of everything (default 1)")
    p.add_argument("--daemons", default="1,2,3", help="fleet sizes (default 1,2,3)")
    args = p.parse_args(argv)
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-fleet-") as tmp:
        work = Path(tmp)
        stamp = build_stamp(work)
        for run in range(args.runs):
            for daemons in (int(x) for x in args.daemons.split(",")):
                for shape in SHAPES:
                    progress(f"run {run + 1}/{args.runs}: {daemons} daemon(s), {shape}")
                    figures = fleet_burst(args.url, stamp, work, daemons, shape, args.size)
                    for key, value in figures.items():
                        rows.setdefault(f"{daemons} daemon(s), {shape}: {key}", []).append(value)
    for label, values in rows.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{statistics.median(values):9.1f}  {label}  (runs: {shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
