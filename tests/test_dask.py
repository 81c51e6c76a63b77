"""ferrobatch.dask on a real LocalCluster (2 worker processes, started here): the answers equal
the single-machine kernels' over nasty keys and random partitionings (empty partitions, one
partition, many). Floats agree to the last bits: the tree of merges associates float sums
and moments differently from one state fed the partitions in order (exact equality with
that state is still to build)."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_group_by import AGGS, close, grouped

import ferrobatch as fb
import ferrobatch.dask as fbd


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _parts(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    """`table` cut at `cuts` (repeated cuts give empty partitions)."""
    bounds = [0, *sorted(min(c, table.num_rows) for c in cuts), table.num_rows]
    return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


def _ddf(parts: list[pa.Table]) -> dd.DataFrame:
    frames = [p.to_pandas(types_mapper=pd.ArrowDtype) for p in parts]
    meta = parts[0].schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
    return dd.from_delayed([dask.delayed(f) for f in frames], meta=meta)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(grouped(max_rows=60), st.lists(st.integers(0, 60), max_size=5), st.booleans(),
       st.booleans())  # fmt: skip
def test_group_by_equals_the_state_fed_the_partitions_in_order(client, data, cuts, dropna, sort):
    table, keys = data
    # Dask cannot build its metadata for string_view columns (pyarrow has no `take` for
    # them): partitions carry plain strings.
    table = table.cast(
        pa.schema(
            [f.with_type(pa.string()) if f.type == pa.string_view() else f for f in table.schema]
        )
    ).combine_chunks()
    parts = _parts(table, cuts)
    got = fbd.group_by(_ddf(parts), keys, AGGS, dropna=dropna, sort=sort).compute()
    got = pa.Table.from_pandas(got, preserve_index=False)
    state = fb.GroupByState(table.schema, keys, AGGS, dropna=dropna, sort=sort)
    for p in parts:
        state.absorb(p)
    want = state.finish()
    assert got.schema == want.schema
    assert want.num_rows == got.num_rows
    for name in want.column_names:
        assert all(
            close(a, b) for a, b in zip(got[name].to_pylist(), want[name].to_pylist(), strict=True)
        ), name
    # And the same groups and values as the whole-table kernel.
    whole = fb.group_by(table, keys, AGGS, dropna=dropna, sort=sort)
    assert whole.num_rows == got.num_rows
    for name in whole.column_names:
        assert all(
            close(a, b) for a, b in zip(got[name].to_pylist(), whole[name].to_pylist(), strict=True)
        ), name


@pytest.mark.parametrize("npartitions", [1, 3, 17, 130])
def test_group_by_many_partitions_one_key_for_all_rows(client, npartitions):
    n = 2000
    table = pa.table({
        "k": pa.array(["same"] * n),
        "g": pa.array([i % 7 for i in range(n)], pa.int32()),
        "v": pa.array([float(i) if i % 5 else None for i in range(n)]),
    })  # fmt: skip
    cuts = [n * i // npartitions for i in range(1, npartitions)]
    parts = _parts(table, cuts)
    ddf = _ddf(parts)
    aggs = {"s": ("v", "sum"), "n": (None, "size"), "m": ("v", "median"), "u": ("g", "n_unique")}
    one = fbd.group_by(ddf, "k", aggs).compute()
    assert one.to_dict("records") == [{"k": "same", "s": float(sum(
        i for i in range(n) if i % 5)), "n": n, "m": 1000.0, "u": 7}]  # fmt: skip
    by_g = ddf.fb.group_by(["g"], {"n": (None, "size")}, sort=True).compute()
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
