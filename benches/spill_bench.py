"""Sort, group-by and join under a memory budget (issue 17).

Each measurement runs in its own process: ferrobatch's pipeline from the Parquet files to a
Parquet file, in memory and under ``memory_limit``, and DuckDB with the same memory limit,
threads and files (``COPY (query) TO file``). Reported per question: wall seconds, peak
resident memory above the process's baseline (its RSS after imports, before the run), the
bytes ferrobatch spilled, and the ratios: spilled / in memory, ferrobatch / DuckDB.

    python benches/spill_bench.py --rows 1e7 --budget 100MiB --threads 2

Data: db-benchmark G1 (sort, group-by) and J1 (join j5, x and big) at ``--rows``, generated
once into the benchmark cache (``python -m ferrobatch.bench`` uses the same files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

QUESTIONS = {
    "s1": ("sort", "sort 9 cols by [id3, v3 desc]"),
    "s2": ("sort", "sort 9 cols by id6"),
    "s3": ("sort", "sort 9 cols by [id1, id2, id4]"),
    "q3": ("group_by", "sum v1 mean v3 by id3"),
    "q5": ("group_by", "sum v1:v3 by id6"),
    "q10": ("group_by", "sum v3 count by id1:id6"),
    "j5": ("join", "x inner join big on id3"),
}

IDS = ["id1", "id2", "id3", "id4", "id5", "id6"]


def _status(field: str) -> float:
    """A /proc/self/status memory field in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _ferro(qid: str, paths: dict[str, str], out: str, budget: int | None) -> dict:
    import ferrobatch as fb

    g = fb.scan(paths["groupby"])
    p = {
        "s1": lambda: g.sort(["id3", "v3"], descending=[False, True]),
        "s2": lambda: g.sort("id6"),
        "s3": lambda: g.sort(["id1", "id2", "id4"]),
        "q3": lambda: g.group_by("id3", {"v1": ("v1", "sum"), "v3": ("v3", "mean")}),
        "q5": lambda: g.group_by("id6", {c: (c, "sum") for c in ("v1", "v2", "v3")}),
        "q10": lambda: g.group_by(IDS, {"v3": ("v3", "sum"), "count": (None, "size")}),
        "j5": lambda: fb.scan(paths["x"]).join(fb.scan(paths["big"]), on="id3"),
    }[qid]()
    report = p.write_parquet(out, overwrite=True, memory_limit=budget)
    spilled = sum(s.spilled_bytes for s in report.stages)
    return {"spilled_mb": spilled / 2**20}


def _duck(qid: str, paths: dict[str, str], out: str, budget: int, threads: int, tmp: str) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit='{budget // 2**20}MiB'")
    con.execute(f"SET threads={threads}")
    con.execute(f"SET temp_directory='{tmp}'")
    con.execute("SET preserve_insertion_order=true")
    g = f"read_parquet('{paths['groupby']}')"
    ids = ", ".join(IDS)
    sql = {
        "s1": f"SELECT * FROM {g} ORDER BY id3, v3 DESC",
        "s2": f"SELECT * FROM {g} ORDER BY id6",
        "s3": f"SELECT * FROM {g} ORDER BY id1, id2, id4",
        "q3": f"SELECT id3, sum(v1) AS v1, avg(v3) AS v3 FROM {g} GROUP BY id3",
        "q5": f"SELECT id6, sum(v1) AS v1, sum(v2) AS v2, sum(v3) AS v3 FROM {g} GROUP BY id6",
        "q10": f"SELECT {ids}, sum(v3) AS v3, count(*) AS count FROM {g} GROUP BY {ids}",
        "j5": (
            f"SELECT * FROM read_parquet('{paths['x']}') x "
            f"JOIN read_parquet('{paths['big']}') big USING (id3)"
        ),
    }[qid]
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
    return {}


def child(args: argparse.Namespace) -> None:
    """One measurement: prints a JSON line."""
    paths = json.loads(args.paths)
    budget = args.budget_bytes
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        out = os.path.join(tmp, "out.parquet")
        if args.engine == "duckdb":
            import duckdb  # noqa: F401  (imported before the baseline)
        else:
            import ferrobatch as fb

            fb.set_num_threads(args.threads)
            fb.set_temp_directory(tmp)
        base = _status("VmRSS")
        t = time.perf_counter()
        if args.engine == "duckdb":
            extra = _duck(args.qid, paths, out, budget, args.threads, tmp)
        else:
            extra = _ferro(args.qid, paths, out, budget if args.engine == "fb-budget" else None)
        seconds = time.perf_counter() - t
        peak = _status("VmHWM")
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(out).metadata.num_rows
    print(json.dumps({"seconds": seconds, "peak_mb": peak - base, "rows": rows, **extra}))


def measure(engine: str, qid: str, paths: dict, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, __file__, "--child", "--engine", engine, "--qid", qid,
        "--paths", json.dumps(paths), "--budget-bytes", str(args.budget_bytes),
        "--threads", str(args.threads), "--tmp", args.tmp,
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines() or ["?"]
        # The exception's own line (DuckDB adds advice lines after it).
        why = next((x for x in reversed(lines) if "Error" in x), lines[-1])
        if "memory" in why.lower():
            why = "failed (out of memory)"
        return {"error": why[:120]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _size(text: str) -> int:
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    t = text.strip().upper()
    for u, m in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * m)
    return int(float(t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1e7")
    ap.add_argument("--budget", default="100MiB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1, help="runs per cell; the median is kept")
    ap.add_argument("--questions", default=",".join(QUESTIONS))
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--qid", help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    ap.add_argument("--budget-bytes", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    args.budget_bytes = _size(args.budget)
    from ferrobatch.bench.data import groupby_path, join_paths

    n = int(float(args.rows))
    paths = {"groupby": str(groupby_path(n))}
    paths |= {k: str(v) for k, v in join_paths(n).items() if k in ("x", "big")}
    budget_mb = args.budget_bytes / 2**20
    bound = 1.25 * budget_mb + 64
    # The children import the same package: say which (a stale installed copy measures
    # other code than the working tree).
    where = os.path.dirname(sys.modules["ferrobatch"].__file__ or "?")
    print(
        f"rows={n:.0e} budget={budget_mb:.0f} MiB threads={args.threads} reps={args.reps}; "
        f"peak RSS above baseline must be <= 1.25 x budget + 64 MiB = {bound:.0f} MiB; "
        f"ferrobatch from {where}\n"
    )
    head = (
        "| q | fb in memory s | fb budget s | **spilled / in memory** | spilled MiB | "
        "fb peak MiB | DuckDB s | DuckDB peak MiB | **fb / DuckDB** |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for qid in args.questions.split(","):
        cells: dict[str, dict] = {}
        for engine in ("fb-memory", "fb-budget", "duckdb"):
            runs = [measure(engine, qid, paths, args) for _ in range(args.reps)]
            ok = [r for r in runs if "error" in r] or sorted(runs, key=lambda r: r["seconds"])
            cells[engine] = ok[len(ok) // 2]
        m, b, d = cells["fb-memory"], cells["fb-budget"], cells["duckdb"]

        def secs(c: dict) -> str:
            return c["error"] if "error" in c else f"{c['seconds']:.2f}"

        def ratio(a: dict, c: dict) -> str:
            return "-" if "error" in a or "error" in c else f"{a['seconds'] / c['seconds']:.2f}"

        def peak(c: dict) -> str:
            return "-" if "error" in c else f"{c['peak_mb']:.0f}"

        over = " (over)" if "error" not in b and b["peak_mb"] > bound else ""
        rows = {c.get("rows") for c in (m, b, d) if "rows" in c}
        check = "" if len(rows) <= 1 else f" rows differ: {sorted(rows)}"
        print(f"| {qid} | {secs(m)} | {secs(b)} | {ratio(b, m)} | "
              f"{b.get('spilled_mb', 0):.0f} | {peak(b)}{over} | {secs(d)} | {peak(d)} | "
              f"{ratio(b, d)} |{check}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
