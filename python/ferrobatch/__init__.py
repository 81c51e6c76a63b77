"""ferrobatch: parallel Rust kernels (sort, hash join, group-by, dedup) over Apache Arrow.

Every kernel accepts a "table-like" -- a ``pyarrow.Table`` / ``RecordBatch`` /
``RecordBatchReader``, any object implementing the Arrow PyCapsule interface
(``__arrow_c_stream__`` / ``__arrow_c_array__``: polars, duckdb, ...) or a
``pandas.DataFrame`` (its index is dropped) -- and returns a ``pyarrow.Table``.
Kernels release the GIL and run on a ferrobatch-owned thread pool
(``set_num_threads`` / ``FERROBATCH_NUM_THREADS``); results never depend on the thread count.
"""

from __future__ import annotations

import numbers
import operator
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import pyarrow as pa

from ferrobatch import _core

__version__: str = _core.__version__

__all__ = [
    "ExpectationError",
    "FallbackWarning",
    "GroupByState",
    "JoinBuild",
    "MemoryLimitError",
    "Pipeline",
    "Report",
    "dedup",
    "get_max_temp_directory_size",
    "get_memory_limit",
    "get_num_threads",
    "get_temp_directory",
    "group_by",
    "join",
    "scan",
    "set_max_temp_directory_size",
    "set_memory_limit",
    "set_num_threads",
    "set_temp_directory",
    "set_spill_compression",
    "get_spill_compression",
    "sort",
]


class FallbackWarning(UserWarning):
    """A pandas drop-in could not accelerate a call and ran pandas itself instead."""


def _arrow_input(data: Any, arg: str = "data") -> Any:
    """Return a pyarrow ``Table`` or ``RecordBatch`` the Rust core can read through the Arrow C
    interfaces.

    Streams (readers, ``__arrow_c_stream__`` objects) are read here, batch by batch, and every
    batch is checked against the stream's declared schema before any kernel touches it: the C
    stream interface hands over a batch's buffers without their sizes, so a batch of another
    type than declared would otherwise be read past its end. Reading through pyarrow also keeps
    the class of an exception the producer raised (a generator's ``KeyError`` stays one).
    """
    pd = _pandas_module()
    if pd is not None and isinstance(data, pd.DataFrame):
        # pandas >= 3 exports __arrow_c_stream__ too, but with its index as a column.
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.Table | pa.RecordBatch):
        return data
    if isinstance(data, pa.RecordBatchReader):
        return _read_checked(data, arg)
    if hasattr(data, "__arrow_c_stream__"):
        try:
            reader = pa.RecordBatchReader.from_stream(data)
        except (pa.ArrowException, TypeError) as e:
            raise TypeError(f"{arg}: cannot read its Arrow stream as record batches: {e}") from e
        return _read_checked(reader, arg, foreign=True)
    if hasattr(data, "__arrow_c_array__"):
        try:
            batch = pa.record_batch(data)
            batch.validate()
        except (pa.ArrowException, TypeError) as e:
            raise TypeError(f"{arg}: cannot read its Arrow array as a record batch: {e}") from e
        return batch
    raise TypeError(
        f"{arg} must be a table-like (pyarrow Table/RecordBatch/RecordBatchReader, an object "
        f"with __arrow_c_stream__ or __arrow_c_array__, or a pandas DataFrame), "
        f"got {type(data).__name__}"
    )


def _checked_batches(
    reader: pa.RecordBatchReader, arg: str, *, foreign: bool = False
) -> Iterator[pa.RecordBatch]:
    """The batches of `reader`, each checked against its declared schema (column count, names,
    types, then pyarrow's structural validation); a mismatch is a ``ValueError`` naming the
    batch and the column. Exceptions the reader raises pass through unchanged, except from a
    `foreign` stream (imported through the C interface), whose errors arrive as pyarrow's
    ``ArrowInvalid`` anyway: those are said to come from the batch being imported."""
    schema = reader.schema
    i = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            if not foreign:
                raise
            raise ValueError(f"{arg}: cannot import record batch {i} of its stream: {e}") from e
        _check_batch(batch, schema, i, arg)
        yield batch
        i += 1


def _check_batch(batch: pa.RecordBatch, schema: pa.Schema, i: int, arg: str) -> None:
    got = batch.schema
    where = f"{arg}: record batch {i} does not match the stream's schema"
    if len(got) != len(schema):
        missing = [n for n in schema.names if n not in got.names]
        extra = [n for n in got.names if n not in schema.names]
        detail = "".join(
            [f"; missing {missing}" if missing else "", f"; unexpected {extra}" if extra else ""]
        )
        raise ValueError(
            f"{where}: it has {len(got)} columns, the schema declares {len(schema)}{detail}"
        )
    for want, have in zip(schema, got, strict=True):
        if want.name != have.name:
            raise ValueError(
                f"{where}: column {have.name!r} is where the schema declares {want.name!r}"
            )
        if want.type != have.type:
            raise ValueError(
                f"{where}: column {want.name!r} is {have.type} but the schema declares {want.type}"
            )
    try:
        batch.validate()
    except pa.ArrowInvalid as e:
        raise ValueError(f"{arg}: record batch {i} is malformed: {e}") from e


def _read_checked(reader: pa.RecordBatchReader, arg: str, *, foreign: bool = False) -> pa.Table:
    batches = list(_checked_batches(reader, arg, foreign=foreign))
    return pa.Table.from_batches(batches, schema=reader.schema)


def _pandas_module() -> Any:
    import sys

    return sys.modules.get("pandas")


_MAX_INT = 2**62
"""Longer than any table: a larger row count or k means "all" and is clamped to this."""


def _int_arg(value: Any, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """`value` as a Python int: anything with ``__index__`` (numpy integers included) but a
    bool; below `minimum` is a ``ValueError``; values past :data:`_MAX_INT` are clamped to it
    (they mean "all rows" wherever a count is asked for)."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = operator.index(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v}")
    return min(v, _MAX_INT)


def _check_limit(limit: Any) -> int | None:
    return None if limit is None else _int_arg(limit, "limit")


def sort(
    data: Any,
    by: str | Sequence[str],
    *,
    descending: bool | Sequence[bool] = False,
    nulls_last: bool | Sequence[bool] = True,
    limit: int | None = None,
) -> pa.Table:
    """Stable sort of ``data`` by one or more key columns.

    ``descending`` / ``nulls_last`` are a bool or one bool per key. Floats order as
    ``-inf < ... < inf < NaN`` (-0.0 ties with 0.0); nulls go first or last by ``nulls_last``
    whatever the direction; strings and binary compare byte-wise. ``limit=k`` returns the
    first ``k`` rows of the full stable sort without sorting everything.
    """
    limit = _check_limit(limit)
    return _core.sort(_arrow_input(data), by, descending, nulls_last, limit)


def dedup(
    data: Any,
    subset: str | Sequence[str] | None = None,
    *,
    keep: Literal["first", "last", "none"] = "first",
) -> pa.Table:
    """Drop duplicate rows, judged on ``subset`` (default: all columns).

    ``keep="first"`` / ``"last"`` keeps one row per distinct key, ``"none"`` drops every row
    whose key is duplicated. Kept rows stay in input order. Null equals null, NaN equals NaN,
    -0.0 equals 0.0.
    """
    if not isinstance(keep, str):
        raise TypeError(f'keep must be "first", "last" or "none", got {keep!r}')
    return _core.dedup(_arrow_input(data), subset, keep)


JoinHow = Literal["inner", "left", "right", "outer", "semi", "anti", "cross"]


def _key_list(keys: str | Sequence[str] | None, arg: str) -> list[str]:
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    if isinstance(keys, list | tuple):
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"{arg} must hold column names (str), got {type(k).__name__}")
        return list(keys)
    raise TypeError(f"{arg} must be a column name or a list of them, got {type(keys).__name__}")


def _join_keys(
    how: str,
    on: str | Sequence[str] | None,
    left_on: str | Sequence[str] | None,
    right_on: str | Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    if not isinstance(how, str):
        raise TypeError(f"how must be a str, got {type(how).__name__}")
    on_l, lo, ro = (
        _key_list(on, "on"),
        _key_list(left_on, "left_on"),
        _key_list(right_on, "right_on"),
    )
    if how == "cross":
        if on is not None or left_on is not None or right_on is not None:
            raise ValueError("a cross join takes no keys (on / left_on / right_on)")
        return [], []
    if on is not None:
        if left_on is not None or right_on is not None:
            raise ValueError("pass either on= or left_on= and right_on=, not both")
        if not on_l:
            raise ValueError("on= must name at least one column")
        return on_l, on_l
    if left_on is None or right_on is None:
        raise ValueError(f"a {how!r} join needs keys: pass on= or both left_on= and right_on=")
    if len(lo) != len(ro):
        raise ValueError(f"left_on has {len(lo)} columns but right_on has {len(ro)}")
    if not lo:
        raise ValueError("left_on / right_on must name at least one column")
    return lo, ro


def _check_bool(flag: Any, name: str) -> bool:
    if not isinstance(flag, bool):
        raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    return flag


def _join_args(
    how: str,
    on: str | Sequence[str] | None,
    left_on: str | Sequence[str] | None,
    right_on: str | Sequence[str] | None,
    suffix: Any,
    nulls_equal: Any,
) -> tuple[list[str], list[str]]:
    """The left and right key lists of a join, its suffix and nulls_equal checked."""
    keys = _join_keys(how, on, left_on, right_on)
    if not isinstance(suffix, str):
        raise TypeError(f"suffix must be a str, got {type(suffix).__name__}")
    _check_bool(nulls_equal, "nulls_equal")
    return keys


def _check_max_rows(max_output_rows: Any) -> int | None:
    return None if max_output_rows is None else _int_arg(max_output_rows, "max_output_rows")


def join(
    left: Any,
    right: Any,
    on: str | Sequence[str] | None = None,
    *,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    how: JoinHow = "inner",
    suffix: str = "_right",
    nulls_equal: bool = False,
    validate: Literal["1:1", "1:m", "m:1", "m:m"] | None = None,
    max_output_rows: int | None = None,
) -> pa.Table:
    """Hash join of two table-likes.

    ``how``: ``inner``, ``left``, ``right``, ``outer``, ``semi``, ``anti`` or ``cross``. Keys:
    ``on`` (same names on both sides) or ``left_on`` / ``right_on``. Output: all left
    columns, then right's non-key columns (a name already taken gets ``suffix``); key columns
    appear once under the left names, coalesced for right/outer joins. Row order: left order
    with each left row's matches in right order (inner/left/semi/anti), right order with
    matches in left order (right), the left join then the unmatched right rows (outer).
    ``nulls_equal=False``: null keys match nothing; NaN matches NaN and -0.0 matches 0.0.
    ``validate`` checks key uniqueness ("1:1", "1:m", "m:1") and ``max_output_rows`` refuses
    to materialize a larger result; both raise ``ValueError``.
    """
    lo, ro = _join_args(how, on, left_on, right_on, suffix, nulls_equal)
    if validate is not None and not isinstance(validate, str):
        raise TypeError(f"validate must be a str or None, got {type(validate).__name__}")
    return _core.join(
        _arrow_input(left, "left"),
        _arrow_input(right, "right"),
        lo,
        ro,
        how,
        suffix,
        nulls_equal,
        validate,
        _check_max_rows(max_output_rows),
    )


class JoinBuild:
    """The right side of a join prepared once — its key index built — and probed by any
    number of left tables or batches: ``JoinBuild(right, left_schema, on, ...).probe(left)``
    is ``join(left, right, on, ...)``, row for row. For inner, left, semi, anti and cross
    joins (a right or outer join needs every left row before the unmatched right ones: use
    :func:`join`). It pickles as the right table (an Arrow IPC stream) with the arguments,
    and the index is built again where it is unpickled: ``ferrobatch.dask``'s broadcast
    join builds it once per worker."""

    def __init__(
        self,
        right: Any,
        left_schema: pa.Schema,
        on: str | Sequence[str] | None = None,
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        how: JoinHow = "inner",
        suffix: str = "_right",
        nulls_equal: bool = False,
    ) -> None:
        if not isinstance(left_schema, pa.Schema):
            raise TypeError(
                f"left_schema must be a pyarrow.Schema, got {type(left_schema).__name__}"
            )
        lo, ro = _join_args(how, on, left_on, right_on, suffix, nulls_equal)
        self.left_schema = left_schema
        self._args = (lo, ro, how, suffix, nulls_equal)
        right = _arrow_input(right, "right")
        self._build = _core.JoinBuild(left_schema, right, *self._args)

    def probe(self, left: Any) -> pa.Table:
        """``join(left, right, ...)`` for a table-like ``left`` of ``left_schema``."""
        return self._build.probe(_arrow_input(left, "left"))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        table = self._build.build_table()
        return (_unpickle_build, (self.left_schema, self._args, _ipc_bytes(table)))


def _unpickle_build(left_schema: pa.Schema, args: tuple[Any, ...], ipc: bytes) -> JoinBuild:
    build = JoinBuild.__new__(JoinBuild)
    build.left_schema, build._args = left_schema, args
    build._build = _core.JoinBuild(left_schema, pa.ipc.open_stream(ipc).read_all(), *args)
    return build


AggSpec = tuple[str | None, str] | tuple[str | None, str, Any]
"""``(column, function)`` or ``(column, function, parameter)``."""


def _agg_tuples(aggs: Any) -> list[tuple[str, str | None, str, Any]]:
    if not isinstance(aggs, dict):
        raise TypeError(
            "aggs must be a dict {output_name: (column, function[, parameter])}, "
            f"got {type(aggs).__name__}"
        )
    out = []
    for name, spec in aggs.items():
        if not isinstance(name, str):
            raise TypeError(f"aggregate output names must be str, got {name!r}")
        if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
            raise TypeError(
                f"aggregate {name!r} must be (column, function) or (column, function, "
                f"parameter), got {spec!r}"
            )
        column, func = spec[0], spec[1]
        if column is not None and not isinstance(column, str):
            raise TypeError(f"aggregate {name!r}: column must be a str or None, got {column!r}")
        if not isinstance(func, str):
            raise TypeError(f"aggregate {name!r}: function must be a str, got {func!r}")
        param = _agg_param(name, func, spec[2]) if len(spec) == 3 else None
        out.append((name, column, func, param))
    return out


def _agg_param(name: str, func: str, p: Any) -> Any:
    """An aggregate's parameter as the core takes it: a str (a column), an int (clamped to
    int64: a k past any group's size means all of it) or a float."""
    if p is None:
        raise ValueError(f"aggregate {name!r}: parameter of {func} is None")
    if isinstance(p, str):
        return p
    if isinstance(p, bool):
        raise TypeError(f"aggregate {name!r}: parameter of {func} must be a number, got {p!r}")
    if func == "quantile" and isinstance(p, numbers.Real):
        try:
            return float(p)
        except OverflowError:
            raise ValueError(f"aggregate {name!r}: quantile q must be in [0, 1], got {p}") from None
    if hasattr(type(p), "__index__"):
        return max(min(operator.index(p), 2**63 - 1), -(2**63))
    if isinstance(p, numbers.Real):
        return float(p)
    raise TypeError(
        f"aggregate {name!r}: parameter of {func} must be a number or a column name, "
        f"got {type(p).__name__}"
    )


def group_by(
    data: Any,
    keys: str | Sequence[str],
    aggs: dict[str, AggSpec],
    *,
    dropna: bool = False,
    sort: bool = False,
) -> pa.Table:
    """Group ``data`` by ``keys`` and aggregate: ``{"out": ("column", "fn"), ...}``.

    Functions: ``count`` (non-null), ``size`` (rows; column may be None), ``sum``, ``mean``,
    ``min``, ``max``, ``first`` / ``last`` (first / last non-null), ``std`` / ``var``
    (ddof=1), ``median``, ``n_unique``, and with a parameter ``("col", "quantile", q)``
    (linear interpolation), ``("col", "top_k", k)`` (list of the k largest, largest first),
    ``("x", "corr", "y")`` (Pearson). ``keys=[]`` gives one row, also for an empty input.

    Output: the keys, then one column per aggregate; groups in order of first appearance, or
    by key (nulls last) with ``sort=True``. ``dropna=True`` drops rows with a null key; else
    null keys form a group. Nulls are skipped; a group with no value gets null (count / size /
    n_unique 0, top_k ``[]``); NaN propagates through sum / mean / std / var / median /
    quantile / corr and is the greatest value for min / max / top_k. Integer sums are exact
    and raise ``ValueError`` on overflow.
    """
    _check_bool(dropna, "dropna")
    _check_bool(sort, "sort")
    return _core.group_by(
        _arrow_input(data), _key_list(keys, "keys"), _agg_tuples(aggs), dropna, sort
    )


class GroupByState:
    """Streaming group-by: absorb record batches one at a time, merge states, then finish.

    ``GroupByState(schema, keys, aggs, dropna=, sort=)`` takes the arguments of
    :func:`group_by` with the input's schema instead of the data; ``finish()`` returns what
    ``group_by`` returns for all absorbed rows in absorb order (floating-point sums may differ
    in the last bits, since they associate per batch). Memory is bounded by the number of
    groups, except for median / quantile, which keep each group's values. ``merge(other)``
    folds in a state over later rows (for example one built by another worker); ``other`` is
    consumed. A state may be shared between threads: its calls run one at a time. A call
    interrupted by Ctrl-C leaves the state as it was before the call.
    """

    def __init__(
        self,
        schema: pa.Schema,
        keys: str | Sequence[str],
        aggs: dict[str, AggSpec],
        *,
        dropna: bool = False,
        sort: bool = False,
    ) -> None:
        if not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
        _check_bool(dropna, "dropna")
        _check_bool(sort, "sort")
        self.schema = schema
        self._args = (_key_list(keys, "keys"), _agg_tuples(aggs), dropna, sort)
        self._state = _core.GroupByState(schema, *self._args)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as the state's partial-state tables (the merged groups and those waiting
        to be merged), each an Arrow IPC stream, with the arguments; unpickled, it goes on
        exactly as the original would, float bits included."""
        ipc = [_ipc_bytes(t) for t in self._state.export_state()]
        return (_unpickle_state, (self.schema, self._args, ipc))

    def absorb(self, data: Any) -> None:
        """Aggregate a record batch, table or reader (read batch by batch) into the state."""
        if isinstance(data, pa.RecordBatchReader):
            for batch in _checked_batches(data, "data"):
                self._state.absorb(batch)
            return
        self._state.absorb(_arrow_input(data))

    def merge(self, other: GroupByState) -> None:
        """Fold in ``other``, a state of the same schema and arguments over later rows."""
        if not isinstance(other, GroupByState):
            raise TypeError(f"can only merge a GroupByState, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge a group-by state into itself")
        self._state.merge(other._state)

    def finish(self) -> pa.Table:
        """The result table; the state cannot be used afterwards."""
        return self._state.finish()

    @property
    def num_groups(self) -> int:
        """Groups held (an upper bound while absorbed batches wait to be merged)."""
        return self._state.num_groups


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _unpickle_state(schema: pa.Schema, args: tuple[Any, ...], ipc: list[bytes]) -> GroupByState:
    state = GroupByState.__new__(GroupByState)
    state.schema, state._args = schema, args
    tables = [pa.ipc.open_stream(b).read_all() for b in ipc]
    state._state = _core.GroupByState(schema, *args, tables)
    return state


def set_num_threads(n: int) -> None:
    """Set the number of threads ferrobatch kernels use (default: all cores, or
    ``FERROBATCH_NUM_THREADS``)."""
    _core.set_num_threads(_int_arg(n, "number of threads", minimum=1, maximum=_MAX_THREADS))


_MAX_THREADS = 4096


def get_num_threads() -> int:
    """The number of threads ferrobatch kernels use."""
    return _core.get_num_threads()


MemoryLimitError = _core.MemoryLimitError
"""The work cannot finish within the memory limit (a ``MemoryError``); the message names
the operator and the largest reservations."""

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def _machine_memory() -> int:
    """Physical memory, or the cgroup's memory limit when it is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _size(value: Any, name: str, whole: Callable[[], int]) -> int:
    """A size in bytes from an int, ``"4GiB"`` / ``"4GB"`` / ``"512 MiB"`` / ``"1000"``, or
    ``"50%"`` of ``whole()``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} must be an int number of bytes or a str like '4GiB' or "
                        f"'50%', got {type(value).__name__}")  # fmt: skip
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 bytes, got {value}")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z%]*)\s*", value)
    unit = m.group(2).upper() if m else None
    if m is None or (unit not in _UNITS and unit != "%"):
        raise ValueError(f"{name}: cannot read {value!r} as a size (bytes, '4GiB', '4GB', '50%')")
    number = float(m.group(1))
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"{name}: a percentage must be in (0, 100], got {value!r}")
        return int(whole() * number / 100)
    return int(number * _UNITS[unit])


def set_memory_limit(limit: int | str | None) -> None:
    """Limit the memory ferrobatch's operators hold (process-wide): ``None`` (unlimited,
    the default), bytes, ``"4GiB"`` / ``"4GB"``, or ``"50%"`` of the machine's memory (its
    cgroup limit when lower). Also ``FERROBATCH_MEMORY_LIMIT``. Whole-table kernels
    (``sort(table)`` ...) reserve their working memory and output first and raise
    :class:`MemoryLimitError` rather than pass the limit."""
    if limit is None:
        _core.set_memory_limit(None)
        return
    _core.set_memory_limit(_size(limit, "memory limit", _machine_memory))


def get_memory_limit() -> int | None:
    """The memory limit in bytes, ``None`` when unlimited."""
    return _core.get_memory_limit()


def set_temp_directory(path: str | os.PathLike | None) -> None:
    """The folder spill files go to: ``None`` for the default, ``$FERROBATCH_TEMP_DIR`` or
    else ``<system temp>/ferrobatch-<uid>`` (created when first needed). Spill files are
    anonymous: nothing is ever left in it, even when the process is killed."""
    if path is None:
        env = os.environ.get("FERROBATCH_TEMP_DIR", "").strip()
        _core.set_temp_directory(env or None)
        return
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"temp directory must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"temp directory {path!r} is not a directory")
    _core.set_temp_directory(os.path.abspath(path))


def get_temp_directory() -> str:
    """The folder spill files go to."""
    return os.fspath(_core.get_temp_directory())


def set_max_temp_directory_size(size: int | str) -> None:
    """Cap the bytes ferrobatch spills at once: bytes, ``"20GiB"`` / ``"20GB"``, or
    ``"90%"`` (the default) of the temp directory's free disk, judged when a spill file is
    opened. Spilling past it raises ``OSError`` naming this setting. Also
    ``FERROBATCH_MAX_TEMP_DIRECTORY_SIZE``."""
    if isinstance(size, str) and size.strip().endswith("%"):
        fraction = _size(size, "max temp directory size", lambda: 10**6) / 10**6
        _core.set_max_temp_directory_size(fraction=fraction)
        return
    _core.set_max_temp_directory_size(bytes=_size(size, "max temp directory size", lambda: 0))


def get_max_temp_directory_size() -> int | str:
    """The cap on spilled bytes: bytes, or a percentage of the free disk as ``"90%"``."""
    size, fraction = _core.get_max_temp_directory_size()
    return size if size is not None else f"{fraction * 100:g}%"


def set_spill_compression(compression: str | None) -> None:
    """Compress spill files: ``"lz4"`` (LZ4 frames, arrow-ipc's) or ``None`` (the
    default). LZ4 roughly halves the bytes spilled and costs CPU: on the db-benchmark join
    j5 at 10^7 rows under 100 MiB it made the run about 30 % slower, as spill files mostly
    stay in the page cache. Also ``FERROBATCH_SPILL_COMPRESSION``."""
    if compression is not None and not isinstance(compression, str):
        kind = type(compression).__name__
        raise TypeError(f"spill compression must be a str or None, got {kind}")
    if compression not in (None, "lz4"):
        raise ValueError(f"spill compression must be 'lz4' or None, got {compression!r}")
    _core.set_spill_compression(compression == "lz4")


def get_spill_compression() -> str | None:
    """``"lz4"`` or ``None``."""
    return "lz4" if _core.get_spill_compression() else None


def _settings_from_environment() -> None:
    """``FERROBATCH_MEMORY_LIMIT``, ``FERROBATCH_TEMP_DIR``,
    ``FERROBATCH_MAX_TEMP_DIRECTORY_SIZE``, ``FERROBATCH_SPILL_COMPRESSION`` and
    ``FERROBATCH_FORCE_SPILL``: a bad value fails the import, naming the variable."""
    value = os.environ.get("FERROBATCH_MEMORY_LIMIT", "").strip()
    if value and value.lower() not in ("none", "unlimited"):
        try:
            set_memory_limit(int(value) if value.isdigit() else value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"FERROBATCH_MEMORY_LIMIT={value!r}: {e}") from None
    set_temp_directory(None)
    value = os.environ.get("FERROBATCH_MAX_TEMP_DIRECTORY_SIZE", "").strip()
    if value:
        try:
            set_max_temp_directory_size(int(value) if value.isdigit() else value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"FERROBATCH_MAX_TEMP_DIRECTORY_SIZE={value!r}: {e}") from None
    value = os.environ.get("FERROBATCH_SPILL_COMPRESSION", "").strip().lower()
    if value not in ("", "none", "lz4"):
        raise ValueError(f"FERROBATCH_SPILL_COMPRESSION={value!r}: use lz4 or none")
    set_spill_compression("lz4" if value == "lz4" else None)
    value = os.environ.get("FERROBATCH_FORCE_SPILL", "").strip().lower()
    if value not in ("", "0", "1", "true", "false"):
        raise ValueError(f"FERROBATCH_FORCE_SPILL={value!r}: use 1 or 0")
    _core.set_force_spill(value in ("1", "true"))


_settings_from_environment()


from ferrobatch.pipeline import (  # noqa: E402  (uses the kernels above)
    ExpectationError,
    Pipeline,
    Report,
    scan,
)
