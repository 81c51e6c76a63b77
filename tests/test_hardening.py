"""Bad input, odd input and faults: every path ends in a clear KeyError / TypeError /
ValueError (or the caller's own exception), never a crash, a panic or a silent wrong answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ferrobatch as fb

SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64())])
GOOD = pa.record_batch([pa.array([3, 1]), pa.array([1, 2])], schema=SCHEMA)

BAD_BATCHES = {
    # same name, narrower type: read through the C stream it would be read past its end
    "int32": (
        lambda: pa.record_batch([pa.array([5, 4], pa.int32()), pa.array([1, 2])], names=["a", "b"]),
        "column 'a' is int32 but the schema declares int64",
    ),
    "fewer columns": (
        lambda: pa.record_batch([pa.array([5, 4])], names=["a"]),
        "it has 1 columns, the schema declares 2; missing ['b']",
    ),
    "string for int": (
        lambda: pa.record_batch([pa.array(["x", "y"]), pa.array([1, 2])], names=["a", "b"]),
        "column 'a' is string but the schema declares int64",
    ),
}

KERNELS = {
    "sort": lambda r: fb.sort(r, "a"),
    "dedup": lambda r: fb.dedup(r),
    "group_by": lambda r: fb.group_by(r, "a", {"n": (None, "size")}),
    "join": lambda r: fb.join(r, pa.table({"a": [1]}), "a"),
    "join right side": lambda r: fb.join(pa.table({"a": [1]}), r, "a"),
    "GroupByState": lambda r: _absorb(r),
    "scan": lambda r: fb.scan(r).collect(),
    "scan + sort": lambda r: fb.scan(r).sort("a").collect(),
    "scan + group_by": lambda r: fb.scan(r).group_by("a", {"n": (None, "size")}).collect(),
}


def _absorb(r: pa.RecordBatchReader) -> pa.Table:
    st = fb.GroupByState(SCHEMA, "a", {"n": (None, "size")})
    st.absorb(r)
    return st.finish()


def _reader(second) -> pa.RecordBatchReader:
    def gen():
        yield GOOD
        yield second()

    return pa.RecordBatchReader.from_batches(SCHEMA, gen())


class _ForeignStream:
    """A producer that is not pyarrow: only ``__arrow_c_stream__``."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.reader = reader

    def __arrow_c_stream__(self, requested_schema=None):
        return self.reader.__arrow_c_stream__(requested_schema)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bad", BAD_BATCHES)
def test_reader_batch_not_matching_its_schema_is_a_value_error(kernel, bad):
    make, why = BAD_BATCHES[bad]
    with pytest.raises(ValueError, match="record batch 1 does not match") as e:
        KERNELS[kernel](_reader(make))
    assert why in str(e.value)


@pytest.mark.parametrize("kernel", KERNELS)
def test_exception_raised_by_the_reader_keeps_its_class(kernel):
    def boom():
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        KERNELS[kernel](_reader(boom))


@pytest.mark.parametrize("kernel", ["sort", "dedup", "group_by", "join"])
def test_foreign_stream_is_read_through_and_checked(kernel):
    got = KERNELS[kernel](_ForeignStream(pa.RecordBatchReader.from_batches(SCHEMA, [GOOD, GOOD])))
    want = KERNELS[kernel](pa.Table.from_batches([GOOD, GOOD]))
    assert got.equals(want)
    # a structurally broken foreign stream (missing child) is refused by the importer
    bad = _ForeignStream(_reader(BAD_BATCHES["fewer columns"][0]))
    with pytest.raises(ValueError):
        KERNELS[kernel](bad)


# -- duplicate column names -------------------------------------------------------------------


@pytest.fixture
def dup() -> pa.Table:
    return pa.table([pa.array([1, 1, 1]), pa.array([4, 6, 4])], names=["a", "a"])


def test_dedup_without_subset_compares_all_columns_by_position(dup):
    assert fb.dedup(dup).columns == dup.slice(0, 2).columns
    assert fb.dedup(dup, keep="none").columns == dup.slice(1, 1).columns
    assert fb.dedup(dup, keep="last").columns == dup.take([1, 2]).columns


@pytest.mark.parametrize(
    "call",
    [
        lambda t: fb.dedup(t, "a"),
        lambda t: fb.sort(t, "a"),
        lambda t: fb.group_by(t, "a", {"n": (None, "size")}),
        lambda t: fb.group_by(
            pa.table({"k": [1]}).append_column("a", [[1]]).append_column("a", [[2]]),
            "k",
            {"s": ("a", "sum")},
        ),
        lambda t: fb.join(t, pa.table({"a": [1]}), "a"),
        lambda t: fb.join(pa.table({"a": [1]}), t, "a"),
        lambda t: fb.GroupByState(t.schema, "a", {"n": (None, "size")}),
    ],
    ids=[
        "dedup subset",
        "sort",
        "group_by key",
        "group_by agg",
        "join left",
        "join right",
        "state",
    ],  # fmt: skip
)
def test_an_ambiguous_column_name_is_a_value_error(dup, call):
    with pytest.raises(ValueError, match='column "a" is ambiguous'):
        call(dup)


def test_duplicate_names_not_used_as_keys_are_carried(dup):
    t = dup.append_column("k", pa.array([2, 1, 2]))
    out = fb.sort(t, "k")
    assert out.column_names == ["a", "a", "k"]
    assert out.columns[1].to_pylist() == [6, 4, 4]


def test_drop_duplicates_with_duplicate_labels_falls_back_to_pandas():
    from ferrobatch import pandas as fpd

    df = pd.DataFrame([[1, 4], [1, 6], [1, 4]], columns=["a", "a"])
    with pytest.warns(fb.FallbackWarning):
        got = fpd.drop_duplicates(df)
    pd.testing.assert_frame_equal(got, df.drop_duplicates())


# -- integer arguments -------------------------------------------------------------------------


@pytest.fixture
def small() -> pa.Table:
    return pa.table({"g": [1, 1, 2], "v": [1.0, 2.0, 3.0]})


def test_numpy_integers_are_accepted_everywhere(small):
    two = np.int64(2)
    assert fb.sort(small, "v", limit=np.int32(1)).num_rows == 1
    half = np.float32(0.5)
    got = fb.group_by(small, "g", {"t": ("v", "top_k", two), "q": ("v", "quantile", half)})
    assert got.column("t").to_pylist() == [[2.0, 1.0], [3.0]]
    assert got.column("q").to_pylist() == [1.5, 3.0]
    assert fb.join(small, small, "g", max_output_rows=np.uint64(5)).num_rows == 5
    assert fb.scan(small).head(two).collect().num_rows == 2
    assert fb.scan(small, batch_size=np.int8(1)).collect().equals(small)
    assert fb.scan(small).expect(min_rows=np.int16(3)).collect().num_rows == 3
    before = fb.get_num_threads()
    try:
        fb.set_num_threads(two)
        assert fb.get_num_threads() == 2
    finally:
        fb.set_num_threads(before)


def test_huge_counts_mean_all(small):
    assert fb.sort(small, "v", limit=10**30).num_rows == 3
    assert fb.scan(small).head(10**30).collect().num_rows == 3
    assert fb.scan(small).sort("v", limit=10**30).collect().num_rows == 3
    assert fb.scan(small, batch_size=10**30).collect().equals(small)
    got = fb.group_by(small, "g", {"t": ("v", "top_k", 10**20)})
    assert got.column("t").to_pylist() == [[2.0, 1.0], [3.0]]
    assert fb.join(small, small, "g", max_output_rows=10**30).num_rows == 5


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda t: fb.group_by(t, "g", {"q": ("v", "quantile", 10**400)}), ValueError),
        (lambda t: fb.group_by(t, "g", {"q": ("v", "quantile", -(10**400))}), ValueError),
        (lambda t: fb.group_by(t, "g", {"q": ("v", "top_k", -(10**30))}), ValueError),
        (lambda t: fb.group_by(t, "g", {"q": ("v", "top_k", True)}), TypeError),
        (lambda t: fb.group_by(t, "g", {"q": ("v", "top_k", 2.5)}), TypeError),
        (lambda t: fb.set_num_threads(10**30), ValueError),
        (lambda t: fb.set_num_threads(0), ValueError),
        (lambda t: fb.set_num_threads(2.0), TypeError),
        (lambda t: fb.sort(t, "v", limit=-(10**30)), ValueError),
        (lambda t: fb.sort(t, "v", limit=1.0), TypeError),
        (lambda t: fb.scan(t).head(-1), ValueError),
        (lambda t: fb.scan(t).head("3"), TypeError),
        (lambda t: fb.scan(t, batch_size=0), ValueError),
        (lambda t: fb.join(t, t, "g", max_output_rows=-(10**30)), ValueError),
        (lambda t: fb.scan(t).expect(max_rows=-1), ValueError),
    ],
)
def test_bad_integer_arguments(small, call, exc):
    with pytest.raises(exc):
        call(small)


# -- GroupByState shared between threads -------------------------------------------------------


def test_group_by_state_shared_between_threads_serializes_absorbs():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    parts = [
        pa.table({"k": rng.integers(0, 50, 20_000), "v": rng.integers(-5, 5, 20_000)})
        for _ in range(32)
    ]
    aggs = {"s": ("v", "sum"), "n": (None, "size"), "hi": ("v", "max")}
    st = fb.GroupByState(parts[0].schema, "k", aggs, sort=True)
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(st.absorb, parts))
    assert st.num_groups >= 50
    got = st.finish()
    assert got.equals(fb.group_by(pa.concat_tables(parts), "k", aggs, sort=True))
    with pytest.raises(ValueError, match="already finished"):
        st.absorb(parts[0])


def test_group_by_states_merged_into_each_other_from_two_threads():
    from concurrent.futures import ThreadPoolExecutor

    t = pa.table({"k": [1, 2, 1], "v": [1, 2, 3]})
    for _ in range(20):
        a, b = (fb.GroupByState(t.schema, "k", {"s": ("v", "sum")}) for _ in range(2))
        a.absorb(t)
        b.absorb(t)
        with ThreadPoolExecutor(2) as ex:
            fa, fb_ = ex.submit(a.merge, b), ex.submit(b.merge, a)
            outcomes = []
            for f in (fa, fb_):
                try:
                    f.result(timeout=10)
                    outcomes.append("ok")
                except ValueError as e:
                    assert "already finished or merged" in str(e)
                    outcomes.append("gone")
        assert "ok" in outcomes  # exactly one state ends up holding both
        live = a if outcomes[0] == "ok" else b
        assert live.finish().column("s").to_pylist() == [8, 4]
