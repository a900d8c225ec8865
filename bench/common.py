"""What every benchmark shares: the tiny timestamp command, a real ``spoolq run`` process,
a read-only look into its store, /proc readings, statistics and the result types.

Timing rule: every figure is taken from timestamps that the kernel or the job itself
records (CLOCK_REALTIME in the job, /proc for CPU and memory), never from the daemon's own
event log, so that the daemon cannot flatter itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPOOLQ = shutil.which("spoolq", path=str(Path(sys.executable).parent)) or "spoolq"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STAMP_WIDTH = 20  # "%019d\n": every stamp line has the same length, so size counts lines

# The job every benchmark runs: append CLOCK_REALTIME in nanoseconds to argv[1] (a file or
# a FIFO) and exit; with no argument it is `true`. Static, so exec costs what exec costs and
# no dynamic loader time hides in the figures.
STAMP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 2) return 0;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%019lld\n",
                     (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    if (write(fd, buf, (size_t)n) != n) return 1;
    return close(fd) != 0;
}
"""

STAMP_PY = (
    "import os, sys, time\n"
    "t = time.time_ns()\n"
    "if len(sys.argv) > 1:\n"
    "    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
    "    os.write(fd, b'%019d\\n' % t)\n"
    "    os.close(fd)\n"
)


def clean_env() -> dict[str, str]:
    """The bench's environment without SPOOLQ_* settings that would redirect the daemon."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}


def print_medians(rows: dict[str, list[float]], labels: dict[str, str] | None = None) -> None:
    """One line per figure: the median of its runs, its label, and every run's value."""
    for key, values in rows.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        label = labels.get(key, key) if labels else key
        print(f"{statistics.median(values):9.1f}  {label}  (runs: {shown})")


def verdict_lines(problems: list[str]) -> list[str]:
    """The end of a harness's summary: its problems, or that every check passed."""
    return ["PROBLEMS:", *(f"  - {p}" for p in problems)] if problems else ["all checks passed"]


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


# -- the tiny command ------------------------------------------------------------------------
@dataclass(frozen=True)
class Stamp:
    """How to run the timestamp command: ``argv + [path]``."""

    argv: tuple[str, ...]
    kind: str  # "c-static" | "c" | "python"

    def cmd(self, path: str | os.PathLike[str] | None = None) -> list[str]:
        return [*self.argv, *([os.fspath(path)] if path is not None else [])]


def build_stamp(workdir: Path) -> Stamp:
    """Compile the stamp program with cc (static if libc.a is there); else use Python."""
    src = workdir / "stamp.c"
    src.write_text(STAMP_C)
    exe = workdir / "stamp"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        for flags, kind in ((["-static"], "c-static"), ([], "c")):
            res = subprocess.run(
                [cc, "-O2", *flags, "-o", str(exe), str(src)], capture_output=True, check=False
            )
            if res.returncode == 0:
                return Stamp((str(exe),), kind)
    script = workdir / "stamp.py"
    script.write_text(STAMP_PY)
    return Stamp((sys.executable, "-S", str(script)), "python")


def read_stamps(path: Path) -> list[int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [int(x) for x in data.split()]


class StampFifo:
    """A FIFO the stamp command writes into; ``wait`` blocks (in poll, no busy loop) for
    the next stamp. Opened read-write so it never reports EOF and writers never block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._buf = b""

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    self._buf += os.read(self._fd, 4096)
        line, _, self._buf = self._buf.partition(b"\n")
        return int(line)

    def close(self) -> None:
        os.close(self._fd)


# -- producing triggers ----------------------------------------------------------------------
def trigger_text(argv: Sequence[str], lane: str | None = None) -> bytes:
    doc: dict[str, Any] = {"argv": list(argv)}
    if lane:
        doc["lane"] = lane
    return json.dumps(doc).encode()


def write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Publisher:
    """Atomic publish, split so the timed part is the rename alone: ``prepare`` writes the
    hidden ``.NAME.part``, ``publish`` renames it to ``NAME.trigger`` and returns
    CLOCK_REALTIME (ns) taken just before the rename."""

    def __init__(self, directory: Path, prefix: str = "t") -> None:
        self.dir = directory
        self.prefix = prefix
        self.count = 0

    def prepare(self, data: bytes) -> tuple[str, str]:
        self.count += 1
        name = f"{self.prefix}{self.count:07d}"
        part = os.path.join(self.dir, f".{name}.part")
        write_file(Path(part), data)
        return part, os.path.join(self.dir, f"{name}.trigger")

    @staticmethod
    def publish(pair: tuple[str, str]) -> int:
        t = time.time_ns()
        os.rename(*pair)
        return t


# -- the daemon --------------------------------------------------------------------------------
class Daemon:
    """``spoolq run SPOOL`` in its own session, JSON event log to a file (as under a service
    manager). ``stop`` drains, then escalates; always called from a ``finally``."""

    def __init__(
        self,
        root: Path,
        spool: Path,
        lanes: dict[str, int] | None = None,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.env = {**clean_env(), **(env or {})}  # e.g. SPOOLQ_STORE (bench.pg)
        self.spool = spool
        self.state = spool / ".spoolq"
        self.db = self.state / "spoolq.db"
        self.log = root / "daemon.log"
        self.args = [SPOOLQ, "run", "--log-format", "json"]
        for lane, n in (lanes or {}).items():
            self.args += ["--lane-concurrency", f"{lane}={n}"]
        self.args += [*extra, str(spool)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_mono = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.started_mono = time.monotonic()
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.root,
                env=self.env,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Block until the ``ready`` event; return seconds since start."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with open(self.log, "rb") as fh:
            buf = b""
            while True:
                buf += fh.read()
                if b'"event": "ready"' in buf:
                    return time.monotonic() - self.started_mono
                if self.proc.poll() is not None:
                    raise RuntimeError(f"spoolq run exited {self.proc.returncode}: {buf[-2000:]!r}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"spoolq run not ready after {timeout}s")
                time.sleep(0.01)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        # SIGTERM drains; a second terminates running jobs; SIGKILL if it still hangs.
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
                return

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StoreReader:
    """A second connection on the daemon's SQLite file, used between runs or for cheap
    polls (WAL: readers never block the daemon's writes)."""

    def __init__(self, db: Path) -> None:
        self._db = sqlite3.connect(db, timeout=30, isolation_level=None)

    def one(self, sql: str, *args: Any) -> Any:
        return self._db.execute(sql, args).fetchone()[0]

    def count(self, state: str | None = None) -> int:
        if state is None:
            return int(self.one("SELECT count(*) FROM jobs"))
        return int(self.one("SELECT count(*) FROM jobs WHERE state = ?", state))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_store(state: Path, paused: Sequence[str]) -> None:
    """Create the store before the daemon's first start, with ``paused`` lanes paused (the
    daemon's start-up only sets concurrency, so the pause holds)."""
    from spoolq.store.sqlite import SqliteStore

    state.mkdir(mode=0o750, parents=True, exist_ok=True)
    store = SqliteStore(state / "spoolq.db")
    try:
        for lane in paused:
            store.set_paused(lane, True)
    finally:
        store.close()


def resume_lane(state: Path, lane: str) -> None:
    """What ``spoolq resume LANE`` does, without the CLI's start-up time."""
    from spoolq.store.sqlite import SqliteStore

    store = SqliteStore(state / "spoolq.db")
    try:
        store.set_paused(lane, False)
        store.notify()
    finally:
        store.close()


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# -- /proc -------------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... in kB, and the context-switch counters, of one process."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
    return out


def rss_mb(pid: int) -> float:
    return proc_status(pid).get("VmRSS", 0) / 1024


def hwm_mb(pid: int) -> float:
    return proc_status(pid).get("VmHWM", 0) / 1024


@dataclass(frozen=True)
class CpuSample:
    ticks: int  # utime + stime of all threads, in clock ticks
    run_ns: int  # sum of the threads' on-CPU time from schedstat (ns resolution)
    switches: int  # voluntary + involuntary context switches, all threads (~ wake-ups)
    mono: float

    def cpu_s(self, since: CpuSample) -> float:
        """CPU seconds since ``since``: schedstat when it is there (ns), else ticks."""
        if self.run_ns and since.run_ns:
            return (self.run_ns - since.run_ns) / 1e9
        return (self.ticks - since.ticks) / CLK_TCK


def cpu_sample(pid: int) -> CpuSample:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    fields = data[data.rfind(b")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    run_ns = switches = 0
    task_dir = f"/proc/{pid}/task"
    with contextlib.suppress(OSError):
        for tid in os.listdir(task_dir):
            with contextlib.suppress(OSError), open(f"{task_dir}/{tid}/schedstat") as fh:
                run_ns += int(fh.read().split()[0])
            with contextlib.suppress(OSError), open(f"{task_dir}/{tid}/status") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key.endswith("ctxt_switches"):
                        switches += int(value)
    return CpuSample(ticks, run_ns, switches, time.monotonic())


# -- temp dirs --------------------------------------------------------------------------------
BIG_FILE = 16 << 20  # bytes: files this large are deleted at once, not kept for the end


@contextlib.contextmanager
def scratch(parent: Path, name: str) -> Iterator[Path]:
    """A fresh directory, cleared away afterwards whatever happens (Ctrl-C included).

    Only big files are deleted at once; the rest moves to ``parent/.trash``, deleted with
    the whole work directory after the last benchmark. Deleting thousands of small files
    makes the next file creations slow on some filesystems (ext4 without a journal skips
    recently freed inodes one by one: ~1 ms per create afterwards on the reference VM), and
    each job creates its log file: one benchmark's clean-up must not slow the next one's
    daemon. ``file_create_us`` measures that cost."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    try:
        yield path
    finally:
        trash = parent / ".trash"
        try:
            for root, _, files in os.walk(path):
                for f in files:
                    full = os.path.join(root, f)
                    with contextlib.suppress(OSError):
                        if os.lstat(full).st_size >= BIG_FILE:
                            os.unlink(full)
            trash.mkdir(exist_ok=True)
            os.rename(path, trash / path.name)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)


def file_create_us(parent: Path, n: int = 300) -> float:
    """Median microseconds to create (and close) an empty file under ``parent`` now: the
    cost every job pays for its log file (kept, not deleted: see ``scratch``)."""
    with scratch(parent, "create-probe") as d:
        times = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            os.close(os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


# -- statistics --------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was actually observed."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v is not None and v == v]
    return statistics.median(clean) if clean else float("nan")


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r if k not in keys]
    return {k: median([r[k] for r in runs if k in r]) for k in keys}


# -- results ------------------------------------------------------------------------------------
@dataclass
class Figure:
    """One line of the table. ``met`` is None when there is no target (context figure)."""

    label: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    digits: int = 1

    @classmethod
    def goal(
        cls,
        label: str,
        value: float | None,
        unit: str,
        op: str,
        bound: float,
        digits: int,
        target: str = "",
    ) -> Figure:
        """A figure with a target: ``value op bound`` decides met / NOT MET."""
        return cls(
            label, value, unit, target or f"{op} {bound:g} {unit}", check(value, op, bound), digits
        )

    def shown(self) -> str:
        if self.value is None or self.value != self.value:
            return "n/a"
        v = self.value
        text = f"{v:,.{self.digits}f}"
        return f"{text} {self.unit}".rstrip()


def check(value: float | None, op: str, bound: float) -> bool | None:
    if value is None or value != value:
        return None
    return value <= bound if op == "<=" else value >= bound if op == ">=" else value < bound


@dataclass
class BenchResult:
    name: str
    title: str
    params: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "seconds": round(self.seconds, 2),
            "figures": [
                {
                    "label": f.label,
                    "value": f.value,
                    "unit": f.unit,
                    "target": f.target,
                    "met": f.met,
                }
                for f in self.figures
            ],
            "runs": self.runs,
            "notes": self.notes,
        }


def verdict(met: bool | None) -> str:
    return "" if met is None else "met" if met else "NOT MET"


def format_table(results: Sequence[BenchResult]) -> str:
    """A plain-text table: benchmark, figure, median value, target, verdict."""
    header = ("benchmark", "figure", "median", "target", "")
    rows: list[tuple[str, ...]] = []
    for res in results:
        for i, f in enumerate(res.figures):
            rows.append((res.name if i == 0 else "", f.label, f.shown(), f.target, verdict(f.met)))
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    aligns = ("<", "<", ">", "<", "<")

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, aligns, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


@dataclass
class Context:
    """What a benchmark gets: where to put files, the stamp command, sizes and run counts."""

    workdir: Path
    stamp: Stamp
    quick: bool = False
    runs_override: int | None = None
    size_override: int | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. trigger pools between runs

    def runs(self, full: int, quick: int = 1) -> int:
        if self.runs_override is not None:
            return self.runs_override
        return quick if self.quick else full

    def size(self, full: int, quick: int) -> int:
        if self.size_override is not None:
            return self.size_override
        return quick if self.quick else full
