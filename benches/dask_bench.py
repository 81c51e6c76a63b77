"""ferrobatch on Dask against Dask's own group-by and merge, on one LocalCluster.

    python benches/dask_bench.py --rows 1e7 --workers 2 --reps 3

The db-benchmark tables (G1 and J1, generated once into the bench cache as Parquet) are
read into the cluster's memory once (one partition per row group, Arrow-backed dtypes) and
persisted, so both engines start from the same partitions on the same workers. Each
question is then timed as the time to materialize its result on the cluster (``persist``
and wait: the data stays distributed, as in a job that writes its result; each run reads
the persisted input through a fresh no-op task, so no run reuses an earlier one's
results), after one untimed warm-up run, for ``ferrobatch.dask`` and for Dask's
``groupby().agg`` / ``merge`` with the P2P shuffle (``--shuffle tasks``: the other, for
both), alternating engines; answers are cross-checked (row counts and column sums). The same
question is also timed with the single-machine kernel in this process with as many threads
as the cluster has (the overhead of going through Dask). Medians over ``--reps``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pyarrow.parquet as pq
from distributed import Client, LocalCluster, wait

import ferrobatch as fb
import ferrobatch.dask as fbd
from ferrobatch.bench.data import groupby_path, join_paths

IDS = ["id1", "id2", "id3", "id4", "id5", "id6"]

# qid: (keys, ferrobatch aggs, Dask agg spec, split_out)
GROUPBY: dict[str, tuple[list[str], dict, dict, int | None]] = {
    "q1": (["id1"], {"v1": ("v1", "sum")}, {"v1": "sum"}, None),
    "q2": (["id1", "id2"], {"v1": ("v1", "sum")}, {"v1": "sum"}, None),
    "q3": (["id3"], {"v1": ("v1", "sum"), "v3": ("v3", "mean")}, {"v1": "sum", "v3": "mean"},
           None),
    "q4": (["id4"], {c: (c, "mean") for c in ("v1", "v2", "v3")},
           {c: "mean" for c in ("v1", "v2", "v3")}, None),
    "q5": (["id6"], {c: (c, "sum") for c in ("v1", "v2", "v3")},
           {c: "sum" for c in ("v1", "v2", "v3")}, None),
    "q10": (IDS, {"v3": ("v3", "sum"), "count": ("v1", "size")}, {"v3": "sum", "v1": "size"},
            -1),  # -1: as many output partitions as input ones
}  # fmt: skip

# qid: (right table, key, how)
JOINS = {
    "j1": ("small", "id1", "inner"),
    "j2": ("medium", "id2", "inner"),
    "j3": ("medium", "id2", "left"),
    "j4": ("medium", "id5", "inner"),
    "j5": ("big", "id3", "inner"),
}


def _materialized(client: Client, ddf: dd.DataFrame) -> dd.DataFrame:
    out = client.persist(ddf)
    wait(out)
    return out


def _same_frame(df: Any, run: int) -> Any:
    return df


def _fresh(ddf: dd.DataFrame, run: int) -> dd.DataFrame:
    """`ddf` behind a no-op task whose key depends on `run`: nothing downstream is cached."""
    return ddf.map_partitions(_same_frame, run, meta=ddf._meta)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _check_ddf(ddf: dd.DataFrame, cols: list[str]) -> tuple:
    """Rows and column sums of a distributed result."""
    sums = ddf[cols].astype("float64").sum().compute()
    return len(ddf), tuple(float(sums[c]) for c in cols)


def _check_table(t: Any, cols: list[str]) -> tuple:
    return t.num_rows, tuple(float(np.nansum(t[c].to_numpy(zero_copy_only=False))) for c in cols)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and all(
        np.isclose(x, y, rtol=1e-9, atol=1e-6) for x, y in zip(a[1], b[1], strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per worker")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--questions", default=",".join([*GROUPBY, *JOINS]))
    ap.add_argument("--shuffle", default="p2p", choices=["p2p", "tasks"],
                    help="Dask's shuffle method, for both engines")  # fmt: skip
    args = ap.parse_args(argv)
    n = int(args.rows)
    wanted = args.questions.split(",")
    cores = args.workers * args.threads
    fb.set_num_threads(cores)
    rows: list[tuple] = []
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
        dask.config.set({"dataframe.shuffle.method": args.shuffle}),
    ):  # fmt: skip
        fbd.setup(client)

        def load(path: Any) -> dd.DataFrame:
            return _materialized(
                client, dd.read_parquet(str(path), split_row_groups=True, dtype_backend="pyarrow")
            )

        if any(q in GROUPBY for q in wanted):
            path = groupby_path(n)
            table = pq.read_table(path)
            x = load(path)
            print(f"G1 {n:,} rows, {x.npartitions} partitions, {args.workers} workers x "
                  f"{args.threads} thread(s), {args.shuffle} shuffle", flush=True)  # fmt: skip
            for qid in [q for q in GROUPBY if q in wanted]:
                keys, aggs, dspec, split = GROUPBY[qid]
                split = x.npartitions if split == -1 else split
                ours, theirs, single = _groupby_runs(client, x, table, keys, aggs, dspec, split)
                rows.append(_measure(qid, ours, theirs, single, list(aggs), args.reps))
            del table, x
        if any(q in JOINS for q in wanted):
            paths = join_paths(n)
            tables = {k: pq.read_table(p) for k, p in paths.items()}
            frames = {k: load(p) for k, p in paths.items()}
            print(f"J1 {n:,} rows; x {frames['x'].npartitions} partitions, big "
                  f"{frames['big'].npartitions}", flush=True)  # fmt: skip
            for qid in [q for q in JOINS if q in wanted]:
                right, key, how = JOINS[qid]
                runs = _join_runs(client, frames, tables, right, key, how)
                rows.append(_measure(qid, *runs, ["v1", "v2"], args.reps))
    print()
    print("| q | ferrobatch.dask s | dask s | dask / fb | fb single-process s | "
          "fb.dask / single | answers |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for qid, ours, theirs, single, ok in rows:
        print(f"| {qid} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f} | {single:.2f} | "
              f"{ours / single:.2f} | {ok} |")  # fmt: skip
    ratios = [t / o for _, o, t, _, _ in rows]
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"\ngeomean dask / ferrobatch.dask: {geo:.2f}")
    return 0 if all(r[4] == "same" for r in rows) else 1


def _groupby_runs(
    client: Client, x: dd.DataFrame, table: Any, keys: list[str], aggs: dict, dspec: dict,
    split: int | None,
) -> tuple[Callable[[int], Any], ...]:  # fmt: skip
    def ours(run: int) -> dd.DataFrame:
        return _materialized(client, fbd.group_by(_fresh(x, run), keys, aggs, split_out=split))

    def theirs(run: int) -> dd.DataFrame:
        g = _fresh(x, run).groupby(keys, dropna=False, sort=False, observed=True)
        out = g.agg(dspec, split_out=split or 1).reset_index()
        if dspec.get("v1") == "size":
            out = out.rename(columns={"v1": "count"})
        return _materialized(client, out)

    def single(run: int) -> Any:
        return fb.group_by(table, keys, aggs)

    return ours, theirs, single


def _join_runs(
    client: Client, frames: dict, tables: dict, right: str, key: str, how: str
) -> tuple[Callable[[int], Any], ...]:
    def ours(run: int) -> dd.DataFrame:
        lr, rr = _fresh(frames["x"], run), _fresh(frames[right], run)
        return _materialized(client, fbd.join(lr, rr, key, how=how))

    def theirs(run: int) -> dd.DataFrame:
        lr, rr = _fresh(frames["x"], run), _fresh(frames[right], run)
        out = lr.merge(rr, on=key, how=how, suffixes=("", "_right"))
        return _materialized(client, out)

    def single(run: int) -> Any:
        return fb.join(tables["x"], tables[right], key, how=how)

    return ours, theirs, single


def _measure(
    qid: str,
    ours: Callable[[int], dd.DataFrame],
    theirs: Callable[[int], dd.DataFrame],
    single: Callable[[int], Any],
    cols: list[str],
    reps: int,
) -> tuple:
    times: dict[str, list[float]] = {"ours": [], "theirs": [], "single": []}
    last: dict[str, Any] = {}
    for run in range(reps + 1):  # run 0: warm-up
        for name, fn in (("ours", ours), ("theirs", theirs), ("single", single)):
            last[name] = None  # release the previous run's result first
            t, out = _timed(functools.partial(fn, run))
            if run:
                times[name].append(t)
            last[name] = out
    a = _check_ddf(last["ours"], cols)
    b = _check_ddf(last["theirs"], cols)
    c = _check_table(last["single"], cols)
    ok = "same" if _same(a, b) and _same(a, c) else f"DIFFER {a} {b} {c}"
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{qid}: ferrobatch.dask {med['ours']:.2f} s, dask {med['theirs']:.2f} s, "
          f"single-process {med['single']:.2f} s; {ok}", flush=True)  # fmt: skip
    return qid, med["ours"], med["theirs"], med["single"], ok


if __name__ == "__main__":
    raise SystemExit(main())
