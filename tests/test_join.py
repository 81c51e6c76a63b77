"""fb.join against DuckDB SQL (explicit ORDER BY on row-number columns pins the row order
DESIGN.md defines), plus examples, skew, edge cases and every error path."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nasty import KEY_TYPES, _array, canonical

import ferrobatch as fb

# Key kinds whose columns may be joined with each other (compared by logical value).
FAMILIES = [
    ["i64", "i8", "u8", "u64"],
    ["f64", "f32"],
    ["str", "large_str", "str_view", "dict"],
    ["binary"],
    ["bool"],
    ["date"],
    ["ts_tz"],
    ["ts_ns"],
    ["duration"],
    ["decimal"],
]
FAMILY_OF = {k: fam for fam in FAMILIES for k in fam}


def _column(draw: Any, kind: str, n: int, pool: list) -> pa.Array:
    typ, values = KEY_TYPES[kind]
    # Values from a shared pool (so that both sides match often) or fresh ones, or null.
    choice = st.none() | values | (st.sampled_from(pool) if pool else values)
    vals = draw(st.lists(choice, min_size=n, max_size=n))
    if kind in ("u8", "u64"):
        vals = [v if v is None or v >= 0 else None for v in vals]
    if kind in ("i8",):
        vals = [v if v is None or -128 <= v <= 127 else None for v in vals]
    if kind in ("u8",):
        vals = [v if v is None or v <= 255 else None for v in vals]
    if kind == "u64":
        vals = [v if v is None or v < 2**64 else None for v in vals]
    if kind == "f32":
        vals = [v if v is None or isinstance(v, float) and abs(v) < 1e38 else None for v in vals]
    return _array(vals, typ)


def _chunked(draw: Any, t: pa.Table) -> pa.Table:
    n = t.num_rows
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=3))))
    if not cuts or not n:
        return t
    bounds = [0, *cuts, n]
    return pa.concat_tables(
        [t.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    )


@st.composite
def join_inputs(draw: Any, max_rows: int = 25) -> tuple[pa.Table, pa.Table, list[str], list[str]]:
    """Two tables with 1-2 key pairs of compatible (possibly different) types, a `row`
    column on each side and a payload `p` on the right; random chunking."""
    nkeys = draw(st.integers(1, 2))
    lkinds = [draw(st.sampled_from(sorted(KEY_TYPES))) for _ in range(nkeys)]
    rkinds = [draw(st.sampled_from(FAMILY_OF[k])) for k in lkinds]
    n_l, n_r = draw(st.integers(0, max_rows)), draw(st.integers(0, max_rows))
    same_names = draw(st.booleans())
    lcols: dict[str, pa.Array] = {}
    rcols: dict[str, pa.Array] = {}
    lk, rk = [], []
    for j, (a, b) in enumerate(zip(lkinds, rkinds, strict=True)):
        pool = draw(st.lists(KEY_TYPES[a][1], min_size=1, max_size=3))
        if FAMILY_OF[a] == ["i64", "i8", "u8", "u64"]:
            pool = [v for v in pool if 0 <= v <= 127] or [1]
        if a in ("f64", "f32"):
            pool = [v for v in pool if abs(v) < 1e38 or v != v] or [1.5]
        lname, rname = f"k{j}", (f"k{j}" if same_names else f"r{j}")
        lcols[lname] = _column(draw, a, n_l, pool)
        rcols[rname] = _column(draw, b, n_r, pool)
        lk.append(lname)
        rk.append(rname)
    lcols["row"] = pa.array(range(n_l), pa.int64())
    rcols["row"] = pa.array(range(n_r), pa.int64())
    rcols["p"] = pa.array([f"p{i}" for i in range(n_r)])
    left = _chunked(draw, pa.table(lcols))
    right = _chunked(draw, pa.table(rcols))
    return left, right, lk, rk


def duckdb_join(
    left: pa.Table, right: pa.Table, lk: list[str], rk: list[str], how: str, nulls_equal: bool
) -> tuple[list, list, list]:
    """(left rows, right rows, coalesced key tuples) of the join in DESIGN.md row order."""
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    eq = " is not distinct from " if nulls_equal else " = "
    cond = " and ".join(f'l."{a}"{eq}r."{b}"' for a, b in zip(lk, rk, strict=True))
    if how in ("semi", "anti"):
        neg = "" if how == "semi" else "not "
        rows = con.sql(
            f"select l.row from l where {neg}exists (select 1 from r where {cond}) order by l.row"
        ).fetchall()
        return [r[0] for r in rows], [], []
    kind = {"inner": "join", "left": "left join", "right": "right join", "outer": "full join"}[how]
    order = {
        "inner": "l.row, r.row",
        "left": "l.row, r.row",
        "right": "r.row, l.row",
        "outer": "l.row nulls last, r.row",
    }[how]
    keys = ", ".join(
        f'case when l.row is null then r."{b}"::varchar else l."{a}"::varchar end'
        for a, b in zip(lk, rk, strict=True)
    )
    rows = con.sql(
        f"select l.row, r.row, {keys} from l {kind} r on {cond} order by {order}"
    ).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows], [r[2:] for r in rows]


def _as_duck_text(t: pa.Table, cols: list[str]) -> list[tuple]:
    """Key values rendered by DuckDB, so they compare with duckdb_join's text keys."""
    con = duckdb.connect()
    con.register("t", t)
    sel = ", ".join(f'"{c}"::varchar' for c in cols)
    return [tuple(r) for r in con.sql(f"select {sel} from t").fetchall()]


def _snapshot(t: pa.Table) -> dict:
    return {c: [canonical(v) for v in t.column(c).to_pylist()] for c in t.column_names}


HOWS = ["inner", "left", "right", "outer", "semi", "anti"]


@given(join_inputs(), st.sampled_from(HOWS), st.booleans())
def test_join_matches_duckdb(inp, how, nulls_equal):
    left, right, lk, rk = inp
    lkinds = [left.schema.field(c).type for c in lk]
    rkinds = [right.schema.field(c).type for c in rk]
    unsigned64_vs_signed = any(
        (pa.types.is_uint64(a) and pa.types.is_signed_integer(b))
        or (pa.types.is_uint64(b) and pa.types.is_signed_integer(a))
        for a, b in zip(lkinds, rkinds, strict=True)
    )
    left_before, right_before = _snapshot(left), _snapshot(right)
    if how in ("right", "outer") and unsigned64_vs_signed:
        with pytest.raises(TypeError, match="uint64"):
            fb.join(left, right, left_on=lk, right_on=rk, how=how, nulls_equal=nulls_equal)
        return
    out = fb.join(left, right, left_on=lk, right_on=rk, how=how, nulls_equal=nulls_equal)
    want_l, want_r, want_keys = duckdb_join(left, right, lk, rk, how, nulls_equal)
    assert out.column("row").to_pylist() == want_l
    if how in ("semi", "anti"):
        assert out.column_names == left.column_names
    else:
        right_row = "row_right"
        assert out.column(right_row).to_pylist() == want_r
        assert out.column_names == left.column_names + [
            c if c not in left.column_names else c + "_right"
            for c in right.column_names
            if c not in rk
        ]
        # Key values: the left ones, coalesced with the right ones for right/outer joins.
        got_keys = _as_duck_text(out, lk)
        assert [tuple(map(canonical, k)) for k in got_keys] == [
            tuple(map(canonical, k)) for k in want_keys
        ]
    # Inputs untouched.
    assert _snapshot(left) == left_before and _snapshot(right) == right_before


@given(join_inputs(max_rows=8))
def test_cross_join_is_left_major(inp):
    left, right, _, _ = inp
    out = fb.join(left, right, how="cross")
    n_l, n_r = left.num_rows, right.num_rows
    assert out.column("row").to_pylist() == [i for i in range(n_l) for _ in range(n_r)]
    assert out.column("row_right").to_pylist() == [j for _ in range(n_l) for j in range(n_r)]


def test_documented_row_order():
    # pandas M3 example, every join type.
    left = pa.table({"k": [3, 1, 2, 1], "a": ["w", "x", "y", "z"]})
    right = pa.table({"k": [1, 3, 4, 1], "b": [10, 30, 40, 11]})
    j = lambda how: fb.join(left, right, "k", how=how).to_pydict()  # noqa: E731
    assert j("inner") == {
        "k": [3, 1, 1, 1, 1],
        "a": ["w", "x", "x", "z", "z"],
        "b": [30, 10, 11, 10, 11],
    }
    assert j("left")["b"] == [30, 10, 11, None, 10, 11]
    assert j("right") == {
        "k": [1, 1, 3, 4, 1, 1],
        "a": ["x", "z", "w", None, "x", "z"],
        "b": [10, 10, 30, 40, 11, 11],
    }
    assert j("outer")["k"] == [3, 1, 1, 2, 1, 1, 4]
    assert j("semi") == {"k": [3, 1, 1], "a": ["w", "x", "z"]}
    assert j("anti") == {"k": [2], "a": ["y"]}


def test_nulls_nan_and_zero():
    left = pa.table({"k": [float("nan"), None, -0.0, 1.0]})
    right = pa.table({"k": [None, 0.0, float("-nan")], "v": [1, 2, 3]})
    assert fb.join(left, right, "k")["v"].to_pylist() == [3, 2]
    assert fb.join(left, right, "k", nulls_equal=True)["v"].to_pylist() == [3, 1, 2]
    assert fb.join(left, right, "k", how="anti")["k"].to_pylist() == [None, 1.0]


def test_dictionary_against_plain_strings_and_int_widths():
    d = pa.table({"k": pa.array(["x", "y", None, "x"]).dictionary_encode(), "a": [1, 2, 3, 4]})
    s = pa.table({"k": pa.array(["y", "x", "z"], pa.large_string()), "b": [10, 20, 30]})
    out = fb.join(d, s, "k", how="outer")
    assert out.schema.field("k").type == pa.large_string()
    assert out.to_pydict() == {
        "k": ["x", "y", None, "x", "z"],
        "a": [1, 2, 3, 4, None],
        "b": [20, 10, None, 20, 30],
    }
    i8 = pa.table({"k": pa.array([-1, 5, 127], pa.int8())})
    u32 = pa.table({"k": pa.array([127, 5, 4_000_000_000], pa.uint32()), "v": [1, 2, 3]})
    out = fb.join(i8, u32, "k", how="outer")
    assert out.schema.field("k").type == pa.int64()
    assert out.to_pydict() == {"k": [-1, 5, 127, 4_000_000_000], "v": [None, 2, 1, 3]}
    assert fb.join(i8, u32, "k", how="inner").schema.field("k").type == pa.int8()


def test_left_on_right_on_suffix_and_columns():
    left = pa.table({"id": [1, 2], "v": [1, 2], "v_r": [0, 0]})
    right = pa.table({"key": [2, 1], "v": [20, 10], "w": [True, False]})
    out = fb.join(left, right, left_on="id", right_on="key", suffix="_r2")
    assert out.column_names == ["id", "v", "v_r", "v_r2", "w"]
    assert out.to_pydict()["v_r2"] == [10, 20]
    with pytest.raises(ValueError, match="suffix"):
        fb.join(left, right, left_on="id", right_on="key", suffix="_r")


def test_skewed_key_matches_in_right_order():
    n = 100_000
    rng = np.random.default_rng(1)
    rk = np.where(rng.random(n) < 0.9, 7, rng.integers(0, 1000, n))
    right = pa.table({"k": rk, "j": np.arange(n)})
    left = pa.table({"k": [7, 3, 7, -1], "i": [0, 1, 2, 3]})
    out = fb.join(left, right, "k", how="left")
    sevens = np.flatnonzero(rk == 7)
    threes = np.flatnonzero(rk == 3)
    want_j = np.concatenate([sevens, threes if threes.size else [-1], sevens, [-1]])
    got_j = out.column("j").to_numpy(zero_copy_only=False)
    got_j = np.where(np.isnan(got_j.astype(float)), -1, got_j).astype(np.int64)
    assert got_j.tolist() == want_j.tolist()


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_result_independent_of_threads(threads):
    rng = np.random.default_rng(5)
    n = 300_000
    left = pa.table(
        {"a": rng.integers(0, 50_000, n), "b": rng.normal(size=n).round(1), "i": np.arange(n)}
    )
    right = pa.table(
        {
            "a": rng.integers(0, 60_000, n // 2),
            "b": rng.normal(size=n // 2).round(1),
            "j": np.arange(n // 2),
        }
    )
    before = fb.get_num_threads()
    try:
        fb.set_num_threads(1)
        want = {h: fb.join(left, right, ["a", "b"], how=h) for h in ("inner", "outer", "right")}
        want["single"] = fb.join(left, right, "a", how="left")
        fb.set_num_threads(threads)
        for h in ("inner", "outer", "right"):
            assert fb.join(left, right, ["a", "b"], how=h).equals(want[h])
        assert fb.join(left, right, "a", how="left").equals(want["single"])
    finally:
        fb.set_num_threads(before)


def test_large_chunked_equals_contiguous():
    rng = np.random.default_rng(9)
    n = 200_000
    left = pa.table({"k": rng.integers(0, 10_000, n).astype(str), "i": np.arange(n)})
    right = pa.table({"k": rng.integers(0, 20_000, 30_000).astype(str), "j": np.arange(30_000)})
    chunked = pa.Table.from_batches(left.to_batches(max_chunksize=7_777))
    assert fb.join(chunked, right, "k", how="outer").equals(fb.join(left, right, "k", how="outer"))


@pytest.mark.parametrize("layout", ["plain", "view", "dictionary"])
def test_large_string_build_side_against_a_dict_oracle(layout):
    """A build side of string keys larger than a cache (probed in prefetching stages), probed
    with hits, misses and nulls in every string layout: inner / left / semi / anti against a
    Python dict of the build keys."""
    rng = np.random.default_rng(11)
    build = [f"customer.{i}@example.org" for i in range(80_000)]
    order = rng.permutation(len(build))
    right = pa.table({"k": [build[o] for o in order], "j": np.arange(len(build))})
    n = 300_000
    draws = rng.integers(0, 100_000, n)  # a fifth miss
    keys = [None if d % 97 == 0 else f"customer.{d}@example.org" for d in draws]
    k = pa.array(keys)
    k = {"plain": k, "view": k.cast(pa.string_view()), "dictionary": k.dictionary_encode()}[layout]
    left = pa.table({"k": k, "i": np.arange(n)})
    at = {key: j for j, key in enumerate(right.column("k").to_pylist())}
    want = [(i, at.get(key)) for i, key in enumerate(keys)]
    inner = fb.join(left, right, "k")
    assert list(zip(inner["i"].to_pylist(), inner["j"].to_pylist(), strict=True)) == [
        (i, j) for i, j in want if j is not None
    ]
    outer = fb.join(left, right, "k", how="left")
    assert list(zip(outer["i"].to_pylist(), outer["j"].to_pylist(), strict=True)) == want
    semi = fb.join(left, right, "k", how="semi")["i"].to_pylist()
    anti = fb.join(left, right, "k", how="anti")["i"].to_pylist()
    assert semi == [i for i, j in want if j is not None]
    assert anti == [i for i, j in want if j is None]


def test_empty_and_all_null_sides():
    left = pa.table({"k": pa.array([None, None], pa.int64()), "a": [1, 2]})
    empty = pa.table({"k": pa.array([], pa.int64()), "b": pa.array([], pa.string())})
    assert fb.join(left, empty, "k").num_rows == 0
    out = fb.join(left, empty, "k", how="left")
    assert out.to_pydict() == {"k": [None, None], "a": [1, 2], "b": [None, None]}
    assert fb.join(empty, left, "k", how="right").to_pydict() == {
        "k": [None, None],
        "b": [None, None],
        "a": [1, 2],
    }
    assert fb.join(left, left, "k").num_rows == 0
    assert fb.join(left, left, "k", nulls_equal=True).num_rows == 4
    assert fb.join(empty, empty, "k", how="outer").num_rows == 0
    assert fb.join(left, empty, how="cross").num_rows == 0


def test_inputs_of_every_kind():
    import pandas as pd
    import polars as pl

    left = pl.DataFrame({"k": [1, 2, 3], "a": ["x", "y", "z"]})
    right = pd.DataFrame({"k": [3, 1], "b": [0.5, 1.5]}, index=[10, 20])
    out = fb.join(left, right, "k")
    assert out.to_pydict() == {"k": [1, 3], "a": ["x", "z"], "b": [1.5, 0.5]}
    out = fb.join(
        pa.table(left.to_arrow()).to_batches()[0], duckdb.sql("select 2::bigint k, 'q' c"), "k"
    )
    assert out.to_pydict() == {"k": [2], "a": ["y"], "c": ["q"]}


def test_validate_and_max_output_rows():
    left = pa.table({"k": [1, 2, 2, None, None], "a": range(5)})
    right = pa.table({"k": [2, 3, 3], "b": range(3)})
    fb.join(left, right, "k", validate="m:m")
    with pytest.raises(ValueError, match=r"1:1.*left.*k=2"):
        fb.join(left, right, "k", validate="1:1")
    with pytest.raises(ValueError, match=r"m:1.*right.*k=3"):
        fb.join(left, right, "k", validate="m:1")
    with pytest.raises(ValueError, match=r"1:m.*left.*k=2"):
        fb.join(left, right, "k", validate="1:m")
    # Null keys do not match, so they are no duplicates unless nulls_equal=True.
    lone = pa.table({"k": [1, None, None]})
    fb.join(lone, right, "k", validate="1:m")
    with pytest.raises(ValueError, match="k=null"):
        fb.join(lone, right, "k", validate="1:m", nulls_equal=True)
    with pytest.raises(ValueError, match="2 rows, more than max_output_rows=1"):
        fb.join(left, right, "k", max_output_rows=1)
    assert fb.join(left, right, "k", max_output_rows=2).num_rows == 2
    with pytest.raises(ValueError, match="15 rows"):
        fb.join(left, right, how="cross", max_output_rows=14)
    with pytest.raises(ValueError, match="validate"):
        fb.join(left, right, "k", validate="2:2")


def test_errors():
    left = pa.table({"key": [1], "s": ["a"], "f": [1.0]})
    right = pa.table({"key": [1], "s": ["a"], "f": [1.0]})
    with pytest.raises(KeyError, match="kye.*key"):
        fb.join(left, right, "kye")
    with pytest.raises(KeyError, match="nope"):
        fb.join(left, right, left_on="key", right_on="nope")
    with pytest.raises(TypeError, match=r"(?i)\"key\".*int64.*\"s\".*utf8"):
        fb.join(left, right, left_on="key", right_on="s")
    with pytest.raises(TypeError, match="Float64"):
        fb.join(left, right, left_on="key", right_on="f")
    with pytest.raises(ValueError, match="cross"):
        fb.join(left, right, "key", how="cross")
    with pytest.raises(ValueError, match="how"):
        fb.join(left, right, "key", how="sideways")
    with pytest.raises(ValueError, match="needs keys"):
        fb.join(left, right)
    with pytest.raises(ValueError, match="not both"):
        fb.join(left, right, "key", left_on="key", right_on="key")
    with pytest.raises(ValueError, match="2 columns"):
        fb.join(left, right, left_on=["key", "s"], right_on="key")
    with pytest.raises(TypeError):
        fb.join(left, [1, 2], "key")
    with pytest.raises(TypeError):
        fb.join(left, right, "key", max_output_rows="many")
    with pytest.raises(ValueError):
        fb.join(left, right, "key", max_output_rows=-1)
    u = pa.table({"key": pa.array([1], pa.uint64())})
    with pytest.raises(TypeError, match="uint64"):
        fb.join(left, u, "key", how="outer")
    assert fb.join(left, u, "key").num_rows == 1
    lst = pa.table({"key": pa.array([[1]])})
    with pytest.raises(TypeError, match="key"):
        fb.join(lst, lst, "key")


@given(join_inputs(), st.sampled_from(["inner", "left", "semi", "anti"]), st.booleans(),
       st.integers(1, 4))  # fmt: skip
def test_a_prepared_right_side_probed_by_batches_is_the_join(inp, how, nulls_equal, pieces):
    """JoinBuild(right).probe(batch) for each batch of the left side, concatenated, is the
    whole-table join — also after a pickle round trip (the side travels as Arrow IPC)."""
    import pickle

    left, right, lk, rk = inp
    kw = {"left_on": lk, "right_on": rk, "how": how, "nulls_equal": nulls_equal}
    want = fb.join(left, right, **kw)
    build = fb.JoinBuild(right, left.schema, **kw)
    moved = pickle.loads(pickle.dumps(build))
    n = left.num_rows
    cuts = [n * i // pieces for i in range(pieces + 1)]
    for b in (build, moved):
        got = pa.concat_tables(
            [b.probe(left.slice(a, z - a)) for a, z in zip(cuts, cuts[1:], strict=False)]
        )
        assert got.schema == want.schema
        assert [[canonical(v) for v in got[c].to_pylist()] for c in got.column_names] == [
            [canonical(v) for v in want[c].to_pylist()] for c in want.column_names
        ]


def test_a_prepared_right_side_refuses_what_it_cannot_serve():
    left = pa.table({"k": [1, 2], "a": ["x", "y"]})
    right = pa.table({"k": [2, 3], "b": [0.5, 1.5]})
    for how in ("right", "outer"):
        with pytest.raises(ValueError, match="join"):
            fb.JoinBuild(right, left.schema, "k", how=how)
    build = fb.JoinBuild(right, left.schema, "k")
    with pytest.raises(TypeError, match="left schema"):
        build.probe(pa.table({"k": ["1"], "a": ["x"]}))
    with pytest.raises(TypeError, match="key types"):
        fb.JoinBuild(pa.table({"k": ["a"]}), left.schema, "k")
    with pytest.raises(KeyError):
        fb.JoinBuild(right, left.schema, "nope")
    cross = fb.JoinBuild(right, left.schema, how="cross")
    assert cross.probe(left).to_pylist() == fb.join(left, right, how="cross").to_pylist()
