"""ferrobatch's kernels on Dask DataFrames (extra ``ferrobatch[dask]``).

Partitions are pandas frames with Arrow-backed dtypes; each becomes an Arrow table for the
kernels and the results come back as such frames.

``group_by`` (``split_out`` of None or 1): every partition is aggregated into a
:class:`ferrobatch.GroupByState` on its worker; the states (pickled as Arrow IPC tables of
partial states) are merged pairwise in a tree that keeps partition order, so the answer
is that of one ``GroupByState`` fed the partitions in order — the same groups and group
order; float sums and moments to the last bits (the tree associates them differently) —
and it is finished into one output partition.

Not yet here (issue 16): ``split_out > 1`` (a shuffle on ferrobatch's key hash), ``join``,
``dedup``, ``sort``, pipelines on Dask, the worker plugin and the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd
import pyarrow as pa

import ferrobatch as fb
from ferrobatch import _core


def _schema_of(ddf: dd.DataFrame) -> pa.Schema:
    """The Arrow schema of the partitions (from the frame's metadata, no data read)."""
    return pa.Schema.from_pandas(ddf._meta, preserve_index=False)


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _partial(
    part: pd.DataFrame, schema: pa.Schema, keys: list[str], aggs: dict, kw: dict
) -> fb.GroupByState:
    state = fb.GroupByState(schema, keys, aggs, **kw)
    state.absorb(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
    return state


def _merged(first: fb.GroupByState, second: fb.GroupByState) -> fb.GroupByState:
    """`first` (earlier partitions) with `second` (later ones) folded in."""
    first.merge(second)
    return first


def _finished(state: fb.GroupByState) -> pd.DataFrame:
    return _frame(state.finish())


def group_by(
    ddf: dd.DataFrame,
    keys: str | Sequence[str],
    aggs: dict[str, Any],
    *,
    dropna: bool = False,
    sort: bool = False,
    split_out: int | None = None,
) -> dd.DataFrame:
    """:func:`ferrobatch.group_by` over a Dask DataFrame: the same aggregates, key rules,
    output columns and types. Groups come in order of first appearance in partition order
    (by key with ``sort=True``); float sums and moments equal those of a ``GroupByState``
    fed the partitions in order to the last bits."""
    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"ddf must be a dask DataFrame, got {type(ddf).__name__}")
    if split_out is not None and (
        not isinstance(split_out, int) or isinstance(split_out, bool) or split_out < 1
    ):
        raise ValueError(f"split_out must be a positive int or None, got {split_out!r}")
    if split_out not in (None, 1):
        raise NotImplementedError("split_out > 1 (a shuffle of partial states) is not built yet")
    schema = _schema_of(ddf)
    key_list = fb._key_list(keys, "keys")
    for flag, name in ((dropna, "dropna"), (sort, "sort")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    # The output schema (and every argument error) from Rust, before any task runs.
    out_schema = _core.group_by_schema(schema, key_list, fb._agg_tuples(aggs), dropna, sort)
    kw = {"dropna": dropna, "sort": sort}
    states = [
        dask.delayed(_partial, pure=True)(part, schema, key_list, aggs, kw)
        for part in ddf.to_delayed()
    ]
    # A balanced tree of merges; each keeps its left side first (partition order).
    while len(states) > 1:
        nxt = [
            dask.delayed(_merged, pure=True)(states[i], states[i + 1])
            for i in range(0, len(states) - 1, 2)
        ]
        if len(states) % 2:
            nxt.append(states[-1])
        states = nxt
    meta = _frame(out_schema.empty_table())
    if not states:  # no partition: the kernel's answer for no rows
        empty = schema.empty_table()
        return dd.from_pandas(_frame(fb.group_by(empty, key_list, aggs, **kw)), npartitions=1)
    return dd.from_delayed([dask.delayed(_finished, pure=True)(states[0])], meta=meta)


@dd.extensions.register_dataframe_accessor("fb")
class FerrobatchAccessor:
    """``ddf.fb.group_by(...)``: the functions of :mod:`ferrobatch.dask` on this frame."""

    def __init__(self, ddf: dd.DataFrame) -> None:
        self._ddf = ddf

    def group_by(self, keys: str | Sequence[str], aggs: dict[str, Any], **kw: Any) -> Any:
        return group_by(self._ddf, keys, aggs, **kw)
