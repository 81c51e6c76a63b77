//! Python bindings: argument conversion, GIL release, and the one place where
//! [`crate::Error`] becomes a Python exception. No kernel logic lives here.

mod convert;
mod exec;

use pyo3::exceptions::{
    PyKeyError, PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError,
};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3_arrow::input::AnyRecordBatch;

use crate::budget;
use crate::dedup::Keep;
use crate::error::Error;
use crate::group_by::{AggFn, AggSpec, GroupByOptions, Param};
use crate::join::{JoinOptions, JoinType, Validate};
use crate::pool;
use crate::sort::SortKey;
use convert::{StrOrList, bool_list, table_in, table_out};

pyo3::create_exception!(
    ferrobatch,
    ExpectationError,
    pyo3::exceptions::PyValueError,
    "A pipeline's ``expect`` check failed; nothing was written."
);

pyo3::create_exception!(
    ferrobatch,
    MemoryLimitError,
    pyo3::exceptions::PyMemoryError,
    "The work cannot finish within the memory limit (``set_memory_limit``)."
);

/// The mapping of core errors to Python exceptions.
fn to_py(e: Error) -> PyErr {
    match e {
        Error::ColumnNotFound(m) => PyKeyError::new_err(m),
        Error::Type(m) => PyTypeError::new_err(m),
        Error::Value(m) => PyValueError::new_err(m),
        Error::Arrow(e) => PyValueError::new_err(e.to_string()),
        Error::OutOfMemory(m) => PyMemoryError::new_err(format!("ferrobatch: out of memory: {m}")),
        Error::Interrupted => PyKeyboardInterrupt::new_err("ferrobatch: interrupted"),
        Error::Expectation(m) => ExpectationError::new_err(m),
        Error::MemoryLimit(m) => MemoryLimitError::new_err(m),
        Error::TempSpace(m) => pyo3::exceptions::PyOSError::new_err(m),
    }
}

/// Run a kernel without the GIL, inside the ferrobatch pool; a panic (a bug) becomes a
/// `RuntimeError` rather than pyo3's `PanicException`, which is not an `Exception`.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    py.detach(|| guarded(f))
}

/// How often a waiting caller looks for a pending Ctrl-C.
const SIGNAL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs Python's signal handlers (`check_signals`, as Polars does) on the thread that waits
/// for kernels, every [`SIGNAL_POLL`]. The period runs across calls: a caller that makes
/// many calls shorter than the period one after the other (an operator's waves) still polls
/// at the start of the first call due, not never. A `KeyboardInterrupt` (or whatever a
/// handler raised) is kept, the kernel running is interrupted ([`crate::cancel`]), and the
/// call returns [`Error::Interrupted`] once it has stopped — even when it finished first, so
/// a signal cannot be lowered unseen. Each poll also keeps the allocator's freed pages
/// within the budget ([`give_back_past_the_cap`]).
struct Signals {
    polled: std::cell::Cell<std::time::Instant>,
    seen: std::cell::RefCell<Option<PyErr>>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            polled: std::cell::Cell::new(std::time::Instant::now()),
            seen: Default::default(),
        }
    }

    /// The handlers run if a period has passed since they last did; how long until the next.
    /// `running`: a call is in progress, to interrupt when a handler raises.
    fn tick(&self, running: bool) -> std::time::Duration {
        let since = self.polled.get().elapsed();
        if since < SIGNAL_POLL {
            return SIGNAL_POLL - since;
        }
        self.polled.set(std::time::Instant::now());
        give_back_past_the_cap();
        if self.seen.borrow().is_none()
            && let Err(e) = Python::attach(|py| py.check_signals())
        {
            if running {
                crate::cancel::interrupt();
            }
            *self.seen.borrow_mut() = Some(e);
        }
        SIGNAL_POLL
    }

    /// `f` on the pool ([`pool::install_watched`]), watched.
    fn install<T: Send>(&self, f: impl FnOnce() -> crate::Result<T> + Send) -> crate::Result<T> {
        self.tick(false);
        if self.seen.borrow().is_some() {
            return Err(Error::Interrupted);
        }
        let out = pool::install_watched(f, || self.tick(true));
        give_back_past_the_cap();
        match self.seen.borrow().is_some() {
            true => Err(Error::Interrupted),
            false => out,
        }
    }

    /// What a handler raised, if one did.
    fn take(&self) -> Option<PyErr> {
        self.seen.take()
    }
}

/// The body of [`run`] for callers that already released the GIL: `f` on the pool, the
/// calling thread polling for Ctrl-C ([`Signals`]); a `KeyboardInterrupt` is raised once
/// the kernel has stopped.
fn guarded<T: Send>(f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    let signals = Signals::new();
    let out = caught(|| signals.install(f));
    if let Some(e) = signals.take() {
        return Err(e);
    }
    out
}

/// `f()`, a panic in it (a bug) turned into a `RuntimeError`: pyo3's `PanicException` is
/// not an `Exception`.
fn caught<T>(f: impl FnOnce() -> crate::Result<T>) -> PyResult<T> {
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    out.map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        PyRuntimeError::new_err(format!("ferrobatch internal error (please report): {msg}"))
    })?
    .map_err(to_py)
}

fn sort_keys(
    by: StrOrList,
    descending: &Bound<'_, PyAny>,
    nulls_last: &Bound<'_, PyAny>,
) -> PyResult<Vec<SortKey>> {
    let by = by.into_vec();
    let desc = bool_list(descending, by.len(), "descending")?;
    let nl = bool_list(nulls_last, by.len(), "nulls_last")?;
    Ok(by
        .into_iter()
        .zip(desc)
        .zip(nl)
        .map(|((column, descending), nulls_last)| SortKey {
            column,
            descending,
            nulls_last,
        })
        .collect())
}

/// What a whole-table kernel over `tables` with `keys` key columns reserves first.
fn whole_table_need(tables: &[&crate::Table], keys: usize) -> u64 {
    let bytes = tables.iter().map(|t| budget::table_bytes(t)).sum();
    let rows = tables.iter().map(|t| t.num_rows() as u64).sum();
    budget::kernel_estimate(bytes, rows, keys)
}

/// What a whole-table dedup on `subset` (default: every column) reserves first.
fn dedup_need(table: &crate::Table, subset: Option<&[String]>) -> u64 {
    let keys = subset.map_or(table.schema.fields().len(), <[String]>::len);
    whole_table_need(&[table], keys)
}

fn check_limit(limit: Option<i64>) -> PyResult<Option<usize>> {
    match limit {
        Some(k) if k < 0 => Err(PyValueError::new_err(format!(
            "limit must be >= 0, got {k}"
        ))),
        Some(k) => Ok(Some(k as usize)),
        None => Ok(None),
    }
}

/// Check a sort's arguments against a schema (names, key types, per-key flags) without
/// data: the pipeline's sort, checked when it is built.
#[pyfunction]
fn check_sort(
    schema: pyo3_arrow::PySchema,
    by: StrOrList,
    descending: &Bound<'_, PyAny>,
    nulls_last: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let keys = sort_keys(by, descending, nulls_last)?;
    if keys.is_empty() {
        return Err(to_py(Error::Value(
            "sort needs at least one key column".into(),
        )));
    }
    let names: Vec<String> = keys.into_iter().map(|k| k.column).collect();
    crate::keys::key_positions(&schema.into_inner(), &names).map_err(to_py)?;
    Ok(())
}

/// Check that `names` are key columns of `schema` (each present once, of a key type);
/// `None`: every column is a key (by position).
#[pyfunction]
#[pyo3(signature = (schema, names))]
fn check_keys(schema: pyo3_arrow::PySchema, names: Option<Vec<String>>) -> PyResult<()> {
    let schema = schema.into_inner();
    match names {
        Some(names) => crate::keys::key_positions(&schema, &names).map(|_| ()),
        None => schema
            .fields()
            .iter()
            .try_for_each(|f| crate::keys::check_key_type(f.name(), f.data_type())),
    }
    .map_err(to_py)
}

#[pyfunction]
#[pyo3(signature = (data, by, descending, nulls_last, limit))]
fn sort<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    by: StrOrList,
    descending: &Bound<'py, PyAny>,
    nulls_last: &Bound<'py, PyAny>,
    limit: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let keys = sort_keys(by, descending, nulls_last)?;
    let limit = check_limit(limit)?;
    let table = table_in(data)?;
    let need = whole_table_need(&[&table], keys.len());
    let out = run(py, || {
        budget::within("sort", need, || crate::sort::sort(&table, &keys, limit))
    })?;
    table_out(py, out)
}

#[pyfunction]
#[pyo3(signature = (data, by, descending, nulls_last, limit))]
fn sort_indices<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    by: StrOrList,
    descending: &Bound<'py, PyAny>,
    nulls_last: &Bound<'py, PyAny>,
    limit: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let keys = sort_keys(by, descending, nulls_last)?;
    let limit = check_limit(limit)?;
    let table = table_in(data)?;
    let need = whole_table_need(&[&table], keys.len());
    let idx = run(py, || {
        budget::within("sort", need, || {
            crate::sort::sort_indices(&table, &keys, limit)
        })
    })?;
    convert::indices_out(py, idx)
}

fn parse_keep(keep: &str) -> PyResult<Keep> {
    keep.parse::<Keep>().map_err(to_py)
}

#[pyfunction]
#[pyo3(signature = (data, subset, keep))]
fn dedup<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    subset: Option<StrOrList>,
    keep: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let keep = parse_keep(keep)?;
    let subset = subset.map(StrOrList::into_vec);
    let table = table_in(data)?;
    let need = dedup_need(&table, subset.as_deref());
    let out = run(py, || {
        budget::within("dedup", need, || {
            crate::dedup::dedup(&table, subset.as_deref(), keep)
        })
    })?;
    table_out(py, out)
}

#[pyfunction]
#[pyo3(signature = (data, subset, keep))]
fn dedup_indices<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    subset: Option<StrOrList>,
    keep: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let keep = parse_keep(keep)?;
    let subset = subset.map(StrOrList::into_vec);
    let table = table_in(data)?;
    let need = dedup_need(&table, subset.as_deref());
    let idx = run(py, || {
        budget::within("dedup", need, || {
            crate::dedup::dedup_indices(&table, subset.as_deref(), keep)
        })
    })?;
    convert::indices_out(py, idx)
}

/// An aggregate's parameter: an int, a float or a column name.
fn agg_param(p: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Param>> {
    use pyo3::types::{PyBool, PyFloat, PyInt, PyString};
    let Some(p) = p.filter(|p| !p.is_none()) else {
        return Ok(None);
    };
    if p.cast::<PyBool>().is_ok() {
        return Err(PyTypeError::new_err(format!(
            "an aggregate parameter must be a number or a column name, got {p}"
        )));
    }
    if p.cast::<PyInt>().is_ok() {
        // Past int64 a k means "all" and a q is out of range either way: clamp, not overflow.
        let v = p.extract::<i64>().unwrap_or_else(|_| {
            if p.lt(0i64).unwrap_or(false) {
                i64::MIN
            } else {
                i64::MAX
            }
        });
        return Ok(Some(Param::Int(v)));
    }
    if p.cast::<PyFloat>().is_ok() {
        return Ok(Some(Param::Float(p.extract()?)));
    }
    if let Ok(s) = p.cast::<PyString>() {
        return Ok(Some(Param::Str(s.to_str()?.to_owned())));
    }
    Err(PyTypeError::new_err(format!(
        "an aggregate parameter must be a number or a column name, got {}",
        p.get_type().name()?
    )))
}

/// One aggregate as `(output name, column or None, function, parameter or None)`.
type AggTuple<'py> = (String, Option<String>, String, Option<Bound<'py, PyAny>>);

fn group_by_options(
    keys: StrOrList,
    aggs: Vec<AggTuple<'_>>,
    dropna: bool,
    sort: bool,
) -> PyResult<GroupByOptions> {
    let aggs = aggs
        .into_iter()
        .map(|(name, column, func, param)| {
            let func = AggFn::parse(&func, agg_param(param.as_ref())?).map_err(to_py)?;
            Ok(AggSpec { name, column, func })
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(GroupByOptions {
        keys: keys.into_vec(),
        aggs,
        dropna,
        sort,
    })
}

#[pyfunction]
#[pyo3(signature = (data, keys, aggs, dropna, sort))]
fn group_by<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    keys: StrOrList,
    aggs: Vec<AggTuple<'py>>,
    dropna: bool,
    sort: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = group_by_options(keys, aggs, dropna, sort)?;
    let table = table_in(data)?;
    let need = whole_table_need(&[&table], opts.keys.len());
    let out = run(py, || {
        budget::within("group_by", need, || {
            crate::group_by::group_by(&table, &opts)
        })
    })?;
    table_out(py, out)
}

/// The output schema of `group_by` over data of `schema`, computed from the schema and the
/// aggregates alone (checked as `group_by` checks them).
#[pyfunction]
#[pyo3(signature = (schema, keys, aggs, dropna, sort))]
fn group_by_schema<'py>(
    py: Python<'py>,
    schema: pyo3_arrow::PySchema,
    keys: StrOrList,
    aggs: Vec<AggTuple<'py>>,
    dropna: bool,
    sort: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = group_by_options(keys, aggs, dropna, sort)?;
    let out = crate::group_by::output_schema(&schema.into_inner(), &opts).map_err(to_py)?;
    pyo3_arrow::PySchema::new(out).into_pyarrow(py)
}

/// Streaming group-by state ([`crate::group_by::stream::GroupByState`]); `None` once merged
/// into another state or finished. Shared between Python threads, its calls are serialized
/// by the mutex (taken without the GIL, so a waiting thread never blocks the one working).
#[pyclass(module = "ferrobatch._core", frozen)]
struct GroupByState(Mutex<Option<crate::group_by::stream::GroupByState>>);

type StateSlot = Option<crate::group_by::stream::GroupByState>;

impl GroupByState {
    /// Run `f` on the state, without the GIL, once no other thread uses it. The lock is
    /// taken on the calling thread, outside the pool: a pool thread waiting for it could
    /// otherwise be the one the holder's parallel work needs.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut StateSlot) -> crate::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut slot = self.0.lock().map_err(|_| Self::poisoned())?;
            let slot: &mut StateSlot = &mut slot;
            guarded(|| f(slot))
        })
    }

    fn poisoned() -> PyErr {
        PyValueError::new_err(
            "this group-by state is unusable: an earlier call on it failed internally",
        )
    }

    fn gone() -> Error {
        Error::Value("this group-by state was already finished or merged".into())
    }
}

#[pymethods]
impl GroupByState {
    /// A new state, or with `state` one holding those tables, which `export_state` made
    /// from a state of the same arguments.
    #[new]
    #[pyo3(signature = (schema, keys, aggs, dropna, sort, state=None))]
    fn new(
        py: Python<'_>,
        schema: pyo3_arrow::PySchema,
        keys: StrOrList,
        aggs: Vec<AggTuple<'_>>,
        dropna: bool,
        sort: bool,
        state: Option<Vec<AnyRecordBatch>>,
    ) -> PyResult<Self> {
        let opts = group_by_options(keys, aggs, dropna, sort)?;
        let schema = schema.into_inner();
        let tables = state
            .map(|ts| ts.into_iter().map(table_in).collect::<PyResult<Vec<_>>>())
            .transpose()?;
        let st = run(py, || match tables {
            Some(ts) => crate::group_by::stream::GroupByState::import(schema, opts, ts),
            None => crate::group_by::stream::GroupByState::new(schema, opts),
        })?;
        Ok(GroupByState(Mutex::new(Some(st))))
    }

    fn absorb(&self, py: Python<'_>, data: AnyRecordBatch) -> PyResult<()> {
        let table = table_in(data)?;
        self.with(py, |slot| {
            let st = slot.as_mut().ok_or_else(Self::gone)?;
            table.batches.iter().try_for_each(|b| st.absorb(b))
        })
    }

    /// The partial-state tables of `data`'s batches (the state is not changed).
    fn partial<'py>(
        &self,
        py: Python<'py>,
        data: AnyRecordBatch,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let table = table_in(data)?;
        let out = self.with(py, |slot| {
            let st = slot.as_ref().ok_or_else(Self::gone)?;
            table
                .batches
                .iter()
                .map(|b| st.partial_of(b))
                .collect::<crate::Result<Vec<_>>>()
        })?;
        out.into_iter().map(|t| table_out(py, t)).collect()
    }

    /// Fold in a partial-state table of later rows.
    fn absorb_partial(&self, py: Python<'_>, table: AnyRecordBatch) -> PyResult<()> {
        let table = table_in(table)?;
        self.with(py, |slot| {
            slot.as_mut().ok_or_else(Self::gone)?.absorb_partial(table)
        })
    }

    fn merge(&self, py: Python<'_>, other: &GroupByState) -> PyResult<()> {
        if std::ptr::eq(self, other) {
            return Err(PyValueError::new_err(
                "cannot merge a group-by state into itself",
            ));
        }
        // Both locks, always in address order: two threads merging two states into each
        // other cannot deadlock, and one of them finds the other state gone (nothing lost).
        py.detach(|| {
            let self_first = (self as *const Self) < (other as *const Self);
            let (a, b) = if self_first {
                (self, other)
            } else {
                (other, self)
            };
            let ga = a.0.lock().map_err(|_| Self::poisoned())?;
            let gb = b.0.lock().map_err(|_| Self::poisoned())?;
            let (mut mine, mut theirs) = if self_first { (ga, gb) } else { (gb, ga) };
            let st = mine.as_mut().ok_or_else(|| to_py(Self::gone()))?;
            let o = theirs.take().ok_or_else(|| {
                PyValueError::new_err("the other group-by state was already finished or merged")
            })?;
            guarded(|| st.merge(o))
        })
    }

    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // The state is dropped only once its result exists (an interrupted finish keeps it).
        let out = self.with(py, |slot| {
            let out = slot.as_mut().ok_or_else(Self::gone)?.finish()?;
            *slot = None;
            Ok(out)
        })?;
        table_out(py, out)
    }

    /// The state as partial-state tables (see `GroupByState::export`).
    fn export_state<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let out = self.with(py, |slot| {
            Ok(slot.as_ref().ok_or_else(Self::gone)?.export())
        })?;
        out.into_iter().map(|t| table_out(py, t)).collect()
    }

    #[getter]
    fn num_groups(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |slot| {
            Ok(slot.as_ref().ok_or_else(Self::gone)?.num_groups())
        })
    }
}

fn join_options(
    left_on: StrOrList,
    right_on: StrOrList,
    how: &str,
    suffix: String,
    nulls_equal: bool,
    validate: Option<&str>,
    max_output_rows: Option<u64>,
) -> PyResult<JoinOptions> {
    let how = how.parse::<JoinType>().map_err(to_py)?;
    let validate = validate
        .map(|v| v.parse::<Validate>())
        .transpose()
        .map_err(to_py)?;
    Ok(JoinOptions {
        how,
        left_on: left_on.into_vec(),
        right_on: right_on.into_vec(),
        suffix,
        nulls_equal,
        validate,
        max_output_rows,
    })
}

#[pyfunction]
#[pyo3(signature = (left, right, left_on, right_on, how, suffix, nulls_equal, validate, max_output_rows))]
#[allow(clippy::too_many_arguments)]
fn join<'py>(
    py: Python<'py>,
    left: AnyRecordBatch,
    right: AnyRecordBatch,
    left_on: StrOrList,
    right_on: StrOrList,
    how: &str,
    suffix: String,
    nulls_equal: bool,
    validate: Option<&str>,
    max_output_rows: Option<u64>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = join_options(
        left_on,
        right_on,
        how,
        suffix,
        nulls_equal,
        validate,
        max_output_rows,
    )?;
    let (left, right) = (table_in(left)?, table_in(right)?);
    let need = whole_table_need(&[&left, &right], opts.left_on.len());
    let out = run(py, || {
        budget::within("join", need, || crate::join::join(&left, &right, &opts))
    })?;
    table_out(py, out)
}

/// A join's output schema (pyarrow) and each output column's (side, input name).
type JoinLayout = (Py<PyAny>, Vec<(u8, String)>);

/// The output schema of a join of tables of these schemas and, per output column, where it
/// comes from: `(0, left name)` (a key coalesced with its right partner in right / outer
/// joins) or `(1, right name)`. Checked as `join` checks its arguments; no data involved.
#[pyfunction]
#[pyo3(signature = (left, right, left_on, right_on, how, suffix))]
fn join_layout(
    py: Python<'_>,
    left: pyo3_arrow::PySchema,
    right: pyo3_arrow::PySchema,
    left_on: StrOrList,
    right_on: StrOrList,
    how: &str,
    suffix: String,
) -> PyResult<JoinLayout> {
    let opts = join_options(left_on, right_on, how, suffix, false, None, None)?;
    let (left, right) = (left.into_inner(), right.into_inner());
    let (schema, origins) = crate::join::output_layout(&left, &right, &opts).map_err(to_py)?;
    let origins = origins
        .into_iter()
        .map(|(is_right, i)| {
            let s = if is_right { &right } else { &left };
            (u8::from(is_right), s.field(i).name().clone())
        })
        .collect();
    let schema = pyo3_arrow::PySchema::new(schema).into_pyarrow(py)?.unbind();
    Ok((schema, origins))
}

/// A join's right side prepared once (its key index built) for probes by left tables of
/// `probe_schema`: inner / left / semi / anti / cross joins, whose output per probe is the
/// whole-table join of that probe.
#[pyclass(module = "ferrobatch._core", frozen)]
struct JoinBuild(crate::join::stream::JoinBuild);

#[pymethods]
impl JoinBuild {
    #[new]
    #[pyo3(signature = (probe_schema, build, left_on, right_on, how, suffix, nulls_equal))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        probe_schema: pyo3_arrow::PySchema,
        build: AnyRecordBatch,
        left_on: StrOrList,
        right_on: StrOrList,
        how: &str,
        suffix: String,
        nulls_equal: bool,
    ) -> PyResult<Self> {
        let opts = join_options(left_on, right_on, how, suffix, nulls_equal, None, None)?;
        if matches!(opts.how, JoinType::Right | JoinType::Outer) {
            return Err(PyValueError::new_err(format!(
                "a prepared right side serves inner, left, semi, anti and cross joins; a \
                 {how:?} join needs every left row before the unmatched right ones: use join()"
            )));
        }
        let table = table_in(build)?;
        let schema = probe_schema.into_inner();
        let jb = run(py, || {
            crate::join::stream::JoinBuild::new(schema, table, opts)
        })?;
        Ok(JoinBuild(jb))
    }

    /// The join of `data` (left rows of the probe schema) with the prepared right side.
    fn probe<'py>(&self, py: Python<'py>, data: AnyRecordBatch) -> PyResult<Bound<'py, PyAny>> {
        let table = table_in(data)?;
        if let Some(why) = crate::table::schema_mismatch(&table.schema, self.0.probe_schema()) {
            return Err(PyTypeError::new_err(format!(
                "the probe does not have the left schema this side was prepared for: {why}"
            )));
        }
        let out = run(py, || self.0.probe(&table))?;
        table_out(py, out)
    }

    /// The prepared right side's rows.
    fn build_table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        table_out(py, self.0.build_table().clone())
    }
}

/// The rows `indices` (a `uint32` array) of `data`: a gather for every Arrow type, view
/// types included (pyarrow's `take` lacks them).
#[pyfunction]
fn take<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    indices: pyo3_arrow::PyArray,
) -> PyResult<Bound<'py, PyAny>> {
    let table = table_in(data)?;
    let idx = indices
        .array()
        .as_any()
        .downcast_ref::<arrow_array::UInt32Array>()
        .filter(|a| arrow_array::Array::null_count(*a) == 0)
        .ok_or_else(|| PyTypeError::new_err("take: indices must be a uint32 array without nulls"))?
        .values()
        .to_vec();
    let out = run(py, || crate::gather::take_checked(&table, &idx))?;
    table_out(py, out)
}

#[pyfunction]
#[pyo3(signature = (left, right, left_on, right_on, how, nulls_equal, validate, max_output_rows))]
#[allow(clippy::too_many_arguments)]
fn join_indices<'py>(
    py: Python<'py>,
    left: AnyRecordBatch,
    right: AnyRecordBatch,
    left_on: StrOrList,
    right_on: StrOrList,
    how: &str,
    nulls_equal: bool,
    validate: Option<&str>,
    max_output_rows: Option<u64>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let opts = join_options(
        left_on,
        right_on,
        how,
        String::new(),
        nulls_equal,
        validate,
        max_output_rows,
    )?;
    let (left, right) = (table_in(left)?, table_in(right)?);
    let need = whole_table_need(&[&left, &right], opts.left_on.len());
    let idx = run(py, || {
        budget::within("join", need, || {
            crate::join::join_indices(&left, &right, &opts)
        })
    })?;
    Ok((
        convert::indices_out(py, idx.left)?,
        convert::indices_out(py, idx.right)?,
    ))
}

/// The hash partition in `0..n` of every row of `data` by `keys` (a `uint32` array): equal
/// keys by the join / group-by key rules share a partition whatever their layout.
#[pyfunction]
fn hash_partitions<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    keys: StrOrList,
    n: u32,
) -> PyResult<Bound<'py, PyAny>> {
    let keys = keys.into_vec();
    let table = table_in(data)?;
    let ids = run(py, || {
        crate::keys::partition::hash_partitions(&table, &keys, n)
    })?;
    convert::indices_out(py, ids)
}

/// The range partition of every row of `data`: how many rows of `bounds` sort strictly
/// before it by `by` with these directions (a `uint32` array).
#[pyfunction]
#[pyo3(signature = (data, bounds, by, descending, nulls_last))]
fn range_partitions<'py>(
    py: Python<'py>,
    data: AnyRecordBatch,
    bounds: AnyRecordBatch,
    by: StrOrList,
    descending: &Bound<'py, PyAny>,
    nulls_last: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let keys = sort_keys(by, descending, nulls_last)?;
    let (names, order): (Vec<String>, Vec<(bool, bool)>) = keys
        .into_iter()
        .map(|k| (k.column, (k.descending, k.nulls_last)))
        .unzip();
    let (table, bounds) = (table_in(data)?, table_in(bounds)?);
    let ids = run(py, || {
        crate::keys::partition::range_partitions(&table, &bounds, &names, &order)
    })?;
    convert::indices_out(py, ids)
}

/// Set the memory budget in bytes (`None`: unlimited).
#[pyfunction]
#[pyo3(signature = (limit))]
fn set_memory_limit(limit: Option<u64>) {
    budget::set_limit(limit);
}

#[pyfunction]
fn get_memory_limit() -> Option<u64> {
    budget::limit()
}

/// Bytes reserved from the budget now (zero between runs).
#[pyfunction]
fn memory_reserved() -> u64 {
    budget::reserved()
}

/// Write spill files LZ4-compressed (`True`) or not.
#[pyfunction]
fn set_spill_compression(lz4: bool) {
    crate::spill::set_compress(lz4);
}

#[pyfunction]
fn get_spill_compression() -> bool {
    crate::spill::compress()
}

/// Set the temp directory spill files go to (`None`: the default).
#[pyfunction]
#[pyo3(signature = (path))]
fn set_temp_directory(path: Option<std::path::PathBuf>) {
    crate::spill::set_temp_directory(path);
}

#[pyfunction]
fn get_temp_directory() -> std::path::PathBuf {
    crate::spill::temp_directory()
}

/// Cap spilled bytes: `bytes`, or `fraction` of the temp directory's free disk.
#[pyfunction]
#[pyo3(signature = (bytes=None, fraction=None))]
fn set_max_temp_directory_size(bytes: Option<u64>, fraction: Option<f64>) -> PyResult<()> {
    use crate::spill::MaxTempSize;
    let max = match (bytes, fraction) {
        (Some(b), None) => MaxTempSize::Bytes(b),
        (None, Some(f)) if f > 0.0 && f <= 1.0 => MaxTempSize::FreeFraction(f),
        _ => {
            return Err(PyValueError::new_err(
                "give bytes, or a fraction of the free disk in (0, 1]",
            ));
        }
    };
    crate::spill::set_max_temp_size(max);
    Ok(())
}

/// The cap on spilled bytes: `(bytes, None)` or `(None, fraction of free disk)`.
#[pyfunction]
fn get_max_temp_directory_size() -> (Option<u64>, Option<f64>) {
    match crate::spill::max_temp_size() {
        crate::spill::MaxTempSize::Bytes(b) => (Some(b), None),
        crate::spill::MaxTempSize::FreeFraction(f) => (None, Some(f)),
    }
}

/// Bytes in live spill files now (zero between runs).
#[pyfunction]
fn temp_bytes() -> u64 {
    crate::spill::used()
}

/// Make every spillable operator spill (`FERROBATCH_FORCE_SPILL=1`).
#[pyfunction]
fn set_force_spill(on: bool) {
    crate::spill::set_force(on);
}

#[pyfunction]
fn get_force_spill() -> bool {
    crate::spill::force()
}

#[pyfunction]
fn set_num_threads(n: i64) -> PyResult<()> {
    if n < 1 {
        return Err(PyValueError::new_err(format!(
            "number of threads must be >= 1, got {n}"
        )));
    }
    pool::set_num_threads(n as usize).map_err(to_py)
}

#[pyfunction]
fn get_num_threads() -> usize {
    pool::get_num_threads()
}

/// mimalloc's `mi_option_purge_delay` and `mi_option_allow_thp` (v3 option numbering).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// How long freed pages stay with ferrobatch's allocator before going back to the OS: 10 s
/// (mimalloc's default is 10 ms; jemalloc's dirty-page decay, which Polars and pyarrow use,
/// is also 10 s). Every kernel call allocates its output afresh, and pages handed back are
/// zeroed by the OS again on the next call, which costs as much as the gathers themselves
/// (measured: 18 % of a left join at 1 s, none at 10 s).
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// While a budget is in force, the freed pages the allocator keeps are memory no reservation
/// counts, and a spilling run frees and allocates its batches many times over: kept 10 s,
/// they piled up to as much again as the budget (10^7 rows under 100 MiB, peak RSS above
/// baseline: j5 257, s1 205, q10 273 MiB). Given back after a delay instead (10 to 200 ms,
/// scaled to the limit), they were faulted in and zeroed again wave after wave, the more so
/// the longer the run's threads waited for a core (j5 under 100 MiB: 1.54 M page faults
/// against 330 k with the cap). So the pages are kept as without a budget until the
/// process's resident memory passes [`RETAIN_CAP`] — what it held when the tightest limit
/// came into force, plus that limit, plus [`RETAIN_SLACK`] — and then all given back at
/// once: every watched call checks every [`SIGNAL_POLL`] ([`Signals::tick`]) and when it
/// ends. 0: no budget.
static RETAIN_CAP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the allocator may keep beyond the limit: with the allocations of one check period
/// (about 15 MiB at 20 ms) it stays within the 1.25 x limit + 64 MiB the budget promises.
const RETAIN_SLACK: u64 = 32 << 20;

/// The budget's callback: `limit`, the tightest limit in force (`None`: none). Where the
/// resident memory cannot be read (not Linux), freed pages go back after mimalloc's own
/// 10 ms while a limit is in force instead.
fn keep_freed_pages(limit: Option<u64>) {
    let mut delay = PURGE_DELAY_MS;
    let cap = limit.map_or(0, |l| {
        // What was kept before the limit came into force goes back now, so the cap counts
        // from what the process itself holds.
        // SAFETY: a forced collection of the mimalloc instance linked into this module is
        // safe from any thread.
        unsafe { libmimalloc_sys::mi_collect(true) };
        match crate::mem::resident_bytes() {
            0 => {
                delay = 10;
                0
            }
            held => held.saturating_add(l).saturating_add(RETAIN_SLACK),
        }
    });
    RETAIN_CAP.store(cap, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: sets a process-local option of the mimalloc instance linked into this module.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) };
}

/// Give every freed page back to the OS when the process holds more than [`RETAIN_CAP`].
fn give_back_past_the_cap() {
    let cap = RETAIN_CAP.load(std::sync::atomic::Ordering::Relaxed);
    if cap > 0 && crate::mem::resident_bytes() > cap {
        // SAFETY: as in [`keep_freed_pages`].
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// The resident memory past which ferrobatch's allocator gives its freed pages back, in
/// bytes; `None` without a budget (for the tests).
#[pyfunction]
fn allocator_retention_cap() -> Option<u64> {
    Some(RETAIN_CAP.load(std::sync::atomic::Ordering::Relaxed)).filter(|&c| c > 0)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // No transparent huge pages: mimalloc madvises its arenas for them, and where the kernel
    // defragments on madvise (the common `defrag=madvise` setting) the first large run
    // stalls in page compaction — a full lineitem scan took 2.7 s the first time and 0.4 s
    // after; 0.6 s the first time without. Steady-state speed is the same either way.
    // SAFETY: sets a process-local option of the mimalloc instance linked into this module.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    // Sets the purge delay now, and again whenever the limits change.
    budget::on_bounded(keep_freed_pages);
    m.add_function(wrap_pyfunction!(sort, m)?)?;
    m.add_function(wrap_pyfunction!(allocator_retention_cap, m)?)?;
    m.add_function(wrap_pyfunction!(sort_indices, m)?)?;
    m.add_function(wrap_pyfunction!(dedup, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_indices, m)?)?;
    m.add_function(wrap_pyfunction!(join, m)?)?;
    m.add_function(wrap_pyfunction!(group_by, m)?)?;
    m.add_class::<GroupByState>()?;
    m.add_class::<JoinBuild>()?;
    m.add("ExpectationError", m.py().get_type::<ExpectationError>())?;
    m.add("MemoryLimitError", m.py().get_type::<MemoryLimitError>())?;
    m.add_function(wrap_pyfunction!(set_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(get_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(memory_reserved, m)?)?;
    m.add_function(wrap_pyfunction!(set_temp_directory, m)?)?;
    m.add_function(wrap_pyfunction!(set_spill_compression, m)?)?;
    m.add_function(wrap_pyfunction!(get_spill_compression, m)?)?;
    m.add_function(wrap_pyfunction!(get_temp_directory, m)?)?;
    m.add_function(wrap_pyfunction!(set_max_temp_directory_size, m)?)?;
    m.add_function(wrap_pyfunction!(get_max_temp_directory_size, m)?)?;
    m.add_function(wrap_pyfunction!(temp_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(set_force_spill, m)?)?;
    m.add_function(wrap_pyfunction!(get_force_spill, m)?)?;
    m.add_function(wrap_pyfunction!(join_indices, m)?)?;
    m.add_function(wrap_pyfunction!(join_layout, m)?)?;
    m.add_function(wrap_pyfunction!(group_by_schema, m)?)?;
    m.add_function(wrap_pyfunction!(check_sort, m)?)?;
    m.add_function(wrap_pyfunction!(check_keys, m)?)?;
    m.add_function(wrap_pyfunction!(take, m)?)?;
    m.add_function(wrap_pyfunction!(hash_partitions, m)?)?;
    m.add_function(wrap_pyfunction!(range_partitions, m)?)?;
    m.add_class::<exec::Expression>()?;
    m.add_class::<exec::Run>()?;
    m.add_class::<exec::ParquetWriter>()?;
    m.add_function(wrap_pyfunction!(exec::parquet_reads, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// mimalloc keeps freed pages for reuse: kernels allocate and free large buffers on every
/// call, and the system allocator would hand each back to the OS (and fault it in, zeroed,
/// next time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
