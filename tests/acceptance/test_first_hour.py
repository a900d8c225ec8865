"""What a new operator reads first, against a real daemon: `spoolq jobs` says what each job
runs under the name its trigger was published as; `spoolq status` names the running jobs
under their lane with their elapsed time."""

from __future__ import annotations

import json

from tests.conftest import Env


def test_status_and_jobs_show_what_is_running(env: Env) -> None:
    env.write_config("[lanes.db]\nconcurrency = 1\n")
    d = env.start()
    release = env.root / "release"
    # The job waits for the test to let it go: it is running, for sure, while we look.
    command = f"while [ ! -e {release} ]; do sleep 0.02; done"
    env.publish(json.dumps({"lane": "db", "command": command}), "nightly-load.trigger")
    job = d.wait_for("started")[0]["job"]

    data = json.loads(env.cli("status", "--json", check=True).stdout)
    assert {"lanes", "states", "daemons"} <= set(data)
    [row] = data["running_jobs"]
    assert (row["id"], row["lane"], row["state"]) == (job, "db", "running")
    assert row["command"].startswith("while [ ! -e") and row["elapsed_s"] >= 0
    assert row["trigger"] == str(env.spool / "nightly-load.trigger")

    text = env.cli("status", check=True).stdout
    [line] = [ln for ln in text.splitlines() if job in ln]
    cells = [c.strip() for c in line.strip().strip("│").split("│")]
    assert cells[:2] == ["db", job]
    assert cells[2].endswith("s")  # elapsed, e.g. 0s, 2m05s
    assert cells[4] == "nightly-load.trigger" and cells[5].startswith("while [ ! -e")

    table = env.cli("jobs", check=True).stdout
    [line] = [ln for ln in table.splitlines() if job in ln]
    assert "nightly-load.trigger" in line and "while [ ! -e" in line

    release.touch()
    d.wait_for("succeeded", job=job)
    assert json.loads(env.cli("status", "--json", check=True).stdout)["running_jobs"] == []
    assert job not in env.cli("status", check=True).stdout
    assert d.stop() == 0
