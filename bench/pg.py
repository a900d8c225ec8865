"""The PostgreSQL store: its verbs and a burst, on localhost and across a (simulated) link.

``python -m bench.pg [--url URL] [--delay-ms D] [--size N] [--runs R]`` measures against the
PostgreSQL server at URL (default ``$SPOOLQ_BENCH_POSTGRES``, else
``postgresql://postgres@127.0.0.1:5432/test``; it must listen on 127.0.0.1), each time in a
schema of its own, dropped afterwards:

- the store's verbs alone: recording a batch of 64 claimed triggers (``enqueue``) and a busy
  lane's hand-off (``end_attempt`` of one job, ``claim_batch`` the next, one transaction),
  medians;
- ``spoolq run`` with N triggers renamed into its spool at once, one lane at concurrency 1,
  then 2: jobs/s from the first rename to the last job's start (its own stamp);

first directly, then through ``bench.netdelay`` adding D ms each way (default 0.5). Not
part of ``python -m bench``: issue 5's targets are the embedded store's. Numbers and what
they mean: docs/performance.md, "PostgreSQL".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.burst import started_burst
from bench.common import (
    Stamp,
    build_stamp,
    print_medians,
    progress,
    read_stamps,
    scratch,
)
from spoolq.claims import new_job_id
from spoolq.jobs import AttemptResult, JobSpec, NewJob
from spoolq.store import open_store

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 64
ENDED_TRIGGER = "spoolq_jobs_notify_ended"  # the jobs table's trigger that wakes spoolq wait
OK = AttemptResult(exit_code=0, reason=None, wall_s=0.001, cpu_s=0.0, max_rss_kb=1)


@contextlib.contextmanager
def schema(url: str) -> Iterator[str]:
    """The URL of a fresh schema on the server (search_path set), dropped afterwards over a
    connection of its own (the server may have been restarted meanwhile: bench.fleet_chaos)."""
    import psycopg

    name = f"spoolq_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


@contextlib.contextmanager
def delayed(url: str, delay_ms: float) -> Iterator[str]:
    """``url`` through a ``bench.netdelay`` relay adding ``delay_ms`` each way."""
    parts = urlsplit(url)
    with socket.socket() as s:  # a free port for the relay
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = subprocess.Popen(
        [sys.executable, "-m", "bench.netdelay", str(port), str(parts.port or 5432), str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert relay.stdout is not None
        relay.stdout.readline()  # "listening"
        user = f"{parts.username}@" if parts.username else ""
        yield urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
    finally:
        relay.terminate()
        relay.wait(5)
        if relay.stdout is not None:
            relay.stdout.close()


def _jobs(n: int) -> list[NewJob]:
    spec = JobSpec(steps=(("/bin/true",),))
    return [
        NewJob(
            id=(job_id := new_job_id()),
            lane="default",
            trigger=f"/bench/{job_id}.trigger",
            claimed_path=f"/bench/claimed/{job_id}.trigger",
            log=f"/bench/logs/{job_id}.log",
            spec=spec,
            priority=0,
            timeout=None,
            retries=0,
            retry_backoff=1.0,
            kill_grace=1.0,
            on_success="archive",
            created_at=time.time(),
        )
        for _ in range(n)
    ]


def verbs(url: str, handoffs: int) -> dict[str, float]:
    """Medians in ms: recording a batch of 64 claims; one hand-off, with the notification
    that wakes ``spoolq wait`` as a job ends (a trigger on the jobs table) and without it,
    in alternating blocks: what that notification costs when nobody waits."""
    import psycopg

    with (
        schema(url) as store_url,
        tempfile.TemporaryDirectory() as tmp,
        psycopg.connect(store_url, autocommit=True) as admin,
    ):
        store = open_store(store_url, Path(tmp))
        try:
            store.set_lanes({"default": 1})
            batches = []
            for _ in range(max(3, handoffs // BATCH + 1)):
                jobs = _jobs(BATCH)
                t0 = time.perf_counter()
                store.enqueue(jobs, dedup_window=0, now=time.time())
                batches.append(time.perf_counter() - t0)
            current = store.claim_batch("default", "bench", time.time())[0]
            times: dict[bool, list[float]] = {True: [], False: []}
            for k in range(handoffs):
                notifying = k // 10 % 2 == 0
                if k % 10 == 0:
                    toggle = "ENABLE" if notifying else "DISABLE"
                    admin.execute(f"ALTER TABLE spoolq_jobs {toggle} TRIGGER {ENDED_TRIGGER}")
                t0 = time.perf_counter()
                with store.atomic():  # as the daemon hands off
                    ended = store.end_attempt(current, OK, None, time.time())
                    (current,) = store.claim_batch("default", "bench", time.time())
                ended()
                times[notifying].append(time.perf_counter() - t0)
        finally:
            store.close()
    return {
        "enqueue_64_ms": statistics.median(batches) * 1000,
        "handoff_ms": statistics.median(times[True]) * 1000,
        "handoff_ms_without_ended_notify": statistics.median(times[False]) * 1000,
    }


def burst(url: str, stamp: Stamp, work: Path, n: int, concurrency: int) -> float:
    """jobs/s from the first rename to the last job's start."""
    with (
        schema(url) as store_url,
        scratch(work, f"pg-burst-c{concurrency}") as root,
        started_burst(stamp, root, n, concurrency, env={"SPOOLQ_STORE": store_url}) as done,
    ):
        return n / ((max(read_stamps(done.stamps)) - done.t0) / 1e9)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pg", description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("SPOOLQ_BENCH_POSTGRES", DEFAULT_URL))
    p.add_argument("--delay-ms", type=float, default=0.5, help="added each way (default 0.5)")
    p.add_argument("--size", type=int, default=1000, help="triggers per burst (default 1000)")
    p.add_argument("--runs", type=int, default=1, help="runs of everything (default 1)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-pg-") as tmp:
        work = Path(tmp)
        stamp = build_stamp(work)
        rows: dict[str, list[float]] = {}
        for run in range(args.runs):
            for link in ("localhost", f"+{args.delay_ms:g} ms each way"):
                ctx = delayed(args.url, args.delay_ms) if link != "localhost" else None
                with ctx or contextlib.nullcontext(args.url) as url:
                    progress(f"run {run + 1}/{args.runs}, {link}: the verbs")
                    figures = verbs(url, 200 if ctx is None else 50)
                    size = args.size if ctx is None else max(50, args.size // 5)
                    for c in (1, 2):
                        progress(f"run {run + 1}/{args.runs}, {link}: burst of {size}, c={c}")
                        figures[f"burst_c{c}_jobs_per_s"] = burst(url, stamp, work, size, c)
                for key, value in figures.items():
                    rows.setdefault(f"{link}: {key}", []).append(value)
    print_medians(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
