"""How the certs/ inventory behaves with a large fleet: N certificates made with cryptography.

Measures a cold scan (every file parsed), a rerun with nothing changed, a rerun after a few changes,
building the View table, and the process's peak memory. Usage:

    .venv/bin/python bench/inventory_bench.py [--count 10000] [--changes 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1] / "streamlit"),
    str(Path(__file__).resolve().parents[1] / "tests"),
]

import pandas as pd  # noqa: E402

from certfactory import make_certificate, write_certificate  # noqa: E402
from pki import report  # noqa: E402
from pki.inventory import Inventory  # noqa: E402


def timed(action: Callable[[], object], repeat: int = 1) -> float:
    """Median seconds of `repeat` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC)

    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        start = time.perf_counter()
        for i in range(args.count):
            cn = f"site-{i:05}"
            write_certificate(certs, cn, cn, not_after=now + dt.timedelta(days=1 + i % 730), server=i % 50 == 0)
        made = time.perf_counter() - start

        inventory = Inventory(certs)
        cold = timed(inventory.records)
        parsed_cold = inventory.parse_count
        warm = timed(inventory.records, repeat=5)
        parsed_warm = inventory.parse_count - parsed_cold

        for i in range(args.changes):
            path = certs / f"site-{i:05}" / f"site-{i:05}.crt"
            path.write_bytes(make_certificate(f"site-{i:05}", not_after=now + dt.timedelta(days=3)))
            os.utime(path, ns=(i + 1, i + 1))
        before = inventory.parse_count
        changed = timed(inventory.records)
        parsed_changed = inventory.parse_count - before

        records = inventory.records()

        def table() -> pd.DataFrame:
            rows = report.rows(records, now, frozenset(), 7)
            report.status_counts(rows)
            report.expiries_per_week(rows, now)
            return pd.DataFrame([row.as_dict(now) for row in rows], columns=report.COLUMNS)

        table_time = timed(table, repeat=3)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"certificates                    {args.count}")
    print(f"made with cryptography          {made:8.2f} s")
    print(f"cold scan                       {cold:8.3f} s   parsed {parsed_cold}")
    print(f"rerun, nothing changed (median) {warm:8.3f} s   parsed {parsed_warm}")
    print(f"rerun after {args.changes} changes            {changed:8.3f} s   parsed {parsed_changed}")
    print(f"table + counts + weekly chart   {table_time:8.3f} s")
    print(f"peak memory (max RSS)           {peak_mib:8.1f} MiB")


if __name__ == "__main__":
    main()
