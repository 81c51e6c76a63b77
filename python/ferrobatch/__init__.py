"""ferrobatch: parallel Rust kernels (sort, hash join, group-by, dedup) over Apache Arrow.

Every kernel accepts a "table-like" -- a ``pyarrow.Table`` / ``RecordBatch`` /
``RecordBatchReader``, any object implementing the Arrow PyCapsule interface
(``__arrow_c_stream__`` / ``__arrow_c_array__``: polars, duckdb, ...) or a
``pandas.DataFrame`` (its index is dropped) -- and returns a ``pyarrow.Table``.
Kernels release the GIL and run on a ferrobatch-owned thread pool
(``set_num_threads`` / ``FERROBATCH_NUM_THREADS``); results never depend on the thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pyarrow as pa

from ferrobatch import _core

__version__: str = _core.__version__

__all__ = [
    "FallbackWarning",
    "dedup",
    "get_num_threads",
    "set_num_threads",
    "sort",
]


class FallbackWarning(UserWarning):
    """A pandas drop-in could not accelerate a call and ran pandas itself instead."""


def _arrow_input(data: Any, arg: str = "data") -> Any:
    """Return an object the Rust core can read through the Arrow C interfaces."""
    pd = _pandas_module()
    if pd is not None and isinstance(data, pd.DataFrame):
        # pandas >= 3 exports __arrow_c_stream__ too, but with its index as a column.
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        return data
    raise TypeError(
        f"{arg} must be a table-like (pyarrow Table/RecordBatch/RecordBatchReader, an object "
        f"with __arrow_c_stream__ or __arrow_c_array__, or a pandas DataFrame), "
        f"got {type(data).__name__}"
    )


def _pandas_module() -> Any:
    import sys

    return sys.modules.get("pandas")


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return min(limit, 2**62)  # no table is longer; keeps the value in the core's range


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


def set_num_threads(n: int) -> None:
    """Set the number of threads ferrobatch kernels use (default: all cores, or
    ``FERROBATCH_NUM_THREADS``)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number of threads must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads ferrobatch kernels use."""
    return _core.get_num_threads()
