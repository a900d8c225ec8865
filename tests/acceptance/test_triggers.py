"""Trigger formats and intake, seen from the producer's side: what runs, with what, when,
and where the file ends up."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Env, wait_claimed_empty


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_on_success_delete_removes_the_trigger(env: Env) -> None:
    env.write_config('[defaults]\non_success = "delete"\n')
    d = env.start()
    out = env.root / "out.txt"
    env.publish(f"echo hello > {out}\n")
    d.wait_for("succeeded")
    assert out.read_text() == "hello\n"
    assert not list(env.spool.glob("*.trigger"))
    wait_claimed_empty(env)
    assert _names(env.state / "done") == []
    assert _names(env.state / "claimed") == []
    assert [j["state"] for j in env.jobs()] == ["succeeded"]


def test_plain_trigger_runs_lines_in_order_and_stops_at_first_failure(env: Env) -> None:
    d = env.start()
    out = env.root / "out.txt"
    trigger = env.publish(
        "# a comment line is not a command\n"
        f"echo one >> {out}\n"
        "\n"
        f"   echo two >> {out}\n"
        "exit 7\n"
        f"echo three >> {out}\n",
        name="steps.trigger",
    )
    failed = d.wait_for("failed")[0]
    assert out.read_text() == "one\ntwo\n"
    job = env.job(failed["job"])
    assert job["state"] == "failed"
    assert job["exit_code"] == 7
    assert "exit 7" in job["reason"] and "3/4" in job["reason"]
    assert job["trigger"] == str(trigger)
    # Never deleted, never left in the spool: the failed trigger is kept for a retry.
    assert not trigger.exists()
    wait_claimed_empty(env)
    failed_files = _names(env.state / "failed")
    assert len(failed_files) == 1 and failed_files[0].endswith("steps.trigger")
    assert "echo three" in (env.state / "failed" / failed_files[0]).read_text()


def test_json_argv_runs_without_a_shell(env: Env) -> None:
    d = env.start()
    env.publish(json.dumps({"argv": ["/bin/echo", "a  b", "$HOME", ";", "`id`"]}))
    done = d.wait_for("succeeded")[0]
    log = Path(env.job(done["job"])["log"]).read_text()
    out = [ln for ln in log.splitlines() if not ln.startswith("--- spoolq")]
    assert out == ["a  b $HOME ; `id`"]


def test_json_commands_env_and_cwd(env: Env) -> None:
    d = env.start()
    sub = env.spool / "work"
    sub.mkdir()
    env.publish(
        json.dumps(
            {
                "commands": [
                    "echo first > steps.txt",
                    'echo "$GREETING" >> steps.txt',
                    "pwd >> steps.txt",
                ],
                "env": {"GREETING": "hello world"},
                "cwd": "work",
            }
        )
    )
    d.wait_for("succeeded")
    assert (sub / "steps.txt").read_text() == f"first\nhello world\n{sub}\n"


def test_default_cwd_is_the_spool_directory(env: Env) -> None:
    d = env.start()
    out = env.root / "cwd.txt"
    env.publish(f"pwd > {out}\n")
    d.wait_for("succeeded")
    assert out.read_text().strip() == str(env.spool)


def test_job_sees_its_id_lane_attempt_and_claimed_trigger(env: Env) -> None:
    d = env.start()
    out = env.root / "env.txt"
    seen = env.root / "seen-trigger.txt"
    trigger = env.publish(
        json.dumps(
            {
                "commands": [
                    f'printf "%s\\n" "$SPOOLQ_JOB_ID" "$SPOOLQ_LANE" "$SPOOLQ_ATTEMPT" '
                    f'"$SPOOLQ_TRIGGER" > {out}',
                    f'cat "$SPOOLQ_TRIGGER" > {seen}',
                ],
                "lane": "etl",
            }
        )
    )
    done = d.wait_for("succeeded")[0]
    job_id, lane, attempt, claimed = out.read_text().splitlines()
    assert job_id == done["job"]
    assert lane == "etl"
    assert attempt == "1"
    assert Path(claimed).parent == env.state / "claimed"
    assert Path(claimed).name.endswith(trigger.name)
    # SPOOLQ_TRIGGER named the claimed file while the job ran: the job could read it.
    assert json.loads(seen.read_text())["lane"] == "etl"
    job = env.job(job_id)
    assert job["lane"] == "etl" and job["trigger"] == str(trigger)


def test_triggers_present_before_start_run(env: Env) -> None:
    outs = [env.root / f"out{i}.txt" for i in range(3)]
    published = [env.publish(f"touch {o}\n", name=f"early{i}.trigger") for i, o in enumerate(outs)]
    # A file written in place (no rename) before the daemon ever watched the directory.
    direct = env.spool / "direct.trigger"
    direct.write_text(f"touch {env.root / 'direct.txt'}\n")
    direct.chmod(0o644)
    d = env.start()
    d.wait_for("succeeded", count=4)
    assert all(o.exists() for o in outs)
    assert (env.root / "direct.txt").exists()
    assert not list(env.spool.glob("*.trigger"))
    triggers = sorted(j["trigger"] for j in env.jobs())
    assert triggers == sorted(str(p) for p in [*published, direct])
    assert d.stop() == 0


def test_directly_written_trigger_runs_once_only_after_close(env: Env) -> None:
    d = env.start()
    out = env.root / "out.txt"
    path = env.spool / "direct.trigger"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, f"echo first >> {out}\n".encode())
        os.fsync(fd)
        # Barrier: inotify delivers events in order, so once the daemon has queued a
        # trigger published after our first write, it has seen that write too.
        marker = env.publish("true\n", name="marker1.trigger")
        d.wait_for("succeeded", trigger=str(marker))
        assert not d.find("queued", trigger=str(path)), "claimed while still being written"
        assert path.exists()
        os.write(fd, f"echo second >> {out}\n".encode())
        marker = env.publish("true\n", name="marker2.trigger")
        d.wait_for("succeeded", trigger=str(marker))
        assert not d.find("queued", trigger=str(path)), "claimed while still being written"
    finally:
        os.close(fd)
    d.wait_for("succeeded", trigger=str(path))
    assert out.read_text() == "first\nsecond\n"
    # Later events (and a full rescan at the next start) must not make a second job.
    marker = env.publish("true\n", name="marker3.trigger")
    d.wait_for("succeeded", trigger=str(marker))
    assert d.stop() == 0
    d = env.start()
    marker = env.publish("true\n", name="marker4.trigger")
    d.wait_for("succeeded", trigger=str(marker))
    assert [j["trigger"] for j in env.jobs()].count(str(path)) == 1
    assert out.read_text() == "first\nsecond\n"


def _rejected(
    env: Env, trigger: Path, all_jobs: list[dict[str, object]]
) -> tuple[dict[str, object], str]:
    jobs = [j for j in all_jobs if j["trigger"] == str(trigger)]
    assert len(jobs) == 1, jobs
    job = jobs[0]
    files = [p for p in (env.state / "rejected").iterdir() if p.name.endswith(trigger.name)]
    assert len(files) == 1, files
    reason_file = files[0].with_name(files[0].name + ".reason")
    return job, reason_file.read_text()


def test_bad_triggers_are_rejected_with_a_reason_and_the_daemon_keeps_going(env: Env) -> None:
    d = env.start()
    cases = {
        "badjson": ('{"command": "true",', "invalid JSON"),
        "unknown": ('{"command": "true", "colour": "red"}', "unknown key 'colour'"),
        "empty": ("", "empty"),
        "comments": ("# only a comment\n\n   \n", "empty"),
        "both": ('{"command": "true", "argv": ["true"]}', "cannot be used together"),
        "wrongtype": ('{"command": "true", "retries": "many"}', "'retries'"),
    }
    triggers = {
        name: env.publish(text, name=f"{name}.trigger") for name, (text, _) in cases.items()
    }
    d.wait_for("rejected", count=len(cases))
    all_jobs = env.jobs()
    for name, (_, expected) in cases.items():
        job, reason = _rejected(env, triggers[name], all_jobs)
        assert job["state"] == "rejected"
        assert expected in str(job["reason"]), (name, job["reason"])
        assert expected in reason, (name, reason)
        assert not triggers[name].exists()
    assert d.proc.poll() is None
    out = env.root / "after.txt"
    env.publish(f"touch {out}\n")
    d.wait_for("succeeded")
    assert out.exists()
    assert d.stop() == 0


def test_duplicate_id_is_rejected(env: Env) -> None:
    d = env.start()
    out = env.root / "runs.txt"
    doc = json.dumps({"command": f"echo run >> {out}", "id": "load-2024-06-01"})
    first = env.publish(doc, name="first.trigger")
    d.wait_for("succeeded", trigger=str(first))
    second = env.publish(doc, name="second.trigger")
    d.wait_for("rejected", trigger=str(second))
    all_jobs = env.jobs()
    first_id = next(j["id"] for j in all_jobs if j["trigger"] == str(first))
    job, reason = _rejected(env, second, all_jobs)
    assert "duplicate" in str(job["reason"]) and first_id in str(job["reason"])
    assert "duplicate" in reason
    assert out.read_text() == "run\n"
    assert d.proc.poll() is None
