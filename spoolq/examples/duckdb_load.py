"""Load one CSV file into its own table of a DuckDB database.

    python -m spoolq.examples.duckdb_load --db warehouse.duckdb --table sales_01 sales_01.csv

``CREATE OR REPLACE TABLE`` makes a re-run harmless, which is what at-least-once delivery
asks of a job. DuckDB lets one process at a time open a database file for writing; a
second concurrent writer fails with "Could not set lock on file" - the reason the loads go
through a spoolq lane of concurrency 1. It reports the rows loaded as it goes
(``spoolq.progress``), which ``spoolq status`` and the page show as a progress bar.

With ``--chunk-rows N`` the file is parsed once into a temporary table, then inserted into
its table N rows at a time, each chunk committed and reported before the next; ``--max-rate
R`` paces the chunks to at most R rows a second, standing in for a slow source (the demo
paces its one big file so that the load lasts long enough for its progress to be seen).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from typing import TYPE_CHECKING

import spoolq

if TYPE_CHECKING:
    import duckdb

# Identifiers cannot be bound as parameters; only plain names are ever quoted in.
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def load(db: str, table: str, path: str, chunk_rows: int = 0, max_rate: float = 0.0) -> int:
    import duckdb

    if not TABLE_NAME.match(table):
        raise ValueError(f"table name {table!r} must match {TABLE_NAME.pattern}")
    started = time.monotonic()
    with duckdb.connect(db) as con:
        if chunk_rows > 0:
            rows = _load_in_chunks(con, table, path, chunk_rows, max_rate, started)
        else:
            rows = _load_at_once(con, table, path)
    print(f"loaded {rows} rows into {table} in {time.monotonic() - started:.2f}s")
    return rows


def _load_at_once(con: duckdb.DuckDBPyConnection, table: str, path: str) -> int:
    """One statement; the rows loaded reported from DuckDB's own progress as it runs."""
    total = _data_lines(path)
    spoolq.progress(0, total, unit="rows")
    con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")
    # The load runs in a thread; this one reports how far DuckDB says it has come, as
    # rows (spoolq shows them, with rate and ETA, while the job runs).
    failed: list[BaseException] = []

    def run() -> None:
        try:
            sql = f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM read_csv(?, header = true)'  # noqa: S608
            con.execute(sql, [path])
        except BaseException as exc:  # raised again in the main thread
            failed.append(exc)

    loading = threading.Thread(target=run)
    loading.start()
    while loading.is_alive():
        loading.join(0.2)
        percent = con.query_progress()
        if percent >= 0:
            spoolq.progress(int(total * percent / 100), total, unit="rows")
    if failed:
        raise failed[0]
    row = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # noqa: S608
    rows = int(row[0]) if row else 0
    spoolq.progress(rows, total, unit="rows")
    return rows


def _load_in_chunks(
    con: duckdb.DuckDBPyConnection,
    table: str,
    path: str,
    chunk_rows: int,
    max_rate: float,
    started: float,
) -> int:
    """Parse ``path`` once, then insert it ``chunk_rows`` rows at a time (each statement
    commits on its own), reporting the rows committed after each chunk - the first as soon
    as it is in; with ``max_rate``, a chunk waits until the rows before it took that long
    at that rate since ``started``."""
    con.execute("CREATE TEMP TABLE staged AS SELECT * FROM read_csv(?, header = true)", [path])
    counted = con.execute("SELECT count(*) FROM staged").fetchone()
    total = int(counted[0]) if counted else 0
    con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM staged LIMIT 0')  # noqa: S608
    done = 0
    while done < total:
        if max_rate > 0:
            time.sleep(max(0.0, started + done / max_rate - time.monotonic()))
        upto = min(total, done + chunk_rows)
        con.execute(
            f'INSERT INTO "{table}" SELECT * FROM staged WHERE rowid >= ? AND rowid < ?',  # noqa: S608
            [done, upto],
        )
        done = upto
        spoolq.progress(done, total, unit="rows")
    return done


def _data_lines(path: str) -> int:
    """The rows of a CSV file with a header (lines, less one), counted without parsing."""
    lines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(0, lines - 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--chunk-rows", type=int, default=0, help="commit this many rows at a time")
    ap.add_argument("--max-rate", type=float, default=0.0, help="at most this many rows a second")
    ap.add_argument("path")
    args = ap.parse_args(argv)
    try:
        load(args.db, args.table, args.path, args.chunk_rows, args.max_rate)
    except Exception as exc:  # the job's log should say why in a few lines
        # DuckDB's messages run to 25 lines of reader settings: keep what says what is wrong.
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        cut = next((i for i, ln in enumerate(lines) if ln.startswith("Possible Solution")), 3)
        print(f"load of {args.path} into {args.table} failed:", file=sys.stderr)
        for line in lines[: min(cut, 3)] or [type(exc).__name__]:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
