"""The distributed store: PostgreSQL, shared by ``spoolq run`` on several hosts.

Each verb is one transaction. ``claim_batch`` locks the lane's row (``FOR UPDATE``), so
claims in one lane are serialized across all hosts and the lane limit holds; the queued
jobs are taken with ``FOR UPDATE SKIP LOCKED``. Control commands wake daemons with
``NOTIFY spoolq``. psycopg is imported lazily: ``pip install 'spoolq[postgres]'``.

Transactions run in pipeline mode: ``BEGIN``, the statements a verb does not wait for
(``Tx.run``, ``Tx.send``) and ``COMMIT`` travel with the next statement that waits, so a
busy lane's hand-off (finish one job, start the next) costs 2 round trips instead of 8, and
a batch of claimed triggers one instead of one per trigger. Across a network, round trips
are most of a verb's time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from spoolq.errors import ConfigError, StoreError, StoreUnavailable
from spoolq.store import queries
from spoolq.store.rows import Row
from spoolq.store.sqlbase import Pending, SqlStore, Tx

if TYPE_CHECKING:
    import psycopg

# A waiter's row in spoolq_waiters lasts WAITER_TTL seconds, refreshed every WAITER_REFRESH
# while it waits (it drains at least every few seconds: waiting.POLL_WITH_WAKEUP).
WAITER_TTL = 120
WAITER_REFRESH = 30.0


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "store = 'postgresql://...' needs psycopg: pip install 'spoolq[postgres]'"
        ) from None
    # psycopg logs a warning of its own when a pipeline closes after an error ("error
    # ignored terminating Pipeline"); the error itself is raised and reaches the event log
    # as store_unavailable. Without a handler Python would print it raw on stderr.
    log = logging.getLogger("psycopg")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return psycopg


class _PgTx:
    """Statements of one transaction. With a pipeline, ``run`` and ``send`` only queue
    theirs; ``one`` and ``all`` send everything queued with their own and wait for all the
    answers. Without one (the migrations), every statement waits."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        q: dict[str, str],
        pipeline: psycopg.Pipeline | None,
    ) -> None:
        self._conn, self._cur, self._q, self._pipeline = conn, cur, q, pipeline

    def _wait(self) -> None:
        if self._pipeline is not None:
            self._pipeline.sync()

    def one(self, query: str, /, **params: Any) -> Row | None:
        self._cur.execute(self._q[query], params)
        self._wait()
        row: Row | None = self._cur.fetchone() if self._cur.description else None
        return row

    def all(self, query: str, /, **params: Any) -> list[Row]:
        self._cur.execute(self._q[query], params)
        self._wait()
        return self._cur.fetchall() if self._cur.description else []

    def run(self, query: str, /, **params: Any) -> None:
        self._cur.execute(self._q[query], params)

    def send(self, query: str, /, **params: Any) -> Pending:
        cur = self._conn.cursor()  # a cursor of its own keeps this statement's answer
        cur.execute(self._q[query], params)

        def row() -> Row | None:
            try:
                found: Row | None = cur.fetchone()  # in a pipeline: flushes, then waits
                return found
            finally:
                cur.close()

        return row


class PostgresStore(SqlStore):
    name = "postgresql"
    several_hosts = True

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
            tx = _PgTx(self._conn, cur, self._q, None)
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
        # BEGIN and COMMIT are statements of the pipeline, not conn.transaction() (which
        # waits at both ends): BEGIN travels with the verb's first statements, COMMIT with
        # its last ones when the pipeline closes, and closing raises what went wrong in any.
        with self._translate():
            try:
                with self._conn.pipeline() as pipeline, self._conn.cursor() as cur:
                    cur.execute("BEGIN")
                    yield _PgTx(self._conn, cur, self._q, pipeline)
                    cur.execute("COMMIT")
            except BaseException:
                # An error, ours or a statement's (then the transaction is aborted and COMMIT
                # was skipped): end it, so that the connection takes the next one.
                with contextlib.suppress(self._pg.Error):
                    self._conn.rollback()
                if not self._idle():
                    # The rollback did not get through, or an interrupt inside psycopg left
                    # libpq in pipeline mode: a later COMMIT on this connection would commit
                    # what this transaction left behind. Connect afresh before the next verb.
                    self._broken = True
                raise

    def _idle(self) -> bool:
        """Outside any transaction and pipeline, ready for the next one."""
        conn = self._conn
        return (
            not conn.closed
            and not conn.pgconn.pipeline_status
            and conn.info.transaction_status == self._pg.pq.TransactionStatus.IDLE
        )

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

    def notify(self, exclude: str | None = None, lanes: Sequence[str] | None = None) -> None:
        with self._tx() as tx:
            if lanes is None:
                tx.all("notify", exclude=exclude)
            else:
                tx.all("notify_slots", exclude=exclude, lanes=list(lanes))

    def listen_ended(self) -> PgListener | None:
        # A trigger on the jobs table notifies this channel as a job ends, while a waiter
        # is registered (migrations 4 and 6): the listener registers itself.
        try:
            return PgListener(self, channel="spoolq_ended", waiter=True)
        except StoreUnavailable:
            return None


class PgListener:
    """A second connection that LISTENs; the daemon polls its socket. If the server goes
    away the socket reports EOF: the listener then closes it (``fileno`` is -1) and tries to
    connect again at each ``drain``. A ``waiter`` (for jobs to end) also keeps a row in
    spoolq_waiters while it listens, refreshed as it drains: without one, job ends notify
    nobody."""

    def __init__(
        self,
        store: PostgresStore,
        daemon_id: str = "",
        *,
        channel: str | None = None,
        waiter: bool = False,
    ) -> None:
        self._store = store
        self._pg = store._pg
        self._channel = channel or (
            "spoolq_" + hashlib.md5(daemon_id.encode()).hexdigest()[:24]  # noqa: S324
        )
        self._waiter = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}" if waiter else ""
        self._registered_at = 0.0
        self._conn: Any = None
        self._connect()
        if self._conn is None:
            raise StoreUnavailable(f"cannot connect to {store._redacted()} to LISTEN")

    def _connect(self) -> None:
        from psycopg import sql

        try:
            conn = self._pg.connect(self._store.url, autocommit=True)
        except self._pg.Error:
            return
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._register(conn)  # after LISTEN: no end notified once it counts is missed
        except self._pg.Error:
            with contextlib.suppress(self._pg.Error):
                conn.close()
            return
        self._conn = conn

    def _register(self, conn: Any) -> None:
        if self._waiter:
            conn.execute(self._store._q["register_waiter"], {"id": self._waiter, "ttl": WAITER_TTL})
            self._registered_at = time.monotonic()

    def fileno(self) -> int:
        return int(self._conn.fileno()) if self._conn is not None else -1

    def drain(self) -> None:
        if self._conn is not None:
            try:
                for _ in self._conn.notifies(timeout=0):
                    pass
                if self._waiter and time.monotonic() - self._registered_at > WAITER_REFRESH:
                    self._register(self._conn)
                return
            except self._pg.Error:
                with contextlib.suppress(self._pg.Error):
                    self._conn.close()
                self._conn = None
        self._connect()

    def close(self) -> None:
        if self._conn is not None:
            if self._waiter:
                with contextlib.suppress(self._pg.Error):
                    self._conn.execute(self._store._q["unregister_waiter"], {"id": self._waiter})
            self._conn.close()
