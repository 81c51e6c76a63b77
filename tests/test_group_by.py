"""fb.group_by against DuckDB SQL (aggregate values) and a Python oracle of the key rules
(groups, their order), plus the documented edge cases, thread-count independence and every
error path."""

from __future__ import annotations

import decimal
import math
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nasty import I64_MAX, I64_MIN, KEY_TYPES, _array, canonical, reference_sort

import ferrobatch as fb

FLOATS = st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 1.5, -2.25, 1e10, 3.0])
SMALL_INTS = st.integers(-1000, 1000)
TEXTS = st.sampled_from(["", "a", "B", "b", "ä", "日本", "zz", "\U0001f600"])


@st.composite
def grouped(draw: Any, max_rows: int = 40) -> tuple[pa.Table, list[str]]:
    """0-2 key columns of nasty types (nulls included) and value columns `vi` (int64), `vf`
    (float64 with NaN / ±inf / ±0) and `vs` (string), all with nulls; random chunking."""
    n = draw(st.integers(0, max_rows))
    kinds = draw(st.lists(st.sampled_from(sorted(KEY_TYPES)), min_size=0, max_size=2))
    few = draw(st.booleans())  # small value pools: groups with many rows
    cols: dict[str, pa.Array] = {}
    for j, kind in enumerate(kinds):
        typ, values = KEY_TYPES[kind]
        pool = draw(st.lists(values, min_size=1, max_size=2)) if few else None
        choice = st.none() | (st.sampled_from(pool) if pool else values)
        cols[f"k{j}_{kind}"] = _array(draw(st.lists(choice, min_size=n, max_size=n)), typ)
    cols["vi"] = pa.array(
        draw(st.lists(st.none() | SMALL_INTS, min_size=n, max_size=n)), pa.int64()
    )
    cols["vf"] = pa.array(draw(st.lists(st.none() | FLOATS, min_size=n, max_size=n)), pa.float64())
    cols["vs"] = pa.array(draw(st.lists(st.none() | TEXTS, min_size=n, max_size=n)), pa.string())
    cols["row"] = pa.array(range(n), pa.int64())
    table = pa.table(cols)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=3))))
    if cuts and n:
        bounds = [0, *cuts, n]
        table = pa.concat_tables(
            [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        )
    return table, [c for c in cols if c.startswith("k")]


class _Rows:
    """Python values posing as a table for `reference_sort` (no round trip through Arrow,
    which would need a type for every value)."""

    def __init__(self, cols: dict[str, list]) -> None:
        self.cols = cols
        self.num_rows = len(next(iter(cols.values()), []))

    def column(self, name: str) -> Any:
        values = self.cols[name]
        return type("Col", (), {"to_pylist": lambda _self: values})()


def reference_groups(table: pa.Table, keys: list[str], dropna: bool, sort: bool) -> list[list[int]]:
    """The groups (lists of rows) in output order, by the DESIGN.md key rules."""
    cols = [table.column(k).to_pylist() for k in keys]
    groups: dict[tuple, list[int]] = {}
    for i in range(table.num_rows):
        key = tuple(canonical(c[i]) for c in cols)
        if dropna and any(c[i] is None for c in cols):
            continue
        groups.setdefault(key, []).append(i)
    if not keys:
        return [list(range(table.num_rows))]
    out = list(groups.values())
    if sort:
        firsts = _Rows({k: [c[g[0]] for g in out] for k, c in zip(keys, cols, strict=True)})
        order = reference_sort(firsts, keys, [False] * len(keys), [True] * len(keys))  # type: ignore[arg-type]
        out = [out[i] for i in order]
    return out


AGGS = {
    "n": (None, "size"),
    "c": ("vf", "count"),
    "si": ("vi", "sum"),
    "sf": ("vf", "sum"),
    "mi": ("vi", "mean"),
    "mf": ("vf", "mean"),
    "lo": ("vf", "min"),
    "hi": ("vf", "max"),
    "los": ("vs", "min"),
    "his": ("vs", "max"),
    "fs": ("vs", "first"),
    "ls": ("vs", "last"),
    "sd": ("vi", "std"),
    "var": ("vf", "var"),
    "med": ("vf", "median"),
    "q": ("vi", "quantile", 0.3),
    "nu": ("vs", "n_unique"),
    "nuf": ("vf", "n_unique"),
    "top": ("vf", "top_k", 2),
    "r": ("vi", "corr", "vf"),
}

# DuckDB expressions for AGGS, over the rows of one group.
DUCK = {
    "n": "count(*)",
    "c": "count(vf)",
    "si": "sum(vi)",
    "sf": "sum(vf)",
    "mi": "avg(vi)",
    "mf": "avg(vf)",
    "lo": "min(vf)",
    "hi": "max(vf)",
    "los": "min(vs)",
    "his": "max(vs)",
    "fs": "arg_min(vs, row) filter (where vs is not null)",
    "ls": "arg_max(vs, row) filter (where vs is not null)",
    "sd": "stddev_samp(vi)",
    "var": "var_samp(vf)",
    # DESIGN.md: a NaN makes the median NaN (DuckDB ranks NaN as the greatest value).
    "med": "case when bool_or(isnan(vf)) then 'nan'::double else median(vf) end",
    "q": "quantile_cont(vi, 0.3)",
    "nu": "count(distinct vs)",
    "nuf": "count(distinct case when vf = 0 then 0.0 else vf end)",
    "top": "coalesce(max(vf, 2) filter (where vf is not null), []::double[])",
    "r": "case when count(vi + vf) >= 2 then corr(vf, vi) end",
}


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def duckdb_aggregates(table: pa.Table, groups: list[list[int]]) -> list[dict[str, Any]]:
    gid = np.full(table.num_rows, -1, np.int64)
    for g, rows in enumerate(groups):
        gid[rows] = g
    con = duckdb.connect()
    con.register("t", table.append_column("gid", pa.array(gid)))
    sel = ", ".join(f"{expr} as {name}" for name, expr in DUCK.items())
    res = con.sql(
        f"select gid, {sel} from t where gid >= 0 group by gid order by gid"
    ).to_arrow_table()
    by_gid = {r["gid"]: r for r in res.to_pylist()}
    empty = {
        name: (0 if name in ("n", "c", "nu", "nuf") else [] if name == "top" else None)
        for name in DUCK
    }
    return [by_gid.get(g, empty) for g in range(len(groups))]


@given(grouped(), st.booleans(), st.booleans())
def test_matches_duckdb_and_key_rules(
    data: tuple[pa.Table, list[str]], dropna: bool, sort: bool
) -> None:
    table, keys = data
    snapshot = lambda: [[canonical(v) for v in c.to_pylist()] for c in table.columns]  # noqa: E731
    before = snapshot()
    groups = reference_groups(table, keys, dropna, sort)
    out = fb.group_by(table, keys, AGGS, dropna=dropna, sort=sort)
    assert snapshot() == before  # input untouched
    assert out.column_names == [*keys, *AGGS]
    assert out.num_rows == len(groups)
    # Keys: each group's first row.
    for k in keys:
        assert out.schema.field(k).type == table.schema.field(k).type
        want = [table.column(k)[g[0]].as_py() if g else None for g in groups]
        got = out.column(k).to_pylist()
        assert [canonical(v) for v in got] == [canonical(v) for v in want]
    expected = duckdb_aggregates(table, groups)
    for name in AGGS:
        got = out.column(name).to_pylist()
        want = [e[name] for e in expected]
        assert all(close(a, b) for a, b in zip(got, want, strict=True)), (name, got, want)
    types = {f.name: f.type for f in out.schema}
    assert types["si"] == pa.int64() and types["n"] == pa.int64() and types["nu"] == pa.int64()
    assert types["mi"] == pa.float64() and types["q"] == pa.float64() and types["r"] == pa.float64()
    assert types["los"] == pa.string() and types["top"] == pa.list_(pa.float64())


def test_documented_example_and_order() -> None:
    t = pa.table({"k": ["b", "a", "b", None, "a"], "v": [1, 2, 3, 4, None]})
    out = fb.group_by(t, "k", {"s": ("v", "sum"), "n": (None, "size")})
    assert out.to_pydict() == {"k": ["b", "a", None], "s": [4, 2, 4], "n": [2, 2, 1]}
    out = fb.group_by(t, "k", {"s": ("v", "sum")}, sort=True)
    assert out.to_pydict() == {"k": ["a", "b", None], "s": [2, 4, 4]}
    out = fb.group_by(t, "k", {"s": ("v", "sum")}, sort=True, dropna=True)
    assert out.to_pydict() == {"k": ["a", "b"], "s": [2, 4]}


def test_no_keys_gives_one_row_even_when_empty() -> None:
    t = pa.table({"v": pa.array([], pa.int64())})
    aggs = {"n": (None, "size"), "c": ("v", "count"), "s": ("v", "sum"), "m": ("v", "max"),
            "u": ("v", "n_unique"), "t": ("v", "top_k", 3), "sd": ("v", "std")}  # fmt: skip
    out = fb.group_by(t, [], aggs)
    assert out.to_pylist() == [{"n": 0, "c": 0, "s": None, "m": None, "u": 0, "t": [], "sd": None}]
    out = fb.group_by(pa.table({"v": [1, 2, 3]}), [], {"s": ("v", "sum")})
    assert out.to_pydict() == {"s": [6]}
    # With keys, an empty input has no groups, and the output keeps its types.
    out = fb.group_by(
        pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int8())}), "k", aggs
    )
    assert out.num_rows == 0 and out.schema.field("k").type == pa.string()


def test_all_null_group_and_single_values() -> None:
    t = pa.table({"k": [1, 1, 2], "v": pa.array([None, None, 5.0])})
    out = fb.group_by(t, "k", {
        "s": ("v", "sum"), "c": ("v", "count"), "m": ("v", "mean"), "f": ("v", "first"),
        "t": ("v", "top_k", 2), "u": ("v", "n_unique"), "sd": ("v", "std"), "q": ("v", "median"),
    })  # fmt: skip
    assert out.to_pylist() == [
        {"k": 1, "s": None, "c": 0, "m": None, "f": None, "t": [], "u": 0, "sd": None, "q": None},
        {"k": 2, "s": 5.0, "c": 1, "m": 5.0, "f": 5.0, "t": [5.0], "u": 1, "sd": None, "q": 5.0},
    ]


def test_nan_rules() -> None:
    t = pa.table({"k": [1, 1, 1], "v": [1.0, math.nan, -2.0]})
    out = fb.group_by(t, "k", {a: ("v", a) for a in ["sum", "mean", "std", "median", "min", "max"]})
    row = out.to_pylist()[0]
    assert all(math.isnan(row[a]) for a in ["sum", "mean", "std", "median", "max"])
    assert row["min"] == -2.0
    out = fb.group_by(t, "k", {"t": ("v", "top_k", 2), "q": ("v", "quantile", 0.1)})
    top = out.column("t").to_pylist()[0]
    assert math.isnan(top[0]) and top[1] == 1.0 and math.isnan(out.column("q")[0].as_py())


def test_integer_sums_exact_when_partial_sums_overflow_64_bits() -> None:
    """Sums are first taken in 64 bits and taken again in 128 when a step overflows: row
    blocks (one group of 200k rows is summed in parallel blocks) and batches whose own sums
    pass int64 still give the exact total, and the mean of it."""
    n = 100_000
    v = np.concatenate([np.full(n, 2**50), np.full(n, -(2**50)), [7]]).astype(np.int64)
    k = np.zeros(len(v), dtype=np.int64)
    k[::3] = 1  # a second group
    t = pa.table({"k": k, "v": v})
    want = {key: sum(int(x) for x in v[k == key]) for key in (0, 1)}  # Python's exact ints
    count = {key: int((k == key).sum()) for key in (0, 1)}
    aggs = {"s": ("v", "sum"), "m": ("v", "mean")}
    for got in (
        fb.group_by(t, "k", aggs, sort=True),
        fb.scan(t, batch_size=7_000).group_by("k", aggs, sort=True).collect(),
    ):
        assert got.column("k").to_pylist() == [0, 1]
        assert got.column("s").to_pylist() == [want[0], want[1]]
        assert got.column("m").to_pylist() == [want[0] / count[0], want[1] / count[1]]
    # A total past int64 whose wrapped 64-bit sum would look valid: every block's own sum
    # fits, the total overflows only where the blocks' sums are added.
    big = pa.table({"k": np.zeros(2 * n, dtype=np.int64), "v": np.full(2 * n, 2**50)})
    assert 2 * n * 2**50 > 2**63
    with pytest.raises(ValueError, match="overflows int64"):
        fb.group_by(big, "k", {"s": ("v", "sum")})
    with pytest.raises(ValueError, match="overflows int64"):
        fb.scan(big, batch_size=7_000).group_by("k", {"s": ("v", "sum")}).collect()
    mean = fb.group_by(big, "k", {"m": ("v", "mean")}).column("m").to_pylist()
    assert mean == [float(2**50)]


def test_integer_sums_are_exact_and_overflow_raises() -> None:
    t = pa.table({"k": [1, 1, 1], "v": pa.array([I64_MAX, 5, -10], pa.int64())})
    # I64_MAX + 5 overflows in the middle but the total fits: exact, no error.
    assert fb.group_by(t, "k", {"s": ("v", "sum")}).column("s").to_pylist() == [I64_MAX - 5]
    t = pa.table({"k": [1, 1], "v": pa.array([I64_MAX, 1], pa.int64())})
    with pytest.raises(ValueError, match=r"sum of column 'v'|sum of column \"v\" overflows int64"):
        fb.group_by(t, "k", {"s": ("v", "sum")})
    t = pa.table({"k": [1, 1], "v": pa.array([I64_MIN, -1], pa.int64())})
    with pytest.raises(ValueError, match="overflows int64"):
        fb.group_by(t, "k", {"s": ("v", "sum")})
    u = pa.table({"k": [1, 1], "v": pa.array([2**64 - 1, 1], pa.uint64())})
    with pytest.raises(ValueError, match="overflows uint64"):
        fb.group_by(u, "k", {"s": ("v", "sum")})
    u = pa.table({"k": [1, 1], "v": pa.array([2**63, 2**62], pa.uint64())})
    out = fb.group_by(u, "k", {"s": ("v", "sum")})
    assert out.column("s").type == pa.uint64() and out.column("s").to_pylist() == [2**63 + 2**62]


def test_output_types() -> None:
    t = pa.table({
        "k": pa.array(["x", "y", "x"]).dictionary_encode(),
        "i8": pa.array([1, 2, 3], pa.int8()),
        "u16": pa.array([1, 2, 3], pa.uint16()),
        "b": [True, False, True],
        "f32": pa.array([1.5, 2.5, 3.5], pa.float32()),
        "d": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("2.5")], pa.decimal128(5, 2)),
        "ts": pa.array([3, 1, 2], pa.int64()).cast(pa.timestamp("us", tz="Europe/Berlin")),
        "s": pa.array(["b", "a", "c"], pa.large_string()),
    })  # fmt: skip
    out = fb.group_by(t, "k", {
        "i8": ("i8", "sum"), "u16": ("u16", "sum"), "b": ("b", "sum"), "f32": ("f32", "sum"),
        "d": ("d", "sum"), "dm": ("d", "mean"), "tsmin": ("ts", "min"), "smax": ("s", "max"),
        "tsl": ("ts", "last"), "m": ("i8", "mean"), "top": ("s", "top_k", 1),
    })  # fmt: skip
    types = {f.name: f.type for f in out.schema}
    assert types["k"] == t.schema.field("k").type
    assert types["i8"] == pa.int64() and types["u16"] == pa.uint64() and types["b"] == pa.int64()
    assert types["f32"] == pa.float64() and types["d"] == pa.decimal128(38, 2)
    assert types["dm"] == pa.float64() and types["m"] == pa.float64()
    assert types["tsmin"] == t.schema.field("ts").type and types["smax"] == pa.large_string()
    assert types["top"] == pa.list_(pa.large_string())
    assert out.column("k").to_pylist() == ["x", "y"]
    assert out.column("d").to_pylist() == [decimal.Decimal("3.75"), None]
    assert out.column("b").to_pylist() == [2, 0]
    assert out.column("tsmin").to_pylist() == [t.column("ts")[2].as_py(), t.column("ts")[1].as_py()]
    assert out.column("smax").to_pylist() == ["c", "a"]
    assert out.column("dm").to_pylist() == [1.875, None]


@pytest.mark.parametrize("groups", [7, 50_000, 290_000])
def test_results_do_not_depend_on_thread_count(groups: int) -> None:
    rng = np.random.default_rng(groups)
    n = 300_000
    t = pa.table({
        "k": rng.integers(0, groups, n),
        "s": pa.array(rng.integers(0, groups, n).astype(str)),
        "x": rng.standard_normal(n) * 1e6,
        "y": rng.standard_normal(n),
    })  # fmt: skip
    aggs = {"sx": ("x", "sum"), "m": ("x", "mean"), "v": ("x", "var"), "r": ("x", "corr", "y"),
            "med": ("y", "median"), "mx": ("y", "max"), "t": ("y", "top_k", 2)}  # fmt: skip
    old = fb.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 4):
            fb.set_num_threads(threads)
            outs.append([fb.group_by(t, keys, aggs) for keys in ("k", ["s", "k"])])
    finally:
        fb.set_num_threads(old)
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert a.equals(b)


def test_large_groups_match_duckdb() -> None:
    """Both layouts (few groups: blocks; many: partitions) and the hashed path (string keys)
    at a size where they all engage."""
    rng = np.random.default_rng(0)
    n = 200_000
    t = pa.table({
        "few": rng.integers(0, 5, n),
        "many": rng.integers(0, 150_000, n),
        "s": pa.array(np.char.add("id", rng.integers(0, 90_000, n).astype(str))),
        "v": rng.standard_normal(n),
        "i": rng.integers(-(10**12), 10**12, n),
    })  # fmt: skip
    con = duckdb.connect()
    con.register("t", t)
    for keys in (["few"], ["many"], ["s"], ["s", "few"]):
        aggs = {"si": ("i", "sum"), "m": ("v", "mean"), "sd": ("v", "std"),
                "med": ("v", "median"), "lo": ("v", "min")}  # fmt: skip
        out = fb.group_by(t, keys, aggs, sort=True)
        k = ", ".join(keys)
        want = con.sql(
            f"select {k}, sum(i)::bigint si, avg(v) m, stddev_samp(v) sd, median(v) med, min(v) lo "
            f"from t group by {k} order by {k}"
        ).to_arrow_table()
        assert out.column_names == want.column_names
        for c in out.column_names:
            got, exp = out.column(c).to_pylist(), want.column(c).to_pylist()
            assert all(close(a, b) for a, b in zip(got, exp, strict=True)), c


def test_inputs_of_every_kind() -> None:
    import pandas as pd
    import polars as pl

    t = pa.table({"k": [1, 2, 1], "v": [1.0, 2.0, 3.0]})
    want = {"k": [1, 2], "s": [4.0, 2.0]}
    for data in (t, t.to_batches()[0], pl.from_arrow(t), pd.DataFrame(t.to_pydict())):
        assert fb.group_by(data, "k", {"s": ("v", "sum")}).to_pydict() == want


def test_errors() -> None:
    t = pa.table({"key": [1, 2], "amount": [1.0, 2.0], "s": ["a", "b"]})
    with pytest.raises(KeyError, match="did you mean 'key'|did you mean \"key\""):
        fb.group_by(t, "kye", {"x": ("amount", "sum")})
    with pytest.raises(KeyError, match="amout"):
        fb.group_by(t, "key", {"x": ("amout", "sum")})
    with pytest.raises(KeyError, match="zz"):
        fb.group_by(t, "key", {"x": ("amount", "corr", "zz")})
    with pytest.raises(ValueError, match="unknown aggregate"):
        fb.group_by(t, "key", {"x": ("amount", "average")})
    with pytest.raises(TypeError, match='sum of column "s" of type Utf8|cannot compute sum'):
        fb.group_by(t, "key", {"x": ("s", "sum")})
    with pytest.raises(TypeError, match="corr with column"):
        fb.group_by(t, "key", {"x": ("amount", "corr", "s")})
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        fb.group_by(t, "key", {"x": ("amount", "quantile", 1.5)})
    with pytest.raises(ValueError, match="quantile needs q"):
        fb.group_by(t, "key", {"x": ("amount", "quantile")})
    with pytest.raises(ValueError, match="k must be >= 0"):
        fb.group_by(t, "key", {"x": ("amount", "top_k", -1)})
    with pytest.raises(TypeError, match="integer k"):
        fb.group_by(t, "key", {"x": ("amount", "top_k", 1.5)})
    with pytest.raises(ValueError, match="takes no parameter"):
        fb.group_by(t, "key", {"x": ("amount", "sum", 3)})
    with pytest.raises(ValueError, match="needs a column"):
        fb.group_by(t, "key", {"x": (None, "sum")})
    with pytest.raises(ValueError, match="named twice"):
        fb.group_by(t, "key", {"key": ("amount", "sum")})
    with pytest.raises(ValueError, match="listed twice"):
        fb.group_by(t, ["key", "key"], {"x": ("amount", "sum")})
    with pytest.raises(TypeError, match="aggs must be a dict"):
        fb.group_by(t, "key", [("amount", "sum")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be \\(column, function\\)"):
        fb.group_by(t, "key", {"x": "sum"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="dropna must be a bool"):
        fb.group_by(t, "key", {"x": ("amount", "sum")}, dropna="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        fb.group_by(pa.table({"l": pa.array([[1]]), "v": [1]}), "l", {"x": ("v", "sum")})
    # Payload columns of any type are fine for first / last / count.
    nested = pa.table({"k": [1, 1], "l": pa.array([[1], None])})
    out = fb.group_by(nested, "k", {"f": ("l", "first"), "c": ("l", "count")})
    assert out.to_pylist() == [{"k": 1, "f": [1], "c": 1}]
    assert pc.sum(out.column("c")).as_py() == 1


@pytest.mark.parametrize(
    "ty", [pa.decimal32(5, 2), pa.decimal64(15, 2), pa.decimal128(15, 2), pa.decimal256(40, 2)]
)
def test_decimal_sum_and_mean_of_every_width(ty) -> None:
    """mean of decimal32 / 64 / 256 once ignored the scale (187.5 for 1.875); sum takes every
    width up to 128 bits, as decimal128(38, scale)."""
    t = pa.table({"k": [1, 1, 2, 1], "v": pa.array(["1.5", "2.25", None, "-0.5"]).cast(ty)})
    mean = fb.group_by(t, ["k"], {"m": ("v", "mean")}).column("m").to_pylist()
    assert mean[0] == pytest.approx(3.25 / 3)
    assert mean[1] is None
    if ty.bit_width == 256:
        with pytest.raises(TypeError, match="sum"):
            fb.group_by(t, ["k"], {"s": ("v", "sum")})
        return
    s = fb.group_by(t, ["k"], {"s": ("v", "sum")}).column("s")
    assert s.type == pa.decimal128(38, 2)
    assert s.to_pylist() == [Decimal("3.25"), None]
