"""A job's environment: the daemon's own virtualenv is not on the PATH a job inherits,
unless the trigger sets PATH itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import Env, wait_claimed_empty


def test_a_job_does_not_run_in_the_daemons_virtualenv(env: Env) -> None:
    venv_bin = str(Path(sys.prefix) / "bin")
    assert sys.prefix != sys.base_prefix, "the suite runs in spoolq's virtualenv"
    env.env["PATH"] = f"{venv_bin}:/usr/local/bin:/usr/bin:/bin"
    out = env.root / "out"
    env.publish(f'echo "$PATH" > {out}; command -v spoolq >> {out} || echo none >> {out}\n')
    explicit = env.root / "explicit"
    env.publish(
        json.dumps(
            {"command": f'echo "$PATH" > {explicit}', "env": {"PATH": f"{venv_bin}:/usr/bin:/bin"}}
        ),
        name="explicit.trigger",
    )
    d = env.start()
    d.wait_for("succeeded", count=2)
    wait_claimed_empty(env)
    path, found = out.read_text().splitlines()
    assert path == "/usr/local/bin:/usr/bin:/bin"
    assert found == "none", f"the job found spoolq's own executable: {found}"
    # PATH set on purpose by the trigger is used as given.
    assert explicit.read_text().strip() == f"{venv_bin}:/usr/bin:/bin"
    assert d.stop() == 0
