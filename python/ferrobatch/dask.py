"""ferrobatch's kernels on Dask DataFrames (extra ``ferrobatch[dask]``).

Partitions are pandas frames with Arrow-backed dtypes; each becomes an Arrow table (typed
by the frame's metadata) for the kernels, and results come back as such frames. Output
columns and types, and every argument error, come from Rust before any task runs.

Shuffles move Arrow, not pandas: a partition is cut into one piece per destination (by
ferrobatch's key hash, or by range for ``sort``), each piece travels as one row (its
destination, source partition and the piece as an Arrow IPC stream) through Dask's own
shuffle — ``dataframe.shuffle.method``, ``p2p`` on a distributed client, or ``tasks`` —
and a destination concatenates its pieces in source order. So every Arrow type arrives
exactly as it left (Dask's P2P types what it hands back by pandas' conversion: Arrow
strings came back as object columns, and it failed on a ``list<double>`` column) and each
destination holds its rows in input order.
The key hash hashes a key's *value* by the key rules (integers of any width, strings of
any layout, dictionaries, NaN, -0.0), so the two sides of a join land together whatever
their key types.

* ``group_by``: every partition is reduced to *partial-state tables* (the keys, then each
  aggregate's mergeable state: what :class:`ferrobatch.GroupByState` holds) on its worker.
  With ``split_out`` None / 1 they are folded, in partition order, into one state that
  finishes into one partition: the answer is bit for bit that of one ``GroupByState`` fed
  the partitions in order (the fold is the one ``absorb`` does). With ``split_out = n``
  the partial states are shuffled by key hash and output partition ``j`` folds its pieces
  in partition order — the same groups and values, float sums and moments to the last
  bits (they are merged in other batches); with ``sort=True`` the groups are then
  range-sorted into key order (see ``sort``).
* ``join``: the right side is *broadcast* (concatenated once, joined with every left
  partition) when it has one partition, for ``broadcast=True``, and for a cross join; the
  output is then row for row the single-machine kernel's. Otherwise both sides are
  shuffled by key hash and joined partition by partition; each output partition holds its
  rows in the single-machine order.
* ``dedup``: each partition drops its own duplicates first (``keep`` first / last), the
  rest are shuffled by key hash and deduplicated in input order: the rows kept are exactly
  the kernel's, each output partition in input order; ``split_out=1`` gives the kernel's
  table.
* ``sort``: boundaries are sampled from every partition and sorted in ferrobatch's order
  (NaN after +inf, nulls first or last); rows are range-shuffled and each destination
  (its rows in input order) sorted stably: the partitions in order are the kernel's stable
  sort, row for row.
* Pipelines: :meth:`ferrobatch.Pipeline.to_dask` (see :func:`pipeline_to_dask`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

import ferrobatch as fb
from ferrobatch import _core

# The routing column Dask's shuffle reads as the destination partition (its name is Dask's).
_PART = "_partitions"


def _check_frame(ddf: Any, arg: str) -> pa.Schema:
    """The Arrow schema of a Dask DataFrame's partitions (from its metadata, no data read)."""
    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"{arg} must be a dask DataFrame, got {type(ddf).__name__}")
    return pa.Schema.from_pandas(ddf._meta, preserve_index=False)


def _check_parts(n: Any, arg: str) -> int | None:
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{arg} must be a positive int or None, got {n!r}")
    return n


def _table(part: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(part, schema=schema, preserve_index=False)


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _meta(schema: pa.Schema) -> pd.DataFrame:
    return _frame(schema.empty_table())


# ---------------------------------------------------------------------------------------
# Shuffling Arrow pieces through Dask's shuffle
#
# A partition is cut into one piece per destination (its rows in order) and each piece
# travels as one row of a small frame — destination, source partition, the piece as an
# Arrow IPC stream — through Dask's shuffle (p2p or tasks). A destination concatenates its
# pieces by source partition, so it holds its rows in input order, every Arrow type exactly
# as it was (see the module doc for what Dask's P2P does to Arrow columns).


def _cut(
    part: pd.DataFrame,
    side: int,
    tables: Any,
    route: Any,
    n: int,
    partition_info: dict | None = None,
) -> pd.DataFrame:
    """One row per non-empty piece of the tables ``tables(part)`` gives: destination,
    input side, source partition, sequence number within it, the piece as IPC bytes."""
    to, seq, blobs = [], [], []
    for table in tables(part):
        dest = np.asarray(route(table))
        # Rows grouped by destination, in order within each: one stable sort (a radix sort
        # on 16-bit destinations), one gather, then zero-copy slices.
        order = np.argsort(dest.astype(np.uint16 if n <= 1 << 16 else np.int64), kind="stable")
        counts = np.bincount(dest, minlength=n)
        grouped = _core.take(table, pa.array(order.astype(np.uint32)))
        start = 0
        for j in np.flatnonzero(counts):
            to.append(int(j))
            seq.append(len(seq))
            blobs.append(fb._ipc_bytes(grouped.slice(start, int(counts[j]))))
            start += int(counts[j])
    number = partition_info["number"] if partition_info else 0
    return pd.DataFrame({
        _PART: np.array(to, np.int64),
        "side": np.full(len(to), side, np.int64),
        "source": np.full(len(to), number, np.int64),
        "seq": np.array(seq, np.int64),
        "piece": pd.Series(blobs, dtype=object),
    })  # fmt: skip


def _shuffle(inputs: list[tuple[dd.DataFrame, Any, Any]], n: int) -> list[Any]:
    """The rows of each input ``(ddf, tables, route)`` — the tables ``tables(partition)``
    gives — moved to partition ``route(table)[row]`` of ``n``, all inputs in one shuffle
    (so the pieces of a join's two sides meet where they arrive): per destination a
    delayed list, per input, of its tables in input order (by source partition, then as
    ``tables`` listed them)."""
    from dask.dataframe.dask_expr._collection import new_collection
    from dask.dataframe.dask_expr._shuffle import Shuffle

    cuts = []
    for side, (ddf, tables, route) in enumerate(inputs):
        meta = _cut(ddf._meta, side, lambda _: [], route, n)
        cuts.append(ddf.map_partitions(_cut, side, tables, route, n, partition_info=True,
                                       meta=meta, enforce_metadata=False))  # fmt: skip
    cut = cuts[0] if len(cuts) == 1 else dd.concat(cuts)
    moved = new_collection(Shuffle(cut.expr, _PART, n, True, None, None))
    k = len(inputs)
    return [dask.delayed(_arrived, pure=True)(p, k) for p in moved.to_delayed()]


def _arrived(pieces: pd.DataFrame, k: int) -> list[list[pa.Table]]:
    pieces = pieces.sort_values(["side", "source", "seq"], kind="stable")
    out: list[list[pa.Table]] = [[] for _ in range(k)]
    for side, blob in zip(pieces["side"], pieces["piece"], strict=True):
        out[side].append(pa.ipc.open_stream(blob).read_all())
    return out


def _rows_of(schema: pa.Schema) -> Any:
    return lambda part: [_table(part, schema)]


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _hash_route(keys: list[str], n: int) -> Any:
    return lambda table: _core.hash_partitions(table, keys, n).to_numpy()


def _out(parts: list[Any], schema: pa.Schema) -> dd.DataFrame:
    """A Dask DataFrame of delayed result tables of ``schema``."""
    frames = [dask.delayed(_frame, pure=True)(p) for p in parts]
    return dd.from_delayed(frames, meta=_meta(schema), verify_meta=False)


# ---------------------------------------------------------------------------------------
# group_by


def _partials(part: pd.DataFrame, schema: pa.Schema, args: tuple) -> list[pa.Table]:
    """The partial-state tables of one partition (one per record batch, as ``absorb``)."""
    return _core.GroupByState(schema, *args).partial(_table(part, schema))


def _folded(schema: pa.Schema, args: tuple, *partials: list[pa.Table]) -> pa.Table:
    """One state fed the partial-state tables in order (lists of them, in order), finished."""
    state = _core.GroupByState(schema, *args)
    for tables in partials:
        for t in tables:
            state.absorb_partial(t)
    return state.finish()


def _folded_arrived(schema: pa.Schema, args: tuple, sides: list[list[pa.Table]]) -> pa.Table:
    return _folded(schema, args, sides[0])


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
    output columns and types.

    ``split_out`` None / 1: one output partition, groups in order of first appearance in
    partition order (by key with ``sort=True``), every value bit for bit that of a
    :class:`ferrobatch.GroupByState` fed the partitions in order. The partial states of all
    partitions meet in the final task: for many groups use ``split_out=n``, which spreads
    the groups over ``n`` partitions by key hash (group order unspecified, floats to the
    last bits; ``sort=True`` range-sorts them into key order)."""
    schema = _check_frame(ddf, "ddf")
    split_out = _check_parts(split_out, "split_out")
    key_list = fb._key_list(keys, "keys")
    fb._check_bool(dropna, "dropna")
    fb._check_bool(sort, "sort")
    out_schema = _core.group_by_schema(schema, key_list, fb._agg_tuples(aggs), dropna, sort)
    if split_out is None or split_out == 1 or not key_list:  # keys=[]: one group
        args = (key_list, fb._agg_tuples(aggs), dropna, sort)
        partials = [dask.delayed(_partials, pure=True)(p, schema, args) for p in ddf.to_delayed()]
        return _out([dask.delayed(_folded, pure=True)(schema, args, *partials)], out_schema)
    # Partial states shuffled by key hash; key order, when asked for, from a range sort after.
    args = (key_list, fb._agg_tuples(aggs), dropna, False)
    partials = functools.partial(_partials, schema=schema, args=args)
    arrived = _shuffle([(ddf, partials, _hash_route(key_list, split_out))], split_out)
    folded = [dask.delayed(_folded_arrived, pure=True)(schema, args, a) for a in arrived]
    out = _out(folded, out_schema)
    if sort and key_list:
        return _sort(out, out_schema, key_list, [False] * len(key_list),
                     [True] * len(key_list), split_out)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------
# join

_BROADCASTABLE = ("inner", "left", "semi", "anti", "cross")


def _whole(schema: pa.Schema, *parts: pd.DataFrame) -> pa.Table:
    return _concat([_table(p, schema) for p in parts], schema)


def _prepared(schema: pa.Schema, lschema: pa.Schema, kw: dict, *parts: pd.DataFrame) -> Any:
    """The broadcast right side, its key index built (again once per worker it reaches:
    a JoinBuild pickles as its table)."""
    return fb.JoinBuild(_whole(schema, *parts), lschema, **kw)


def _probed(left: pd.DataFrame, build: Any, lschema: pa.Schema) -> pa.Table:
    return build.probe(_table(left, lschema))


def _join_arrived(sides: list[list[pa.Table]], schemas: tuple, kw: dict) -> pa.Table:
    left, right = sides
    return fb.join(_concat(left, schemas[0]), _concat(right, schemas[1]), **kw)


def join(
    left: dd.DataFrame,
    right: dd.DataFrame,
    on: str | Sequence[str] | None = None,
    *,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    how: str = "inner",
    suffix: str = "_right",
    nulls_equal: bool = False,
    broadcast: bool | None = None,
    npartitions: int | None = None,
) -> dd.DataFrame:
    """:func:`ferrobatch.join` of two Dask DataFrames: the same ``how``, key rules, output
    columns and types.

    ``broadcast``: join every left partition with the whole right side (True; an inner /
    left / semi / anti / cross join), shuffle both sides by key hash into ``npartitions``
    (default: the larger side's) and join pair by pair (False), or broadcast when the right
    side has one partition (None). Broadcast keeps the single-machine row order; after a
    shuffle each partition holds its rows in that order."""
    lschema, rschema = _check_frame(left, "left"), _check_frame(right, "right")
    lo, ro = fb._join_args(how, on, left_on, right_on, suffix, nulls_equal)
    if broadcast is not None:
        fb._check_bool(broadcast, "broadcast")
    npartitions = _check_parts(npartitions, "npartitions")
    out_schema, _ = _core.join_layout(lschema, rschema, lo, ro, how, suffix)
    if broadcast and how not in _BROADCASTABLE:
        raise ValueError(
            f"a {how!r} join cannot broadcast its right side (it must see every left row): "
            "use broadcast=False or None"
        )
    if broadcast is None:
        broadcast = how == "cross" or (how in _BROADCASTABLE and right.npartitions == 1)
    if how == "cross":
        broadcast = True
    kw = {"left_on": lo, "right_on": ro, "how": how, "suffix": suffix, "nulls_equal": nulls_equal}
    if how == "cross":
        kw = {"how": how, "suffix": suffix, "nulls_equal": nulls_equal}
    if broadcast:
        build = dask.delayed(_prepared, pure=True)(rschema, lschema, kw, *right.to_delayed())
        parts = [dask.delayed(_probed, pure=True)(p, build, lschema) for p in left.to_delayed()]
        return _out(parts, out_schema)
    n = npartitions or max(left.npartitions, right.npartitions)
    arrived = _shuffle(
        [(left, _rows_of(lschema), _hash_route(lo, n)),
         (right, _rows_of(rschema), _hash_route(ro, n))], n
    )  # fmt: skip
    parts = [dask.delayed(_join_arrived, pure=True)(a, (lschema, rschema), kw) for a in arrived]
    return _out(parts, out_schema)


# ---------------------------------------------------------------------------------------
# dedup


def _dedup_local(
    part: pd.DataFrame, schema: pa.Schema, subset: list[str], keep: str
) -> pd.DataFrame:
    """One partition's own duplicates dropped (keep first / last), rows still in order."""
    table = fb.dedup(_table(part, schema), subset, keep=keep)
    return _frame(table)


def _dedup_arrived(
    sides: list[list[pa.Table]], schema: pa.Schema, subset: list[str], keep: str
) -> pa.Table:
    return fb.dedup(_concat(sides[0], schema), subset, keep=keep)


def dedup(
    ddf: dd.DataFrame,
    subset: str | Sequence[str] | None = None,
    *,
    keep: str = "first",
    split_out: int | None = None,
) -> dd.DataFrame:
    """:func:`ferrobatch.dedup` of a Dask DataFrame: the same rows are kept (``keep``
    first / last / none, by ``subset``, default all columns). Rows are shuffled into
    ``split_out`` partitions (default: as many as ``ddf`` has) by key hash, each in input
    order; ``split_out=1`` gives exactly the single-machine result."""
    schema = _check_frame(ddf, "ddf")
    if not isinstance(keep, str):
        raise TypeError(f'keep must be "first", "last" or "none", got {keep!r}')
    if keep not in ("first", "last", "none"):
        raise ValueError(f'keep must be "first", "last" or "none", got {keep!r}')
    keys = list(schema.names) if subset is None else fb._key_list(subset, "subset")
    _core.check_keys(schema, keys)
    n = _check_parts(split_out, "split_out") or ddf.npartitions
    if keep != "none":
        # A key's first (last) row overall is its first (last) row in its partition.
        ddf = ddf.map_partitions(_dedup_local, schema, keys, keep, meta=_meta(schema))
    arrived = _shuffle([(ddf, _rows_of(schema), _hash_route(keys, n))], n)
    return _out(
        [dask.delayed(_dedup_arrived, pure=True)(a, schema, keys, keep) for a in arrived], schema
    )


# ---------------------------------------------------------------------------------------
# sort


def _sample(part: pd.DataFrame, schema: pa.Schema, by: list[str], k: int) -> pa.Table:
    """``k`` evenly spaced rows of a partition's key columns."""
    table = _table(part, schema).select(by)
    if table.num_rows <= k:
        return table
    rows = np.linspace(0, table.num_rows - 1, k).astype(np.uint32)
    return _core.take(table, pa.array(rows))


def _sort_arrived(
    sides: list[list[pa.Table]], schema: pa.Schema, by: list[str], desc: list[bool],
    nl: list[bool],
) -> pa.Table:  # fmt: skip
    return fb.sort(_concat(sides[0], schema), by, descending=desc, nulls_last=nl)


def _flags(flag: Any, n: int, name: str) -> list[bool]:
    if isinstance(flag, bool):
        return [flag] * n
    flags = list(flag)
    if len(flags) != n:
        raise ValueError(f"{name} has {len(flags)} values for {n} sort keys")
    return flags


def _sort(
    ddf: dd.DataFrame, schema: pa.Schema, by: list[str], desc: list[bool], nl: list[bool], n: int
) -> dd.DataFrame:
    key_schema = pa.schema([schema.field(b) for b in by])
    bounds = key_schema.empty_table()
    if n > 1:
        k = max(16, -(-32 * n // ddf.npartitions))
        samples = dask.compute(
            *[dask.delayed(_sample, pure=True)(p, schema, by, k) for p in ddf.to_delayed()]
        )
        sample = fb.sort(pa.concat_tables(samples), by, descending=desc, nulls_last=nl)
        if sample.num_rows:
            at = [(i * sample.num_rows) // n for i in range(1, n)]
            bounds = _core.take(sample, pa.array(at, pa.uint32()))

    def route(table: pa.Table) -> np.ndarray:
        return _core.range_partitions(table, bounds, by, desc, nl).to_numpy()

    arrived = _shuffle([(ddf, _rows_of(schema), route)], n)
    return _out(
        [dask.delayed(_sort_arrived, pure=True)(a, schema, by, desc, nl) for a in arrived], schema
    )


def sort(
    ddf: dd.DataFrame,
    by: str | Sequence[str],
    *,
    descending: bool | Sequence[bool] = False,
    nulls_last: bool | Sequence[bool] = True,
    npartitions: int | None = None,
) -> dd.DataFrame:
    """:func:`ferrobatch.sort` of a Dask DataFrame: ``npartitions`` (default: as many as
    ``ddf`` has) partitions whose rows, read in partition order, are the single-machine
    stable sort. Boundaries are sampled first (this reads the input once more)."""
    schema = _check_frame(ddf, "ddf")
    keys = fb._key_list(by, "by")
    _core.check_sort(schema, keys, descending, nulls_last)
    n = _check_parts(npartitions, "npartitions") or ddf.npartitions
    desc = _flags(descending, len(keys), "descending")
    nl = _flags(nulls_last, len(keys), "nulls_last")
    return _sort(ddf, schema, keys, desc, nl, n)


class _WorkerSetup:
    """The worker plugin of :func:`setup` (a ``distributed.WorkerPlugin``)."""

    name = "ferrobatch"

    def __init__(self, memory_limit: Any = None, temp_directory: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.temp_directory = temp_directory

    def setup(self, worker: Any) -> None:
        # Dask runs up to `nthreads` tasks at once in this process; their kernels share
        # one ferrobatch pool of as many threads, so the worker uses its share of cores.
        fb.set_num_threads(max(1, worker.state.nthreads))
        if self.memory_limit is not None:
            fb.set_memory_limit(_worker_limit(self.memory_limit, worker))
        if self.temp_directory is not None:
            fb.set_temp_directory(self.temp_directory)

    def teardown(self, worker: Any) -> None:
        pass


def _worker_limit(limit: Any, worker: Any) -> int:
    """`limit` in bytes on `worker`: a percentage is of the worker's Dask memory limit (of
    the machine when it has none)."""
    dask_limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    return fb._size(limit, "memory_limit", lambda: dask_limit or fb._machine_memory())


def setup(
    client: Any, *, memory_limit: int | str | None = None, temp_directory: Any = None
) -> None:
    """Register ferrobatch's worker plugin on ``client``'s cluster (workers that join later
    get it too): each worker's ferrobatch pool gets as many threads as the worker has Dask
    threads, so kernels do not oversubscribe the cores Dask gave the worker.
    ``memory_limit`` (bytes, ``"4GiB"``, or ``"50%"`` of the worker's Dask memory limit)
    sets each worker's :func:`ferrobatch.set_memory_limit`, past which its operators spill
    to ``temp_directory`` (each worker's :func:`ferrobatch.set_temp_directory`); ``None``
    leaves a worker's setting as it is."""
    from distributed import Client, WorkerPlugin

    if not isinstance(client, Client):
        raise TypeError(f"setup takes a distributed.Client, got {type(client).__name__}")
    if memory_limit is not None:
        fb._size(memory_limit, "memory_limit", lambda: 1)  # checked here, not on the workers
    if temp_directory is not None:
        if not isinstance(temp_directory, str | os.PathLike):
            raise TypeError(f"temp_directory must be a str or os.PathLike, "
                            f"got {type(temp_directory).__name__}")  # fmt: skip
        temp_directory = os.fspath(temp_directory)
    plugin = type("FerrobatchWorkerPlugin", (_WorkerSetup, WorkerPlugin), {})(
        memory_limit, temp_directory
    )
    client.register_plugin(plugin, name=_WorkerSetup.name)


@dd.extensions.register_dataframe_accessor("fb")
class FerrobatchAccessor:
    """``ddf.fb.group_by(...)``, ``.join(right, ...)``, ``.dedup(...)``, ``.sort(...)``:
    the functions of :mod:`ferrobatch.dask` on this frame."""

    def __init__(self, ddf: dd.DataFrame) -> None:
        self._ddf = ddf

    def group_by(self, keys: str | Sequence[str], aggs: dict[str, Any], **kw: Any) -> Any:
        return group_by(self._ddf, keys, aggs, **kw)

    def join(self, right: dd.DataFrame, on: Any = None, **kw: Any) -> Any:
        return join(self._ddf, right, on, **kw)

    def dedup(self, subset: str | Sequence[str] | None = None, **kw: Any) -> Any:
        return dedup(self._ddf, subset, **kw)

    def sort(self, by: str | Sequence[str], **kw: Any) -> Any:
        return sort(self._ddf, by, **kw)


# ---------------------------------------------------------------------------------------
# Pipelines on Dask


def _unviewed(schema: pa.Schema) -> pa.Schema:
    """View columns as their large layouts: Dask cannot build metadata for view types."""
    from ferrobatch.pipeline import _unview_schema

    return _unview_schema(schema)


def _rebuilt(chain: list[Any], node: Any) -> Any:
    """The streaming stages ``chain`` (top first) rebuilt over ``node`` (their schemas
    computed again from its)."""
    from ferrobatch import pipeline as pl

    for stage in reversed(chain):
        if isinstance(stage, pl._Filter):
            node = pl._Filter(node, stage.expr)
        elif isinstance(stage, pl._Project):
            node = pl._Project(node, stage.exprs, stage._label)
        else:
            node = pl._MapBatches(node, stage.fn)
    return node


def _run_chain(source: Any, chain: list[Any], scan_args: tuple, schema: pa.Schema) -> pa.Table:
    """One partition of a pipeline's streaming prefix: its stages over one file, fragment
    or table slice, run by the local executor."""
    from ferrobatch import pipeline as pl

    batch_size, columns, dataset_schema = scan_args
    if isinstance(source, tuple):  # (Parquet file, row group ids)
        import pyarrow.parquet as pq

        path, ids = source
        source = pq.ParquetFile(path).read_row_groups(ids, columns=columns)
        want = pa.schema([dataset_schema.field(c) for c in source.column_names])
        source = source if source.schema == want else source.cast(want)
    elif isinstance(source, ds.Fragment):
        source = source.to_table(schema=dataset_schema)
    node = _rebuilt(chain, pl._Scan(source, batch_size, columns))
    table = pl.Pipeline(node).collect()
    return table.cast(schema) if table.schema != schema else table


def _run_chain_on(
    part: pd.DataFrame, chain: list[Any], inp: pa.Schema, out: pa.Schema
) -> pd.DataFrame:
    return _frame(_run_chain(_table(part, inp), chain, (None, None, None), out))


def _scan_sources(scan: Any, partition_rows: int) -> list[Any]:
    """What each partition of a scan reads: a file, a dataset fragment or a table slice."""
    data = scan.data
    if isinstance(data, pa.RecordBatchReader):
        raise TypeError(
            "a pipeline over a RecordBatchReader (one pass) cannot run on Dask: scan files, "
            "a dataset or a table"
        )
    if scan.fmt == "parquet":
        return [src for f in scan.files for src in _row_group_ranges(f, partition_rows)]
    if scan.files is not None:
        return list(scan.files)
    if isinstance(data, ds.InMemoryDataset):
        table = data.to_table()
        starts = range(0, max(table.num_rows, 1), partition_rows)
        return [table.slice(i, partition_rows) for i in starts]
    return list(data.get_fragments()) or [data.schema.empty_table()]


def _row_group_ranges(path: str, partition_rows: int) -> list[Any]:
    """A Parquet file as runs of consecutive row groups of about ``partition_rows`` rows:
    the path itself when it is one run (read by the executor's reader), else one
    ``(path, row group ids)`` per run."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    runs: list[list[int]] = [[]]
    rows = 0
    for i in range(meta.num_row_groups):
        if rows >= partition_rows:
            runs.append([])
            rows = 0
        runs[-1].append(i)
        rows += meta.row_group(i).num_rows
    return [path] if len(runs) == 1 else [(path, ids) for ids in runs]


def _expect_stats(part: pd.DataFrame, schema: pa.Schema, not_null: list[str]) -> tuple:
    table = _table(part, schema)
    return table.num_rows, [table.column(c).null_count for c in not_null]


def _duplicated_rows(counts: pd.DataFrame) -> int:
    n = counts["rows"].to_numpy()
    return int(n[n > 1].sum())


def _verdict(node: Any, stats: list[tuple], duplicated: list[int]) -> None:
    """The executor's expectation messages, from per-partition counts."""
    from ferrobatch.pipeline import ExpectationError

    rows = sum(s[0] for s in stats)
    failed = []
    if node.min_rows is not None and rows < node.min_rows:
        failed.append(f"min_rows: {rows:,} rows, expected at least {node.min_rows:,}")
    if node.max_rows is not None and rows > node.max_rows:
        failed.append(f"max_rows: {rows:,} rows, expected at most {node.max_rows:,}")
    for i, c in enumerate(node.not_null):
        nulls = sum(s[1][i] for s in stats)
        if nulls:
            failed.append(f"not_null: column {c!r} has {nulls:,} null rows")
    dup = sum(duplicated)
    if dup:
        cols = ", ".join(repr(c) for c in node.unique)
        failed.append(f"unique: {dup:,} rows share their [{cols}] with another row")
    if failed:
        raise ExpectationError("expectation failed: " + "; ".join(failed))


def _checked(part: pd.DataFrame, verdict: None) -> pd.DataFrame:
    return part


def _expect(ddf: dd.DataFrame, node: Any) -> dd.DataFrame:
    """Every partition released only once the checks over all of them passed."""
    schema = _check_frame(ddf, "pipeline")
    stats = [
        dask.delayed(_expect_stats, pure=True)(p, schema, node.not_null) for p in ddf.to_delayed()
    ]
    duplicated: list[Any] = []
    if node.unique:
        counts = group_by(ddf, node.unique, {"rows": (None, "size")}, split_out=ddf.npartitions)
        duplicated = [dask.delayed(_duplicated_rows, pure=True)(p) for p in counts.to_delayed()]
    verdict = dask.delayed(_verdict, pure=True)(node, stats, duplicated)
    parts = [dask.delayed(_checked, pure=True)(p, verdict) for p in ddf.to_delayed()]
    return dd.from_delayed(parts, meta=ddf._meta, verify_meta=False)


def pipeline_to_dask(p: Any, partition_rows: int = 1 << 20) -> dd.DataFrame:
    """A :class:`ferrobatch.Pipeline` as a Dask DataFrame: its scan split into one task per
    file (per run of row groups of about ``partition_rows`` rows of a Parquet file, per
    fragment of other datasets, per ``partition_rows`` rows of a table), its
    streaming stages (filter, select, with_columns, map_batches) run per partition by the
    local executor, and its kernels by this module's."""
    return _dask_of(p._node, partition_rows)


def _dask_of(node: Any, partition_rows: int) -> dd.DataFrame:
    from ferrobatch import pipeline as pl

    chain = []
    while isinstance(node, pl._Filter | pl._Project | pl._MapBatches):
        chain.append(node)
        node = node.inputs[0]
    top = chain[0].schema if chain else node.schema
    if isinstance(node, pl._Scan):
        out = _unviewed(top)
        args = (node.batch_size, node.schema.names, node.data.schema)
        # Not `pure`: Dask tokenizes a sliced Arrow table by its buffers, offsets ignored,
        # so the slices of one table would get one key.
        parts = [
            dask.delayed(_run_chain, pure=not isinstance(src, pa.Table))(src, chain, args, out)
            for src in _scan_sources(node, partition_rows)
        ]
        return _out(parts, out)
    base = _kernel(node, partition_rows)
    if not chain:
        return base
    inp, out = _unviewed(node.schema), _unviewed(top)
    return base.map_partitions(_run_chain_on, chain, inp, out, meta=_meta(out))


def _kernel(node: Any, partition_rows: int) -> dd.DataFrame:
    from ferrobatch import pipeline as pl

    if isinstance(node, pl._Join):
        left, right = (_dask_of(n, partition_rows) for n in node.inputs)
        return join(left, right, node.on, **node.kw)
    child = _dask_of(node.inputs[0], partition_rows)
    if isinstance(node, pl._GroupBy):
        keys, aggs, dropna, sort_ = node.args
        return group_by(child, keys, aggs, dropna=dropna, sort=sort_)
    if isinstance(node, pl._Sort):
        out = sort(child, node.by, descending=node.desc, nulls_last=node.nulls_last)
        return out if node.limit is None else out.head(node.limit, npartitions=-1, compute=False)
    if isinstance(node, pl._Dedup):
        return dedup(child, node.given or None, keep=node.keep)
    if isinstance(node, pl._Head):
        return child.head(node.n, npartitions=-1, compute=False)
    if isinstance(node, pl._Expect):
        return _expect(child, node)
    raise TypeError(f"cannot run {node.label()} on Dask")  # every node kind is handled above
