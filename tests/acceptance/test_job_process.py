"""What a job's process starts with: the daemon starts jobs with posix_spawn, not Popen, so
each thing Popen would have done for us is checked here - no fd of the daemon's, the
signals Python ignores back at their defaults, the job's own PATH, its own working
directory, and a clear reason when it cannot start at all."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

from tests.conftest import SPOOLQ, Env, wait_until


def _log(env: Env, job_id: str) -> str:
    return Path(env.job(job_id)["log"]).read_text()


def test_a_job_holds_no_fd_of_the_daemon_even_ones_the_daemon_inherited(env: Env) -> None:
    leaked = os.open(env.root / "inherited.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    os.set_inheritable(leaked, True)
    try:
        d = env.start(pass_fds=(leaked,))
    finally:
        os.close(leaked)
    # ls opens /proc/self/fd itself: it lists 0, 1, 2 and its own directory fd.
    env.publish(json.dumps({"argv": ["ls", "/proc/self/fd"]}), name="fds.trigger")
    done = d.wait_for("succeeded", timeout=30)[0]
    fds = sorted(int(x) for x in _log(env, done["job"]).split("\n") if x.strip().isdigit())
    assert fds[:3] == [0, 1, 2]
    assert len(fds) == 4, f"the job saw fds {fds}: more than stdio and ls's own"


def test_a_job_starts_with_default_signal_dispositions(env: Env) -> None:
    d = env.start()
    env.publish(json.dumps({"argv": ["cat", "/proc/self/status"]}), name="sig.trigger")
    done = d.wait_for("succeeded", timeout=30)[0]
    status = _log(env, done["job"])
    ignored = int(next(x for x in status.splitlines() if x.startswith("SigIgn:")).split()[1], 16)
    blocked = int(next(x for x in status.splitlines() if x.startswith("SigBlk:")).split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} is ignored in the job"
    assert blocked == 0


def test_a_command_is_found_in_the_jobs_path_and_runs_in_its_cwd(env: Env) -> None:
    tools = env.root / "tools"
    tools.mkdir()
    tool = tools / "where-am-i"
    tool.write_text("#!/bin/sh\npwd\n")
    tool.chmod(0o755)
    workdir = env.root / "work"
    workdir.mkdir()
    d = env.start()
    path = f"{tools}:{os.environ['PATH']}"
    env.publish(
        json.dumps({"argv": ["where-am-i"], "env": {"PATH": path}, "cwd": str(workdir)}),
        name="tool.trigger",
    )
    env.publish(json.dumps({"argv": ["pwd"]}), name="default-cwd.trigger")
    done = {e["trigger"].rpartition("/")[2]: e["job"] for e in d.wait_for("succeeded", 2, 30)}
    assert _log(env, done["tool.trigger"]).splitlines()[1] == str(workdir)
    assert _log(env, done["default-cwd.trigger"]).splitlines()[1] == str(env.spool)


def test_a_command_that_cannot_start_fails_with_the_reason(env: Env) -> None:
    # No timer wakes the daemon: a start failure must be recorded (and the lane freed for
    # the next job) in the pass it happens in, not at the next heartbeat.
    env.write_config('heartbeat_interval = "1h"\n')
    d = env.start()
    script = env.root / "not-executable.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o644)
    env.publish(json.dumps({"argv": ["no-such-command-xyz"]}), name="missing.trigger")
    env.publish(json.dumps({"argv": [str(script)]}), name="noexec.trigger")
    tools = env.root / "tools"
    tools.mkdir()
    (tools / "not-runnable").write_text("#!/bin/sh\ntrue\n")
    env.publish(
        json.dumps({"argv": ["not-runnable"], "env": {"PATH": f"{tools}:/usr/bin:/bin"}}),
        name="onpath.trigger",
    )
    gone = str(env.root / "gone")
    env.publish(json.dumps({"argv": ["true"], "cwd": gone}), name="nocwd.trigger")
    failed = {e["trigger"].rpartition("/")[2]: e for e in d.wait_for("failed", 4, 30)}
    assert failed["missing.trigger"]["reason"] == (
        "cannot start 'no-such-command-xyz': No such file or directory"
    )
    assert failed["noexec.trigger"]["reason"] == f"cannot start {str(script)!r}: Permission denied"
    assert failed["onpath.trigger"]["reason"] == (
        f"cannot start 'not-runnable': Permission denied ({tools / 'not-runnable'})"
    )
    assert failed["nocwd.trigger"]["reason"] == (
        f"cannot start 'true': No such file or directory ({gone})"
    )
    # The daemon is unharmed: the next job runs.
    env.publish(json.dumps({"argv": ["true"]}), name="after.trigger")
    d.wait_for("succeeded", timeout=30)


def test_a_daemon_started_with_its_stdio_closed_still_runs_jobs(env: Env) -> None:
    """Started as `spoolq run ... <&- >&- 2>&-` (some service wrappers do): the daemon
    opens /dev/null there, so none of its own files gets a number a job's stdio uses."""
    args = [*env.base_args(), "run", str(env.spool)]
    cmd = " ".join(shlex.quote(a) for a in [SPOOLQ, *args])
    proc = subprocess.Popen(["sh", "-c", f"exec {cmd} <&- >&- 2>&-"], env=env.env, cwd=env.root)
    try:
        env.publish("echo to-the-log\n", name="quiet.trigger")

        def succeeded() -> list[dict[str, str]]:
            res = env.cli("jobs", "--json", "--state", "succeeded")  # no store yet: rc 1
            return json.loads(res.stdout) if res.returncode == 0 else []

        job = wait_until(succeeded, 30, "the job to succeed", interval=0.2)[0]
        assert "to-the-log" in Path(env.job(job["id"])["log"]).read_text()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
