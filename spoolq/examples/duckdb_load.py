"""Load one CSV file into its own table of a DuckDB database.

    python -m spoolq.examples.duckdb_load --db warehouse.duckdb --table sales_01 sales_01.csv

``CREATE OR REPLACE TABLE`` makes a re-run harmless, which is what at-least-once delivery
asks of a job. DuckDB lets one process at a time open a database file for writing; a
second concurrent writer fails with "Could not set lock on file" - the reason the loads go
through a spoolq lane of concurrency 1. It reports the rows loaded as it goes
(``spoolq.progress``), which ``spoolq status`` and the page show as a progress bar.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time

import spoolq

# Identifiers cannot be bound as parameters; only plain names are ever quoted in.
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def load(db: str, table: str, path: str) -> int:
    import duckdb

    if not TABLE_NAME.match(table):
        raise ValueError(f"table name {table!r} must match {TABLE_NAME.pattern}")
    started = time.monotonic()
    total = _data_lines(path)
    spoolq.progress(0, total, unit="rows")
    with duckdb.connect(db) as con:
        con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")
        # The load runs in a thread; this one reports how far DuckDB says it has come, as
        # rows (spoolq shows them, with rate and ETA, while the job runs).
        failed: list[BaseException] = []

        def run() -> None:
            try:
                sql = (
                    f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM read_csv(?, header = true)'  # noqa: S608
                )
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
    print(f"loaded {rows} rows into {table} in {time.monotonic() - started:.2f}s")
    return rows


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
    ap.add_argument("path")
    args = ap.parse_args(argv)
    try:
        load(args.db, args.table, args.path)
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
