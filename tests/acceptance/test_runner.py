"""Running jobs: retries with backoff, timeouts that take the whole process tree down,
and output that goes straight to disk without passing through the daemon."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, process_running, wait_claimed_empty, wait_until


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _only_file(directory: Path) -> str:
    names = [p.name for p in directory.iterdir()]
    assert len(names) == 1, names
    return names[0]


def _history(env: Env, job_id: str) -> list[dict[str, Any]]:
    return list(env.job(job_id)["attempt_history"])


def test_failing_job_is_retried_with_backoff_then_fails(env: Env) -> None:
    backoff = 0.2
    env.write_config(f'[defaults]\nretry_backoff = "{backoff}s"\n')
    d = env.start()
    attempts = env.root / "attempts.txt"
    trigger = env.publish(
        json.dumps({"command": f'echo "$SPOOLQ_ATTEMPT" >> {attempts}; exit 3', "retries": 2}),
        name="flaky.trigger",
    )
    failed = d.wait_for("failed", timeout=30)[0]
    assert len(d.find("retry_scheduled")) == 2
    assert attempts.read_text() == "1\n2\n3\n"
    job = env.job(failed["job"])
    assert (job["state"], job["attempts"], job["exit_code"]) == ("failed", 3, 3)
    history = job["attempt_history"]
    assert [a["n"] for a in history] == [1, 2, 3]
    assert [a["reason"] for a in history] == ["exit 3"] * 3
    assert [a["exit_code"] for a in history] == [3] * 3
    # Backoff doubles (0.2 s, then 0.4 s) with +-20% jitter; times are to the millisecond.
    for i, base in enumerate([backoff, 2 * backoff]):
        gap = _ts(history[i + 1]["started_at"]) - _ts(history[i]["finished_at"])
        assert gap >= base * 0.8 - 0.002, (i, gap)
    assert not trigger.exists()
    wait_claimed_empty(env)
    assert _only_file(env.state / "failed").endswith("flaky.trigger")


def test_job_that_fails_once_succeeds_on_retry(env: Env) -> None:
    env.write_config('[defaults]\nretry_backoff = "0.1s"\nretries = 3\n')
    d = env.start()
    cmd = '[ "$SPOOLQ_ATTEMPT" -ge 2 ] || exit 1'
    env.publish(json.dumps({"command": cmd}), name="second-time.trigger")
    done = d.wait_for("succeeded", timeout=30)[0]
    history = _history(env, done["job"])
    assert [a["reason"] for a in history] == ["exit 1", None]
    wait_claimed_empty(env)
    assert _only_file(env.state / "done").endswith("second-time.trigger")


def test_timeout_kills_the_whole_process_group(env: Env) -> None:
    env.write_config('[defaults]\nkill_grace = "2s"\n')
    d = env.start()
    pidfile = env.root / "grandchild.pid"
    env.publish(
        json.dumps({"command": f"sleep 300 & echo $! > {pidfile}; wait", "timeout": 1}),
        name="slow.trigger",
    )
    failed = d.wait_for("failed", timeout=30)[0]
    assert failed["reason"] == "timeout"
    grandchild = int(pidfile.read_text())
    # The state to reach: the grandchild dead of the group's signal. The deadline only stops
    # a hang (generous: a loaded CI box can stall a dying process for seconds).
    wait_until(lambda: not process_running(grandchild), timeout=60, what="grandchild gone")
    job = env.job(failed["job"])
    assert (job["state"], job["reason"]) == ("failed", "timeout")
    assert job["attempt_history"][0]["wall_s"] >= 1.0
    assert "terminating (timeout)" in Path(job["log"]).read_text()
    wait_claimed_empty(env)
    assert _only_file(env.state / "failed").endswith("slow.trigger")


def test_timeout_sigkills_a_job_that_ignores_sigterm(env: Env) -> None:
    grace = 0.5
    env.write_config(f'[defaults]\nkill_grace = "{grace}s"\n')
    d = env.start()
    shpid, childpid = env.root / "sh.pid", env.root / "child.pid"
    # Ignored signals stay ignored across fork and exec: neither sh nor sleep dies of TERM.
    cmd = f"trap '' TERM; echo $$ > {shpid}; sleep 300 & echo $! > {childpid}; wait; wait"
    env.publish(json.dumps({"command": cmd, "timeout": 1}))
    failed = d.wait_for("failed", timeout=30)[0]
    assert failed["reason"] == "timeout"
    for pidfile in (shpid, childpid):
        pid = int(pidfile.read_text())
        # A deadline against a hang only, generous for a loaded CI box: what is checked is
        # that both die although they ignore SIGTERM (and the SIGKILL in the log, below).
        wait_until(lambda pid=pid: not process_running(pid), timeout=60, what=f"{pid} gone")
    job = env.job(failed["job"])
    assert job["attempt_history"][0]["wall_s"] >= 1.0 + grace
    assert "SIGKILL" in Path(job["log"]).read_text()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_gigabyte_of_output_leaves_the_daemon_memory_flat(env: Env) -> None:
    size = 1 << 30
    if shutil.disk_usage(env.root).free < 3 * size:
        pytest.skip(
            f"needs 3 GiB free under {env.root} for a 1 GiB job log: free space or set TMPDIR"
        )
    d = env.start()
    env.publish("true\n")
    d.wait_for("succeeded")  # every code path of a job has run once
    pid = d.proc.pid
    before = _rss_kb(pid)
    trigger = env.publish(f"head -c {size} /dev/zero\n")
    peak = before
    deadline = time.monotonic() + 90
    while not d.find("succeeded", trigger=str(trigger)):
        assert time.monotonic() < deadline, "the 1 GiB job did not finish in 90 s"
        assert d.proc.poll() is None
        peak = max(peak, _rss_kb(pid))
        time.sleep(0.05)
    done = d.find("succeeded", trigger=str(trigger))[0]
    peak = max(peak, _rss_kb(pid))
    log = Path(env.job(done["job"])["log"])
    try:
        assert peak - before < 15 * 1024, f"daemon RSS grew from {before} KB to {peak} KB"
        with log.open("rb") as fh:
            head = fh.readline()  # spoolq's note before the step
            assert head.startswith(b"--- spoolq")
            fh.seek(len(head) + size)
            tail = fh.read()
            fh.seek(len(head) + size - 4096)
            assert fh.read(4096) == bytes(4096)
        # After exactly 1 GiB of the job's output comes spoolq's closing note, and nothing
        # else: no byte lost or added.
        assert tail.startswith(b"--- spoolq") and b"ended: ok" in tail
        assert log.stat().st_size == len(head) + size + len(tail)
    finally:
        log.unlink()


def test_a_removed_archive_directory_is_made_again(env: Env) -> None:
    """The daemon holds done/ open to move triggers cheaply; an operator who removes it
    (or rotates it) must not leave later triggers stuck in claimed/."""
    d = env.start()
    env.publish("true\n", name="first.trigger")
    d.wait_for("succeeded")
    wait_claimed_empty(env)
    shutil.rmtree(env.state / "done")
    env.publish("true\n", name="second.trigger")
    d.wait_for("succeeded", 2)
    wait_claimed_empty(env)
    assert [p.name.split(".", 2)[2] for p in (env.state / "done").iterdir()] == ["second.trigger"]


def test_a_removed_claimed_directory_is_made_again_at_the_next_heartbeat(env: Env) -> None:
    env.write_config('heartbeat_interval = "0.2s"\n')
    d = env.start()
    shutil.rmtree(env.state / "claimed")
    d.wait_for("claimed_dir_replaced")
    env.publish("true\n", name="after.trigger")
    d.wait_for("succeeded")
    wait_claimed_empty(env)
    assert [p.name.split(".", 2)[2] for p in (env.state / "done").iterdir()] == ["after.trigger"]
