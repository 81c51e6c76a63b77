"""Out-of-core group-by: a pipeline aggregates a Parquet dataset several times larger than the
memory the run adds to the process.

    python benches/stream_groupby.py --rows 50_000_000 --dir /tmp/fb-stream

Generates (once) `--files` Parquet files of db-benchmark-like columns, then runs
``fb.scan(dir).group_by(["id1", "id4"], {...})`` and prints the data size (decoded Arrow
bytes of the columns read, and bytes on disk), the process's resident memory before the run,
its peak during the run, and the ratio data / peak increase. The answer is checked against
DuckDB on the same files when DuckDB is installed.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import ferrobatch as fb
from ferrobatch.pipeline import _peak_rss_mb, _reset_peak_rss


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def generate(folder: str, rows: int, files: int) -> None:
    os.makedirs(folder, exist_ok=True)
    per = rows // files
    rng = np.random.default_rng(42)
    ids = pa.array([f"id{i:03d}" for i in range(1, 101)])
    for f in range(files):
        path = os.path.join(folder, f"part-{f:04d}.parquet")
        if os.path.exists(path):
            continue
        t = pa.table({
            "id1": ids.take(pa.array(rng.integers(0, 100, per))),
            "id4": rng.integers(1, 101, per),
            "v1": rng.integers(1, 6, per),
            "v3": rng.random(per) * 100,
        })  # fmt: skip
        pq.write_table(t, path, row_group_size=1 << 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=lambda s: int(float(s)), default=50_000_000)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--dir", default="/tmp/fb-stream")
    ap.add_argument("--batch-size", type=int, default=1 << 17)
    args = ap.parse_args()
    generate(args.dir, args.rows, args.files)
    aggs = {"v1": ("v1", "sum"), "v3": ("v3", "mean"), "sd": ("v3", "std"), "n": (None, "size")}
    p = fb.scan(args.dir, batch_size=args.batch_size).group_by(["id1", "id4"], aggs, sort=True)
    print(p.explain())
    before = rss_mb()
    _reset_peak_rss()
    start = time.perf_counter()
    out = p.collect(progress=True)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    files = [os.path.join(args.dir, f) for f in sorted(os.listdir(args.dir))]
    disk = sum(os.path.getsize(f) for f in files) / 2**20
    meta = [pq.ParquetFile(f).metadata for f in files]
    rows = sum(m.num_rows for m in meta)
    # Decoded size of the four columns read: 8 bytes per int/float, strings 5 bytes + offset.
    arrow_mb = rows * (8 + 8 + 8 + 9) / 2**20
    increase = max(peak - before, 1.0)
    print(p.last_report)
    print(
        f"\n{rows:,} rows in {len(files)} files: {arrow_mb:,.0f} MB as Arrow, {disk:,.0f} MB on "
        f"disk; {out.num_rows} groups in {seconds:.1f} s. RSS before {before:,.0f} MB, peak "
        f"{peak:,.0f} MB: increase {increase:,.0f} MB; data / increase = {arrow_mb / increase:.1f}x"
    )
    try:
        import duckdb
    except ImportError:
        return
    want = duckdb.sql(
        f"SELECT id1, id4, sum(v1) v1, count(*) n FROM read_parquet('{args.dir}/*.parquet') "
        "GROUP BY id1, id4 ORDER BY id1, id4"
    ).to_arrow_table()
    assert want.column("v1").to_pylist() == out.column("v1").to_pylist()
    assert want.column("n").to_pylist() == out.column("n").to_pylist()
    print("checked against DuckDB: equal")


if __name__ == "__main__":
    main()
