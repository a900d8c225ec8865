"""Serving the app with uvicorn: in the foreground (``spoolq web``) or on a thread of the
daemon (``spoolq run --http``).

The listening socket is bound before anything else starts, so a bad or busy address is a
configuration error at once (exit 2), and port 0 is resolved to the real port before the
``event=http`` line announces the URL and where the token is. Inside the daemon the server
runs on its own thread with its own event loop and its own store connection: a slow client
or a scrape never waits on the daemon's loop, nor the loop on them.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from spoolq.config import Config, Http, split_address
from spoolq.errors import ConfigError, UsageError
from spoolq.events import EventLog
from spoolq.store import Store, open_store
from spoolq.web.app import create_app
from spoolq.web.auth import check_exposure, load_token, token_path
from spoolq.web.context import WebContext


def bind(listen: str) -> socket.socket:
    host, port = split_address(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"[http] listen = {listen!r}: cannot resolve {host!r}: {exc}") from None
    family, kind, proto, _name, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"[http] listen = {listen!r}: cannot listen: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):  # noqa: S104 - every address: name this host's
        host = socket.gethostname()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class WebServer:
    """The app on a bound socket, ready to serve in the foreground or on a thread."""

    def __init__(
        self,
        config: Config,
        state_root: Path,
        store: Store,
        log: EventLog,
        listen: str,
        *,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        check_exposure(config, listen)
        path = token_path(config, state_root)
        if config.http.token_file is None:  # in the state dir, which `spoolq web` may not have
            state_root.mkdir(parents=True, exist_ok=True, mode=0o750)
        token = load_token(path)
        self.sock = bind(listen)
        self.ctx = WebContext(
            config,
            state_root,
            store,
            token,
            log,
            healthy=healthy or (lambda: True),
            in_daemon=healthy is not None,
        )
        self.app = create_app(self.ctx)
        self.url = url_of(self.sock)
        self.token_file = path
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_config=None,  # the event log is ours; uvicorn's errors still show
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
                server_header=False,
            )
        )
        self._thread: threading.Thread | None = None

    def announce(self) -> None:
        self.ctx.log.emit("http", url=self.url, token_file=str(self.token_file))

    def serve(self) -> None:
        """In the foreground until SIGINT/SIGTERM: uvicorn shuts down on either, then
        raises it again; the handlers here make that a normal exit (status 0)."""
        self.announce()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        self._server.run(sockets=[self.sock])
        self.ctx.log.emit("stopped")

    def start(self) -> None:
        """On a thread of its own; ``stop`` ends it."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self.sock]}, name="spoolq-web", daemon=True
        )
        self._thread.start()
        self.announce()

    def stop(self, timeout: float = 3.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self.ctx.store.close()  # the thread's own connection
        self.sock.close()


def with_listen(config: Config, listen: str, flag: str) -> Config:
    """The config with ``[http] listen`` set from a command-line flag."""
    try:
        http = Http(listen=listen, token_file=config.http.token_file)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"{flag}: {msg}") from None
    return config.model_copy(update={"http": http})


def start_in_daemon(config: Config, state_root: Path, log: EventLog, daemon: Any) -> WebServer:
    """The web on a thread of the daemon, with a store connection of its own; ``/healthz``
    asks the daemon whether its watchers are alive (``Daemon.healthy``)."""

    def healthy() -> bool:
        check = getattr(daemon, "healthy", None)
        return bool(check()) if check is not None else True

    store = open_store(config.store, state_root)
    try:
        server = WebServer(config, state_root, store, log, str(config.http.listen), healthy=healthy)
    except BaseException:
        store.close()
        raise
    server.start()
    return server
