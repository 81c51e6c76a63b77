"""fb.GroupByState (streaming group-by) against the in-memory fb.group_by on the same rows:
any cut into record batches, any split into states merged in order, every aggregate, the
key rules; plus overflow across batches, bounded state, and every error path."""

from __future__ import annotations

import decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nasty import I64_MAX, assert_same_bits, canonical
from test_group_by import AGGS, close, grouped

import ferrobatch as fb


def batches(table: pa.Table, cuts: list[int]) -> list[pa.RecordBatch]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < table.num_rows}), table.num_rows]
    return [table.slice(a, b - a).combine_chunks().to_batches()[0]
            for a, b in zip(bounds, bounds[1:], strict=False) if b > a]  # fmt: skip


def stream(
    table: pa.Table, keys: Any, aggs: dict, cuts: list[int], splits: list[int], **kw: Any
) -> pa.Table:
    """Absorb `table` cut at `cuts`; batches go to consecutive states split at `splits`
    (batch indices), which are then merged in order."""
    parts = batches(table, cuts)
    edges = [0, *sorted({s for s in splits if 0 < s < len(parts)}), len(parts)]
    states = []
    for a, b in zip(edges, edges[1:], strict=False):
        s = fb.GroupByState(table.schema, keys, aggs, **kw)
        for batch in parts[a:b]:
            s.absorb(batch)
        states.append(s)
    head = states[0] if states else fb.GroupByState(table.schema, keys, aggs, **kw)
    for s in states[1:]:
        head.merge(s)
    return head.finish()


def assert_same(got: pa.Table, want: pa.Table, keys: list[str]) -> None:
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in got.column_names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        if name in keys:
            assert [canonical(v) for v in a] == [canonical(v) for v in b], name
        else:
            assert all(close(x, y) for x, y in zip(a, b, strict=True)), (name, a, b)


@given(
    grouped(max_rows=60),
    st.lists(st.integers(0, 60), max_size=6),
    st.lists(st.integers(0, 6), max_size=2),
    st.booleans(),
    st.booleans(),
)
def test_stream_equals_in_memory(
    data: tuple[pa.Table, list[str]], cuts: list[int], splits: list[int], dropna: bool, sort: bool
) -> None:
    table, keys = data
    want = fb.group_by(table, keys, AGGS, dropna=dropna, sort=sort)
    got = stream(table, keys, AGGS, cuts, splits, dropna=dropna, sort=sort)
    assert_same(got, want, keys)


@given(
    grouped(max_rows=60),
    st.lists(st.integers(0, 60), max_size=6),
    st.integers(0, 6),
    st.booleans(),
    st.booleans(),
)
def test_a_pickled_state_continues_as_the_original(
    data: tuple[pa.Table, list[str]], cuts: list[int], at: int, dropna: bool, sort: bool
) -> None:
    """A state pickled after some batches (partial states through Arrow IPC), then fed the
    rest, finishes exactly as the state that was never pickled, float bits included; and a
    pickled state merges into another exactly as the original would."""
    import pickle

    table, keys = data
    parts = batches(table, cuts)
    plain = fb.GroupByState(table.schema, keys, AGGS, dropna=dropna, sort=sort)
    moved = fb.GroupByState(table.schema, keys, AGGS, dropna=dropna, sort=sort)
    for b in parts[:at]:
        plain.absorb(b)
        moved.absorb(b)
    moved = pickle.loads(pickle.dumps(moved))
    later = fb.GroupByState(table.schema, keys, AGGS, dropna=dropna, sort=sort)
    later_copy = fb.GroupByState(table.schema, keys, AGGS, dropna=dropna, sort=sort)
    for b in parts[at:]:
        later.absorb(b)
        later_copy.absorb(b)
    plain.merge(later)
    moved.merge(pickle.loads(pickle.dumps(later_copy)))
    assert_same_bits(moved.finish(), plain.finish())


def test_partial_tables_folded_in_order_are_the_state_bit_for_bit() -> None:
    """What the Dask group-by does — partial-state tables made where the rows are, pickled,
    folded in order elsewhere — and a state pickled between merges, on batches big enough
    that pending partial tables are merged along the way: float sums and moments equal a
    state that absorbed the batches itself, to the last bit."""
    import pickle

    rng = np.random.default_rng(7)
    n = 70_000
    parts = [
        pa.table(
            {
                "k": rng.integers(0, 5_000 * (i + 1), n),
                "x": rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n),
                "y": rng.standard_normal(n),
            }
        )
        for i in range(5)
    ]
    aggs = {"s": ("x", "sum"), "m": ("x", "mean"), "v": ("x", "var"), "c": ("x", "corr", "y"),
            "q": ("y", "median"), "n": (None, "size")}  # fmt: skip
    want = fb.GroupByState(parts[0].schema, "k", aggs)
    for p in parts:
        want.absorb(p)
    maker = fb.GroupByState(parts[0].schema, "k", aggs)
    partials = [pickle.loads(pickle.dumps(t)) for p in parts for t in maker._state.partial(p)]
    folded = fb.GroupByState(parts[0].schema, "k", aggs)
    for i, t in enumerate(partials):
        folded._state.absorb_partial(t)
        if i == 2:
            folded = pickle.loads(pickle.dumps(folded))
    assert_same_bits(folded.finish(), want.finish())
    with pytest.raises(ValueError, match="not a partial state"):
        maker._state.absorb_partial(parts[0])


def test_state_tables_from_elsewhere_are_checked() -> None:
    t = pa.table({"k": [1, 2, 1], "v": [1.0, 2.0, 3.0]})
    aggs = {"s": ("v", "sum"), "n": (None, "size")}
    state = fb.GroupByState(t.schema, "k", aggs)
    state.absorb(t)
    exported = pa.concat_tables(state._state.export_state())
    # Another group-by's arguments, or a table that is not a partial state: refused.
    with pytest.raises(ValueError, match="not a partial state"):
        fb._core.GroupByState(t.schema, ["k"], [("m", "v", "max", None)], False,
                                           False, [exported])  # fmt: skip
    with pytest.raises(ValueError, match="not a partial state"):
        fb._core.GroupByState(t.schema, ["k"], fb._agg_tuples(aggs), False, False,
                                           [t])  # fmt: skip
    # Repeated keys (two exports concatenated) are merged, as partial states are.
    twice = pa.concat_tables([exported, exported])
    s = fb._core.GroupByState(t.schema, ["k"], fb._agg_tuples(aggs), False, False,
                                           [twice])  # fmt: skip
    assert s.finish().to_pylist() == [{"k": 1, "s": 8.0, "n": 4}, {"k": 2, "s": 4.0, "n": 2}]
    finished = fb.GroupByState(t.schema, "k", aggs)
    finished.finish()
    with pytest.raises(ValueError, match="finished"):
        import pickle

        pickle.dumps(finished)


def test_types_and_exact_sums_across_batches() -> None:
    t = pa.table({
        "k": pa.array(["x", "y", "x", "y"]).dictionary_encode(),
        "i": pa.array([I64_MAX, 1, -10, None], pa.int64()),
        "u": pa.array([2**64 - 1, 0, 0, 5], pa.uint64()),
        "b": pa.array([True, True, None, False]),
        "d": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.50"), None],
                      pa.decimal128(5, 2)),
        "ts": pa.array([1, 2, 3, None], pa.timestamp("us", tz="Europe/Paris")),
    })  # fmt: skip
    aggs = {"i": ("i", "sum"), "u": ("u", "sum"), "b": ("b", "sum"), "d": ("d", "sum"),
            "lo": ("ts", "min"), "la": ("ts", "last"), "nu": ("ts", "n_unique"),
            "top": ("ts", "top_k", 1)}  # fmt: skip
    # Per-batch partial sums leave int64 (I64_MAX, then -10 in the next batch): still exact.
    got = stream(t, "k", aggs, [1, 2, 3], [2])
    assert_same(got, fb.group_by(t, "k", aggs), ["k"])
    assert got.column("i").to_pylist() == [I64_MAX - 10, 1]
    over = pa.table({"k": [1, 1], "v": pa.array([I64_MAX, 1], pa.int64())})
    st_ = fb.GroupByState(over.schema, "k", {"s": ("v", "sum")})
    for b in batches(over, [1]):
        st_.absorb(b)
    with pytest.raises(ValueError, match='sum of column "v" overflows int64'):
        st_.finish()


def test_boolean_means_and_moments_across_batches() -> None:
    # The mean of a boolean column once crashed the streaming state (its partial sums were
    # exact integers, its finish expected floats).
    t = pa.table({"k": [1, 2, 1, 1, 2, 3], "b": [True, False, None, True, True, None]})
    aggs = {"m": ("b", "mean"), "s": ("b", "sum"), "v": ("b", "var"), "q": ("b", "median")}
    want = pa.table({
        "k": [1, 2, 3],
        "m": pa.array([1.0, 0.5, None]),
        "s": pa.array([2, 1, None], pa.int64()),
        "v": pa.array([0.0, 0.5, None]),
        "q": pa.array([1.0, 0.5, None]),
    })  # fmt: skip
    for cuts in ([], [1], [2, 4], [1, 2, 3, 4, 5]):
        got = stream(t, "k", aggs, cuts, [1])
        assert got.equals(want), (cuts, got)
    assert fb.group_by(t, "k", aggs).equals(want)


def test_dictionaries_differ_between_batches() -> None:
    a = pa.table({"k": pa.array(["p", "q", "p"]).dictionary_encode(), "v": [1, 2, 3]})
    idx = pa.array([1, 0], pa.int32())
    b = pa.table({"k": pa.DictionaryArray.from_arrays(idx, ["q", "r"]), "v": [4, 5]})
    s = fb.GroupByState(a.schema, "k", {"s": ("v", "sum"), "f": ("k", "first")}, sort=True)
    s.absorb(a)
    s.absorb(b)
    out = s.finish()
    assert out.column("k").to_pylist() == ["p", "q", "r"]
    assert out.column("s").to_pylist() == [4, 7, 4]  # b holds r=4, q=5


def test_pieces_of_one_large_dictionary() -> None:
    """Batches cut from one row group share its whole dictionary: the state keeps the
    groups' values only (its export is small, not a copy of the dictionary per batch), and
    the finished keys have the input's dictionary type."""
    values = pa.array([f"value-{i:08d}" for i in range(200_000)])
    idx = pa.array(np.arange(4_000, dtype=np.int32) % 7 * 1000, pa.int32())
    t = pa.table({"k": pa.DictionaryArray.from_arrays(idx, values), "v": np.arange(4_000)})
    s = fb.GroupByState(t.schema, "k", {"s": ("v", "sum"), "n": (None, "size")})
    for b in t.to_batches(max_chunksize=100):
        s.absorb(b)
    import pickle

    assert len(pickle.dumps(s)) < 100_000
    out = s.finish()
    assert out.schema.field("k").type == t.schema.field("k").type
    want = fb.group_by(t, "k", {"s": ("v", "sum"), "n": (None, "size")})
    assert out.column("k").to_pylist() == want.column("k").to_pylist()
    assert out.column("s").to_pylist() == want.column("s").to_pylist()
    assert out.column("n").to_pylist() == [len(range(r, 4_000, 7)) for r in range(7)]


def test_many_batches_many_groups_bounded_state() -> None:
    """Enough partial rows to merge many times; the state never holds much more than the
    groups plus one buffer of four times as many partial rows (merged when full)."""
    rng = np.random.default_rng(3)
    # Unmerged, the batches' partial rows (about 14k each) would pass the bound by far.
    n, groups = 800_000, 30_000
    t = pa.table({
        "k": rng.integers(0, groups, n),
        "s": pa.array(rng.integers(0, 50, n).astype(str)),
        "x": rng.standard_normal(n),
        "y": rng.integers(-5, 5, n),
    })  # fmt: skip
    aggs = {"n": (None, "size"), "sx": ("x", "sum"), "sd": ("x", "std"), "r": ("x", "corr", "y"),
            "sy": ("y", "sum"), "mx": ("s", "max"), "f": ("x", "first"), "t": ("y", "top_k", 2),
            "nu": ("s", "n_unique"), "q": ("y", "median")}  # fmt: skip
    s = fb.GroupByState(t.schema, ["k"], aggs)
    peak = 0
    for b in t.to_batches(max_chunksize=20_000):
        s.absorb(b)
        peak = max(peak, s.num_groups)
    assert peak <= 5 * max(groups, 1 << 16) + 20_000
    got = s.finish()
    assert_same(got, fb.group_by(t, ["k"], aggs), ["k"])


def test_reader_and_empty() -> None:
    t = pa.table({"k": [1, 2, 1], "v": [1.0, None, 3.0]})
    aggs = {"m": ("v", "mean"), "n": (None, "size"), "c": ("v", "count")}
    s = fb.GroupByState(t.schema, "k", aggs)
    s.absorb(pa.RecordBatchReader.from_batches(t.schema, t.to_batches(max_chunksize=1)))
    assert s.finish().equals(fb.group_by(t, "k", aggs))
    empty = t.slice(0, 0)
    for keys in (["k"], []):
        got = fb.GroupByState(t.schema, keys, aggs).finish()
        assert got.equals(fb.group_by(empty, keys, aggs))
    assert fb.GroupByState(t.schema, [], aggs).finish().to_pydict() == {
        "m": [None],
        "n": [0],
        "c": [0],
    }


def test_errors() -> None:
    t = pa.table({"k": [1, 2], "v": [1.0, 2.0]})
    with pytest.raises(KeyError, match="nope"):
        fb.GroupByState(t.schema, "nope", {"s": ("v", "sum")})
    with pytest.raises(TypeError, match="cannot compute sum"):
        schema = pa.schema([("k", pa.int64()), ("v", pa.string())])
        fb.GroupByState(schema, "k", {"s": ("v", "sum")})
    with pytest.raises(TypeError, match="pyarrow.Schema"):
        fb.GroupByState(t, "k", {"s": ("v", "sum")})  # type: ignore[arg-type]
    s = fb.GroupByState(t.schema, "k", {"s": ("v", "sum")})
    with pytest.raises(TypeError, match="column 'v' is utf8 in the batch but double|Float64"):
        s.absorb(pa.table({"k": [1], "v": ["a"]}))
    other = fb.GroupByState(t.schema, "k", {"s": ("v", "mean")})
    with pytest.raises(ValueError, match="different schemas or options"):
        s.merge(other)
    with pytest.raises(ValueError, match="into itself"):
        s.merge(s)
    with pytest.raises(TypeError):
        s.merge(t)  # type: ignore[arg-type]
    s.absorb(t)
    s.finish()
    with pytest.raises(ValueError, match="already finished"):
        s.absorb(t)
    with pytest.raises(ValueError, match="already finished"):
        s.finish()


@pytest.mark.parametrize("dropna", [False, True])
def test_string_keys_interned_against_the_values_of_earlier_batches(dropna: bool) -> None:
    """A state interns a batch's string keys against the values it has learnt from earlier
    batches: batches of known values, known values with a few new ones, mostly new values
    (learnt once, then the column's values are forgotten), then known values again. Empty,
    unicode, null and long values (equal in their first 16 bytes); against pandas."""
    import pandas as pd

    rng = np.random.default_rng(11)
    pool = np.array(
        ["", *(f"ä漢{i}" for i in range(500)), *("x" * 20 + f"{i:04}" for i in range(500)),
         *(f"k{i}" for i in range(500))], dtype=object)  # fmt: skip
    fresh = iter(f"new{i}" for i in range(10**6))
    phases: list[np.ndarray] = [rng.choice(pool, 3000) for _ in range(4)]
    few_new = rng.choice(pool, 3000)
    few_new[rng.choice(3000, 100, replace=False)] = [next(fresh) for _ in range(100)]
    phases.append(few_new)
    phases += [np.array([next(fresh) for _ in range(3000)], dtype=object) for _ in range(2)]
    phases += [rng.choice(pool, 3000) for _ in range(3)]
    s_batches = []
    for p in phases:
        p = p.copy()
        p[rng.random(len(p)) < 0.02] = None
        s_batches.append(p)
    s_all = np.concatenate(s_batches)
    n = len(s_all)
    t = pa.table({"s": pa.array(s_all, pa.string()), "i": rng.integers(0, 3, n),
                  "v": rng.integers(-1000, 1000, n)})  # fmt: skip
    aggs = {"n": (None, "size"), "sv": ("v", "sum")}
    state = fb.GroupByState(t.schema, ["s", "i"], aggs, dropna=dropna)
    at = 0
    for p in s_batches:
        state.absorb(t.slice(at, len(p)))
        at += len(p)
    got = state.finish().to_pandas()
    want = (
        t.to_pandas()
        .groupby(["s", "i"], sort=False, dropna=dropna)
        .agg(n=("v", "size"), sv=("v", "sum"))
        .reset_index()
    )

    def plain(xs: Any) -> list:
        return [None if pd.isna(x) else x for x in xs]

    assert plain(got["s"]) == plain(want["s"])
    assert got["i"].tolist() == want["i"].tolist()
    assert got["n"].tolist() == want["n"].tolist()
    assert got["sv"].tolist() == want["sv"].tolist()
