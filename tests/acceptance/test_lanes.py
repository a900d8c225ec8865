"""Lanes: a concurrency-1 lane never runs two jobs at once, different lanes run side by
side, a lane of N runs N and no more, and priorities order what waits."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import Env


def _barrier(mine: Path, other: Path, timeout_s: int = 20) -> str:
    """Shell: announce that this job runs, then wait for the other one to run too (exit 1
    if it never does, so the job fails instead of hanging)."""
    tries = timeout_s * 100
    return (
        f"touch {mine}; i=0; "
        f"while [ ! -e {other} ] && [ $i -lt {tries} ]; do sleep 0.01; i=$((i+1)); done; "
        f"[ -e {other} ]"
    )


def test_a_burst_into_a_concurrency_1_lane_never_overlaps(env: Env) -> None:
    d = env.start()
    marks = env.root / "marks.txt"
    lock = env.root / "lock"
    job = (
        f"mkdir {lock} || echo OVERLAP >> {marks}; "
        f'echo "start $SPOOLQ_JOB_ID $(date +%s%N)" >> {marks}; '
        "sleep 0.01; "
        f'echo "end $SPOOLQ_JOB_ID $(date +%s%N)" >> {marks}; '
        f"rmdir {lock}"
    )
    n = 40
    for i in range(n):
        env.publish(job + "\n", name=f"burst{i:02}.trigger")
    d.wait_for("succeeded", count=n, timeout=60)
    lines = marks.read_text().split("\n")[:-1]
    assert "OVERLAP" not in lines
    assert len(lines) == 2 * n
    intervals = []
    for start, end in zip(lines[0::2], lines[1::2], strict=True):
        kind_s, job_s, t_s = start.split()
        kind_e, job_e, t_e = end.split()
        # Each job's end comes right after its start: nothing else ran in between.
        assert (kind_s, kind_e) == ("start", "end") and job_s == job_e, (start, end)
        intervals.append((int(t_s), int(t_e)))
    for (_, prev_end), (next_start, _) in itertools.pairwise(intervals):
        assert next_start >= prev_end
    assert len({j["id"] for j in env.jobs("--state", "succeeded")}) == n
    assert len(d.find("started")) == n


def test_jobs_in_different_lanes_run_at_the_same_time(env: Env) -> None:
    d = env.start()
    a, b = env.root / "a.running", env.root / "b.running"
    env.publish(json.dumps({"command": _barrier(a, b), "lane": "lane-a"}), name="a.trigger")
    env.publish(json.dumps({"command": _barrier(b, a), "lane": "lane-b"}), name="b.trigger")
    d.wait_for("succeeded", count=2, timeout=30)
    assert not d.find("failed")
    # Lanes the config does not define get concurrency 1, with a warning.
    assert {e["lane"] for e in d.find("unknown_lane")} == {"lane-a", "lane-b"}


def test_same_lane_jobs_run_one_after_the_other(env: Env) -> None:
    """The converse of the test above: in one concurrency-1 lane the second job starts only
    after the first has ended. The first runs until released. The second, published while it
    runs, must not have started once a job of another lane, published after it, has run: the
    daemon dispatches a lane as soon as it records a job, so it would have started by then.
    Once the first is released, the second finds the first's process gone when it starts."""
    d = env.start()
    gate, pidfile, seen = env.root / "gate", env.root / "first.pid", env.root / "seen"
    first = env.publish(
        f"echo $$ > {pidfile}; while [ ! -e {gate} ]; do sleep 0.05; done\n", name="first.trigger"
    )
    d.wait_for("started", trigger=str(first))
    second = env.publish(
        f"if kill -0 $(cat {pidfile}) 2>/dev/null; then echo overlap; else echo alone; fi"
        f" > {seen}\n",
        name="second.trigger",
    )
    d.wait_for("queued", trigger=str(second))
    probe = env.publish(json.dumps({"argv": ["true"], "lane": "other"}), name="probe.trigger")
    d.wait_for("succeeded", trigger=str(probe))
    assert not d.find("started", trigger=str(second)) and not seen.exists()
    gate.touch()
    done = d.wait_for("succeeded", trigger=str(second))[0]
    assert seen.read_text() == "alone\n"
    first_job = env.job(d.find("succeeded", trigger=str(first))[0]["job"])
    assert first_job["finished_at"] <= env.job(done["job"])["started_at"]


@pytest.mark.parametrize("how", ["config", "flag"])
def test_lane_concurrency_n_is_reached_and_never_exceeded(env: Env, how: str) -> None:
    n_jobs, limit = 8, 3
    extra: list[str] = []
    if how == "config":
        env.write_config(f"[lanes.x]\nconcurrency = {limit}\n")
    else:
        extra = ["--lane-concurrency", f"x={limit}"]
    d = env.start(*extra)
    running = env.root / "running"
    running.mkdir()
    counts = env.root / "counts.txt"
    release = env.root / "release"
    cmd = (
        f"touch {running}/$SPOOLQ_JOB_ID; ls {running} | wc -l >> {counts}; "
        f"while [ ! -e {release} ]; do sleep 0.01; done; rm {running}/$SPOOLQ_JOB_ID"
    )
    for i in range(n_jobs):
        env.publish(json.dumps({"command": cmd, "lane": "x"}), name=f"x{i}.trigger")
    d.wait_for("started", count=limit, lane="x")
    # Barrier: a job in another lane has come and gone, so the daemon has had every chance
    # to start a fourth job in lane x if it were going to.
    marker = env.publish(json.dumps({"command": "true", "lane": "other"}))
    d.wait_for("succeeded", trigger=str(marker))
    assert len(d.find("started", lane="x")) == limit
    status = json.loads(env.cli("status", "--json", check=True).stdout)
    lane = next(la for la in status["lanes"] if la["name"] == "x")
    assert (lane["concurrency"], lane["running"], lane["queued"]) == (limit, limit, n_jobs - limit)
    release.touch()
    d.wait_for("succeeded", count=n_jobs, lane="x", timeout=30)
    seen = [int(c) for c in counts.read_text().split()]
    assert len(seen) == n_jobs
    assert max(seen) == limit


def test_priorities_order_a_paused_backlog(env: Env) -> None:
    d = env.start()
    env.cli("pause", "default", check=True)
    order = env.root / "order.txt"
    priorities = [0, 5, 0, 10, 5, -1, 0]
    for i, p in enumerate(priorities):
        name = f"p{i}.trigger"
        doc: dict[str, object] = {"command": f"echo {i} >> {order}"}
        if p:
            doc["priority"] = p
        trigger = env.publish(json.dumps(doc), name=name)
        # One at a time, so the queue order (FIFO among equals) is the publish order.
        d.wait_for("queued", trigger=str(trigger))
    assert not d.find("started")
    env.cli("resume", "default", check=True)
    d.wait_for("succeeded", count=len(priorities))
    expected = sorted(range(len(priorities)), key=lambda i: (-priorities[i], i))
    assert [int(x) for x in order.read_text().split()] == expected == [3, 1, 4, 0, 2, 6, 5]


def _backlog(env: Env, texts: list[str]) -> None:
    """Publish a backlog that built up while no daemon ran: one trigger a minute, under
    names whose alphabetical order is not the publish order."""
    now = time.time()
    for i, text in enumerate(texts):
        trigger = env.publish(text, name=f"{(i * 7919) % 101:03}-{i}.trigger")
        stamp = now - 60 * (len(texts) - i)
        os.utime(trigger, (stamp, stamp))


def test_priorities_order_a_backlog_found_at_start(env: Env) -> None:
    order = env.root / "order.txt"
    priorities = [1, 7, 3, 9, 0, 5]
    _backlog(
        env,
        [
            json.dumps({"command": f"echo {i} >> {order}", "priority": p})
            for i, p in enumerate(priorities)
        ],
    )
    d = env.start()
    d.wait_for("succeeded", count=len(priorities))
    expected = sorted(range(len(priorities)), key=lambda i: -priorities[i])
    assert [int(x) for x in order.read_text().split()] == expected


def test_equal_priority_backlog_found_at_start_runs_in_publish_order(env: Env) -> None:
    """The start-up scan sees a directory in hash order; FIFO means publish order."""
    order = env.root / "order.txt"
    names = ["zeta", "alpha", "mike", "bravo", "yankee", "charlie", "x-ray", "delta"]
    _backlog(env, [f"echo {name} >> {order}\n" for name in names])
    d = env.start()
    d.wait_for("succeeded", count=len(names))
    assert order.read_text().split() == names
