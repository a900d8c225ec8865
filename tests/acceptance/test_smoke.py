from __future__ import annotations

from tests.conftest import Env


def test_seed_style_plain_trigger_runs_and_is_archived(env: Env) -> None:
    d = env.start()
    out = env.root / "out.txt"
    env.publish(f"echo hello > {out}\n")
    done = d.wait_for("succeeded")[0]
    assert out.read_text() == "hello\n"
    job = env.job(done["job"])
    assert job["state"] == "succeeded"
    assert job["trigger"].startswith(str(env.spool))
    archived = list((env.state / "done").iterdir())
    assert len(archived) == 1
    assert not list(env.spool.glob("*.trigger"))
    assert d.stop() == 0
