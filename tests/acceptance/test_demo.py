"""`spoolq demo` end to end, as a new user runs it, with its results checked from the
database and the job records it leaves behind, and from what its live view drew."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

from spoolq.demo import BIG_ROWS, BIG_TABLE
from spoolq.jobs import JobState
from spoolq.store.sqlite import SqliteStore
from tests.conftest import SPOOLQ, import_or_skip

duckdb = import_or_skip("duckdb", "uv sync --all-extras (the demo extra)")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_loads_everything_serially_and_shows_the_failures(tmp_path: Path) -> None:
    ws = tmp_path / "demo"
    res = subprocess.run(
        [SPOOLQ, "demo", "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    stdout = res.stdout
    assert "demo ok" in stdout
    assert len(stdout.splitlines()) <= 50, stdout  # the verdict fits a 50-line screen
    assert "  attempt 1: exit 1" in stdout and "  attempt 2: exit 1" in stdout

    with duckdb.connect(str(ws / "warehouse.duckdb"), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    assert counts.pop(BIG_TABLE) == BIG_ROWS
    assert len(counts) == 40
    assert set(counts.values()) == {40_000}
    assert "orders_w0_broken" not in counts

    store = SqliteStore(ws / "state" / "spoolq.db")
    try:
        jobs = store.list_jobs(limit=1000)
        by_state: dict[JobState, list[str]] = {}
        for job in jobs:
            by_state.setdefault(job.state, []).append(Path(job.trigger).name)
        failed = [j for j in jobs if j.state is JobState.FAILED]
        assert len(failed) == 1
        assert failed[0].attempts == 2  # retried once, then failed
        assert "Invalid" in Path(failed[0].log).read_text(errors="replace")
        assert (ws / "state" / "failed" / Path(failed[0].claimed_path).name).exists()
        assert by_state[JobState.REJECTED] == ["intruder.trigger"]
        assert len(by_state[JobState.SUCCEEDED]) == 41
        # Never two loads at once: the attempts of the warehouse lane do not overlap.
        spans = sorted(
            (a.started_at, a.finished_at or 0.0) for j in jobs for a in store.attempts(j.id)
        )
        assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))
    finally:
        store.close()

    # The live view drew the big load's progress as the daemon stored it while it ran, and
    # drew it advance: two readings or more of its rows, below 100% (the last may be 100%).
    line = next(ln for ln in stdout.splitlines() if ln.startswith("progress bar of"))
    assert line.startswith(f"progress bar of {BIG_TABLE}, from the store: "), line
    assert line.endswith(f" of {BIG_ROWS:,} rows"), line
    ratios = [int(p) for p in re.findall(r"(\d+)%", line)]
    assert len(ratios) >= 2, line
    assert all(0 < r < 100 for r in ratios[:-1]) and 0 < ratios[-1] <= 100, line
    assert ratios == sorted(ratios) and len(set(ratios)) == len(ratios), line

    # The contrast run hit DuckDB's lock conflicts.
    line = next(ln for ln in stdout.splitlines() if "without spoolq" in ln)
    assert "failed with DuckDB lock" in line
    assert not line.split("->")[1].strip().startswith("0 failed")
