"""The fleet crash harness at CI size: three daemons on one PostgreSQL store, SIGKILLed and
restarted at random while producers publish into their spools, and the server restarted
once under them. Nothing lost, nothing doubled, re-runs only of the jobs the killed daemons
held, and the fleet-wide lane of concurrency 1 never ran two jobs at once (by the jobs' own
stamps)."""

from __future__ import annotations

import pytest

from bench.fleet_chaos import can_restart_server, run
from tests.conftest import POSTGRES_URL, postgres_admin

pytestmark = pytest.mark.postgres


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_fleet_loses_and_doubles_nothing_under_kills_and_a_server_restart() -> None:
    postgres_admin().close()  # a skip that says how to start the server, if it is down
    if why := can_restart_server():
        pytest.skip(why)
    report = run(n=240, kills=6, daemons=3, seed=7, url=POSTGRES_URL, timeout=120)
    print(report.summary())
    assert report.ok, report.summary()
    assert (report.kills, report.server_restarts) == (6, 1), report.summary()
    assert report.reruns <= report.held, report.summary()
    assert report.serial_runs >= 240 // 3, report.summary()
