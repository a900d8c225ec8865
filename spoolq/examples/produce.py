"""A demo producer: generate order CSV files and publish one load trigger per file.

python -m spoolq.examples.produce --spool SPOOL --staging DIR --worker 3 --files 5
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import spoolq

COUNTRIES = ("DE", "FR", "NL", "PL", "SE", "ES", "IT", "US", "GB", "JP")


def write_orders(path: Path, rows: int, rng: random.Random) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["order_id", "customer_id", "sku", "quantity", "unit_price", "country", "ordered_at"]
        )
        for i in range(rows):
            w.writerow(
                [
                    rng.randrange(10**9),
                    rng.randrange(10**6),
                    f"SKU-{rng.randrange(10**5):05d}",
                    rng.randint(1, 20),
                    f"{rng.uniform(0.5, 500):.2f}",
                    rng.choice(COUNTRIES),
                    (start + timedelta(seconds=rng.randrange(31_536_000) + i)).isoformat(),
                ]
            )
    os.rename(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spool", required=True)
    ap.add_argument("--staging", required=True)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--bad", action="store_true", help="also publish one malformed file")
    args = ap.parse_args(argv)
    rng = random.Random(args.worker)  # noqa: S311 - sample data, not secrets
    staging = Path(args.staging)
    for n in range(args.files):
        table = f"orders_w{args.worker}_{n:02d}"
        path = staging / f"{table}.csv"
        write_orders(path, args.rows, rng)
        spoolq.submit(args.spool, job="load", params={"table": table, "path": str(path)})
    if args.bad:
        table = f"orders_w{args.worker}_broken"
        path = staging / f"{table}.csv"
        # A corrupted export: bytes that are not UTF-8 in the middle of the data.
        path.write_bytes(b"order_id,customer_id,sku\n1,2,SKU-1\n3,\xff\xfe\xfd,SKU-2\n")
        spoolq.submit(args.spool, job="load", params={"table": table, "path": str(path)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
