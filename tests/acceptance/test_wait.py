"""Producers that wait for their jobs: ``spoolq wait``, ``submit --wait``, a duplicate
``--id`` reported before publishing, and ``spoolq.wait`` in Python - against a real daemon,
across a kill -9 and restart, and on PostgreSQL (woken by NOTIFY)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

import spoolq
from tests.conftest import (
    SPOOLQ,
    Env,
    wait_until,
)


def _popen(env: Env, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SPOOLQ, *env.base_args(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env.env,
        cwd=env.root,
    )


def test_submit_wait_exits_with_the_outcome_and_the_reason(env: Env) -> None:
    env.start()
    ok = env.cli("submit", "-d", str(env.spool), "--wait", "--", "true")
    assert ok.returncode == 0, ok.stderr
    path, outcome = ok.stdout.splitlines()
    assert outcome.endswith(f"succeeded ({Path(path).name})")
    bad = env.cli("submit", "-d", str(env.spool), "--wait", "--shell", "exit 3")
    assert bad.returncode == 1
    assert "failed: exit 3" in bad.stderr


def test_wait_on_many_jobs_returns_every_outcome(env: Env) -> None:
    env.write_config("[lanes.default]\nconcurrency = 4\n")
    env.start()
    triggers = [
        env.publish(json.dumps({"argv": ["sh", "-c", f"exit {1 if i == 7 else 0}"]}))
        for i in range(50)
    ]
    res = env.cli("wait", *map(str, triggers))
    assert res.returncode == 1, res.stderr  # one of them failed
    lines = res.stdout.splitlines()
    assert len(lines) == 50
    assert sum(" succeeded " in line for line in lines) == 49
    (failed,) = [line for line in lines if " failed" in line]
    assert triggers[7].name in failed
    jobs = env.jobs()
    assert len(jobs) == 50 and all(j["state"] in ("succeeded", "failed") for j in jobs)


def test_wait_for_succeeded_jobs_exits_0_and_json_lists_them(env: Env) -> None:
    env.start()
    triggers = [env.publish(json.dumps({"argv": ["true"]})) for _ in range(3)]
    res = env.cli("wait", "--json", *map(str, triggers))
    assert res.returncode == 0, res.stderr
    jobs = json.loads(res.stdout)
    assert [Path(j["trigger"]).name for j in jobs] == [t.name for t in triggers]
    assert {j["state"] for j in jobs} == {"succeeded"}
    by_id = env.cli("wait", jobs[0]["id"])
    assert by_id.returncode == 0 and jobs[0]["id"] in by_id.stdout


def test_a_waiting_producer_learns_why_its_trigger_was_rejected(env: Env) -> None:
    env.start()
    trigger = env.publish('{"argv": ["true"], "colour": "blue"}')
    res = env.cli("wait", str(trigger))
    assert res.returncode == 1
    assert "rejected: unknown key 'colour'" in res.stdout
    job = spoolq.wait(trigger, timeout=60, state_dir=env.state)
    assert job.state.value == "rejected" and "colour" in (job.reason or "")


def test_duplicate_id_is_reported_and_nothing_is_published(env: Env) -> None:
    d = env.start()
    first = env.cli("submit", "-d", str(env.spool), "--id", "load-42", "--", "sleep", "30")
    assert first.returncode == 0, first.stderr
    (started,) = d.wait_for("started")
    again = env.cli("submit", "-d", str(env.spool), "--id", "load-42", "--", "true")
    assert again.returncode == 1
    assert f"already job {started['job']} (running)" in again.stderr
    assert not list(env.spool.glob("*.trigger"))  # nothing published
    env.cli("cancel", started["job"], check=True)


def test_without_a_store_the_duplicate_check_is_skipped_and_said(env: Env) -> None:
    res = env.cli("submit", "-d", str(env.spool), "--id", "x", "--", "true")
    assert res.returncode == 0
    assert "duplicate check for --id 'x' skipped" in res.stderr
    assert Path(res.stdout.strip()).exists()


def test_wait_across_a_daemon_kill_and_restart_returns_the_final_outcome(env: Env) -> None:
    mark = env.root / "first-attempt-ran"
    # The first attempt marks its passage and hangs; the second finds the mark and succeeds.
    cmd = f"test -e {mark} && exit 0; touch {mark}; sleep 120"
    d = env.start()
    trigger = env.publish(json.dumps({"command": cmd}))
    (started,) = d.wait_for("started")
    waiter = _popen(env, "wait", str(trigger))
    try:
        wait_until(mark.exists, 30, "the first attempt to run")
        d.signal(signal.SIGKILL)
        d.proc.wait(10)
        assert waiter.poll() is None  # still waiting: the job has not ended
        d2 = env.start()
        d2.wait_for("succeeded", job=started["job"], timeout=60)
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, err
    assert out.startswith(f"{started['job']} succeeded")


def test_python_wait_times_out_then_returns_the_job(env: Env) -> None:
    env.start()
    gate = env.root / "gate"
    path = spoolq.submit(env.spool, command=f"while ! test -e {gate}; do sleep 0.05; done")
    with pytest.raises(spoolq.WaitTimeout):
        spoolq.wait(path, timeout=0.5, state_dir=env.state)
    gate.touch()
    job = spoolq.wait(path, timeout=60, state_dir=env.state)
    assert job.state.value == "succeeded" and job.trigger == str(path)
    assert spoolq.wait(job.id, state_dir=env.state).id == job.id


@pytest.mark.postgres
def test_wait_on_postgresql(env: Env, pg_url: str) -> None:
    env.write_config(f'store = "{pg_url}"\n')
    env.start()
    gate = env.root / "gate"
    trigger = env.publish(json.dumps({"command": f"while ! test -e {gate}; do sleep 0.05; done"}))
    waiter = _popen(env, "wait", str(trigger))
    try:
        wait_until(lambda: env.jobs("--state", "running"), 30, "the job to start")
        assert waiter.poll() is None
        gate.touch()
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, err
    assert " succeeded " in out
    dup = env.cli("submit", "-d", str(env.spool), "--wait", "--", "false")
    assert dup.returncode == 1 and "failed: exit 1" in dup.stderr
