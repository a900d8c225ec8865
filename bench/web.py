"""The web must not slow the daemon, and must answer quickly on a big store.

    uv run python -m bench.web                  # both parts, full size
    uv run python -m bench.web --quick          # smoke version
    uv run python -m bench.web --runs 5 --jobs 3000 --store-jobs 100000

1. **Burst with the web busy**: N triggers (the stamp command) into a lane of concurrency
   1, once with a daemon run without ``--http`` and once with ``--http`` while a client
   keeps the status page open (its live part fetched twice a second, as the page's script
   does), another scrapes ``/metrics`` every second, and a third follows the log of a long
   job in another lane (``?follow=1``). The long job runs in both, so the only difference
   is the web. Runs alternate (without-with, with-without, ...) in one process; the figure is
   the ratio of the medians of jobs/s (to the last job finished). Bound: >= 0.95. Beside
   it, the CPU time the daemon's process spends per second with the web idle and watched,
   which a loaded machine blurs less than a rate.
2. **A big store**: ``spoolq web`` on a store of ``--store-jobs`` jobs (queued in two paused
   lanes, the worst case for the lane counts), and ``/api/status`` and ``/metrics`` asked
   one after the other; p50 and p99 of the answer time. Bound: p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.common import (
    SPOOLQ,
    STAMP_WIDTH,
    Daemon,
    Publisher,
    StoreReader,
    build_stamp,
    clean_env,
    percentile,
    progress,
    scratch,
    trigger_text,
    wait_for,
)

BOUND_RATIO = 0.95
BOUND_P99_MS = 50.0


def _url(daemon_log: Path) -> tuple[str, str]:
    """The URL and token a daemon announced (``event=http``)."""

    def found() -> tuple[str, str] | None:
        for line in daemon_log.read_text().splitlines():
            if '"event": "http"' in line:
                ev = json.loads(line)
                return ev["url"].rstrip("/"), Path(ev["token_file"]).read_text().strip()
        return None

    got = wait_for(found, 30, "the daemon's event=http line")
    assert got is not None
    return got


class Watchers:
    """The page, the scraper and the log follower, each on a thread, until ``stop``."""

    def __init__(self, url: str, token: str, follow_job: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.stop_event = threading.Event()
        self.counts = {"page": 0, "metrics": 0, "log_bytes": 0}
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._every, args=("page", "/ui/overview", 0.5)),
            threading.Thread(target=self._every, args=("metrics", "/metrics", 1.0)),
            threading.Thread(target=self._follow, args=(follow_job,)),
        ]
        for t in self.threads:
            t.daemon = True
            t.start()

    def _every(self, name: str, path: str, interval: float) -> None:
        while not self.stop_event.is_set():
            try:
                r = self.client.get(path)
                if r.status_code != 200:
                    self.errors.append(f"{path}: {r.status_code}")
                self.counts[name] += 1
            except httpx.HTTPError as exc:
                self.errors.append(f"{path}: {exc}")
            self.stop_event.wait(interval)

    def _follow(self, job: str) -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            self.client.stream("GET", f"/api/jobs/{job}/log", params={"follow": 1}) as r,
        ):
            for chunk in r.iter_bytes():
                self.counts["log_bytes"] += len(chunk)
                if self.stop_event.is_set():
                    return

    def stop(self) -> dict[str, int]:
        self.stop_event.set()
        self.client.close()
        for t in self.threads:
            t.join(10)
        return dict(self.counts)


def one_burst(workdir: Path, n: int, web: bool) -> tuple[float, dict[str, int]]:
    """jobs/s from the first rename to the last job finished, and what the watchers did."""
    stamp = build_stamp(workdir)
    with scratch(workdir, f"web-burst-{'on' if web else 'off'}") as root:
        spool = root / "spool"
        spool.mkdir()
        stamps = root / "stamps"
        pub = Publisher(spool)
        data = trigger_text(stamp.cmd(stamps), lane="default")
        pairs = [pub.prepare(data) for _ in range(n)]
        long_job = b'{"lane": "side", "command": "while :; do echo working; sleep 0.1; done"}'
        extra = ("--http", "127.0.0.1:0") if web else ()
        with Daemon(root, spool, {"default": 1, "side": 1}, *extra) as daemon:
            daemon.wait_ready()
            pub.publish(pub.prepare(long_job))
            with StoreReader(daemon.db) as db:
                wait_for(lambda: db.count("running") >= 1, 30, "the long job to start")
                side = str(db.one("SELECT id FROM jobs WHERE state = 'running'"))
            watchers = Watchers(*_url(daemon.log), side) if web else None
            time.sleep(1.0)  # the watchers settle in (and the page is fetched) before the burst
            t0 = time.time()
            for pair in pairs:
                os.rename(*pair)
            with StoreReader(daemon.db) as db:
                wait_for(lambda: db.count("succeeded") >= n, 60 + n / 20, f"{n} jobs", every=0.05)
                last = float(db.one("SELECT max(finished_at) FROM jobs WHERE lane = 'default'"))
            counts = watchers.stop() if watchers else {}
            if watchers and watchers.errors:
                raise RuntimeError(f"the web answered errors: {watchers.errors[:5]}")
            if os.path.getsize(stamps) < n * STAMP_WIDTH:
                raise RuntimeError("not every job ran")
    return n / (last - t0), counts


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_cost(workdir: Path, seconds: float = 10.0) -> dict[str, float]:
    """CPU the daemon's process spends per second with the web idle, then busy (page,
    scraper, followed log): what the web takes from the daemon, in CPU time, which a
    loaded machine does not blur the way it blurs a rate."""
    with scratch(workdir, "web-cost") as root:
        spool = root / "spool"
        spool.mkdir()
        pub = Publisher(spool)
        long_job = b'{"lane": "side", "command": "while :; do echo working; sleep 0.1; done"}'
        with Daemon(root, spool, {"side": 1}, "--http", "127.0.0.1:0") as daemon:
            daemon.wait_ready()
            pub.publish(pub.prepare(long_job))
            with StoreReader(daemon.db) as db:
                wait_for(lambda: db.count("running") >= 1, 30, "the long job to start")
                side = str(db.one("SELECT id FROM jobs WHERE state = 'running'"))
            url = _url(daemon.log)
            time.sleep(1.0)
            c0 = _cpu_s(daemon.pid)
            time.sleep(seconds)
            idle = (_cpu_s(daemon.pid) - c0) / seconds
            watchers = Watchers(*url, side)
            time.sleep(1.0)
            c0 = _cpu_s(daemon.pid)
            time.sleep(seconds)
            busy = (_cpu_s(daemon.pid) - c0) / seconds
            watchers.stop()
    progress(f"   daemon CPU: {idle * 1000:.1f} ms/s idle, {busy * 1000:.1f} ms/s watched")
    return {"daemon_cpu_ms_per_s_idle": idle * 1000, "daemon_cpu_ms_per_s_watched": busy * 1000}


def burst_part(workdir: Path, n: int, runs: int) -> dict[str, float]:
    off: list[float] = []
    on: list[float] = []
    for r in range(runs):
        # Which goes first alternates too: the second of a pair runs on warmer caches.
        for web in (False, True) if r % 2 == 0 else (True, False):
            progress(f"web burst run {r + 1}/{runs}, web {'on' if web else 'off'}: {n} jobs")
            rate, counts = one_burst(workdir, n, web)
            (on if web else off).append(rate)
            progress(f"   {rate:.1f} jobs/s {counts or ''}")
    ratio = statistics.median(on) / statistics.median(off)
    return {
        "jobs_per_s_without_web": statistics.median(off),
        "jobs_per_s_with_web": statistics.median(on),
        "ratio": ratio,
    }


def fill_store(state: Path, n: int) -> None:
    """n queued jobs in two paused lanes, through the store's own verbs."""
    from ulid import ULID

    from spoolq.jobs import JobSpec, NewJob
    from spoolq.store import open_store

    store = open_store("sqlite", state)
    try:
        store.set_lanes({"held-a": 1, "held-b": 1})
        store.set_paused("held-a", True)
        store.set_paused("held-b", True)
        spec = JobSpec(steps=(("true",),))
        now = time.time()
        for start in range(0, n, 5000):
            batch = []
            for i in range(start, min(n, start + 5000)):
                job_id = str(ULID())
                batch.append(
                    NewJob(
                        id=job_id,
                        lane="held-a" if i % 2 else "held-b",
                        trigger=f"{state.parent}/{job_id}.trigger",
                        claimed_path=f"{state}/claimed/{job_id}.trigger",
                        log=f"{state}/logs/{job_id}.log",
                        spec=spec,
                        priority=0,
                        timeout=None,
                        retries=0,
                        retry_backoff=5.0,
                        kill_grace=10.0,
                        on_success="archive",
                        created_at=now - n + i,
                    )
                )
            store.enqueue(batch, dedup_window=0, now=now)
    finally:
        store.close()


@contextlib.contextmanager
def web_process(state: Path) -> Iterator[tuple[str, str]]:
    proc = subprocess.Popen(
        [SPOOLQ, "--state-dir", str(state), "web", "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env(),
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"url=(\S+) token_file=(\S+)", line)
        if not m:
            raise RuntimeError(f"spoolq web did not start: {line}{proc.stderr.read()}")
        yield m.group(1).rstrip("/"), Path(m.group(2)).read_text().strip()
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr is not None:
            proc.stderr.close()


def store_part(workdir: Path, n: int, requests: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with scratch(workdir, "web-store") as root:
        state = root / "state"
        progress(f"web: filling a store with {n} queued jobs")
        fill_store(state, n)
        with web_process(state) as (url, token):
            client = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            with client:
                for path in ("/api/status", "/metrics"):
                    client.get(path).raise_for_status()  # warm
                    times = []
                    for _ in range(requests):
                        t = time.perf_counter()
                        r = client.get(path)
                        times.append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
                    key = path.strip("/").replace("/", "_")
                    out[f"{key}_p50_ms"] = percentile(times, 50)
                    out[f"{key}_p99_ms"] = percentile(times, 99)
                    p50, p99 = out[f"{key}_p50_ms"], out[f"{key}_p99_ms"]
                    progress(f"   {path}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run")
    ap.add_argument("--runs", type=int, help="burst runs per mode (default 3, quick 1)")
    ap.add_argument("--jobs", type=int, help="burst size (default 2000, quick 200)")
    ap.add_argument("--store-jobs", type=int, help="jobs in the big store (default 100000)")
    ap.add_argument("--requests", type=int, default=300, help="requests per route")
    ap.add_argument("--only", choices=["burst", "store"], help="one part")
    args = ap.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    n = args.jobs or (200 if args.quick else 2000)
    store_n = args.store_jobs or (10_000 if args.quick else 100_000)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-web-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "burst"):
            results.update(burst_part(workdir, n, runs))
            results.update(watch_cost(workdir, 3.0 if args.quick else 10.0))
        if args.only in (None, "store"):
            results.update(store_part(workdir, store_n, args.requests))
    ok = True
    print(f"web bench: burst of {n} jobs x {runs} runs per mode, store of {store_n} jobs")
    if "ratio" in results:
        met = results["ratio"] >= BOUND_RATIO
        ok &= met
        print(
            f"  burst c=1 jobs/s: without web {results['jobs_per_s_without_web']:.1f}, "
            f"with web busy {results['jobs_per_s_with_web']:.1f}, ratio {results['ratio']:.3f} "
            f"(bound >= {BOUND_RATIO}: {'met' if met else 'NOT met'})"
        )
    if "daemon_cpu_ms_per_s_watched" in results:
        print(
            f"  daemon CPU with the web idle {results['daemon_cpu_ms_per_s_idle']:.1f} ms/s, "
            f"watched (page, scraper, followed log) {results['daemon_cpu_ms_per_s_watched']:.1f}"
            " ms/s"
        )
    for key in ("api_status", "metrics"):
        if f"{key}_p99_ms" in results:
            p99 = results[f"{key}_p99_ms"]
            met = p99 < BOUND_P99_MS
            ok &= met
            p50 = results[f"{key}_p50_ms"]
            print(
                f"  /{key.replace('_', '/')}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                f"(bound < {BOUND_P99_MS:.0f} ms: {'met' if met else 'NOT met'})"
            )
    print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
