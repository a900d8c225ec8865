"""[[notify]] against a real daemon and a real HTTP receiver on 127.0.0.1: exactly the
configured notifications, delivered after a crash between recording and sending, retried
until the receiver takes them, and a hanging command killed without holding up jobs."""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.webtools import start_http
from tests.conftest import Env, process_running, wait_until


class Receiver:
    """A local HTTP server that records every POST; answers 500 to the first ``fail``."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.got.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                    )
                    failing = receiver.fail > 0
                    receiver.fail -= failing
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [g["body"] for g in self.got if path is None or g["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def _outbox(env: Env) -> list[sqlite3.Row]:
    db = sqlite3.connect(env.state / "spoolq.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM outbox ORDER BY seq").fetchall()
    finally:
        db.close()


def test_a_failed_job_produces_exactly_the_configured_notifications(
    env: Env, receiver: Receiver
) -> None:
    env.write_config(
        f'[[notify]]\non = ["failed", "rejected"]\nurl = "{receiver.url}/alerts"\n'
        f'[[notify]]\nname = "loads"\non = ["succeeded"]\nlanes = ["warehouse"]\n'
        f'url = "{receiver.url}/loads"\n'
    )
    d = env.start()
    env.publish(json.dumps({"command": "exit 3"}), "bad.trigger")
    env.publish(json.dumps({"argv": ["true"]}), "fine.trigger")  # default lane: no notify
    env.publish(json.dumps({"argv": ["true"], "lane": "warehouse"}), "load.trigger")
    d.wait_for("notified", count=2)
    assert d.stop() == 0
    (alert,) = receiver.bodies("/alerts")
    assert alert["event"] == "failed" and alert["target"] == "notify[1]"
    assert alert["job"]["state"] == "failed" and alert["job"]["exit_code"] == 3
    assert alert["job"]["trigger"] == str(env.spool / "bad.trigger")
    (load,) = receiver.bodies("/loads")
    assert load["event"] == "succeeded" and load["target"] == "loads"
    assert load["job"]["lane"] == "warehouse"
    assert alert["id"] != load["id"]
    (head,) = [g["headers"] for g in receiver.got if g["path"] == "/alerts"]
    assert head["X-Spoolq-Notification-Id"] == alert["id"]
    assert len(receiver.got) == 2
    assert [(r["event"], r["sent_at"] is not None) for r in _outbox(env)] == [
        ("failed", True),
        ("succeeded", True),
    ]


def test_a_notification_recorded_before_a_crash_is_sent_at_restart(
    env: Env, receiver: Receiver
) -> None:
    env.write_config(f'[[notify]]\non = ["succeeded"]\nurl = "{receiver.url}/done"\n')
    env.env["SPOOLQ_FAULTS"] = "notify=1"  # the daemon dies as it is about to send
    d = env.start()
    env.publish(json.dumps({"argv": ["true"]}))
    assert d.proc.wait(60) == 86
    d.stop()
    assert receiver.got == []
    (row,) = _outbox(env)
    assert row["event"] == "succeeded" and row["sent_at"] is None
    del env.env["SPOOLQ_FAULTS"]
    d2 = env.start()
    d2.wait_for("notified", timeout=60)
    (body,) = receiver.bodies()
    assert body["id"] == row["id"] and body["job"]["state"] == "succeeded"


def test_a_failing_receiver_gets_the_notification_once_it_answers(env: Env) -> None:
    receiver = Receiver(fail=3)
    try:
        env.write_config(
            f'[[notify]]\non = ["failed"]\nurl = "{receiver.url}/x"\nretry_backoff = "100ms"\n'
        )
        d, web = start_http(env)
        try:
            env.publish(json.dumps({"command": "exit 1"}))
            d.wait_for("notified", timeout=60)
            failures = d.find("notify_failed")
            assert [f["attempt"] for f in failures] == [1, 2, 3]
            assert all("HTTP 500" in f["error"] for f in failures)
            bodies = receiver.bodies()
            assert len(bodies) == 4 and len({b["id"] for b in bodies}) == 1  # one notification
            # The failures show in /metrics; nothing is left to send.
            metrics = web.anon.get("/metrics").text
            assert 'spoolq_notify_failures_total{target="notify[1]"} 3.0' in metrics
            assert "spoolq_notifications_pending{" not in metrics
        finally:
            web.close()
    finally:
        receiver.close()


def test_a_hanging_command_is_killed_and_does_not_hold_up_jobs(env: Env, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hang = f"echo $$ >> {pids}; cat > {tmp_path}/payload-$$; sleep 600"
    env.write_config(
        f'[[notify]]\non = ["succeeded"]\ncommand = ["sh", "-c", {json.dumps(hang)}]\n'
        'timeout = "5s"\nretries = 0\n'
    )
    d = env.start()
    first = env.publish(json.dumps({"argv": ["true"]}), "first.trigger")
    d.wait_for("succeeded", trigger=str(first))
    wait_until(pids.exists, 30, "the notifier's command to start")
    # The command hangs; the next job runs and ends meanwhile.
    second = env.publish(json.dumps({"argv": ["true"]}), "second.trigger")
    d.wait_for("succeeded", trigger=str(second))
    assert not d.find("notify_failed")  # the first command is still hanging
    (failed,) = d.wait_for("notify_failed", timeout=60)
    assert "killed" in failed["error"] and failed["action"] == "gave up"
    first_pid = int(pids.read_text().split()[0])
    wait_until(lambda: not process_running(first_pid), 30, "the command to be killed")
    payload = json.loads((tmp_path / f"payload-{first_pid}").read_text())
    assert payload["event"] == "succeeded" and payload["job"]["trigger"] == str(first)


def test_notify_test_sends_a_sample_to_every_target(env: Env, receiver: Receiver) -> None:
    env.write_config(
        f'[[notify]]\non = ["failed"]\nurl = "{receiver.url}/a"\n'
        f'[[notify]]\nname = "down"\non = ["failed"]\nurl = "http://127.0.0.1:9/"\n'
        'timeout = "2s"\n'
    )
    res = env.cli("notify", "test")
    assert res.returncode == 1
    assert "notify[1]: ok" in res.stdout and "down: failed:" in res.stdout
    (body,) = receiver.bodies("/a")
    assert body["event"] == "test"
    assert os.environ.get("SPOOLQ_FAULTS") is None


@pytest.mark.postgres
def test_notifications_on_postgresql(env: Env, receiver: Receiver, pg_url: str) -> None:
    env.write_config(
        f'store = "{pg_url}"\n[[notify]]\non = ["failed", "retrying"]\nurl = "{receiver.url}/pg"\n'
    )
    d = env.start()
    env.publish(json.dumps({"command": "exit 2", "retries": 1}))
    d.wait_for("notified", count=2)
    assert [b["event"] for b in receiver.bodies("/pg")] == ["retrying", "failed"]
