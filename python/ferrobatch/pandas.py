"""pandas drop-ins: the same frame pandas returns, computed by the ferrobatch kernels.

Each function returns exactly what the pandas method returns (values, dtypes, column order,
row order, index), checked with ``pandas.testing.assert_frame_equal``. Only the key columns
cross into Arrow; the kernels compute row positions and pandas' own ``take`` builds the
result, so every column dtype is preserved as pandas would. Arguments or dtypes that are not
accelerated run pandas itself after a :class:`ferrobatch.FallbackWarning`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from ferrobatch import FallbackWarning, _core
from ferrobatch import _pandas_private as _private

__all__ = ["drop_duplicates", "groupby_agg", "merge", "sort_values"]


class _Unsupported(Exception):
    """A column or argument the kernels do not handle; the caller falls back to pandas."""


_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside the ferrobatch package, counted from the
    function that calls this one (as pandas' ``find_stack_level`` does for pandas)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PKG_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _fallback(fn: str, reason: str) -> None:
    warnings.warn(
        f"ferrobatch.pandas.{fn}: {reason}; falling back to pandas",
        FallbackWarning,
        stacklevel=_caller_level(),
    )


def _reemit(caught: list[warnings.WarningMessage]) -> None:
    """Warnings pandas raised during a drop-in, raised again at the caller's line (pandas
    would point them at the drop-in, the first frame outside pandas)."""
    level = _caller_level()
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=level)


def _run_drop_in(
    name: str, fast: Callable[[], pd.DataFrame], slow: Callable[[], pd.DataFrame]
) -> pd.DataFrame:
    """`fast()`, or `slow()` (pandas itself) after a FallbackWarning when `fast` raises
    :class:`_Unsupported`. Warnings pandas raises on the way come out once, at the caller's
    line: those of an abandoned fast attempt are dropped (pandas raises them again)."""
    reason = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fast()
        except _Unsupported as e:
            reason = str(e)
    if reason is not None:
        _fallback(name, reason)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = slow()
    _reemit(caught)
    return result


def _check_bool(value: Any, arg: str, *, int_allowed: bool = False) -> None:
    """pandas' ``validate_bool_kwarg`` (its message too)."""
    if not (
        isinstance(value, bool | np.bool_) or (int_allowed and isinstance(value, int | np.integer))
    ):
        raise ValueError(
            f'For argument "{arg}" expected type bool, received type {type(value).__name__}.'
        )


def _require_frame(df: Any, fn: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"ferrobatch.pandas.{fn} expects a pandas DataFrame, got {type(df).__name__}"
        )
    return df


def _column_list(by: Any, df: pd.DataFrame) -> list[Hashable]:
    """Key labels as pandas reads ``by`` in ``sort_values`` / ``groupby``: a list is a list of
    labels, anything else (a tuple included: MultiIndex columns) is one label."""
    cols = list(by) if isinstance(by, list) else [by]
    for c in cols:
        try:
            hash(c)
        except TypeError:
            raise _Unsupported(f"key {type(c).__name__} is not a column label") from None
    missing = [c for c in cols if c not in df.columns]
    if any(c in df.index.names for c in missing):
        raise _Unsupported("sorting by index level names")
    if missing:
        raise KeyError(missing[0] if len(missing) == 1 else missing)
    _check_single_columns(cols, df)
    return cols


def _check_single_columns(cols: list[Hashable], df: pd.DataFrame) -> None:
    """Each label must name exactly one column (a duplicated label or a partial MultiIndex
    label selects several): pandas handles those itself."""
    if df.columns.has_duplicates and any((df.columns == c).sum() > 1 for c in cols):
        raise _Unsupported("duplicate column labels")
    if isinstance(df.columns, pd.MultiIndex) and any(
        not isinstance(df[c], pd.Series) for c in cols
    ):
        raise _Unsupported("a partial MultiIndex column label")


def _subset_list(subset: Any, df: pd.DataFrame) -> list[Hashable]:
    """``drop_duplicates``' subset as pandas reads it: any list-like of labels, or one label
    (a str, a non-iterable, or a tuple that is a column label); missing labels are a
    ``KeyError`` of their Index, as pandas raises."""
    if subset is None:
        return list(df.columns)
    if (
        not np.iterable(subset)
        or isinstance(subset, str)
        or (isinstance(subset, tuple) and subset in df.columns)
    ):
        subset = (subset,)
    cols = list(subset)
    diff = set(cols) - set(df.columns)
    if diff:
        raise KeyError(pd.Index(diff))
    _check_single_columns(cols, df)
    return cols


def _key_arrays(s: pd.Series, *, none_is_nan: bool) -> list[pa.Array]:
    """Arrow key array(s) for one pandas column, with pandas' missing values as nulls.

    Equal keys (by pandas' rules for the operation) map to equal Arrow keys and order is
    preserved. With ``none_is_nan=False`` (drop_duplicates), an object column holding both
    None and NaN gets a second key telling them apart (pandas keeps them distinct there).
    """
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy()
        return [pa.array(codes, mask=codes < 0)]
    if isinstance(dtype, pd.SparseDtype | pd.IntervalDtype | pd.PeriodDtype):
        raise _Unsupported(f"column {s.name!r} has dtype {dtype}")
    if pd.api.types.is_object_dtype(dtype):
        values = s.to_numpy(dtype=object)
        try:
            arr = pa.array(values, from_pandas=True)
        except (
            pa.ArrowInvalid,
            pa.ArrowTypeError,
            pa.ArrowNotImplementedError,
            OverflowError,
        ) as e:
            raise _Unsupported(f"object column {s.name!r} is not of one Arrow type ({e})") from e
        if pa.types.is_null(arr.type) or pa.types.is_nested(arr.type):
            if pa.types.is_nested(arr.type):
                raise _Unsupported(f"object column {s.name!r} holds nested values")
        keys = [arr]
        if not none_is_nan and arr.null_count:
            is_none = np.equal(values, None)
            n_none = int(is_none.sum())
            if 0 < n_none < arr.null_count:
                keys.append(pa.array(is_none))
        return keys
    try:
        if isinstance(dtype, np.dtype) and dtype.kind in "iub":
            return [pa.array(s.to_numpy())]
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            return [pa.array(s.to_numpy(), from_pandas=True)]
        if isinstance(dtype, np.dtype) and dtype.kind == "c":
            raise _Unsupported(f"column {s.name!r} has complex dtype")
        arr = pa.array(s.array, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise _Unsupported(f"column {s.name!r} of dtype {dtype} has no Arrow key form ({e})") from e
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_floating(arr.type) and arr.null_count < len(arr):
        # Nullable float extension arrays may carry NaN as a value; pandas treats it as NA.
        import pyarrow.compute as pc

        arr = pc.if_else(pc.is_nan(arr), pa.nulls(len(arr), arr.type), arr)
    if pa.types.is_nested(arr.type):
        raise _Unsupported(f"column {s.name!r} holds nested values")
    return [arr]


def _key_table(
    df: pd.DataFrame, cols: list[Hashable], *, none_is_nan: bool
) -> tuple[pa.Table, list[int]]:
    """Key columns as an Arrow table, plus for each arrow column the position of its pandas key."""
    arrays: list[pa.Array] = []
    owner: list[int] = []
    for i, c in enumerate(cols):
        for a in _key_arrays(df[c], none_is_nan=none_is_nan):
            arrays.append(a)
            owner.append(i)
    names = [f"k{j}" for j in range(len(arrays))]
    return pa.table(arrays, names=names), owner


def _pandas_multikey_nan_first(
    df: pd.DataFrame, cols: list[Hashable], asc: list[bool], keys: pa.Table, owner: list[int]
) -> pa.Table:
    """Reproduce pandas' multi-key numpy-float path with ``na_position="first"``.

    pandas 3.1 (``lexsort_indexer``; 3.0 orders NaN first without ties) sorts numpy float
    keys of a multi-column sort by value and, for ``na_position="first"``, replaces NaN by
    ``-inf`` after negating descending keys: NaN then *ties* with ``-inf`` (ascending) or
    ``+inf`` (descending), in row order. A drop-in must return the same frame, so NaN becomes
    that infinity here too.
    """
    for j, i in enumerate(owner):
        arr = df[cols[i]].array
        values = np.asarray(arr) if isinstance(arr, pd.arrays.NumpyExtensionArray) else None
        if values is None or values.dtype.kind != "f":
            continue
        mask = np.isnan(values)
        if mask.any():
            filled = np.where(mask, -np.inf if asc[i] else np.inf, values)
            keys = keys.set_column(j, keys.column_names[j], pa.array(filled))
    return keys


def _is_identity(idx: np.ndarray, n: int) -> bool:
    return len(idx) == n and bool(np.array_equal(idx, np.arange(n, dtype=idx.dtype)))


def sort_values(
    df: pd.DataFrame,
    by: Hashable | Sequence[Hashable],
    ascending: bool | Sequence[bool] = True,
    na_position: Literal["first", "last"] = "last",
    ignore_index: bool = False,
    **kwargs: Any,
) -> pd.DataFrame:
    """``df.sort_values(by, ascending=..., na_position=..., ignore_index=..., kind="stable")``."""
    df = _require_frame(df, "sort_values")

    def slow() -> pd.DataFrame:
        kw = {"kind": "stable", **kwargs}
        return df.sort_values(
            by, ascending=ascending, na_position=na_position, ignore_index=ignore_index, **kw
        )

    def fast() -> pd.DataFrame:
        unsupported = {
            k: v
            for k, v in kwargs.items()
            if not (k == "kind" or (k == "axis" and v in (0, "index")))
        }
        if unsupported:
            raise _Unsupported(f"argument(s) {sorted(unsupported)} not accelerated")
        # pandas' checks, in pandas' order (a str is a sequence of non-bools to pandas).
        if isinstance(ascending, Sequence):
            for a in ascending:
                _check_bool(a, "ascending", int_allowed=True)
        else:
            _check_bool(ascending, "ascending", int_allowed=True)
        cols = _column_list(by, df)
        if isinstance(ascending, Sequence):
            if len(ascending) != len(cols):
                raise ValueError(
                    f"Length of ascending ({len(ascending)}) != length of by ({len(cols)})"
                )
            asc = [bool(a) for a in ascending]
        else:
            asc = [bool(ascending)] * len(cols)
        if na_position not in ("first", "last"):
            raise ValueError(f"invalid na_position: {na_position}")
        if not cols:
            result = df.copy(deep=False)  # pandas: sorting by nothing is a copy
        else:
            keys, owner = _key_table(df, cols, none_is_nan=True)
            if len(cols) > 1 and na_position == "first" and _private.version() >= (3, 1):
                keys = _pandas_multikey_nan_first(df, cols, asc, keys, owner)
            descending = [not asc[o] for o in owner]
            nulls_last = na_position == "last"
            idx = _core.sort_indices(keys, list(keys.column_names), descending, nulls_last, None)
            idx = idx.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
            result = df.copy(deep=False) if _is_identity(idx, len(df)) else df.take(idx)
        if ignore_index:
            result.index = pd.RangeIndex(len(result))
        return result

    return _run_drop_in("sort_values", fast, slow)


def drop_duplicates(
    df: pd.DataFrame,
    subset: Hashable | Sequence[Hashable] | None = None,
    keep: Literal["first", "last"] | bool = "first",
    ignore_index: bool = False,
    **kwargs: Any,
) -> pd.DataFrame:
    """``df.drop_duplicates(subset, keep=..., ignore_index=...)``."""
    df = _require_frame(df, "drop_duplicates")

    def slow() -> pd.DataFrame:
        return df.drop_duplicates(subset, keep=keep, ignore_index=ignore_index, **kwargs)

    def fast() -> pd.DataFrame:
        if kwargs:
            raise _Unsupported(f"argument(s) {sorted(kwargs)} not accelerated")
        _check_bool(ignore_index, "ignore_index")
        if keep is False:
            how = "none"
        elif isinstance(keep, str) and keep in ("first", "last"):
            how = keep
        else:
            raise ValueError('keep must be either "first", "last" or False')
        if subset is None and df.columns.has_duplicates:
            raise _Unsupported("duplicate column labels")
        cols = _subset_list(subset, df)
        if df.empty:
            return df.copy(deep=False)
        if not cols:
            raise ValueError("subset must name at least one column")
        # pandas compares a single column by value (None and NaN distinct in object columns)
        # but several columns through factorize, where both are the same missing value.
        keys, _ = _key_table(df, cols, none_is_nan=len(cols) > 1)
        idx = _core.dedup_indices(keys, None, how)
        idx = idx.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
        result = df.take(idx)
        if ignore_index:
            result.index = pd.RangeIndex(len(result))
        return result

    return _run_drop_in("drop_duplicates", fast, slow)


_NO_ROW = np.uint32(0xFFFFFFFF)

# pandas' validate arguments -> the kernel's.
_VALIDATE_KINDS = {
    "1:1": "1:1",
    "one_to_one": "1:1",
    "1:m": "1:m",
    "one_to_many": "1:m",
    "m:1": "m:1",
    "many_to_one": "m:1",
    "m:m": "m:m",
    "many_to_many": "m:m",
}


def _indexer(a: pa.Array) -> np.ndarray:
    """A core index array (2**32 - 1 = no row) as a pandas indexer (-1 = no row)."""
    v = a.to_numpy(zero_copy_only=False)
    out = v.astype(np.intp)
    out[v == _NO_ROW] = -1
    return out


def _merge_key_tables(left_keys: list[Any], right_keys: list[Any]) -> tuple[pa.Table, pa.Table]:
    """The join keys pandas settled on (after its own dtype coercion) as Arrow tables, with
    every missing value (NaN, None, NaT, NA) as null: pandas matches missing keys."""
    lk, rk = [], []
    for a, b in zip(left_keys, right_keys, strict=True):
        for keys, arr in ((lk, a), (rk, b)):
            s = pd.Series(arr, copy=False)
            if isinstance(s.dtype, pd.CategoricalDtype):
                raise _Unsupported("categorical merge keys")
            arrays = _key_arrays(s, none_is_nan=True)
            if len(arrays) != 1:
                raise _Unsupported("merge keys of mixed object types")
            keys.append(arrays[0])
    names = [f"k{j}" for j in range(len(lk))]
    return pa.table(lk, names=names), pa.table(rk, names=names)


def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    if a == b:
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return None if pa.types.is_uint64(a) or pa.types.is_uint64(b) else pa.int64()
    if pa.types.is_floating(a) and pa.types.is_floating(b):
        return pa.float64()
    strings = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(f(a) for f in strings) and any(f(b) for f in strings):
        return pa.large_string()
    return None


def _sort_by_keys(
    li: np.ndarray, ri: np.ndarray, lkeys: pa.Table, rkeys: pa.Table, nulls_last: list[bool]
) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort of the row pairs by their (coalesced) key values."""
    import pyarrow.compute as pc

    has_left = li >= 0
    lpos = pa.array(np.where(has_left, li, 0))
    rpos = pa.array(np.where(has_left, 0, np.maximum(ri, 0)))
    cols = []
    for name in lkeys.column_names:
        a, b = lkeys.column(name).combine_chunks(), rkeys.column(name).combine_chunks()
        typ = _common_type(a.type, b.type)
        if typ is None:
            raise _Unsupported(f"merge keys of types {a.type} and {b.type}")
        a, b = a.cast(typ), b.cast(typ)
        lv = a.take(lpos) if len(a) else pa.nulls(len(li), typ)
        rv = b.take(rpos) if len(b) else pa.nulls(len(li), typ)
        cols.append(pc.if_else(pa.array(has_left), lv, rv))
    keys = pa.table(cols, names=lkeys.column_names)
    perm = _core.sort_indices(keys, keys.column_names, False, nulls_last, None)
    perm = perm.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    return li[perm], ri[perm]


def merge(
    left: pd.DataFrame,
    right: pd.DataFrame,
    how: Literal["inner", "left", "right", "outer", "cross"] = "inner",
    on: Hashable | Sequence[Hashable] | None = None,
    left_on: Hashable | Sequence[Hashable] | None = None,
    right_on: Hashable | Sequence[Hashable] | None = None,
    suffixes: tuple[str | None, str | None] = ("_x", "_y"),
    sort: bool = False,
    indicator: bool | str = False,
    validate: str | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """``pandas.merge(left, right, how=..., on=..., ...)``, with the join computed by the
    ferrobatch kernel.

    pandas itself resolves the arguments and key dtypes (raising exactly its own errors) and
    builds the result from the row indexers the kernel returns, so column order, suffixes,
    dtypes (int -> float64 and bool -> object where rows are unmatched), key coalescing,
    ``indicator`` and the RangeIndex are pandas' own. Row order follows pandas: left order
    with matches in right order (inner/left), right order (right), sorted keys with missing
    last (outer, or ``sort=True``). Missing keys match each other, as in pandas.
    """

    args = {"how": how, "on": on, "left_on": left_on, "right_on": right_on, "sort": sort,
            "suffixes": suffixes, "indicator": indicator}  # fmt: skip

    def slow() -> pd.DataFrame:
        return pd.merge(left, right, validate=validate, **args, **kwargs)

    def fast() -> pd.DataFrame:
        if kwargs:
            raise _Unsupported(f"argument(s) {sorted(kwargs)} not accelerated")
        why = _private.unsupported()
        if why is not None:
            raise _Unsupported(why)
        if not isinstance(left, pd.DataFrame) or not isinstance(right, pd.DataFrame):
            raise _Unsupported("only DataFrame inputs are accelerated")
        if how not in ("inner", "left", "right", "outer", "cross"):
            raise _Unsupported(f"how={how!r} not accelerated")
        if validate is not None and validate not in _VALIDATE_KINDS:
            return slow()  # pandas raises its own error naming the valid arguments
        if how == "cross":
            if on is not None or left_on is not None or right_on is not None or validate:
                return slow()  # pandas raises its own MergeError
            op = _private.cross_merge_operation(left, right, suffixes=suffixes, indicator=indicator)
            if op is None:
                raise _Unsupported("how='cross' needs pandas >= 3.1")
            li, ri = _core.join_indices(
                pa.table({"_": pa.nulls(len(left))}),
                pa.table({"_": pa.nulls(len(right))}),
                [],
                [],
                "cross",
                False,
                None,
                None,
            )
            return _private.result(op, _indexer(li), _indexer(ri))
        # pandas parses the arguments and coerces key dtypes (its errors are the drop-in's).
        op = _private.merge_operation(left, right, validate=None, **args)
        left_keys, right_keys = _private.join_keys(op)
        lkeys, rkeys = _merge_key_tables(left_keys, right_keys)
        names = lkeys.column_names
        core_validate = _VALIDATE_KINDS.get(validate) if validate is not None else None
        try:
            li_a, ri_a = _core.join_indices(
                lkeys, rkeys, names, names, how, True, core_validate, None
            )
        except TypeError as e:
            raise _Unsupported(str(e)) from e
        except ValueError as e:
            if validate is None or "validate" not in str(e):
                raise
            # Not unique: pandas raises its own MergeError (naming the side, or both, and
            # the duplicated keys); the check already failed, so this is the error path.
            return slow()
        li, ri = _indexer(li_a), _indexer(ri_a)
        if how == "outer" or sort:
            # pandas orders missing keys last, except NaT: it sorts as the smallest int64.
            nulls_last = [getattr(k.dtype, "kind", "") not in "mM" for k in left_keys]
            li, ri = _sort_by_keys(li, ri, lkeys, rkeys, nulls_last)
        return _private.result(op, li, ri)

    return _run_drop_in("merge", fast, slow)


# pandas function name -> ferrobatch aggregate, for the functions the kernel computes.
_GROUPBY_FUNCS = {
    "sum": "sum",
    "mean": "mean",
    "min": "min",
    "max": "max",
    "count": "count",
    "size": "size",
    "first": "first",
    "last": "last",
    "std": "std",
    "var": "var",
    "median": "median",
    "nunique": "n_unique",
}


def _value_array(s: pd.Series) -> pa.Array:
    """An aggregated column as Arrow, pandas' missing values (NaN, None, NaT) as nulls."""
    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iubf":
        return pa.array(s.to_numpy(), from_pandas=True)
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return pa.array(s.to_numpy(), from_pandas=True)
    if isinstance(dtype, pd.StringDtype) or (
        pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(s, skipna=True) == "string"
    ):
        return pa.array(s.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    raise _Unsupported(f"column {s.name!r} of dtype {dtype} is not accelerated")


def _agg_result(
    out: pa.ChunkedArray, func: str, source: pd.Series
) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """A kernel aggregate as the values pandas returns for ``func`` of ``source``."""
    if func in ("count", "size", "nunique"):
        return out.to_numpy().astype(np.int64, copy=False)
    if func == "sum":
        if pa.types.is_floating(out.type):
            return out.fill_null(0.0).to_numpy()
        return out.fill_null(0).to_numpy()
    if func in ("mean", "std", "var", "median"):
        return out.to_numpy(zero_copy_only=False)
    # min / max / first / last keep the column's dtype.
    values = out.to_pandas()
    return values.astype(source.dtype).array if values.dtype != source.dtype else values.array


def _level(s: pd.Series, rows: np.ndarray) -> Any:
    """Values of a key for a MultiIndex level. pandas infers a level's dtype from the whole
    key column: an object column of strings gives a ``str`` level even when no group is left
    (all rows dropped), where an empty object array would give an object one."""
    if (
        len(rows) == 0
        and pd.api.types.is_object_dtype(s.dtype)
        and pd.api.types.infer_dtype(s, skipna=True) == "string"
    ):
        return pd.array([], dtype="str")
    return s.take(rows).array


def groupby_agg(
    df: pd.DataFrame,
    by: Hashable | Sequence[Hashable],
    *,
    dropna: bool = True,
    sort: bool = True,
    **named_aggs: Any,
) -> pd.DataFrame:
    """``df.groupby(by, dropna=dropna, sort=sort).agg(**named_aggs)``, named aggregation
    ``out=(column, "func")`` with func in sum, mean, min, max, count, size, first, last, std,
    var, median, nunique. Other functions, dtypes or arguments fall back to pandas."""
    df = _require_frame(df, "groupby_agg")

    def slow() -> pd.DataFrame:
        return df.groupby(by, dropna=dropna, sort=sort).agg(**named_aggs)

    return _run_drop_in("groupby_agg", lambda: _groupby_agg(df, by, dropna, sort, named_aggs), slow)


def _groupby_agg(
    df: pd.DataFrame, by: Any, dropna: bool, sort: bool, named_aggs: dict[str, Any]
) -> pd.DataFrame:
    if type(df) is not pd.DataFrame:
        raise _Unsupported(f"DataFrame subclass {type(df).__name__}")
    keys = _column_list(by, df)
    if not keys:
        raise _Unsupported("no group keys")
    if not named_aggs:
        raise _Unsupported("no named aggregates")
    specs = []
    for out_name, spec in named_aggs.items():
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise _Unsupported(f"aggregate {out_name!r} is not (column, function)")
        col, func = spec
        if not isinstance(func, str) or func not in _GROUPBY_FUNCS:
            raise _Unsupported(f"aggregate function {func!r}")
        try:
            unique = col in df.columns and (df.columns == col).sum() == 1
        except TypeError:
            unique = False
        if not unique:
            raise _Unsupported(f"column {col!r}")
        specs.append((out_name, col, func))
    key_arrays = []
    for k in keys:
        if isinstance(df[k].dtype, pd.CategoricalDtype):
            raise _Unsupported(f"categorical key {k!r}")
        if pd.api.types.is_object_dtype(df[k].dtype) and not df[k].notna().any():
            # pandas gives an all-missing object key a float64 index level.
            raise _Unsupported(f"object key {k!r} holds only missing values")
        key_arrays.extend(_key_arrays(df[k], none_is_nan=True))
    cols = {f"k{j}": a for j, a in enumerate(key_arrays)}

    # pandas means integers as float64 (Kahan sums of the converted values); the kernel's
    # exact integer mean would be more accurate than pandas, so means read float64 columns.
    def source(col: Hashable, func: str) -> tuple[Hashable, bool]:
        return col, func == "mean" and df[col].dtype.kind in "iub"

    needed: list[tuple[Hashable, bool]] = []
    for _, col, func in specs:
        if source(col, func) not in needed and func != "size":
            needed.append(source(col, func))
    for j, (col, as_float) in enumerate(needed):
        arr = _value_array(df[col])
        cols[f"v{j}"] = arr.cast(pa.float64(), safe=False) if as_float else arr
    cols["row"] = pa.array(np.arange(len(df), dtype=np.int64))
    table = pa.table(cols)
    key_names = [f"k{j}" for j in range(len(key_arrays))]
    aggs = [("first_row", "row", "first", None)]
    for i, (_, col, func) in enumerate(specs):
        column = None if func == "size" else f"v{needed.index(source(col, func))}"
        aggs.append((f"a{i}", column, _GROUPBY_FUNCS[func], None))
    try:
        out = _core.group_by(table, key_names, aggs, dropna, sort)
    except TypeError as e:
        raise _Unsupported(f"kernel refused the types ({e})") from e
    except ValueError as e:
        if "overflows" not in str(e):
            raise
        # pandas wraps integer sums around silently; a drop-in returns what pandas returns.
        raise _Unsupported("an integer sum overflows (pandas wraps it around)") from e
    rows = out.column("first_row").to_numpy()
    if len(keys) == 1:
        index = pd.Index(df[keys[0]].take(rows).array, name=keys[0])
    else:
        index = pd.MultiIndex.from_arrays([_level(df[k], rows) for k in keys], names=keys)
    data = {
        out_name: _agg_result(out.column(f"a{i}"), func, df[col])
        for i, (out_name, col, func) in enumerate(specs)
    }
    return pd.DataFrame(data, index=index)
