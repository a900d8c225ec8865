"""kill -9 of the daemon in the middle of a job: at the next start the job runs again (and
only once at a time), and triggers that landed while no daemon ran are all picked up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import Env, process_running, wait_claimed_empty, wait_until


def test_kill_9_mid_job_then_restart_reruns_the_job_and_loses_nothing(env: Env) -> None:
    env.write_config('[defaults]\nkill_grace = "0.5s"\n')
    attempts = env.root / "attempts.txt"
    release = env.root / "release"
    # The job ignores SIGTERM (so does its sleep): only SIGKILL to its group ends it.
    long_job = env.publish(
        f"trap '' TERM; echo \"$SPOOLQ_ATTEMPT $$\" >> {attempts}; "
        f"while [ ! -e {release} ]; do sleep 0.02; done; "
        f'echo "done $SPOOLQ_ATTEMPT" >> {attempts}\n',
        name="long.trigger",
    )
    d1 = env.start()
    started = d1.wait_for("started")[0]
    job_id = started["job"]
    # Killed once the store knows the job's process, as in the middle of a long load (a
    # kill before that is the next test's).
    wait_until(lambda: env.job(job_id)["pid"], what="job pid recorded")
    # The shell creates the file before it writes the line: wait for the whole line.
    wait_until(
        lambda: attempts.exists() and attempts.read_text().endswith("\n"), what="job running"
    )
    orphan = int(attempts.read_text().split()[1])
    d1.kill()
    assert process_running(orphan), "the job should outlive its daemon's SIGKILL"

    late = [
        env.publish(f"echo {i} >> {env.root / 'late.txt'}\n", name=f"late{i}.trigger")
        for i in range(5)
    ]
    d2 = env.start()
    # The orphan's whole group is gone before the job is re-queued: it never runs twice
    # at once (the daemon does not wait for that before it is ready).
    d2.wait_for("orphan_killed", job=job_id)
    assert not process_running(orphan)
    d2.wait_for("interrupted", job=job_id)
    d2.wait_for("started", job=job_id, attempt=2)
    wait_until(lambda: len(attempts.read_text().splitlines()) == 2, what="attempt 2 running")
    release.touch()
    d2.wait_for("succeeded", count=6, timeout=30)
    lines = attempts.read_text().splitlines()
    assert lines[0] == f"1 {orphan}"
    assert lines[1].startswith("2 ")
    assert lines[2:] == ["done 2"]

    job = env.job(job_id)
    assert (job["state"], job["attempts"]) == ("succeeded", 2)
    assert [a["reason"] for a in job["attempt_history"]] == ["interrupted", None]
    jobs = env.jobs()
    assert sorted(j["trigger"] for j in jobs) == sorted(str(p) for p in [long_job, *late])
    assert {j["state"] for j in jobs} == {"succeeded"}
    assert sorted((env.root / "late.txt").read_text().split()) == [str(i) for i in range(5)]
    assert not list(env.spool.glob("*.trigger"))
    wait_claimed_empty(env)
    assert len(list((env.state / "done").iterdir())) == 6
    assert d2.stop() == 0


def test_kill_9_with_a_queued_backlog_loses_nothing(env: Env) -> None:
    """Triggers claimed and queued (not yet run) when the daemon dies run after restart,
    once each, together with the ones published while it was down."""
    d1 = env.start()
    env.cli("pause", "default", check=True)
    out = env.root / "ran.txt"
    before = [env.publish(f"echo b{i} >> {out}\n", name=f"b{i}.trigger") for i in range(10)]
    d1.wait_for("queued", count=10)
    d1.kill()
    during = [env.publish(f"echo d{i} >> {out}\n", name=f"d{i}.trigger") for i in range(10)]
    d2 = env.start()
    env.cli("resume", "default", check=True)
    d2.wait_for("succeeded", count=20, timeout=30)
    ran = out.read_text().split()
    assert sorted(ran) == sorted([f"b{i}" for i in range(10)] + [f"d{i}" for i in range(10)])
    triggers = sorted(Path(j["trigger"]).name for j in env.jobs())
    assert triggers == sorted(p.name for p in [*before, *during])
    assert d2.stop() == 0


SLOW_TO_DIE = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ballast = b"x" * (768 << 20)  # touched memory: freeing it after SIGKILL takes a while
print(__import__("os").getpid(), flush=True)
while True:
    time.sleep(0.05)
"""

CHECK_OLD = (
    "old=$(cat {pidfile}); "
    'if [ -e /proc/$old ] && [ "$(sed \'s/.*) //\' /proc/$old/stat | cut -d" " -f1)" != Z ]; '
    "then echo overlap >> {verdict}; else echo clear >> {verdict}; fi"
)


@pytest.mark.parametrize("when", ["pid recorded", "right after the spawn"])
def test_a_rescued_job_never_starts_while_a_process_of_its_old_attempt_lives(
    env: Env, when: str
) -> None:
    """The old attempt's process ignores SIGTERM and, once SIGKILLed, takes a while to die
    (it frees a large memory): attempt 2 looks for it the moment it starts."""
    env.write_config('[defaults]\nkill_grace = "0.2s"\n')
    pidfile, verdict = env.root / "old.pid", env.root / "verdict"
    code = env.root / "slow_to_die.py"
    code.write_text(SLOW_TO_DIE)
    env.publish(
        f'if [ "$SPOOLQ_ATTEMPT" = 1 ]; then exec {sys.executable} {code} > {pidfile}; fi\n'
        + CHECK_OLD.format(pidfile=pidfile, verdict=verdict)
        + "\n",
        name="load.trigger",
    )
    if when == "pid recorded":
        d1 = env.start()
        job_id = d1.wait_for("started")[0]["job"]
        wait_until(lambda: env.job(job_id)["pid"], what="job pid recorded")
    else:
        # The daemon dies the moment the job is spawned: no pid in the store, nothing
        # but the job's own marker leads the next start to its process.
        env.env["SPOOLQ_FAULTS"] = "spawned=1"
        d1 = env.start()
        assert d1.proc.wait(30) == 86
        env.env.pop("SPOOLQ_FAULTS")
        job_id = env.jobs()[0]["id"]
        assert env.job(job_id)["pid"] is None
    wait_until(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"), what="old pid")
    old = int(pidfile.read_text())
    if when == "pid recorded":
        d1.kill()
    d2 = env.start()
    d2.wait_for("succeeded", job=job_id, timeout=60)
    assert not process_running(old)
    assert verdict.read_text() == "clear\n", "attempt 2 started beside attempt 1's process"
    assert d2.stop() == 0
