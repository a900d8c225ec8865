"""Progress of long jobs, through a real daemon: a job's lines in $SPOOLQ_PROGRESS seen
advancing in ``status --json`` and ``show --json`` with rate and ETA, and hostile writers
(binary, a huge line, a FIFO or a link at the path, rapid rewrites, a deleted file) that
leave the daemon healthy and its memory flat."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import SPOOLQ, Env, wait_until


def _status_progress(env: Env) -> dict[str, Any] | None:
    status = json.loads(env.cli("status", "--json", check=True).stdout)
    running = status["running_jobs"]
    return running[0]["progress"] if running else None


def test_a_job_reporting_progress_is_seen_advancing(env: Env) -> None:
    gate1, gate2 = env.root / "gate1", env.root / "gate2"
    script = (
        'echo 10% > "$SPOOLQ_PROGRESS"; '
        f"while ! test -e {gate1}; do sleep 0.05; done; "
        """echo '{"done": 60, "total": 100, "unit": "rows"}' > "$SPOOLQ_PROGRESS"; """
        f"while ! test -e {gate2}; do sleep 0.05; done"
    )
    d = env.start()
    env.publish(json.dumps({"command": script}))
    (started,) = d.wait_for("started")
    job = started["job"]
    first = wait_until(lambda: _status_progress(env), 30, "a first reading in status --json")
    assert first["done"] == 10 and first["total"] == 100 and first["unit"] == "%"
    assert first["ratio"] == 0.1
    table = env.cli("status", check=True).stdout
    assert "progress" in table and "10%" in table  # the running table, for people
    gate1.touch()
    # Kept in the store at most every few seconds: wait for the next reading to arrive.
    later = wait_until(
        lambda: (p := env.job(job)["progress"]) and p["done"] == 60 and p, 30, "60 rows"
    )
    assert later["total"] == 100 and later["unit"] == "rows" and later["ratio"] == 0.6
    assert later["rate"] > 0 and later["eta_s"] is not None and later["eta_s"] >= 0
    status = _status_progress(env)
    assert status is not None and status["done"] == 60
    human = env.cli("show", job, check=True).stdout
    assert "progress: 60%" in human
    follow = subprocess.Popen(
        [SPOOLQ, *env.base_args(), "show", "-f", job],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env.env,
    )
    try:
        wait_until(lambda: follow.poll() is None, 5)
        gate2.touch()
        out, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 0, err
    assert "60%" in out and out.rstrip().endswith(f"{job} succeeded")  # the bar, then the end
    d.wait_for("succeeded", job=job)
    assert env.job(job)["progress"]["done"] == 60  # the last reading stays with the job
    # A job that writes nothing shows no progress.
    env.publish(json.dumps({"argv": ["true"]}))
    (other,) = [e for e in d.wait_for("succeeded", count=2) if e["job"] != job]
    assert env.job(other["job"])["progress"] is None
    assert not any((env.state / "progress").iterdir())  # the files go with their attempts


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


HOSTILE = {
    "binary": 'while ! test -e "$GATE"; do head -c 4096 /dev/urandom > "$SPOOLQ_PROGRESS"; done',
    "huge_line": 'head -c 50000000 /dev/zero | tr "\\0" 7 > "$SPOOLQ_PROGRESS"; '
    'while ! test -e "$GATE"; do sleep 0.05; done',
    "fifo": 'mkfifo "$SPOOLQ_PROGRESS"; while ! test -e "$GATE"; do sleep 0.05; done',
    "link": 'ln -s /dev/zero "$SPOOLQ_PROGRESS"; while ! test -e "$GATE"; do sleep 0.05; done',
    "rewrites": 'i=0; while ! test -e "$GATE"; do i=$((i+1)); echo "$i/100000000" '
    '> "$SPOOLQ_PROGRESS"; done',
    "deleted": 'echo 50% > "$SPOOLQ_PROGRESS"; while ! test -e "$GATE.rm"; do sleep 0.05; done; '
    'rm "$SPOOLQ_PROGRESS"; while ! test -e "$GATE"; do sleep 0.05; done',
}


def test_hostile_progress_writers_leave_the_daemon_healthy(env: Env) -> None:
    env.write_config(f"[lanes.default]\nconcurrency = {len(HOSTILE)}\n")
    gate = env.root / "gate"
    d = env.start()
    env.publish(json.dumps({"argv": ["true"]}))
    d.wait_for("succeeded")
    before = _rss_kb(d.proc.pid)
    for name, script in HOSTILE.items():
        env.publish(json.dumps({"command": script, "env": {"GATE": str(gate)}}), f"{name}.trigger")
    d.wait_for("started", count=len(HOSTILE) + 1)
    # Let the daemon look at every file a few times (it does so once a second).
    wait_until(lambda: (p := env.jobs("--state", "running")) and len(p) == len(HOSTILE), 30)
    deleted = next(
        j for j in env.jobs("--state", "running") if j["trigger"].endswith("deleted.trigger")
    )
    wait_until(lambda: env.job(deleted["id"])["progress"], 30, "the deleted file's reading")
    Path(f"{gate}.rm").touch()
    wait_until(lambda: not (env.state / "progress" / deleted["id"]).exists(), 30, "rm")
    gate.touch()
    d.wait_for("succeeded", count=len(HOSTILE) + 1, timeout=60)
    # Healthy: the next job runs at once; the deleted file's last reading was kept.
    env.publish(json.dumps({"argv": ["true"]}))
    d.wait_for("succeeded", count=len(HOSTILE) + 2)
    assert env.job(deleted["id"])["progress"]["done"] == 50
    assert d.proc.poll() is None and not d.find("error")
    assert _rss_kb(d.proc.pid) - before < 20_000  # flat: nothing read whole
