"""Idle: CPU time a daemon with nothing to do uses over a window (60 s; --quick 5 s).

CPU is the sum of the daemon's threads' on-CPU time from /proc/<pid>/task/*/schedstat
(nanoseconds; utime+stime ticks as the fallback); wake-ups are its context switches. The
runs are separate daemons measured side by side over the same window, so several runs cost
one window of wall time; an idle daemon does not disturb another.
"""

from __future__ import annotations

import contextlib
import time

from bench.common import (
    BenchResult,
    Context,
    Daemon,
    Figure,
    cpu_sample,
    medians,
    progress,
    scratch,
)

NAME = "idle"
TITLE = "CPU used by a daemon with nothing to do"


def run(ctx: Context) -> BenchResult:
    window = float(ctx.size(60, 5))
    runs = ctx.runs(3, 1)
    res = BenchResult(NAME, TITLE, {"window_s": window, "runs": runs})
    progress(f"idle: {runs} daemon(s) side by side for {window:g} s")
    with contextlib.ExitStack() as stack:
        daemons = []
        for i in range(runs):
            root = stack.enter_context(scratch(ctx.workdir, f"{NAME}{i}"))
            spool = root / "spool"
            spool.mkdir()
            d = Daemon(root, spool)
            stack.callback(d.stop)
            d.start()
            daemons.append(d)
        for d in daemons:
            d.wait_ready()
        time.sleep(2.0)  # past start-up
        before = [cpu_sample(d.pid) for d in daemons]
        time.sleep(window)
        after = [cpu_sample(d.pid) for d in daemons]
        for b, a in zip(before, after, strict=True):
            span = a.mono - b.mono
            cpu = a.cpu_s(b)
            res.runs.append(
                {
                    "window_s": span,
                    "cpu_s": cpu,
                    "cpu_pct": 100 * cpu / span,
                    "wakeups_per_s": (a.switches - b.switches) / span,
                }
            )
    g = medians(res.runs).get
    res.figures = [
        Figure(f"CPU over {window:g} s", g("cpu_s"), "s", "", None, 4),
        Figure.goal("CPU share of one core", g("cpu_pct"), "%", "<=", 0.1, 4, target="<= 0.1 %"),
        Figure("wake-ups (context switches)", g("wakeups_per_s"), "/s", "", None, 2),
    ]
    return res
