"""``python -m bench``: run the benchmark suite, print the table, write JSON.

    uv run python -m bench                  # everything, full size (~15 min on 2 cores)
    uv run python -m bench --quick          # smoke version, < 1 min
    uv run python -m bench --only latency   # one benchmark (repeatable)
    uv run python -m bench --runs 5         # runs per benchmark (each figure is a median)

Results: bench/results/<UTC time>.json and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench import backlog, big_output, burst, idle, latency, long_queue
from bench.common import SPOOLQ, BenchResult, Context, build_stamp, file_create_us, format_table
from bench.probes import spawn_costs

MODULES: dict[str, ModuleType] = {
    m.NAME: m for m in (latency, burst, backlog, idle, big_output, long_queue)
}
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    try:
        version = subprocess.run(
            [SPOOLQ, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        version = ""
    repo = Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    commit = dirty = ""
    if git:
        commit = subprocess.run(
            [git, "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "-C", str(repo), "status", "--porcelain", "--", "spoolq"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    return {
        "git_commit": commit,
        "spoolq_tree_dirty": bool(dirty),  # uncommitted changes under spoolq/ when measured
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "spoolq": version,
        "loadavg_at_start": os.getloadavg(),
        "mem_total_mb": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20,
        "tmp": tempfile.gettempdir(),
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # every benchmark cleans up in `finally`


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one run each (< 60 s)")
    p.add_argument(
        "--only", action="append", choices=sorted(MODULES), metavar="NAME",
        help=f"run only NAME (repeatable): {', '.join(MODULES)}",
    )  # fmt: skip
    p.add_argument("--runs", type=int, help="runs per benchmark (default: per benchmark)")
    p.add_argument("--size", type=int, help="override the main size (triggers, bytes, seconds)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    names = args.only or list(MODULES)
    started = dt.datetime.now(dt.UTC)
    info = machine()
    print(
        f"spoolq benchmarks on {info['nproc']} x {info['cpu'] or 'CPU'}, kernel {info['kernel']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}, load {info['loadavg_at_start'][0]:.2f}"
        f"{' (--quick)' if args.quick else ''}",
        file=sys.stderr,
    )
    workdir = Path(tempfile.mkdtemp(prefix="spoolq-bench-"))
    results: list[BenchResult] = []
    failed: dict[str, str] = {}
    try:
        ctx = Context(workdir, build_stamp(workdir), args.quick, args.runs, args.size)
        print(f"stamp command: {ctx.stamp.kind} ({' '.join(ctx.stamp.argv)})", file=sys.stderr)
        if ctx.stamp.kind != "python":
            # What starting a process costs here, and how much more after a millisecond of
            # work (on a VM, the wake-up of a halted CPU): absolute figures of two machines
            # compare only beside these (docs/performance.md, "What bounds each figure").
            warm, busy = (spawn_costs(ctx.stamp.argv[0], 200, w)[0] for w in (0, 1000))
            info["spawn_call_us"] = {
                "back_to_back": round(warm, 1),
                "after_1ms_work": round(busy, 1),
            }
            print(
                f"posix_spawn call: {warm:.0f} us back to back, {busy:.0f} us after 1 ms of work",
                file=sys.stderr,
            )
        for name in names:
            mod = MODULES[name]
            create = file_create_us(workdir)
            info.setdefault("file_create_us", {})[name] = round(create, 1)
            print(
                f"[{name}] {mod.TITLE} (file create: {create:.0f} us)", file=sys.stderr, flush=True
            )
            t0 = time.monotonic()
            try:
                res: BenchResult = mod.run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            res.seconds = time.monotonic() - t0
            results.append(res)
            print(format_table([res]), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: daemons stopped, temp files removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_at_end"] = os.getloadavg()
    end = machine()
    # Each daemon imports spoolq/ when it starts: flag a tree that changed under the run.
    info["code_changed_during_run"] = (end["git_commit"], end["spoolq_tree_dirty"]) != (
        info["git_commit"],
        info["spoolq_tree_dirty"],
    )
    print()
    print(format_table(results))
    for res in results:
        for note in res.notes:
            print(f"note ({res.name}): {note}")
    for name, why in failed.items():
        print(f"FAILED ({name}): {why}")
    doc = {
        "started_at": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "machine": info,
        "stamp": ctx.stamp.kind,
        "results": [r.to_dict() for r in results],
        "failed": failed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    text = json.dumps(doc, indent=1)
    path.write_text(text)
    (args.out / "latest.json").write_text(text)
    print(f"results: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
