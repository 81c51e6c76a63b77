"""db-benchmark data generators, ported from the R scripts of the H2O.ai / DuckDB Labs
db-benchmark (``groupby-datagen.R``), vectorized with numpy and written once as Parquet.

``G1_<N>_<K>_<nas>_<sort>``: id1/id2 ``"id%03d"`` strings with K values, id3 ``"id%010d"``
with N/K values, id4/id5 ints 1..K, id6 ints 1..N/K, v1 ints 1-5, v2 ints 1-15, v3 uniform
0-100 rounded to 6 digits; ``nas`` percent of each column missing; ``sort=1`` sorts by id1..id6.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def cache_dir() -> Path:
    d = Path(os.environ.get("FERROBATCH_DATA", Path.home() / ".cache" / "ferrobatch"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _fmt_n(n: int) -> str:
    e = int(round(np.log10(n)))
    return f"1e{e}" if 10**e == n else str(n)


def groupby_name(n: int, k: int = 100, nas: int = 0, sort: int = 0) -> str:
    return f"G1_{_fmt_n(n)}_{_fmt_n(k)}_{nas}_{sort}"


def _labels(fmt: str, count: int) -> pa.Array:
    return pa.array([fmt % i for i in range(1, count + 1)], pa.string())


def _sample_str(rng: np.random.Generator, labels: pa.Array, n: int) -> pa.Array:
    idx = rng.integers(0, len(labels), n, dtype=np.int32)
    return pc.take(labels, pa.array(idx))


def _with_nas(rng: np.random.Generator, arr: pa.Array, nas: int) -> pa.Array:
    if nas <= 0:
        return arr
    mask = rng.random(len(arr)) < nas / 100.0
    return pc.if_else(pa.array(mask), pa.nulls(len(arr), arr.type), arr)


def make_groupby(n: int, k: int = 100, nas: int = 0, sort: int = 0, seed: int = 108) -> pa.Table:
    """Generate the G1 group-by table in memory."""
    rng = np.random.default_rng(seed)
    nk = max(n // k, 1)
    cols = {
        "id1": _sample_str(rng, _labels("id%03d", k), n),
        "id2": _sample_str(rng, _labels("id%03d", k), n),
        "id3": _sample_str(rng, _labels("id%010d", nk), n),
        "id4": pa.array(rng.integers(1, k + 1, n, dtype=np.int64)),
        "id5": pa.array(rng.integers(1, k + 1, n, dtype=np.int64)),
        "id6": pa.array(rng.integers(1, nk + 1, n, dtype=np.int64)),
        "v1": pa.array(rng.integers(1, 6, n, dtype=np.int64)),
        "v2": pa.array(rng.integers(1, 16, n, dtype=np.int64)),
        "v3": pa.array(np.round(rng.random(n) * 100.0, 6)),
    }
    cols = {name: _with_nas(rng, a, nas) for name, a in cols.items()}
    table = pa.table(cols)
    if sort:
        table = table.sort_by(
            [(c, "ascending") for c in ["id1", "id2", "id3", "id4", "id5", "id6"]]
        )
    return table


def groupby_path(n: int, k: int = 100, nas: int = 0, sort: int = 0) -> Path:
    """Path of the cached G1 Parquet file, generating it on first use."""
    path = cache_dir() / f"{groupby_name(n, k, nas, sort)}.parquet"
    if not path.exists():
        table = make_groupby(n, k, nas, sort)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, row_group_size=1 << 20)
        tmp.replace(path)
    return path
