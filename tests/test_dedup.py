import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nasty import canonical, reference_dedup, tables

import ferrobatch as fb


@given(tables(), st.sampled_from(["first", "last", "none"]), st.data())
def test_dedup_matches_reference(tk, keep, data):
    table, keys = tk
    subset = data.draw(st.lists(st.sampled_from(keys), min_size=1, unique=True))
    out = fb.dedup(table, subset, keep=keep)
    assert out.schema == table.schema
    assert out.column("row").to_pylist() == reference_dedup(table, subset, keep)


@given(tables(max_keys=2), st.sampled_from(["first", "last", "none"]))
def test_dedup_all_columns(tk, keep):
    table, keys = tk
    t = table.select(keys)
    out = fb.dedup(t, keep=keep)
    expected = reference_dedup(t, keys, keep)
    assert out.schema == t.schema
    for c in keys:
        col = t.column(c).to_pylist()
        want = [canonical(col[i]) for i in expected]
        assert [canonical(v) for v in out.column(c).to_pylist()] == want


POLARS_KINDS = ["i64", "i8", "u64", "u8", "f64", "bool", "str", "large_str", "date", "ts_ns"]


@given(tables(max_rows=60), st.sampled_from(["first", "last", "none"]))
def test_dedup_matches_polars(tk, keep):
    table, keys = tk
    keys = [k for k in keys if k.rsplit("_", 1)[0] in POLARS_KINDS]
    if not keys:
        return
    out = fb.dedup(table, keys, keep=keep)
    expected = (
        pl.from_arrow(table)
        .unique(keys, keep=keep, maintain_order=True)
        .get_column("row")
        .to_list()
    )
    assert out.column("row").to_pylist() == expected


def test_nan_null_and_signed_zero_are_one_key_each():
    t = pa.table({"x": [0.0, float("nan"), None, -0.0, float("-nan"), None, 1.0]})
    assert fb.dedup(t).column("x").to_pylist()[:2] == [
        0.0,
        pytest.approx(float("nan"), nan_ok=True),
    ]
    assert fb.dedup(t).num_rows == 4
    assert fb.dedup(t, keep="none").column("x").to_pylist() == [1.0]


def test_dictionary_and_plain_chunks_with_different_dictionaries():
    a = pa.array(["x", "y", "x"]).dictionary_encode()
    b = pa.array(["y", "z", "x"]).dictionary_encode()
    t = pa.concat_tables(
        [pa.table({"k": a, "row": [0, 1, 2]}), pa.table({"k": b, "row": [3, 4, 5]})]
    )
    assert fb.dedup(t, "k").column("row").to_pylist() == [0, 1, 4]


def test_large_high_cardinality_uses_hash_path():
    import numpy as np

    rng = np.random.default_rng(1)
    n = 400_000
    t = pa.table(
        {"a": rng.integers(0, 2**40, n) % 300_000, "b": rng.random(n).round(1), "row": np.arange(n)}
    )
    for keep in ["first", "last", "none"]:
        out = fb.dedup(t, ["a", "b"], keep=keep)
        exp = pl.from_arrow(t).unique(["a", "b"], keep=keep, maintain_order=True)
        assert out.column("row").to_pylist() == exp.get_column("row").to_list()


def test_empty():
    t = pa.table({"a": pa.array([], pa.int64())})
    assert fb.dedup(t).num_rows == 0


@given(
    tables(),
    st.data(),
    st.integers(1, 12),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["first", "last", "none"]),
)
def test_pipeline_dedup_matches_reference(tk, data, batch_size, threads, keep):
    """The pipeline's dedup (``keep="first"`` streaming on the executor with one table of the
    keys seen, the others over the whole input) keeps the reference's rows whatever the
    batch cuts and the thread count: nulls, NaN, -0.0, dictionaries, views, time zones."""
    table, keys = tk
    subset = data.draw(st.lists(st.sampled_from(keys), min_size=1, unique=True))
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        out = fb.scan(table, batch_size=batch_size).dedup(subset, keep=keep).collect()
    finally:
        fb.set_num_threads(before)
    assert out.schema == table.schema
    assert out.column("row").to_pylist() == reference_dedup(table, subset, keep)


def test_explain_says_which_dedup_needs_the_whole_input():
    p = fb.scan(pa.table({"k": [1, 1, 2]}))
    assert "(streaming)" in p.dedup("k").explain()
    assert "(whole input)" in p.dedup("k", keep="last").explain()
    assert p.dedup("k", keep="none").collect().to_pydict() == {"k": [2]}
