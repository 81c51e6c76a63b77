"""Inputs of every table-like kind, payload types carried through, error paths, threads."""

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import ferrobatch as fb


@pytest.fixture
def table():
    return pa.table(
        {
            "k": [3, 1, 2, 1, None],
            "s": ["c", "a", "b", "a", None],
            "lst": [[1], [], None, [2, 3], [4]],
            "st": [
                {"x": 1, "y": "p"},
                {"x": 2, "y": None},
                None,
                {"x": 4, "y": "q"},
                {"x": 5, "y": "r"},
            ],
            "m": pa.array(
                [[("a", 1)], [], None, [("b", 2)], [("c", 3)]], pa.map_(pa.string(), pa.int64())
            ),
        }
    )


def as_kinds(t: pa.Table):
    multi = pa.concat_tables([t.slice(0, 2), t.slice(2, 1), t.slice(3)])
    yield "table", t
    yield "multi-chunk", multi
    yield "record batch", t.combine_chunks().to_batches()[0]
    yield "reader", pa.RecordBatchReader.from_batches(multi.schema, multi.to_batches())
    if not any(pa.types.is_map(f.type) for f in t.schema):
        yield "polars", pl.from_arrow(t)


def test_every_input_kind_sorts_and_dedups(table):
    expected_sort = table.take([1, 3, 2, 0, 4])
    expected_dedup = table.take([0, 1, 2, 4])
    for name, data in as_kinds(table):
        out = fb.sort(data, "k")
        assert isinstance(out, pa.Table), name
        assert out.column("k").to_pylist() == expected_sort.column("k").to_pylist(), name
        assert out.column("lst").to_pylist() == expected_sort.column("lst").to_pylist(), name
        assert out.column("st").to_pylist() == expected_sort.column("st").to_pylist(), name
    for name, data in as_kinds(table):
        out = fb.dedup(data, ["k", "s"])
        assert out.column("st").to_pylist() == expected_dedup.column("st").to_pylist(), name
    assert fb.sort(table, "k").equals(expected_sort)


def test_polars_string_view_and_categorical():
    df = pl.DataFrame({"s": ["b", "a", None, "a"], "c": ["y", "x", "y", None]}).with_columns(
        pl.col("c").cast(pl.Categorical)
    )
    out = fb.sort(df, ["c", "s"])
    assert out.column("s").to_pylist() == ["a", "b", None, "a"]
    assert fb.dedup(df, "c").num_rows == 3


def test_pandas_input_drops_index():
    df = pd.DataFrame({"a": [2, 1, 2], "b": ["x", "y", "z"]}, index=[10, 11, 12])
    out = fb.sort(df, "a")
    assert out.column_names == ["a", "b"]
    assert out.column("b").to_pylist() == ["y", "x", "z"]


def test_inputs_are_not_mutated(table):
    before = table.to_pylist()
    fb.sort(table, "s", descending=True)
    fb.dedup(table, "k", keep="none")
    assert table.to_pylist() == before


def test_missing_column_is_keyerror_with_suggestion(table):
    with pytest.raises(KeyError, match=r'"kk" not found.*did you mean "k"'):
        fb.sort(table, "kk")
    with pytest.raises(KeyError, match='"ss"'):
        fb.dedup(table, ["k", "ss"])


def test_unsupported_key_type_is_typeerror(table):
    with pytest.raises(TypeError, match=r'"lst" has type List'):
        fb.sort(table, "lst")
    with pytest.raises(TypeError, match='"st"'):
        fb.dedup(table, "st")
    with pytest.raises(TypeError, match='"lst"'):
        fb.dedup(table)  # all columns, including a list column


def test_bad_arguments(table):
    with pytest.raises(ValueError, match="limit"):
        fb.sort(table, "k", limit=-1)
    with pytest.raises(TypeError, match="limit"):
        fb.sort(table, "k", limit=1.5)
    with pytest.raises(ValueError, match="descending has 1 entries but there are 2"):
        fb.sort(table, ["k", "s"], descending=[True])
    with pytest.raises(TypeError, match="nulls_last"):
        fb.sort(table, "k", nulls_last="yes")
    with pytest.raises(TypeError, match="column name"):
        fb.sort(table, 3)
    with pytest.raises(ValueError, match="at least one key"):
        fb.sort(table, [])
    with pytest.raises(ValueError, match="keep"):
        fb.dedup(table, "k", keep="middle")
    with pytest.raises(TypeError, match="keep"):
        fb.dedup(table, "k", keep=False)
    with pytest.raises(ValueError, match="at least one column"):
        fb.dedup(table, [])
    with pytest.raises(TypeError, match="table-like"):
        fb.sort([1, 2, 3], "k")
    with pytest.raises(TypeError, match="table-like"):
        fb.dedup({"k": [1]})


def test_thread_settings():
    old = fb.get_num_threads()
    try:
        fb.set_num_threads(3)
        assert fb.get_num_threads() == 3
        with pytest.raises(ValueError):
            fb.set_num_threads(0)
        with pytest.raises(TypeError):
            fb.set_num_threads(2.0)
    finally:
        fb.set_num_threads(old)


def test_env_var_sets_default_threads():
    import subprocess
    import sys

    code = "import ferrobatch as fb; print(fb.get_num_threads())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, "FERROBATCH_NUM_THREADS": "3"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"


def test_results_identical_for_1_2_4_threads():
    rng = np.random.default_rng(7)
    n = 500_000
    t = pa.table(
        {
            "i": rng.integers(-(2**62), 2**62, n) % 100_003,
            "f": np.where(rng.random(n) < 0.1, np.nan, rng.random(n).round(2)),
            "s": pa.array(rng.integers(0, 5000, n)).cast(pa.string()),
            "row": np.arange(n),
        }
    )
    old = fb.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 4):
            fb.set_num_threads(threads)
            results.append(
                (
                    fb.sort(t, ["s", "f"], descending=[True, False]),
                    fb.sort(t, "f", limit=1000),
                    fb.sort(t, ["f", "i", "s"]),
                    fb.dedup(t, ["s", "f"], keep="last"),
                    fb.dedup(t, ["i"], keep="none"),
                    fb.dedup(t, ["i", "f"]),
                )
            )
    finally:
        fb.set_num_threads(old)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert a.column("row").equals(b.column("row"))


def test_gil_is_released_during_kernels():
    import threading
    import time

    n = 3_000_000
    t = pa.table({"a": np.random.default_rng(0).random(n)})
    ticks = 0
    done = threading.Event()

    def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    th = threading.Thread(target=ticker)
    th.start()
    try:
        start = time.perf_counter()
        fb.sort(t, "a")
        elapsed = time.perf_counter() - start
    finally:
        done.set()
        th.join()
    # While the kernel ran, the Python thread kept running (it would be frozen otherwise).
    assert ticks >= max(2, int(elapsed * 1000) // 20)


def test_large_multi_chunk_tables_equal_contiguous():
    rng = np.random.default_rng(11)
    n = 200_000
    t = pa.table(
        {
            "s": pa.array(rng.integers(0, 3000, n)).cast(pa.string()),
            "b": pa.array(rng.integers(0, 40, n)).cast(pa.string()).cast(pa.large_binary()),
            "i": pa.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 100, n))),
            "d": pa.array(rng.integers(0, 10**6, n)).cast(pa.decimal128(25, 3)),
            "row": np.arange(n),
        }
    )
    # Uneven chunks, all large enough for the row locator, and tiny ones (concatenated).
    for cuts in ([0, 5000, 70_000, 71_024, 150_000, n], [0, 3, 10, 2000, n]):
        chunked = pa.concat_tables(
            [t.slice(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)]
        )
        assert chunked.column("s").num_chunks == len(cuts) - 1
        for by in (["s", "i"], ["b"], ["d", "s"]):
            assert fb.sort(chunked, by).equals(fb.sort(t, by))
            assert fb.dedup(chunked, by, keep="last").equals(fb.dedup(t, by, keep="last"))
