"""Several hosts as one: daemons on different hosts (each in a UTS namespace of its own,
with a hostname of its own) sharing one PostgreSQL store, and a spool and state directory
as they would over NFS. A host that dies strands nothing: a peer serving the same state
directory runs its jobs. Operators see which host ran what, change a lane's limit for the
whole fleet, and are told what ``prune`` leaves to other state directories."""

from __future__ import annotations

import collections
import itertools
import json
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from spoolq.procs import group_alive, job_process_groups, killpg
from tests.conftest import (
    DaemonProcess,
    Env,
    import_or_skip,
    needs_root,
    wait_until,
)

psycopg = import_or_skip("psycopg", "uv sync --all-extras (the postgres extra)")
pytestmark = [pytest.mark.postgres, needs_root]

FAST = 'heartbeat_interval = "0.3s"\nstale_after = "2s"\n'


def on_host(env: Env, host: str) -> DaemonProcess:
    """``spoolq run`` on ``host``: a UTS namespace of its own, with that hostname."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to give each daemon a hostname of its own")
    prefix = ("unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host)
    args = [*env.base_args(), "run", "--log-format", "json", str(env.spool)]
    d = DaemonProcess(args, env.env, env.root, prefix=prefix)
    env.daemons.append(d)
    d.wait_for("ready")
    return d


def two_hosts(tmp_path: Path, config: str) -> tuple[Env, Env]:
    """Two state directories (hosts a and b), each with its own spool, on one config."""
    envs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        env = Env(tmp_path / name)
        env.write_config(config)
        envs.append(env)
    return envs[0], envs[1]


def host_dies(d: DaemonProcess, job_id: str) -> None:
    """The host running ``job_id`` is gone: its daemon and the job's processes with it."""
    d.kill()
    for group in job_process_groups(job_id):
        killpg(group, signal.SIGKILL)
    wait_until(lambda: not job_process_groups(job_id), what=f"the processes of {job_id} gone")


def test_a_peer_sharing_the_state_directory_runs_a_dead_hosts_job(
    tmp_path: Path, pg_url: str
) -> None:
    env = Env(tmp_path)
    env.write_config(f'store = "{pg_url}"\n{FAST}[lanes.long]\nconcurrency = 1\n')
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    try:
        daemons = {"hosta": on_host(env, "hosta"), "hostb": on_host(env, "hostb")}
        env.publish(
            json.dumps(
                {
                    "lane": "long",
                    "command": f"echo long $SPOOLQ_ATTEMPT >> {ledger}; "
                    f"while [ ! -e {release} ]; do sleep 0.05; done",
                }
            ),
            "long.trigger",
        )
        job_id = wait_until(
            lambda: next((e["job"] for d in daemons.values() for e in d.find("started")), None),
            30,
            "the long job to start on one of the hosts",
        )
        dead = next(h for h, d in daemons.items() if d.find("started", job=job_id))
        (alive,) = set(daemons) - {dead}
        survivor = daemons[alive]
        host_dies(daemons[dead], job_id)

        # While the dead host's job waits for the rescue, more work arrives.
        for i in range(6):
            env.publish(f"echo short {i} >> {ledger}\n", f"short{i}.trigger")
        survivor.wait_for("succeeded", count=6, timeout=60)

        survivor.wait_for("interrupted", job=job_id, timeout=60)
        survivor.wait_for("started", job=job_id, attempt=2, timeout=30)
        release.touch()
        survivor.wait_for("succeeded", job=job_id, timeout=30)

        job = env.job(job_id)
        assert (job["state"], job["attempts"]) == ("succeeded", 2)
        first, second = job["attempt_history"]
        assert (first["host"], first["reason"]) == (dead, "interrupted")
        assert first["daemon"].endswith(f"@{dead}")
        assert (second["host"], second["reason"]) == (alive, None)
        # Nothing lost, nothing doubled: one job per trigger, each ran once (the long one
        # once per attempt), every trigger archived.
        jobs = env.jobs()
        assert len(jobs) == 7 and {j["state"] for j in jobs} == {"succeeded"}
        lines = sorted(ledger.read_text().splitlines())
        assert lines == sorted(["long 1", "long 2", *(f"short {i}" for i in range(6))])
        assert len(list((env.state / "done").iterdir())) == 7
        assert not list((env.state / "claimed").iterdir())
    finally:
        env.close()


def test_an_any_host_lane_runs_a_dead_hosts_queued_and_interrupted_jobs(
    tmp_path: Path, pg_url: str
) -> None:
    """Separate state directories; an any-host lane. The survivor runs what the dead host
    claimed; a job of an ordinary lane waits for its home, and says so (until an operator
    releases it: the next test)."""
    config = (
        f'store = "{pg_url}"\n{FAST}'
        "[lanes.shared]\nconcurrency = 1\nany_host = true\n[lanes.own]\nconcurrency = 1\n"
    )
    a, b = two_hosts(tmp_path, config)
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    try:
        da = on_host(a, "hosta")
        assert a.cli("pause", "own").returncode == 0
        a.publish('{"lane": "own", "argv": ["true"]}', "own.trigger")
        long = {
            "lane": "shared",
            "command": f"echo long $SPOOLQ_ATTEMPT >> {ledger}; "
            f"while [ ! -e {release} ]; do sleep 0.05; done",
        }
        a.publish(json.dumps(long), "long.trigger")
        job_id = da.wait_for("started", lane="shared")[0]["job"]
        for i in range(3):  # queued behind it (concurrency 1), claimed by host a
            a.publish(
                json.dumps(
                    {
                        "lane": "shared",
                        "command": f'test -f "$SPOOLQ_TRIGGER" && echo short {i} >> {ledger}',
                    }
                ),
                f"short{i}.trigger",
            )
        da.wait_for("queued", count=5)
        db = on_host(b, "hostb")
        host_dies(da, job_id)

        db.wait_for("started", job=job_id, attempt=2, timeout=60)
        release.touch()
        db.wait_for("succeeded", count=4, timeout=60)
        job = b.job(job_id)
        assert [(t["host"], t["reason"]) for t in job["attempt_history"]] == [
            ("hosta", "interrupted"),
            ("hostb", None),
        ]
        assert job["log"].startswith(str(b.state))  # it ran here: its log is here
        lines = sorted(ledger.read_text().splitlines())
        assert lines == ["long 1", "long 2", "short 0", "short 1", "short 2"]
        # Archived where they ran.
        wait_until(lambda: len(list((b.state / "done").iterdir())) == 4, what="b's archive")
        assert not list((b.state / "claimed").iterdir())

        # The ordinary lane's job waits for its home, and says so.
        assert b.cli("resume", "own").returncode == 0
        (own,) = [j for j in b.jobs() if j["lane"] == "own"]
        assert own["state"] == "queued"
        assert own["waiting"].startswith(f"waiting for home {own['home']} (last daemon seen ")
        assert own["waiting"].endswith(" on hosta)")
        (home,) = json.loads(b.cli("status", "--json", check=True).stdout)["waiting_homes"]
        assert (home["home"], home["queued"], home["path"]) == (own["home"], 1, str(a.state))
        assert "1 job(s) waiting for home" in b.cli("status", check=True).stdout
    finally:
        a.close()
        b.close()


def test_an_operator_releases_a_dead_homes_job_to_another_host_and_it_runs_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Separate state directories, an ordinary lane. Host a dies with a queued job; from
    host b, where a's state directory is reachable, ``retry --any-host`` reads its trigger,
    keeps it in the store and lets b run it (a failed job of a's too). Host a, back,
    archives its copies and runs neither job again. Refused: while a serves its home, and
    for a trigger file that is gone or is a symlink."""
    config = f'store = "{pg_url}"\n{FAST}[lanes.own]\nconcurrency = 1\n'
    a, b = two_hosts(tmp_path, config)
    ledger = tmp_path / "ledger"
    try:
        da = on_host(a, "hosta")
        # One job fails there (its first attempt does); another waits in a paused lane.
        flaky = f'echo "flaky $SPOOLQ_ATTEMPT" >> {ledger}; [ "$SPOOLQ_ATTEMPT" -gt 1 ]'
        a.publish(json.dumps({"command": flaky, "retries": 0}), "flaky.trigger")
        failed_id = da.wait_for("failed")[0]["job"]
        assert a.cli("pause", "own").returncode == 0
        command = f'test -f "$SPOOLQ_TRIGGER" && echo "ran $SPOOLQ_ATTEMPT" >> {ledger}'
        a.publish(json.dumps({"lane": "own", "command": command}), "own.trigger")
        job_id = da.wait_for("queued", lane="own")[0]["job"]
        (claimed,) = (a.state / "claimed").iterdir()
        db = on_host(b, "hostb")

        res = b.cli("retry", "--any-host", job_id)  # its home is served: it runs there
        assert res.returncode == 1, res
        assert f"served by daemon {da.find('ready')[0]['daemon']} on host hosta" in res.stderr

        da.kill()
        (home,) = wait_until(
            lambda: json.loads(b.cli("status", "--json", check=True).stdout)["waiting_homes"],
            what="a's home to have no live daemon",
        )
        assert home["path"] == str(a.state)
        assert b.cli("resume", "own").returncode == 0

        # The file is not there, or is not one a daemon would read: refused, nothing changed.
        kept = tmp_path / "kept.trigger"
        claimed.rename(kept)
        res = b.cli("retry", "--any-host", job_id)
        assert res.returncode == 1, res
        assert f"job {job_id}: its trigger file {claimed} is gone" in res.stderr
        assert f"start a daemon on {a.state}, last served from host hosta" in res.stderr
        claimed.symlink_to(kept)
        res = b.cli("retry", "--any-host", job_id)
        assert res.returncode == 1, res
        assert f"{claimed} fails the checks a daemon applies (a symlink" in res.stderr
        assert b.job(job_id)["state"] == "queued" and not b.job(job_id)["attempt_history"]
        claimed.unlink()
        kept.rename(claimed)

        res = b.cli("retry", "--any-host", job_id, check=True)
        assert f"{job_id} queued again by any daemon" in res.stdout
        db.wait_for("succeeded", job=job_id, timeout=30)
        job = b.job(job_id)
        assert [(t["host"], t["exit_code"]) for t in job["attempt_history"]] == [("hostb", 0)]
        assert job["log"].startswith(str(b.state))
        assert ledger.read_text() == "flaky 1\nran 1\n"

        # A failed job of a's is queued again, for any daemon: its trigger goes back to a's
        # claimed/ (as a retry at home would put it) and b runs it.
        res = b.cli("retry", "--any-host", failed_id, check=True)
        assert f"{failed_id} queued again by any daemon (attempt 2 next)" in res.stdout
        db.wait_for("succeeded", job=failed_id, timeout=30)
        assert [t["host"] for t in b.job(failed_id)["attempt_history"]] == ["hosta", "hostb"]
        assert not list((a.state / "failed").iterdir())
        wait_until(lambda: len(list((b.state / "done").iterdir())) == 2, what="b's archive")

        # Host a comes back: its copies of the triggers are archived there, not run again.
        da = on_host(a, "hosta")
        wait_until(lambda: not list((a.state / "claimed").iterdir()), what="a's copies archived")
        for jid in (job_id, failed_id):
            (mine,) = (a.state / "done").glob(f"{jid}.*")
            assert mine.read_text() == claimed_text(b, jid)
        time.sleep(1.0)  # a heartbeat or three: nothing else happens
        assert not da.find("started") and not da.find("queued")
        assert ledger.read_text() == "flaky 1\nran 1\nflaky 2\n"
        assert len(b.job(job_id)["attempt_history"]) == 1
    finally:
        a.close()
        b.close()


def test_the_claiming_host_archives_its_copy_of_an_any_host_job_that_ran_elsewhere(
    tmp_path: Path, pg_url: str
) -> None:
    """Host a claims a job of an any-host lane and host b runs it. Host a has nothing
    queued that b's freed slot could help, yet it hears that the job ended and archives
    its own copy of the trigger (nothing is left in its claimed/)."""
    config = f'store = "{pg_url}"\n{FAST}[lanes.shared]\nconcurrency = 1\nany_host = true\n'
    a, b = two_hosts(tmp_path, config)
    release = tmp_path / "release"
    try:
        da = a.start()
        assert a.cli("pause", "shared").returncode == 0
        wait = f"while [ ! -e {release} ]; do sleep 0.05; done"
        a.publish(json.dumps({"lane": "shared", "command": wait}), "j.trigger")
        job_id = da.wait_for("queued")[0]["job"]
        da.signal(signal.SIGSTOP)  # a cannot take it: b does
        db = b.start()
        assert b.cli("resume", "shared").returncode == 0
        db.wait_for("started", job=job_id)
        continued = time.time()
        da.signal(signal.SIGCONT)
        # a hears the resume and looks at its claimed/ at its next heartbeat, while the
        # job still runs on b: its copy stays. Two heartbeats later that look is over.
        a_id = da.find("ready")[0]["daemon"]
        beat = "SELECT heartbeat_at FROM spoolq_daemons WHERE id = %s"

        def beaten() -> bool:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                return float(conn.execute(beat, (a_id,)).fetchone()[0]) > continued + 0.3

        wait_until(beaten, what="two heartbeats of a")
        assert list((a.state / "claimed").iterdir())
        release.touch()
        db.wait_for("succeeded", job=job_id)
        wait_until(lambda: not list((a.state / "claimed").iterdir()), 20, "a's copy archived")
        (mine,) = (a.state / "done").glob(f"{job_id}.*")
        assert mine.read_text() == claimed_text(b, job_id)
        assert not da.find("started")
    finally:
        a.close()
        b.close()


def claimed_text(env: Env, job_id: str) -> str:
    """The trigger a job ran from in ``env``'s state directory (archived in done/)."""
    (path,) = (env.state / "done").glob(f"{job_id}.*")
    return path.read_text()


def children(pid: int) -> set[int]:
    """Process groups of ``pid``'s children (a daemon's running jobs)."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            groups.add(int(fields[2]))
    return groups


@pytest.mark.slow
def test_hosts_sharing_a_state_directory_die_and_return_and_nothing_is_lost_or_doubled(
    tmp_path: Path, pg_url: str
) -> None:
    """Producers publish while hosts die (their daemon and its jobs killed) and come back.
    Afterwards every trigger has exactly one job, all succeeded, only interrupted attempts
    ran again, and the concurrency-1 lane never ran two jobs at once (by the jobs' own
    start and end stamps)."""
    env = Env(tmp_path)
    env.write_config(
        f'store = "{pg_url}"\n{FAST}[lanes.one]\nconcurrency = 1\n[lanes.default]\n'
        "concurrency = 2\n"
    )
    ledger = tmp_path / "ledger"
    rng = random.Random(17)
    hosts = ["hosta", "hostb"]
    names = [f"t{i:03d}.trigger" for i in range(45)]
    step = (
        f'echo "start $SPOOLQ_JOB_ID $SPOOLQ_LANE $(date +%s%N)" >> {ledger}; sleep 0.{{ms}}; '
        f'echo "end $SPOOLQ_JOB_ID $SPOOLQ_LANE $(date +%s%N)" >> {ledger}'
    )
    deaths: list[int] = []  # when each host's jobs were gone (ns)
    try:
        daemons = {h: on_host(env, h) for h in hosts}

        def produce() -> None:
            for i, name in enumerate(names):
                lane = "one" if i % 3 == 0 else "default"
                cmd = step.replace("{ms}", f"{rng.randrange(5, 30):02d}")
                env.publish(json.dumps({"lane": lane, "command": cmd}), name)
                time.sleep(0.08)

        producer = threading.Thread(target=produce)
        producer.start()
        for _ in range(3):
            time.sleep(1.0)
            host = rng.choice(hosts)
            d = daemons[host]
            groups = children(d.proc.pid)
            d.kill()
            for g in groups:
                killpg(g, signal.SIGKILL)
            wait_until(
                lambda gs=groups: not any(map(group_alive, gs)),  # type: ignore[misc]
                what="the dead host's jobs",
            )
            deaths.append(time.time_ns())
            daemons[host] = on_host(env, host)
        producer.join()

        def all_done() -> list[dict[str, object]] | None:
            jobs = env.jobs()
            done = len(jobs) == len(names) and all(j["state"] == "succeeded" for j in jobs)
            return jobs if done else None

        try:
            jobs = wait_until(all_done, 60, "every trigger's job to succeed")
        except AssertionError:
            left = [(j["id"], j["state"], j["attempts"], j["reason"]) for j in env.jobs()]
            logs = [line for d in daemons.values() for line in d.lines[-15:]]
            raise AssertionError(
                f"{[x for x in left if x[1] != 'succeeded']}\n" + "\n".join(logs)
            ) from None
    finally:
        env.close()

    assert sorted(Path(str(j["trigger"])).name for j in jobs) == names  # one job each
    reruns = sum(int(str(j["attempts"])) - 1 for j in jobs)
    assert reruns <= 3 * len(deaths)  # at most what a dead host was running (1 + 2)
    events = [line.split() for line in ledger.read_text().splitlines()]
    ends = collections.Counter(e[1] for e in events if e[0] == "end")
    assert set(ends) == {str(j["id"]) for j in jobs}  # every job's command ran to its end
    for j in jobs:  # more than once only if its daemon died before recording the outcome
        assert ends[str(j["id"])] <= int(str(j["attempts"])), j
    # The concurrency-1 lane: an attempt runs from its start to its end, or to the death
    # of its host; the next one starts after that.
    spans: list[tuple[int, int]] = []
    open_: dict[str, int] = {}
    for kind, job_id, lane, ns in events:
        if lane != "one":
            continue
        if kind == "start":
            if job_id in open_:  # its previous attempt died with its host
                start = open_[job_id]
                spans.append((start, min(d for d in deaths if d >= start)))
            open_[job_id] = int(ns)
        else:
            spans.append((open_.pop(job_id), int(ns)))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two jobs of the concurrency-1 lane ran at once"
