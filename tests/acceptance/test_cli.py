"""Every ``spoolq`` command end to end: the real executable against a real running daemon,
``--json`` output parsed, exit codes checked (0 ok, 1 operation failed, 2 usage/config).

Jobs that must stay running wait for a gate file the test creates, so "running", "queued
behind it" and "never started" are facts the test controls, not timing guesses.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import SPOOLQ, DaemonProcess, Env, wait_until

JOB_KEYS = {
    "id", "state", "lane", "trigger", "attempts", "exit_code", "reason",
    "created_at", "started_at", "finished_at", "log",
}  # fmt: skip
ATTEMPT_KEYS = {"n", "exit_code", "reason", "wall_s", "cpu_s", "max_rss_kb"}
MARKUP = 'echo "[/] [bold]x"; exit 3'
ECHO_ENV = 'echo "$GREETING from lane $SPOOLQ_LANE attempt $SPOOLQ_ATTEMPT"'


# -- helpers -------------------------------------------------------------------------------
def submit(env: Env, *args: str) -> Path:
    """``spoolq submit -d SPOOL ARGS`` and the trigger path it printed."""
    res = env.cli("submit", "-d", str(env.spool), *args, check=True)
    path = Path(res.stdout.strip())
    assert path.is_absolute() and path.parent == env.spool and path.suffix == ".trigger", path
    return path


def queued(d: DaemonProcess, trigger: Path) -> str:
    """The id of the job the daemon made from ``trigger``."""
    return str(d.wait_for("queued", trigger=str(trigger))[0]["job"])


def blocker(gate: Path) -> str:
    """A shell command that runs until ``gate`` exists."""
    return f"while [ ! -e '{gate}' ]; do sleep 0.05; done"


def utc(value: str) -> datetime:
    assert value.endswith(("Z", "+00:00")), f"{value!r} has no explicit UTC zone"
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for its (new) parent to reap it."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return data[data.rfind(b")") + 2 :].split()[0] == b"Z"


def read_pid(path: Path) -> int:
    text = wait_until(
        lambda: path.exists() and path.read_text().endswith("\n") and path.read_text(),
        what=f"pid file {path}",
    )
    return int(text)


def archived(env: Env, sub: str) -> list[str]:
    return sorted(p.name for p in (env.state / sub).iterdir())


# -- submit -> run -> jobs / show / logs ------------------------------------------------------
def test_submit_argv_with_every_flag_then_jobs_show_and_logs(env: Env) -> None:
    env.write_config("[lanes.etl]\nconcurrency = 1\n")
    d = env.start()
    trigger = submit(
        env, "--lane", "etl", "--id", "load-sales-1", "--priority", "5", "--timeout", "90s",
        "--retries", "2", "--env", "GREETING=hello", "--env", "EMPTY=",
        "--", "sh", "-c", ECHO_ENV,
    )  # fmt: skip
    job_id = queued(d, trigger)
    d.wait_for("succeeded", job=job_id)

    job = env.job(job_id)
    assert set(job) >= JOB_KEYS
    assert job["state"] == "succeeded"
    assert job["lane"] == "etl"
    assert job["priority"] == 5
    assert job["idempotency_key"] == "load-sales-1"
    assert job["timeout"] == 90.0
    assert job["retries"] == 2
    assert job["steps"] == [["sh", "-c", ECHO_ENV]]
    assert job["trigger"] == str(trigger)
    assert job["attempts"] == 1 and job["exit_code"] == 0 and job["reason"] is None
    assert os.path.isabs(job["log"]) and Path(job["log"]).is_file()
    assert Path(job["file"]).parent == env.state / "done"
    created, started, finished = (utc(job[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished
    (attempt,) = job["attempt_history"]
    assert set(attempt) >= ATTEMPT_KEYS
    assert attempt["n"] == 1 and attempt["exit_code"] == 0 and attempt["reason"] is None
    assert isinstance(attempt["wall_s"], float) and attempt["wall_s"] >= 0
    assert isinstance(attempt["cpu_s"], float) and attempt["cpu_s"] >= 0
    # A job smaller than the daemon has no measurable peak (see test_peak_rss.py).
    assert attempt["max_rss_kb"] is None

    (listed,) = env.jobs()
    assert {k: listed[k] for k in JOB_KEYS} == {k: job[k] for k in JOB_KEYS}

    log = env.cli("logs", job_id, check=True).stdout
    assert "hello from lane etl attempt 1\n" in log

    human = env.cli("show", job_id, check=True).stdout
    assert job_id in human and "succeeded" in human and "attempts" in human
    table = env.cli("jobs", check=True).stdout
    assert job_id in table and trigger.name in table


def test_submit_shell_and_job_template_and_the_config_spool(env: Env) -> None:
    out = env.root / "out"
    out.mkdir()
    env.write_config(
        f"""
[[spool]]
path = "{env.spool}"

[jobs.greet]
argv = ["sh", "-c", 'printf %s "$1" > "$2"', "greet", "{{word}}", "{{out}}"]
lane = "tmpl"
params.word = {{ pattern = "^[a-z]+$" }}
params.out = {{ type = "path", under = "{out}" }}
"""
    )
    d = env.start()

    # No -d: the config's first spool. Shell commands run in the spool directory.
    res = env.cli("submit", "--shell", "echo shell-ok > shell.txt", check=True)
    shell_trigger = Path(res.stdout.strip())
    assert shell_trigger.parent == env.spool
    d.wait_for("succeeded", job=queued(d, shell_trigger))
    assert (env.spool / "shell.txt").read_text() == "shell-ok\n"

    tmpl_trigger = submit(env, "--job", "greet", "--param", "word=hello", "--param", "out=r.txt")
    job_id = queued(d, tmpl_trigger)
    d.wait_for("succeeded", job=job_id)
    assert (out / "r.txt").read_text() == "hello"
    job = env.job(job_id)
    assert job["lane"] == "tmpl"
    assert job["steps"] == [
        ["sh", "-c", 'printf %s "$1" > "$2"', "greet", "hello", str(out / "r.txt")]
    ]

    # A bad param is caught before anything is published, by the daemon's own parser.
    bad = env.cli("submit", "--job", "greet", "--param", "word=Hello World", "--param", "out=x")
    assert bad.returncode == 2
    assert "word" in bad.stderr and "reject" in bad.stderr
    escape = env.cli("submit", "--job", "greet", "--param", "word=hi", "--param", "out=../x")
    assert escape.returncode == 2 and "out" in escape.stderr
    assert sorted(p.name for p in env.spool.iterdir()) == [".spoolq", "shell.txt"]


def test_jobs_filters_limit_and_newest_first(env: Env) -> None:
    env.write_config("[lanes.a]\nconcurrency = 1\n[lanes.b]\nconcurrency = 1\n")
    d = env.start()
    ids = []
    for lane, cmd in (("a", "true"), ("b", MARKUP), ("b", "true")):
        ids.append(queued(d, submit(env, "--lane", lane, "--shell", cmd)))
    ok_a, fail_b, ok_b = ids
    d.wait_for("failed", job=fail_b)
    d.wait_for("succeeded", job=ok_a)
    d.wait_for("succeeded", job=ok_b)

    assert [j["id"] for j in env.jobs()] == [ok_b, fail_b, ok_a]
    (failed,) = env.jobs("--state", "failed")
    assert failed["id"] == fail_b and failed["exit_code"] == 3 and failed["reason"] == "exit 3"
    assert [j["id"] for j in env.jobs("--lane", "b")] == [ok_b, fail_b]
    assert [j["id"] for j in env.jobs("--state", "succeeded", "--lane", "a")] == [ok_a]
    limited = env.cli("jobs", "--json", "--limit", "1", check=True).stdout
    assert [j["id"] for j in json_list(limited)] == [ok_b]
    assert env.jobs("--lane", "nope", "--state", "failed") == []

    # Human output prints job data as is: brackets in a command are not rich markup.
    shown = env.cli("show", fail_b, check=True).stdout
    assert 'echo "[/] [bold]x"' in shown, shown
    table = env.cli("jobs", "--lane", "b", check=True).stdout
    assert fail_b in table and ok_b in table and ok_a not in table


def json_list(text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    assert isinstance(data, list)
    return data


# -- logs -f -----------------------------------------------------------------------------------
def test_logs_follow_streams_a_running_job_and_exits_when_it_ends(env: Env) -> None:
    d = env.start()
    gate = env.root / "gate"
    trigger = submit(env, "--shell", f"echo first-line; {blocker(gate)}; echo second-line")
    job_id = queued(d, trigger)
    d.wait_for("started", job=job_id)

    follower = subprocess.Popen(
        [SPOOLQ, *env.base_args(), "logs", job_id, "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env.env,
        text=True,
    )
    seen: list[str] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: "first-line\n" in seen, what="the running job's output")
        assert follower.poll() is None, "logs -f exited while the job was still running"
        gate.touch()
        assert follower.wait(timeout=15) == 0
        reader.join(5)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        for stream in (follower.stdout, follower.stderr):
            if stream:
                stream.close()
    text = "".join(seen)
    assert text.index("first-line") < text.index("second-line")
    assert "attempt 1 ended: ok" in text
    assert env.job(job_id)["state"] == "succeeded"


# -- cancel ------------------------------------------------------------------------------------
def test_cancel_a_queued_job_it_never_runs(env: Env) -> None:
    d = env.start()
    gate = env.root / "gate"
    first = queued(d, submit(env, "--shell", blocker(gate)))
    d.wait_for("started", job=first)
    victim_trigger = submit(env, "--shell", f"touch '{env.root / 'victim-ran'}'")
    victim = queued(d, victim_trigger)

    res = env.cli("cancel", victim, check=True)
    assert f"{victim} cancelled" in res.stdout
    job = env.job(victim)
    assert job["state"] == "cancelled" and job["attempts"] == 0
    assert job["finished_at"] is not None and job["started_at"] is None
    assert Path(job["file"]).parent == env.state / "cancelled"
    assert archived(env, "cancelled") == [Path(job["file"]).name]
    assert Path(job["file"]).name.endswith(victim_trigger.name)

    # The lane moves on: the blocker ends, a later job runs, the cancelled one never does.
    gate.touch()
    d.wait_for("succeeded", job=first)
    later = queued(d, submit(env, "--shell", "true"))
    d.wait_for("succeeded", job=later)
    assert not d.find("started", job=victim)
    assert not (env.root / "victim-ran").exists()
    assert env.job(victim)["state"] == "cancelled"

    again = env.cli("cancel", victim)
    assert again.returncode == 1 and "already cancelled" in again.stderr


def test_cancel_a_running_job_terminates_its_process_group(env: Env) -> None:
    d = env.start()
    leader_file, child_file = env.root / "leader.pid", env.root / "child.pid"
    trigger = submit(
        env, "--shell", f"sleep 300 & echo $! > '{child_file}'; echo $$ > '{leader_file}'; wait"
    )
    job_id = queued(d, trigger)
    leader, child = read_pid(leader_file), read_pid(child_file)
    assert not process_gone(leader) and not process_gone(child)

    res = env.cli("cancel", job_id[:12].lower(), check=True)
    assert job_id in res.stdout and "terminating" in res.stdout
    # The daemon reacts within 1 s (a timing: bench/ measures such things). Here the deadline
    # only stops a hang; it is generous because a loaded CI box can stall a process for
    # seconds, and what is checked is the order: cancelled, then nothing of the job is left.
    d.wait_for("cancelled", job=job_id, timeout=60)
    assert process_gone(leader), "the job's shell survived cancel"  # reaped before the event
    # The group got its SIGTERM before the event; the child may still be on its way out.
    wait_until(lambda: process_gone(child), 60, "the job's child to die of the cancel")

    job = env.job(job_id)
    # The job says who stopped it (as for a queued job); the attempt says how it ended.
    assert job["state"] == "cancelled" and job["reason"] == "cancelled by operator"
    (attempt,) = job["attempt_history"]
    assert attempt["reason"] == "cancelled" and attempt["exit_code"] is not None
    assert Path(job["file"]).parent == env.state / "cancelled" and Path(job["file"]).exists()
    assert archived(env, "claimed") == []
    # The lane is free again.
    d.wait_for("succeeded", job=queued(d, submit(env, "--shell", "true")))


# -- pause / resume ----------------------------------------------------------------------------
def test_pause_holds_a_lane_while_others_run_and_resume_releases_it(env: Env) -> None:
    env.write_config("[lanes.held]\nconcurrency = 1\n[lanes.free]\nconcurrency = 1\n")
    d = env.start()
    assert "lane held paused" in env.cli("pause", "held", check=True).stdout
    lanes = {lane["name"]: lane for lane in env_status(env)["lanes"]}
    assert lanes["held"]["paused"] is True and lanes["free"]["paused"] is False

    held = queued(d, submit(env, "--lane", "held", "--shell", "true"))
    # Were the lane not paused, `held` would have started before this next trigger was even
    # claimed: the daemon dispatches a lane right after recording its new job.
    free = queued(d, submit(env, "--lane", "free", "--shell", "true"))
    d.wait_for("succeeded", job=free)
    job = env.job(held)
    assert job["state"] == "queued" and job["attempts"] == 0
    assert not d.find("started", job=held)
    lanes = {lane["name"]: lane for lane in env_status(env)["lanes"]}
    assert lanes["held"]["queued"] == 1 and lanes["held"]["running"] == 0

    assert "lane held resumed" in env.cli("resume", "held", check=True).stdout
    # Resumed within 1 s (a timing, for bench/); the deadline only stops a hang.
    d.wait_for("succeeded", job=held, timeout=60)
    lanes = {lane["name"]: lane for lane in env_status(env)["lanes"]}
    assert lanes["held"]["paused"] is False and lanes["held"]["queued"] == 0


def env_status(env: Env) -> dict[str, Any]:
    data = json.loads(env.cli("status", "--json", check=True).stdout)
    assert isinstance(data, dict)
    return data


# -- retry -------------------------------------------------------------------------------------
def test_retry_a_failed_job_runs_it_again_and_keeps_its_history(env: Env) -> None:
    d = env.start()
    ok, seen = env.root / "ok", env.root / "attempts"
    trigger = submit(env, "--shell", f"echo $SPOOLQ_ATTEMPT >> '{seen}'; test -e '{ok}'")
    job_id = queued(d, trigger)
    d.wait_for("failed", job=job_id)
    job = env.job(job_id)
    assert job["state"] == "failed" and job["exit_code"] == 1 and job["reason"] == "exit 1"
    assert Path(job["file"]).parent == env.state / "failed" and Path(job["file"]).exists()

    ok.touch()
    res = env.cli("retry", job_id, check=True)
    assert f"{job_id} queued again" in res.stdout
    d.wait_for("succeeded", job=job_id, attempt=2)
    assert seen.read_text() == "1\n2\n"

    job = env.job(job_id)
    assert job["state"] == "succeeded" and job["attempts"] == 2 and job["exit_code"] == 0
    first, second = job["attempt_history"]
    assert (first["n"], first["exit_code"], first["reason"]) == (1, 1, "exit 1")
    assert (second["n"], second["exit_code"], second["reason"]) == (2, 0, None)
    assert utc(first["finished_at"]) <= utc(second["started_at"])
    assert Path(job["file"]).parent == env.state / "done" and Path(job["file"]).exists()
    assert archived(env, "failed") == []

    human = env.cli("show", job_id, check=True).stdout
    rows = [ln for ln in human.splitlines() if "exit 1" in ln]
    assert len(rows) == 1, human  # the first attempt's row; the second one has no reason
    assert any(ln.startswith("│ 1 ") for ln in human.splitlines()), human
    assert any(ln.startswith("│ 2 ") for ln in human.splitlines()), human


def test_retry_failed_requeues_every_failed_job(env: Env) -> None:
    d = env.start()
    ok = env.root / "ok"
    failing = [queued(d, submit(env, "--shell", f"test -e '{ok}'")) for _ in range(2)]
    fine = queued(d, submit(env, "--shell", "true"))
    for job_id in failing:
        d.wait_for("failed", job=job_id)
    d.wait_for("succeeded", job=fine)

    ok.touch()
    res = env.cli("retry", "--failed", check=True)
    assert all(f"{j} queued again" in res.stdout for j in failing)
    assert fine not in res.stdout
    for job_id in failing:
        d.wait_for("succeeded", job=job_id, attempt=2)
    assert {j["id"]: j["attempts"] for j in env.jobs()} == {failing[0]: 2, failing[1]: 2, fine: 1}
    none_left = env.cli("retry", "--failed", check=True)
    assert "no failed jobs" in none_left.stdout

    rerun = env.cli("retry", fine)
    assert rerun.returncode == 0  # a succeeded job may be run again on purpose
    d.wait_for("succeeded", job=fine, attempt=2)


# -- prune -------------------------------------------------------------------------------------
def test_prune_removes_finished_records_logs_and_archived_triggers(env: Env) -> None:
    env.write_config("[lanes.x]\nconcurrency = 1\n")
    d = env.start()
    gate = env.root / "gate"
    busy = queued(d, submit(env, "--shell", blocker(gate)))
    d.wait_for("started", job=busy)
    cancelled = queued(d, submit(env, "--shell", "true"))
    env.cli("cancel", cancelled, check=True)
    ok = queued(d, submit(env, "--lane", "x", "--shell", "echo fine"))
    bad = queued(d, submit(env, "--lane", "x", "--shell", "exit 4"))
    rejected_trigger = env.publish('{"argv": ["true"], "colour": "red"}\n')
    d.wait_for("rejected", trigger=str(rejected_trigger))
    d.wait_for("succeeded", job=ok)
    d.wait_for("failed", job=bad)
    assert archived(env, "done") and archived(env, "failed") and archived(env, "cancelled")
    assert len(archived(env, "rejected")) == 2  # the trigger and its .reason

    assert "pruned 0 job(s)" in env.cli("prune", "--older-than", "1h", check=True).stdout
    assert len(env.jobs()) == 5

    res = env.cli("prune", "--older-than", "0s", check=True)
    assert "pruned 4 job(s)" in res.stdout
    assert [j["id"] for j in env.jobs()] == [busy]
    for sub in ("done", "failed", "cancelled", "rejected"):
        assert archived(env, sub) == [], sub
    assert archived(env, "logs") == [f"{busy}.log"]
    assert len(archived(env, "claimed")) == 1
    gone = env.cli("show", ok)
    assert gone.returncode == 1 and "no job" in gone.stderr

    # The running job was left alone and still finishes normally.
    gate.touch()
    d.wait_for("succeeded", job=busy)
    assert env.job(busy)["state"] == "succeeded"


# -- status ------------------------------------------------------------------------------------
def test_status_lanes_states_and_daemons(env: Env) -> None:
    env.write_config("[lanes.one]\nconcurrency = 1\n[lanes.etl]\nconcurrency = 2\n")
    d = env.start("--lane-concurrency", "wide=3")
    gate = env.root / "gate"
    busy = queued(d, submit(env, "--lane", "one", "--shell", blocker(gate)))
    d.wait_for("started", job=busy)
    waiting = queued(d, submit(env, "--lane", "one", "--shell", "true"))

    data = env_status(env)
    lanes = {lane["name"]: lane for lane in data["lanes"]}
    assert {"default", "one", "etl", "wide"} <= set(lanes)
    for lane in lanes.values():
        assert {"name", "concurrency", "running", "queued", "paused"} <= set(lane)
    one = lanes["one"]
    assert (one["concurrency"], one["running"], one["queued"], one["paused"]) == (1, 1, 1, False)
    assert (lanes["etl"]["concurrency"], lanes["etl"]["running"]) == (2, 0)
    assert lanes["wide"]["concurrency"] == 3
    assert data["states"] == {
        "queued": 1, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0, "rejected": 0,
    }  # fmt: skip
    (daemon,) = data["daemons"]
    assert daemon["pid"] == d.proc.pid and daemon["host"] == socket.gethostname()
    assert daemon["alive"] is True
    assert utc(daemon["started_at"]) <= datetime.now().astimezone()

    human = env.cli("status", check=True).stdout
    assert "one" in human and "wide" in human
    assert f"pid {d.proc.pid}" in human and "alive" in human

    gate.touch()
    d.wait_for("succeeded", job=waiting)
    assert env_status(env)["states"]["succeeded"] == 2

    assert d.stop() == 0
    after = env_status(env)
    assert after["daemons"] == []
    assert "none running" in env.cli("status", check=True).stdout


# -- check -------------------------------------------------------------------------------------
def test_check_triggers_and_config(env: Env) -> None:
    config = env.write_config(
        """
[jobs.load]
argv = ["echo", "{table}"]
params.table = { pattern = "^[a-z_]+$" }
"""
    )
    triggers = env.root / "t"
    triggers.mkdir()

    def write(name: str, text: str, mode: int = 0o644) -> Path:
        path = triggers / name
        path.write_text(text)
        path.chmod(mode)
        return path

    plain = write("plain.trigger", "# a comment\necho hello\n")
    tmpl = write("tmpl.trigger", '{"job": "load", "params": {"table": "sales"}}')
    unknown = write("unknown.trigger", '{"argv": ["true"], "colour": "red"}')
    badparam = write("badparam.trigger", '{"job": "load", "params": {"table": "Sales!"}}')
    writable = write("writable.trigger", "echo hi\n", 0o666)

    good = env.cli("check", str(plain), str(tmpl))
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"config {config}: ok" in good.stdout
    assert f"{plain}: ok" in good.stdout and f"{tmpl}: ok" in good.stdout

    bad = env.cli("check", str(plain), str(unknown), str(badparam), str(writable))
    assert bad.returncode == 2
    lines = bad.stdout.splitlines()
    assert any(str(unknown) in ln and "'colour'" in ln for ln in lines), bad.stdout
    assert any(str(badparam) in ln and "table" in ln for ln in lines), bad.stdout
    assert any(str(writable) in ln and "writable" in ln for ln in lines), bad.stdout
    assert f"{plain}: ok" in bad.stdout

    missing = env.cli("check", str(triggers / "nope.trigger"), str(env.root / "no/dir.trigger"))
    assert missing.returncode == 2
    assert "nope.trigger: no such file" in missing.stdout
    assert "dir.trigger" in missing.stdout and "Traceback" not in missing.stderr

    env.write_config("[lanes.db]\nconcurrency = 0\n")
    res = env.cli("check")
    assert res.returncode == 2
    assert str(config) in res.stderr and "[lanes.db] concurrency" in res.stderr

    env.write_config("[defaults]\nretrys = 3\n")
    res = env.cli("check")
    assert res.returncode == 2 and "[defaults] retrys" in res.stderr and "unknown key" in res.stderr

    env.write_config("[lanes.db\n")
    res = env.cli("check")
    assert res.returncode == 2 and str(config) in res.stderr and "TOML" in res.stderr


# -- job references and exit codes -------------------------------------------------------------
def test_job_ids_by_unique_prefix_and_wrong_ids_exit_1(env: Env) -> None:
    d = env.start()
    first = queued(d, submit(env, "--shell", "echo one"))
    second = queued(d, submit(env, "--shell", "echo two"))
    d.wait_for("succeeded", job=second)

    short = next(n for n in range(1, 27) if first[:n] != second[:n])
    assert env.job(first[:short])["id"] == first
    assert env.job(second[:short].lower())["id"] == second
    assert "one" in env.cli("logs", first[: short + 2], check=True).stdout

    common = first[: short - 1]
    if common:
        ambiguous = env.cli("show", common)
        assert ambiguous.returncode == 1
        assert "matches 2 jobs" in ambiguous.stderr and "more characters" in ambiguous.stderr

    wrong = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
    for args in (
        ("show", wrong, "--json"), ("logs", "-f", wrong), ("retry", wrong), ("cancel", wrong),
    ):  # fmt: skip
        res = env.cli(*args)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert f"no job {wrong!r}" in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr

    # Every id is resolved before anything is done: a typo in a list cancels nothing.
    env.cli("pause", "default", check=True)
    waiting = queued(d, submit(env, "--shell", "true"))
    res = env.cli("cancel", waiting, wrong)
    assert res.returncode == 1 and f"no job {wrong!r}" in res.stderr
    assert env.job(waiting)["state"] == "queued"


def test_bad_flags_and_usage_exit_2(env: Env) -> None:
    # Usage is checked before the store is touched: no daemon needed.
    spool = str(env.spool)
    cases: list[tuple[str, ...]] = [
        ("frobnicate",),
        ("jobs", "--state", "bogus"),
        ("jobs", "--limit", "0"),
        ("show",),
        ("retry",),
        ("prune", "--older-than", "a-while"),
        ("status", "--verbose"),
        ("submit", "-d", spool),
        ("submit", "-d", spool, "--shell", "true", "--", "echo"),
        ("submit", "-d", spool, "--priority", "high", "--", "true"),
        ("submit", "-d", spool, "--timeout", "soon", "--", "true"),
        ("submit", "-d", spool, "--env", "NOEQUALS", "--", "true"),
        ("submit", "-d", spool, "--lane", "bad lane!", "--", "true"),
        ("submit", "-d", str(env.root / "missing"), "--", "true"),
        ("completion", "tcsh"),
        ("run", spool, "--lane-concurrency", "x=0"),
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda args: env.cli(*args), cases))
    for args, res in zip(cases, results, strict=True):
        assert res.returncode == 2, (args, res.returncode, res.stdout, res.stderr)
        assert res.stderr.strip(), args
        assert "Traceback" not in res.stderr, (args, res.stderr)
    assert list(env.spool.iterdir()) == []  # nothing was published


# -- help, version, completion -----------------------------------------------------------------
def test_help_version_and_shell_completion(env: Env) -> None:
    d = env.start()
    job_id = queued(d, submit(env, "--shell", "true"))
    d.wait_for("succeeded", job=job_id)

    top = env.cli("--help", check=True).stdout
    assert "SPOOLQ_CONFIG" in top and "SPOOLQ_STATE_DIR" in top
    for command in ("submit", "status", "jobs", "show", "logs", "retry", "cancel", "pause",
                    "resume", "check", "prune", "completion"):  # fmt: skip
        assert command in top, command
    assert "SPOOLQ_LOG_FORMAT" in env.cli("run", "--help", check=True).stdout
    version = env.cli("--version", check=True).stdout
    assert version.startswith("spoolq, version ")

    base = {k: v for k, v in env.env.items() if not k.startswith(("COMP_", "_SPOOLQ"))}

    def complete(var: str, **extra: str) -> str:
        res = subprocess.run(
            [SPOOLQ], env={**base, "_SPOOLQ_COMPLETE": var, **extra}, cwd=env.root,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        return res.stdout

    bash = env.cli("completion", "bash", check=True).stdout
    assert "_spoolq_completion" in bash and "complete " in bash
    assert bash.strip() == complete("bash_source").strip()
    assert "compdef" in env.cli("completion", "zsh", check=True).stdout
    assert "spoolq" in env.cli("completion", "fish", check=True).stdout

    commands = complete("bash_complete", COMP_WORDS="spoolq st", COMP_CWORD="1")
    assert "plain,status" in commands.splitlines()
    # Job ids complete from the store the flags point at.
    words = f"spoolq --state-dir {env.state} show {job_id[:4].lower()}"
    ids = complete("bash_complete", COMP_WORDS=words, COMP_CWORD="4")
    assert f"plain,{job_id}" in ids.splitlines()
    lanes = complete("bash_complete", COMP_WORDS=f"spoolq --state-dir {env.state} pause de",
                     COMP_CWORD="4")  # fmt: skip
    assert "plain,default" in lanes.splitlines()


# -- cancel while the job's daemon is dead ------------------------------------------------------
def test_cancel_of_a_running_job_whose_daemon_died_is_kept(env: Env) -> None:
    """SPEC: a cancelled job never runs again unless retried. Its daemon was killed -9 (the
    job's process group lives on); the cancel is recorded; the next daemon must stop the
    orphan and finish the job as cancelled, not re-queue it as an interrupted attempt."""
    pids, attempts = env.root / "pids", env.root / "attempts"
    d = env.start()
    job_id = queued(
        d, submit(env, "--shell", f"echo $$ >> '{pids}'; echo $SPOOLQ_ATTEMPT >> '{attempts}'; "
                  "sleep 300")
    )  # fmt: skip
    try:
        wait_until(lambda: attempts.exists() and attempts.read_text() == "1\n")
        d.kill()
        (row,) = env_status(env)["daemons"]
        assert row["alive"] is False  # same host: the kernel says so at once

        res = env.cli("cancel", job_id, check=True)
        assert "daemon" in res.stdout and "gone" in res.stdout

        d2 = env.start()  # its rescue of the dead daemon's jobs is done before "ready"
        wait_until(lambda: env.job(job_id)["state"] != "queued")  # re-queued: starts at once
        job = env.job(job_id)
        assert job["state"] == "cancelled", (job["state"], job["attempts"], attempts.read_text())
        assert attempts.read_text() == "1\n"  # never started again
        assert not d2.find("started", job=job_id)
        assert Path(job["file"]).parent == env.state / "cancelled"
        assert all(process_gone(int(p)) for p in pids.read_text().split())
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
