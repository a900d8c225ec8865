"""Slow, careless and strange producers: every trigger still becomes exactly one job."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import Env, publish, wait_until


@pytest.mark.slow
def test_trigger_written_over_ten_seconds_is_taken_once_after_close(env: Env) -> None:
    # Rescans every second and a short settle: a scan must not take a file still open.
    env.write_config(
        f'[[spool]]\npath = "{env.spool}"\nrescan_interval = "0.5s"\nsettle = "0.2s"\n'
    )
    d = env.start(spool=False)
    out = env.root / "out"
    lines = [f"echo {i} >> {out}\n" for i in range(20)]
    with (env.spool / "slow.trigger").open("w") as fh:
        os.fchmod(fh.fileno(), 0o644)
        for line in lines:
            fh.write(line)
            fh.flush()
            time.sleep(0.5)  # the producer is slow; that is the scenario
            assert not d.find("queued"), "taken while still being written"
    d.wait_for("succeeded")
    assert out.read_text().split() == [str(i) for i in range(20)]
    assert len(env.jobs()) == 1


def test_trigger_renamed_twice_becomes_one_job(env: Env) -> None:
    d = env.start()
    for i in range(20):
        first = env.publish("true\n", name=f"first{i}.trigger")
        # FileNotFoundError: the daemon claimed it under its first name; also fine.
        with contextlib.suppress(FileNotFoundError):
            os.rename(first, env.spool / f"second{i}.trigger")
    d.wait_for("succeeded", count=20, timeout=30)
    jobs = env.jobs()
    assert len(jobs) == 20
    numbers = sorted(int(re.sub(r"^(first|second)", "", Path(j["trigger"]).stem)) for j in jobs)
    assert numbers == list(range(20))
    assert not list(env.spool.glob("*.trigger"))


def test_trigger_deleted_by_its_producer_before_the_claim(env: Env) -> None:
    d = env.start()
    taken_first = []  # the daemon claimed these before their producer's unlink
    for i in range(50):
        path = env.publish("true\n", name=f"gone{i}.trigger")
        try:
            path.unlink()
        except FileNotFoundError:
            taken_first.append(path)
    marker = env.publish("true\n", name="marker.trigger")
    # One lane, in publishing order: once the marker has run, so has everything before it.
    d.wait_for("succeeded", trigger=str(marker))
    # Whatever was claimed before its deletion ran once; the rest never existed for spoolq.
    jobs = env.jobs()
    assert sorted(j["trigger"] for j in jobs) == sorted(map(str, [*taken_first, marker]))
    assert all(j["state"] == "succeeded" for j in jobs), jobs
    assert not d.find("rejected") and not d.find("failed")
    assert d.proc.poll() is None


def test_odd_file_names(env: Env) -> None:
    d = env.start()
    names = ["with space.trigger", "new\nline.trigger", "ünïcødé-日本.trigger", "-dash.trigger"]
    for name in names:
        env.publish(f"echo ok > {json.dumps(str(env.root / ('out-' + str(len(name)))))}\n", name)
    d.wait_for("succeeded", count=len(names), timeout=30)
    assert sorted(Path(j["trigger"]).name for j in env.jobs()) == sorted(names)
    assert len(list((env.state / "done").iterdir())) == len(names)


def test_recursive_spool_finds_nested_triggers_and_new_subtrees(env: Env) -> None:
    (env.spool / "a" / "b").mkdir(parents=True)
    (env.spool / "a" / "b" / "early.trigger").write_text("true\n")
    env.write_config(f'[[spool]]\npath = "{env.spool}"\nrecursive = true\n')
    d = env.start(spool=False)
    d.wait_for("succeeded")
    # A whole tree moved in at once (created elsewhere, then renamed into the spool).
    tree = env.root / "tree"
    (tree / "x" / "y").mkdir(parents=True)
    for i in range(5):
        (tree / "x" / "y" / f"t{i}.trigger").write_text("true\n")
    os.rename(tree, env.spool / "tree")
    # ...and a new directory in which a trigger is published after its creation.
    (env.spool / "late").mkdir()
    publish(env.spool / "late", "true\n", name="inner.trigger")
    d.wait_for("succeeded", count=7, timeout=30)
    triggers = sorted(os.path.relpath(j["trigger"], env.spool) for j in env.jobs())
    assert triggers == sorted(
        ["a/b/early.trigger", "late/inner.trigger", *(f"tree/x/y/t{i}.trigger" for i in range(5))]
    )
    # cwd defaults to the directory the trigger was published in
    job = next(j for j in env.jobs() if j["trigger"].endswith("inner.trigger"))
    assert Path(job["trigger"]).parent == env.spool / "late"
    # The state directory inside the spool is never taken for triggers.
    assert not [j for j in env.jobs() if ".spoolq" in j["trigger"]]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hundred_thousand_triggers_in_one_directory(env: Env) -> None:
    n = 100_000
    for i in range(n):
        p = env.spool / f"b{i:06d}.trigger"
        p.write_text('{"argv": ["true"], "lane": "held"}')
    env.write_config(f'[[spool]]\npath = "{env.spool}"\n[lanes.held]\nconcurrency = 1\n')
    # Pause the lane before the daemon starts claiming: create the store first.
    d = env.start(spool=False, ready=False)
    wait_until(lambda: (env.state / "spoolq.db").exists() or d.proc.poll(), 30, "the store")
    assert d.proc.poll() is None, "\n".join(d.lines)
    env.cli("pause", "held", check=True)

    def claimed() -> bool:
        status = json.loads(env.cli("status", "--json", check=True).stdout)
        return sum(status["states"].values()) >= n

    wait_until(claimed, 240, "all triggers claimed", interval=1.0)
    status = json.loads(env.cli("status", "--json", check=True).stdout)
    assert sum(status["states"].values()) == n
    assert not list(env.spool.glob("*.trigger"))
    assert d.proc.poll() is None
