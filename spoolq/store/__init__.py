"""Stores: where jobs live. ``open_store`` picks the implementation from the config."""

from __future__ import annotations

from pathlib import Path

from spoolq.store.base import Listener, Store

__all__ = ["Listener", "Store", "open_store"]


def open_store(url: str, state_dir: Path) -> Store:
    """``sqlite`` (the default: ``<state>/spoolq.db``), ``sqlite:///path.db``, or
    ``postgresql://...``."""
    if url in ("sqlite", ""):
        from spoolq.store.sqlite import SqliteStore

        return SqliteStore(state_dir / "spoolq.db")
    if url.startswith("sqlite:///"):
        from spoolq.store.sqlite import SqliteStore

        return SqliteStore(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        from spoolq.store.postgres import PostgresStore

        return PostgresStore(url)
    from spoolq.errors import ConfigError

    raise ConfigError(
        f"store = {url!r}: use 'sqlite', 'sqlite:///path/to.db' or 'postgresql://user@host/db'"
    )
