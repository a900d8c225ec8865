"""Notifications (``[[notify]]``): sending what the outbox holds, beside the loop.

The store records a notification in the transaction that changes a job's state (a trigger
on the jobs table, for the targets declared with ``Store.set_notify_targets``). The
``Notifier`` sends them from a thread of its own, with a store connection of its own, so
that a slow or failing receiver never holds up the loop or a job: a command runs in a
session of its own with the job's JSON on stdin and is killed (its whole group) after
``timeout``; a URL gets the JSON in a POST. A failure is retried with back-off, then
given up and logged; delivery is at least once (a daemon killed mid-send sends again at
restart), and each notification carries an id for receivers to drop a repeat.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spoolq.config import Config, NotifyConfig
from spoolq.errors import JobNotFound, SpoolqError, StoreError
from spoolq.events import EventLog
from spoolq.faults import crash_point
from spoolq.jobs import iso
from spoolq.store import Store, open_store
from spoolq.store.outbox import Notification

POLL = 1.0  # seconds between looks at the outbox
MAX_BACKOFF = 600.0
STORE_RETRY = 5.0  # seconds before connecting again after a store fault
MAX_RESPONSE = 1 << 16  # bytes of a receiver's answer read (and dropped)


class NotifyFailed(SpoolqError):
    """A target did not take a notification; the message says how."""


def declared(config: Config) -> list[tuple[str, str, str | None]]:
    """(target, event, lane or None) of every ``[[notify]]`` block, for the store."""
    return [
        (name, event, lane)
        for name, cfg in config.notify_targets().items()
        for event in cfg.on
        for lane in (cfg.lanes or (None,))
    ]


def payload(notification_id: str, event: str, target: str, at: float, job: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": notification_id, "event": event, "target": target, "at": iso(at), "job": job},
        ensure_ascii=False,
    ).encode()


def send(cfg: NotifyConfig, body: bytes, event: str, notification_id: str) -> None:
    """Deliver one notification to one target; raises NotifyFailed."""
    if cfg.command is not None:
        _run(list(cfg.command), body, event, notification_id, cfg.timeout)
        return
    assert cfg.url is not None
    request = urllib.request.Request(  # noqa: S310 - the operator's http(s) URL
        cfg.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Spoolq-Event": event,
            "X-Spoolq-Notification-Id": notification_id,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout) as response:  # noqa: S310
            response.read(MAX_RESPONSE)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise NotifyFailed(f"{cfg.url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise NotifyFailed(f"{cfg.url}: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise NotifyFailed(f"{cfg.url}: {exc or type(exc).__name__}") from None


def _run(argv: list[str], body: bytes, event: str, notification_id: str, timeout: float) -> None:
    env = {**os.environ, "SPOOLQ_EVENT": event, "SPOOLQ_NOTIFICATION_ID": notification_id}
    try:
        proc = subprocess.Popen(  # the operator's argv, never a shell
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its whole group is killed on a timeout
        )
    except OSError as exc:
        raise NotifyFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        _, err = proc.communicate(body, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise NotifyFailed(f"{argv[0]}: no answer after {timeout:g}s; killed") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise NotifyFailed(f"{argv[0]}: exit {proc.returncode} {tail[0][:200]}".rstrip())


class Notifier:
    """Sends the outbox's notifications from a thread, until ``stop()``."""

    def __init__(
        self,
        config: Config,
        state_root: Path,
        log: EventLog,
        owner: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.owner = owner  # the daemon's id: its leases go when its registration does
        self.targets = config.notify_targets()
        self.state_root = state_root
        self.log = log
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spoolq-notify", daemon=True)
        # A command's timeout plus a margin: a sender that died mid-send lets go by then.
        self._lease = max(cfg.timeout for cfg in self.targets.values()) + 30.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._lease)

    def _run(self) -> None:
        store: Store | None = None
        while not self._stop.is_set():
            wait = POLL
            try:
                if store is None:
                    store = open_store(self.config.store, self.state_root)
                    store.set_notify_targets(declared(self.config))
                self.send_due(store)
            except Exception as exc:  # a store fault, or a bug: never the end of sending
                name = "notify_store_unavailable" if isinstance(exc, StoreError) else "notify_error"
                self.log.warn(name, error=str(exc) or type(exc).__name__, retry_in=STORE_RETRY)
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.close()
                store, wait = None, STORE_RETRY
            self._stop.wait(wait)
        if store is not None:
            store.close()

    def send_due(self, store: Store) -> int:
        """Send every notification due now; how many were tried."""
        now = self.clock()
        due = store.next_notification()
        if due is None or due > now:
            return 0
        tried = 0
        for n in store.claim_notifications(self.owner, now, self._lease):
            if self._stop.is_set():
                break  # its lease runs out; sent by whoever looks next
            tried += 1
            self._send(store, n)
        return tried

    def _send(self, store: Store, n: Notification) -> None:
        cfg = self.targets.get(n.target)
        fields: dict[str, Any] = {
            "target": n.target,
            "on": n.event,
            "job": n.job_id,
            "attempt": n.attempts,
        }
        if cfg is None:
            store.notification_failed(n.id, "no such [[notify]] target", self.clock(), self.clock())
            self.log.warn("notify_dropped", **fields, reason="no such [[notify]] target")
            return
        try:
            job = store.get(n.job_id).to_dict()
        except JobNotFound:
            job = {"id": n.job_id}
        crash_point("notify")
        try:
            send(cfg, payload(n.id, n.event, n.target, n.created_at, job), n.event, n.id)
        except NotifyFailed as exc:
            now = self.clock()
            if n.attempts > cfg.retries:
                store.notification_failed(n.id, str(exc), now, now)
                self.log.error("notify_failed", **fields, error=str(exc), action="gave up")
                return
            delay = min(cfg.retry_backoff * 2 ** (n.attempts - 1), MAX_BACKOFF)
            store.notification_failed(n.id, str(exc), now + delay, None)
            self.log.warn("notify_failed", **fields, error=str(exc), retry_in=round(delay, 3))
            return
        store.notification_sent(n.id, self.clock())
        self.log.emit("notified", **fields)


def start(
    config: Config, store: Store, state_root: Path, log: EventLog, owner: str
) -> Notifier | None:
    """Before the daemon's first pass: declare the targets (none clears what an earlier
    config declared, so that nothing piles up unsent) and start sending, if any."""
    try:
        store.set_notify_targets(declared(config))
    except StoreError as exc:  # the notifier declares them when it gets through
        log.warn("notify_store_unavailable", error=str(exc))
    if not config.notify:
        return None
    notifier = Notifier(config, state_root, log, owner)
    notifier.start()
    return notifier


def send_samples(config: Config) -> dict[str, str | None]:
    """``spoolq notify test``: a sample to every target, now; the error of each, or None."""
    sample = {
        "id": "01TEST0000000000000000000",
        "state": "failed",
        "lane": "default",
        "trigger": "/var/spool/etl/sample.trigger",
        "exit_code": 1,
        "reason": "exit 1",
    }
    results: dict[str, str | None] = {}
    for name, cfg in config.notify_targets().items():
        nid = f"test-{os.urandom(8).hex()}"
        try:
            send(cfg, payload(nid, "test", name, time.time(), sample), "test", nid)
            results[name] = None
        except NotifyFailed as exc:
            results[name] = str(exc)
    return results
