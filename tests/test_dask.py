"""ferrobatch.dask on a real LocalCluster (2 worker processes, started here): every kernel's
answer equals the single-machine kernel's — exactly where the order is defined (sort,
dedup into one partition, broadcast joins, group_by into one partition, whose floats equal a
GroupByState fed the partitions in order bit for bit), as multisets elsewhere — over nasty
keys, random partitionings (empty partitions, one, many), mismatched key types between join
sides, and both of Dask's shuffle methods."""

from __future__ import annotations

import os
import pickle

import dask
import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nasty import assert_same_bits, canonical, same_bits, tables
from test_group_by import AGGS, close, grouped
from test_join import join_inputs

import ferrobatch as fb
import ferrobatch.dask as fbd

METHODS = ["p2p", "tasks"]
CLUSTER = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(params=METHODS)
def method(request, client):
    with dask.config.set({"dataframe.shuffle.method": request.param}):
        yield request.param


def _plain(table: pa.Table) -> pa.Table:
    """Dask cannot build metadata for view columns (pyarrow has no `take` for them): the
    partitions carry plain strings / binary."""
    views = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    return table.cast(pa.schema([f.with_type(views.get(f.type, f.type)) for f in table.schema]))


def _parts(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    """`table` cut at `cuts` (repeated cuts give empty partitions)."""
    bounds = [0, *sorted(min(c, table.num_rows) for c in cuts), table.num_rows]
    return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


def _even(table: pa.Table, npartitions: int) -> list[pa.Table]:
    n = table.num_rows
    return _parts(table, [n * i // npartitions for i in range(1, npartitions)])


def _ddf(parts: list[pa.Table]) -> dd.DataFrame:
    frames = [p.to_pandas(types_mapper=pd.ArrowDtype) for p in parts]
    meta = parts[0].schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
    return dd.from_delayed([dask.delayed(f) for f in frames], meta=meta)


def _got(ddf: dd.DataFrame, schema: pa.Schema | None = None) -> pa.Table:
    """A computed Dask result as an Arrow table (typed by `schema` when given)."""
    return pa.Table.from_pandas(ddf.compute(), schema=schema, preserve_index=False)


def _rows(t: pa.Table) -> list:
    """Rows as a sorted multiset (NaN == NaN, -0.0 == 0.0)."""
    rows = [tuple(canonical(v) for v in r.values()) for r in t.to_pylist()]
    return sorted(rows, key=repr)


# ---------------------------------------------------------------------------------------
# group_by


@CLUSTER
@given(grouped(max_rows=60), st.lists(st.integers(0, 60), max_size=5), st.booleans(),
       st.booleans())  # fmt: skip
def test_group_by_equals_the_state_fed_the_partitions_in_order(client, data, cuts, dropna, sort):
    table, keys = data
    table = _plain(table).combine_chunks()
    parts = _parts(table, cuts)
    got = _got(fbd.group_by(_ddf(parts), keys, AGGS, dropna=dropna, sort=sort))
    state = fb.GroupByState(table.schema, keys, AGGS, dropna=dropna, sort=sort)
    for p in parts:
        state.absorb(p)
    assert_same_bits(got.replace_schema_metadata(None), state.finish())
    # And the same groups and values as the whole-table kernel.
    whole = fb.group_by(table, keys, AGGS, dropna=dropna, sort=sort)
    assert whole.num_rows == got.num_rows
    for name in whole.column_names:
        a, b = got[name].to_pylist(), whole[name].to_pylist()
        assert all(close(x, y) for x, y in zip(a, b, strict=True)), name


@CLUSTER
@given(grouped(max_rows=60), st.lists(st.integers(0, 60), max_size=5), st.integers(2, 5),
       st.booleans(), st.booleans())  # fmt: skip
def test_group_by_split_out_equals_the_kernel(client, data, cuts, split_out, dropna, sort):
    table, keys = data
    table = _plain(table).combine_chunks()
    ddf = _ddf(_parts(table, cuts))
    out = fbd.group_by(ddf, keys, AGGS, dropna=dropna, sort=sort, split_out=split_out)
    assert out.npartitions == split_out or not keys
    got = _got(out).replace_schema_metadata(None)
    want = fb.group_by(table, keys, AGGS, dropna=dropna, sort=sort)
    assert got.schema == want.schema
    if not sort:  # group order unspecified: compare groups by key
        order = fb.sort(got, keys) if keys else got
        got, want = order, (fb.sort(want, keys) if keys else want)
    for name in want.column_names:
        a, b = got[name].to_pylist(), want[name].to_pylist()
        assert all(close(x, y) for x, y in zip(a, b, strict=True)), name


@pytest.mark.parametrize("npartitions", [1, 3, 17, 130])
def test_group_by_many_partitions_one_key_for_all_rows(client, npartitions):
    n = 2000
    table = pa.table({
        "k": pa.array(["same"] * n),
        "g": pa.array([i % 7 for i in range(n)], pa.int32()),
        "v": pa.array([float(i) if i % 5 else None for i in range(n)]),
    })  # fmt: skip
    ddf = _ddf(_even(table, npartitions))
    aggs = {"s": ("v", "sum"), "n": (None, "size"), "m": ("v", "median"), "u": ("g", "n_unique")}
    one = fbd.group_by(ddf, "k", aggs).compute()
    assert one.to_dict("records") == [{"k": "same", "s": float(sum(
        i for i in range(n) if i % 5)), "n": n, "m": 1000.0, "u": 7}]  # fmt: skip
    for split_out in (1, 4):
        by_g = ddf.fb.group_by(["g"], {"n": (None, "size")}, sort=True, split_out=split_out)
        by_g = by_g.compute()
        assert by_g["g"].tolist() == list(range(7))
        assert by_g["n"].tolist() == [len(range(g, n, 7)) for g in range(7)]


def test_group_by_errors_before_any_task(client):
    ddf = _ddf([pa.table({"k": [1, 2], "v": [1.0, 2.0]})])
    with pytest.raises(KeyError):
        fbd.group_by(ddf, "nope", {"n": (None, "size")})
    with pytest.raises(TypeError):
        fbd.group_by(ddf, "k", {"s": ("k", "sum")}, dropna=1)
    with pytest.raises(ValueError, match="split_out"):
        fbd.group_by(ddf, "k", {"n": (None, "size")}, split_out=0)
    with pytest.raises(TypeError):
        fbd.group_by(pd.DataFrame({"k": [1]}), "k", {"n": (None, "size")})
    # A column named as Dask's routing column is data like any other.
    taken = _ddf([pa.table({"_partitions": [1, 1], "v": [1.0, 2.0]})] * 2)
    got = fbd.group_by(taken, "_partitions", {"n": (None, "size")}, split_out=2).compute()
    assert got.to_dict("records") == [{"_partitions": 1, "n": 4}]


# ---------------------------------------------------------------------------------------
# join

HOWS = ["inner", "left", "right", "outer", "semi", "anti"]


@CLUSTER
@given(join_inputs(max_rows=30), st.sampled_from(HOWS), st.booleans(),
       st.lists(st.integers(0, 30), max_size=4), st.lists(st.integers(0, 30), max_size=3),
       st.sampled_from([None, 1, 2, 5]))  # fmt: skip
def test_shuffled_join_equals_the_kernel(method, inp, how, nulls_equal, lcuts, rcuts, nparts):
    """Both sides shuffled by key hash — int widths, dictionary / plain / large strings,
    floats of both widths on either side — equal the kernel's rows, and each output
    partition is in the kernel's order for the rows it holds."""
    left, right, lk, rk = inp
    left, right = _plain(left).combine_chunks(), _plain(right).combine_chunks()
    kw = {"left_on": lk, "right_on": rk, "how": how, "nulls_equal": nulls_equal}
    ldf, rdf = _ddf(_parts(left, lcuts)), _ddf(_parts(right, rcuts))
    try:
        want = fb.join(left, right, **kw)
    except TypeError as e:  # e.g. uint64 against a signed key in a right / outer join
        with pytest.raises(TypeError, match=str(e)[:30]):
            fbd.join(ldf, rdf, broadcast=False, **kw)  # refused before any task
        return
    out = fbd.join(ldf, rdf, broadcast=False, npartitions=nparts, **kw)
    pieces = [_got(out.get_partition(i), want.schema) for i in range(out.npartitions)]
    got = pa.concat_tables(pieces)
    assert got.schema == want.schema
    assert _rows(got) == _rows(want)
    if how != "outer":  # right: right order; others: left order (`row` is the input order)
        order = "row_right" if how == "right" else "row"
        for p in pieces:
            rows = p[order].to_pylist()
            assert rows == sorted(rows)


@CLUSTER
@given(join_inputs(max_rows=30), st.sampled_from(["inner", "left", "semi", "anti"]),
       st.booleans(), st.lists(st.integers(0, 30), max_size=4), st.integers(1, 3))  # fmt: skip
def test_broadcast_join_is_the_kernel_row_for_row(client, inp, how, nulls_equal, lcuts, rparts):
    left, right, lk, rk = inp
    left, right = _plain(left).combine_chunks(), _plain(right).combine_chunks()
    kw = {"left_on": lk, "right_on": rk, "how": how, "nulls_equal": nulls_equal}
    want = fb.join(left, right, **kw)
    ldf, rdf = _ddf(_parts(left, lcuts)), _ddf(_even(right, rparts))
    got = _got(fbd.join(ldf, rdf, broadcast=True, **kw), want.schema)
    assert_same_bits(got, want)
    if rparts == 1:  # broadcast by default
        assert_same_bits(_got(ldf.fb.join(rdf, **kw), want.schema), want)


def test_cross_join_broadcasts(client):
    left = pa.table({"a": [1, 2, 3]})
    right = pa.table({"b": ["x", "y"]})
    got = _got(fbd.join(_ddf(_even(left, 2)), _ddf(_even(right, 2)), how="cross"))
    assert got.to_pylist() == fb.join(left, right, how="cross").to_pylist()


@pytest.mark.parametrize("npartitions", [1, 3, 17, 130])
def test_join_many_partitions_one_key_for_all_rows(method, npartitions):
    left = pa.table({"k": pa.array([7] * 300, pa.int32()), "i": range(300)})
    right = pa.table({
        "k": pa.array([7, 7, 8], pa.int64()), "p": ["a", "b", "c"]
    })  # fmt: skip
    ldf, rdf = _ddf(_even(left, npartitions)), _ddf(_even(right, min(npartitions, 3)))
    for how in ("inner", "outer"):
        want = fb.join(left, right, "k", how=how)
        got = _got(fbd.join(ldf, rdf, "k", how=how, broadcast=False), want.schema)
        assert _rows(got) == _rows(want)


def test_join_errors_before_any_task(client):
    ldf = _ddf([pa.table({"k": [1, 2], "v": [1.0, 2.0]})])
    rdf = _ddf([pa.table({"k": ["a"], "w": [1]})])
    with pytest.raises(TypeError, match="key types"):
        fbd.join(ldf, rdf, "k")
    with pytest.raises(KeyError):
        fbd.join(ldf, ldf, "nope")
    with pytest.raises(ValueError, match="broadcast"):
        fbd.join(ldf, ldf, "k", how="outer", broadcast=True)
    with pytest.raises(ValueError, match="how"):
        fbd.join(ldf, ldf, "k", how="sideways")
    with pytest.raises(ValueError, match="npartitions"):
        fbd.join(ldf, ldf, "k", npartitions=0)
    with pytest.raises(TypeError):
        fbd.join(ldf, ldf, "k", broadcast="yes")


# ---------------------------------------------------------------------------------------
# dedup and sort


@CLUSTER
@given(tables(max_rows=50), st.sampled_from(["first", "last", "none"]),
       st.lists(st.integers(0, 50), max_size=5), st.sampled_from([None, 1, 3]))  # fmt: skip
def test_dedup_equals_the_kernel(method, data, keep, cuts, split_out):
    table, keys = data
    table = _plain(table).combine_chunks()
    want = fb.dedup(table, keys, keep=keep)
    out = fbd.dedup(_ddf(_parts(table, cuts)), keys, keep=keep, split_out=split_out)
    pieces = [_got(out.get_partition(i), want.schema) for i in range(out.npartitions)]
    got = pa.concat_tables(pieces)
    if split_out == 1:
        assert_same_bits(got, want)
    else:
        assert _rows(got) == _rows(want)
        for p in pieces:  # each partition in input order
            assert p["row"].to_pylist() == sorted(p["row"].to_pylist())


@CLUSTER
@given(tables(max_rows=50), st.lists(st.integers(0, 50), max_size=5), st.data(),
       st.sampled_from([None, 1, 2, 4]))  # fmt: skip
def test_sort_is_the_stable_sort_row_for_row(method, data, cuts, draw, npartitions):
    table, keys = data
    table = _plain(table).combine_chunks()
    desc = draw.draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    nl = draw.draw(st.booleans())
    want = fb.sort(table, keys, descending=desc, nulls_last=nl)
    out = fbd.sort(_ddf(_parts(table, cuts)), keys, descending=desc, nulls_last=nl,
                   npartitions=npartitions)  # fmt: skip
    assert_same_bits(_got(out, want.schema), want)


@pytest.mark.parametrize("npartitions", [1, 3, 17, 130])
def test_sort_and_dedup_many_partitions(method, npartitions):
    n = 1000
    table = pa.table({
        "k": pa.array([None if i % 11 == 0 else float(i % 13) - 6 for i in range(n)]),
        "s": pa.array([["", "ä", "b"][i % 3] for i in range(n)]).dictionary_encode(),
        "row": range(n),
    })  # fmt: skip
    ddf = _ddf(_even(table, npartitions))
    want = fb.sort(table, ["s", "k"], descending=[True, False], nulls_last=False)
    got = _got(fbd.sort(ddf, ["s", "k"], descending=[True, False], nulls_last=False), want.schema)
    assert_same_bits(got, want)
    want = fb.dedup(table, ["s", "k"], keep="last")
    got = _got(fbd.dedup(ddf, ["s", "k"], keep="last", split_out=1), want.schema)
    assert_same_bits(got, want)
    one = _got(fbd.dedup(ddf, "s"), table.schema)
    assert sorted(one["row"].to_pylist()) == [0, 1, 2]


def test_dedup_and_sort_errors_before_any_task(client):
    ddf = _ddf([pa.table({"k": [1, 2], "l": pa.array([[1], [2]])})])
    with pytest.raises(KeyError):
        fbd.dedup(ddf, "nope")
    with pytest.raises(TypeError, match="key"):
        fbd.dedup(ddf, "l")
    with pytest.raises(ValueError, match="keep"):
        fbd.dedup(ddf, "k", keep="any")
    with pytest.raises(KeyError):
        fbd.sort(ddf, "nope")
    with pytest.raises(ValueError):
        fbd.sort(ddf, "k", descending=[True, False])
    with pytest.raises(ValueError, match="npartitions"):
        fbd.sort(ddf, "k", npartitions=-1)


def test_no_files_left_on_the_workers(client):
    """After shuffles of both methods, the workers' directories hold what they held."""

    def listing(dask_worker) -> list[str]:
        out = []
        for root, _, files in os.walk(dask_worker.local_directory):
            out += [os.path.join(root, f) for f in files]
        return sorted(out)

    before = client.run(listing)
    table = pa.table({"k": list(range(500)) * 2, "v": range(1000)})
    for m in METHODS:
        with dask.config.set({"dataframe.shuffle.method": m}):
            fbd.dedup(_ddf(_even(table, 4)), "k").compute()
            fbd.sort(_ddf(_even(table, 4)), "k").compute()
    assert client.run(listing) == before


def test_pickled_states_from_workers_merge_bit_for_bit(client):
    """GroupByStates built on the workers come back pickled and merge, in order, as one
    state fed the same data here."""
    import numpy as np

    rng = np.random.default_rng(3)
    parts = [pa.table({"k": rng.integers(0, 100, 5000), "x": rng.standard_normal(5000)})
             for _ in range(4)]  # fmt: skip
    aggs = {"s": ("x", "sum"), "v": ("x", "var")}

    def build(t: pa.Table) -> fb.GroupByState:
        s = fb.GroupByState(t.schema, "k", aggs)
        s.absorb(t)
        return s

    states = client.gather([client.submit(build, p, pure=False) for p in parts])
    head = states[0]
    for s in states[1:]:
        head.merge(pickle.loads(pickle.dumps(s)))
    want = fb.GroupByState(parts[0].schema, "k", aggs)
    for p in parts:
        want.absorb(p)
    assert_same_bits(head.finish(), want.finish())
    assert same_bits([1.0, -0.0], [1.0, -0.0]) and not same_bits([0.0], [-0.0])


# ---------------------------------------------------------------------------------------
# Pipelines on Dask


def _files(tmp_path, n: int = 4) -> tuple[str, pa.Table]:
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    parts = []
    for i in range(n):
        rows = 0 if i == 1 else 700
        t = pa.table({
            "k": pa.array(rng.integers(-3, 25, rows), pa.int32()),
            "s": pa.array([["", "ä", "b", None][j % 4] for j in range(rows)], pa.string()),
            "v": rng.standard_normal(rows),
        })  # fmt: skip
        pq.write_table(t, tmp_path / f"part-{i}.parquet")
        parts.append(t)
    return str(tmp_path), pa.concat_tables(parts)


def test_pipeline_runs_on_dask_as_it_runs_here(client, method, tmp_path):
    import pyarrow.compute as pc

    folder, _ = _files(tmp_path)
    other = pa.table({"k": pa.array(range(0, 30, 2), pa.int64()), "w": [i / 2 for i in range(15)]})
    p = (
        fb.scan(folder)
        .filter(pc.field("v") > -0.5)
        .with_columns(v2=pc.field("v") * 2)
        .join(other, "k", how="left")
        .group_by(
            ["s", "k"], {"n": (None, "size"), "m": ("v2", "mean"), "w": ("w", "max")}, sort=True
        )  # fmt: skip
    )
    assert p.to_dask().npartitions == 1
    want, got = p.collect(), p.collect(engine="dask")
    assert got.schema == want.schema and got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got[name].to_pylist(), want[name].to_pylist()
        assert all(close(x, y) for x, y in zip(a, b, strict=True)), name
    top = fb.scan(folder).select(["k", "v"]).sort(["k", "v"], descending=[True, False]).head(9)
    assert_same_bits(top.collect(engine="dask"), top.collect())
    firsts = fb.scan(folder).dedup(["s", "k"])
    assert _rows(firsts.collect(engine="dask")) == _rows(firsts.collect())


def test_pipeline_over_a_table_partitions_it(client):
    t = pa.table({"k": [i % 5 for i in range(100)], "i": range(100)})
    p = fb.scan(t).map_batches(lambda b: b.append_column("j", pa.compute.multiply(b["i"], 2)))
    ddf = p.to_dask(partition_rows=30)
    assert ddf.npartitions == 4
    assert_same_bits(_got(ddf, p.schema), p.collect())
    with pytest.raises(ValueError, match="engine"):
        p.collect(engine="spark")
    reader = pa.RecordBatchReader.from_batches(t.schema, t.to_batches())
    with pytest.raises(TypeError, match="RecordBatchReader"):
        fb.scan(reader).to_dask()


def test_pipeline_expectations_fail_as_they_do_here(client):
    p = fb.scan(pa.table({"k": [1, 1, 2, None]})).expect(unique=["k"], not_null=["k"],
                                                         min_rows=5)  # fmt: skip
    with pytest.raises(fb.ExpectationError) as here:
        p.collect()
    with pytest.raises(fb.ExpectationError) as there:
        p.collect(engine="dask")
    assert str(there.value) == str(here.value)
    ok = fb.scan(pa.table({"k": [1, 2]})).expect(unique=["k"], max_rows=2)
    assert ok.collect(engine="dask").to_pylist() == [{"k": 1}, {"k": 2}]


def test_pipelines_pickle_and_tokenize_deterministically(tmp_path):
    import pyarrow.compute as pc
    from dask.base import tokenize

    folder, _ = _files(tmp_path, 2)
    t = pa.table({"k": [1, 2, 3], "v": [0.5, -0.0, float("nan")]})

    def plan(src: object, cut: float) -> fb.Pipeline:
        return fb.scan(src).filter(pc.field("v") > cut).group_by("k", {"n": (None, "size")})

    for src in (folder, t):
        p = plan(src, 0.0)
        q = pickle.loads(pickle.dumps(p))
        assert_same_bits(q.collect(), p.collect())
        assert tokenize(q) == tokenize(p) == tokenize(plan(src, 0.0))
        assert tokenize(plan(src, 0.25)) != tokenize(p)
    assert tokenize(plan(t.slice(1), 0.0)) != tokenize(plan(t, 0.0))
    before = tokenize(plan(folder, 0.0))
    os.utime(os.path.join(folder, "part-0.parquet"), ns=(1, 1))
    assert tokenize(plan(folder, 0.0)) != before


def test_setup_gives_each_worker_its_share_of_threads():
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        fbd.setup(c)
        assert set(c.run(fb.get_num_threads).values()) == {1}
        cluster.scale(2)  # a worker that joins later gets it too
        c.wait_for_workers(2)
        assert list(c.run(fb.get_num_threads).values()) == [1, 1]
    with pytest.raises(TypeError):
        fbd.setup("tcp://127.0.0.1:8786")


def test_setup_gives_each_worker_its_budget_and_temp_directory(tmp_path):
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster) as c,
    ):  # fmt: skip
        fbd.setup(c, memory_limit="25%", temp_directory=tmp_path)
        assert list(c.run(fb.get_memory_limit).values()) == [2**28]
        assert list(c.run(fb.get_temp_directory).values()) == [str(tmp_path)]
        fbd.setup(c, memory_limit="64MiB")
        assert list(c.run(fb.get_memory_limit).values()) == [2**26]
        with pytest.raises(ValueError, match="memory_limit"):
            fbd.setup(c, memory_limit="lots")


def test_a_parquet_file_is_split_by_row_groups(client, tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pa.table({"k": [i % 7 for i in range(1000)], "v": [i * 0.5 for i in range(1000)]})
    pq.write_table(t, tmp_path / "one.parquet", row_group_size=100)
    p = fb.scan(str(tmp_path / "one.parquet")).filter(pc.field("k") != 3).select(["v", "k"])
    ddf = p.to_dask(partition_rows=250)  # runs of 3 row groups: 300, 300, 300, 100 rows
    assert ddf.npartitions == 4
    assert_same_bits(_got(ddf, p.schema), p.collect())
    assert p.to_dask(partition_rows=10_000).npartitions == 1
    g = p.group_by("k", {"s": ("v", "sum"), "n": (None, "size")}, sort=True)
    assert_same_bits(g.collect(engine="dask"), fb.group_by(p.collect(), "k", {
        "s": ("v", "sum"), "n": (None, "size")}, sort=True))  # fmt: skip
