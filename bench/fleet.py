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
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    CLK_TCK,
    Daemon,
    Publisher,
    Stamp,
    build_stamp,
    cpu_sample,
    print_medians,
    progress,
    read_stamps,
    scratch,
    trigger_text,
    wait_for,
)
from bench.pg import DEFAULT_URL, ENDED_TRIGGER, schema

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


def server_ticks() -> dict[int, int]:
    """CPU ticks (user + system) of each PostgreSQL server process on this machine."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if data[data.find(b"(") + 1 : data.rfind(b")")] != b"postgres":
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    return ticks


def machine_ticks() -> int:
    """CPU ticks the whole machine spent busy (every core, everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        cpu = [int(v) for v in fh.readline().split()[1:]]
    return sum(cpu) - cpu[3] - cpu[4]


def fleet_burst(
    url: str, stamp: Stamp, work: Path, daemons: int, shape: str, n: int, ended_notify: bool = True
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
        if not ended_notify:  # what `spoolq wait`'s wake-up costs the fleet when nobody waits
            import psycopg

            with psycopg.connect(store_url, autocommit=True) as admin:
                admin.execute(f"ALTER TABLE spoolq_jobs DISABLE TRIGGER {ENDED_TRIGGER}")
        pairs = [
            spools[k % daemons].prepare(trigger_text(stamp.cmd(stamps), names[k % len(names)]))
            for k in range(n)
        ]
        time.sleep(0.5)
        before = [cpu_sample(d.pid) for d in fleet]
        server_before, machine_before = server_ticks(), machine_ticks()
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
        server_after, machine = server_ticks(), machine_ticks() - machine_before
        # (Backends that live through the burst: the daemons' connections, the server's own.)
        server = sum(t - server_before[p] for p, t in server_after.items() if p in server_before)
        last_start = max(read_stamps(stamps))
    return {
        "jobs_per_s_started": n / ((last_start - t0) / 1e9),
        "jobs_per_s_finished": n / (done[1] - t0 / 1e9),
        # The daemons' own CPU (all of them) per job: where a core's time goes on our side.
        "daemon_cpu_ms_per_job": cpu / n * 1000,
        # The server's processes, and the whole machine (the jobs and the kernel are most of
        # the rest): at 2 cores, 2000 / machine ms per job is the ceiling of jobs/s.
        "server_cpu_ms_per_job": server / CLK_TCK / n * 1000,
        "machine_cpu_ms_per_job": machine / CLK_TCK / n * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("SPOOLQ_BENCH_POSTGRES", DEFAULT_URL))
    p.add_argument("--size", type=int, default=1500, help="triggers per burst (default 1500)")
    p.add_argument("--runs", type=int, default=1, help="runs of everything (default 1)")
    p.add_argument("--daemons", default="1,2,3", help="fleet sizes (default 1,2,3)")
    p.add_argument(
        "--ended-notify",
        choices=("on", "off", "both"),
        default="on",
        help="the store's notification as each job ends (it wakes spoolq wait): keep it, "
        "disable it, or both in turn (default on)",
    )
    args = p.parse_args(argv)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.ended_notify]
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-fleet-") as tmp:
        work = Path(tmp)
        stamp = build_stamp(work)
        for run in range(args.runs):
            for daemons in (int(x) for x in args.daemons.split(",")):
                for shape in SHAPES:
                    for notify in modes:
                        label = f"{daemons} daemon(s), {shape}" + ("" if notify else ", no notify")
                        progress(f"run {run + 1}/{args.runs}: {label}")
                        figures = fleet_burst(
                            args.url, stamp, work, daemons, shape, args.size, ended_notify=notify
                        )
                        for key, value in figures.items():
                            rows.setdefault(f"{label}: {key}", []).append(value)
    print_medians(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
