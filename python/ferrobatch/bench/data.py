"""db-benchmark data generators, ported from the R scripts of the H2O.ai / DuckDB Labs
db-benchmark (``groupby-datagen.R``, ``join-datagen.R``), vectorized with numpy and written
once as Parquet into a cache directory (``$FERROBATCH_DATA`` or ``~/.cache/ferrobatch``).

``G1_<N>_<K>_<nas>_<sort>``: id1/id2 ``"id%03d"`` strings with K values, id3 ``"id%010d"``
with N/K values, id4/id5 ints 1..K, id6 ints 1..N/K, v1 ints 1-5, v2 ints 1-15, v3 uniform
0-100 rounded to 6 digits. As in the R script, ``nas`` percent of the *distinct values* of each
id column become missing (every row holding them), and ``nas`` percent of the *rows* of each v
column; ``sort=1`` orders the rows by id1..id6.

``J1_<N>_NA_<nas>_<sort>`` and its right tables ``J1_<N>_<N/1e6 | N/1e3 | N>_<nas>_<sort>``
(small / medium / big): keys are drawn from a 0.9 shared / 0.1 left-only / 0.1 right-only
split of 1.1·n integers for each of three key sizes (N/1e6, N/1e3, N); id4-id6 are the
``"id%d"`` text of id1-id3; v1 / v2 uniform 0-100 rounded to 6 digits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ID_COLS = ["id1", "id2", "id3", "id4", "id5", "id6"]
#: Bumped whenever the generated data changes, so stale cached files are never reused.
GENERATOR_VERSION = 2


def cache_dir() -> Path:
    root = Path(os.environ.get("FERROBATCH_DATA", Path.home() / ".cache" / "ferrobatch"))
    d = root / f"v{GENERATOR_VERSION}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def fmt_n(n: int) -> str:
    """db-benchmark's size labels: 1e7, 1e2, ... (plain digits when not a power of ten)."""
    if n > 0:
        e = int(round(np.log10(n)))
        if 10**e == n:
            return f"1e{e}"
    return str(n)


def groupby_name(n: int, k: int = 100, nas: int = 0, sort: int = 0) -> str:
    return f"G1_{fmt_n(n)}_{fmt_n(k)}_{nas}_{sort}"


def _labels(fmt: str, values: np.ndarray) -> pa.Array:
    return pa.array([fmt % v for v in values.tolist()], pa.string())


def _take(labels: pa.Array, idx: np.ndarray) -> pa.Array:
    return pc.take(labels, pa.array(idx))


def _ids_with_nas(rng: np.random.Generator, codes: np.ndarray, card: int, nas: int) -> np.ndarray:
    """Mask of rows whose value is among the ``nas`` percent of distinct values made missing."""
    present = np.unique(codes)
    nna = int(len(present) * nas / 100)
    if nna == 0:
        return np.zeros(len(codes), bool)
    gone = np.zeros(card, bool)
    gone[rng.choice(present, nna, replace=False)] = True
    return gone[codes]


def _rows_with_nas(rng: np.random.Generator, n: int, nas: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    nna = int(n * nas / 100)
    if nna:
        mask[rng.choice(n, nna, replace=False)] = True
    return mask


def _masked(arr: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return arr
    return pc.if_else(pa.array(mask), pa.nulls(len(arr), arr.type), arr)


def make_groupby(n: int, k: int = 100, nas: int = 0, sort: int = 0, seed: int = 108) -> pa.Table:
    """The G1 group-by table, in memory."""
    rng = np.random.default_rng(seed)
    nk = max(n // k, 1)
    codes = {
        "id1": rng.integers(0, k, n),
        "id2": rng.integers(0, k, n),
        "id3": rng.integers(0, nk, n),
        "id4": rng.integers(0, k, n),
        "id5": rng.integers(0, k, n),
        "id6": rng.integers(0, nk, n),
    }
    cards = {"id1": k, "id2": k, "id3": nk, "id4": k, "id5": k, "id6": nk}
    cols: dict[str, pa.Array] = {
        "id1": _take(_labels("id%03d", np.arange(1, k + 1)), codes["id1"]),
        "id2": _take(_labels("id%03d", np.arange(1, k + 1)), codes["id2"]),
        "id3": _take(_labels("id%010d", np.arange(1, nk + 1)), codes["id3"]),
        "id4": pa.array(codes["id4"] + 1),
        "id5": pa.array(codes["id5"] + 1),
        "id6": pa.array(codes["id6"] + 1),
        "v1": pa.array(rng.integers(1, 6, n)),
        "v2": pa.array(rng.integers(1, 16, n)),
        "v3": pa.array(np.round(rng.random(n) * 100.0, 6)),
    }
    if nas > 0:
        for c in ID_COLS:
            cols[c] = _masked(cols[c], _ids_with_nas(rng, codes[c], cards[c], nas))
        for c in ["v1", "v2", "v3"]:
            cols[c] = _masked(cols[c], _rows_with_nas(rng, n, nas))
    table = pa.table(cols)
    if sort:
        table = table.sort_by([(c, "ascending") for c in ID_COLS])
    return table


def _write_once(path: Path, make) -> Path:
    if not path.exists():
        table = make()
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, row_group_size=1 << 20)
        tmp.replace(path)
    return path


def groupby_path(n: int, k: int = 100, nas: int = 0, sort: int = 0) -> Path:
    """Path of the cached G1 Parquet file, generating it on first use."""
    name = groupby_name(n, k, nas, sort)
    return _write_once(cache_dir() / f"{name}.parquet", lambda: make_groupby(n, k, nas, sort))


def join_names(n: int, nas: int = 0, sort: int = 0) -> dict[str, str]:
    """Names of the J1 left table and its small / medium / big right tables."""
    sizes = {"small": max(n // 10**6, 1), "medium": max(n // 10**3, 1), "big": n}
    out = {"x": f"J1_{fmt_n(n)}_NA_{nas}_{sort}"}
    for label, size in sizes.items():
        out[label] = f"J1_{fmt_n(n)}_{fmt_n(size)}_{nas}_{sort}"
    return out


def _split_xlr(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0.9 n shared keys, 0.1 n left-only, 0.1 n right-only, from a permutation of 1..1.1n
    (at least one shared key, so that tiny sizes still join)."""
    nx, nl = max(round(n * 0.9), 1), round(n * 0.1)
    key = rng.permutation(nx + 2 * nl) + 1
    return key[:nx], key[nx : nx + nl], key[nx + nl :]


def _sample_all(rng: np.random.Generator, x: np.ndarray, size: int) -> np.ndarray:
    """Every value of ``x`` at least once, topped up by sampling, shuffled (R's sample_all)."""
    extra = rng.choice(x, max(size - len(x), 0), replace=True) if len(x) else x
    return rng.permutation(np.concatenate([x, extra]))[:size]


def make_join(n: int, nas: int = 0, sort: int = 0, seed: int = 108) -> dict[str, pa.Table]:
    """The J1 left table ``x`` and right tables ``small`` / ``medium`` / ``big``, in memory."""
    rng = np.random.default_rng(seed)
    n1, n2, n3 = max(n // 10**6, 1), max(n // 10**3, 1), n
    k1, k2, k3 = _split_xlr(rng, n1), _split_xlr(rng, n2), _split_xlr(rng, n3)

    def text(a: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise("id", pc.cast(pa.array(a), pa.string()), "")

    def value(size: int) -> pa.Array:
        return pa.array(np.round(rng.random(size) * 100.0, 6))

    def finish(cols: dict[str, pa.Array]) -> pa.Table:
        size = len(next(iter(cols.values())))
        if nas > 0:
            for c in list(cols):
                if c.startswith("v"):
                    cols[c] = _masked(cols[c], _rows_with_nas(rng, size, nas))
        t = pa.table(cols)
        if sort:
            t = t.sort_by([(c, "ascending") for c in cols if c.startswith("id")])
        return t

    ids = [
        _sample_all(rng, np.concatenate([k1[0], k1[1]]), n),
        _sample_all(rng, np.concatenate([k2[0], k2[1]]), n),
        _sample_all(rng, np.concatenate([k3[0], k3[1]]), n),
    ]
    x = {f"id{i + 1}": pa.array(a) for i, a in enumerate(ids)}
    x |= {f"id{i + 4}": text(a) for i, a in enumerate(ids)}
    x["v1"] = value(n)
    small_id1 = rng.permutation(np.concatenate([k1[0], k1[2]]))
    small = {"id1": pa.array(small_id1), "id4": text(small_id1), "v2": value(len(small_id1))}
    med_id1 = _sample_all(rng, np.concatenate([k1[0], k1[2]]), n2)
    med_id2 = rng.permutation(np.concatenate([k2[0], k2[2]]))
    medium = {
        "id1": pa.array(med_id1),
        "id2": pa.array(med_id2),
        "id4": text(med_id1),
        "id5": text(med_id2),
        "v2": value(n2),
    }
    big_ids = [
        _sample_all(rng, np.concatenate([k1[0], k1[2]]), n3),
        _sample_all(rng, np.concatenate([k2[0], k2[2]]), n3),
        rng.permutation(np.concatenate([k3[0], k3[2]])),
    ]
    big = {f"id{i + 1}": pa.array(a) for i, a in enumerate(big_ids)}
    big |= {f"id{i + 4}": text(a) for i, a in enumerate(big_ids)}
    big["v2"] = value(n3)
    return {"x": finish(x), "small": finish(small), "medium": finish(medium), "big": finish(big)}


def join_paths(n: int, nas: int = 0, sort: int = 0) -> dict[str, Path]:
    """Paths of the cached J1 Parquet files (x, small, medium, big), generating them once."""
    names = join_names(n, nas, sort)
    paths = {label: cache_dir() / f"{name}.parquet" for label, name in names.items()}
    if not all(p.exists() for p in paths.values()):
        tables = make_join(n, nas, sort)
        for label, path in paths.items():
            _write_once(path, lambda label=label: tables[label])
    return paths
