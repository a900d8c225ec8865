"""``python -m bench.fleet`` (the fleet figures in docs/performance.md) still runs: two
daemons on one PostgreSQL store, a tiny burst, values not judged."""

from __future__ import annotations

import pytest

from tests.conftest import needs_c_compiler, postgres_admin


@pytest.mark.postgres
def test_the_fleet_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    needs_c_compiler()
    from bench import fleet, pg

    postgres_admin(pg.DEFAULT_URL).close()
    assert fleet.main(["--url", pg.DEFAULT_URL, "--size", "12", "--daemons", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = {line.strip().split("  ")[1] for line in lines}
    for shape in fleet.SHAPES:
        for key in ("jobs_per_s_started", "jobs_per_s_finished", "daemon_cpu_ms_per_job"):
            assert f"2 daemon(s), {shape}: {key}" in labels
    assert all(float(line.split()[0]) > 0 for line in lines)
