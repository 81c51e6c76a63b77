"""Type stubs for the Rust extension module. Use the wrappers in ``ferrobatch`` instead."""

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

__version__: str

def sort(
    data: Any,
    by: str | Sequence[str],
    descending: bool | Sequence[bool],
    nulls_last: bool | Sequence[bool],
    limit: int | None,
) -> pa.Table: ...
def sort_indices(
    data: Any,
    by: str | Sequence[str],
    descending: bool | Sequence[bool],
    nulls_last: bool | Sequence[bool],
    limit: int | None,
) -> pa.UInt32Array: ...
def dedup(data: Any, subset: str | Sequence[str] | None, keep: str) -> pa.Table: ...
def dedup_indices(data: Any, subset: str | Sequence[str] | None, keep: str) -> pa.UInt32Array: ...
def join(
    left: Any,
    right: Any,
    left_on: Sequence[str],
    right_on: Sequence[str],
    how: str,
    suffix: str,
    nulls_equal: bool,
    validate: str | None,
    max_output_rows: int | None,
) -> pa.Table: ...
def take(data: Any, indices: pa.UInt32Array) -> pa.Table: ...
def hash_partitions(data: Any, keys: str | Sequence[str], n: int) -> pa.UInt32Array: ...
def range_partitions(
    data: Any,
    bounds: Any,
    by: str | Sequence[str],
    descending: bool | Sequence[bool],
    nulls_last: bool | Sequence[bool],
) -> pa.UInt32Array: ...
def join_indices(
    left: Any,
    right: Any,
    left_on: Sequence[str],
    right_on: Sequence[str],
    how: str,
    nulls_equal: bool,
    validate: str | None,
    max_output_rows: int | None,
) -> tuple[pa.UInt32Array, pa.UInt32Array]: ...
def check_sort(
    schema: pa.Schema, by: str | Sequence[str], descending: Any, nulls_last: Any
) -> None: ...
def check_keys(schema: pa.Schema, names: Sequence[str] | None) -> None: ...
def join_layout(
    left: pa.Schema,
    right: pa.Schema,
    left_on: Sequence[str],
    right_on: Sequence[str],
    how: str,
    suffix: str,
) -> tuple[pa.Schema, list[tuple[int, str]]]: ...
def group_by(
    data: Any,
    keys: Sequence[str],
    aggs: Sequence[tuple[str, str | None, str, Any]],
    dropna: bool,
    sort: bool,
) -> pa.Table: ...
def group_by_schema(
    schema: pa.Schema,
    keys: Sequence[str],
    aggs: Sequence[tuple[str, str | None, str, Any]],
    dropna: bool,
    sort: bool,
) -> pa.Schema: ...

class ExpectationError(ValueError): ...
class MemoryLimitError(MemoryError): ...

def set_memory_limit(limit: int | None) -> None: ...
def get_memory_limit() -> int | None: ...
def memory_reserved() -> int: ...

class JoinBuild:
    def __init__(
        self,
        probe_schema: pa.Schema,
        build: Any,
        left_on: Sequence[str],
        right_on: Sequence[str],
        how: str,
        suffix: str,
        nulls_equal: bool,
    ) -> None: ...
    def probe(self, data: Any) -> pa.Table: ...
    def build_table(self) -> pa.Table: ...

class GroupByState:
    def __init__(
        self,
        schema: pa.Schema,
        keys: Sequence[str],
        aggs: Sequence[tuple[str, str | None, str, Any]],
        dropna: bool,
        sort: bool,
        state: Sequence[pa.Table] | None = None,
    ) -> None: ...
    def absorb(self, data: Any) -> None: ...
    def partial(self, data: Any) -> list[pa.Table]: ...
    def absorb_partial(self, table: pa.Table) -> None: ...
    def merge(self, other: GroupByState) -> None: ...
    def finish(self) -> pa.Table: ...
    def export_state(self) -> list[pa.Table]: ...
    @property
    def num_groups(self) -> int: ...

# A sub-expression pyarrow evaluates: (start, end, input schema) -> (type, evaluate(batch)).
Resolve = Callable[[int, int, pa.Schema], tuple[pa.DataType, Callable[[pa.RecordBatch], pa.Array]]]

class Expression:
    def __init__(self, data: bytes) -> None: ...
    @property
    def columns(self) -> list[str]: ...
    @property
    def tokens(self) -> list[tuple[str, str]]: ...
    def fallbacks(self, schema: pa.Schema, resolve: Resolve) -> list[tuple[int, int, str]]: ...
    def evaluate(self, batch: pa.RecordBatch, resolve: Resolve) -> pa.Array: ...

class ParquetWriter:
    def __init__(
        self,
        fd: int,
        schema: pa.Schema,
        compression: str = "snappy",
        row_group_size: int = 1048576,
    ) -> None: ...
    def write_batch(self, batch: pa.RecordBatch) -> None: ...
    def close(self) -> None: ...

class Run:
    def __init__(self, spec: tuple[Any, ...], collecting: bool = False) -> None: ...
    @property
    def schema(self) -> pa.Schema: ...
    def next(self) -> pa.RecordBatch | None: ...
    def report(self) -> list[dict[str, Any]]: ...
    @property
    def peak_rss(self) -> int: ...

def parquet_reads(
    files: Sequence[str], predicate: Expression | None = None
) -> tuple[int, int, int, int, bool]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
