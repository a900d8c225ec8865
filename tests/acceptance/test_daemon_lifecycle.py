"""Shutdown as an operator sees it: the first SIGTERM/SIGINT drains (running jobs finish,
nothing new is claimed, exit 0), a second one stops running jobs, which run again at the
next start."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Env, process_running, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_first_signal_drains_running_jobs_and_claims_nothing_new(
    env: Env, sig: signal.Signals
) -> None:
    d = env.start()
    release, out = env.root / "release", env.root / "out.txt"
    running = env.publish(
        f"while [ ! -e {release} ]; do sleep 0.02; done; echo finished > {out}\n",
        name="running.trigger",
    )
    job_id = d.wait_for("started", trigger=str(running))[0]["job"]
    d.signal(sig)
    assert d.wait_for("stopping")[0]["running"] == 1
    late = env.publish(f"touch {env.root / 'late.txt'}\n", name="late.trigger")
    assert d.proc.poll() is None  # still waiting for the running job
    release.touch()
    assert d.proc.wait(30) == 0
    d.wait_for("stopped")
    assert out.read_text() == "finished\n"
    assert env.job(job_id)["state"] == "succeeded"
    # Published after the signal: left in the spool, untouched, for the next daemon.
    assert late.exists()
    assert [j["id"] for j in env.jobs()] == [job_id]
    assert not d.find("queued", trigger=str(late))

    d2 = env.start()
    d2.wait_for("succeeded", trigger=str(late))
    assert (env.root / "late.txt").exists()
    assert d2.stop() == 0


# No periodic wake-up to hide behind: what is queued at start must start at once.
NO_TIMERS = 'heartbeat_interval = "1h"\n'


def test_second_signal_terminates_running_jobs_which_rerun_at_next_start(env: Env) -> None:
    env.write_config(NO_TIMERS)
    d = env.start()
    attempts, pids = env.root / "attempts.txt", env.root / "pids.txt"
    trigger = env.publish(
        f'echo "$SPOOLQ_ATTEMPT" >> {attempts}; echo $$ >> {pids}; '
        '[ "$SPOOLQ_ATTEMPT" -ge 2 ] && exit 0; '
        "while true; do sleep 0.02; done\n",
        name="endless.trigger",
    )
    job_id = d.wait_for("started", trigger=str(trigger))[0]["job"]
    # The shell creates the file before it writes the line: wait for the whole line.
    wait_until(lambda: pids.exists() and pids.read_text().endswith("\n"), what="job running")
    pid = int(pids.read_text())
    d.signal(signal.SIGTERM)
    d.wait_for("stopping")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    assert not process_running(pid)
    job = env.job(job_id)
    assert job["state"] == "queued"
    assert [a["reason"] for a in job["attempt_history"]] == ["interrupted"]
    # The trigger stays claimed (not back in the spool, not archived) until the job is done.
    assert not trigger.exists()
    assert len(list((env.state / "claimed").iterdir())) == 1

    d2 = env.start()
    d2.wait_for("succeeded", job=job_id)
    assert attempts.read_text() == "1\n2\n"
    job = env.job(job_id)
    assert (job["state"], job["attempts"]) == ("succeeded", 2)
    assert [j["id"] for j in env.jobs()] == [job_id]
    assert d2.stop() == 0


def test_jobs_queued_in_the_store_run_at_the_next_start(env: Env) -> None:
    """A backlog left queued by a stopped daemon starts as soon as a daemon starts again,
    with no new trigger to wake it."""
    env.write_config(NO_TIMERS)
    d = env.start()
    env.cli("pause", "default", check=True)
    out = env.root / "out.txt"
    for i in range(3):
        env.publish(f"echo {i} >> {out}\n", name=f"q{i}.trigger")
    d.wait_for("queued", count=3)
    assert d.stop() == 0
    env.cli("resume", "default", check=True)  # no daemon running: recorded in the store
    d2 = env.start()
    d2.wait_for("succeeded", count=3)
    assert out.read_text() == "0\n1\n2\n"
    assert d2.stop() == 0


def test_a_stop_with_triggers_just_seen_waits_quietly_and_leaves_them_in_the_spool(
    env: Env,
) -> None:
    """SIGTERM handled in the same pass as fresh inotify events: the daemon drains its
    running job without spinning on the triggers it will not claim any more, nor on the
    rescans it no longer runs (a short rescan_interval passes during the window)."""
    env.write_config(f'{NO_TIMERS}[[spool]]\npath = "{env.spool}"\nrescan_interval = "0.2s"\n')
    d = env.start()
    gate = env.root / "gate"
    env.publish(f"while [ ! -e {gate} ]; do sleep 0.05; done\n", name="running.trigger")
    d.wait_for("started")
    d.signal(signal.SIGSTOP)
    try:
        late = [env.publish("true\n", name=f"late{i}.trigger") for i in range(5)]
        d.signal(signal.SIGTERM)
    finally:
        d.signal(signal.SIGCONT)
    d.wait_for("stopping")
    stat = Path(f"/proc/{d.proc.pid}/stat")
    cpu0 = sum(int(x) for x in stat.read_text().rsplit(")", 1)[1].split()[11:13])
    t0 = time.monotonic()
    time.sleep(1.0)  # the window observed, not a wait for an event
    cpu1 = sum(int(x) for x in stat.read_text().rsplit(")", 1)[1].split()[11:13])
    busy = (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
    assert busy < 0.3, f"the stopping daemon used {busy:.0%} of a core while waiting"
    gate.touch()
    assert d.proc.wait(30) == 0
    assert all(t.exists() for t in late), "triggers not claimed before the stop stay put"


def test_a_backlog_is_claimed_a_batch_at_a_time_so_jobs_run_and_a_stop_is_heard(env: Env) -> None:
    """A large backlog found at start is claimed one batch per pass of the event loop: jobs
    run (and are reaped, and replaced) while it is being claimed, and a SIGTERM stops the
    claiming at once, leaving the rest in the spool for the next start. (The whole backlog
    used to be claimed first: one job ran, and the stop waited, until the last claim.)"""
    env.write_config(NO_TIMERS)
    n = 8000
    for i in range(n):
        (env.spool / f"b{i:05d}.trigger").write_text("true\n")
    d = env.start(ready=False)
    assert d.wait_for("ready", timeout=60)[0]["pending"] == n
    d.wait_for("succeeded", count=3, timeout=60)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0
    left = list(env.spool.glob("*.trigger"))
    recorded = env.jobs()
    assert len(left) + len(recorded) == n, "every trigger is either still published or a job"
    assert len(left) > n // 2, f"only {len(left)} of {n} left: the stop waited for the claims"
