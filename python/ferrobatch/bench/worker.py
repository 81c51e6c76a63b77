"""One benchmark process: one engine, one question. Prints a JSON line with its timings.

Run by the runner (``ferrobatch-bench``) so that every (engine, question) pair has its own
process and its own honest peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import pyarrow.parquet as pq

from ferrobatch.bench.data import groupby_path, join_paths
from ferrobatch.bench.questions import answer_check, prepare, questions


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def run(engine: str, qid: str, rows: int, reps: int, nas: int, sort: int) -> dict:
    q = next(q for q in questions() if q.qid == qid)
    if q.dataset == "tpch":
        from ferrobatch.bench.tpch import tpch_path

        tables = {}
        data = tpch_path(rows)
    elif q.dataset == "groupby":
        tables = {"x": pq.read_table(groupby_path(rows, nas=nas, sort=sort))}
    else:
        tables = {k: pq.read_table(p) for k, p in join_paths(rows, nas=nas, sort=sort).items()}
    if q.dataset != "tpch":
        data = prepare(engine, tables)
    del tables
    fn = q.impls[engine]
    base = _rss_mb()
    answer = fn(data)  # warm-up, also the answer that is cross-checked
    nrows, checksum = answer_check(q, answer)
    del answer
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        answer = fn(data)
        times.append(time.perf_counter() - start)
        del answer
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "engine": engine,
        "question": qid,
        "times": times,
        "rows": nrows,
        "checksum": checksum,
        "peak_rss_mb": peak,
        "data_rss_mb": base,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--question", required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--nas", type=int, default=0)
    ap.add_argument("--sort", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(run(a.engine, a.question, a.rows, a.reps, a.nas, a.sort)))


if __name__ == "__main__":
    main()
