"""Several daemons ("hosts": separate spools and state directories) sharing one PostgreSQL
store: lane limits hold across them, and control commands reach them through NOTIFY."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, Env, import_or_skip, postgres_admin, publish, wait_until

psycopg = import_or_skip("psycopg", "uv sync --all-extras (the postgres extra)")
PG = POSTGRES_URL
pytestmark = pytest.mark.postgres


def _host(tmp: Path, name: str, url: str) -> Env:
    root = tmp / name
    root.mkdir()
    env = Env(root)
    env.write_config(f'store = "{url}"\n[lanes.warehouse]\nconcurrency = 1\n')
    return env


def test_two_hosts_share_a_lane_limit(tmp_path: Path, pg_url: str) -> None:
    a, b = _host(tmp_path, "a", pg_url), _host(tmp_path, "b", pg_url)
    try:
        da, db = a.start(), b.start()
        ledger = tmp_path / "ledger"
        for i in range(8):
            for env in (a, b):
                cmd = (
                    f'{{"lane": "warehouse", "command": "echo start $SPOOLQ_JOB_ID >> {ledger};'
                    f' sleep 0.05; echo end $SPOOLQ_JOB_ID >> {ledger}"}}'
                )
                publish(env.spool, cmd, f"{env.root.name}{i}.trigger")
        wait_until(
            lambda: len(da.find("succeeded")) + len(db.find("succeeded")) == 16, 60, "16 jobs"
        )
        lines = ledger.read_text().split("\n")[:-1]
        # start/end strictly alternate: never two warehouse jobs at once, on any host
        kinds = [ln.split()[0] for ln in lines]
        assert kinds == ["start", "end"] * 16
        assert {e["job"] for e in da.find("succeeded")} & {
            e["job"] for e in db.find("succeeded")
        } == set()
        assert da.find("succeeded") and db.find("succeeded")  # both hosts did work
    finally:
        a.close()
        b.close()


def test_cancel_from_another_host_reaches_the_running_job(tmp_path: Path, pg_url: str) -> None:
    a, ops = _host(tmp_path, "a", pg_url), _host(tmp_path, "ops", pg_url)
    try:
        d = a.start()
        a.publish('{"lane": "warehouse", "argv": ["sleep", "300"]}', "long.trigger")
        started = d.wait_for("started")[0]
        res = ops.cli("cancel", started["job"], check=True)  # another host, another state dir
        assert "terminating" in res.stdout
        d.wait_for("cancelled", job=started["job"], timeout=20)
        job = ops.job(started["job"])
        assert job["state"] == "cancelled"
        # the trigger file lives on host a; its daemon moves it to cancelled/
        wait_until(lambda: list((a.state / "cancelled").iterdir()), 30, "archived trigger")
    finally:
        a.close()
        ops.close()


def test_dropped_connections_are_reopened_and_nothing_is_lost(tmp_path: Path, pg_url: str) -> None:
    """The server kills the daemon's connections (a failover, an admin, a restart): the
    daemon keeps running, reconnects, keeps its running job, and takes new triggers."""
    app = f"spoolq_test_{uuid.uuid4().hex[:12]}"  # names this daemon's connections alone
    a = _host(tmp_path, "a", f"{pg_url}&application_name={app}")
    # No heartbeat in between: its store check would reconnect before a verb notices.
    assert a.config is not None
    a.write_config('heartbeat_interval = "1h"\n' + a.config.read_text())
    try:
        d = a.start()
        release = tmp_path / "release"
        a.publish(f"while [ ! -e {release} ]; do sleep 0.05; done\n", "long.trigger")
        started = d.wait_for("started")[0]
        with postgres_admin() as admin:
            mine = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            pids = [row[0] for row in admin.execute(mine, (app,))]
            assert len(pids) >= 2, pids  # the store's connection and the listener's
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
            wait_until(
                lambda: not set(pids) & {row[0] for row in admin.execute(mine, (app,))},
                what="the daemon's backends to be gone",
            )
        a.publish('{"lane": "other", "argv": ["true"]}', "after.trigger")
        d.wait_for("succeeded", trigger=str(a.spool / "after.trigger"), timeout=60)
        release.touch()
        d.wait_for("succeeded", job=started["job"], timeout=60)
        assert d.proc.poll() is None
        # What the operator sees: the outage and the recovery in the log, in that order, and
        # the job that ran through it still its first and only attempt.
        events = [e["event"] for e in d.events]
        assert "store_unavailable" in events, events
        assert "store_recovered" in events[events.index("store_unavailable") :], events
        job = a.job(started["job"])
        assert (job["state"], job["attempts"]) == ("succeeded", 1)
        assert len(job["attempt_history"]) == 1
        assert not d.find("store_lost")
    finally:
        a.close()
