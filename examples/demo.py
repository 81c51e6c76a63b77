"""Demo: sort and dedup the db-benchmark G1 table with ferrobatch and its peers.

    python examples/demo.py [--rows 1000000] [--reps 3]

Generates (once, cached as Parquet) the G1_<rows>_1e2_0_0 table, then times, on the same
in-memory Arrow data: (a) full sort by [id3 asc, v3 desc], (b) sort by id6, (c) dedup on
[id1, id2, id4] keep first -- in ferrobatch, pandas, and Polars / DuckDB when installed.
Prints the median seconds and the ratio ferrobatch / peer (below 1 = ferrobatch faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import ferrobatch as fb
from ferrobatch.bench.data import groupby_path


def median_time(fn: Callable[[], Any], reps: int) -> tuple[float, int]:
    fn()  # warm-up
    times, rows = [], 0
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        rows = len(out)
    return statistics.median(times), rows


def engines(t: pa.Table) -> dict[str, dict[str, Callable[[], Any]]]:
    out: dict[str, dict[str, Callable[[], Any]]] = {
        "ferrobatch": {
            "sort [id3, v3 desc]": lambda: fb.sort(t, ["id3", "v3"], descending=[False, True]),
            "sort [id6]": lambda: fb.sort(t, "id6"),
            "dedup [id1, id2, id4]": lambda: fb.dedup(t, ["id1", "id2", "id4"]),
        }
    }
    try:
        import polars as pl

        df = pl.from_arrow(t)
        out["polars"] = {
            "sort [id3, v3 desc]": lambda: df.sort(
                ["id3", "v3"], descending=[False, True], maintain_order=True
            ),
            "sort [id6]": lambda: df.sort("id6", maintain_order=True),
            "dedup [id1, id2, id4]": lambda: df.unique(
                ["id1", "id2", "id4"], keep="first", maintain_order=True
            ),
        }
    except ImportError:
        pass
    try:
        import duckdb

        con = duckdb.connect()
        con.register("arrow_t", t)
        con.execute("CREATE TABLE t AS SELECT * FROM arrow_t")
        q = {
            "sort [id3, v3 desc]": "SELECT * FROM t ORDER BY id3, v3 DESC",
            "sort [id6]": "SELECT * FROM t ORDER BY id6",
            "dedup [id1, id2, id4]": "SELECT * FROM t QUALIFY row_number() OVER "
            "(PARTITION BY id1, id2, id4 ORDER BY rowid) = 1",
        }
        out["duckdb"] = {k: (lambda sql=sql: con.sql(sql).to_arrow_table()) for k, sql in q.items()}
    except ImportError:
        pass
    try:
        import pandas as pd  # noqa: F401

        pdf = t.to_pandas()
        out["pandas"] = {
            "sort [id3, v3 desc]": lambda: pdf.sort_values(
                ["id3", "v3"], ascending=[True, False], kind="stable"
            ),
            "sort [id6]": lambda: pdf.sort_values("id6", kind="stable"),
            "dedup [id1, id2, id4]": lambda: pdf.drop_duplicates(["id1", "id2", "id4"]),
        }
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=float, default=1e6)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    n = int(args.rows)
    t = pq.read_table(groupby_path(n))
    print(f"G1 table: {n:,} rows, {fb.get_num_threads()} threads, median of {args.reps}")
    results: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, int]] = {}
    for engine, ops in engines(t).items():
        for op, fn in ops.items():
            secs, nrows = median_time(fn, args.reps)
            results.setdefault(op, {})[engine] = secs
            rows.setdefault(op, {})[engine] = nrows
    peers = [e for e in ("polars", "duckdb", "pandas") if any(e in r for r in results.values())]
    header = f"{'question':24s} {'ferrobatch':>11s}"
    header += "".join(f" {p:>9s} {'ratio':>6s}" for p in peers)
    print(header)
    for op, per in results.items():
        line = f"{op:24s} {per['ferrobatch']:10.3f}s"
        for p in peers:
            line += f" {per[p]:8.3f}s {per['ferrobatch'] / per[p]:6.2f}"
        print(line)
        if len(set(rows[op].values())) != 1:
            raise SystemExit(f"row counts differ for {op}: {rows[op]}")
    print("ratio = ferrobatch time / peer time (below 1: ferrobatch is faster)")


if __name__ == "__main__":
    main()
