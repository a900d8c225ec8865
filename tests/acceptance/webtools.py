"""Helpers of the web tests: a daemon serving ``--http`` on a free port, or a ``spoolq web``
process, and an HTTP client that carries the token it wrote."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import SPOOLQ, DaemonProcess, Env, wait_until


class Web:
    """One served app: its URL, its token, and a client with and without the token."""

    def __init__(self, url: str, token_file: Path) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.token = token_file.read_text().strip()
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        self.anon = httpx.Client(base_url=self.url, timeout=10)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def json(self, path: str, **kw: Any) -> Any:
        r = self.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def close(self) -> None:
        self.client.close()
        self.anon.close()


def start_http(env: Env, *extra: str) -> tuple[DaemonProcess, Web]:
    """``spoolq run --http 127.0.0.1:0`` and the URL it announced (event=http)."""
    d = env.start("--http", "127.0.0.1:0", *extra)
    ev = d.wait_for("http")[0]
    return d, Web(ev["url"], Path(ev["token_file"]))


class WebProcess:
    """``spoolq web`` as a user runs it; its human log read for the event=http line."""

    def __init__(self, env: Env, *args: str) -> None:
        self.proc = subprocess.Popen(
            [SPOOLQ, *env.base_args(), "web", "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env.env,
            cwd=env.root,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = wait_until(self._announced, 20, "spoolq web to announce its URL")
        url = re.search(r"url=(\S+)", line)
        token = re.search(r"token_file=(\S+)", line)
        assert url and token, line
        self.web = Web(url.group(1), Path(token.group(1)))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _announced(self) -> str | None:
        if self.proc.poll() is not None and not self._reader.is_alive():
            raise AssertionError("spoolq web exited:\n" + "\n".join(self.lines))
        return next((ln for ln in self.lines if "event=http " in ln), None)

    def stop(self) -> int:
        self.web.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(20)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code
