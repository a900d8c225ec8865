"""``spoolq demo``: parallel producers, one database that cannot take concurrent loads,
nothing lost.

In a temporary workspace: a daemon with a ``warehouse`` lane of concurrency 1 and a ``load``
job template (templates mode: triggers cannot run arbitrary commands); 8 producer processes
that each write CSV files and publish one trigger per file; every load goes into one DuckDB
file, each file into its own table. One bigger file, published before the producers start,
is loaded in paced chunks (``load_chunked``) for long enough that the daemon reads and
stores its progress, which the live view draws as a bar from the store. Then the contrast:
the same loads started concurrently without spoolq, and the lock errors DuckDB gives them.
A corrupted file shows a failed load (retried, then in failed/ with its log) and a
world-writable trigger shows a rejection.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import TaskID
from rich.table import Table

from spoolq.api import submit
from spoolq.display import progress_bar, show_reading
from spoolq.examples.produce import write_orders
from spoolq.jobs import Attempt, Job, JobState
from spoolq.progress import Progress
from spoolq.store.sqlite import SqliteStore

PRODUCERS = 8
FILES_EACH = 5
# One bigger file, loaded 5,000 rows at a time at most 8,000 rows a second, so that its
# load lasts about 12 s - long enough for the daemon, which looks at a job's progress once
# it has run a second and stores it at most every 5 s, to store readings of it on the way.
# Published before the producers start, it is loaded while they write theirs.
BIG_TABLE = "orders_big"
BIG_ROWS = 100_000
CHUNK_ROWS = 5_000
MAX_RATE = 8_000
LOAD_JOBS = ("load", "load_chunked")


@dataclass
class DemoResult:
    workspace: Path
    loaded: dict[str, int]  # table -> rows in DuckDB
    expected_rows: int
    jobs: list[Job]
    contrast_failures: int
    contrast_attempts: int

    def rows_of(self, table: str) -> int:
        """The rows a table should hold."""
        return BIG_ROWS if table == BIG_TABLE else self.expected_rows

    @property
    def ok(self) -> bool:
        good = [j for j in self.jobs if j.state is JobState.SUCCEEDED]
        failed = [j for j in self.jobs if j.state is JobState.FAILED]
        rejected = [j for j in self.jobs if j.state is JobState.REJECTED]
        return (
            len(good) == PRODUCERS * FILES_EACH + 1
            and all(rows == self.rows_of(t) for t, rows in self.loaded.items())
            and len(self.loaded) == PRODUCERS * FILES_EACH + 1
            and len(failed) == 1
            and len(rejected) == 1
            and self.contrast_failures > 0
        )


def _config(ws: Path) -> str:
    py = json.dumps(sys.executable)
    return f"""\
state_dir = "{ws / "state"}"

[[spool]]
path = "{ws / "spool"}"
lane = "warehouse"

[lanes.warehouse]
concurrency = 1          # the database takes one writer at a time

[defaults]
retries = 1
retry_backoff = "0.5s"
timeout = "5m"

[security]
allow_commands = false   # templates mode: triggers may only name [jobs.*]

[jobs.load]
argv = [{py}, "-m", "spoolq.examples.duckdb_load", "--db", "{ws / "warehouse.duckdb"}",
        "--table", "{{table}}", "{{path}}"]
lane = "warehouse"
params.table = {{ pattern = "^[a-z][a-z0-9_]{{0,62}}$" }}
params.path = {{ type = "path", under = "{ws / "staging"}" }}

[jobs.load_chunked]      # the same load, {CHUNK_ROWS} rows at a time, at most {MAX_RATE} a second
argv = [{py}, "-m", "spoolq.examples.duckdb_load", "--db", "{ws / "warehouse.duckdb"}",
        "--chunk-rows", "{CHUNK_ROWS}", "--max-rate", "{MAX_RATE}",
        "--table", "{{table}}", "{{path}}"]
lane = "warehouse"
params.table = {{ pattern = "^[a-z][a-z0-9_]{{0,62}}$" }}
params.path = {{ type = "path", under = "{ws / "staging"}" }}
"""


def run_demo(
    workspace: Path | None = None,
    rows: int = 40_000,
    console: Console | None = None,
    keep: bool = False,
) -> DemoResult:
    console = console or Console()
    ws = Path(workspace or tempfile.mkdtemp(prefix="spoolq-demo-"))
    ws.mkdir(parents=True, exist_ok=True)
    for sub in ("spool", "staging", "state"):
        # not group-writable whatever the umask: spoolq refuses a state dir others can write
        (ws / sub).mkdir(exist_ok=True, mode=0o750)
        (ws / sub).chmod(0o750)
    cfg = ws / "spoolq.toml"
    cfg.write_text(_config(ws))
    console.print(f"[bold]spoolq demo[/] in {ws}")
    console.print(f"config: {cfg.name} (lane warehouse, concurrency 1; jobs load, load_chunked)")

    daemon_log = (ws / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "spoolq", "-c", str(cfg), "run"],
        stdout=daemon_log,
        stderr=daemon_log,
        stdin=subprocess.DEVNULL,
    )
    try:
        store = _wait_for_store(ws / "state" / "spoolq.db", daemon)
        started = time.monotonic()
        big = ws / "staging" / f"{BIG_TABLE}.csv"
        write_orders(big, BIG_ROWS, random.Random(PRODUCERS))  # noqa: S311 - sample data
        submit(ws / "spool", job="load_chunked", params={"table": BIG_TABLE, "path": str(big)})
        producers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "spoolq.examples.produce",
                    "--spool",
                    str(ws / "spool"),
                    "--staging",
                    str(ws / "staging"),
                    "--worker",
                    str(w),
                    "--files",
                    str(FILES_EACH),
                    "--rows",
                    str(rows),
                    *(["--bad"] if w == 0 else []),
                ],
            )
            for w in range(PRODUCERS)
        ]
        _untrusted_trigger(ws / "spool")
        console.print(
            f"{big.name} ({BIG_ROWS:,} rows) published first; {PRODUCERS} producers writing "
            f"{PRODUCERS * FILES_EACH} CSV files (+1 corrupted) and publishing a trigger per "
            "file; +1 world-writable trigger"
        )
        expected = PRODUCERS * FILES_EACH + 3
        watch = _Watch(console)
        with Live(console=console, refresh_per_second=8, transient=False) as live:
            while True:
                counts = store.state_counts()
                watch.update(store)
                live.update(_progress(store, counts, time.monotonic() - started, watch))
                finished = counts["succeeded"] + counts["failed"] + counts["rejected"]
                if finished >= expected and all(p.poll() is not None for p in producers):
                    break
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited; see {ws / 'daemon.log'}")
                time.sleep(0.125)
        console.print()
        jobs = store.list_jobs(limit=1000)
        elapsed = time.monotonic() - started
        console.print(f"all {expected} triggers handled in {elapsed:.1f}s, one load at a time")
        if line := watch.seen_line(BIG_TABLE):
            console.print(line, markup=False, highlight=False)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        daemon_log.close()

    loaded = _loaded_tables(ws / "warehouse.duckdb")
    _summary(console, store, jobs, loaded, keep)
    failures, attempts = _contrast(console, ws)
    store.close()
    return DemoResult(ws, loaded, rows, jobs, failures, attempts)


def _wait_for_store(path: Path, daemon: subprocess.Popen[bytes]) -> SqliteStore:
    deadline = time.monotonic() + 30
    while not path.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the daemon did not start; see daemon.log in the workspace")
        time.sleep(0.05)
    return SqliteStore(path)


def _untrusted_trigger(spool: Path) -> None:
    """A trigger anyone could have edited: spoolq must refuse it."""
    tmp = spool / ".intruder.part"
    tmp.write_text('{"job": "load", "params": {"table": "intruder", "path": "x.csv"}}\n')
    os.chmod(tmp, 0o666)  # noqa: S103 - the point: a trigger anyone could have edited
    os.rename(tmp, spool / "intruder.trigger")


class _Watch:
    """The running loads as the live view draws them: a bar each (the progress helper of
    ``spoolq show -f``), filled from the progress readings the daemon stored - a load too
    short for the daemon to look at shows its elapsed time only - and every distinct
    reading drawn, by table."""

    def __init__(self, console: Console) -> None:
        self.bar = progress_bar(console)
        self.tasks: dict[str, TaskID] = {}  # by job id
        self.seen: dict[str, list[Progress]] = {}

    def update(self, store: SqliteStore) -> None:
        running = store.list_jobs(state=JobState.RUNNING, limit=100)
        readings = store.progress_of([j.id for j in running]) if running else {}
        for job_id in set(self.tasks) - {j.id for j in running}:
            self.bar.remove_task(self.tasks.pop(job_id))
        for job in running:
            name = _table_name(job)
            if job.id not in self.tasks:
                self.tasks[job.id] = self.bar.add_task(name, total=None, text="")
            reading = readings.get(job.id)
            show_reading(self.bar, self.tasks[job.id], reading, job.state.value)
            if reading is not None:
                drawn = self.seen.setdefault(name, [])
                if not drawn or drawn[-1] != reading:
                    drawn.append(reading)

    def seen_line(self, table: str) -> str | None:
        """What the bar of ``table``'s load showed, for the record once the view is gone."""
        drawn = self.seen.get(table)
        if not drawn:
            return None
        steps = " -> ".join(f"{r.ratio * 100:.0f}%" for r in drawn if r.ratio is not None)
        last = drawn[-1]
        total = f" of {last.total:,.0f} {last.unit or ''}".rstrip() if last.total else ""
        return f"progress bar of {table}, from the store: {steps}{total}"


def _progress(
    store: SqliteStore, counts: dict[str, int], elapsed: float, watch: _Watch
) -> RenderableType:
    table = Table(title=f"spoolq lanes  ({elapsed:4.1f}s)", title_justify="left")
    for col in ("lane", "concurrency", "queued", "running", "succeeded", "failed", "rejected"):
        table.add_column(col, justify="right" if col != "lane" else "left")
    for lane in store.lane_status():
        if lane.name != "warehouse":
            continue
        table.add_row(
            lane.name, str(lane.concurrency), str(lane.queued), str(lane.running),
            str(counts["succeeded"]), str(counts["failed"]), str(counts["rejected"]),
        )  # fmt: skip
    return Group(table, watch.bar) if watch.tasks else table


def _loaded_tables(db: Path) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {
            # names come from DuckDB's own catalog
            n: int(con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0])  # type: ignore[index]  # noqa: S608
            for n in sorted(names)
        }


def _summary(
    console: Console, store: SqliteStore, jobs: list[Job], loaded: dict[str, int], keep: bool
) -> None:
    """One row per outcome (not per load: the verdict must stay on a 50-line screen), then
    the failed load's attempts with the last lines of each, and the rejected trigger."""
    loads = [j for j in jobs if j.spec is not None and j.spec.template in LOAD_JOBS]
    table = Table(title="loads (from DuckDB and the job records)", title_justify="left")
    for col in ("outcome", "jobs", "attempts", "tables", "rows", "load s min/med/max"):
        table.add_column(col, justify="left" if col == "outcome" else "right")
    for state in (JobState.SUCCEEDED, JobState.FAILED):
        group = [j for j in loads if j.state is state]
        if not group:
            continue
        names = [_table_name(j) for j in group]
        rows = [loaded[n] for n in names if n in loaded]
        walls = sorted(
            a.wall_s for j in group for a in store.attempts(j.id) if a.wall_s is not None
        )
        table.add_row(
            state.value, str(len(group)), str(sum(j.attempts for j in group)),
            str(len(rows)), f"{sum(rows):,}",
            f"{walls[0]:.2f} / {statistics.median(walls):.2f} / {walls[-1]:.2f}" if walls else "",
        )  # fmt: skip
    console.print(table)
    for job in jobs:
        if job.state is JobState.FAILED:
            text = Path(job.log).read_text(errors="replace") if Path(job.log).exists() else ""
            for line in failure_lines(job, store.attempts(job.id), text, keep):
                console.print(line, markup=False, highlight=False, style="red" if
                              line.startswith("failed") else None)  # fmt: skip
        if job.state is JobState.REJECTED:
            console.print(
                f"rejected {Path(job.trigger).name}: {job.reason}", markup=False, style="magenta"
            )


def _table_name(job: Job) -> str:
    assert job.spec is not None
    argv = job.spec.steps[0]
    return argv[argv.index("--table") + 1] if "--table" in argv else job.id


def attempt_tails(log_text: str, lines: int = 4) -> dict[int, list[str]]:
    """The last ``lines`` lines each attempt wrote to a job's log, by attempt number
    (spoolq's own ``--- spoolq`` note lines, which say where an attempt starts, left out)."""
    found: dict[int, list[str]] = {}
    current = 0
    for line in log_text.splitlines():
        if line.startswith("--- spoolq "):
            m = re.search(r"\battempt[= ](\d+)", line)
            if m:
                current = int(m.group(1))
            continue
        if line.strip():
            found.setdefault(current, []).append(line)
    return {n: got[-lines:] for n, got in found.items()}


def failure_lines(job: Job, attempts: list[Attempt], log_text: str, keep: bool) -> list[str]:
    """What went wrong with a failed load, readable without opening anything: each attempt
    labelled, with its outcome and the last lines it wrote."""
    out = [f"failed: {_table_name(job)} after {job.attempts} attempts ({job.reason}), job {job.id}"]
    tails = attempt_tails(log_text)
    for a in attempts:
        out.append(f"  attempt {a.n}: {a.reason or 'succeeded'}")
        out.extend(f"    | {line[:150]}" for line in tails.get(a.n, []))
    where = "kept" if keep else "deleted when the demo ends; spoolq demo --keep keeps it"
    out.append(f"  full log: {job.log} (the workspace is {where})")
    return out


def _contrast(console: Console, ws: Path) -> tuple[int, int]:
    """The same loads, all at once, without spoolq: count the lock conflicts."""
    db = ws / "unserialized.duckdb"
    files = sorted((ws / "staging").glob("orders_w*_0*.csv"))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spoolq.examples.duckdb_load",
                "--db",
                str(db),
                "--table",
                f.stem,
                str(f),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    failures = 0
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0 and "lock" in err.lower():
            failures += 1
    console.print(
        f"[bold]without spoolq[/]: the same {len(files)} loads started at once -> "
        f"[red]{failures} failed with DuckDB lock conflicts[/] "
        f"({len(files) - failures} got through)"
    )
    return failures, len(files)


def main(keep: bool = False, workspace: Path | None = None) -> int:
    console = Console()
    result = run_demo(workspace, console=console, keep=keep)
    console.print("[green]demo ok[/]" if result.ok else "[red]demo did not go as expected[/]")
    if keep:
        console.print(f"workspace kept: {result.workspace}")
    else:
        shutil.rmtree(result.workspace, ignore_errors=True)
        console.print(f"workspace {result.workspace} removed (spoolq demo --keep keeps it)")
    return 0 if result.ok else 1
