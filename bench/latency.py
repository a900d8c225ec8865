"""Latency: from ``rename(x.part, x.trigger)`` to the job's command running.

Each trigger runs the stamp command, which writes CLOCK_REALTIME into a FIFO the bench
reads; the bench took CLOCK_REALTIME just before the rename. Triggers go one at a time, a
short gap after each start so the previous job's bookkeeping is over (the figure is the
latency of a daemon that is waiting, not of one that is busy).

The floor, in the same run and interleaved trigger by trigger: ``inotifywait -m -e
moved_to DIR | while read f; do stamp FIFO; done`` (inotify-tools), which does the least a
watcher can do: read the event, fork, exec. Nothing durable.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

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


class InotifyLoop:
    """The shell loop users would write instead of spoolq."""

    def __init__(self, root: Path, directory: Path, cmd: list[str]) -> None:
        self.root = root
        exe = shutil.which("inotifywait")
        if exe is None:
            raise FileNotFoundError("inotifywait (apt-get install inotify-tools)")
        self.script = (
            f"{shlex.quote(exe)} -m -e moved_to --format %f {shlex.quote(str(directory))} "
            f"| while read -r f; do {shlex.join(cmd)}; done"
        )
        self.err = root / "inotifywait.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", self.script],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=clean_env(),
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        wait_for(lambda: b"Watches established" in self.err.read_bytes(), 10, "inotifywait", 0.01)

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


def one_run(ctx: Context, n: int, with_floor: bool) -> dict[str, object]:
    with scratch(ctx.workdir, NAME) as root:
        spool, plain = root / "spool", root / "plain"
        spool.mkdir()
        plain.mkdir()
        fifo_a, fifo_b = StampFifo(root / "a.fifo"), StampFifo(root / "b.fifo")
        daemon = Daemon(root, spool)
        loop = InotifyLoop(root, plain, ctx.stamp.cmd(fifo_b.path)) if with_floor else None
        try:
            daemon.start()
            if loop:
                loop.start()
                loop.wait_ready()
            daemon.wait_ready()
            time.sleep(0.5)  # past the start-up work
            sides: list[tuple[Publisher, StampFifo, bytes, list[float]]] = [
                (Publisher(spool), fifo_a, trigger_text(ctx.stamp.cmd(fifo_a.path)), []),
            ]
            if loop:
                sides.append((Publisher(plain), fifo_b, trigger_text(["unused"]), []))
            for i in range(n):
                # Alternate which goes first so neither always follows the other.
                for pub, fifo, data, samples in sides if i % 2 == 0 else sides[::-1]:
                    pair = pub.prepare(data)
                    t0 = pub.publish(pair)
                    stamp = fifo.wait(TIMEOUT_S)
                    if stamp is None:
                        raise TimeoutError(f"trigger {pair[1]} did not start in {TIMEOUT_S}s")
                    samples.append((stamp - t0) / 1e6)
                    time.sleep(GAP_S)
        finally:
            if loop:
                loop.stop()
            daemon.stop()
            fifo_a.close()
            fifo_b.close()
    spoolq_ms: list[float] = sides[0][3]
    floor_ms: list[float] = sides[1][3] if loop else []
    row: dict[str, object] = {**_summary("spoolq", spoolq_ms)}
    if floor_ms:
        row.update(_summary("inotifywait", floor_ms))
        row["ratio_p50"] = percentile(spoolq_ms, 50) / percentile(floor_ms, 50)
    row["samples_ms"] = {"spoolq": spoolq_ms, "inotifywait": floor_ms}
    return row


def run(ctx: Context) -> BenchResult:
    n = ctx.size(200, 50)
    runs = ctx.runs(3, 1)
    with_floor = shutil.which("inotifywait") is not None
    res = BenchResult(NAME, TITLE, {"triggers_per_run": n, "runs": runs, "gap_s": GAP_S})
    if not with_floor:
        res.notes.append("inotifywait not installed: no floor, no ratio (make bench installs it)")
    for r in range(runs):
        progress(f"latency run {r + 1}/{runs}: {n} triggers each for spoolq and inotifywait")
        res.runs.append(one_run(ctx, n, with_floor))
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
    ]
    return res
