"""The distributed store: PostgreSQL, shared by ``spoolq run`` on several hosts.

Each verb is one transaction. ``claim_next`` locks the lane's row (``FOR UPDATE``), so
claims in one lane are serialized across all hosts and the lane limit holds; the queued job
is taken with ``FOR UPDATE SKIP LOCKED``. Control commands wake daemons with
``NOTIFY spoolq``. psycopg is imported lazily: ``pip install 'spoolq[postgres]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from spoolq.errors import ConfigError, StoreError, StoreUnavailable
from spoolq.store import queries
from spoolq.store.sqlbase import Row, SqlStore, Tx

if TYPE_CHECKING:
    import psycopg


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "store = 'postgresql://...' needs psycopg: pip install 'spoolq[postgres]'"
        ) from None
    return psycopg


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[Any], q: dict[str, str]) -> None:
        self._cur, self._q = cur, q

    def one(self, query: str, /, **params: Any) -> Row | None:
        self._cur.execute(self._q[query], params)
        row: Row | None = self._cur.fetchone() if self._cur.description else None
        return row

    def all(self, query: str, /, **params: Any) -> list[Row]:
        self._cur.execute(self._q[query], params)
        return self._cur.fetchall() if self._cur.description else []


class PostgresStore(SqlStore):
    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._broken = False
        self._pg = _psycopg()
        self._q = queries.load("postgres.sql")
        self._connect()

    def _redacted(self) -> str:
        head, sep, tail = self.url.partition("@")
        return f"{head.split(':')[0]}://...@{tail}" if sep and ":" in head[13:] else self.url

    def _connect(self) -> None:
        from psycopg.rows import dict_row

        try:
            self._conn = self._pg.connect(self.url, autocommit=True, row_factory=dict_row)
        except self._pg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to {self._redacted()}: {exc}") from exc
        with self._translate(), self._conn.transaction(), self._conn.cursor() as cur:
            tx = _PgTx(cur, self._q)
            tx.one("migration_lock")
            tx.one("migrations_table")
            row = tx.one("schema_version")
            current = int(row["v"]) if row else 0
            for number, script in queries.migrations("postgres"):
                if number > current:
                    cur.execute(script)
                    tx.one("set_schema_version", version=number)

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except self._pg.OperationalError as exc:
            self._broken = True  # the next transaction connects again first
            raise StoreUnavailable(f"PostgreSQL store {self._redacted()}: {exc}") from exc
        except self._pg.Error as exc:
            raise StoreError(f"PostgreSQL store {self._redacted()}: {exc}") from exc

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Tx]:
        if self._broken or self._conn.closed:
            self.reopen()
        with self._translate(), self._conn.transaction(), self._conn.cursor() as cur:
            yield _PgTx(cur, self._q)

    def _read(self) -> contextlib.AbstractContextManager[Tx]:
        return self._tx()

    def close(self) -> None:
        self._conn.close()

    def verify(self) -> str | None:
        """A dropped connection is not a lost store: the rows are on the server. Connect
        again (StoreUnavailable while the server is down) and report nothing lost."""
        try:
            self._conn.execute("SELECT 1")
        except self._pg.Error:
            self.reopen()
        return None

    def reopen(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        self._connect()
        self._broken = False

    # -- notification ------------------------------------------------------------------------
    def listen(self, daemon_id: str) -> PgListener:
        return PgListener(self, daemon_id)

    def notify(self, exclude: str | None = None) -> None:
        with self._tx() as tx:
            tx.all("notify", exclude=exclude)


class PgListener:
    """A second connection that LISTENs; the daemon polls its socket. If the server goes
    away the socket reports EOF: the listener then closes it (``fileno`` is -1) and tries to
    connect again at each ``drain``."""

    def __init__(self, store: PostgresStore, daemon_id: str) -> None:
        self._store = store
        self._pg = store._pg
        self._channel = "spoolq_" + hashlib.md5(daemon_id.encode()).hexdigest()[:24]  # noqa: S324
        self._conn: Any = None
        self._connect()
        if self._conn is None:
            raise StoreUnavailable(f"cannot connect to {store._redacted()} to LISTEN")

    def _connect(self) -> None:
        from psycopg import sql

        try:
            conn = self._pg.connect(self._store.url, autocommit=True)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except self._pg.Error:
            return
        self._conn = conn

    def fileno(self) -> int:
        return int(self._conn.fileno()) if self._conn is not None else -1

    def drain(self) -> None:
        if self._conn is not None:
            try:
                for _ in self._conn.notifies(timeout=0):
                    pass
                return
            except self._pg.Error:
                with contextlib.suppress(self._pg.Error):
                    self._conn.close()
                self._conn = None
        self._connect()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
