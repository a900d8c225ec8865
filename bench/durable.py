"""The durable chain: the least a serial lane must do per job to keep its state on disk.

A loop with nothing else in it (no watcher, no claims, no event log, no retries): one
SQLite transaction that records the last job's outcome and starts the next (the store's
own schema, WAL with ``synchronous = NORMAL`` as spoolq runs it), the next job's log file
with a header line, ``posix_spawn`` with the log as stdout and stderr, ``waitpid``.
Compared with the bare ``subprocess.run`` loop in the same run, it shows what durability
costs on this machine before any daemon work; the same chain compiled from C (when a
compiler and SQLite's header are here) shows what a compiled hot path could reach, at
concurrency 1 and, keeping two jobs running, at 2.

Both chains run the statements of ``HANDOFF``: parameters ``:now`` (a float time),
``:prev`` (the last job's id), and a statement that returns a row sets the next id.

The durable watch (``durable_watch.c``) is the latency benchmark's counterpart: a compiled
inotify watcher that claims each trigger (rename into ``claimed/``, read), records and
starts its job in one transaction (``ARRIVAL``), creates its log and spawns it: what a
durable queue must do between a trigger's arrival and its job's start.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from bench.common import Stamp
from spoolq.store import queries

HANDOFF = (
    "BEGIN IMMEDIATE",
    "UPDATE attempts SET finished_at = :now, exit_code = 0, wall_s = 0.001"
    " WHERE job_id = :prev AND n = 1",
    "UPDATE jobs SET state = 'succeeded', finished_at = :now, owner = NULL WHERE id = :prev",
    "SELECT concurrency, paused FROM lanes WHERE name = 'l'",
    "SELECT count(*) FROM jobs WHERE state = 'running' AND lane = 'l'",
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = :now"
    " WHERE seq = (SELECT seq FROM jobs INDEXED BY jobs_queue WHERE state = 'queued'"
    " AND lane = 'l' ORDER BY priority DESC, seq LIMIT 1) RETURNING id",
    "INSERT INTO attempts (job_id, n, started_at) VALUES (:next, 1, :now)",
    "COMMIT",
)
NEXT_ID = 5  # the statement of HANDOFF whose row is the next job's id
ARRIVAL = (
    "BEGIN IMMEDIATE",
    "INSERT INTO jobs (id, state, lane, trigger, claimed_path, log, spec, created_at)"
    " VALUES (:id, 'queued', 'l', :trigger, :claimed, :log, :spec, :now)",
    "SELECT concurrency, paused FROM lanes WHERE name = 'l'",
    "SELECT count(*) FROM jobs WHERE state = 'running' AND lane = 'l'",
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = :now WHERE id = :id",
    "INSERT INTO attempts (job_id, n, started_at) VALUES (:id, 1, :now)",
    "COMMIT",
)
HEADER = b"# spoolq job log\n"

HERE = Path(__file__).parent


def queued_db(path: Path, n: int, concurrency: int = 1) -> sqlite3.Connection:
    """A store (the current schema) with one lane ``l`` of ``concurrency`` and ``n`` queued
    jobs; autocommit connection, WAL, ``synchronous = NORMAL``."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for _, script in queries.migrations("sqlite"):
        db.executescript(script)
    db.execute("INSERT INTO lanes (name, concurrency) VALUES ('l', ?)", (concurrency,))
    spec = json.dumps({"steps": [["/bin/true"]]})
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO jobs (id, state, lane, trigger, claimed_path, log, spec, created_at)"
        " VALUES (?, 'queued', 'l', ?, ?, ?, ?, ?)",
        (
            (f"J{i:025d}", f"/spool/t{i}", f"/state/claimed/t{i}", f"/state/logs/{i}", spec, i)
            for i in range(n)
        ),
    )
    db.execute("COMMIT")
    return db


def handoff(db: sqlite3.Connection, prev: str | None) -> str:
    """One run of HANDOFF; the id of the job it started."""
    params: dict[str, object] = {"now": time.time(), "prev": prev, "next": None}
    for i, sql in enumerate(HANDOFF):
        cur = db.execute(sql, params)
        if i == NEXT_ID:
            params["next"] = cur.fetchone()[0]
    return str(params["next"])


def python_chain(stamp: Stamp, root: Path, n: int) -> float:
    """jobs/s of the durable chain in Python, ``n`` jobs of the stamp command."""
    db = queued_db(root / "chain.db", n)
    logs = root / "logs"
    logs.mkdir()
    cmd = stamp.cmd(root / "stamps")
    env = dict(os.environ)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    prev = None
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            prev = handoff(db, prev)
            log = os.open(logs / prev, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                os.write(log, HEADER)
                actions = [(os.POSIX_SPAWN_DUP2, null, 0)]
                actions += [(os.POSIX_SPAWN_DUP2, log, fd) for fd in (1, 2)]
                pid = os.posix_spawn(cmd[0], cmd, env, file_actions=actions, setsid=True)
            finally:
                os.close(log)
            os.waitpid(pid, 0)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(null)
        db.close()


def build_c(workdir: Path, name: str = "durable_chain") -> Path | None:
    """Compile ``bench/<name>.c`` against the system's SQLite; None if no compiler or no
    header/library (Debian: libsqlite3-dev)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    exe = workdir / name
    source = HERE / f"{name}.c"
    res = subprocess.run(
        [cc, "-O2", "-o", str(exe), str(source), "-lsqlite3"], capture_output=True, check=False
    )
    return exe if res.returncode == 0 else None


def c_chain(exe: Path, stamp: Stamp, root: Path, n: int, concurrency: int = 1) -> float:
    """jobs/s of the same chain compiled (``build_c``), ``concurrency`` jobs at once."""
    queued_db(root / "chain.db", n, concurrency).close()
    logs = root / "logs"
    logs.mkdir()
    argv = [str(exe), str(root / "chain.db"), str(logs), str(n), str(concurrency), str(NEXT_ID)]
    argv += [HEADER.decode(), *HANDOFF]
    out = subprocess.run(
        [*argv, "--", *stamp.cmd(root / "stamps")], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def watch_argv(exe: Path, spool: Path, state: Path, cmd: list[str]) -> list[str]:
    """The durable watch's command line; makes ``state`` (store, claimed/, logs/)."""
    for sub in ("claimed", "logs"):
        (state / sub).mkdir(parents=True)
    queued_db(state / "chain.db", 0).close()
    return [str(exe), str(spool), str(state), HEADER.decode(), *ARRIVAL, "--", *cmd]
