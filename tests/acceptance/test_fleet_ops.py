"""What an operator does to a fleet: change a lane's limit for every daemon at once, pause
only lanes that exist, prune and be told what was left to other state directories, read
the log of a job that ran elsewhere, and see which host ran each attempt."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Env, wait_until


def host(tmp: Path, name: str, url: str, extra: str = "") -> Env:
    root = tmp / name
    root.mkdir()
    env = Env(root)
    env.write_config(f'store = "{url}"\n[lanes.db]\nconcurrency = 1\n{extra}')
    return env


def status(env: Env) -> dict[str, object]:
    data: dict[str, object] = json.loads(env.cli("status", "--json", check=True).stdout)
    return data


def lane_of(env: Env, name: str) -> dict[str, object]:
    lanes = status(env)["lanes"]
    assert isinstance(lanes, list)
    return next(ln for ln in lanes if ln["name"] == name)


def test_pause_or_resume_of_a_lane_nobody_names_is_a_usage_error(env: Env) -> None:
    env.write_config("[lanes.warehouse]\nconcurrency = 1\n")
    d = env.start()
    for command in ("pause", "resume"):
        res = env.cli(command, "warehous")
        assert res.returncode == 2, res
        assert "no lane 'warehous'" in res.stderr and "warehouse" in res.stderr
    assert "warehous" not in {ln["name"] for ln in status(env)["lanes"]}  # type: ignore[attr-defined]
    assert env.cli("pause", "warehouse").returncode == 0  # named by the config
    env.publish('{"lane": "adhoc", "argv": ["true"]}')  # a lane a job names
    d.wait_for("succeeded")
    assert env.cli("pause", "adhoc").returncode == 0
    assert lane_of(env, "adhoc")["paused"] is True


@pytest.mark.postgres
def test_lane_concurrency_changes_for_every_daemon_until_reset(tmp_path: Path, pg_url: str) -> None:
    a, b = host(tmp_path, "a", pg_url), host(tmp_path, "b", pg_url)
    release = tmp_path / "release"
    hold = {"lane": "db", "command": f"while [ ! -e {release} ]; do sleep 0.05; done"}
    try:
        da, db = a.start(), b.start()
        for i in range(3):
            a.publish(json.dumps(hold), f"a{i}.trigger")
            b.publish(json.dumps(hold), f"b{i}.trigger")
        wait_until(lambda: lane_of(a, "db")["running"] == 1, 30, "one db job running")

        res = a.cli("lane", "db", "--concurrency", "4", check=True)
        assert "overridden" in res.stdout
        wait_until(lambda: lane_of(b, "db")["running"] == 4, 30, "four db jobs running")
        assert da.find("started") and db.find("started")  # both daemons took the new slots
        lane = lane_of(b, "db")
        assert (lane["concurrency"], lane["overridden"]) == (4, True)
        assert "4 (overridden)" in b.cli("status", check=True).stdout

        # A daemon starting declares its config: the override stays.
        c = host(tmp_path, "c", pg_url)
        c.start()
        assert lane_of(a, "db")["concurrency"] == 4
        c.close()

        res = b.cli("lane", "db", "--reset", check=True)
        assert "concurrency 1" in res.stdout
        lane = lane_of(a, "db")
        assert (lane["concurrency"], lane["overridden"]) == (1, False)
        release.touch()
        wait_until(lambda: lane_of(a, "db")["queued"] == 0, 60, "the db lane drained")
        assert lane_of(a, "db")["running"] in (0, 1)
        assert a.cli("lane", "nosuch", "--concurrency", "2").returncode == 2
        assert a.cli("lane", "db").returncode == 2  # neither --concurrency nor --reset
    finally:
        a.close()
        b.close()


@pytest.mark.postgres
def test_prune_says_what_it_left_to_other_state_directories(tmp_path: Path, pg_url: str) -> None:
    a, b = host(tmp_path, "a", pg_url), host(tmp_path, "b", pg_url)
    try:
        da, db = a.start(), b.start()
        for i in range(2):
            a.publish('{"argv": ["true"]}', f"a{i}.trigger")
        for i in range(3):
            b.publish('{"argv": ["true"]}', f"b{i}.trigger")
        da.wait_for("succeeded", count=2)
        db.wait_for("succeeded", count=3)
        wait_until(lambda: len(list((b.state / "done").iterdir())) == 3, what="b's archive")

        res = a.cli("prune", "--older-than", "0s", check=True)
        assert "pruned 2 job(s)" in res.stdout
        assert "left 3 job(s) of other state directories" in res.stdout
        assert str(b.state) in res.stdout and "--all-homes" in res.stdout

        res = a.cli("prune", "--older-than", "0s", "--all-homes", check=True)
        assert "pruned 3 job(s)" in res.stdout and "left" not in res.stdout
        assert a.jobs() == []
        # (Here b's files are reachable too: removed with their rows.)
        assert not list((b.state / "done").iterdir())
    finally:
        a.close()
        b.close()


@pytest.mark.postgres
def test_logs_of_a_job_that_ran_elsewhere_show_the_stored_tail(tmp_path: Path, pg_url: str) -> None:
    a, ops = host(tmp_path, "a", pg_url), host(tmp_path, "ops", pg_url)
    try:
        d = a.start()
        a.publish("seq 1 20000\necho the end\n", "big.trigger")
        job_id = d.wait_for("succeeded")[0]["job"]
        log = Path(a.job(job_id)["log"])
        log.unlink()  # as seen from a host without that state directory

        res = ops.cli("logs", job_id)
        assert res.returncode == 0, res.stderr
        assert "\nthe end\n" in res.stdout and "\n19999\n" in res.stdout
        assert len(res.stdout.encode()) == 64 * 1024
        assert "the whole log is on" in res.stderr and str(log) in res.stderr

        shown = ops.job(job_id)
        (attempt,) = shown["attempt_history"]
        assert attempt["host"] and attempt["daemon"].endswith(f"@{attempt['host']}")
        assert "host" in ops.cli("show", job_id, check=True).stdout
        (listed,) = ops.jobs()
        assert listed["home"] == shown["home"] and listed["home"].startswith("home-")
        assert (listed["host"], listed["daemon"]) == (attempt["host"], attempt["daemon"])
    finally:
        a.close()
        ops.close()


def test_jobs_of_a_state_directory_from_before_identities_are_adopted(env: Env) -> None:
    """A store written before state directories had an identity names a job's home
    host:path. The first daemon started there adopts those jobs, and runs them."""
    env.write_config("[lanes.held]\nconcurrency = 1\n")
    d = env.start()
    env.cli("pause", "held", check=True)
    env.publish('{"lane": "held", "argv": ["true"]}', "old.trigger")
    job_id = d.wait_for("queued")[0]["job"]
    d.stop()
    (env.state / "home.id").unlink()  # as the older release left the directory
    old = f"{socket.gethostname()}:{env.state}"
    with contextlib.closing(sqlite3.connect(env.state / "spoolq.db")) as db, db:
        db.execute("UPDATE jobs SET home = ?", (old,))

    d = env.start()
    (adopted,) = d.wait_for("home_adopted")
    assert (adopted["old"], adopted["jobs"]) == (old, 1)
    assert adopted["home"] == (env.state / "home.id").read_text().strip()
    env.cli("resume", "held", check=True)
    d.wait_for("succeeded", job=job_id)
    assert env.job(job_id)["home"] == adopted["home"]


def test_a_state_directorys_identity_is_made_once_and_kept(env: Env) -> None:
    d = env.start()
    home = (env.state / "home.id").read_text().strip()
    assert home.startswith("home-")
    d.stop()
    env.start()
    assert (env.state / "home.id").read_text().strip() == home
    (daemon,) = json.loads(env.cli("status", "--json", check=True).stdout)["daemons"]
    assert daemon["home"] == home


def test_a_claim_a_dead_peer_left_unrecorded_is_recovered_while_the_fleet_is_idle(
    env: Env,
) -> None:
    """Two daemons serve one state directory. A peer that died between its claim (the
    rename into claimed/) and recording it leaves a file no row names. It is too young to
    judge at first (the peer might have been about to record it); it becomes a job once
    old enough, though nothing else happens in the meantime."""
    from spoolq.claims import claim_name, new_job_id

    env.write_config('heartbeat_interval = "0.3s"\nstale_after = "2s"\n')
    first, second = env.start(), env.start()
    second.wait_for("ready")
    name = claim_name(new_job_id(), str(env.spool), "left.trigger")
    path = env.state / "claimed" / name
    path.write_text('{"argv": ["true"]}')
    path.chmod(0o644)
    wait_until(
        lambda: first.find("orphans_recovered") or second.find("orphans_recovered"),
        60,
        "the unrecorded claim to become a job",
    )
    (job,) = env.jobs()
    assert job["trigger"] == str(env.spool / "left.trigger")
    wait_until(lambda: env.job(job["id"])["state"] == "succeeded", 30, "it to run")


def test_logs_of_a_job_whose_log_is_not_here_say_where_it_runs(env: Env) -> None:
    """Without a copy in the store (the embedded store keeps none: its logs are on its
    host), ``logs`` says on which host the job runs or ran, and where its log is."""
    release = env.root / "release"
    d = env.start()
    env.publish(f"while [ ! -e {release} ]; do sleep 0.05; done\n", "long.trigger")
    job_id = d.wait_for("started")[0]["job"]
    log = Path(env.job(job_id)["log"])
    wait_until(log.exists, what="its log")
    log.unlink()  # as seen from a host without that state directory
    res = env.cli("logs", job_id)
    assert res.returncode == 1
    assert f"is running on {socket.gethostname()}: its log is there ({log})" in res.stderr
    release.touch()
    d.wait_for("succeeded", job=job_id)
    res = env.cli("logs", job_id)
    assert res.returncode == 1 and f"ran on {socket.gethostname()}" in res.stderr


def test_retry_failed_any_host_releases_what_it_can_and_names_what_it_left(env: Env) -> None:
    """``--failed`` brings in every failed job; with ``--any-host`` those that cannot leave
    their home (here, one whose trigger file is gone) are left as they are and named, and
    the others are released. A job named on the command line is all or nothing."""
    d = env.start()
    kept = env.publish('{"argv": ["false"]}', "kept.trigger")
    lost = env.publish('{"argv": ["false"]}', "lost.trigger")
    d.wait_for("failed", count=2)
    d.stop()
    by_trigger = {j["trigger"]: j for j in env.jobs("--state", "failed")}
    kept_job, lost_job = by_trigger[str(kept)], by_trigger[str(lost)]
    (archived,) = (env.state / "failed").glob(f"{lost_job['id']}.*")
    archived.unlink()

    res = env.cli("retry", "--any-host", lost_job["id"])
    assert res.returncode == 1 and "is gone" in res.stderr
    assert env.job(lost_job["id"])["state"] == "failed"

    res = env.cli("retry", "--failed", "--any-host")
    assert res.returncode == 1
    assert f"{kept_job['id']} queued again by any daemon" in res.stdout
    assert "1 failed job(s) left as they are" in res.stderr and lost_job["id"] in res.stderr
    assert (env.job(kept_job["id"])["state"], env.job(lost_job["id"])["state"]) == (
        "queued", "failed"
    )  # fmt: skip
    assert kept_job["home"] and env.job(kept_job["id"])["home"] is None  # any daemon's now
