"""fb.scan / Pipeline: every source kind, build-time errors, pushdown visible and effective,
streaming stages equal to the in-memory kernels, shared sub-plans, and run reports whose
counts are the real row counts."""

from __future__ import annotations

import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nasty import assert_same_bits, canonical
from test_group_by import AGGS, grouped
from test_join import join_inputs

import ferrobatch as fb


def table(n: int = 1000) -> pa.Table:
    return pa.table({
        "k": [i % 7 for i in range(n)],
        "s": [f"s{i % 13}" for i in range(n)],
        "v": [float(i) for i in range(n)],
        "w": list(range(n)),
    })  # fmt: skip


def test_sources_of_every_kind(tmp_path) -> None:
    t = table()
    pq.write_table(t.slice(0, 500), tmp_path / "a.parquet")
    pq.write_table(t.slice(500), tmp_path / "b.parquet")
    feather.write_feather(t, tmp_path / "t.arrow")
    pacsv.write_csv(t, tmp_path / "t.csv")
    sources = [
        t,
        t.to_batches()[0],
        pa.RecordBatchReader.from_batches(t.schema, t.to_batches(max_chunksize=100)),
        str(tmp_path / "a.parquet"),
        str(tmp_path / "*.parquet"),
        [tmp_path / "a.parquet", tmp_path / "b.parquet"],
        str(tmp_path / "t.arrow"),
        str(tmp_path / "t.csv"),
        ds.dataset(t),
    ]
    for src in sources:
        got = fb.scan(src).collect()
        want = t.slice(0, 500) if src == str(tmp_path / "a.parquet") else t
        if isinstance(src, pa.RecordBatch):
            want = pa.Table.from_batches([src])
        assert got.num_rows == want.num_rows, src
        assert got.column("w").to_pylist() == want.column("w").to_pylist()
    d = tmp_path / "dir"
    d.mkdir()
    pq.write_table(t, d / "part-0.parquet")
    assert fb.scan(d).collect().num_rows == t.num_rows


def test_reader_runs_once() -> None:
    t = table()
    p = fb.scan(pa.RecordBatchReader.from_batches(t.schema, t.to_batches()))
    assert p.collect().num_rows == t.num_rows
    with pytest.raises(ValueError, match="only once"):
        p.collect()


def test_plan_errors_before_reading() -> None:
    p = fb.scan(table())
    with pytest.raises(KeyError, match="nope"):
        p.filter(pc.field("nope") > 1)
    with pytest.raises(TypeError, match="boolean"):
        p.filter(pc.field("v") + 1)
    with pytest.raises(TypeError):
        p.with_columns(x=pc.field("s") + 1)
    with pytest.raises(KeyError, match="zz"):
        p.select(["k", "zz"])
    with pytest.raises(KeyError):
        p.group_by("zz", {"n": (None, "size")})
    with pytest.raises(TypeError):
        p.group_by("k", {"x": ("s", "sum")})
    with pytest.raises(KeyError):
        p.rename({"zz": "a"})
    with pytest.raises(KeyError):
        p.sort("zz")
    with pytest.raises(KeyError):
        p.join(table(), on="zz")


def test_stages_equal_the_kernels_and_receiver_unchanged() -> None:
    t = table()
    base = fb.scan(t, batch_size=64).filter(pc.field("k") != 3)
    enriched = base.with_columns(x=pc.field("v") * 2, k=pc.field("k") + 1)
    assert base.schema == t.schema  # the receiver is unchanged
    rows = t.filter(pc.field("k") != 3)
    want_rows = rows.set_column(0, "k", pc.add(rows.column("k"), 1)).append_column(
        "x", pc.multiply(rows.column("v"), 2)
    )
    assert enriched.collect().equals(want_rows)
    aggs = {"n": (None, "size"), "s": ("v", "sum"), "m": ("s", "max"), "med": ("v", "median")}
    got = enriched.group_by(["k"], aggs, sort=True).collect()
    assert got.equals(fb.group_by(want_rows, ["k"], aggs, sort=True))
    # One pipeline feeding two others (a shared sub-plan), joined back together.
    totals = enriched.group_by("k", {"total": ("v", "sum")})
    joined = enriched.join(totals, on="k", how="left").sort(["w"]).collect()
    want = fb.sort(fb.join(want_rows, fb.group_by(want_rows, "k", {"total": ("v", "sum")}),
                           on="k", how="left"), ["w"])  # fmt: skip
    assert joined.equals(want)
    assert enriched.dedup(["k"]).collect().equals(fb.dedup(want_rows, ["k"]))
    assert enriched.head(5).collect().equals(want_rows.slice(0, 5))
    sel = enriched.select({"kk": "k", "y": pc.field("x") + 1}).rename({"kk": "key"})
    assert sel.collect().column_names == ["key", "y"]
    mb = base.map_batches(lambda b: b.select(["w"]))
    assert mb.collect().column("w").to_pylist() == rows.column("w").to_pylist()


def test_row_counts_survive_stages_whose_columns_are_not_needed() -> None:
    t = table()
    size = {"n": (None, "size")}
    for p in (
        fb.scan(t).select(["k"]),
        fb.scan(t).with_columns(x=pc.field("v") * 2),
        fb.scan(t).rename({"k": "key"}),
    ):
        assert p.group_by([], size).collect().column("n").to_pylist() == [t.num_rows]


def test_pushdown_visible_and_effective(tmp_path) -> None:
    t = table(10_000)
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=1000)
    p = fb.scan(path).filter(pc.field("w") >= 9000).select(["w", "v"])
    text = p.explain()
    assert "pushed filter: (w >= 9000)" in text
    assert "columns: ['v', 'w']" in text
    out = p.collect()
    assert out.num_rows == 1000 and out.column_names == ["w", "v"]
    scan_stage = p.last_report.stages[-1]
    assert scan_stage.stage.startswith("scan")
    assert scan_stage.rows_out == 1000  # only matching rows leave the scan
    assert scan_stage.rows_in == 1000  # and only the one row group that can match is read
    assert "reads: 1 of 10 row groups, 1,000 of 10,000 rows" in text
    # A filter the statistics cannot decide reads every row group.
    every = fb.scan(path).filter(pc.field("k") == 3)
    assert every.collect().num_rows == t.filter(pc.field("k") == 3).num_rows
    assert every.last_report.stages[-1].rows_in == t.num_rows
    # A filter on a computed column cannot be pushed.
    q = fb.scan(path).with_columns(z=pc.field("w") * 2).filter(pc.field("z") > 5)
    assert "pushed filter" not in q.explain()


def test_report_counts_are_real() -> None:
    t = table()
    p = fb.scan(t, batch_size=100).filter(pc.field("k") == 1).group_by("s", {"n": (None, "size")})
    out = p.collect()
    r = p.last_report
    assert r is not None
    want_filtered = t.filter(pc.field("k") == 1).num_rows
    by_name = {s.stage.split(" ")[0]: s for s in r.stages}
    assert by_name["group_by"].rows_in == want_filtered
    assert by_name["group_by"].rows_out == out.num_rows
    assert r.peak_rss_mb > 0 and r.seconds >= 0
    assert "rows in" in str(r) and '"stages"' in r.to_json()
    reader = p.to_batches()
    assert sum(b.num_rows for b in reader) == out.num_rows
    # A shared sub-plan with a kernel runs once; both consumers see its rows.
    both = p.join(p.group_by([], {"groups": (None, "size")}), how="cross")
    assert "(shared: runs once)" in both.explain()
    assert both.collect().column("groups").to_pylist() == [out.num_rows] * out.num_rows
    stages = [s.stage for s in both.last_report.stages]
    assert sum(s.startswith("group_by ['s']") for s in stages) == 1
    assert sum(s.startswith("scan") for s in stages) == 1


def test_atomic_writes_and_expectations(tmp_path) -> None:
    t = table()
    p = fb.scan(t).filter(pc.field("k") < 5)
    for write, read in (
        ("write_parquet", pq.read_table),
        ("write_ipc", feather.read_table),
        ("write_csv", pacsv.read_csv),
    ):
        out = tmp_path / f"out.{write}"
        report = getattr(p, write)(out)
        assert read(out).num_rows == t.filter(pc.field("k") < 5).num_rows
        assert report.stages[0].rows_out == read(out).num_rows
        with pytest.raises(FileExistsError):
            getattr(p, write)(out)
    # Same plan, same input: identical bytes.
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    p.write_parquet(a)
    p.write_parquet(b)
    assert a.read_bytes() == b.read_bytes()
    # A failing expectation or a failure mid-write leaves no file and keeps an existing one.
    target = tmp_path / "x.parquet"
    with pytest.raises(fb.ExpectationError, match="not_null: column 'n' has 1,000 null rows"):
        fb.scan(t).with_columns(n=pa.scalar(None, pa.int64())).expect(not_null=["n"]).write_parquet(
            target
        )
    assert not target.exists()
    p.write_parquet(target)
    before = target.read_bytes()

    def boom(batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.num_rows and batch.column("w")[0].as_py() > 0:
            raise RuntimeError("injected failure")
        return batch

    with pytest.raises(RuntimeError, match="injected"):
        fb.scan(t, batch_size=100).map_batches(boom).write_parquet(target, overwrite=True)
    assert target.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []
    # Expectations that pass, and each kind that fails.
    ok = p.expect(min_rows=1, max_rows=10_000, not_null=["k"], unique=["w"])
    assert ok.collect().num_rows == p.collect().num_rows
    n = t.filter(pc.field("k") < 5).num_rows
    for kw, msg in (
        ({"min_rows": 10_000}, f"min_rows: {n} rows, expected at least 10,000"),
        ({"max_rows": 10}, f"max_rows: {n} rows"),
        ({"unique": ["k"]}, f"unique: {n} rows share"),  # every k repeats
    ):
        with pytest.raises(fb.ExpectationError, match=msg):
            p.expect(**kw).collect()
    with pytest.raises(KeyError):
        p.expect(not_null=["zz"])


def test_ctrl_c_stops_between_batches_and_leaves_no_output(tmp_path) -> None:
    t = table()
    target = tmp_path / "out.parquet"
    seen = []

    def interrupt_at_third(batch: pa.RecordBatch) -> pa.RecordBatch:
        seen.append(batch.num_rows)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C
        return batch

    p = (
        fb.scan(t, batch_size=100)
        .map_batches(interrupt_at_third)
        .group_by("k", {"n": (None, "size")})
    )
    with pytest.raises(KeyboardInterrupt):
        p.write_parquet(target)
    assert 3 <= len(seen) < 10  # stopped early, not after reading everything
    assert list(tmp_path.iterdir()) == []


def view_table() -> pa.Table:
    names = ["Ann@X.com ", "bob@y.org", None, "", "ünï@código.es", "bob@y.org"] * 50
    return pa.table({
        "email": pa.array(names, pa.string_view()),
        "raw": pa.array([None if n is None else n.encode() for n in names], pa.binary_view()),
        "v": list(range(len(names))),
    })  # fmt: skip


def test_expressions_work_on_view_columns(tmp_path) -> None:
    """string_view / binary_view columns (as Parquet scans may yield) work in every expression,
    although pyarrow's own kernels lack the view types; bare references keep the view type."""
    t = view_table()
    path = tmp_path / "views.parquet"
    pq.write_table(t, path, row_group_size=100)
    plain = t.cast(pa.schema([("email", pa.large_string()), ("raw", pa.large_binary()),
                              ("v", pa.int64())]))  # fmt: skip
    p = (
        fb.scan(path, batch_size=64)
        .filter(pc.starts_with(pc.field("email"), "b") | (pc.field("v") < 30))
        .with_columns(
            clean=pc.utf8_lower(pc.utf8_trim_whitespace(pc.field("email"))),
            n=pc.binary_length(pc.field("raw")),
        )  # fmt: skip
        .filter(pc.field("email") != "")
    )
    assert p.schema.field("email").type == pa.string_view()
    got = p.collect()
    assert got.schema.field("email").type == pa.string_view()
    mask = (pc.starts_with(pc.field("email"), "b") | (pc.field("v") < 30)) & (
        pc.field("email") != ""
    )
    want = plain.filter(mask)
    assert got.column("v").to_pylist() == want.column("v").to_pylist()
    assert got.column("email").to_pylist() == want.column("email").to_pylist()
    assert got.column("clean").to_pylist() == [
        None if e is None else e.strip().lower() for e in want.column("email").to_pylist()
    ]
    assert got.column("n").to_pylist() == [
        None if r is None else len(r) for r in want.column("raw").to_pylist()
    ]
    # Keys of the view type through group_by, dedup and join.
    agg = p.group_by("clean", {"n": (None, "size")}, sort=True).collect()
    assert agg.column("clean").to_pylist() == ["ann@x.com", "bob@y.org", "ünï@código.es"]
    assert p.dedup("email").collect().num_rows == 3
    joined = fb.scan(path).join(fb.scan(path).dedup("email").select(["email"]), on="email")
    assert joined.collect().num_rows == t.num_rows - 50  # null emails do not match


def test_progress_bar_counts_input_rows(tmp_path, capsys) -> None:
    t = table()
    pq.write_table(t, tmp_path / "t.parquet")
    p = fb.scan(tmp_path / "t.parquet", batch_size=100).group_by("k", {"n": (None, "size")})
    assert p.collect(progress=True).num_rows == 7
    err = capsys.readouterr().err
    assert "1.00k/1.00k" in err or "1000/1000" in err
    with pytest.raises(TypeError):
        p.collect(progress="yes")  # type: ignore[arg-type]


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN."""
    return a.schema == b.schema and all(
        [canonical(v) for v in a.column(n).to_pylist()]
        == [canonical(v) for v in b.column(n).to_pylist()]
        for n in a.column_names
    )


@settings(max_examples=40)
@given(grouped(max_rows=80), st.integers(1, 40))
def test_streaming_dedup_and_group_by_equal_the_kernels(data, batch_size) -> None:
    t, keys = data
    keys = keys or ["vs"]
    p = fb.scan(t, batch_size=batch_size)
    assert same(p.dedup(keys).collect(), fb.dedup(t, keys))
    aggs = {"n": (None, "size"), "si": ("vi", "sum"), "lo": ("vs", "min"), "f": ("vf", "first")}
    got = p.group_by(keys, aggs, sort=True).collect()
    assert same(got, fb.group_by(t, keys, aggs, sort=True))


def _close(got: pa.Table, want: pa.Table, floats: set[str]) -> None:
    """Equal schemas; equal values outside `floats` (NaN equal to NaN); float columns equal
    up to rounding (the same NaN and infinities)."""
    assert got.schema == want.schema
    for name in got.column_names:
        g, w = got.column(name).to_pylist(), want.column(name).to_pylist()
        if name not in floats:
            assert [canonical(v) for v in g] == [canonical(v) for v in w], name
            continue
        assert [v is None for v in g] == [v is None for v in w], name
        a = np.array([np.nan if v is None else v for v in g], dtype=float)
        b = np.array([np.nan if v is None else v for v in w], dtype=float)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6, equal_nan=True, err_msg=name)


@settings(max_examples=150)
@given(grouped(max_rows=80), st.integers(1, 40), st.booleans(), st.booleans(),
       st.sampled_from([1, 2, 4]))  # fmt: skip
def test_resident_group_by_equals_the_kernel(data, batch_size, dropna, sort, threads) -> None:
    """Every aggregate over nasty keys (nulls, NaN, ±0.0, unicode, dictionaries, views, time
    zones, two columns), random batch cuts and thread counts: the pipeline's resident state
    gives the kernel's groups, in the kernel's order, with its values (sums, means and
    moments up to rounding: a group's rows are folded one by one, the kernel folds blocks;
    min / max / first / last, top_k, n_unique, median and quantile to the bit)."""
    t, keys = data
    keys = keys or ["vs"]
    aggs = {k: v for k, v in AGGS.items() if v[0] not in keys}
    want = fb.group_by(t, keys, aggs, dropna=dropna, sort=sort)
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        got = fb.scan(t, batch_size=batch_size).group_by(keys, aggs, dropna=dropna, sort=sort)
        got = got.collect()
        exact = [n for n in ("lo", "hi", "top", "med", "q") if n in aggs]
        _close(got.drop(exact), want.drop(exact), {"sf", "mi", "mf", "sd", "var", "r"})
        assert_same_bits(got.select(exact), want.select(exact))
    finally:
        fb.set_num_threads(before)


@settings(max_examples=80)
@given(grouped(max_rows=40), st.integers(16, 2000), st.booleans(), st.sampled_from([1, 2, 4]))
def test_resident_group_by_of_few_groups_per_batch_equals_the_kernel(
    data, batch_size, dropna, threads
) -> None:
    """Counts, exact sums / means and min / max / first / last (floats with NaN and ±0.0,
    strings; nulls) over batches of few groups each, which the scan's parallel phase groups
    on their own before they are folded (nasty keys, no key at all, nulls, dropna, random
    cuts and thread counts): the kernel's groups, order and values, to the bit."""
    t, keys = data
    # At most 40 groups (batches of 640 rows qualify), of unequal sizes.
    # (pyarrow cannot `take` views: rows repeated by slicing.)
    t = pa.concat_tables(
        [t.slice(i, 1) for i in range(t.num_rows) for _ in range(1 + i % 5)] or [t]
    )
    t = pa.concat_tables([t, t.slice(0, t.num_rows // 3)] * 30)
    aggs = {"n": (None, "size"), "c": ("vf", "count"), "cs": ("vs", "count"),
            "si": ("vi", "sum"), "mi": ("vi", "mean"), "lo": ("vf", "min"),
            "hi": ("vf", "max"), "fi": ("vf", "first"), "la": ("vf", "last"),
            "los": ("vs", "min"), "las": ("vs", "last")}  # fmt: skip
    want = fb.group_by(t, keys, aggs, dropna=dropna)
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        got = fb.scan(t, batch_size=batch_size).group_by(keys, aggs, dropna=dropna)
        assert_same_bits(got.collect(), want)
    finally:
        fb.set_num_threads(before)


@pytest.mark.parametrize("keys", [["k"], ["s"], ["s", "k"], []])
def test_resident_group_by_of_batch_groups_of_unequal_sizes(keys) -> None:
    """Batches grouped on their own before they are folded, whose groups have different
    sizes and sit in different partitions: every group's count and sum are its own."""
    k = np.tile(np.repeat(np.arange(40), np.arange(1, 41)), 10)
    t = pa.table({"k": k, "s": pa.array([f"é{v % 7}" for v in k]), "v": np.arange(len(k))})
    aggs = {"n": (None, "size"), "s_v": ("v", "sum"), "m": ("v", "mean"), "lo": ("v", "min"),
            "hi": ("s", "max"), "fi": ("v", "first"), "la": ("v", "last")}  # fmt: skip
    want = fb.group_by(t, keys, aggs)
    for batch_size in (700, 2000, 8200):
        got = fb.scan(t, batch_size=batch_size).group_by(keys, aggs).collect()
        assert same(got, want), batch_size


def _ids_table() -> pa.Table:
    """Keys that batches of few groups are grouped by through ids per column."""
    rng = np.random.default_rng(7)
    n = 12_000
    g = rng.integers(0, 30, n)
    holes = rng.random(n) < 0.05
    # "a" listed twice and a null value; some keys null.
    words = pa.array(["a", "b", "a", None, "é", ""])
    d = pa.DictionaryArray.from_arrays(pa.array(g % 6, pa.int32(), mask=holes), words)
    floats = pa.array([0.0, -0.0, float("nan"), -float("nan"), 1.5], pa.float64())
    fd = pa.DictionaryArray.from_arrays(pa.array(g % 5, pa.int8()), floats)
    f = pa.array(np.array([0.0, -0.0, np.nan, 2.5, -np.inf])[g % 5], mask=(g % 7 == 0))
    # More values than a batch's groups may be.
    many = pa.DictionaryArray.from_arrays(
        pa.array(g, pa.int16()), pa.array([f"v{i}" for i in range(3000)])
    )
    s = pa.array([f"é{v % 9}" if v % 4 else None for v in g], pa.string_view())
    # Few distinct values (ties), ±0.0, NaN, nulls.
    x = pa.array(rng.choice([0.0, -0.0, np.nan, 1.0], n), mask=rng.random(n) < 0.3)
    w = pa.array(rng.choice(["", "b", "é", "a"], n), mask=rng.random(n) < 0.3)
    return pa.table(
        {"d": d, "fd": fd, "f": f, "many": many, "s": s, "i1": g, "i2": g * 7,
         "i3": (g * 13).astype(np.int16), "v": rng.integers(-(2**52), 2**52, n),
         "x": x, "w": w}
    )  # fmt: skip


@pytest.mark.parametrize(
    "keys",
    [["d"], ["d", "fd"], ["fd", "f"], ["f", "s"], ["i1", "i2", "i3"], ["d", "many"], []],
)
@pytest.mark.parametrize("dropna", [False, True])
def test_resident_group_by_of_few_groups_by_ids_per_column(keys, dropna) -> None:
    """Batches of few groups, grouped on their own through ids per key column: a dictionary
    that lists a value twice (one group) and holds a null value, null keys, NaNs of both signs and
    ±0.0 in a dictionary and in a plain column, views, three columns whose ids multiply past
    the slot array (a hash table then), a dictionary of more values than a batch may have
    groups (not grouped on its own then): the kernel's groups, first keys, counts, exact
    sums and min / max / first / last (ties: the earliest row's bits), to the bit."""
    t = _ids_table()
    aggs = {"n": (None, "size"), "c": ("f", "count"), "s_v": ("v", "sum"), "m": ("v", "mean")}
    aggs |= {f"{f}_{c}": (c, f) for c in ("x", "w") for f in ("min", "max", "first", "last")}
    want = fb.group_by(t, keys, aggs, dropna=dropna)
    for batch_size in (700, 4096):
        got = fb.scan(t, batch_size=batch_size).group_by(keys, aggs, dropna=dropna).collect()
        assert_same_bits(got, want)


@settings(max_examples=150)
@given(grouped(max_rows=80), st.integers(1, 40), st.booleans(), st.sampled_from([1, 2, 4]))
def test_resident_picks_of_every_type(data, batch_size, dropna, threads) -> None:
    """min / max / first / last / top_k / n_unique of values of every key type (integers of
    every width, floats with NaN and ±0.0, booleans, strings, large strings, views, binary,
    dictionaries, dates, time zones, durations, decimals; with nulls), grouped by another
    column, random batch cuts and thread counts: the pipeline's resident state gives the
    kernel's values to the bit (ties keep the earliest row: 0.0 against -0.0, one NaN
    against another; n_unique counts NaN once and -0.0 as 0.0)."""
    t, cols = data
    keys = ["vi"] if not cols else cols[:1]
    values = [c for c in cols if c not in keys] + ["vf", "vs"]
    aggs = {f"{f}_{c}": (c, f) for c in values for f in ("min", "max", "first", "last")}
    aggs |= {f"top_{c}": (c, "top_k", 3) for c in values}
    aggs |= {f"nu_{c}": (c, "n_unique") for c in values}
    want = fb.group_by(t, keys, aggs, dropna=dropna)
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        got = fb.scan(t, batch_size=batch_size).group_by(keys, aggs, dropna=dropna).collect()
        assert_same_bits(got, want)
    finally:
        fb.set_num_threads(before)


@given(
    join_inputs(),
    st.sampled_from(["inner", "left", "right", "outer", "semi", "anti"]),
    st.booleans(),
    st.integers(1, 10),
    st.sampled_from([1, 2, 4]),
)
def test_streaming_join_equals_the_kernel(inp, how, nulls_equal, batch_size, threads) -> None:
    """One side built once, the other's batches probing it on the executor, gives `fb.join`'s
    table for every `how`: same key rules (int widths, string layouts, dictionaries, NaN,
    -0.0, nulls), same order (a right join streams the right side), whatever the batch cuts
    and the thread count."""
    left, right, lk, rk = inp
    kw = {"left_on": lk, "right_on": rk, "how": how, "nulls_equal": nulls_equal}
    try:
        want = fb.join(left, right, **kw)
    except TypeError:  # uint64 against signed keys in a right / outer join
        with pytest.raises(TypeError, match="uint64"):
            fb.scan(left).join(fb.scan(right), **kw).collect()
        return
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        p = fb.scan(left, batch_size=batch_size).join(fb.scan(right, batch_size=batch_size), **kw)
        assert same(p.collect(), want)
        # Only some output columns needed: the scans read less, the names stay the same.
        last = want.column_names[-1]
        assert same(p.select([last]).collect(), want.select([last]))
    finally:
        fb.set_num_threads(before)


@settings(max_examples=150)
@given(
    join_inputs(),
    st.data(),
    st.booleans(),
    st.integers(1, 10),
    st.sampled_from([1, 2, 4]),
)
def test_group_by_over_a_join_equals_grouping_the_joined_table(
    inp, data, nulls_equal, batch_size, threads
) -> None:
    """A group-by whose keys come from the build side of an inner join (aggregated by build
    row as the join probes, then regrouped by the keys) equals grouping the whole join's
    output: build rows sharing a key merge, groups in first-appearance order, `dropna` and
    `sort` honoured; keys or aggregates outside the rewrite (a probe-side key, a left join key
    of another type, a float sum, `first`) take the ordinary path with the same answer."""
    left, right, lk, rk = inp
    n_l, n_r = left.num_rows, right.num_rows
    pool = data.draw(st.lists(st.none() | st.sampled_from(["a", "b", "", "é"]), min_size=1))
    right = right.append_column(
        "g", pa.array([pool[i % len(pool)] for i in range(n_r)], pa.string())
    )
    right = right.append_column(
        "d", pa.array([None if i % 5 == 3 else i % 3 for i in range(n_r)], pa.int32())
    )
    vi = data.draw(st.lists(st.none() | st.integers(-(2**62), 2**62), min_size=n_l, max_size=n_l))
    vf = data.draw(st.lists(st.none() | st.floats(), min_size=n_l, max_size=n_l))
    left = left.append_column("vi", pa.array(vi, pa.int64()))
    left = left.append_column("vf", pa.array(vf, pa.float64()))
    left = left.append_column(
        "vs", pa.array([None if v is None else str(v % 7) for v in vi], pa.string())
    )
    left = left.append_column(
        "vt",
        pa.array(
            [None if v is None else v % 10**17 for v in vi], pa.timestamp("us", "Europe/Paris")
        ),
    )
    # The joined table's names: a right column that clashes gets the suffix.
    candidates = ["g", "d", "p", "row_right", lk[0], "row"]
    keys = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique=True))
    aggs = {
        "n": (None, "size"),
        "c": ("vi", "count"),
        "s": ("vi", "sum"),
        "m": ("vi", "mean"),
        "lo": ("vs", "min"),
        "hi": ("vt", "max"),
        "u": ("vi", "n_unique"),
        "q": ("vi", "quantile", 0.3),
    }
    extra = data.draw(st.sampled_from([None, ("vf", "sum"), ("vs", "first"), ("vf", "max")]))
    if extra is not None:
        aggs["x"] = extra
    dropna, sort = data.draw(st.booleans()), data.draw(st.booleans())
    kw = {"left_on": lk, "right_on": rk, "nulls_equal": nulls_equal}
    joined = fb.join(left, right, **kw)
    keys = [k for k in keys if k in joined.column_names]
    if not keys:
        return
    before = fb.get_num_threads()
    fb.set_num_threads(threads)
    try:
        p = fb.scan(left, batch_size=batch_size).join(fb.scan(right, batch_size=batch_size), **kw)
        p = p.group_by(keys, aggs, dropna=dropna, sort=sort)
        try:
            want = fb.group_by(joined, keys, aggs, dropna=dropna, sort=sort)
        except ValueError as e:  # an int64 sum out of range: the same error
            assert "overflows int64" in str(e)
            with pytest.raises(ValueError, match="overflows int64"):
                p.collect()
            return
        got = p.collect()
    finally:
        fb.set_num_threads(before)
    if extra is not None and extra[0] == "vf" and extra[1] == "sum":
        # Float sums associate per batch on the streaming path: equal up to rounding.
        g, w = got.column("x").to_pylist(), want.column("x").to_pylist()
        assert [v is None or v != v for v in g] == [v is None or v != v for v in w]
        assert all(
            a == pytest.approx(b, rel=1e-9, abs=1e-9)
            for a, b in zip(g, w, strict=True)
            if a is not None and a == a
        )
        got, want = got.drop_columns(["x"]), want.drop_columns(["x"])
    assert same(got, want)


@given(st.integers(0, 30), st.integers(0, 7), st.integers(1, 10))
def test_streaming_cross_join_is_left_major(n_left, n_right, batch_size) -> None:
    left = pa.table({"a": list(range(n_left))})
    right = pa.table({"b": [f"r{i}" for i in range(n_right)]})
    got = fb.scan(left, batch_size=batch_size).join(right, how="cross").collect()
    assert got.to_pydict() == {
        "a": [a for a in range(n_left) for _ in range(n_right)],
        "b": [f"r{b}" for _ in range(n_left) for b in range(n_right)],
    }


def test_sort_and_dedup_keys_checked_from_the_schema() -> None:
    """Key names, key types and per-key flags are checked when the stage is built, from the
    schema alone (nothing runs on data, not even on an empty table)."""
    t = pa.table({"s": pa.array([{"x": 1}]), "k": [1]})
    p = fb.scan(t)
    with pytest.raises(TypeError, match='"s" has type Struct'):
        p.sort("s")
    with pytest.raises(TypeError, match='"s" has type Struct'):
        p.dedup("s")
    with pytest.raises(TypeError, match='"s" has type Struct'):
        p.dedup()
    with pytest.raises(KeyError, match="nope"):
        p.sort("nope")
    with pytest.raises(ValueError, match="2 entries"):
        p.sort("k", descending=[True, False])
    assert p.dedup("k").schema == p.sort("k").schema == t.schema


def test_join_report_rows_belong_to_their_stages() -> None:
    """Each stage of a run that joins two scans reports its own counts (the columns a join
    reads from each side are part of the join, not stages of their own)."""
    left = pa.table({"k": list(range(100)), "a": [i * 2 for i in range(100)], "z": [0] * 100})
    right = pa.table({"k": [1, 2, 3, 60, 70, 80, 90], "b": list("abcdefg"), "y": [0] * 7})
    p = (
        fb.scan(left, batch_size=10)
        .filter(pc.field("k") < 75)
        .join(fb.scan(right).filter(pc.field("k") > 1), on="k")
        .select(["k", "a", "b"])
    )
    out = p.collect()
    assert out.to_pydict() == {"k": [2, 3, 60, 70], "a": [4, 6, 120, 140], "b": list("bcde")}
    rows = {s.stage: (s.rows_in, s.rows_out) for s in p.last_report.stages}
    assert rows["scan in-memory table (100 rows)"] == (100, 100)
    assert rows["filter (k < 75)"] == (100, 75)
    assert rows["scan in-memory table (7 rows)"] == (7, 7)
    assert rows["filter (k > 1)"] == (7, 6)
    assert rows["join inner on='k'"] == (75 + 6, 4)  # probe rows and build rows in
    assert rows["select ['k', 'a', 'b']"] == (4, 4)


@settings(max_examples=60)
@given(
    join_inputs(),
    st.sampled_from(["inner", "left", "right", "outer", "semi", "anti"]),
    st.integers(1, 10),
    st.integers(0, 12),
)
def test_join_after_a_serial_stage_keeps_the_unmatched_build_rows(inp, how, batch_size, n) -> None:
    """A probe side that passes a serial stage (map_batches, head) still gets the build
    side's unmatched rows at its end (they were once lost: an outer join below a
    map_batches dropped them, and a head(0) below a join never built it)."""
    left, right, lk, rk = inp
    kw = {"left_on": lk, "right_on": rk, "how": how}
    try:
        want = fb.join(left, right, **kw)
    except TypeError:  # uint64 against signed keys in a right / outer join
        return
    same_batch = lambda b: b  # noqa: E731
    lp = fb.scan(left, batch_size=batch_size).map_batches(same_batch)
    rp = fb.scan(right, batch_size=batch_size).map_batches(same_batch)
    assert same(lp.join(rp, **kw).collect(), want)
    # The probe side cut by a head: the join of its first n rows.
    probe, other = (rp, left) if how == "right" else (lp, right)
    head = min(n, (right if how == "right" else left).num_rows)
    sides = (left, right.slice(0, head)) if how == "right" else (left.slice(0, head), right)
    got = (
        fb.scan(left).join(probe.head(n), **kw)
        if how == "right"
        else probe.head(n).join(fb.scan(other), **kw)
    )
    assert same(got.collect(), fb.join(*sides, **kw))


def test_a_shared_sub_plan_runs_once_on_the_executor() -> None:
    """One run, one executor plan: the sub-plan two consumers share runs once (its callback
    sees each input batch once), its consumers see its whole output."""
    t = table()
    seen: list[int] = []

    def count(b: pa.RecordBatch) -> pa.RecordBatch:
        seen.append(b.num_rows)
        return b

    shared = fb.scan(t, batch_size=100).map_batches(count).group_by("k", {"n": (None, "size")})
    both = shared.join(shared.group_by([], {"groups": (None, "size")}), how="cross")
    ordered = both.sort("k")
    got = ordered.collect()
    # (The schema of a map_batches comes from calling it on an empty batch, once.)
    assert [n for n in seen if n] == [100] * 10
    assert got.column("groups").to_pylist() == [7] * 7
    assert got.column("n").to_pylist() == [143] * 6 + [142]
    stages = [s.stage for s in ordered.last_report.stages]
    assert sum(s.startswith("map_batches") for s in stages) == 1
    assert "(runs in Python)" not in ordered.explain()


def test_expectations_run_on_the_executor() -> None:
    t = table()
    assert issubclass(fb.ExpectationError, ValueError)
    # Checked over all rows the stage sees, also when a head ends the input early.
    with pytest.raises(fb.ExpectationError, match="min_rows: 5 rows, expected at least 6"):
        fb.scan(t, batch_size=3).head(5).expect(min_rows=6).collect()
    assert fb.scan(t, batch_size=3).head(5).expect(max_rows=5).collect().num_rows == 5
    # Every failed check named; nulls in a unique key equal each other, as in a group-by.
    nulls = pa.table({"a": [1, None, None, 2], "b": ["x", "y", "y", None]})
    with pytest.raises(fb.ExpectationError) as e:
        fb.scan(nulls, batch_size=1).expect(unique=["a", "b"], not_null=["b"]).collect()
    assert str(e.value) == (
        "expectation failed: not_null: column 'b' has 1 null rows; "
        "unique: 2 rows share their ['a', 'b'] with another row"
    )


def test_report_counts_each_read_of_a_re_read_chain_once() -> None:
    """A streaming chain two consumers read (re-read, not kept) has a report row per read,
    each with that read's own counts (they were once summed over all reads)."""
    t = table()
    base = fb.scan(t, batch_size=100).filter(pc.field("k") < 5)
    kept = t.filter(pc.field("k") < 5).num_rows
    p = base.join(base.group_by("k", {"n": (None, "size")}), on="k")
    assert p.collect().num_rows == kept
    filters = [s for s in p.last_report.stages if s.stage.startswith("filter")]
    assert [(s.rows_in, s.rows_out) for s in filters] == [(t.num_rows, kept)] * 2
    group_by = next(s for s in p.last_report.stages if s.stage.startswith("group_by"))
    assert (group_by.rows_in, group_by.rows_out) == (kept, 5)
    join = next(s for s in p.last_report.stages if s.stage.startswith("join"))
    assert join.rows_in == kept + 5  # probe rows and build rows
