"""Shared test tools: a real ``spoolq run`` process and helpers to publish and wait.

Waiting is always for an observable fact (an event line, a job state, a file) with a
deadline, never a fixed sleep.

Skips: a test that needs something the machine may lack (a PostgreSQL server, root, a C
compiler, ...) skips on a developer's machine, with a reason that says how to provide it.
With ``SPOOLQ_CI_STRICT=1`` (set by ``.ci/run``) every such skip is a failure instead, so
that CI can never be green while a part of spoolq went untested.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

SPOOLQ = shutil.which("spoolq", path=str(Path(sys.executable).parent)) or "spoolq"

# How long a wait for a state or an event may take before the test fails. Only a guard
# against a hang: what tests check is that the state is reached, never how fast (that is
# bench/'s business). Generous because a shared 2-core CI machine under load can stall a
# process for many seconds; a passing test never waits for it.
DEADLINE = 60.0

STRICT_VAR = "SPOOLQ_CI_STRICT"
STRICT = os.environ.get(STRICT_VAR, "") not in ("", "0")

# The server the PostgreSQL tests use (a fresh schema each), and how to get one.
POSTGRES_URL = os.environ.get("SPOOLQ_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_HOW = (
    "start it (Debian: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
    "or point SPOOLQ_TEST_POSTGRES at a server where user postgres may create schemas"
)


def _strict_failure(reason: str) -> str:
    return f"{reason} [{STRICT_VAR}=1: a test that cannot run here fails instead of skipping]"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    if STRICT and call.excinfo is not None and call.excinfo.errisinstance(pytest.skip.Exception):
        message = _strict_failure(str(call.excinfo.value.msg))
        failed = pytest.CallInfo.from_call(lambda: pytest.fail(message, pytrace=False), call.when)
        outcome.force_result(pytest.TestReport.from_item_and_call(item, failed))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """A whole module skipped at import (``pytest.importorskip`` at its top) counts too."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if STRICT and report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = _strict_failure(reason.removeprefix("Skipped: "))


def import_or_skip(module: str, install: str) -> Any:
    """``module``, or a skip that says how to install it."""
    return pytest.importorskip(module, reason=f"Python module {module} missing: {install}")


def postgres_admin(url: str = POSTGRES_URL) -> Any:
    """An autocommit connection to the test server, or a skip naming PostgreSQL and how to
    start it."""
    psycopg = import_or_skip("psycopg", "uv sync --all-extras (the postgres extra)")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"no PostgreSQL server answers at {url} ({first}); {POSTGRES_HOW}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A store URL on the test server with a schema of its own, dropped after the test."""
    admin = postgres_admin()
    schema = f"spoolq_t_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def needs_c_compiler() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler (cc or gcc) on PATH: apt-get install gcc")


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (chown to another user, mounts): run the suite as root"
)


def wait_until(
    predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "", interval: float = 0.01
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def publish(spool: Path, text: str, name: str | None = None) -> Path:
    """Atomic publish the way a producer should: hidden temp name, then rename."""
    name = name or f"t{time.monotonic_ns()}.trigger"
    tmp = spool / f".{name}.part"
    tmp.write_text(text)
    tmp.chmod(0o644)
    final = spool / name
    os.rename(tmp, final)
    return final


class DaemonProcess:
    """``spoolq run`` as a user runs it, with its JSON event log collected."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path,
        pass_fds: tuple[int, ...] = (),
        prefix: tuple[str, ...] = (),  # run it through this (e.g. in a namespace of its own)
    ) -> None:
        self.args = args
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [*prefix, SPOOLQ, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
            pass_fds=pass_fds,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(
        self, event: str, count: int = 1, timeout: float = DEADLINE, **fields: Any
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    e
                    for e in self.events
                    if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"waited {timeout}s for {count} x event={event} {fields}; "
                        f"saw {len(found)}. Log tail:\n" + "\n".join(self.lines[-30:])
                    )
                self._cond.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


class Env:
    """One test's world: a spool, its state dir, and ways to run spoolq against them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool = root / "spool"
        self.spool.mkdir()
        self.state = self.spool / ".spoolq"
        self.config: Path | None = None
        self.daemons: list[DaemonProcess] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("SPOOLQ_CONFIG", None)
        self.env.pop("SPOOLQ_STATE_DIR", None)

    def write_config(self, text: str) -> Path:
        self.config = self.root / "spoolq.toml"
        self.config.write_text(text)
        return self.config

    def base_args(self) -> list[str]:
        args = ["--state-dir", str(self.state)]
        if self.config is not None:
            args = ["-c", str(self.config), *args]
        return args

    def start(
        self, *extra: str, ready: bool = True, spool: bool = True, pass_fds: tuple[int, ...] = ()
    ) -> DaemonProcess:
        args = [*self.base_args(), "run", "--log-format", "json"]
        if spool:
            args.append(str(self.spool))
        d = DaemonProcess([*args, *extra], self.env, self.root, pass_fds)
        self.daemons.append(d)
        if ready:
            d.wait_for("ready")
        return d

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [SPOOLQ, *self.base_args(), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=60,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"spoolq {' '.join(args)} -> {res.returncode}\n{res.stderr}")
        return res

    def job(self, job_id: str) -> dict[str, Any]:
        return json.loads(self.cli("show", job_id, "--json", check=True).stdout)

    def jobs(self, *args: str) -> list[dict[str, Any]]:
        return json.loads(self.cli("jobs", "--json", "--limit", "100000", *args, check=True).stdout)

    def publish(self, text: str, name: str | None = None) -> Path:
        return publish(self.spool, text, name)

    def close(self) -> None:
        for d in self.daemons:
            if d.proc.poll() is None:
                d.kill()
            else:
                d._close()
        kill_jobs_under(self.root)


def kill_jobs_under(root: Path) -> None:
    """Jobs run in their own sessions and outlive a SIGKILLed daemon: end every process
    whose SPOOLQ_TRIGGER lies under ``root`` so no test leaves work running."""
    marker = f"SPOOLQ_TRIGGER={root}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if marker in fh.read():
                    os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.close()


def process_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rfind(b")") + 2 :].split()[0] != b"Z"


def wait_claimed_empty(env: Env, timeout: float = DEADLINE) -> None:
    """A finished job's trigger leaves claimed/ just after the job's outcome is recorded
    (and logged): wait for that before looking in done/, failed/ or rejected/."""
    claimed = env.state / "claimed"
    wait_until(lambda: not any(claimed.iterdir()), timeout, "claimed/ to be empty")
