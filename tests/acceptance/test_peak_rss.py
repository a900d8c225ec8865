"""Peak RSS of an attempt: a job's own, or nothing. A job started by the daemon begins
with the daemon's size in the kernel's accounting, so a figure at or below it would be
the daemon's, not the job's."""

from __future__ import annotations

import sys

from tests.conftest import Env


def test_a_small_job_shows_no_peak_and_a_big_one_shows_its_own(env: Env) -> None:
    small = env.publish("true\n", name="small.trigger")
    big = env.publish(
        f"{sys.executable} -c 'b = b\"x\" * (300 << 20); print(len(b))'\n", name="big.trigger"
    )
    d = env.start()
    d.wait_for("succeeded", count=2, timeout=30)
    by_trigger = {j["trigger"]: j for j in env.jobs()}
    (small_attempt,) = env.job(by_trigger[str(small)]["id"])["attempt_history"]
    (big_attempt,) = env.job(by_trigger[str(big)]["id"])["attempt_history"]
    assert small_attempt["max_rss_kb"] is None
    assert big_attempt["max_rss_kb"] >= 300 * 1024
    show = env.cli("show", by_trigger[str(small)]["id"], check=True).stdout
    assert "MiB" not in show, "no peak shown for a job too small to measure"
    assert d.stop() == 0
