"""Long queues: does a big queue slow everything else down?

A daemon holding N jobs queued in a paused lane (claimed at start-up, as in ``backlog``):
its RSS; the latency of triggers published one at a time into another lane (``default``),
against the same probe on a daemon with an empty store in the same run; its idle CPU with
the queue in place; and, on ``resume`` of the paused lane, the time until its first job
starts.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.backlog import HELD, backlog_daemon
from bench.common import (
    BenchResult,
    Context,
    Daemon,
    Figure,
    Publisher,
    StampFifo,
    check,
    cpu_sample,
    hwm_mb,
    medians,
    percentile,
    prepare_store,
    progress,
    read_stamps,
    resume_lane,
    rss_mb,
    scratch,
    trigger_text,
    wait_for,
)

NAME = "long_queue"
TITLE = "N jobs queued in a paused lane: RSS, latency in another lane, resume"
GAP_S = 0.02


def probe(ctx: Context, spool: Path, fifo_path: Path, k: int) -> list[float]:
    """Latency (ms) of k triggers published one at a time into ``spool``'s default lane."""
    fifo = StampFifo(fifo_path)
    try:
        pub = Publisher(spool, prefix="probe")
        data = trigger_text(ctx.stamp.cmd(fifo.path))
        out = []
        for _ in range(k):
            t0 = pub.publish(pub.prepare(data))
            stamp = fifo.wait(60)
            if stamp is None:
                raise TimeoutError("probe trigger did not start within 60 s")
            out.append((stamp - t0) / 1e6)
            time.sleep(GAP_S)
        return out
    finally:
        fifo.close()


def empty_probe(ctx: Context, k: int) -> list[float]:
    with scratch(ctx.workdir, f"{NAME}-empty") as root:
        spool = root / "spool"
        spool.mkdir()
        prepare_store(spool / ".spoolq", paused=[HELD])
        with Daemon(root, spool, {HELD: 1}) as daemon:
            daemon.wait_ready()
            time.sleep(0.5)
            return probe(ctx, spool, root / "probe.fifo", k)


def run(ctx: Context) -> BenchResult:
    n = ctx.size(100_000, 5_000)
    k = 50 if not ctx.quick else 15
    window = 20.0 if not ctx.quick else 2.0  # full: spans two heartbeats (10 s)
    runs = ctx.runs(3, 1)
    res = BenchResult(
        NAME, TITLE, {"queued": n, "probes": k, "idle_window_s": window, "runs": runs}
    )
    for r in range(runs):
        progress(f"long queue run {r + 1}/{runs}: probe on an empty store")
        empty = empty_probe(ctx, k)
        progress(f"long queue run {r + 1}/{runs}: {n:,} jobs queued in a paused lane")
        with backlog_daemon(ctx, n, NAME) as b:
            time.sleep(1.0)
            pid = b.daemon.pid
            loaded = probe(ctx, b.daemon.spool, b.root / "probe.fifo", k)
            rss = rss_mb(pid)
            hwm = hwm_mb(pid)
            c0 = cpu_sample(pid)
            time.sleep(window)
            c1 = cpu_sample(pid)
            t0 = time.time_ns()
            resume_lane(b.daemon.state, HELD)
            wait_for(lambda: read_stamps(b.stamps), 60, "the first held job", every=0.002)
            resumed_ms = (min(read_stamps(b.stamps)) - t0) / 1e6
        row = {
            "empty_p50_ms": percentile(empty, 50),
            "empty_p99_ms": percentile(empty, 99),
            "loaded_p50_ms": percentile(loaded, 50),
            "loaded_p99_ms": percentile(loaded, 99),
            "rss_mb": rss,
            "peak_rss_mb": hwm,
            "idle_cpu_pct": 100 * c1.cpu_s(c0) / (c1.mono - c0.mono),
            "resume_to_first_start_ms": resumed_ms,
        }
        row["ratio_p50_loaded_vs_empty"] = row["loaded_p50_ms"] / row["empty_p50_ms"]
        res.runs.append(row)
    g = medians(res.runs).get
    res.figures = [
        Figure.goal("daemon RSS with queue", g("rss_mb"), "MB", "<=", 150, 1, target="<= 150 MB"),
        Figure("other lane p50, empty store", g("empty_p50_ms"), "ms", "", None, 2),
        Figure(
            f"other lane p50, {n:,} queued",
            g("loaded_p50_ms"),
            "ms",
            "<= 5 ms",
            check(g("loaded_p50_ms"), "<=", 5),
            2,
        ),
        Figure(
            f"other lane p99, {n:,} queued",
            g("loaded_p99_ms"),
            "ms",
            "<= 20 ms",
            check(g("loaded_p99_ms"), "<=", 20),
            2,
        ),
        Figure("p50 ratio queued / empty", g("ratio_p50_loaded_vs_empty"), "x", "", None, 2),
        Figure.goal("idle CPU with queue", g("idle_cpu_pct"), "%", "<=", 0.1, 3, target="<= 0.1 %"),
        Figure(
            "resume -> first held job started", g("resume_to_first_start_ms"), "ms", "", None, 1
        ),
    ]
    return res
