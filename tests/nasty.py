"""Hypothesis strategies for nasty Arrow data, and reference (pure Python) implementations
of the ferrobatch semantics spelled out in DESIGN.md, used as test oracles."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
from typing import Any

import pyarrow as pa
from hypothesis import strategies as st

I64_MIN, I64_MAX = -(2**63), 2**63 - 1

TZ = "Europe/Berlin"

# name -> (arrow type, value strategy). Small value pools make duplicates likely.
ints = st.sampled_from([I64_MIN, I64_MAX, -1, 0, 1, 2, 7, I64_MIN + 1]) | st.integers(-5, 5)
floats = st.sampled_from(
    [0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, 1.5, -1.5, 1e308, -1e-308, 2.0]
)
texts = st.sampled_from(
    ["", "a", "B", "b", "ä", "日本", "a\x00b", "zz", "Ab", "\U0001f600"]
) | st.text(max_size=3)
KEY_TYPES: dict[str, tuple[pa.DataType, Any]] = {
    "i64": (pa.int64(), ints),
    "i8": (pa.int8(), st.integers(-128, 127)),
    "u64": (pa.uint64(), st.sampled_from([0, 1, 2**64 - 1, 2**63, 5])),
    "u8": (pa.uint8(), st.integers(0, 3)),
    "f64": (pa.float64(), floats),
    "f32": (pa.float32(), st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 1.5, -2.5])),
    "bool": (pa.bool_(), st.booleans()),
    "str": (pa.string(), texts),
    "large_str": (pa.large_string(), texts),
    "str_view": (pa.string_view(), texts),
    "binary": (pa.binary(), st.binary(max_size=3)),
    "dict": (pa.dictionary(pa.int32(), pa.string()), texts),
    "date": (pa.date32(), st.dates(dt.date(1960, 1, 1), dt.date(1960, 1, 5))),
    "ts_tz": (
        pa.timestamp("us", tz=TZ),
        st.sampled_from([0, 1, -1, 10**15, -(10**15), 3_600_000_000]),
    ),
    "ts_ns": (pa.timestamp("ns"), st.integers(-3, 3)),
    "duration": (pa.duration("ms"), st.integers(-3, 3)),
    "decimal": (
        pa.decimal128(38, 2),
        st.sampled_from(
            [
                decimal.Decimal("0.00"),
                decimal.Decimal("-1.50"),
                decimal.Decimal("10.25"),
                decimal.Decimal("-" + "9" * 36 + ".99"),
                decimal.Decimal("9" * 36 + ".99"),
            ]
        ),
    ),
}


def _array(values: list, typ: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(typ):
        return pa.array(values, pa.string()).dictionary_encode()
    if pa.types.is_timestamp(typ) or pa.types.is_duration(typ):
        return pa.array(values, pa.int64()).cast(typ)
    return pa.array(values, typ)


@st.composite
def tables(
    draw: Any, min_keys: int = 1, max_keys: int = 3, max_rows: int = 40
) -> tuple[pa.Table, list[str]]:
    """A table of 0..max_rows rows with some key columns of random nasty types (nulls
    included) and a payload column `row` (the original row number), split into random
    chunks. Returns the table and the key column names."""
    n = draw(st.integers(0, max_rows))
    kinds = draw(st.lists(st.sampled_from(sorted(KEY_TYPES)), min_size=min_keys, max_size=max_keys))
    all_equal = draw(st.booleans()) and n > 0
    cols: dict[str, pa.Array] = {}
    for j, kind in enumerate(kinds):
        typ, values = KEY_TYPES[kind]
        nullable = st.none() | values
        if all_equal:
            v = draw(nullable)
            vals = [v] * n
        else:
            vals = draw(st.lists(nullable, min_size=n, max_size=n))
        cols[f"{kind}_{j}"] = _array(vals, typ)
    cols["row"] = pa.array(range(n), pa.int64())
    table = pa.table(cols)
    # Random chunking.
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=3))))
    if cuts and n:
        bounds = [0, *cuts, n]
        batches = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        table = pa.concat_tables(batches) if batches else table
    return table, [c for c in cols if c != "row"]


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _cmp_values(a: Any, b: Any) -> int:
    """Non-null value order: floats -inf < .. < inf < NaN, -0.0 == 0.0; bytes-wise strings."""
    if isinstance(a, str):
        a, b = a.encode(), b.encode()
    an, bn = _is_nan(a), _is_nan(b)
    if an or bn:
        return (an > bn) - (an < bn)
    return (a > b) - (a < b)


def reference_sort(
    table: pa.Table, by: list[str], descending: list[bool], nulls_last: list[bool]
) -> list[int]:
    """Row order of the stable sort (Python's sort is stable)."""
    cols = [table.column(c).to_pylist() for c in by]

    def cmp(i: int, j: int) -> int:
        for col, desc, nl in zip(cols, descending, nulls_last, strict=True):
            a, b = col[i], col[j]
            if a is None or b is None:
                if a is None and b is None:
                    continue
                return (1 if a is None else -1) * (1 if nl else -1)
            c = _cmp_values(a, b)
            if c:
                return -c if desc else c
        return 0

    return sorted(range(table.num_rows), key=functools.cmp_to_key(cmp))


_NAN = object()


def canonical(v: Any) -> Any:
    """A hashable stand-in with the dedup equality: NaN == NaN, -0.0 == 0.0, None == None."""
    if _is_nan(v):
        return _NAN
    if isinstance(v, float) and v == 0.0:
        return 0.0
    return v


def reference_dedup(table: pa.Table, subset: list[str], keep: str) -> list[int]:
    cols = [table.column(c).to_pylist() for c in subset]
    keys = [tuple(canonical(col[i]) for col in cols) for i in range(table.num_rows)]
    first: dict = {}
    last: dict = {}
    count: dict = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
        last[k] = i
        count[k] = count.get(k, 0) + 1
    if keep == "first":
        return [i for i, k in enumerate(keys) if first[k] == i]
    if keep == "last":
        return [i for i, k in enumerate(keys) if last[k] == i]
    return [i for i, k in enumerate(keys) if count[k] == 1]


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Tables equal value by value, NaN equal to NaN (Table.equals says NaN != NaN)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    return all(
        [canonical(v) for v in a.column(c).to_pylist()]
        == [canonical(v) for v in b.column(c).to_pylist()]
        for c in a.column_names
    )


def same_bits(a: Any, b: Any) -> bool:
    """Equal to the last bit: floats by value and sign of zero (any NaN equals any NaN),
    lists element by element, everything else by ``==``."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        if _is_nan(a) or _is_nan(b):
            return _is_nan(a) and _is_nan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return type(a) is type(b) and a == b


def assert_same_bits(got: pa.Table, want: pa.Table) -> None:
    """``got`` equals ``want`` in schema, row order and every value's bits."""
    assert got.schema == want.schema
    for name in got.column_names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not same_bits(x, y)]
        assert not bad, (name, [(a[i], b[i]) for i in bad[:5]])
