"""Several hosts as one: daemons on different hosts (each in a UTS namespace of its own,
with a hostname of its own) sharing one PostgreSQL store, and a spool and state directory
as they would over NFS. A host that dies strands nothing: a peer serving the same state
directory runs its jobs. Operators see which host ran what, change a lane's limit for the
whole fleet, and are told what ``prune`` leaves to other state directories."""

from __future__ import annotations

import json
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolq.procs import job_process_groups, killpg
from tests.conftest import (
    POSTGRES_URL,
    DaemonProcess,
    Env,
    import_or_skip,
    needs_root,
    postgres_admin,
    wait_until,
)

import_or_skip("psycopg", "uv sync --all-extras (the postgres extra)")
pytestmark = [pytest.mark.postgres, needs_root]

FAST = 'heartbeat_interval = "0.3s"\nstale_after = "2s"\n'


@pytest.fixture
def pg_url() -> Iterator[str]:
    admin = postgres_admin()
    schema = f"spoolq_h_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def on_host(env: Env, host: str) -> DaemonProcess:
    """``spoolq run`` on ``host``: a UTS namespace of its own, with that hostname."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to give each daemon a hostname of its own")
    prefix = ("unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host)
    args = [*env.base_args(), "run", "--log-format", "json", str(env.spool)]
    d = DaemonProcess(args, env.env, env.root, prefix=prefix)
    env.daemons.append(d)
    d.wait_for("ready")
    return d


def host_dies(d: DaemonProcess, job_id: str) -> None:
    """The host running ``job_id`` is gone: its daemon and the job's processes with it."""
    d.kill()
    for group in job_process_groups(job_id):
        killpg(group, signal.SIGKILL)
    wait_until(lambda: not job_process_groups(job_id), what=f"the processes of {job_id} gone")


def test_a_peer_sharing_the_state_directory_runs_a_dead_hosts_job(
    tmp_path: Path, pg_url: str
) -> None:
    env = Env(tmp_path)
    env.write_config(f'store = "{pg_url}"\n{FAST}[lanes.long]\nconcurrency = 1\n')
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    try:
        daemons = {"hosta": on_host(env, "hosta"), "hostb": on_host(env, "hostb")}
        env.publish(
            json.dumps(
                {
                    "lane": "long",
                    "command": f"echo long $SPOOLQ_ATTEMPT >> {ledger}; "
                    f"while [ ! -e {release} ]; do sleep 0.05; done",
                }
            ),
            "long.trigger",
        )
        job_id = wait_until(
            lambda: next((e["job"] for d in daemons.values() for e in d.find("started")), None),
            30,
            "the long job to start on one of the hosts",
        )
        dead = next(h for h, d in daemons.items() if d.find("started", job=job_id))
        (alive,) = set(daemons) - {dead}
        survivor = daemons[alive]
        host_dies(daemons[dead], job_id)

        # While the dead host's job waits for the rescue, more work arrives.
        for i in range(6):
            env.publish(f"echo short {i} >> {ledger}\n", f"short{i}.trigger")
        survivor.wait_for("succeeded", count=6, timeout=60)

        survivor.wait_for("interrupted", job=job_id, timeout=60)
        survivor.wait_for("started", job=job_id, attempt=2, timeout=30)
        release.touch()
        survivor.wait_for("succeeded", job=job_id, timeout=30)

        job = env.job(job_id)
        assert (job["state"], job["attempts"]) == ("succeeded", 2)
        first, second = job["attempt_history"]
        assert (first["host"], first["reason"]) == (dead, "interrupted")
        assert first["daemon"].endswith(f"@{dead}")
        assert (second["host"], second["reason"]) == (alive, None)
        # Nothing lost, nothing doubled: one job per trigger, each ran once (the long one
        # once per attempt), every trigger archived.
        jobs = env.jobs()
        assert len(jobs) == 7 and {j["state"] for j in jobs} == {"succeeded"}
        lines = sorted(ledger.read_text().splitlines())
        assert lines == sorted(["long 1", "long 2", *(f"short {i}" for i in range(6))])
        assert len(list((env.state / "done").iterdir())) == 7
        assert not list((env.state / "claimed").iterdir())
    finally:
        env.close()


def test_an_any_host_lane_runs_a_dead_hosts_queued_and_interrupted_jobs(
    tmp_path: Path, pg_url: str
) -> None:
    """Separate state directories; an any-host lane. The survivor runs what the dead host
    claimed; a job of an ordinary lane waits for its home, and says so."""
    config = (
        f'store = "{pg_url}"\n{FAST}'
        "[lanes.shared]\nconcurrency = 1\nany_host = true\n[lanes.own]\nconcurrency = 1\n"
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Env(tmp_path / "a"), Env(tmp_path / "b")
    a.write_config(config)
    b.write_config(config)
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    try:
        da = on_host(a, "hosta")
        assert a.cli("pause", "own").returncode == 0
        a.publish('{"lane": "own", "argv": ["true"]}', "own.trigger")
        long = {
            "lane": "shared",
            "command": f"echo long $SPOOLQ_ATTEMPT >> {ledger}; "
            f"while [ ! -e {release} ]; do sleep 0.05; done",
        }
        a.publish(json.dumps(long), "long.trigger")
        job_id = da.wait_for("started", lane="shared")[0]["job"]
        for i in range(3):  # queued behind it (concurrency 1), claimed by host a
            a.publish(
                json.dumps(
                    {
                        "lane": "shared",
                        "command": f'test -f "$SPOOLQ_TRIGGER" && echo short {i} >> {ledger}',
                    }
                ),
                f"short{i}.trigger",
            )
        da.wait_for("queued", count=5)
        db = on_host(b, "hostb")
        host_dies(da, job_id)

        db.wait_for("started", job=job_id, attempt=2, timeout=60)
        release.touch()
        db.wait_for("succeeded", count=4, timeout=60)
        job = b.job(job_id)
        assert [(t["host"], t["reason"]) for t in job["attempt_history"]] == [
            ("hosta", "interrupted"),
            ("hostb", None),
        ]
        assert job["log"].startswith(str(b.state))  # it ran here: its log is here
        lines = sorted(ledger.read_text().splitlines())
        assert lines == ["long 1", "long 2", "short 0", "short 1", "short 2"]
        # Archived where they ran.
        wait_until(lambda: len(list((b.state / "done").iterdir())) == 4, what="b's archive")
        assert not list((b.state / "claimed").iterdir())

        # The ordinary lane's job waits for its home, and says so.
        assert b.cli("resume", "own").returncode == 0
        (own,) = [j for j in b.jobs() if j["lane"] == "own"]
        assert own["state"] == "queued"
        assert own["waiting"].startswith(f"waiting for home {own['home']} (last daemon seen ")
        assert own["waiting"].endswith(" on hosta)")
        (home,) = json.loads(b.cli("status", "--json", check=True).stdout)["waiting_homes"]
        assert (home["home"], home["queued"], home["path"]) == (own["home"], 1, str(a.state))
        assert "1 job(s) waiting for home" in b.cli("status", check=True).stdout
        res = b.cli("retry", "--any-host", own["id"])
        assert res.returncode == 1 and "not in the store" in res.stderr
    finally:
        a.close()
        b.close()
