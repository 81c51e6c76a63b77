"""The batch pipeline: an immutable, lazy plan over record-batch streams.

``fb.scan(source)`` starts a plan; every method returns a new :class:`Pipeline` and leaves the
receiver unchanged (one pipeline may feed several others); nothing runs until a sink
(``collect``, ``to_batches``, ``to_pandas``). Every source is read through
``pyarrow.dataset``: only the columns the plan needs are read, and filters on source columns
directly above the scan are pushed into the scanner (Parquet row groups are skipped by their
statistics). Plans are checked when they are built: an unknown column raises ``KeyError`` and
an expression that does not type-check raises ``TypeError`` before any data is read.

Execution streams: filter / select / rename / with_columns / map_batches / head go batch by
batch; ``group_by`` feeds a :class:`ferrobatch.GroupByState` (state bounded by the groups);
``sort``, ``dedup`` and ``join``'s right side materialize.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

import ferrobatch as fb

_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
    ".csv": "csv",
}


def _format_of(paths: Sequence[str]) -> str:
    kinds = {_FORMATS.get(os.path.splitext(p)[1].lower()) for p in paths}
    if None in kinds or len(kinds) != 1:
        raise ValueError(
            f"cannot tell the file format of {list(paths)[:3]}: expected one of "
            f"{sorted(_FORMATS)} (all files of one format)"
        )
    return kinds.pop()  # type: ignore[return-value]


def _files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    out: list[str] = []
    for item in items:
        p = os.fspath(item)
        if any(ch in p for ch in "*?["):
            out.extend(sorted(_glob.glob(p, recursive=True)))
        elif os.path.isdir(p):
            for root, _dirs, names in sorted(os.walk(p)):
                out.extend(
                    os.path.join(root, n)
                    for n in sorted(names)
                    if os.path.splitext(n)[1].lower() in _FORMATS
                )
        elif os.path.exists(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p!r}")
    if not out:
        raise FileNotFoundError(f"no input files match {source!r}")
    return out


def _source(source: Any) -> tuple[Any, pa.Schema, str]:
    """A dataset (or a one-shot reader) for `source`, its schema and a description. Files
    are read by the executor's readers; their dataset gives the schema (as pyarrow reads
    them: the Rust readers are tested to agree) and the row-group pruning `explain` shows."""
    if isinstance(source, ds.Dataset):
        return source, source.schema, f"dataset {type(source).__name__}"
    if isinstance(source, str | os.PathLike) or (
        isinstance(source, list | tuple) and source and isinstance(source[0], str | os.PathLike)
    ):
        files = _files(source)
        fmt = _format_of(files)
        d = ds.dataset(files, format=fmt)
        return (
            d,
            d.schema,
            f"{fmt} files ({len(files)}): {files[0]}{' ...' if len(files) > 1 else ''}",
        )
    if isinstance(source, pa.RecordBatchReader):
        checked = pa.RecordBatchReader.from_batches(
            source.schema, fb._checked_batches(source, "source")
        )
        return checked, source.schema, "record batch reader (one pass)"
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if not isinstance(source, pa.Table):
        data = fb._arrow_input(source, "source")
        if hasattr(data, "__arrow_c_stream__"):
            source = pa.table(data) if not isinstance(data, pa.Table) else data
        else:
            source = pa.Table.from_batches([pa.record_batch(data)])
    return ds.dataset(source), source.schema, f"in-memory table ({source.num_rows} rows)"


_UNVIEW = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}


def _unview_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with string_view / binary_view columns as large_string / large_binary: the types
    expressions are evaluated on (pyarrow's compute kernels mostly lack the view types)."""
    return pa.schema([f.with_type(_UNVIEW.get(f.type, f.type)) for f in schema])


def _unview(batch: pa.RecordBatch) -> pa.RecordBatch:
    schema = _unview_schema(batch.schema)
    return batch if schema == batch.schema else batch.cast(schema)


def _try_eval(expr: pc.Expression, schema: pa.Schema) -> pa.DataType:
    return ds.dataset(schema.empty_table()).to_table(columns={"_": expr}).schema.field(0).type


def _evaluates(expr: pc.Expression, schema: pa.Schema) -> bool:
    try:
        _try_eval(expr, schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True


def _check_expr(expr: Any, schema: pa.Schema, what: str) -> pa.DataType:
    """Type-check `expr` against `schema` (view columns unviewed); returns its result type."""
    if not isinstance(expr, pc.Expression):
        raise TypeError(f"{what} must be a pyarrow.compute.Expression, got {type(expr).__name__}")
    try:
        return _try_eval(expr, _unview_schema(schema))
    except pa.ArrowInvalid as e:
        msg = str(e)
        if "No match for FieldRef" in msg:
            name = msg.split("FieldRef.Name(", 1)[-1].split(")", 1)[0]
            raise KeyError(
                f"{what} refers to column {name!r}, which is not among {schema.names}"
            ) from None
        if "Precision is not great enough" in msg:
            msg += " (compare decimals with decimal literals, e.g. pc.scalar(Decimal('300')))"
        raise TypeError(f"{what} {expr} is invalid for the input: {msg}") from None
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise TypeError(f"{what} {expr} cannot be evaluated on the input: {e}") from None


def _columns_of(expr: pc.Expression, schema: pa.Schema) -> set[str]:
    """The input columns `expr` reads (its field references)."""
    return set(_Expr.of(expr).columns) & set(schema.names)


class _Expr:
    """A pyarrow expression as the executor takes it: its serialized form parsed in Rust
    (``fb._core.Expression``), and the fallback that evaluates a sub-expression the Rust side
    does not implement with pyarrow compute."""

    _cache: dict[int, tuple[pc.Expression, _Expr]] = {}

    def __init__(self, expr: pc.Expression) -> None:
        self.expr = expr
        self.buf = expr.__reduce__()[1][0]
        self.core = fb._core.Expression(self.buf.to_pybytes())
        self.columns: list[str] = self.core.columns

    @classmethod
    def of(cls, expr: pc.Expression) -> _Expr:
        hit = cls._cache.get(id(expr))
        if hit is not None and hit[0] is expr:
            return hit[1]
        e = cls(expr)
        if len(cls._cache) > 4096:
            cls._cache.clear()
        cls._cache[id(expr)] = (expr, e)  # keeps `expr` alive, so its id stays its own
        return e

    def spec(self) -> tuple[Any, Callable]:
        return (self.core, self.resolve)

    def fallbacks(self, schema: pa.Schema) -> list[str]:
        """The functions of this expression pyarrow evaluates for input `schema`."""
        return [name for _s, _e, name in self.core.fallbacks(schema, self.resolve)]

    def subexpression(self, start: int, end: int) -> pc.Expression:
        """The sub-expression whose tokens are ``tokens[start:end]``, rebuilt as a pyarrow
        expression (the literal and options columns it uses renumbered)."""
        import pyarrow.ipc as ipc

        tokens = self.core.tokens[start:end]
        table = ipc.open_file(self.buf).read_all()
        used: dict[int, int] = {}
        out = []
        for k, v in tokens:
            if k in ("literal", "options"):
                v = str(used.setdefault(int(v), len(used)))
            out.append((k, v))
        cols = sorted(used, key=used.__getitem__)
        schema = pa.schema(
            [pa.field("", table.schema.field(i).type) for i in cols],
            metadata=pa.KeyValueMetadata(out),
        )
        sink = pa.BufferOutputStream()
        # One row, even with no column (Arrow C++ reads the literals from row 0).
        row = (
            pa.StructArray.from_arrays(
                [table.column(i).combine_chunks() for i in cols], fields=list(schema)
            )
            if cols
            else pa.array([{}], pa.struct([]))
        )
        with ipc.new_file(sink, schema) as w:
            w.write_batch(
                pa.RecordBatch.from_struct_array(row).replace_schema_metadata(schema.metadata)
            )
        return self.expr.__reduce__()[0](sink.getvalue())

    def resolve(self, start: int, end: int, schema: pa.Schema) -> tuple[pa.DataType, Callable]:
        sub = self.subexpression(start, end)
        ty = _check_expr(sub, schema, "expression")

        def evaluate(batch: pa.RecordBatch) -> pa.Array:
            out = _evaluate(batch, {"_": sub})["_"]
            return out if out.type == ty else out.cast(ty)

        return ty, evaluate


def _field_name(expr: pc.Expression, schema: pa.Schema) -> str | None:
    """The column `expr` is a bare reference to, if it is one."""
    return next((n for n in schema.names if expr.equals(pc.field(n))), None)


def _evaluate(batch: pa.RecordBatch, exprs: dict[str, pc.Expression]) -> dict[str, pa.Array]:
    """The columns `exprs` of `batch`: bare column references pass through with their type,
    the rest are evaluated on the batch with view columns unviewed."""
    cols: dict[str, pa.Array] = {}
    computed = {}
    for name, e in exprs.items():
        ref = _field_name(e, batch.schema)
        if ref is not None:
            cols[name] = batch.column(ref)
        else:
            computed[name] = e
    if computed:
        t = ds.dataset(pa.Table.from_batches([_unview(batch)])).to_table(columns=computed)
        for name in computed:
            cols[name] = t.column(name).combine_chunks()
    return cols


@dataclass
class StageStats:
    """Rows and time of one plan stage in a run. `seconds`: its work on each batch summed
    over threads, plus the wall time of its phases that run on every thread at once (a wave
    read together, merges, a finish), counted once."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    batches: int = 0
    seconds: float = 0.0
    spilled_bytes: int = 0
    spill_files: int = 0
    spill_seconds: float = 0.0
    peak_reserved_bytes: int = 0


@dataclass
class _Run:
    """One execution: the stats of every stage, with the node that produced them."""

    stats: list[tuple[_Node, StageStats]] = field(default_factory=list)
    start: float = field(default_factory=lambda: _now())
    progress: Any = None
    # The shared sub-plans already in the executor's plan (each is lowered once).
    shared: set[int] = field(default_factory=set)
    peak_mb: float = field(default_factory=lambda: _rss_mb())
    # The exception a Python-side input raised inside the executor (re-raised as it was).
    raised: BaseException | None = None
    # The node whose whole output the sink keeps (a collect without a progress bar): the
    # executor may then read in long waves.
    collecting: int | None = None
    # This run's own memory limit in bytes (``collect(memory_limit=...)``).
    memory_limit: int | None = None
    # Bytes the sink buffers (a Parquet writer's row group), reserved from the budget.
    output_bytes: int = 0

    def keeping_errors(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except BaseException as e:
            self.raised = e
            raise

    def stage(self, node: _Node) -> StageStats:
        s = StageStats(node.label())
        self.stats.append((node, s))
        return s

    def report(self) -> Report:
        """Every stage's counters: rows in = the rows out of the stage's own inputs (a scan's:
        the rows it decoded)."""
        stages = [StageStats(**vars(st)) for _, st in self.stats]
        return Report(stages, _now() - self.start, max(self.peak_mb, _rss_mb()))


def _now() -> float:
    import time

    return time.perf_counter()


def _rss_mb() -> float:
    """The process's resident memory now (Linux; 0 where unknown). A run reports the largest
    value seen while it ran, and leaves the process's own peak counter alone."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class _Node:
    schema: pa.Schema
    inputs: tuple[_Node, ...] = ()
    kernel = False  # group_by, sort, dedup, join: worth running once when shared
    may_spill = False  # spills to the temp directory past the memory limit

    def label(self) -> str:
        raise NotImplementedError

    def needs(self, out: set[str]) -> list[set[str]]:
        """Input columns needed to produce the output columns `out`, per input."""
        return [set(out) for _ in self.inputs]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        """The executor's node over the lowered input `inner` (its inputs' for a join)."""
        raise NotImplementedError


class _Scan(_Node):
    def __init__(self, source: Any, batch_size: int | None, columns: list[str] | None) -> None:
        self.data, schema, self.desc = _source(source)
        self.files: list[str] | None = None
        self.fmt: str | None = None
        if isinstance(self.data, ds.FileSystemDataset) and isinstance(
            self.data.format, ds.ParquetFileFormat | ds.IpcFileFormat | ds.CsvFileFormat
        ):
            self.files = list(self.data.files)
            self.fmt = self.data.format.default_extname
        if columns is not None:
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise KeyError(f"scan columns {missing} are not in the source {schema.names}")
            schema = pa.schema([schema.field(c) for c in columns])
        self.schema = schema
        self.batch_size = batch_size
        self.used = False

    def __getstate__(self) -> dict[str, Any]:
        """Pickles with its source: files and datasets as they pickle, an in-memory table as
        its data; a one-pass reader cannot be pickled."""
        if isinstance(self.data, pa.RecordBatchReader):
            raise TypeError("a pipeline over a RecordBatchReader (one pass) cannot be pickled")
        state = self.__dict__.copy()
        if isinstance(self.data, ds.InMemoryDataset):
            state["data"] = self.data.to_table()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["data"], pa.Table):
            state["data"] = ds.dataset(state["data"])
        self.__dict__.update(state)

    def label(self) -> str:
        return f"scan {self.desc}"

    def native(self, filters: list[pc.Expression]) -> list[pc.Expression]:
        """The pushed `filters` the executor's Parquet reader evaluates itself."""
        return [f for f in filters if not _Expr.of(f).fallbacks(self.data.schema)]

    def source(self, filters: list[pc.Expression]) -> tuple[Any, int | None, str]:
        """What a run reads under the pushed `filters`: the data, the rows that will be read
        when the metadata tells, and a description of the pruning. A Parquet scan asks the
        executor's reader, which prunes row groups by their statistics and pages by the page
        index under the filters it evaluates natively."""
        data = self.data
        if isinstance(data, pa.RecordBatchReader):
            return data, None, ""
        if self.fmt == "parquet":
            pred = _and(self.native(filters))
            core = None if pred is None else _Expr.of(pred).core
            groups, of_groups, rows, of_rows, pages = fb._core.parquet_reads(self.files, core)
            if pred is None:
                return data, rows, f"{groups:,} row groups, {rows:,} rows"
            how = "statistics, page index" if pages else "statistics"
            note = f"{groups:,} of {of_groups:,} row groups, {rows:,} of {of_rows:,} rows ({how})"
            return data, rows, note
        if isinstance(data, ds.InMemoryDataset):
            return data, data.count_rows(), ""
        return data, None, ""

    def lower(  # type: ignore[override]
        self, plan: _Plan, run: _Run, above: tuple[_Node, ...]
    ) -> tuple[tuple, list[pc.Expression]]:
        """The executor's source reading the needed columns, and the pushed filters it does
        not apply itself (evaluated right above it). A Parquet reader takes every pushed
        filter it can evaluate natively: row groups are pruned by their statistics and the
        other columns are decoded only for the rows that pass."""
        pushed = plan.filters.get(id(self), [])
        cols = plan.columns[id(self)]
        label, size = self.label(), self.batch_size
        data = self.data
        if self.fmt == "parquet":
            native = self.native(pushed)
            rest = [f for f in pushed if not any(f is g for g in native)]
            top = plan.top.get(id(self))
            need = set(plan.need.get(id(top), cols)) if top is not None else set(cols)
            for f in rest:
                need |= _columns_of(f, self.schema)
            out = [c for c in self.schema.names if c in need]
            pred = _and(native)
            core = None if pred is None else _Expr.of(pred).core
            dictionary = _dictionary_keys(self, out, above, plan) if not rest else []
            narrow = _narrow_decimals(self, out, native, above, plan) if not rest else []
            spec = ("parquet", label, self.files, out, core, size, dictionary, narrow)
            return spec, rest
        if self.fmt == "arrow":
            return ("ipc", label, self.files, cols, size), pushed
        if self.fmt == "csv" and all(_csv_native(f.type) for f in data.schema):
            return ("csv", label, self.files, data.schema, cols, size), pushed
        if isinstance(data, ds.InMemoryDataset):
            return ("table", label, data.to_table(columns=cols), size), pushed
        if isinstance(data, pa.RecordBatchReader):
            if self.used:
                raise ValueError("a pipeline over a RecordBatchReader can run only once")
            self.used = True
            schema = _select(data.schema, cols)
            batches = run.keeping_errors(b.select(cols) for b in data)
            reader = pa.RecordBatchReader.from_batches(schema, batches)
            return ("stream", label, reader, size), pushed
        # Any other dataset (and CSV with other types) is scanned by pyarrow, which applies the
        # pushed filters it can evaluate (pruning what it can); the rest run above.
        mine = [f for f in pushed if _evaluates(f, data.schema)]
        above = [f for f in pushed if not any(f is g for g in mine)]
        kw: dict[str, Any] = {"columns": cols, "filter": _and(mine)}
        if size is not None:
            kw["batch_size"] = size
        scanner = data.scanner(batch_readahead=2, fragment_readahead=1, **kw)
        reader = pa.RecordBatchReader.from_batches(
            scanner.projected_schema, run.keeping_errors(iter(scanner.to_reader()))
        )
        return ("stream", label, reader, size), above


@dataclass
class _Plan:
    """Per run: the columns each node must produce, and the filters pushed into scans."""

    need: dict[int, set[str]]
    columns: dict[int, list[str]]
    filters: dict[int, list[pc.Expression]]
    pushed: set[int]
    sources: dict[int, tuple[Any, int | None, str]] = field(default_factory=dict)
    reuse: set[int] = field(default_factory=set)
    # Per scan with pushed filters: the topmost of them (what its consumers need is above it).
    top: dict[int, _Node] = field(default_factory=dict)
    # Per group_by: its key columns read as dictionaries, with the types they get back.
    restore: dict[int, dict[str, pa.DataType]] = field(default_factory=dict)


def _and(filters: list[pc.Expression]) -> pc.Expression | None:
    """The conjunction of `filters` (None for none)."""
    filt = None
    for f in filters:
        filt = f if filt is None else filt & f
    return filt


def _topo(root: _Node) -> list[_Node]:
    """Nodes with every consumer before its inputs."""
    seen: set[int] = set()
    post: list[_Node] = []

    def visit(node: _Node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for child in node.inputs:
            visit(child)
        post.append(node)

    visit(root)
    return post[::-1]


def _plan(root: _Node) -> _Plan:
    order = _topo(root)
    consumers: dict[int, int] = {}
    for node in order:
        for child in node.inputs:
            consumers[id(child)] = consumers.get(id(child), 0) + 1
    need: dict[int, set[str]] = {id(root): set(root.schema.names)}
    for node in order:
        out = need.setdefault(id(node), set())
        for child, cols in zip(node.inputs, node.needs(out), strict=True):
            need.setdefault(id(child), set()).update(cols)
    filters: dict[int, list[pc.Expression]] = {}
    pushed: set[int] = set()
    top: dict[int, _Node] = {}
    for node in order:
        # A chain of filters over a scan that feeds nothing else is read pre-filtered.
        if isinstance(node, _Filter):
            chain, below = [node], node.inputs[0]
            while isinstance(below, _Filter) and consumers.get(id(below), 0) == 1:
                chain.append(below)
                below = below.inputs[0]
            if (
                isinstance(below, _Scan)
                and consumers.get(id(below), 0) == 1
                and id(node) not in pushed
            ):
                if all(consumers.get(id(f), 0) <= 1 for f in chain[1:]):
                    top.setdefault(id(below), node)
                    for f in chain:
                        if id(f) not in pushed:
                            pushed.add(id(f))
                            filters.setdefault(id(below), []).append(f.expr)
    columns = {
        id(n): [c for c in n.schema.names if c in need.get(id(n), set())]
        for n in order
        if isinstance(n, _Scan)
    }
    plan = _Plan(need, columns, filters, pushed, top=top)
    # A shared sub-plan with a kernel in it (expensive to recompute, materialized or holding
    # state anyway) runs once per run; a shared streaming chain is re-read by each consumer,
    # so that memory stays bounded by batches.
    plan.reuse = {
        id(n) for n in order if consumers.get(id(n), 0) > 1 and any(m.kernel for m in _topo(n))
    }
    return plan


def _with_sources(plan: _Plan, root: _Node) -> _Plan:
    """`plan` with every scan's pruned source and row count (for `explain` and progress)."""
    for n in _topo(root):
        if isinstance(n, _Scan) and id(n) not in plan.sources:
            plan.sources[id(n)] = n.source(plan.filters.get(id(n), []))
    return plan


_STRINGS = (pa.string(), pa.large_string(), pa.string_view())


def _csv_native(t: pa.DataType) -> bool:
    """Column types the executor's CSV reader parses exactly as pyarrow does (tested); a file
    with any other inferred type (timestamps with a time zone) is read by pyarrow."""
    return t in (pa.int64(), pa.float64(), pa.bool_(), pa.date32(), pa.null(), *_STRINGS) or (
        pa.types.is_timestamp(t) and t.tz is None
    )


def _dictionary_keys(
    scan: _Scan, out: list[str], above: tuple[_Node, ...], plan: _Plan
) -> list[str]:
    """The string columns of a Parquet scan worth reading as dictionaries: those the
    executor chain above it uses only as group-by keys (passed through projections, maybe
    renamed) or in filters it evaluates natively. The group-by gets their declared types
    back (`plan.restore`); everything else sees the file's types."""
    names = {c: c for c in out if scan.schema.field(c).type in _STRINGS}
    for node in above:
        if not names:
            return []
        if isinstance(node, _Filter):
            x = _Expr.of(node.expr)
            if x.fallbacks(_unview_schema(node.inputs[0].schema)):
                names = {n: o for n, o in names.items() if n not in x.columns}
        elif isinstance(node, _Project):
            schema = node.inputs[0].schema
            want = plan.need.get(id(node), set(node.exprs))
            renamed: dict[str, str] = {}
            used: set[str] = set()
            for n, e in node.exprs.items():
                if n not in want:
                    continue
                ref = _field_name(e, schema)
                if ref is None:
                    used |= _columns_of(e, schema)
                elif ref in names:
                    renamed[n] = names[ref]
            names = {n: o for n, o in renamed.items() if o not in {names.get(u) for u in used}}
        elif isinstance(node, _GroupBy):
            keys, aggs, _, _ = node.args
            used = {s[0] for s in aggs.values()} | {
                s[2] for s in aggs.values() if len(s) == 3 and isinstance(s[2], str)
            }
            keep = {k: names[k] for k in keys if k in names and k not in used}
            plan.restore[id(node)] = {k: scan.schema.field(o).type for k, o in keep.items()}
            return sorted(set(keep.values()))
        else:
            return []
    return []


def _narrow_decimals(
    scan: _Scan,
    out: list[str],
    pushed: list[pc.Expression],
    above: tuple[_Node, ...],
    plan: _Plan,
) -> list[str]:
    """The decimal128 columns (at most 18 digits) of a Parquet scan the executor may carry as
    decimal64 — read without widening, half the bytes through every operator — because
    nothing but Rust reads them: native expressions (pushed, filters, with_columns) and
    ``sum`` / ``mean`` aggregates. A column that reaches the chain's output, a group-by key,
    any other aggregate or an expression pyarrow evaluates keeps its declared type. The
    `pushed` filters are the ones the reader evaluates natively."""
    schema = scan.schema
    read = set(out).union(*(_columns_of(f, schema) for f in pushed))
    narrow = {
        c for c in read if pa.types.is_decimal128(t := schema.field(c).type) and t.precision <= 18
    }
    names = {c: c for c in out if c in narrow}
    unsafe: set[str] = set()  # originals some consumer needs as decimal128

    def consumed(e: pc.Expression, schema: pa.Schema) -> None:
        x = _Expr.of(e)
        if x.fallbacks(_unview_schema(schema)):
            unsafe.update(names[c] for c in x.columns if c in names)

    for node in above:
        if isinstance(node, _Filter):
            consumed(node.expr, node.inputs[0].schema)
        elif isinstance(node, _Project):
            schema = node.inputs[0].schema
            want = plan.need.get(id(node), set(node.exprs))
            renamed: dict[str, str] = {}
            for n, e in node.exprs.items():
                if n not in want:
                    continue
                ref = _field_name(e, schema)
                if ref is None:
                    consumed(e, schema)
                elif ref in names:
                    renamed[n] = names[ref]
            names = renamed
        elif isinstance(node, _GroupBy):
            keys, aggs, _, _ = node.args
            for spec in aggs.values():
                cols = [spec[0], *(c for c in spec[2:] if isinstance(c, str))]
                if spec[1] not in ("sum", "mean"):
                    unsafe.update(names[c] for c in cols if c in names)
            unsafe.update(names[k] for k in keys if k in names)
            names = {}
            break
        else:
            break
    unsafe.update(names.values())  # reach the output
    return [c for c in scan.schema.names if c in narrow and c not in unsafe]


def _run_lowered(node: _Node, run: _Run, plan: _Plan) -> Iterator[pa.RecordBatch]:
    """Run the plan under `node` on the Rust executor (see :func:`_lower`); the operators'
    counters come from the executor's report."""
    entries: list[tuple[_Node | None, bool, int]] = []
    spec = _lower(node, run, plan, entries, -1)
    staged = [(n, in_spec, None if n is None else run.stage(n)) for n, in_spec, _ in entries]
    r = fb._core.Run(spec, run.collecting == id(node), run.memory_limit, run.output_bytes)
    read = 0

    def fill() -> int:
        reps = iter(r.report())
        scan_rows = 0
        out: dict[int, tuple[int, int]] = {}  # rows out and batches of entry i
        for i, (n, in_spec, st) in enumerate(staged):
            rep = next(reps, None) if in_spec else None
            if rep is not None:
                out[i] = (rep["rows_out"], rep["batches"])
            if st is None or rep is None:
                continue
            st.rows_out, st.batches = rep["rows_out"], rep["batches"]
            st.seconds = rep["cpu_seconds"]
            st.spilled_bytes, st.spill_files = rep["spilled_bytes"], rep["spill_files"]
            st.spill_seconds = rep["spill_seconds"]
            st.peak_reserved_bytes = rep["peak_reserved"]
            if isinstance(n, _Scan):
                st.rows_in = rep["rows_in"]
                scan_rows += rep["rows_in"]
        # A filter pushed into its scan passes on what leaves the scan (and the filters the
        # scan's reader could not take, evaluated right above it).
        below: tuple[int, int] | None = None
        for i in reversed(range(len(staged))):
            n, in_spec, st = staged[i]
            if isinstance(n, _Scan) or (n is None and i + 1 < len(staged) and below is not None):
                below = out.get(i, below)
            elif st is not None and not in_spec and below is not None:
                st.rows_out, st.batches = below
            else:
                below = None
        # Rows in: what the entry's own inputs passed on (a scan's: the rows it decoded).
        rows_in = [0] * len(staged)
        for j, (_, _, parent) in enumerate(entries):
            if parent >= 0:
                st = staged[j][2]
                rows_in[parent] += st.rows_out if st is not None else out.get(j, (0, 0))[0]
        for (n, _, st), rows in zip(staged, rows_in, strict=True):
            if st is not None and not isinstance(n, _Scan):
                st.rows_in = rows
        return scan_rows

    try:
        while True:
            try:
                b = r.next()
            except Exception:
                if run.raised is not None:  # a Python input failed: its own exception
                    raise run.raised.with_traceback(run.raised.__traceback__) from None
                raise
            if b is None:
                break
            if run.progress is not None:
                now = fill()
                run.progress.update(now - read)
                read = now
            yield b
    finally:
        now = fill()
        run.peak_mb = max(run.peak_mb, r.peak_rss / 2**20)
        if run.progress is not None:
            run.progress.update(now - read)


def _lower(
    node: _Node,
    run: _Run,
    plan: _Plan,
    entries: list[tuple[_Node | None, bool, int]],
    parent: int,
    above: tuple[_Node, ...] = (),
) -> tuple:
    """The executor's plan for `node` and the nodes below it, as nested tuples ``(kind,
    label, input or source, ...)`` (``src/python/exec.rs`` reads them). `entries` gets, in
    plan pre-order, each node with whether it is in the tuple (a filter pushed into its scan
    is not; a shared sub-plan's wrapper is, without a node) and the index of the entry that
    consumes it (`parent`; -1 for the output, -2 for the filters run above a scan). A shared
    sub-plan (``plan.reuse``) is written out where first met and referred to by key
    elsewhere: the executor runs it once."""
    me = len(entries)
    if isinstance(node, _Filter) and id(node) in plan.pushed:
        entries.append((node, False, parent))
        return _lower(node.inputs[0], run, plan, entries, me, (node, *above))
    if isinstance(node, _Scan):
        source, filters = node.lower(plan, run, above)
        # The pushed filters the source does not take run right above it (no stages of their
        # own: the pushed filter stages report them), the outermost first.
        entries.extend((None, True, -2) for _ in filters)
        entries.append((node, True, parent))
        for f in reversed(filters):
            source = ("filter", "", source, _Expr.of(f).spec())
        return source
    entries.append((node, True, parent))
    inner = []
    for child in node.inputs:
        if id(child) not in plan.reuse:
            inner.append(_lower(child, run, plan, entries, me, (node, *above)))
            continue
        wrapper = len(entries)
        entries.append((None, True, me))
        first = id(child) not in run.shared
        run.shared.add(id(child))
        sub = _lower(child, run, plan, entries, wrapper) if first else None
        inner.append(("shared", "", sub, id(child), _needed(child, plan)))
    return node.lower(plan, inner[0] if len(inner) == 1 else tuple(inner))


class _Filter(_Node):
    def __init__(self, child: _Node, expr: Any) -> None:
        t = _check_expr(expr, child.schema, "filter")
        if t != pa.bool_():
            raise TypeError(f"filter needs a boolean expression, {expr} is {t}")
        self.inputs = (child,)
        self.schema = child.schema
        self.expr = expr

    def label(self) -> str:
        return f"filter {self.expr}"

    def needs(self, out: set[str]) -> list[set[str]]:
        return [set(out) | _columns_of(self.expr, self.inputs[0].schema)]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        return ("filter", self.label(), inner, _Expr.of(self.expr).spec())


class _Project(_Node):
    """select / rename / with_columns: output columns as expressions of the input."""

    def __init__(self, child: _Node, columns: Any, label: str | None = None) -> None:
        schema = child.schema
        if isinstance(columns, str):
            columns = [columns]
        if isinstance(columns, list | tuple):
            for c in columns:
                if not isinstance(c, str):
                    raise TypeError(f"select takes column names, got {c!r}")
                if c not in schema.names:
                    raise KeyError(f"select: column {c!r} is not among {schema.names}")
            columns = {c: pc.field(c) for c in columns}
        if not isinstance(columns, dict):
            raise TypeError(f"select takes a name, a list or a dict, got {type(columns).__name__}")
        exprs: dict[str, pc.Expression] = {}
        fields = []
        for name, e in columns.items():
            if isinstance(e, str):
                if e not in schema.names:
                    raise KeyError(f"select: column {e!r} is not among {schema.names}")
                e = pc.field(e)
            ref = _field_name(e, schema)
            if ref is not None:  # passes through: keeps its type (views included)
                fields.append(schema.field(ref).with_name(name))
            else:
                fields.append(pa.field(name, _check_expr(e, schema, f"column {name!r}")))
            exprs[name] = e
        self.inputs = (child,)
        self.exprs = exprs
        self.schema = pa.schema(fields)
        self._label = label or f"select {list(exprs)}"

    def label(self) -> str:
        return self._label

    def needs(self, out: set[str]) -> list[set[str]]:
        cols: set[str] = set()
        for name, e in self.exprs.items():
            if name in out:
                cols |= _columns_of(e, self.inputs[0].schema)
        return [cols]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        """Only the output columns needed downstream are computed (none at all keeps the
        rows, for a row count); a bare column reference passes the column through."""
        want = plan.need.get(id(self), set(self.exprs))
        schema = self.inputs[0].schema
        cols = [
            (n, _field_name(e, schema) or _Expr.of(e).spec())
            for n, e in self.exprs.items()
            if n in want
        ]
        return ("project", self.label(), inner, cols)


class _MapBatches(_Node):
    def __init__(self, child: _Node, fn: Callable[[pa.RecordBatch], Any]) -> None:
        self.inputs = (child,)
        self.fn = fn
        # The output schema: `fn` of an empty batch.
        empty = pa.record_batch([pa.array([], f.type) for f in child.schema], schema=child.schema)
        probe = fn(empty)
        self.schema = _to_table(probe).schema
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def label(self) -> str:
        return f"map_batches {self.name}"

    def needs(self, out: set[str]) -> list[set[str]]:
        return [set(self.inputs[0].schema.names)]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        def call(b: pa.RecordBatch) -> pa.Table:
            t = _to_table(self.fn(b))
            return t if t.schema == self.schema else t.cast(self.schema)

        return ("map_batches", self.label(), inner, call, self.schema)


def _to_table(x: Any) -> pa.Table:
    if isinstance(x, pa.Table):
        return x
    if isinstance(x, pa.RecordBatch):
        return pa.Table.from_batches([x])
    return pa.table(fb._arrow_input(x, "map_batches result"))


class _Head(_Node):
    def __init__(self, child: _Node, n: int) -> None:
        self.inputs = (child,)
        self.schema = child.schema
        self.n = n

    def label(self) -> str:
        return f"head {self.n}"

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        return ("head", self.label(), inner, self.n)


class _GroupBy(_Node):
    kernel = True
    may_spill = True

    def __init__(
        self, child: _Node, keys: Any, aggs: dict[str, Any], dropna: bool, sort: bool
    ) -> None:
        fb._check_bool(dropna, "dropna")
        fb._check_bool(sort, "sort")
        self.args = (fb._key_list(keys, "keys"), aggs, dropna, sort)
        self.inputs = (child,)
        # Names, types and arguments checked and the output schema computed in Rust, from
        # the input schema alone.
        self.schema = fb._core.group_by_schema(
            child.schema, self.args[0], fb._agg_tuples(aggs), dropna, sort
        )

    def label(self) -> str:
        keys, aggs, _, _ = self.args
        return f"group_by {keys} {aggs}"

    def needs(self, out: set[str]) -> list[set[str]]:
        keys, aggs, _, _ = self.args
        cols = set(keys)
        for spec in aggs.values():
            if spec[0] is not None:
                cols.add(spec[0])
            if len(spec) == 3 and spec[1] == "corr":
                cols.add(spec[2])
        return [cols]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        keys, aggs, dropna, sort = self.args
        restore = list(plan.restore.get(id(self), {}).items())
        return ("group_by", self.label(), inner, keys, fb._agg_tuples(aggs), dropna, sort, restore)


class _Sort(_Node):
    """A sort on the executor: the input drained and sorted by the kernel; with a limit,
    each morsel's top rows kept and merged wave by wave (memory O(limit))."""

    kernel = True

    def __init__(
        self, child: _Node, by: Any, descending: Any, nulls_last: Any, limit: int | None
    ) -> None:
        # Names, key types and flags checked now, from the schema, before any data is read.
        fb._core.check_sort(child.schema, by, descending, nulls_last)
        self.schema = child.schema
        self.inputs = (child,)
        self.by = fb._key_list(by, "by")
        self.desc = _per_key(descending, len(self.by))
        self.nulls_last = _per_key(nulls_last, len(self.by))
        self.limit = fb._check_limit(limit)
        self.may_spill = self.limit is None

    def label(self) -> str:
        top = "" if self.limit is None else f" limit={self.limit} (top-k)"
        return f"sort {self.by}{top}"

    def needs(self, out: set[str]) -> list[set[str]]:
        return [set(out) | set(self.by)]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        return ("sort", self.label(), inner, self.by, self.desc, self.nulls_last, self.limit)


def _per_key(flag: Any, n: int) -> list[bool]:
    """A per-key flag (one bool for all keys, or one per key; checked by the kernel)."""
    return [bool(flag)] * n if isinstance(flag, bool) else [bool(f) for f in flag]


class _Dedup(_Node):
    """Dedup on the executor. ``keep="first"`` streams: one hash table of the keys seen
    (``src/dedup/stream.rs``); each batch passes on its rows whose key is new, with dedup's
    key rules (null == null, NaN == NaN, -0.0 == 0.0); memory is the distinct keys.
    ``"last"`` / ``"none"`` need the whole input: the kernel runs once it is drained. Under a
    memory limit every ``keep`` makes two passes over the spilled input, its per-key state
    spilling too (``src/dedup/external.rs``)."""

    kernel = True

    def __init__(self, child: _Node, subset: Any, keep: str) -> None:
        if not isinstance(keep, str):
            raise TypeError(f'keep must be "first", "last" or "none", got {keep!r}')
        if keep not in ("first", "last", "none"):
            raise ValueError(f'keep must be "first", "last" or "none", got {keep!r}')
        self.inputs = (child,)
        self.schema = child.schema
        self.given = fb._key_list(subset, "subset")
        fb._core.check_keys(child.schema, self.given or None)
        self.subset = self.given or list(child.schema.names)
        self.keep = keep
        self.may_spill = True

    def label(self) -> str:
        how = "streaming" if self.keep == "first" else "whole input"
        return f"dedup {self.subset} keep={self.keep!r} ({how})"

    def needs(self, out: set[str]) -> list[set[str]]:
        return [set(out) | set(self.subset)]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        return ("dedup", self.label(), inner, self.given or None, self.keep)


class _Join(_Node):
    """A join on the executor: one side is built once (the right one; the left one for a
    right join, so that the output follows the right order) and the other side's batches
    probe it in parallel as they arrive. An outer join's unmatched right rows come last."""

    kernel = True
    may_spill = True

    def __init__(self, left: _Node, right: _Node, on: Any, kw: dict[str, Any]) -> None:
        self.inputs = (left, right)
        self.on, self.kw = on, kw
        self.keys = fb._join_args(
            kw["how"], on, kw["left_on"], kw["right_on"], kw["suffix"], kw["nulls_equal"]
        )
        # The output schema and where each output column comes from, computed in Rust from
        # the two schemas (with the checks `fb.join` makes).
        schema, origins = fb._core.join_layout(
            left.schema, right.schema, *self.keys, kw["how"], kw["suffix"]
        )
        self.schema = schema
        self.origin: dict[str, tuple[int, str]] = dict(
            zip(schema.names, [(side, col) for side, col in origins], strict=True)
        )

    def label(self) -> str:
        return (
            f"join {self.kw['how']} on={self.on!r}"
            if self.on is not None
            else (
                f"join {self.kw['how']} left_on={self.kw['left_on']!r} "
                f"right_on={self.kw['right_on']!r}"
            )
        )

    def needs(self, out: set[str]) -> list[set[str]]:
        left, right = set(self.keys[0]), set(self.keys[1])
        for name in out:
            side, col = self.origin[name]
            (left if side == 0 else right).add(col)
        # A needed right column named like a left column keeps that column, so that the
        # suffix it gets stays the same.
        left |= right & set(self.inputs[0].schema.names)
        return [left, right]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        left, right = inner
        lcols, rcols = (_needed(n, plan) for n in self.inputs)
        lo, ro = self.keys
        kw = self.kw
        return ("join", self.label(), left, right, lcols, rcols, list(lo), list(ro), kw["how"],
                kw["suffix"], kw["nulls_equal"])  # fmt: skip


def _needed(node: _Node, plan: _Plan) -> list[str]:
    """The columns of `node`'s batches that its consumers need, in schema order (batches
    carry at least these)."""
    need = plan.need.get(id(node), set())
    return [c for c in node.schema.names if c in need]


def _select(schema: pa.Schema, names: list[str]) -> pa.Schema:
    return pa.schema([schema.field(c) for c in names])


ExpectationError = fb._core.ExpectationError


class _Expect(_Node):
    """Checks over the whole stream, raised at its end (before any sink commits)."""

    def __init__(
        self,
        child: _Node,
        min_rows: int | None,
        max_rows: int | None,
        not_null: Sequence[str],
        unique: Sequence[str],
    ) -> None:
        min_rows, max_rows = (
            None if v is None else fb._int_arg(v, name)
            for name, v in (("min_rows", min_rows), ("max_rows", max_rows))
        )
        self.not_null = fb._key_list(list(not_null), "not_null")
        self.unique = fb._key_list(list(unique), "unique")
        for c in [*self.not_null, *self.unique]:
            if c not in child.schema.names:
                raise KeyError(f"expect: column {c!r} is not among {child.schema.names}")
        self.inputs = (child,)
        self.schema = child.schema
        self.min_rows, self.max_rows = min_rows, max_rows

    def label(self) -> str:
        parts = [f"{k}={v!r}" for k, v in (("min_rows", self.min_rows),
                 ("max_rows", self.max_rows), ("not_null", self.not_null),
                 ("unique", self.unique)) if v]  # fmt: skip
        return f"expect {' '.join(parts)}"

    def needs(self, out: set[str]) -> list[set[str]]:
        return [set(out) | set(self.not_null) | set(self.unique)]

    def lower(self, plan: _Plan, inner: tuple) -> tuple:
        return ("expect", self.label(), inner, self.min_rows, self.max_rows, self.not_null,
                self.unique)  # fmt: skip


class Pipeline:
    """An immutable, lazy batch plan; see the module docs."""

    def __init__(self, node: _Node) -> None:
        self._node = node
        self.last_report: Report | None = None

    @property
    def schema(self) -> pa.Schema:
        """The schema of the pipeline's output."""
        return self._node.schema

    def _then(self, node: _Node) -> Pipeline:
        return Pipeline(node)

    # -- streaming stages --------------------------------------------------------------------

    def filter(self, expr: pc.Expression) -> Pipeline:
        """Keep the rows where `expr` is true."""
        return self._then(_Filter(self._node, expr))

    def select(self, columns: str | Sequence[str] | dict[str, Any]) -> Pipeline:
        """Keep (and order) columns: a name, a list, or ``{new_name: name_or_expr}``."""
        return self._then(_Project(self._node, columns))

    def rename(self, mapping: dict[str, str]) -> Pipeline:
        """Rename columns ``{old: new}``."""
        if not isinstance(mapping, dict):
            raise TypeError(f"rename takes a dict {{old: new}}, got {type(mapping).__name__}")
        for old in mapping:
            if old not in self.schema.names:
                raise KeyError(f"cannot rename {old!r}: not among {self.schema.names}")
        cols = {mapping.get(n, n): pc.field(n) for n in self.schema.names}
        if len(cols) != len(self.schema.names):
            raise ValueError(f"rename {mapping} makes two columns share a name")
        return self._then(_Project(self._node, cols, label=f"rename {mapping}"))

    def with_columns(self, **exprs: Any) -> Pipeline:
        """Add or replace columns: new names appended, existing ones replaced in place,
        scalars repeated on every row."""
        cols: dict[str, Any] = {n: pc.field(n) for n in self.schema.names}
        for name, e in exprs.items():
            cols[name] = e if isinstance(e, pc.Expression) else pc.scalar(e)
        return self._then(_Project(self._node, cols, label=f"with_columns {sorted(exprs)}"))

    def map_batches(self, fn: Callable[[pa.RecordBatch], Any]) -> Pipeline:
        """Apply `fn` to every batch (it returns a batch, a table or any table-like)."""
        if not callable(fn):
            raise TypeError(f"map_batches takes a callable, got {type(fn).__name__}")
        return self._then(_MapBatches(self._node, fn))

    def head(self, n: int) -> Pipeline:
        """The first `n` rows (after a sort: its top `n`, memory O(n))."""
        n = fb._int_arg(n, "head n")
        node = self._node
        if isinstance(node, _Sort):
            limit = n if node.limit is None else min(n, node.limit)
            return self._then(_Sort(node.inputs[0], node.by, node.desc, node.nulls_last, limit))
        return self._then(_Head(node, n))

    # -- kernels -----------------------------------------------------------------------------

    def group_by(
        self,
        keys: str | Sequence[str],
        aggs: dict[str, Any],
        *,
        dropna: bool = False,
        sort: bool = False,
    ) -> Pipeline:
        """Streaming group-by (state per group): :func:`ferrobatch.group_by`'s semantics."""
        return self._then(_GroupBy(self._node, keys, aggs, dropna, sort))

    def sort(
        self,
        by: str | Sequence[str],
        *,
        descending: bool | Sequence[bool] = False,
        nulls_last: bool | Sequence[bool] = True,
        limit: int | None = None,
    ) -> Pipeline:
        """:func:`ferrobatch.sort` of the whole input; with `limit`, a running top-k."""
        return self._then(_Sort(self._node, by, descending, nulls_last, limit))

    def dedup(self, subset: str | Sequence[str] | None = None, *, keep: str = "first") -> Pipeline:
        """:func:`ferrobatch.dedup`. ``keep="first"`` streams with state per distinct key;
        ``"last"`` / ``"none"`` materialize the input."""
        return self._then(_Dedup(self._node, subset, keep))

    def join(
        self,
        other: Pipeline | Any,
        on: str | Sequence[str] | None = None,
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        how: str = "inner",
        suffix: str = "_right",
        nulls_equal: bool = False,
    ) -> Pipeline:
        """:func:`ferrobatch.join` with `other` (a Pipeline or a table-like)."""
        right = other if isinstance(other, Pipeline) else scan(other)
        kw = {"left_on": left_on, "right_on": right_on, "how": how, "suffix": suffix,
              "nulls_equal": nulls_equal}  # fmt: skip
        return self._then(_Join(self._node, right._node, on, kw))

    def expect(
        self,
        *,
        min_rows: int | None = None,
        max_rows: int | None = None,
        not_null: Sequence[str] = (),
        unique: Sequence[str] = (),
    ) -> Pipeline:
        """Checks that fail the run with :class:`ExpectationError` (saying which check failed on
        how many rows) before any output is written."""
        return self._then(_Expect(self._node, min_rows, max_rows, not_null, unique))

    # -- sinks -------------------------------------------------------------------------------

    def _run(
        self,
        progress: bool = False,
        collecting: bool = False,
        memory_limit: Any = None,
        output_bytes: int = 0,
    ) -> tuple[_Run, Iterator[pa.RecordBatch]]:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        run = _Run(output_bytes=output_bytes)
        if memory_limit is not None:
            run.memory_limit = fb._size(memory_limit, "memory_limit", fb._machine_memory)
        if collecting and not progress:
            run.collecting = id(self._node)
        plan = _plan(self._node)
        it = _run_lowered(self._node, run, plan)
        if not progress:
            return run, it
        from tqdm.auto import tqdm

        rows = _input_rows(self._node, _with_sources(plan, self._node))
        run.progress = tqdm(total=rows, unit=" rows", unit_scale=True, desc="ferrobatch")

        def closing() -> Iterator[pa.RecordBatch]:
            try:
                yield from it
            finally:
                run.progress.close()

        return run, closing()

    def to_batches(self, *, memory_limit: int | str | None = None) -> pa.RecordBatchReader:
        """The result as a stream of record batches, produced as they are read.
        `memory_limit`: this run's own limit, as :meth:`collect`'s."""
        run, it = self._run(memory_limit=memory_limit)
        schema = self.schema

        def gen() -> Iterator[pa.RecordBatch]:
            yield from it
            self.last_report = run.report()

        return pa.RecordBatchReader.from_batches(schema, gen())

    def collect(
        self,
        *,
        progress: bool = False,
        engine: str = "local",
        memory_limit: int | str | None = None,
    ) -> pa.Table:
        """The result as one ``pyarrow.Table``; ``progress=True`` shows a bar over input rows.
        ``engine="dask"`` runs it on the current Dask client (see :meth:`to_dask`; row order
        then as :mod:`ferrobatch.dask` gives it). `memory_limit` (bytes, ``"4GiB"``,
        ``"50%"``): what this run's operators may hold, besides the process-wide
        :func:`ferrobatch.set_memory_limit`; sort spills to the temp directory past it. The
        collected table itself is the caller's and is not counted."""
        if engine == "dask":
            if memory_limit is not None:
                raise ValueError("memory_limit applies to the local executor; set the "
                                 "workers' limit with ferrobatch.dask.setup")  # fmt: skip
            if progress:
                raise ValueError("progress=True shows the local executor's progress; "
                                 "follow a Dask run on its dashboard")  # fmt: skip
            frame = self.to_dask().compute()
            schema = _unview_schema(self.schema)
            return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).cast(
                self.schema
            )
        if engine != "local":
            raise ValueError(f'engine must be "local" or "dask", got {engine!r}')
        run, it = self._run(progress, collecting=True, memory_limit=memory_limit)
        out = pa.Table.from_batches(list(it), schema=self.schema)
        self.last_report = run.report()
        return out

    def to_dask(self, *, partition_rows: int = 1 << 20) -> Any:
        """The pipeline as a lazy Dask DataFrame (needs ``ferrobatch[dask]``): one task per
        input file (per run of row groups of about ``partition_rows`` rows of a Parquet
        file; per dataset fragment; per ``partition_rows`` rows of an in-memory table) runs
        the streaming stages with the local executor, and the kernels run as
        :mod:`ferrobatch.dask`'s. View columns come as their large layouts."""
        import ferrobatch.dask

        rows = fb._int_arg(partition_rows, "partition_rows", minimum=1)
        return ferrobatch.dask.pipeline_to_dask(self, rows)

    def __dask_tokenize__(self) -> str:
        """A deterministic token for Dask, equal for equal plans (also across processes and
        pickle round trips): every stage's kind and arguments, expressions in their
        serialized form, a table source by its data, a file by its name, size and
        modification time."""
        from dask.base import tokenize

        return tokenize(_token_parts(self._node))

    def to_pandas(self, *, progress: bool = False, memory_limit: int | str | None = None) -> Any:
        """The result as a ``pandas.DataFrame``."""
        return self.collect(progress=progress, memory_limit=memory_limit).to_pandas()

    def write_parquet(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        progress: bool = False,
        compression: str = "snappy",
        row_group_size: int = 1 << 20,
        memory_limit: int | str | None = None,
    ) -> Report:
        """Write Parquet atomically (see :meth:`_write`), encoded by arrow-rs with every
        column chunk of a row group in parallel. `compression`: ``"snappy"`` (default),
        ``"zstd"``, ``"lz4"``, ``"gzip"``, ``"brotli"`` or ``"none"``; `row_group_size`:
        rows per row group (the last one may be shorter); `memory_limit`: as
        :meth:`collect`'s."""
        if not isinstance(compression, str):
            raise TypeError(f"compression must be a str, got {type(compression).__name__}")
        if not isinstance(row_group_size, int) or isinstance(row_group_size, bool):
            raise TypeError(f"row_group_size must be an int, got {type(row_group_size).__name__}")
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be at least 1, got {row_group_size}")
        # Under a memory limit the writer buffers at most a quarter of it before encoding.
        limit = (
            fb.get_memory_limit()
            if memory_limit is None
            else fb._size(memory_limit, "memory_limit", fb._machine_memory)
        )
        flush = None if limit is None else max(1 << 20, limit // 4)
        return self._write(
            path,
            overwrite,
            progress,
            lambda f, schema: fb._core.ParquetWriter(
                f.fileno(), schema, compression, row_group_size, flush
            ),
            memory_limit,
            # The rows the writer buffers are held from the budget.
            output_bytes=0 if flush is None else flush,
        )

    def write_ipc(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        progress: bool = False,
        memory_limit: int | str | None = None,
    ) -> Report:
        """Write an Arrow IPC (Feather v2) file atomically."""
        return self._write(
            path, overwrite, progress, lambda f, s: pa.ipc.new_file(f, s), memory_limit
        )

    def write_csv(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        progress: bool = False,
        memory_limit: int | str | None = None,
    ) -> Report:
        """Write CSV atomically."""
        import pyarrow.csv as pacsv

        return self._write(
            path, overwrite, progress, lambda f, s: pacsv.CSVWriter(f, s), memory_limit
        )

    def _write(
        self,
        path: str | os.PathLike,
        overwrite: bool,
        progress: bool,
        open_writer: Callable,
        memory_limit: Any = None,
        output_bytes: int = 0,
    ) -> Report:
        """Stream the result into an unnamed file in `path`'s folder, fsync it and link it into
        place (:func:`_atomic_output`): a failed, interrupted (Ctrl-C) or killed run, or one
        whose expectations fail, leaves no file behind and an existing `path` untouched.
        `overwrite=False` refuses an existing `path`."""
        path = os.fspath(path)
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it")
        if memory_limit is not None:
            fb._size(memory_limit, "memory_limit", fb._machine_memory)
        with _atomic_output(path, overwrite) as f:
            run, it = self._run(progress, memory_limit=memory_limit, output_bytes=output_bytes)
            writer = open_writer(f, self.schema)
            try:
                for batch in it:
                    writer.write_batch(batch)
            finally:
                writer.close()
        self.last_report = run.report()
        return self.last_report

    def explain(self) -> str:
        """The plan, one stage per line (source last), with pushed-down columns and filters."""
        plan = _with_sources(_plan(self._node), self._node)
        lines: list[str] = []

        shown: set[int] = set()

        def walk(node: _Node, depth: int) -> None:
            text = node.label()
            if id(node) in shown:  # a shared sub-plan, printed in full where first met
                lines.append("  " * depth + text + " (shared sub-plan, as above)")
                return
            shown.add(id(node))
            if id(node) in plan.reuse:
                text += " (shared: runs once)"
            if node.may_spill:
                text += " (may spill)"
            if isinstance(node, _Scan):
                text += f"\n{'  ' * (depth + 1)}columns: {plan.columns[id(node)]}"
                pushed = plan.filters.get(id(node), [])
                if pushed:
                    text += f"\n{'  ' * (depth + 1)}pushed filter: {' and '.join(map(str, pushed))}"
                note = plan.sources[id(node)][2]
                if note:
                    text += f"\n{'  ' * (depth + 1)}reads: {note}"
            if id(node) in plan.pushed:
                text += " (pushed into the scan)"
            exprs = _node_expressions(node)
            if exprs:
                schema = _unview_schema(node.inputs[0].schema)
                names = sorted({f for e in exprs for f in _Expr.of(e).fallbacks(schema)})
                if names:
                    text += f" (evaluated by pyarrow: {', '.join(names)})"
            lines.append("  " * depth + text)
            for child in node.inputs:
                walk(child, depth + 1)

        walk(self._node, 0)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<ferrobatch.Pipeline\n{self.explain()}>"


def _token_parts(node: _Node) -> tuple:
    """What identifies `node`'s plan (see :meth:`Pipeline.__dask_tokenize__`)."""
    import hashlib
    import pickle

    def norm(v: Any) -> Any:
        if isinstance(v, pc.Expression):
            return ("expr", pickle.dumps(v))
        if isinstance(v, dict):
            return ("dict", tuple((norm(k), norm(x)) for k, x in v.items()))
        if isinstance(v, list | tuple):
            return ("seq", tuple(norm(x) for x in v))
        if callable(v):
            import cloudpickle

            return ("fn", cloudpickle.dumps(v))
        return v

    skip = {"inputs", "schema", "data", "used", "desc", "files", "origin"}
    attrs = tuple((k, norm(v)) for k, v in sorted(vars(node).items()) if k not in skip)
    source: Any = None
    if isinstance(node, _Scan):
        if node.files is not None:
            stats = [os.stat(f) for f in node.files]
            source = tuple(
                (f, s.st_size, s.st_mtime_ns) for f, s in zip(node.files, stats, strict=True)
            )
        elif isinstance(node.data, pa.RecordBatchReader):
            raise TypeError("a pipeline over a RecordBatchReader (one pass) cannot be tokenized")
        elif isinstance(node.data, ds.InMemoryDataset):
            # The data itself (Dask's own token of a table ignores slice offsets).
            source = hashlib.sha256(fb._ipc_bytes(node.data.to_table())).hexdigest()
        else:
            source = tuple(
                f.path if hasattr(f, "path") else repr(f) for f in node.data.get_fragments()
            )
        source = (source, str(node.schema))
    return (type(node).__name__, attrs, source, tuple(_token_parts(i) for i in node.inputs))


def _node_expressions(node: _Node) -> list[pc.Expression]:
    """The expressions a filter or a projection evaluates (bare column references aside)."""
    if isinstance(node, _Filter):
        return [node.expr]
    if isinstance(node, _Project):
        schema = node.inputs[0].schema
        return [e for e in node.exprs.values() if _field_name(e, schema) is None]
    return []


@dataclass
class Report:
    """What a run did: per stage (output first) rows in / out, batches and its own seconds
    (inputs' time excluded); the run's wall seconds and peak resident memory."""

    stages: list[StageStats]
    seconds: float
    peak_rss_mb: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "stages": [dict(s.__dict__) for s in self.stages],
        }

    def to_json(self) -> str:
        """One JSON line (for tracking job durations over time)."""
        import json

        return json.dumps(self.to_dict())

    def __str__(self) -> str:
        w = max([len(s.stage) for s in self.stages] + [5])
        w = min(w, 60)
        lines = [
            f"{'stage':<{w}}  {'rows in':>12}  {'rows out':>12}  {'batches':>8}  {'seconds':>8}"
        ]
        for s in self.stages:
            name = s.stage if len(s.stage) <= w else s.stage[: w - 3] + "..."
            counts = f"{s.rows_in:>12,}  {s.rows_out:>12,}  {s.batches:>8,}"
            lines.append(f"{name:<{w}}  {counts}  {s.seconds:>8.3f}")
        lines.append(f"total {self.seconds:.3f} s, peak RSS {self.peak_rss_mb:,.0f} MB")
        return "\n".join(lines)


def _input_rows(root: _Node, plan: _Plan) -> int | None:
    """Rows the scans will read, when their metadata says so without reading (in-memory
    tables; Parquet footers, after row-group pruning)."""
    rows = [plan.sources[id(n)][1] for n in _topo(root) if isinstance(n, _Scan)]
    return None if None in rows else sum(rows)  # type: ignore[arg-type]


_TMP_SUFFIX = ".ferrobatch-tmp"
_USE_O_TMPFILE = hasattr(os, "O_TMPFILE")


@contextmanager
def _atomic_output(path: str, overwrite: bool) -> Iterator[Any]:
    """A binary file object whose content becomes `path` when the block succeeds, and
    nothing at all otherwise.

    On Linux the file is unnamed (``O_TMPFILE``) and linked into place at the end, so even a
    SIGKILL leaves nothing in the folder. Elsewhere (or on a filesystem without unnamed files)
    it is a hidden sibling ``.<name>.<pid>.<random>.ferrobatch-tmp``, and the temporaries of
    processes that no longer run are swept from the folder on the next write there. Either
    way the file gets the mode a plain ``open(path, "wb")`` gives under the umask.
    """
    import secrets

    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, named = -1, None
    if _USE_O_TMPFILE:
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except OSError:
            fd = -1  # the filesystem has no unnamed files: use a named temporary
    if fd < 0:
        _sweep_temporaries(folder)
        named = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        fd = os.open(named, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    linked = None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if named is None:
                # Link the unnamed file in: straight to `path` (which fails if it appeared
                # meanwhile) or, to replace it, under a temporary name renamed over it.
                linked = (
                    path
                    if not overwrite
                    else os.path.join(
                        folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
                    )
                )
                _link_unnamed(f.fileno(), linked)
        if named is not None:
            os.replace(named, path)
        elif linked != path:
            os.replace(linked, path)
    except BaseException:
        for leftover in (named, linked if linked != path else None):
            if leftover is not None and os.path.exists(leftover):
                os.unlink(leftover)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _link_unnamed(fd: int, path: str) -> None:
    """``linkat(AT_FDCWD, "/proc/self/fd/<fd>", AT_FDCWD, path, AT_SYMLINK_FOLLOW)``: give the
    unnamed file `fd` the name `path` (open(2)'s recipe for ``O_TMPFILE``). A directory fd
    is passed only because CPython calls plain ``link`` (which would link the /proc symlink
    itself) unless one is."""
    dfd = os.open("/", os.O_RDONLY)
    try:
        os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


def _sweep_temporaries(folder: str) -> None:
    """Remove our temporaries in `folder` left by processes that no longer run (killed)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(".") and name.endswith(_TMP_SUFFIX)):
            continue
        parts = name[: -len(_TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running: its file is in use
        except ProcessLookupError:
            pass
        except OSError:
            continue  # another user's process, alive
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def scan(
    source: Any, *, batch_size: int | None = None, columns: Sequence[str] | None = None
) -> Pipeline:
    """Start a pipeline over a table-like, a reader, a path / glob / list of paths / directory of
    Parquet, Arrow IPC / Feather or CSV files, or a ``pyarrow.dataset.Dataset``."""
    if batch_size is not None:
        # pyarrow's scanner takes an int64 batch size; past 2**31 rows a batch is a table.
        batch_size = min(fb._int_arg(batch_size, "batch_size", minimum=1), 2**31 - 1)
    return Pipeline(_Scan(source, batch_size, list(columns) if columns is not None else None))
