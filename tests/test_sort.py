import math

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nasty import reference_sort, same_rows, tables

import ferrobatch as fb


@given(tables(), st.data())
def test_sort_matches_reference(tk, data):
    table, keys = tk
    by = data.draw(st.permutations(keys))
    desc = data.draw(st.lists(st.booleans(), min_size=len(by), max_size=len(by)))
    nl = data.draw(st.lists(st.booleans(), min_size=len(by), max_size=len(by)))
    out = fb.sort(table, by, descending=desc, nulls_last=nl)
    assert out.schema == table.schema
    assert out.column("row").to_pylist() == reference_sort(table, by, desc, nl)


@given(tables(max_rows=60), st.data())
def test_limit_is_prefix_of_full_sort(tk, data):
    table, keys = tk
    desc = data.draw(st.booleans())
    k = data.draw(st.integers(0, table.num_rows + 2))
    full = fb.sort(table, keys, descending=desc)
    top = fb.sort(table, keys, descending=desc, limit=k)
    assert same_rows(top, full.slice(0, k))


POLARS_KINDS = [
    "i64",
    "i8",
    "u64",
    "u8",
    "f64",
    "f32",
    "bool",
    "str",
    "large_str",
    "date",
    "ts_tz",
    "ts_ns",
    "duration",
]


@given(tables(max_rows=60), st.data())
def test_sort_matches_polars(tk, data):
    table, keys = tk
    keys = [k for k in keys if k.rsplit("_", 1)[0] in POLARS_KINDS]
    if not keys:
        return
    desc = data.draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    nl = data.draw(st.booleans())
    out = fb.sort(table, keys, descending=desc, nulls_last=nl)
    expected = (
        pl.from_arrow(table)
        .sort(keys, descending=desc, nulls_last=nl, maintain_order=True)
        .get_column("row")
        .to_list()
    )
    assert out.column("row").to_pylist() == expected


def test_float_order_and_stability():
    t = pa.table(
        {
            "x": [math.nan, 1.0, None, -0.0, math.inf, 0.0, -math.inf, -math.nan, None],
            "row": list(range(9)),
        }
    )
    asc = fb.sort(t, "x").column("row").to_pylist()
    assert asc == [6, 3, 5, 1, 4, 0, 7, 2, 8]
    desc = fb.sort(t, "x", descending=True, nulls_last=False).column("row").to_pylist()
    assert desc == [2, 8, 0, 7, 4, 1, 3, 5, 6]


def test_string_order_is_bytewise():
    t = pa.table({"s": ["b", "B", "a", "ä", "", "A"]})
    assert fb.sort(t, "s").column("s").to_pylist() == ["", "A", "B", "a", "b", "ä"]


def test_wide_keys_fall_back_to_code_comparison():
    # Three full-range float keys cannot be packed into 128 bits.
    import random

    rnd = random.Random(1)
    n = 500
    cols = {
        f"f{i}": [rnd.choice([1.0, -2.5, math.inf, math.nan, None, 1e300]) for _ in range(n)]
        for i in range(3)
    }
    cols["row"] = list(range(n))
    t = pa.table(cols)
    by = ["f0", "f1", "f2"]
    desc = [True, False, True]
    out = fb.sort(t, by, descending=desc)
    assert out.column("row").to_pylist() == reference_sort(t, by, desc, [True] * 3)
    top = fb.sort(t, by, descending=desc, limit=17)
    assert same_rows(top, out.slice(0, 17))


def test_extreme_integers_with_nulls():
    t = pa.table(
        {"x": pa.array([2**63 - 1, None, -(2**63), 0, None, -(2**63)], pa.int64()), "row": range(6)}
    )
    assert fb.sort(t, "x").column("row").to_pylist() == [2, 5, 3, 0, 1, 4]
    assert fb.sort(t, "x", descending=True, nulls_last=False).column("row").to_pylist() == [
        1,
        4,
        0,
        3,
        2,
        5,
    ]


def test_empty_and_one_row():
    empty = pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())})
    assert fb.sort(empty, ["a", "b"]).num_rows == 0
    assert fb.sort(empty, "a").schema == empty.schema
    one = pa.table({"a": [1], "b": ["x"]})
    assert fb.sort(one, "b", limit=5).equals(one)
    assert fb.sort(one, "a", limit=0).num_rows == 0


def test_large_table_is_stable_and_sorted():
    import numpy as np

    rng = np.random.default_rng(0)
    n = 300_000
    t = pa.table(
        {
            "k": rng.integers(0, 1000, n),
            "s": pa.array(rng.integers(0, 50, n)).cast(pa.string()),
            "row": np.arange(n),
        }
    )
    out = fb.sort(t, ["s", "k"], descending=[True, False])
    df = t.to_pandas().sort_values(["s", "k"], ascending=[False, True], kind="stable")
    assert out.column("row").to_numpy().tolist() == df["row"].tolist()


def test_multi_key_limit_matches_polars_topk():
    import numpy as np

    rng = np.random.default_rng(3)
    n = 100_000
    t = pa.table({"a": rng.integers(0, 10, n), "b": rng.random(n), "row": np.arange(n)})
    top = fb.sort(t, ["a", "b"], descending=[False, True], limit=1000)
    exp = (
        pl.from_arrow(t).sort(["a", "b"], descending=[False, True], maintain_order=True).head(1000)
    )
    assert top.column("row").to_pylist() == exp.get_column("row").to_list()


@pytest.mark.parametrize("nulls_last", [True, False])
def test_all_null_key(nulls_last):
    t = pa.table({"a": pa.nulls(5, pa.int64()), "row": range(5)})
    assert fb.sort(t, "a", nulls_last=nulls_last).column("row").to_pylist() == list(range(5))


@given(
    tables(),
    st.data(),
    st.integers(1, 12),
    st.sampled_from([1, 2, 4]),
    st.one_of(st.none(), st.integers(0, 50)),
)
def test_pipeline_sort_and_top_k_match_reference(tk, data, batch_size, threads, limit):
    """The pipeline's sort on the executor (the whole input sorted by the kernel; with a
    limit, or a head after the sort, a running top-k over the morsels) gives the reference
    order, whatever the batch cuts and the thread count: ties keep their input order."""
    table, keys = tk
    by = data.draw(st.permutations(keys))
    desc = data.draw(st.lists(st.booleans(), min_size=len(by), max_size=len(by)))
    nl = data.draw(st.lists(st.booleans(), min_size=len(by), max_size=len(by)))
    want = reference_sort(table, by, desc, nl)
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        p = fb.scan(table, batch_size=batch_size).sort(by, descending=desc, nulls_last=nl)
        out = (p if limit is None else p.head(limit)).collect()
        limited = p.sort(by, descending=desc, nulls_last=nl, limit=limit).collect()
    finally:
        fb.set_num_threads(before)
    top = want if limit is None else want[:limit]
    assert out.schema == table.schema
    assert out.column("row").to_pylist() == top
    assert limited.column("row").to_pylist() == top


def test_head_after_sort_is_a_top_k_in_explain():
    p = fb.scan(pa.table({"k": [3, 1, 2]})).sort("k")
    assert "limit=2 (top-k)" in p.head(2).explain()
    assert p.head(2).collect().to_pydict() == {"k": [1, 2]}
    assert p.head(5).head(1).collect().to_pydict() == {"k": [1]}
