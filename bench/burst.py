"""Burst throughput: N triggers renamed into the spool of a running daemon as fast as one
process can, jobs that only run the stamp command (a ``true`` that notes when it started).

Measured from the first rename to the last job *started* (its own stamp) and to the last
job *finished* (``finished_at`` in the store, i.e. durable state included); also the
longest pause between two consecutive starts. Beside it, in
the same run: a bare Python loop that runs the same command N times with
``subprocess.run`` — the ceiling for one serial lane with no bookkeeping at all — and
the durable chain (bench/durable.py): the same command run by a loop that also keeps each
job's state in SQLite and writes its log, in Python and, when it compiles, in C.
Concurrency 1, 2 and 4 each get a fresh daemon and an empty store.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import durable
from bench.common import (
    STAMP_WIDTH,
    BenchResult,
    Context,
    Daemon,
    Figure,
    Publisher,
    Stamp,
    StoreReader,
    hwm_mb,
    medians,
    progress,
    read_stamps,
    scratch,
    trigger_text,
    wait_for,
)

NAME = "burst"
TITLE = "N triggers at once into a running daemon: jobs/s"
CONCURRENCY = (1, 2, 4)


def bare_loop(ctx: Context, n: int) -> float:
    """jobs/s of ``subprocess.run(stamp)`` n times in a row."""
    with scratch(ctx.workdir, "loop") as root:
        cmd = ctx.stamp.cmd(root / "stamps")
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run(cmd, check=True)
        return n / (time.perf_counter() - t0)


def durable_chains(ctx: Context, n: int) -> dict[str, float]:
    """jobs/s of the durable chain in Python, and in C at concurrency 1 and 2 (NaN if it
    does not compile)."""
    if "durable_chain" not in ctx.cache:
        ctx.cache["durable_chain"] = durable.build_c(ctx.workdir)
    exe = ctx.cache["durable_chain"]
    with scratch(ctx.workdir, "chain-py") as root:
        row = {"chain_py_jobs_per_s": durable.python_chain(ctx.stamp, root, n)}
    for c in (1, 2):
        key = "chain_c_jobs_per_s" if c == 1 else f"chain_c{c}_jobs_per_s"
        row[key] = float("nan")
        if exe:
            with scratch(ctx.workdir, f"chain-c-{c}") as root:
                row[key] = durable.c_chain(exe, ctx.stamp, root, n, c)
    return row


@dataclass(frozen=True)
class Started:
    """A burst whose jobs have all started: the daemon (still running), where the jobs'
    stamps are, and CLOCK_REALTIME (ns) before the first and after the last rename."""

    daemon: Daemon
    stamps: Path
    t0: int
    t_published: int


@contextlib.contextmanager
def started_burst(
    stamp: Stamp, root: Path, n: int, concurrency: int, env: dict[str, str] | None = None
) -> Iterator[Started]:
    """n triggers renamed at once into the spool of a fresh daemon under ``root`` (one lane
    of ``concurrency``; ``env`` e.g. picks its store), once every job has stamped its start.
    The daemon is stopped when the block ends."""
    spool = root / "spool"
    spool.mkdir()
    stamps = root / "stamps"
    pub = Publisher(spool)
    data = trigger_text(stamp.cmd(stamps))
    pairs = [pub.prepare(data) for _ in range(n)]
    with Daemon(root, spool, {"default": concurrency}, env=env) as daemon:
        daemon.wait_ready()
        time.sleep(0.5)
        t0 = time.time_ns()
        for pair in pairs:
            os.rename(*pair)
        t_published = time.time_ns()
        want = n * STAMP_WIDTH

        def started() -> bool:
            try:
                return os.stat(stamps).st_size >= want
            except FileNotFoundError:
                return False

        wait_for(started, timeout(n), f"{n} jobs to start")
        yield Started(daemon, stamps, t0, t_published)


def timeout(n: int) -> float:
    return 60 + n / 20  # generous: 20 jobs/s on a loaded machine


def one_burst(ctx: Context, n: int, concurrency: int) -> dict[str, float]:
    with (
        scratch(ctx.workdir, f"{NAME}-c{concurrency}") as root,
        started_burst(ctx.stamp, root, n, concurrency) as burst,
    ):
        with StoreReader(burst.daemon.db) as db:
            wait_for(lambda: db.count("succeeded") >= n, timeout(n), f"{n} jobs to finish")
            last_finish = float(db.one("SELECT max(finished_at) FROM jobs"))
            other = n - db.count("succeeded")
        rss = hwm_mb(burst.daemon.pid)
        starts = read_stamps(burst.stamps)
    t0, t_published = burst.t0, burst.t_published
    if other:
        raise RuntimeError(f"{other} of {n} jobs did not succeed")
    ordered = sorted(starts)
    pauses = [b - a for a, b in itertools.pairwise(ordered)]
    to_start = (max(starts) - t0) / 1e9
    to_finish = last_finish - t0 / 1e9
    return {
        "publish_s": (t_published - t0) / 1e9,
        "first_start_ms": (min(starts) - t0) / 1e6,
        # A lane that stalls while the burst is being claimed shows here, not in the rate.
        "longest_pause_ms": max(pauses, default=0) / 1e6,
        "to_last_start_s": to_start,
        "to_last_finish_s": to_finish,
        "jobs_per_s_started": n / to_start,
        "jobs_per_s_finished": n / to_finish,
        "daemon_peak_rss_mb": rss,
    }


def run(ctx: Context) -> BenchResult:
    n = ctx.size(5000, 500)
    runs = ctx.runs(3, 1)
    res = BenchResult(NAME, TITLE, {"triggers": n, "runs": runs, "concurrency": CONCURRENCY})
    for r in range(runs):
        row: dict[str, float] = {}
        progress(f"burst run {r + 1}/{runs}: bare subprocess loop x {n}")
        row["loop_jobs_per_s"] = bare_loop(ctx, n)
        progress(f"burst run {r + 1}/{runs}: durable chain x {n}")
        row.update(durable_chains(ctx, n))
        for c in CONCURRENCY:
            progress(f"burst run {r + 1}/{runs}: {n} triggers, concurrency {c}")
            for key, value in one_burst(ctx, n, c).items():
                row[f"c{c}_{key}"] = value
        row["ratio_c1_vs_loop"] = row["c1_jobs_per_s_started"] / row["loop_jobs_per_s"]
        row["ratio_c1_finished_vs_loop"] = row["c1_jobs_per_s_finished"] / row["loop_jobs_per_s"]
        row["ratio_chain_py_vs_loop"] = row["chain_py_jobs_per_s"] / row["loop_jobs_per_s"]
        row["ratio_chain_c_vs_loop"] = row["chain_c_jobs_per_s"] / row["loop_jobs_per_s"]
        row["ratio_c1_vs_chain_py"] = row["c1_jobs_per_s_started"] / row["chain_py_jobs_per_s"]
        row["ratio_chain_c2_vs_c1"] = row["chain_c2_jobs_per_s"] / row["chain_c_jobs_per_s"]
        row["ratio_c2_vs_c1"] = row["c2_jobs_per_s_started"] / row["c1_jobs_per_s_started"]
        row["ratio_c4_vs_c1"] = row["c4_jobs_per_s_started"] / row["c1_jobs_per_s_started"]
        res.runs.append(row)
    if ctx.cache.get("durable_chain") is None:
        res.notes.append("no C compiler or no SQLite header (libsqlite3-dev): no C chain")
    m = medians(res.runs)
    g = m.get
    res.figures = [
        Figure("bare subprocess loop", g("loop_jobs_per_s"), "jobs/s", "(floor)", None, 0),
        Figure("c=1 to last start", g("c1_jobs_per_s_started"), "jobs/s", "", None, 0),
        Figure.goal(
            "c=1 to last finish (durable)",
            g("c1_jobs_per_s_finished"),
            "jobs/s",
            ">=",
            250,
            0,
            target=">= 250 jobs/s (issue 2)",
        ),
        Figure.goal(
            "ratio c=1 / loop (started)", g("ratio_c1_vs_loop"), "x", ">=", 0.7, 2, target=">= 0.7x"
        ),
        Figure("ratio c=1 / loop (finished)", g("ratio_c1_finished_vs_loop"), "x", "", None, 2),
        Figure("durable chain, Python", g("chain_py_jobs_per_s"), "jobs/s", "", None, 0),
        Figure("ratio durable chain Python / loop", g("ratio_chain_py_vs_loop"), "x", "", None, 2),
        Figure("durable chain, C", g("chain_c_jobs_per_s"), "jobs/s", "", None, 0),
        Figure("ratio durable chain C / loop", g("ratio_chain_c_vs_loop"), "x", "", None, 2),
        Figure("ratio c=1 / durable chain Python", g("ratio_c1_vs_chain_py"), "x", "", None, 2),
        Figure("durable chain, C, c=2", g("chain_c2_jobs_per_s"), "jobs/s", "", None, 0),
        Figure("ratio durable chain C c=2 / c=1", g("ratio_chain_c2_vs_c1"), "x", "", None, 2),
        Figure("c=2 to last start", g("c2_jobs_per_s_started"), "jobs/s", "", None, 0),
        Figure.goal("ratio c=2 / c=1", g("ratio_c2_vs_c1"), "x", ">=", 1.6, 2, target=">= 1.6x"),
        Figure("c=4 to last start", g("c4_jobs_per_s_started"), "jobs/s", "", None, 0),
        Figure("ratio c=4 / c=1", g("ratio_c4_vs_c1"), "x", "", None, 2),
        Figure("c=1 first job started", g("c1_first_start_ms"), "ms", "", None, 1),
        Figure("c=1 longest pause between starts", g("c1_longest_pause_ms"), "ms", "", None, 1),
        Figure("c=1 daemon peak RSS", g("c1_daemon_peak_rss_mb"), "MB", "", None, 1),
    ]
    return res
