"""The benchmark suite imports and formats its results; the probes and the PostgreSQL bench
still run, at tiny sizes. No timing is judged: benchmarks never run in the test suite."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

import bench as bench_pkg
from bench.__main__ import MODULES, parse_args
from bench.common import (
    BenchResult,
    Context,
    Figure,
    build_stamp,
    check,
    format_table,
    medians,
    percentile,
)
from tests.conftest import needs_c_compiler, postgres_admin

# A size small enough for the suite, in each benchmark's own unit (triggers, jobs, seconds
# of idle window, bytes of output). Every module in bench/ must have one here.
TINY = {"latency": 5, "burst": 20, "backlog": 50, "idle": 1, "big_output": 1 << 20,
        "long_queue": 50}  # fmt: skip
# A benchmark is a module of bench/ with a top-level run(ctx).
BENCHMARKS = {
    p.stem
    for p in Path(bench_pkg.__file__).parent.glob("*.py")
    if re.search(r"^def run\(ctx", p.read_text(), flags=re.M)
}


def test_every_benchmark_module_is_registered() -> None:
    assert set(MODULES) == BENCHMARKS, "a module of bench/ with a run() is not registered"
    assert set(MODULES) == set(TINY), "a benchmark without a tiny size is not smoke-tested"
    for name, mod in MODULES.items():
        assert name == mod.NAME and mod.TITLE


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_benchmark_runs_at_a_tiny_size_and_reports_its_figures(
    name: str, tmp_path: Path
) -> None:
    """``python -m bench --only NAME`` at a tiny size: it finishes and reports figures with
    values (values not judged; a floor whose tool is missing may be n/a)."""
    needs_c_compiler()
    ctx = Context(tmp_path, build_stamp(tmp_path), True, 1, TINY[name])
    res = MODULES[name].run(ctx)
    assert res.name == name and res.figures
    values = [f.value for f in res.figures if f.value is not None]
    assert values and all(v >= 0 for v in values), res.figures
    assert format_table([res]).count("\n") >= len(res.figures)


def test_cli_options() -> None:
    args = parse_args(["--quick", "--only", "latency", "--only", "idle", "--runs", "2"])
    assert args.quick and args.only == ["latency", "idle"] and args.runs == 2


def test_statistics() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert medians([{"a": 1.0, "b": 5.0}, {"a": 3.0}, {"a": 2.0, "b": 7.0}]) == {
        "a": 2.0,
        "b": 6.0,
    }
    assert check(4.0, "<=", 5) is True
    assert check(6.0, "<=", 5) is False
    assert check(float("nan"), ">=", 1) is None


def test_table_and_json() -> None:
    res = BenchResult("latency", "t", {"n": 1})
    res.figures = [
        Figure("spoolq p50", 2.345, "ms", "<= 5 ms", True, 2),
        Figure("ratio", 3.0, "x", "<= 1.5x", False, 2),
        Figure("floor", None, "ms"),
    ]
    table = format_table([res]).splitlines()
    assert table[0].split() == ["benchmark", "figure", "median", "target"]
    assert "2.35 ms" in table[2] and table[2].endswith("met")
    assert table[3].endswith("NOT MET")
    assert "n/a" in table[4]
    doc = json.loads(json.dumps(res.to_dict()))
    assert doc["figures"][0] == {
        "label": "spoolq p50",
        "value": 2.345,
        "unit": "ms",
        "target": "<= 5 ms",
        "met": True,
    }


def test_probes_run_and_report_each_cost(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench.probes`` (the numbers docs/performance.md cites) still runs: a few
    tries each, values not judged."""
    needs_c_compiler()
    from bench import probes

    assert probes.main(["-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [re.fullmatch(r"\s*(\d+\.\d) us  (\S.*)", line) for line in lines]
    assert lines and all(rows), lines  # one "<cost> us  <what>" line per probe
    labels = [row.group(2) for row in rows if row]
    assert len(set(labels)) == len(labels), labels
    assert all(float(row.group(1)) > 0 for row in rows if row), lines
    # docs/performance.md sends readers here for two costs: a file's creation and the wake-up
    # of a spawned child.
    assert any("create" in label and "file" in label for label in labels), labels
    assert any("spawn" in label and "reaped" in label for label in labels), labels


@pytest.mark.postgres
def test_the_postgresql_bench_runs_directly_and_through_the_delay_relay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m bench.pg`` (the PostgreSQL numbers in docs/performance.md) still runs,
    relay included: tiny sizes, values not judged."""
    needs_c_compiler()
    from bench import pg

    postgres_admin(pg.DEFAULT_URL).close()
    assert pg.main(["--url", pg.DEFAULT_URL, "--size", "20", "--delay-ms", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = [line.split("  ")[1] for line in (ln.strip() for ln in lines)]
    for link in ("localhost", "+0.2 ms each way"):
        for key in (
            "enqueue_64_ms",
            "handoff_ms",
            "handoff_ms_without_ended_notify",
            "burst_c1_jobs_per_s",
            "burst_c2_jobs_per_s",
        ):
            assert f"{link}: {key}" in labels
    assert all(float(line.split()[0]) > 0 for line in lines)


@pytest.mark.parametrize(("language", "concurrency"), [("python", 1), ("c", 1), ("c", 2)])
def test_the_durable_chain_keeps_each_jobs_state_and_log(
    tmp_path: Path, language: str, concurrency: int
) -> None:
    """The burst's durable floor does the work it stands for: every job recorded as it
    ends and the next one started in the store, a log with its header, a real run."""
    from bench import durable
    from bench.common import build_stamp, read_stamps

    needs_c_compiler()
    stamp = build_stamp(tmp_path)
    root = tmp_path / "chain"
    root.mkdir()
    if language == "c":
        exe = durable.build_c(tmp_path)
        if exe is None:
            pytest.skip("the C chain needs SQLite's header: apt-get install libsqlite3-dev")
        rate = durable.c_chain(exe, stamp, root, 5, concurrency)
    else:
        rate = durable.python_chain(stamp, root, 5)
    assert rate > 0
    assert len(read_stamps(root / "stamps")) == 5
    db = sqlite3.connect(root / "chain.db")
    states = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    ended = db.execute("SELECT count(*) FROM attempts WHERE finished_at IS NOT NULL").fetchone()
    db.close()
    # The outcomes of the last job of each slot are never recorded: no job starts after them.
    assert states == {"succeeded": 5 - concurrency, "running": concurrency}
    assert ended == (5 - concurrency,)
    logs = sorted((root / "logs").iterdir())
    assert len(logs) == 5
    assert all(log.read_bytes() == durable.HEADER for log in logs)


def test_the_durable_watch_claims_records_and_logs_a_trigger_before_its_job(
    tmp_path: Path,
) -> None:
    """The latency benchmark's durable floor does the work it stands for: the trigger moved
    into claimed/, its job recorded as started with the trigger's text, a log, a real run."""
    from bench import durable
    from bench.common import Publisher, StampFifo, build_stamp, trigger_text
    from bench.latency import Watcher

    needs_c_compiler()
    exe = durable.build_c(tmp_path, "durable_watch")
    if exe is None:
        pytest.skip("the durable watch needs SQLite's header: apt-get install libsqlite3-dev")
    stamp = build_stamp(tmp_path)
    spool, state = tmp_path / "spool", tmp_path / "state"
    spool.mkdir()
    stamps = StampFifo(tmp_path / "stamps.fifo")
    cmd = stamp.cmd(stamps.path)
    watcher = Watcher(durable.watch_argv(exe, spool, state, cmd), tmp_path / "err", b"ready")
    try:
        watcher.start()
        watcher.wait_ready()
        text = trigger_text(cmd)
        pub = Publisher(spool)
        pub.publish(pub.prepare(text))
        assert stamps.wait(30) is not None
    finally:
        watcher.stop()
        stamps.close()
    assert list(spool.iterdir()) == []
    (claimed,) = (state / "claimed").iterdir()
    db = sqlite3.connect(state / "chain.db")
    rows = db.execute("SELECT state, claimed_path, spec, log FROM jobs").fetchall()
    attempts = db.execute("SELECT count(*) FROM attempts").fetchone()
    db.close()
    assert rows == [("running", str(claimed), text.decode(), rows[0][3])]
    assert attempts == (1,)
    assert Path(rows[0][3]).read_bytes() == durable.HEADER


@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_wait_bench_runs(capsys: pytest.CaptureFixture[str], store: str) -> None:
    """``python -m bench.wait`` (the figures docs/performance.md cites) still runs."""
    from bench import pg, wait

    url = ["--url", pg.DEFAULT_URL] if store == "postgresql" else []
    if url:
        postgres_admin(pg.DEFAULT_URL).close()
    assert wait.main(["--jobs", "3", "--runs", "1", *url]) == 0
    out = capsys.readouterr().out
    assert "from the last job's end to the waiter's exit" in out
