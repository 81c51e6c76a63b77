"""``ferrobatch-bench``: throughput of ferrobatch against Polars, DuckDB and pandas on the
db-benchmark data, in one run, on the same data.

Protocol: the data is generated once (seeded) and cached as Parquet; every (engine, question)
runs in its own process (so its peak RSS is honest); loading is not timed; each question runs
once as warm-up, then ``--reps`` times; the figure is the median. Answers are cross-checked
across engines (row count and checksum): a mismatch is printed loudly and the exit status is 1.
Writes a JSON file with every timing, machine info and library versions, and a PNG chart of
the ratios ferrobatch / peer per question.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ferrobatch.bench.data import groupby_name, groupby_path, join_names, join_paths
from ferrobatch.bench.questions import ENGINES, SUITES, questions

PEERS = [e for e in ENGINES if e != "ferrobatch"]
PACKAGES = {
    "ferrobatch": "ferrobatch",
    "polars": "polars",
    "duckdb": "duckdb",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
}


def available(engine: str) -> bool:
    return importlib.util.find_spec(PACKAGES[engine]) is not None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ["ferrobatch", "pyarrow", "numpy", "polars", "duckdb", "pandas"]:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import ferrobatch as fb

    info["ferrobatch_threads"] = fb.get_num_threads()
    return info


def parse_rows(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"--rows must be a positive whole number, got {text}")
    return int(value)


def run_one(engine: str, qid: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "ferrobatch.bench.worker", "--engine", engine, "--question", qid,
        "--rows", str(args.rows), "--reps", str(args.reps), "--nas", str(args.nas),
        "--sort", str(args.sort),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"engine": engine, "question": qid, "error": proc.stderr.strip()[-1500:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["median"] = statistics.median(result["times"])
    return result


def cross_check(results: list[dict[str, Any]]) -> list[str]:
    """Questions whose engines disagree on the answer."""
    problems = []
    by_q: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "error" not in r:
            by_q.setdefault(r["question"], []).append(r)
    for qid, rs in by_q.items():
        answers = {(r["rows"], r["checksum"]) for r in rs}
        if len(answers) > 1:
            detail = "; ".join(
                f"{r['engine']}: rows={r['rows']} checksum={r['checksum']}" for r in rs
            )
            problems.append(f"{qid}: engines disagree -- {detail}")
    return problems


def render_table(results: list[dict[str, Any]], engines: list[str]) -> str:
    titles = {q.qid: q.title for q in questions()}
    peers = [e for e in engines if e != "ferrobatch"]
    get = {(r["engine"], r["question"]): r for r in results}
    head = f"{'question':36s} {'ferrobatch':>10s}"
    head += "".join(f" {p:>9s} {'ratio':>6s}" for p in peers)
    head += f"  {'peak RSS MB (' + ', '.join(e[:2] for e in engines) + ')'}"
    lines = [head, "-" * len(head)]
    ratios: dict[str, list[float]] = {p: [] for p in peers}
    for qid in dict.fromkeys(r["question"] for r in results):
        ours = get.get(("ferrobatch", qid), {})
        line = f"{qid + ' ' + titles[qid]:36s} {_secs(ours):>10s}"
        for p in peers:
            r = get.get((p, qid), {})
            ratio = ours["median"] / r["median"] if "median" in ours and "median" in r else None
            shown = f"{ratio:.2f}" if ratio else "-"
            if ratio and qid.startswith("tpch-q"):
                ratios[p].append(ratio)
            line += f" {_secs(r):>9s} {shown:>6s}"
        peaks = [get.get((e, qid), {}).get("peak_rss_mb") for e in engines]
        line += "  " + " / ".join(f"{p:.0f}" if p else "-" for p in peaks)
        lines.append(line)
    for p, rs in ratios.items():
        if rs:
            geo = math.exp(sum(math.log(r) for r in rs) / len(rs))
            lines.append(f"TPC-H geometric mean of the ratios against {p}: {geo:.2f} "
                         f"({len(rs)} queries)")  # fmt: skip
    lines.append("ratio = ferrobatch median / peer median (below 1: ferrobatch is faster)")
    return "\n".join(lines)


def _secs(r: dict[str, Any]) -> str:
    if "median" in r:
        return f"{r['median']:.3f}s"
    return "error" if "error" in r else "-"


def plot(results: list[dict[str, Any]], engines: list[str], path: Path, title: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    get = {(r["engine"], r["question"]): r for r in results if "median" in r}
    qids = [q.qid for q in questions() if ("ferrobatch", q.qid) in get]
    titles = {q.qid: q.title for q in questions()}
    peers = [e for e in engines if e != "ferrobatch"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(qids) + 2), 4.5))
    width = 0.8 / max(len(peers), 1)
    for i, p in enumerate(peers):
        xs, ys = [], []
        for j, q in enumerate(qids):
            if (p, q) in get:
                xs.append(j + (i - (len(peers) - 1) / 2) * width)
                ys.append(get[("ferrobatch", q)]["median"] / get[(p, q)]["median"])
        bars = ax.bar(xs, ys, width, label=f"vs {p}")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    plain = matplotlib.ticker.FormatStrFormatter("%.2g")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_ylabel("ferrobatch time / peer time (log; < 1 = ferrobatch faster)")
    ax.set_xticks(range(len(qids)), [f"{q}\n{titles[q]}" for q in qids], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ferrobatch-bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--rows", type=parse_rows, default=10**6, help="table rows (default 1e6)")
    ap.add_argument("--suite", default=",".join(SUITES), help=f"comma list of {SUITES}")
    ap.add_argument("--engines", default=None, help="comma list (default: all installed)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs after one warm-up")
    ap.add_argument("--nas", type=int, default=0, help="percent of missing values in the data")
    ap.add_argument("--sort", type=int, choices=[0, 1], default=0, help="1: data sorted by keys")
    ap.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory")
    args = ap.parse_args(argv)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        ap.error(f"unknown suite(s) {unknown}; the kernels support {SUITES} today")
    engines = args.engines.split(",") if args.engines else [e for e in ENGINES if available(e)]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        ap.error(f"unknown engine(s) {bad}; choose from {ENGINES}")
    if "ferrobatch" not in engines:
        engines.insert(0, "ferrobatch")
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    qs = [q for q in questions() if q.suite in suites]

    from tqdm import tqdm

    names = []
    if any(q.dataset == "groupby" for q in qs):
        names.append(groupby_name(args.rows, nas=args.nas, sort=args.sort))
    if any(q.dataset == "join" for q in qs):
        names.append(join_names(args.rows, nas=args.nas, sort=args.sort)["x"])
    if any(q.dataset == "tpch" for q in qs):
        from ferrobatch.bench.tpch import scale_of

        names.append(f"TPCH_SF{scale_of(args.rows):g}")
    name = "+".join(names)
    print(f"preparing data ({name}) ...", flush=True)
    if any(q.dataset == "groupby" for q in qs):
        groupby_path(args.rows, nas=args.nas, sort=args.sort)
    if any(q.dataset == "join" for q in qs):
        join_paths(args.rows, nas=args.nas, sort=args.sort)
    if any(q.dataset == "tpch" for q in qs):
        from ferrobatch.bench.tpch import tpch_path

        tpch_path(args.rows)
    jobs = [(q.qid, e) for q in qs for e in engines if e in q.impls]
    results = []
    started = time.time()
    with tqdm(jobs, desc="benchmark", unit="job", file=sys.stderr) as bar:
        for qid, engine in bar:
            bar.set_postfix_str(f"{qid} {engine}")
            results.append(run_one(engine, qid, args))
    errors = [r for r in results if "error" in r]
    print()
    print(render_table(results, engines))
    for r in errors:
        print(f"\n!! {r['engine']} failed on {r['question']}:\n{r['error']}")
    problems = cross_check(results)
    for p in problems:
        print(f"\n!!!! ANSWER MISMATCH {p}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"ferrobatch-bench-{name}"
    report = {
        "rows": args.rows,
        "nas": args.nas,
        "sort": args.sort,
        "reps": args.reps,
        "suites": suites,
        "engines": engines,
        "machine": machine(),
        "versions": versions(),
        "wall_seconds": round(time.time() - started, 1),
        "results": results,
        "mismatches": problems,
    }
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2))
    png_path = args.out / f"{stem}.png"
    title = f"ferrobatch vs peers, {name}, median of {args.reps}"
    plot(results, engines, png_path, title)
    print(f"\nwrote {json_path} and {png_path}")
    return 1 if problems or errors else 0


if __name__ == "__main__":
    sys.exit(main())
