"""Sort / dedup on the db-benchmark G1 table, each (engine, question) in its own process so
that peak memory (RSS) is honest. Prints median seconds of `--reps` runs after one warm-up,
and the peak RSS increase over the loaded data.

    python benches/sort_dedup_engines.py --rows 1e7 --reps 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

QUESTIONS = {
    "a": "sort [id3, v3 desc]",
    "b": "sort [id6]",
    "c": "dedup [id1, id2, id4]",
}
ENGINES = ["ferrobatch", "polars", "duckdb", "pandas"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def child(engine: str, q: str, rows: int, reps: int) -> dict:
    import pyarrow.parquet as pq

    from ferrobatch.bench.data import groupby_path

    t = pq.read_table(groupby_path(rows))
    if engine == "ferrobatch":
        import ferrobatch as fb

        run = {
            "a": lambda: fb.sort(t, ["id3", "v3"], descending=[False, True]),
            "b": lambda: fb.sort(t, "id6"),
            "c": lambda: fb.dedup(t, ["id1", "id2", "id4"]),
        }[q]
    elif engine == "polars":
        import polars as pl

        df = pl.from_arrow(t)
        del t
        run = {
            "a": lambda: df.sort(["id3", "v3"], descending=[False, True], maintain_order=True),
            "b": lambda: df.sort("id6", maintain_order=True),
            "c": lambda: df.unique(["id1", "id2", "id4"], keep="first", maintain_order=True),
        }[q]
    elif engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.register("arrow_t", t)
        con.execute("CREATE TABLE t AS SELECT * FROM arrow_t")
        con.unregister("arrow_t")
        del t
        sql = {
            "a": "SELECT * FROM t ORDER BY id3, v3 DESC",
            "b": "SELECT * FROM t ORDER BY id6",
            "c": "SELECT * FROM t QUALIFY row_number() OVER "
            "(PARTITION BY id1, id2, id4 ORDER BY rowid) = 1",
        }[q]

        def run():
            return con.sql(sql).to_arrow_table()
    else:
        pdf = t.to_pandas()
        del t
        run = {
            "a": lambda: pdf.sort_values(["id3", "v3"], ascending=[True, False], kind="stable"),
            "b": lambda: pdf.sort_values("id6", kind="stable"),
            "c": lambda: pdf.drop_duplicates(["id1", "id2", "id4"]),
        }[q]
    base = _rss_mb()
    out = run()
    nrows = len(out)
    del out
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "median": statistics.median(times),
        "rows": nrows,
        "peak_mb": peak,
        "extra_mb": peak - base,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = int(args.rows)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], rows, args.reps)))
        return
    from ferrobatch.bench.data import groupby_path

    groupby_path(rows)  # generate once, outside the timed children
    engines = args.engines.split(",")
    res: dict[str, dict[str, dict]] = {}
    for q in QUESTIONS:
        for e in engines:
            cmd = [sys.executable, __file__, "--rows", str(rows), "--reps", str(args.reps)]
            out = subprocess.run([*cmd, "--child", e, q], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{e} {q} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            res.setdefault(q, {})[e] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"G1_{rows:.0e} rows, median of {args.reps}; ratio = ferrobatch / peer (<1 faster)")
    print(
        f"{'question':24s} {'engine':>10s} {'median s':>9s} {'ratio':>6s} "
        f"{'peak MB':>8s} {'+MB':>7s}"
    )
    bad = False
    for q, per in res.items():
        ours = per.get("ferrobatch")
        for e, r in per.items():
            ratio = ours["median"] / r["median"] if ours else float("nan")
            print(
                f"{QUESTIONS[q]:24s} {e:>10s} {r['median']:9.3f} {ratio:6.2f} "
                f"{r['peak_mb']:8.0f} {r['extra_mb']:7.0f}"
            )
        if len({r["rows"] for r in per.values()}) != 1:
            bad = True
            counts = {e: r["rows"] for e, r in per.items()}
            print(f"  ROW COUNTS DIFFER for {QUESTIONS[q]}: {counts}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
