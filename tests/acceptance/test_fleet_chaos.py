"""The fleet crash harness at CI size: three daemons, each on a hostname of its own, on one
PostgreSQL store, SIGKILLed and restarted at random while producers publish into their
spools, two of them stalled (SIGSTOP) past ``stale_after`` while they run a long job, and
the server restarted once under them. Nothing lost, nothing doubled, each attempt run at
most once, every re-run explained by a kill, a stall or a fencing (one each), and the lane
limits held by the jobs' own stamps - a fenced daemon's copy aside, until it stops it
(``bench.fleet_checks`` says why that overlap is the one accepted)."""

from __future__ import annotations

import pytest

from bench.fleet_chaos import can_restart_server, can_use_hostnames, run
from tests.conftest import POSTGRES_URL, postgres_admin

pytestmark = pytest.mark.postgres


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_fleet_loses_and_doubles_nothing_under_kills_stalls_and_a_server_restart() -> None:
    postgres_admin().close()  # a skip that says how to start the server, if it is down
    if why := can_restart_server() or can_use_hostnames():
        pytest.skip(why)
    report = run(
        n=240, kills=6, daemons=3, seed=7, url=POSTGRES_URL, timeout=120, hosts=True, stalls=2
    )
    print(report.summary())
    assert report.ok, report.summary()
    assert (report.kills, report.server_restarts) == (6, 1), report.summary()
    # Both stalls led to fencing (the cross-host path), and the stalled daemons' jobs ran
    # again: one re-run for each job a killed or stalled daemon held, and only those (the
    # outage's fencings and lost claim commits aside, each checked against its daemon).
    assert [s.fenced for s in report.stalls] == [True, True], report.summary()
    v = report.verdict
    assert v.kill_held == report.held and v.stall_held == report.stall_held, report.summary()
    assert report.reruns == v.kill_held + v.stall_held + v.outage_held + v.not_started
    assert report.serial_runs >= 240 // 3, report.summary()
