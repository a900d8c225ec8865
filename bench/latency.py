"""Latency: from ``rename(x.part, x.trigger)`` to the job's command running.

Each trigger runs the stamp command, which writes CLOCK_REALTIME into a FIFO the bench
reads; the bench took CLOCK_REALTIME just before the rename. Triggers go one at a time, a
short gap after each start so the previous job's bookkeeping is over (the figure is the
latency of a daemon that is waiting, not of one that is busy).

The floor, in the same run and interleaved trigger by trigger: ``inotifywait -m -e
moved_to DIR | while read f; do stamp FIFO; done`` (inotify-tools), which does the least a
watcher can do: read the event, fork, exec. Nothing durable. Beside them, when it compiles,
the durable watch (bench/durable.py): a compiled watcher that claims, records and logs each
trigger before starting its job, the least a durable queue can do.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench import durable
from bench.common import (
    BenchResult,
    Context,
    Daemon,
    Figure,
    Publisher,
    StampFifo,
    clean_env,
    medians,
    percentile,
    progress,
    scratch,
    trigger_text,
    wait_for,
)

NAME = "latency"
TITLE = "rename -> command started, one trigger at a time"
GAP_S = 0.02  # after each start: let the previous job finish before the next publish
TIMEOUT_S = 60.0  # longer than a rescan interval: a lost event still ends, slowly


class Watcher:
    """A floor's watcher process in its own session; ready once ``ready`` is on its
    stderr; stopped by escalation."""

    def __init__(self, argv: list[str], err: Path, ready: bytes) -> None:
        self.argv, self.err, self.ready = argv, err, ready
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def inotify_loop(cls, root: Path, directory: Path, cmd: list[str]) -> Watcher:
        """The shell loop users would write instead of spoolq."""
        exe = shutil.which("inotifywait")
        if exe is None:
            raise FileNotFoundError("inotifywait (apt-get install inotify-tools)")
        script = (
            f"{shlex.quote(exe)} -m -e moved_to --format %f {shlex.quote(str(directory))} "
            f"| while read -r f; do {shlex.join(cmd)}; done"
        )
        return cls(["/bin/sh", "-c", script], root / "inotifywait.err", b"Watches established")

    def start(self) -> None:
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=clean_env(),
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        wait_for(lambda: self.ready in self.err.read_bytes(), 10, self.argv[0], 0.01)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(5)
                return
            except subprocess.TimeoutExpired:
                continue


def _summary(prefix: str, samples: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50": percentile(samples, 50),
        f"{prefix}_p90": percentile(samples, 90),
        f"{prefix}_p99": percentile(samples, 99),
        f"{prefix}_max": max(samples) if samples else float("nan"),
    }


Floor = tuple[str, Path, Watcher, StampFifo]  # name, its directory, its watcher, its stamps


def _floor(
    root: Path, ctx: Context, name: str, make: Callable[[Path, list[str]], Watcher]
) -> Floor:
    directory = root / name
    directory.mkdir()
    stamps = StampFifo(root / f"{name}.fifo")
    return name, directory, make(directory, ctx.stamp.cmd(stamps.path)), stamps


def one_run(ctx: Context, n: int, with_floor: bool, watch: Path | None) -> dict[str, object]:
    """Triggers one at a time into spoolq's spool and each floor's directory, in turn."""
    with scratch(ctx.workdir, NAME) as root:
        spool = root / "spool"
        spool.mkdir()
        fifo = StampFifo(root / "spoolq.fifo")
        daemon = Daemon(root, spool)
        floors: list[Floor] = []
        if with_floor:
            floors.append(
                _floor(root, ctx, "inotifywait", lambda d, cmd: Watcher.inotify_loop(root, d, cmd))
            )
        if watch is not None:
            state = root / "durable-state"
            floors.append(
                _floor(
                    root,
                    ctx,
                    "durable_watch",
                    lambda d, cmd: Watcher(
                        durable.watch_argv(watch, d, state, cmd), root / "watch.err", b"ready"
                    ),
                )
            )
        try:
            daemon.start()
            for _, _, watcher, _ in floors:
                watcher.start()
                watcher.wait_ready()
            daemon.wait_ready()
            time.sleep(0.5)  # past the start-up work
            sides: list[tuple[str, Publisher, StampFifo, bytes, list[float]]] = [
                ("spoolq", Publisher(spool), fifo, trigger_text(ctx.stamp.cmd(fifo.path)), []),
            ]
            sides += [
                (name, Publisher(d), stamps, trigger_text(ctx.stamp.cmd(stamps.path)), [])
                for name, d, _, stamps in floors
            ]
            for i in range(n):
                # Rotate which goes first so that none always follows another.
                k = i % len(sides)
                for _, pub, stamps, data, samples in sides[k:] + sides[:k]:
                    pair = pub.prepare(data)
                    t0 = pub.publish(pair)
                    stamp = stamps.wait(TIMEOUT_S)
                    if stamp is None:
                        raise TimeoutError(f"trigger {pair[1]} did not start in {TIMEOUT_S}s")
                    samples.append((stamp - t0) / 1e6)
                    time.sleep(GAP_S)
        finally:
            for _, _, watcher, stamps in floors:
                watcher.stop()
                stamps.close()
            daemon.stop()
            fifo.close()
    samples_ms = {name: samples for name, _, _, _, samples in sides}
    row: dict[str, object] = {}
    for name, samples in samples_ms.items():
        row.update(_summary(name, samples))
    p50 = {name: percentile(samples, 50) for name, samples in samples_ms.items()}
    if "inotifywait" in p50:
        row["ratio_p50"] = p50["spoolq"] / p50["inotifywait"]
    if "durable_watch" in p50:
        row["ratio_p50_vs_durable_watch"] = p50["spoolq"] / p50["durable_watch"]
        if "inotifywait" in p50:
            row["ratio_durable_watch_p50"] = p50["durable_watch"] / p50["inotifywait"]
    row["samples_ms"] = samples_ms
    return row


def run(ctx: Context) -> BenchResult:
    n = ctx.size(200, 50)
    runs = ctx.runs(3, 1)
    with_floor = shutil.which("inotifywait") is not None
    res = BenchResult(NAME, TITLE, {"triggers_per_run": n, "runs": runs, "gap_s": GAP_S})
    if not with_floor:
        res.notes.append("inotifywait not installed: no floor, no ratio (make bench installs it)")
    watch = durable.build_c(ctx.workdir, "durable_watch")
    if watch is None:
        res.notes.append("no C compiler or no SQLite header (libsqlite3-dev): no durable watch")
    for r in range(runs):
        progress(f"latency run {r + 1}/{runs}: {n} triggers each for spoolq and the floors")
        res.runs.append(one_run(ctx, n, with_floor, watch))
    m = medians([{k: v for k, v in r.items() if isinstance(v, float)} for r in res.runs])
    g = m.get
    res.figures = [
        Figure.goal("spoolq p50", g("spoolq_p50"), "ms", "<=", 5, 2, target="<= 5 ms"),
        Figure("spoolq p90", g("spoolq_p90"), "ms", "", None, 2),
        Figure.goal("spoolq p99", g("spoolq_p99"), "ms", "<=", 20, 2, target="<= 20 ms"),
        Figure("inotifywait loop p50", g("inotifywait_p50"), "ms", "(floor)", None, 2),
        Figure("inotifywait loop p90", g("inotifywait_p90"), "ms", "", None, 2),
        Figure("inotifywait loop p99", g("inotifywait_p99"), "ms", "", None, 2),
        Figure.goal(
            "p50 ratio spoolq/inotifywait", g("ratio_p50"), "x", "<=", 1.5, 2, target="<= 1.5x"
        ),
        Figure("durable watch (C) p50", g("durable_watch_p50"), "ms", "", None, 2),
        Figure("durable watch (C) p99", g("durable_watch_p99"), "ms", "", None, 2),
        Figure(
            "p50 ratio durable watch/inotifywait", g("ratio_durable_watch_p50"), "x", "", None, 2
        ),
        Figure("p50 ratio spoolq/durable watch", g("ratio_p50_vs_durable_watch"), "x", "", None, 2),
    ]
    return res
