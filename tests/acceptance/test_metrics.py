"""``/metrics`` from a real daemon: the counters move by exactly the jobs run, the oldest
queued job's age grows while its lane is paused, and the finished totals survive ``prune``
and a restart of the daemon."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from spoolq.progress import Progress
from spoolq.store import open_store
from tests.acceptance.webtools import Web, WebProcess, start_http
from tests.conftest import Env, wait_until


def scrape(web: Web) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = web.anon.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_by_exactly_the_jobs_run(env: Env) -> None:
    env.write_config("[lanes.db]\nconcurrency = 1\n")
    d, web = start_http(env)
    try:
        before = scrape(web)
        names = {n for n, _ in before}
        assert {"spoolq_jobs", "spoolq_lane_concurrency", "spoolq_daemons"} <= names
        for i in range(3):
            env.publish("true", f"ok{i}.trigger")
        env.publish('{"lane": "db", "command": "exit 1"}', "bad.trigger")
        env.publish('{"lane": "db", "comand": "typo"}', "typo.trigger")
        d.wait_for("succeeded", count=3)
        d.wait_for("failed")
        d.wait_for("rejected")
        after = scrape(web)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        total = "spoolq_jobs_finished_total"
        assert moved(total, lane="default", outcome="succeeded") == 3
        assert moved(total, lane="db", outcome="failed") == 1
        assert moved(total, lane="default", outcome="rejected") == 1
        assert moved("spoolq_triggers_rejected_total", reason="invalid") == 1
        count = "spoolq_job_duration_seconds_count"
        assert moved(count, lane="default") == 3 and moved(count, lane="db") == 1
        assert moved("spoolq_job_wait_seconds_count", lane="default") == 3
        assert value(after, "spoolq_lane_concurrency", lane="db") == 1
        assert value(after, "spoolq_jobs", lane="db", state="queued") == 0
        assert value(after, "spoolq_daemons", host=d.wait_for("ready")[0]["daemon"].split("@")[1])
        assert value(after, "spoolq_rescans_total", cause="start") == 1
    finally:
        web.close()


def test_oldest_queued_grows_while_the_lane_is_paused(env: Env) -> None:
    d, web = start_http(env)
    try:
        assert web.post("/api/lanes/default/pause").status_code == 200
        env.publish("true", "waits.trigger")
        d.wait_for("queued")
        m = scrape(web)
        assert value(m, "spoolq_lane_paused", lane="default") == 1
        assert value(m, "spoolq_jobs", lane="default", state="queued") == 1
        first = value(m, "spoolq_lane_oldest_queued_seconds", lane="default")
        wait_until(
            lambda: (
                value(scrape(web), "spoolq_lane_oldest_queued_seconds", lane="default")
                > first + 0.2
            ),
            10,
            "the oldest queued age to grow",
            interval=0.1,
        )
        web.post("/api/lanes/default/resume")
        d.wait_for("succeeded")
        m = scrape(web)
        assert value(m, "spoolq_lane_oldest_queued_seconds", lane="default") == 0
        assert value(m, "spoolq_lane_paused", lane="default") == 0
    finally:
        web.close()


def test_finished_totals_survive_prune_and_a_restart(env: Env) -> None:
    d, web = start_http(env)
    for i in range(4):
        env.publish("true", f"j{i}.trigger")
    env.publish("exit 2", "fails.trigger")
    d.wait_for("succeeded", count=4)
    d.wait_for("failed")
    total = "spoolq_jobs_finished_total"
    counted = {k: v for k, v in scrape(web).items() if k[0] == total}  # {(name, labels): value}
    assert sum(counted.values()) == 5
    web.close()

    pruned = env.cli("prune", "--older-than", "0s", check=True)
    assert "pruned 5 job(s)" in pruned.stdout
    assert env.jobs() == []
    assert d.stop() == 0

    d2, web2 = start_http(env)
    try:
        again = {k: v for k, v in scrape(web2).items() if k[0] == total}
        assert again == counted  # not lowered by prune, not reset by the restart
        env.publish("true", "one-more.trigger")
        d2.wait_for("succeeded")
        key = (total, (("lane", "default"), ("outcome", "succeeded")))
        assert scrape(web2)[key] == counted[key] + 1
    finally:
        web2.close()


def test_a_running_jobs_progress_shows_in_metrics_and_on_the_page(env: Env) -> None:
    gate = env.root / "gate"
    d, web = start_http(env)
    try:
        env.publish(f"while [ ! -e {gate} ]; do sleep 0.05; done", "long.trigger")
        job = d.wait_for("started")[0]["job"]
        store = open_store("sqlite", env.state)
        try:  # a reading as the daemon keeps it for a job that reports one
            reading = Progress(1234, 5000, "rows", updated_at=time.time(), attempt=1)
            store.save_progress({job: reading})
        finally:
            store.close()
        m = scrape(web)
        assert value(m, "spoolq_job_progress_ratio", lane="default", job=job) == 0.2468
        page = web.get("/ui/overview").text
        assert "1234/5000 rows" in page and "<progress" in page
        assert "1234/5000 rows" in web.get(f"/ui/jobs/{job}").text
        assert web.json(f"/api/jobs/{job}")["progress"]["ratio"] == 0.2468
        # the API's job is the CLI's, progress and all (once the daemon noted the pid)
        wait_until(lambda: web.json(f"/api/jobs/{job}") == env.job(job), 10, "API == show")
        gate.touch()
        d.wait_for("succeeded", job=job)
        m = scrape(web)
        assert ("spoolq_job_progress_ratio", (("job", job), ("lane", "default"))) not in m
    finally:
        gate.touch()
        web.close()


def test_a_daemon_exposes_every_documented_metric(env: Env) -> None:
    from tests.unit.test_monitoring_files import documented

    _d, web = start_http(env)
    try:
        text = web.anon.get("/metrics").text
        families = {f.name for f in text_string_to_metric_families(text)}
        exposed = families | {f"{name}_total" for name in families}
        assert documented() <= exposed, documented() - exposed
    finally:
        web.close()


def test_jobs_whose_home_has_no_live_daemon_are_counted(env: Env) -> None:
    """A daemon dies with a job queued in its (paused) lane: nobody else may run it, and
    /metrics says so, per home, until a daemon serves that state directory again."""
    d = env.start()
    env.cli("pause", "default", check=True)
    env.publish("true", "stranded.trigger")
    d.wait_for("queued")
    d.kill()
    home = (env.state / "home.id").read_text().strip()
    web = WebProcess(env)
    try:
        m = scrape(web.web)
        assert value(m, "spoolq_jobs_waiting_for_home", home=home) == 1
        d2 = env.start()
        assert value(scrape(web.web), "spoolq_jobs_waiting_for_home", home=home) == 0
        assert d2.stop() == 0
    finally:
        web.stop()
