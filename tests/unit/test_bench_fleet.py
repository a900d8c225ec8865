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
    args = ["--url", pg.DEFAULT_URL, "--size", "12", "--daemons", "2", "--ended-notify", "both"]
    assert fleet.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = {line.strip().split("  ")[1]: float(line.split()[0]) for line in lines}
    keys = ["jobs_per_s_started", "jobs_per_s_finished", "daemon_cpu_ms_per_job"]
    cpu = ["server_cpu_ms_per_job", "machine_cpu_ms_per_job"]  # (a few ticks: may read 0)
    for shape in fleet.SHAPES:
        for fleet_label in (f"2 daemon(s), {shape}", f"2 daemon(s), {shape}, no notify"):
            assert all(figures[f"{fleet_label}: {key}"] > 0 for key in keys)
            assert all(figures[f"{fleet_label}: {key}"] >= 0 for key in cpu)
    assert len(figures) == 2 * 2 * 5
