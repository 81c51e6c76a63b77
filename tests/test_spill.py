"""Spilling under the memory budget (issue 17): spilled results equal in-memory ones byte for
byte, spilling happens below the budget and not above it, reservations and spill files are
gone after success, errors, Ctrl-C and SIGKILL, and the temp directory's cap holds."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nasty import reference_dedup, reference_sort, tables
from test_group_by import AGGS, grouped
from test_join import join_inputs

import ferrobatch as fb
from ferrobatch import _core


@pytest.fixture(autouse=True)
def settings(tmp_path):
    """Each test spills into its own empty folder, forced spilling off unless it turns it on
    (also in the suite's forced pass); the settings are restored after it."""
    force, cap = _core.get_force_spill(), fb.get_max_temp_directory_size()
    compression = fb.get_spill_compression()
    _core.set_force_spill(False)
    fb.set_temp_directory(tmp_path / "spill")
    yield tmp_path / "spill"
    fb.set_spill_compression(compression)
    fb.set_temp_directory(None)
    fb.set_memory_limit(None)
    fb.set_max_temp_directory_size(cap)
    _core.set_force_spill(force)


def _left_nothing(folder) -> None:
    assert _core.memory_reserved() == 0
    assert _core.temp_bytes() == 0
    assert not folder.exists() or os.listdir(folder) == []


def _identical(a: pa.Table, b: pa.Table) -> None:
    """Same schema, rows and bytes of every value: floats bit for bit (NaN payloads and the
    sign of zero included), lists element by element. Dictionary columns compare by their
    values (a merge may lay out the dictionary differently)."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in a.column_names:
        _same_array(a.column(name).combine_chunks(), b.column(name).combine_chunks(), name)


def _same_array(x: pa.Array, y: pa.Array, name: str) -> None:
    if pa.types.is_dictionary(x.type):
        x, y = x.cast(x.type.value_type), y.cast(y.type.value_type)
    assert x.is_null().equals(y.is_null()), name
    if pa.types.is_list(x.type) or pa.types.is_large_list(x.type):
        assert x.value_lengths().fill_null(0).equals(y.value_lengths().fill_null(0)), name
        _same_array(x.flatten(), y.flatten(), name)
    elif pa.types.is_floating(x.type):
        width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.type.byte_width]
        bits = [np.asarray(c.fill_null(0).to_numpy(zero_copy_only=False)).view(width)
                for c in (x, y)]  # fmt: skip
        assert np.array_equal(*bits), name
    else:
        assert x.equals(y), name


def _spilled_and_in_memory(p: fb.Pipeline, threads: int, how: str) -> tuple[pa.Table, pa.Table]:
    """`p` on `threads` threads spilled (`how`: "force", or a run memory limit) and in memory;
    the spilled run leaves no reservation and no spill bytes behind."""
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        want = p.collect()
        if how == "force":
            _core.set_force_spill(True)
            try:
                got = p.collect()
            finally:
                _core.set_force_spill(False)
        else:
            got = p.collect(memory_limit=how)
    finally:
        fb.set_num_threads(before)
    assert _core.memory_reserved() == 0 and _core.temp_bytes() == 0
    return got, want


def _spill_files(p: fb.Pipeline) -> int:
    return sum(s.spill_files for s in p.last_report.stages)


def _big(n: int = 300_000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=n)
    f[rng.integers(0, n, n // 50)] = np.nan
    f[rng.integers(0, n, n // 50)] = -0.0
    return pa.table(
        {
            "k": pa.array(rng.integers(0, 500, n)),
            "f": pa.array(f, mask=rng.random(n) < 0.05),
            "s": pa.array([f"s{i % 911}" for i in range(n)]).dictionary_encode(),
            "v": pa.array([f"v{i % 13}" for i in range(n)], pa.string_view()),
            "row": pa.array(np.arange(n)),
        }
    )


@given(
    tables(max_rows=60),
    st.data(),
    st.integers(1, 12),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["force", "16KiB", "64KiB"]),
)
def test_spilled_sort_equals_the_reference_and_the_in_memory_sort(
    tk, data, batch_size, threads, how
) -> None:
    """Nasty keys (nulls, NaN, ±0.0, ±inf, unicode, dictionaries, views, time zones, extreme
    integers), random batch cuts and thread counts: the sort that spills runs and merges them
    gives the stable reference order, and the in-memory run's bytes."""
    table, keys = tk
    by = data.draw(st.permutations(keys))
    desc = data.draw(st.lists(st.booleans(), min_size=len(by), max_size=len(by)))
    nl = data.draw(st.lists(st.booleans(), min_size=len(by), max_size=len(by)))
    p = fb.scan(table, batch_size=batch_size).sort(by, descending=desc, nulls_last=nl)
    got, want = _spilled_and_in_memory(p, threads, how)
    assert got.column("row").to_pylist() == reference_sort(table, by, desc, nl)
    _identical(got, want)


@given(
    tables(max_rows=60),
    st.data(),
    st.integers(1, 12),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["force", "16KiB", "64KiB"]),
)
def test_spilled_dedup_equals_the_reference_and_the_in_memory_dedup(
    tk, data, batch_size, threads, how
) -> None:
    """Every `keep` over the spilled input (two passes, the per-key state spilled too under
    force) keeps the reference's rows in input order, the in-memory run's bytes."""
    table, keys = tk
    subset = data.draw(st.permutations(keys))
    keep = data.draw(st.sampled_from(["first", "last", "none"]))
    p = fb.scan(table, batch_size=batch_size).dedup(subset, keep=keep)
    got, want = _spilled_and_in_memory(p, threads, how)
    assert got.column("row").to_pylist() == reference_dedup(table, subset, keep)
    _identical(got, want)


@given(
    grouped(max_rows=60),
    st.integers(1, 12),
    st.sampled_from([1, 2, 4]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["force", "64KiB"]),
)
def test_spilled_group_by_equals_the_in_memory_group_by(
    data, batch_size, threads, dropna, sort, how
) -> None:
    """Every aggregate (float sums, means, moments, median, first / last ...) over nasty keys:
    the group-by whose state went to hash partitions on disk gives the in-memory run's
    groups in its order, float bits included. The pipeline folds rows into its resident
    state, which spills as a state table and then one-row states."""
    table, keys = data
    p = fb.scan(table, batch_size=batch_size).group_by(keys, AGGS, dropna=dropna, sort=sort)
    got, want = _spilled_and_in_memory(p, threads, how)
    _identical(got, want)


@pytest.mark.parametrize("sort", [False, True])
def test_group_by_spills_below_the_budget_and_not_above(settings, sort) -> None:
    t = _big()
    aggs = {"sf": ("f", "sum"), "mf": ("f", "mean"), "sd": ("f", "std"), "n": (None, "size"),
            "med": ("f", "median"), "first": ("v", "first")}  # fmt: skip
    p = fb.scan(t, batch_size=20_000).group_by(["k", "s"], aggs, sort=sort)
    want = p.collect()
    assert _spill_files(p) == 0
    _identical(p.collect(memory_limit="1GiB"), want)
    stage = p.last_report.stages[0]
    assert stage.spill_files == 0 and 0 < stage.peak_reserved_bytes <= 1 << 30
    _identical(p.collect(memory_limit="16MiB"), want)
    stage = p.last_report.stages[0]
    # The whole input is one run of the partial step, whose groups alone exceed 16 MiB:
    # the state spills at its first merge, before it reserves anything; what the report
    # shows is reserved when the partitions are merged (it showed 0).
    assert stage.spill_files > 1 and 0 < stage.peak_reserved_bytes <= 16 << 20
    assert "(may spill)" in p.explain()
    _left_nothing(settings)


def test_group_by_float_bits_do_not_depend_on_batches_threads_or_the_budget(settings) -> None:
    """Float sums, means and variances over several of the partial step's runs (of a
    fixed number of input rows, not batches), of values spanning 10^-12..10^12, come out bit
    for bit the same whatever the batch size, thread count or memory limit."""
    rng = np.random.default_rng(11)
    n = 2_500_000  # more than two runs
    f = rng.normal(size=n) * 10.0 ** rng.integers(-12, 12, n)
    t = pa.table({"k": rng.integers(0, 300, n), "f": f})
    aggs = {"s": ("f", "sum"), "m": ("f", "mean"), "v": ("f", "var")}
    want = fb.scan(t).group_by("k", aggs).collect()
    before = fb.get_num_threads()
    try:
        for batch_size, threads, limit in [(1000, 1, None), (77_777, 2, None), (5000, 2, "1MiB")]:
            fb.set_num_threads(threads)
            p = fb.scan(t, batch_size=batch_size).group_by("k", aggs)
            _identical(p.collect(memory_limit=limit), want)
    finally:
        fb.set_num_threads(before)
    _left_nothing(settings)


def test_group_by_float_bits_with_mostly_distinct_keys_do_not_depend_on_the_cuts(settings) -> None:
    """Mostly distinct keys: the partial step's first run barely reduces its rows, so the
    later runs are cut smaller. That is decided from the first run's rows alone, never from
    where a batch or a wave ends: float sums and means of groups spread over several runs
    come out bit for bit the same whatever the batch size, thread count or memory limit,
    and equal pandas' up to rounding."""
    rng = np.random.default_rng(5)
    n = 1_100_000
    f = rng.normal(size=n) * 10.0 ** rng.integers(-12, 12, n)
    t = pa.table({"k": rng.integers(0, 400_000, n), "f": f})
    aggs = {"s": ("f", "sum"), "m": ("f", "mean"), "n": (None, "size")}
    want = fb.scan(t).group_by("k", aggs).collect()
    before = fb.get_num_threads()
    try:
        for batch_size, threads, limit in [
            (1000, 1, None),
            (77_777, 2, None),
            (300_000, 2, None),
            (5000, 2, "4MiB"),
        ]:
            fb.set_num_threads(threads)
            p = fb.scan(t, batch_size=batch_size).group_by("k", aggs)
            _identical(p.collect(memory_limit=limit), want)
    finally:
        fb.set_num_threads(before)
    ref = (
        t.to_pandas().groupby("k", sort=False).agg(s=("f", "sum"), m=("f", "mean"), n=("f", "size"))
    )
    assert want.column("k").to_pylist() == ref.index.tolist()
    assert want.column("n").to_pylist() == ref["n"].tolist()
    np.testing.assert_allclose(
        want.column("s").to_numpy(), ref["s"].to_numpy(), rtol=1e-9, atol=1e-3
    )
    np.testing.assert_allclose(
        want.column("m").to_numpy(), ref["m"].to_numpy(), rtol=1e-9, atol=1e-3
    )
    _left_nothing(settings)


def test_resident_group_by_spilled_midway_keeps_the_float_bits(settings) -> None:
    """The resident state spilled part way through (its groups written as one state table,
    every later row as its own one-row state) gives every group the bits of the run that
    stayed in memory: float sums, means, variances and correlations of values spanning
    10^-12..10^12 with nulls, ±0.0 and NaN, and their min / max / first / last (ties keep
    the earliest row) and a string's, whatever the batch size and thread count."""
    rng = np.random.default_rng(21)
    n = 400_000
    f = rng.normal(size=n) * 10.0 ** rng.integers(-12, 12, n)
    f[rng.integers(0, n, n // 20)] = np.nan
    f[rng.integers(0, n, n // 20)] = -0.0
    g = rng.normal(size=n) * 10.0 ** rng.integers(-3, 3, n)
    t = pa.table(
        {
            "k": rng.integers(0, 60_000, n),
            "s": pa.array([f"key {i}" for i in rng.integers(0, 500, n)]),
            "f": pa.array(f, mask=rng.random(n) < 0.1),
            "g": g,
            "t": pa.array([f"v{i}" for i in rng.integers(0, 10**6, n)]),
        }
    )
    aggs = {"sf": ("f", "sum"), "mf": ("f", "mean"), "vf": ("f", "var"),
            "sd": ("g", "std"), "r": ("f", "corr", "g"), "n": ("f", "count"),
            "lo": ("f", "min"), "hi": ("f", "max"), "ff": ("f", "first"), "lf": ("f", "last"),
            "lt": ("t", "min"), "ht": ("t", "max")}  # fmt: skip
    for keys in (["k"], ["s", "k"]):
        want = fb.scan(t).group_by(keys, aggs).collect()
        before = fb.get_num_threads()
        try:
            for batch_size, threads in [(3_000, 1), (50_000, 2)]:
                fb.set_num_threads(threads)
                p = fb.scan(t, batch_size=batch_size).group_by(keys, aggs)
                _identical(p.collect(memory_limit="4MiB"), want)
                assert _spill_files(p) > 0
        finally:
            fb.set_num_threads(before)
    _left_nothing(settings)


def test_group_by_string_keys_over_many_runs_equal_pandas(settings) -> None:
    """The runs after the first wave intern their string keys against the values the state
    has learnt (a few new values still arrive late, and a second key's values are mostly
    distinct, so that column is forgotten): the groups, their order and sums are pandas',
    in memory, with one thread and under a limit that spills."""
    rng = np.random.default_rng(8)
    n = 900_000
    long = ("x" * 20 + f"{i:05}" for i in range(3000))
    pool = np.array(["", *(f"ä漢{i}" for i in range(3000)), *long], dtype=object)
    s = rng.choice(pool, n)
    s[rng.choice(n, 500, replace=False)] = [f"late{i}" for i in range(500)]
    s[rng.random(n) < 0.01] = None
    t = pa.table({"s": pa.array(s, pa.string()),
                  "u": pa.array([f"u{i}" for i in rng.integers(0, n, n)]),
                  "v": rng.integers(-(10**6), 10**6, n)})  # fmt: skip
    df = t.to_pandas()
    ref = df.groupby("s", sort=False, dropna=False).agg(n=("v", "size"), sv=("v", "sum"))
    ref2 = df.groupby(["s", "u"], sort=False, dropna=False).agg(sv=("v", "sum"))
    keys = [None if k != k else k for k in ref.index]
    keys2 = [(None if a != a else a, b) for a, b in ref2.index]
    before = fb.get_num_threads()
    try:
        for threads, limit in [(2, None), (1, None), (2, "8MiB")]:
            fb.set_num_threads(threads)
            p = fb.scan(t, batch_size=50_000)
            got = p.group_by("s", {"n": (None, "size"), "sv": ("v", "sum")}).collect(
                memory_limit=limit
            )
            assert got.column("s").to_pylist() == keys
            assert got.column("n").to_pylist() == ref["n"].tolist()
            assert got.column("sv").to_pylist() == ref["sv"].tolist()
            got2 = p.group_by(["s", "u"], {"sv": ("v", "sum")}).collect(memory_limit=limit)
            assert list(zip(got2.column("s").to_pylist(), got2.column("u").to_pylist(),
                            strict=True)) == keys2  # fmt: skip
            assert got2.column("sv").to_pylist() == ref2["sv"].tolist()
    finally:
        fb.set_num_threads(before)
    _left_nothing(settings)


@pytest.mark.parametrize("sort", [False, True])
def test_group_by_partition_larger_than_the_budget_is_split_again(settings, sort) -> None:
    """200k groups under 128 KiB: a hash partition's groups do not fit, so it is split by
    further hash bits (more files than the 128 partitions and their 128 runs) into as many
    files as its size needs — not 128 each, which made 34 261 files of a few rows — and the
    runs are merged in passes; the result is the in-memory run's."""
    rng = np.random.default_rng(1)
    n = 200_000
    t = pa.table({"k": rng.permutation(n), "f": rng.normal(size=n),
                  "s": pa.array([f"s{i % 1000}" for i in range(n)])})  # fmt: skip
    aggs = {"sum": ("f", "sum"), "n": (None, "size"), "m": ("f", "mean")}
    p = fb.scan(t, batch_size=1_000).group_by(["k", "s"], aggs, sort=sort)
    want = p.collect()
    _identical(p.collect(memory_limit="128KiB"), want)
    stage = p.last_report.stages[0]
    assert 2 * 128 < stage.spill_files < 128 * 128
    assert stage.peak_reserved_bytes <= 128 << 10
    _left_nothing(settings)


def test_one_group_larger_than_the_budget_is_a_memory_limit_error(settings) -> None:
    """A median's values of one group cannot be split: MemoryLimitError naming it, and
    nothing is left behind."""
    t = pa.table({"k": np.zeros(300_000, dtype=np.int64), "f": np.arange(300_000.0)})
    p = fb.scan(t, batch_size=1_000).group_by("k", {"m": ("f", "median")})
    with pytest.raises(fb.MemoryLimitError, match="group-by .*median"):
        p.collect(memory_limit="512KiB")
    _left_nothing(settings)


@given(
    join_inputs(),
    st.sampled_from(["inner", "left", "right", "outer", "semi", "anti"]),
    st.booleans(),
    st.integers(1, 10),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["force", "64KiB"]),
)
def test_spilled_join_equals_the_kernel_and_the_in_memory_join(
    inp, how, nulls_equal, batch_size, threads, how_spill
) -> None:
    """A join whose build side went to hash partitions (the probe side after it), joined
    partition by partition and put back in order, gives `fb.join`'s table and the in-memory
    run's bytes for every `how`, with mixed key types, nulls, NaN and -0.0 keys."""
    left, right, lk, rk = inp
    kw = {"left_on": lk, "right_on": rk, "how": how, "nulls_equal": nulls_equal}
    try:
        kernel = fb.join(left, right, **kw)
    except TypeError:  # uint64 against signed keys in a right / outer join
        return
    p = fb.scan(left, batch_size=batch_size).join(fb.scan(right, batch_size=batch_size), **kw)
    got, want = _spilled_and_in_memory(p, threads, how_spill)
    _identical(got, want)
    _identical(got, kernel.cast(got.schema))


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
def test_join_spills_below_the_budget_and_not_above(settings, how) -> None:
    rng = np.random.default_rng(5)
    x = pa.table({"id": rng.integers(0, 300_000, 600_000), "v": rng.normal(size=600_000)})
    n = 400_000
    y = pa.table({"id": rng.integers(0, 400_000, n), "w": rng.normal(size=n),
                  "s": pa.array([f"s{i % 97}" for i in range(n)])})  # fmt: skip
    p = fb.scan(x, batch_size=50_000).join(fb.scan(y, batch_size=50_000), on="id", how=how)
    want = p.collect()
    assert _spill_files(p) == 0
    _identical(p.collect(memory_limit="3MiB"), want)
    join = p.last_report.stages[0]
    assert join.spill_files > 1 and 0 < join.peak_reserved_bytes <= 3 << 20
    assert "(may spill)" in p.explain()
    _left_nothing(settings)


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
def test_join_with_one_key_of_more_build_rows_than_the_budget(settings, how) -> None:
    """One key's build rows alone exceed the budget: their partition is joined in chunks
    and the result is still the in-memory join's, in its order."""
    rng = np.random.default_rng(11)
    n = 150_000
    hot = np.where(rng.random(n) < 0.8, 7, rng.integers(0, 5_000, n))
    build = pa.table({"id": pa.array(hot, mask=rng.random(n) < 0.01), "w": rng.normal(size=n),
                      "s": pa.array([f"s{i % 89}" for i in range(n)])})  # fmt: skip
    m = 3_000
    ids = np.where(np.arange(m) % 997 == 0, 7, rng.integers(0, 6_000, m))
    probe = pa.table({"id": pa.array(ids, mask=rng.random(m) < 0.02), "v": np.arange(m)})
    left, right = (build, probe) if how == "right" else (probe, build)
    p = fb.scan(left, batch_size=10_000).join(fb.scan(right, batch_size=10_000), on="id", how=how)
    got, want = _spilled_and_in_memory(p, 2, "2MiB")
    assert p.last_report.stages[0].spill_files > 1
    _identical(got, want)
    _identical(got, fb.join(left, right, on="id", how=how).cast(got.schema))
    _left_nothing(settings)


@given(
    join_inputs(),
    st.integers(1, 10),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["force", "64KiB"]),
)
def test_spilled_cross_join_equals_the_kernel_and_the_in_memory_join(
    inp, batch_size, threads, how_spill
) -> None:
    """A cross join's build side past the budget (or forced) goes to one partition, joined
    in chunks: every probe row with every build row, in the kernel's left-major order."""
    left, right, _, _ = inp
    kernel = fb.join(left, right, how="cross", max_output_rows=None)
    p = fb.scan(left, batch_size=batch_size).join(
        fb.scan(right, batch_size=batch_size), how="cross"
    )
    got, want = _spilled_and_in_memory(p, threads, how_spill)
    _identical(got, want)
    _identical(got, kernel.cast(got.schema))


def test_cross_join_with_a_build_side_larger_than_the_budget(settings) -> None:
    """80k build rows under 1 MiB: joined in chunks of build rows that fit, the probe
    rows read once per chunk, and the output (every probe row with every build row) put
    in left-major order; the in-memory run's bytes."""
    rng = np.random.default_rng(13)
    left = pa.table({"a": rng.integers(0, 10, 12), "s": [f"l{i}" for i in range(12)]})
    n = 80_000
    right = pa.table({"b": rng.normal(size=n), "t": [f"r{i % 50}" for i in range(n)]})
    p = fb.scan(left, batch_size=5).join(fb.scan(right, batch_size=5_000), how="cross")
    got, want = _spilled_and_in_memory(p, 2, "1MiB")
    assert p.last_report.stages[0].spill_files > 1
    assert p.last_report.stages[0].peak_reserved_bytes <= 1 << 20
    _identical(got, want)
    _identical(got, fb.join(left, right, how="cross").cast(got.schema))
    _left_nothing(settings)


@pytest.mark.parametrize("keep", ["first", "last", "none"])
def test_dedup_spills_below_the_budget_and_not_above(settings, keep) -> None:
    t = _big()
    p = fb.scan(t, batch_size=20_000).dedup(["k", "v"], keep=keep)
    want = p.collect()
    assert _spill_files(p) == 0
    _identical(p.collect(memory_limit="8MiB"), want)
    assert p.last_report.stages[0].spill_files == 1  # the input; the keys' state fits
    assert "(may spill)" in p.explain()
    # Every row its own key: the keys' state spills hash partitions too.
    p = fb.scan(t, batch_size=20_000).dedup(["s", "row"], keep=keep)
    want = p.collect()
    _identical(p.collect(memory_limit="8MiB"), want)
    assert p.last_report.stages[0].spill_files > 1
    _left_nothing(settings)


def test_sort_spills_below_the_budget_and_not_above(settings) -> None:
    t = _big()
    p = fb.scan(t, batch_size=20_000).sort(["s", "f", "k"], descending=[True, False, False])
    want = p.collect()
    assert _spill_files(p) == 0
    got = p.collect(memory_limit="8MiB")
    sort = p.last_report.stages[0]
    assert sort.spill_files > 1 and sort.spilled_bytes > 0 and sort.spill_seconds > 0
    assert 0 < sort.peak_reserved_bytes <= 8 << 20
    _identical(got, want)
    fb.set_memory_limit("8MiB")  # the process-wide limit spills too
    _identical(p.collect(), want)
    assert _spill_files(p) > 1
    fb.set_memory_limit(None)
    _identical(p.collect(memory_limit="4GiB"), want)
    assert _spill_files(p) == 0
    assert "(may spill)" in p.explain()
    assert "(may spill)" not in p.head(3).explain()  # a top-k never spills
    _left_nothing(settings)


def test_parquet_batches_shrink_to_a_small_budget(settings, tmp_path) -> None:
    """Wide rows in default-sized batches (131 072 rows, about 16 MiB) under a 6 MiB limit:
    the scan cuts its row groups into batches of an eighth of the limit, so the sort takes
    them and spills instead of refusing the first batch (MemoryLimitError before); the rows
    and their order are the in-memory run's, and a generous limit keeps the file's batches."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    n = 150_000
    t = pa.table({"k": rng.integers(0, 1_000, n),
                  "pad": pa.array([f"{i:0>100}" for i in rng.integers(0, 10**9, n)]),
                  "row": np.arange(n)})  # fmt: skip
    path = tmp_path / "wide.parquet"
    pq.write_table(t, path, row_group_size=n)
    p = fb.scan(path).sort("k")
    want = p.collect()
    got = p.collect(memory_limit="6MiB")
    sort = p.last_report.stages[0]
    scan = p.last_report.stages[1]
    _identical(got, want)
    assert sort.spill_files > 1 and 0 < sort.peak_reserved_bytes <= 6 << 20
    # About 110 bytes a row: batches of at most 6 MiB / 8 / 110 = 7 149 rows.
    assert scan.batches >= n // 7_149
    p.collect(memory_limit="4GiB")
    assert p.last_report.stages[1].batches == -(-n // 131_072)
    _left_nothing(settings)


def test_a_merge_wider_than_its_fan_in_goes_in_passes(settings) -> None:
    """Forced spilling of 1,000-row batches makes ~150 runs: more than one merge can take."""
    t = _big(150_000, seed=3)
    p = fb.scan(t, batch_size=1000).sort(["k", "v"])
    want = p.collect()
    _core.set_force_spill(True)
    got = p.collect()
    assert _spill_files(p) > 100
    _identical(got, want)
    _left_nothing(settings)


def test_a_batch_larger_than_the_budget_is_a_memory_limit_error(settings) -> None:
    p = fb.scan(_big(50_000), batch_size=50_000).sort("k")
    with pytest.raises(fb.MemoryLimitError, match="sort needs .* run's memory_limit"):
        p.collect(memory_limit="64KiB")
    with pytest.raises(MemoryError):
        p.collect(memory_limit=1000)
    _left_nothing(settings)


def _spilling(kind: str, t: pa.Table, src: fb.Pipeline | None = None) -> fb.Pipeline:
    """A pipeline whose `kind` operator spills under a 1 MiB budget, over `src` (a scan of
    `t` by default)."""
    src = src or fb.scan(t, batch_size=5000)
    return {
        "sort": lambda: src.sort("row"),
        "group_by": lambda: src.group_by(["row"], {"n": (None, "size"), "f": ("f", "sum")}),
        "join": lambda: src.join(fb.scan(t.select(["row", "k"]), batch_size=5000), on="row"),
        "dedup": lambda: src.dedup(["k", "row"], keep="last"),
    }[kind]()


@pytest.mark.parametrize("kind", ["sort", "group_by", "join", "dedup"])
def test_errors_and_interrupts_leave_nothing(settings, kind) -> None:
    """An error or a Ctrl-C while the operator's output streams out (its files open), and
    while its input still comes in: the reservations and the spill files are all gone."""
    t = _big(100_000)

    def fail_late(b: pa.RecordBatch) -> pa.RecordBatch:
        if b.num_rows and b.column("row")[0].as_py() > 50_000:
            raise ValueError("boom")
        return b

    def interrupt(b: pa.RecordBatch) -> pa.RecordBatch:
        if b.num_rows:
            raise KeyboardInterrupt
        return b

    p = _spilling(kind, t)
    assert p.collect(memory_limit="1MiB").num_rows > 0
    assert _spill_files(p) > 0
    _left_nothing(settings)
    with pytest.raises(ValueError, match="boom"):
        p.map_batches(fail_late).collect(memory_limit="1MiB")
    _left_nothing(settings)
    with pytest.raises(KeyboardInterrupt):
        p.map_batches(interrupt).collect(memory_limit="1MiB")
    _left_nothing(settings)
    late = fb.scan(t, batch_size=5000).map_batches(
        lambda b: interrupt(b) if b.num_rows and b.column("row")[0].as_py() > 60_000 else b
    )
    with pytest.raises(KeyboardInterrupt):
        _spilling(kind, t, late).collect(memory_limit="1MiB")
    _left_nothing(settings)


def test_max_temp_directory_size_is_enforced(settings) -> None:
    p = fb.scan(_big(), batch_size=20_000).sort("f")
    fb.set_max_temp_directory_size(100_000)
    assert fb.get_max_temp_directory_size() == 100_000
    with pytest.raises(OSError, match="max_temp_directory_size"):
        p.collect(memory_limit="4MiB")
    _left_nothing(settings)
    fb.set_max_temp_directory_size("90%")
    assert fb.get_max_temp_directory_size() == "90%"
    assert p.collect(memory_limit="4MiB").num_rows == 300_000


@pytest.mark.parametrize("page_index", [False, True])
def test_parquet_row_groups_are_read_in_pieces_under_a_limit(settings, tmp_path, page_index):
    """Under a memory limit a row group larger than a batch is decoded a batch's rows at a
    time (a wave decodes little); the rows, their order and the counts are those of the
    unlimited run, with and without a pushed filter and a page index."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = _big(100_000, seed=5).drop_columns(["v"])
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=40_000, data_page_size=4096,
                   write_page_index=page_index)  # fmt: skip
    for p in [
        fb.scan(path, batch_size=7000),
        fb.scan(path, batch_size=7000).filter(pc.field("row") >= 33_333),
        fb.scan(path, batch_size=7000).filter(pc.field("k") < 30),
        fb.scan(path, batch_size=7000).sort(["s", "f"]),
        fb.scan(path, batch_size=7000).group_by("k", {"m": ("f", "mean"), "n": (None, "size")}),
    ]:
        want = p.collect()
        _identical(p.collect(memory_limit="8MiB"), want)
        scan = p.last_report.stages[-1]
        assert scan.stage.startswith("scan") and scan.rows_in <= t.num_rows
    _identical(fb.scan(path, batch_size=7000).collect(memory_limit="8MiB"), t)
    _left_nothing(settings)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pieces_of_a_row_group_read_together_are_the_file(settings, tmp_path, threads) -> None:
    """Under a limit the pieces of a row group that a wave reads are decoded by one reader
    per column, kept for the row group's next pieces: every batch size (a piece per row
    group, pieces that end short of it, one row), many files (one of no rows) and row
    groups of unequal sizes, a run stopped early by a head and a run after it give
    pyarrow's rows in order."""
    import pyarrow.parquet as pq

    t = _big(60_000, seed=9).drop_columns(["v"])
    paths = []
    cuts = [
        (0, 25_000, 9_000),
        (25_000, 25_000, 10),
        (25_000, 25_001, 10),
        (25_001, 60_000, 20_000),
    ]
    for i, (lo, hi, rg) in enumerate(cuts):
        paths.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(t.slice(lo, hi - lo), paths[-1], row_group_size=rg, data_page_size=2048)
    want = pq.read_table(paths)
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        for size in [1, 1000, 7000, 20_000, 50_000]:
            scan = fb.scan(paths, batch_size=size) if size > 1 else fb.scan(paths[2], batch_size=1)
            got = scan.collect(memory_limit="8MiB")
            _identical(got, want if size > 1 else pq.read_table(paths[2]))
        p = fb.scan(paths, batch_size=3000)
        _identical(p.head(10_000).collect(memory_limit="8MiB"), want.slice(0, 10_000))
        _identical(p.sort("row", descending=True).collect(memory_limit="8MiB"),
                   want.sort_by([("row", "descending")]))  # fmt: skip
    finally:
        fb.set_num_threads(before)
    _left_nothing(settings)


def test_a_parquet_writer_buffer_is_held_from_the_budget(settings, tmp_path) -> None:
    """Under a limit the writer buffers at most a quarter of it before encoding, and that
    quarter is reserved while the run writes (the operators leave it room), then freed."""
    seen: list[int] = []

    def watch(b: pa.RecordBatch) -> pa.RecordBatch:
        if b.num_rows:
            seen.append(_core.memory_reserved())
        return b

    p = fb.scan(_big(20_000), batch_size=5000).map_batches(watch)
    p.write_parquet(tmp_path / "out.parquet", memory_limit="64MiB")
    assert seen and min(seen) >= 16 << 20
    seen.clear()
    p.write_parquet(tmp_path / "out.parquet", overwrite=True)
    assert seen and max(seen) == 0
    _left_nothing(settings)


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_allocator_gives_freed_pages_back_past_a_cap_while_a_budget_is_in_force(
    settings,
) -> None:
    """Without a budget ferrobatch's allocator keeps freed pages 10 s (for speed). While a
    run or the process has a limit it keeps them only until the process's resident memory
    passes what it held when the tightest limit came into force, plus that limit, plus 32
    MiB, and then gives them all back (each call checks every 20 ms and when it ends), and
    a limit coming into force gives back what was kept before it."""
    slack, near = 32 << 20, 64 << 20
    gc.collect()  # runs of earlier tests left unfinished end with their readers
    assert _core.allocator_retention_cap() is None
    seen: list[int | None] = []

    def watch(b: pa.RecordBatch) -> pa.RecordBatch:
        if b.num_rows:  # (not the empty batch that finds the output schema)
            seen.append(_core.allocator_retention_cap())
        return b

    def held_at_start(cap: int | None, limit: int) -> int:
        assert cap is not None
        return cap - limit - slack

    p = fb.scan(_big(20_000), batch_size=5000).map_batches(watch).sort("k")
    for limit in (4 << 20, 64 << 20, 8 << 30):
        before = _resident()
        p.collect(memory_limit=limit)
        assert seen and len(set(seen)) == 1, limit
        assert abs(held_at_start(seen[0], limit) - before) < near, limit
        assert _core.allocator_retention_cap() is None
        seen.clear()
    p.collect()
    assert set(seen) == {None}
    seen.clear()
    fb.set_memory_limit("1GiB")
    try:
        process = _core.allocator_retention_cap()
        assert abs(held_at_start(process, 1 << 30) - _resident()) < near
        p.collect(memory_limit="64MiB")  # the tighter of the two
        assert abs(held_at_start(seen[0], 64 << 20) - _resident()) < near
        assert abs(held_at_start(_core.allocator_retention_cap(), 1 << 30) - _resident()) < near
        with pytest.raises(ValueError):
            p.collect(memory_limit="-1")
        assert _core.allocator_retention_cap() is not None
    finally:
        fb.set_memory_limit(None)
    assert _core.allocator_retention_cap() is None
    # Under the cap freed pages are kept (a run allocates them afresh without page faults);
    # a tighter limit coming into force gives them back at once.
    t = pa.table({"a": np.random.default_rng(0).integers(0, 1 << 40, 4_000_000)})
    before = _resident()
    fb.set_memory_limit("1GiB")
    try:
        for _ in range(3):
            assert fb.sort(t, "a").num_rows == t.num_rows
        gc.collect()
        assert _resident() - before >= 48 << 20
        fb.set_memory_limit("64MiB")
        assert _resident() - before <= 24 << 20
    finally:
        fb.set_memory_limit(None)
    _left_nothing(settings)


def test_lz4_spill_files_give_the_same_result_in_fewer_bytes(settings) -> None:
    """Compressed spill files change the bytes written, never the result: a sort and a
    join spilled both ways equal the in-memory runs."""
    t = _big()
    left, right = t.slice(0, 100_000), t.slice(50_000, 200_000)
    pipelines = [
        fb.scan(t, batch_size=20_000).sort(["s", "f"]),
        fb.scan(left, batch_size=10_000).join(fb.scan(right), on="row", how="left"),
    ]
    for p in pipelines:
        want = p.collect()
        spilled = {}
        for compression in (None, "lz4"):
            fb.set_spill_compression(compression)
            assert fb.get_spill_compression() == compression
            _identical(p.collect(memory_limit="4MiB"), want)
            spilled[compression] = sum(s.spilled_bytes for s in p.last_report.stages)
        assert 0 < spilled["lz4"] < spilled[None]
    _left_nothing(settings)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="lz4"):
        fb.set_spill_compression("zstd")
    with pytest.raises(TypeError):
        fb.set_spill_compression(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fb.set_temp_directory(3)  # type: ignore[arg-type]
    with pytest.raises(NotADirectoryError):
        fb.set_temp_directory(__file__)
    for bad in ("lots", -1, "0%", "101%"):
        with pytest.raises(ValueError):
            fb.set_max_temp_directory_size(bad)
    with pytest.raises(TypeError):
        fb.set_max_temp_directory_size(1.5)  # type: ignore[arg-type]
    p = fb.scan(pa.table({"a": [1]})).sort("a")
    with pytest.raises(ValueError, match="memory_limit"):
        p.collect(memory_limit="huge")
    with pytest.raises(TypeError, match="memory_limit"):
        p.collect(memory_limit=1.5)  # type: ignore[arg-type]


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_environment_variables(tmp_path) -> None:
    folder = tmp_path / "from-env"
    r = _python(
        """
        import ferrobatch as fb
        from ferrobatch import _core
        print(fb.get_temp_directory(), fb.get_max_temp_directory_size(), _core.get_force_spill(),
              fb.get_spill_compression())
        """,
        FERROBATCH_TEMP_DIR=str(folder),
        FERROBATCH_MAX_TEMP_DIRECTORY_SIZE="1GiB",
        FERROBATCH_FORCE_SPILL="1",
        FERROBATCH_SPILL_COMPRESSION="LZ4",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(folder), str(2**30), "True", "lz4"]
    for var, value in [
        ("FERROBATCH_MAX_TEMP_DIRECTORY_SIZE", "lots"),
        ("FERROBATCH_FORCE_SPILL", "yes please"),
        ("FERROBATCH_SPILL_COMPRESSION", "gzip"),
    ]:
        r = _python("import ferrobatch", **{var: value})
        assert r.returncode != 0 and var in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_or_interrupted_process_leaves_no_spill_file(tmp_path, sig) -> None:
    """SIGKILL or SIGINT (Ctrl-C) while the sort is spilling and merging: its files never
    had names, and the interrupted process stops with KeyboardInterrupt."""
    folder = tmp_path / "killed"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                import numpy as np, pyarrow as pa, ferrobatch as fb
                t = pa.table({"k": np.random.default_rng(0).integers(0, 10**9, 2_000_000)})
                def slow(b):
                    if b.num_rows:
                        print("merging", flush=True)
                        time.sleep(0.5)
                    return b
                fb.scan(t, batch_size=50_000).sort("k").map_batches(slow).collect(
                    memory_limit="8MiB")
                """
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FERROBATCH_TEMP_DIR": str(folder)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "merging"
        assert os.listdir(folder) == []  # anonymous files: nothing to see even now
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert os.listdir(folder) == []
