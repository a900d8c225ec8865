"""The JSON API end to end: a real ``spoolq run --http`` (or ``spoolq web``), a real store,
real HTTP over loopback. Every route, the token, paging, logs by range and followed, the
control routes reaching the daemon, and bad input answered with a 4xx that says why."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.acceptance.webtools import Web, WebProcess, start_http
from tests.conftest import Env, wait_until

GATE_WAIT = "while [ ! -e '{gate}' ]; do sleep 0.05; done"


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def store_env(request: pytest.FixtureRequest, env: Env) -> Env:
    """The test's world on each store: SQLite, and a fresh PostgreSQL schema."""
    if request.param == "postgresql":
        env.write_config(f'store = "{request.getfixturevalue("pg_url")}"\n')
    return env


def run_one(env: Env, d: object, text: str, name: str) -> str:
    trigger = env.publish(text, name)
    return str(d.wait_for("queued", trigger=str(trigger))[0]["job"])  # type: ignore[attr-defined]


def test_every_api_route_needs_the_token_and_answers_like_the_cli(store_env: Env) -> None:
    env = store_env
    d, web = start_http(env)
    try:
        mode = stat.S_IMODE(os.stat(web.token_file).st_mode)
        assert mode == 0o600 and len(web.token) >= 32
        ok = run_one(env, d, "echo hello", "ok.trigger")
        bad = run_one(env, d, "echo oops >&2; exit 3", "bad.trigger")
        d.wait_for("succeeded", job=ok)
        d.wait_for("failed", job=bad)

        # open: health and metrics
        health = web.anon.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"ok": True, "store": "ok", "watcher": True}
        assert web.anon.get("/metrics").status_code == 200

        # everything else: 401 without the token, or with a wrong one
        paths = ["/api/status", "/api/jobs", f"/api/jobs/{ok}", f"/api/jobs/{ok}/log"]
        for path in paths:
            assert web.anon.get(path).status_code == 401, path
            wrong = web.anon.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "token" in wrong.json()["detail"]
        for path in (
            f"/api/jobs/{bad}/retry",
            f"/api/jobs/{ok}/cancel",
            "/api/lanes/default/pause",
        ):
            assert web.anon.post(path).status_code == 401, path
        assert web.anon.get("/").status_code == 401  # the page: the login form

        # the same JSON as --json, from the one serializer
        assert web.json("/api/jobs") == env.jobs()
        assert web.json(f"/api/jobs/{bad}") == env.job(bad)
        assert web.json(f"/api/jobs/{bad[:20]}")["id"] == bad  # a unique prefix, as the CLI
        status = web.json("/api/status")
        cli = json.loads(env.cli("status", "--json", check=True).stdout)
        assert status["states"] == cli["states"]
        assert [ln["name"] for ln in status["lanes"]] == [ln["name"] for ln in cli["lanes"]]
        assert [x["id"] for x in status["daemons"]] == [x["id"] for x in cli["daemons"]]
        log = web.get(f"/api/jobs/{ok}/log")
        assert log.content == Path(env.job(ok)["log"]).read_bytes() and "\nhello\n" in log.text

        spec = web.json("/api/openapi.json")
        assert set(spec["paths"]) >= {
            "/api/status", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/log",
            "/api/jobs/{job_id}/retry", "/api/jobs/{job_id}/cancel",
            "/api/lanes/{lane}/pause", "/api/lanes/{lane}/resume", "/healthz", "/metrics",
        }  # fmt: skip
    finally:
        web.close()


def test_jobs_are_paged_newest_first_with_before(store_env: Env) -> None:
    env = store_env
    d, web = start_http(env)
    try:
        ids = [run_one(env, d, f"echo {i}", f"p{i}.trigger") for i in range(7)]
        d.wait_for("succeeded", count=7)
        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 3}
        while page := web.json("/api/jobs", params=params):
            assert len(page) <= 3
            seen += [j["id"] for j in page]
            params["before"] = page[-1]["id"]
        assert seen == ids[::-1]
        assert web.json("/api/jobs", params={"state": "failed"}) == []
        assert len(web.json("/api/jobs", params={"lane": "default", "limit": 2})) == 2
    finally:
        web.close()


def test_a_log_by_byte_range_and_followed_until_the_job_ends(store_env: Env) -> None:
    env = store_env
    gate = env.root / "gate"
    d, web = start_http(env)
    try:
        job = run_one(
            env, d, f"echo first; {GATE_WAIT.format(gate=gate)}; echo last", "log.trigger"
        )
        d.wait_for("started", job=job)
        log = f"/api/jobs/{job}/log"
        path = Path(env.job(job)["log"])
        wait_until(lambda: b"first\n" in path.read_bytes(), 10, "the first line")
        data = path.read_bytes()  # the job now waits for the gate: the log stays as it is
        n = len(data)
        assert web.get(log).content == data
        part = web.get(log, headers={"Range": "bytes=1-3"})
        assert part.status_code == 206 and part.content == data[1:4]
        assert part.headers["content-range"] == f"bytes 1-3/{n}"
        assert web.get(log, headers={"Range": "bytes=-3"}).content == data[-3:]
        assert web.get(log, headers={"Range": "bytes=2-999999999999"}).content == data[2:]
        assert web.get(log, params={"offset": 2}).content == data[2:]
        assert web.get(log, params={"offset": n}).content == b""
        assert web.get(log, headers={"Range": f"bytes={n}-"}).status_code == 416
        assert web.get(log, headers={"Range": "lines=1-2"}).status_code == 422
        assert web.get(log, headers={"Range": "bytes=5-2"}).content == data  # invalid: ignored

        got = b""
        with web.client.stream("GET", log, params={"follow": 1}) as stream:
            chunks = stream.iter_bytes()
            while b"first\n" not in got:
                got += next(chunks)
            gate.touch()  # the job ends while the log is followed
            for chunk in chunks:
                got += chunk
        d.wait_for("succeeded", job=job)
        assert got == path.read_bytes()  # everything, and the stream ended with the job
        assert b"\nlast\n" in got
    finally:
        gate.touch()
        web.close()


def test_controls_reach_the_daemon_within_a_second_and_are_logged(store_env: Env) -> None:
    env = store_env
    d, web = start_http(env)
    try:
        # pause: a new job waits; spoolq status agrees; resume starts it at once
        lane = web.post("/api/lanes/default/pause")
        assert lane.status_code == 200 and lane.json()["paused"] is True
        cli = json.loads(env.cli("status", "--json", check=True).stdout)
        assert [ln["paused"] for ln in cli["lanes"] if ln["name"] == "default"] == [True]
        job = run_one(env, d, "exit 4", "paused.trigger")
        assert web.json(f"/api/jobs/{job}")["state"] == "queued"
        assert web.post("/api/lanes/default/resume").json()["paused"] is False
        d.wait_for("started", job=job, timeout=1.0)
        d.wait_for("failed", job=job)

        # retry a failed job: it runs again
        again = web.post(f"/api/jobs/{job}/retry")
        assert again.status_code == 200 and again.json()["state"] == "queued"
        d.wait_for("started", job=job, attempt=2, timeout=1.0)
        d.wait_for("failed", count=2, job=job)

        # cancel a running job: its daemon terminates it
        long = run_one(env, d, "sleep 300", "long.trigger")
        d.wait_for("started", job=long)
        conflict = web.post(f"/api/jobs/{long}/retry")
        assert conflict.status_code == 409 and long in conflict.json()["detail"]
        assert "running" in conflict.json()["detail"]
        assert web.post(f"/api/jobs/{long}/cancel").status_code == 200
        d.wait_for("cancelled", job=long, timeout=1.0)
        finished = web.post(f"/api/jobs/{long}/cancel")
        assert finished.status_code == 409 and "already cancelled" in finished.json()["detail"]

        actions = d.wait_for("web_action", count=4)
        assert [a["action"] for a in actions] == ["pause", "resume", "retry", "cancel"]
        assert all(a["client"] == "127.0.0.1" and a["user"] == "token (bearer)" for a in actions)
        assert {a.get("job") for a in actions} >= {job, long}
    finally:
        web.close()


def test_bad_input_is_a_4xx_that_says_why_never_a_500(env: Env) -> None:
    d, web = start_http(env)
    try:
        job = run_one(env, d, "echo hi", "x.trigger")
        d.wait_for("succeeded", job=job)
        cases = {
            "/api/jobs?state=bogus": (422, "state"),
            "/api/jobs?limit=abc": (422, "limit"),
            "/api/jobs?limit=0": (422, "limit"),
            "/api/jobs?limit=99999999999999999999999": (422, "limit"),
            "/api/jobs?before=not-a-ulid": (422, "before"),
            "/api/jobs?before=01ZZZZZZZZZZZZZZZZZZZZZZZZ": (404, "01ZZZZZZZZZZZZZZZZZZZZZZZZ"),
            "/api/jobs/01NOSUCHJOB": (404, "01NOSUCHJOB"),
            "/api/jobs/01NOSUCHJOB/log": (404, "01NOSUCHJOB"),
            f"/api/jobs/{job}/log?offset=-1": (422, "offset"),
            f"/api/jobs/{job}/log?offset=99999999999999999999999999": (422, "offset"),
        }
        for path, (code, named) in cases.items():
            r = web.get(path)
            assert r.status_code == code, (path, r.status_code, r.text)
            assert named in r.json()["detail"], (path, r.text)
        for path in (
            "/api/jobs/..%2F..%2Fetc%2Fpasswd",
            "/api/jobs/..%2F..%2Fetc%2Fpasswd/log",
            "/api/jobs/%2e%2e/log",
            f"/api/jobs/{job}%00/log",
        ):
            r = web.get(path)
            assert 400 <= r.status_code < 500, (path, r.status_code)
            assert "root:" not in r.text and "Traceback" not in r.text
        r = web.post("/api/lanes/nosuchlane/pause")
        assert r.status_code == 404 and "nosuchlane" in r.json()["detail"]
        assert "nosuchlane" not in {ln["name"] for ln in web.json("/api/status")["lanes"]}
        r = web.get(f"/api/jobs/{job}/log", headers={"Range": "rows=5-2"})
        assert r.status_code == 422 and "range" in r.json()["detail"]
    finally:
        web.close()


def test_the_login_form_sets_a_strict_httponly_cookie(env: Env) -> None:
    _d, web = start_http(env)
    try:
        page = web.anon.get("/")
        assert page.status_code == 401 and 'name="token"' in page.text
        refused = web.anon.post("/login", data={"token": "wrong"})
        assert refused.status_code == 401
        ok = web.anon.post("/login", data={"token": web.token, "next": "/"})
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert web.anon.get("/").status_code == 200  # the client keeps the cookie
        assert web.anon.get("/api/status").status_code == 200
        assert (
            web.anon.post("/login", data={"token": web.token, "next": "//evil"}).headers["location"]
            == "/"
        )
    finally:
        web.close()


def test_listening_beyond_loopback_needs_an_explicit_token_file(env: Env) -> None:
    d = env.start("--http", "0.0.0.0:0", ready=False)
    assert d.proc.wait(20) == 2
    d._close()
    assert any("[http] token_file" in ln for ln in d.lines), d.lines
    assert not (env.state / "http.token").exists()

    token_file = env.root / "secret" / "token"
    token_file.parent.mkdir()
    env.write_config(f'[http]\ntoken_file = "{token_file}"\n')
    d2, web = start_http(env)
    try:
        assert web.token_file == token_file
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert web.get("/api/status").status_code == 200
    finally:
        web.close()
        d2.stop()


def test_spoolq_web_serves_the_store_without_a_daemon(env: Env) -> None:
    d = env.start()
    trigger = env.publish("echo from the daemon", "a.trigger")
    job = d.wait_for("succeeded", trigger=str(trigger))[0]["job"]
    assert d.stop() == 0
    w = WebProcess(env)
    try:
        web = w.web
        assert web.json("/api/jobs") == env.jobs()
        assert "from the daemon\n" in web.get(f"/api/jobs/{job}/log").text
        assert web.anon.get("/healthz").json() == {"ok": True, "store": "ok"}
        assert web.post(f"/api/jobs/{job}/retry").status_code == 200
        # no daemon: the job waits, and the next daemon runs it
        d2 = env.start()
        d2.wait_for("succeeded", job=job)
    finally:
        assert w.stop() == 0


@pytest.mark.postgres
def test_one_spoolq_web_shows_a_whole_postgresql_fleet(tmp_path: Path, pg_url: str) -> None:
    hosts = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        e = Env(root)
        e.write_config(f'store = "{pg_url}"\n')
        hosts.append(e)
    ops_root = tmp_path / "ops"
    ops_root.mkdir()
    ops = Env(ops_root)
    ops.write_config(f'store = "{pg_url}"\n')
    try:
        ids = []
        for e in hosts:
            d = e.start()
            trigger = e.publish(f"echo {e.root.name}", f"{e.root.name}.trigger")
            ids.append(d.wait_for("succeeded", trigger=str(trigger))[0]["job"])
        w = WebProcess(ops)
        try:
            web: Web = w.web
            listed = {j["id"] for j in web.json("/api/jobs")}
            assert set(ids) <= listed
            assert len([x for x in web.json("/api/status")["daemons"] if x["alive"]]) == 2
            metrics = web.anon.get("/metrics").text
            assert 'spoolq_jobs_finished_total{lane="default",outcome="succeeded"} 2.0' in metrics
        finally:
            w.stop()
    finally:
        for e in (*hosts, ops):
            e.close()
