"""Who may use the web: one bearer token, kept in a file readable by its owner only.

The token comes from ``[http] token_file`` (default ``<state_dir>/http.token``, made with
mode 0600 on first start). A request carries it as ``Authorization: Bearer TOKEN`` or, from
the page, in the HttpOnly, SameSite=Strict cookie the login form sets. ``/healthz`` and
``/metrics`` are open; the routes decide that, this module only checks.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from fastapi import Request

from spoolq.config import Config, split_address
from spoolq.errors import ConfigError

COOKIE = "spoolq_token"


def token_path(config: Config, state_root: Path) -> Path:
    return config.http.token_file or state_root / "http.token"


def check_exposure(config: Config, listen: str) -> None:
    """Beyond loopback, the token must be one the operator chose to keep somewhere, not one
    made silently inside the state directory."""
    host, _port = split_address(listen)
    if not is_loopback(host) and config.http.token_file is None:
        raise ConfigError(
            f"[http] listen = {listen!r} is reachable from other hosts: set [http] token_file "
            "(a file holding the access token; it is created with mode 0600 if missing), or "
            "listen on 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def load_token(path: Path) -> str:
    """The token in ``path``; a new random one (mode 0600) if the file does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"[http] token_file {path}: cannot create it: {exc.strerror}") from None
    else:
        token = secrets.token_urlsafe(32)
        try:
            os.write(fd, f"{token}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return token
    try:
        token = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[http] token_file {path}: cannot read it: {exc}") from None
    if len(token) < 16:
        raise ConfigError(
            f"[http] token_file {path}: the token must be at least 16 characters "
            "(delete the file to have a new one made)"
        )
    return token


def presented(request: Request) -> tuple[str | None, str]:
    """The token a request carries and how (``bearer`` or ``cookie``)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return cookie, "cookie"
    return None, ""


def valid(token: str, given: str | None) -> bool:
    if given is None:
        return False
    with contextlib.suppress(UnicodeEncodeError):
        return hmac.compare_digest(token.encode(), given.encode())
    return False
