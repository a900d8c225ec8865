"""Big output: one job writes N bytes to stdout (``head -c N /dev/zero``; 5 GB, --quick
1 GB). Its stdout is the log file itself (no pipe through the daemon), so the daemon should
neither grow nor work while it runs.

Measured: log throughput = bytes / the attempt's wall time (from the store); the daemon's
RSS sampled every 50 ms during the job against its RSS just before; the daemon's CPU time
during the job. Floor, same run: the same ``head`` writing to a file directly.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

from bench.common import (
    BenchResult,
    Context,
    Daemon,
    Figure,
    Publisher,
    StoreReader,
    cpu_sample,
    medians,
    progress,
    rss_mb,
    scratch,
    trigger_text,
    wait_for,
)

NAME = "big_output"
TITLE = "one job writing gigabytes to stdout: log throughput, daemon RSS"
MB = 1e6


def _head() -> str:
    return shutil.which("head") or "/usr/bin/head"


def floor(ctx: Context, nbytes: int) -> float:
    """MB/s of head writing the same bytes straight to a file."""
    with scratch(ctx.workdir, "floor") as root, open(root / "out", "wb") as out:
        t0 = time.perf_counter()
        subprocess.run([_head(), "-c", str(nbytes), "/dev/zero"], stdout=out, check=True)
        return nbytes / (time.perf_counter() - t0) / MB


def one_run(ctx: Context, nbytes: int) -> dict[str, float]:
    with scratch(ctx.workdir, NAME) as root:
        spool = root / "spool"
        spool.mkdir()
        with Daemon(root, spool) as daemon:
            daemon.wait_ready()
            time.sleep(0.5)
            base = rss_mb(daemon.pid)
            cpu0 = cpu_sample(daemon.pid)
            peak = [base]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.05):
                    try:
                        peak[0] = max(peak[0], rss_mb(daemon.pid))
                    except OSError:
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                pub = Publisher(spool)
                pub.publish(pub.prepare(trigger_text([_head(), "-c", str(nbytes), "/dev/zero"])))
                with StoreReader(daemon.db) as db:
                    wait_for(
                        lambda: db.count("succeeded") + db.count("failed") >= 1,
                        120 + nbytes / 50e6,
                        "the big-output job",
                        every=0.2,
                    )
                    state = db.one("SELECT state FROM jobs")
                    wall = float(db.one("SELECT wall_s FROM attempts"))
                    log = db.one("SELECT log FROM jobs")
            finally:
                done.set()
                sampler.join()
            cpu = cpu_sample(daemon.pid).cpu_s(cpu0)
            after = rss_mb(daemon.pid)
        written = (root / "spool" / ".spoolq" / "logs" / log.rsplit("/", 1)[-1]).stat().st_size
    if state != "succeeded" or written < nbytes:
        raise RuntimeError(f"big-output job {state}, log {written} bytes of {nbytes}")
    return {
        "log_mb_per_s": nbytes / wall / MB,
        "job_wall_s": wall,
        "rss_before_mb": base,
        "rss_peak_mb": peak[0],
        "rss_growth_mb": peak[0] - base,
        "rss_after_mb": after,
        "daemon_cpu_s": cpu,
    }


def run(ctx: Context) -> BenchResult:
    nbytes = ctx.size(5 * 2**30, 2**30)
    runs = ctx.runs(3, 1)
    res = BenchResult(NAME, TITLE, {"bytes": nbytes, "runs": runs})
    for r in range(runs):
        progress(f"big output run {r + 1}/{runs}: {nbytes / 2**30:g} GiB")
        row = {"floor_mb_per_s": floor(ctx, nbytes), **one_run(ctx, nbytes)}
        row["ratio_vs_floor"] = row["log_mb_per_s"] / row["floor_mb_per_s"]
        res.runs.append(row)
    g = medians(res.runs).get
    res.figures = [
        Figure.goal(
            "log write throughput", g("log_mb_per_s"), "MB/s", ">=", 500, 0, target=">= 500 MB/s"
        ),
        Figure("head > file directly", g("floor_mb_per_s"), "MB/s", "(floor)", None, 0),
        Figure("ratio spoolq / direct", g("ratio_vs_floor"), "x", "", None, 2),
        Figure.goal(
            "daemon RSS growth during job", g("rss_growth_mb"), "MB", "<", 10, 2, target="< 10 MB"
        ),
        Figure("daemon CPU during job", g("daemon_cpu_s"), "s", "", None, 3),
    ]
    return res
