//! Bindings of the executor and of expressions: a plan arrives as nested tuples built by
//! `ferrobatch/pipeline.py`, is converted to a [`crate::exec::Plan`] here, and runs without
//! the GIL. Python code runs only inside callbacks (`map_batches`, a sub-expression pyarrow
//! evaluates), which take the GIL for their own duration; an exception they raise is kept
//! and re-raised, class intact, when the run stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use pyo3_arrow::{PyArray, PyDataType, PyRecordBatch, PyRecordBatchReader, PySchema};

use super::convert::{StrOrList, table_in};
use super::{AggTuple, Signals, caught, group_by_options, guarded, to_py};
use crate::error::Error;
use crate::exec::sink::ParquetSink;
use crate::exec::source::{Batches, Csv, Ipc, Parquet, Stream};
use crate::exec::{BatchFn, Column, Execution, Expectations, Plan, Shared};
use crate::expr::Serialized;
use crate::expr::bind::{Fallback, Need, Phys, bind};

/// The first Python exception a callback raised during a run.
type Slot = Arc<Mutex<Option<PyErr>>>;

fn callback_failed(slot: &Slot, e: PyErr) -> Error {
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        *s = Some(e);
    }
    Error::Value("a Python callback failed".into())
}

/// A pyarrow expression in serialized form (`pyarrow.compute.Expression.__reduce__`).
#[pyclass(module = "ferrobatch._core", frozen)]
pub struct Expression(Serialized);

#[pymethods]
impl Expression {
    #[new]
    fn new(data: &Bound<'_, PyBytes>) -> PyResult<Self> {
        Serialized::parse(data.as_bytes())
            .map(Expression)
            .map_err(to_py)
    }

    /// The columns the expression reads, in first-reference order.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.0.root.columns()
    }

    /// The serialized tokens `(kind, value)` in prefix order.
    #[getter]
    fn tokens(&self) -> Vec<(String, String)> {
        self.0.tokens.clone()
    }

    /// The calls that `bind` hands to the fallback for `schema`, as `(start, end, name)`
    /// token spans (outermost first).
    fn fallbacks(
        &self,
        schema: PySchema,
        resolve: Bound<'_, PyAny>,
    ) -> PyResult<Vec<(usize, usize, String)>> {
        let schema = schema.into_inner();
        let slot: Slot = Default::default();
        let mut spans = Vec::new();
        let r = bind(&self.0.root, &schema, &mut |c, need| {
            let name = match need {
                Need::Whole => c.name.clone(),
                Need::Backup if c.name == "utf8_lower" => {
                    format!(
                        "{} (batches with text beyond Latin, Greek, Cyrillic)",
                        c.name
                    )
                }
                Need::Backup => format!("{} (batches with non-ASCII text)", c.name),
            };
            spans.push((c.span.0, c.span.1, name));
            resolver(&resolve, &slot, &schema)(c, need)
        });
        if let Some(e) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        r.map_err(to_py)?;
        Ok(spans)
    }

    /// The expression over `batch` (for tests): evaluated here, with `resolve` for calls
    /// evaluated elsewhere.
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        batch: PyRecordBatch,
        resolve: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batch = batch.into_inner();
        let slot: Slot = Default::default();
        let phys = bind(
            &self.0.root,
            &batch.schema(),
            &mut resolver(&resolve, &slot, &batch.schema()),
        )
        .map_err(|e| take_or(&slot, e))?;
        let out = py
            .detach(|| guarded(|| phys.evaluate(&batch)))
            .map_err(|e| {
                slot.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or(e)
            })?;
        let out = PyArray::from_array_ref(out);
        Ok(out.to_pyarrow(py)?.unbind().into_bound(py))
    }
}

fn take_or(slot: &Slot, e: Error) -> PyErr {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| to_py(e))
}

/// The fallback of a binding: `resolve(start, end, schema)` returns the sub-expression's
/// pyarrow type and a function evaluating it over a batch.
fn resolver<'a, 'py>(
    resolve: &'a Bound<'py, PyAny>,
    slot: &'a Slot,
    schema: &'a SchemaRef,
) -> impl FnMut(&crate::expr::Call, Need) -> crate::Result<Fallback> + 'a {
    move |c, _| {
        let py = resolve.py();
        let pyschema = PySchema::new(schema.clone())
            .into_pyarrow(py)
            .map_err(|e| callback_failed(slot, e))?;
        let (ty, f): (PyDataType, Py<PyAny>) = resolve
            .call1((c.span.0, c.span.1, pyschema))
            .and_then(|r| r.extract())
            .map_err(|e| callback_failed(slot, e))?;
        let slot = slot.clone();
        let eval = Arc::new(move |b: &RecordBatch| -> crate::Result<ArrayRef> {
            Python::attach(|py| {
                let b = PyRecordBatch::new(b.clone()).into_pyarrow(py)?;
                let a: PyArray = f.call1(py, (b,))?.extract(py)?;
                Ok(a.into_inner().0)
            })
            .map_err(|e| callback_failed(&slot, e))
        });
        Ok(Fallback {
            ty: ty.into_inner(),
            eval,
        })
    }
}

/// What a Parquet scan of `files` under the pushed `predicate` decodes, from the metadata
/// (statistics and page index): `(row groups, of row groups, rows, of rows, pages pruned)`.
#[pyfunction]
#[pyo3(signature = (files, predicate=None))]
pub fn parquet_reads(
    py: Python<'_>,
    files: Vec<String>,
    predicate: Option<Bound<'_, Expression>>,
) -> PyResult<(usize, usize, u64, u64, bool)> {
    let pred = predicate.map(|p| p.get().0.root.clone());
    let files = files.into_iter().map(PathBuf::from).collect();
    let r = py
        .detach(|| {
            guarded(|| Parquet::new(files, None, pred, crate::exec::DEFAULT_MORSEL, &[], &[]))
        })?
        .reads();
    Ok((
        r.row_groups,
        r.row_groups_total,
        r.rows,
        r.rows_total,
        r.pages_pruned,
    ))
}

/// A Parquet file written from batches (`crate::exec::sink`), into an open file descriptor
/// the caller owns (it is duplicated: closing the writer leaves the caller's open).
#[pyclass(module = "ferrobatch._core", frozen)]
pub struct ParquetWriter(Mutex<Option<ParquetSink<std::fs::File>>>);

impl ParquetWriter {
    fn with(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut ParquetSink<std::fs::File>) -> crate::Result<()> + Send,
    ) -> PyResult<()> {
        let mut sink = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let sink = sink
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the Parquet writer is closed"))?;
        super::run(py, || f(sink))
    }
}

#[pymethods]
impl ParquetWriter {
    #[new]
    #[pyo3(signature = (fd, schema, compression="snappy", row_group_size=1 << 20, flush_bytes=None))]
    fn new(
        fd: i32,
        schema: PySchema,
        compression: &str,
        row_group_size: usize,
        flush_bytes: Option<usize>,
    ) -> PyResult<Self> {
        use std::os::fd::BorrowedFd;
        if fd < 0 {
            return Err(PyValueError::new_err(format!("bad file descriptor {fd}")));
        }
        // SAFETY: the caller passes an open descriptor that it keeps open during this call;
        // it is duplicated at once, and only the duplicate is kept.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| PyValueError::new_err(format!("bad file descriptor {fd}: {e}")))?;
        let compression = crate::exec::sink::compression(compression).map_err(to_py)?;
        let sink = ParquetSink::new(
            std::fs::File::from(owned),
            schema.into_inner(),
            compression,
            row_group_size,
            flush_bytes.unwrap_or(crate::exec::sink::FLUSH_BYTES),
        )
        .map_err(to_py)?;
        Ok(ParquetWriter(Mutex::new(Some(sink))))
    }

    /// Add a batch (of the writer's schema); full row groups are encoded in parallel.
    fn write_batch(&self, py: Python<'_>, batch: PyRecordBatch) -> PyResult<()> {
        let batch = batch.into_inner();
        self.with(py, |s| s.write(&batch))
    }

    /// Encode what is buffered and write the footer. The writer cannot be used afterwards.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let sink = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match sink {
            Some(sink) => super::run(py, || sink.finish().map(drop)),
            None => Ok(()),
        }
    }
}

/// A running plan; `next()` returns the next `pyarrow.RecordBatch` or `None`.
#[pyclass(module = "ferrobatch._core", frozen)]
pub struct Run {
    exec: Mutex<Execution>,
    slot: Slot,
}

impl Run {
    /// `f` of the execution, its lock taken without the GIL (a running `next` holds it and
    /// may need the GIL for a callback).
    fn with<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Execution) -> T + Send) -> T {
        py.detach(|| f(&self.exec.lock().unwrap_or_else(|p| p.into_inner())))
    }
}

#[pymethods]
impl Run {
    /// `collecting`: the caller keeps the whole output (longer waves).
    #[new]
    /// `output_bytes`: what the output's consumer buffers, reserved from the budget.
    #[pyo3(signature = (spec, collecting=false, memory_limit=None, output_bytes=0))]
    fn new(
        py: Python<'_>,
        spec: Bound<'_, PyTuple>,
        collecting: bool,
        memory_limit: Option<u64>,
        output_bytes: u64,
    ) -> PyResult<Self> {
        let slot: Slot = Default::default();
        let mut cx = Lowering::default();
        let plan = plan(py, &spec, &slot, &mut cx).map_err(|e| {
            slot.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(e)
        })?;
        let wave = match collecting {
            true => crate::exec::COLLECTING_WAVE,
            false => crate::exec::STREAMING_WAVE,
        };
        let mut exec = Execution::new(plan, cx.labels, wave, memory_limit).map_err(to_py)?;
        if output_bytes > 0 {
            exec.reserve_output(output_bytes);
        }
        Ok(Run {
            exec: Mutex::new(exec),
            slot,
        })
    }

    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PySchema::new(self.with(py, |e| e.schema())).into_pyarrow(py)
    }

    /// The next output batch, or `None` at the end.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let out = py.detach(|| {
            let mut exec = self.exec.lock().unwrap_or_else(|p| p.into_inner());
            let watch = Watch {
                slot: &self.slot,
                signals: Signals::new(),
            };
            caught(|| crate::cancel::run(|| exec.next(&watch)))
        });
        // A callback's exception (a Ctrl-C among them) is raised even if the step finished.
        let failed = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let out = match (out, failed) {
            (_, Some(e)) | (Err(e), None) => return Err(e),
            (Ok(out), None) => out,
        };
        out.map(|b| PyRecordBatch::new(b).into_pyarrow(py))
            .transpose()
    }

    /// Per operator (output first): label, depth, rows in / out, batches, CPU seconds, and
    /// what it spilled (bytes, files, seconds) and its peak reserved bytes.
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for r in self.with(py, |e| e.report()) {
            let d = PyDict::new(py);
            d.set_item("stage", r.label)?;
            d.set_item("depth", r.depth)?;
            d.set_item("rows_in", r.rows_in)?;
            d.set_item("rows_out", r.rows_out)?;
            d.set_item("batches", r.batches)?;
            d.set_item("cpu_seconds", r.cpu_seconds)?;
            d.set_item("spilled_bytes", r.spilled_bytes)?;
            d.set_item("spill_files", r.spill_files)?;
            d.set_item("spill_seconds", r.spill_seconds)?;
            d.set_item("peak_reserved", r.peak_reserved)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// The largest resident set size seen between waves, in bytes.
    #[getter]
    fn peak_rss(&self, py: Python<'_>) -> u64 {
        self.with(py, |e| e.peak_rss())
    }
}

/// The executor's parallel parts on the pool, the calling thread polling for Ctrl-C across
/// them ([`Signals`]); a `KeyboardInterrupt` is kept in the slot.
struct Watch<'a> {
    slot: &'a Slot,
    signals: Signals,
}

impl crate::exec::Runner for Watch<'_> {
    fn parallel(&self, f: &mut (dyn FnMut() -> crate::Result<()> + Send)) -> crate::Result<()> {
        let out = self.signals.install(f);
        if let Some(e) = self.signals.take() {
            let _ = callback_failed(self.slot, e);
        }
        out
    }
}

/// The positions of the columns `names` in `schema`.
fn names_at(schema: &SchemaRef, names: &[String]) -> PyResult<Vec<usize>> {
    names
        .iter()
        .map(|n| schema.index_of(n).map_err(|e| to_py(e.into())))
        .collect()
}

fn item<'py, T: FromPyObjectOwned<'py>>(spec: &Bound<'py, PyTuple>, i: usize) -> PyResult<T> {
    spec.get_item(i)?.extract().map_err(Into::into)
}

fn paths(spec: &Bound<'_, PyTuple>, i: usize) -> PyResult<Vec<PathBuf>> {
    Ok(item::<Vec<String>>(spec, i)?
        .into_iter()
        .map(PathBuf::from)
        .collect())
}

fn size(spec: &Bound<'_, PyTuple>, i: usize) -> PyResult<usize> {
    Ok(item::<Option<usize>>(spec, i)?
        .unwrap_or(crate::exec::DEFAULT_MORSEL)
        .max(1))
}

/// A bound expression from `(Expression, resolve)`.
fn expression(e: &Bound<'_, PyAny>, schema: &SchemaRef, slot: &Slot) -> PyResult<Phys> {
    let (ex, resolve): (Bound<'_, Expression>, Bound<'_, PyAny>) = e.extract()?;
    let ex = ex.get();
    bind(&ex.0.root, schema, &mut resolver(&resolve, slot, schema)).map_err(to_py)
}

/// What a spec's conversion collects: the labels (pre-order, output first) and the shared
/// sub-plans met so far by their key.
#[derive(Default)]
struct Lowering {
    labels: Vec<String>,
    shared: HashMap<u64, (Arc<Shared>, SchemaRef)>,
}

/// The plan of a spec `(kind, label, ...)`.
fn plan(
    py: Python<'_>,
    spec: &Bound<'_, PyTuple>,
    slot: &Slot,
    cx: &mut Lowering,
) -> PyResult<Plan> {
    let kind: String = item(spec, 0)?;
    cx.labels.push(item(spec, 1)?);
    let child = |cx: &mut Lowering| -> PyResult<Plan> {
        let c = spec.get_item(2)?;
        plan(py, c.cast::<PyTuple>()?, slot, cx)
    };
    Ok(match kind.as_str() {
        "parquet" => {
            let cols: Option<Vec<String>> = item(spec, 3)?;
            let pred: Option<Bound<'_, Expression>> = item(spec, 4)?;
            let pred = pred.map(|p| p.get().0.root.clone());
            let files = paths(spec, 2)?;
            let size = size(spec, 5)?;
            let dict: Vec<String> = item(spec, 6)?;
            let narrow: Vec<String> = item(spec, 7)?;
            let src = py.detach(|| {
                guarded(|| Parquet::new(files, cols.as_deref(), pred, size, &dict, &narrow))
            })?;
            Plan::Source(Box::new(src))
        }
        "ipc" => {
            let cols: Option<Vec<String>> = item(spec, 3)?;
            Plan::Source(Box::new(
                Ipc::new(paths(spec, 2)?, cols.as_deref(), size(spec, 4)?).map_err(to_py)?,
            ))
        }
        "csv" => {
            let schema: PySchema = item(spec, 3)?;
            let cols: Option<Vec<String>> = item(spec, 4)?;
            Plan::Source(Box::new(
                Csv::new(
                    paths(spec, 2)?,
                    schema.into_inner(),
                    cols.as_deref(),
                    size(spec, 5)?,
                )
                .map_err(to_py)?,
            ))
        }
        "table" => {
            let t = table_in(spec.get_item(2)?.extract()?)?;
            Plan::Source(Box::new(Batches::new(t.schema, t.batches, size(spec, 3)?)))
        }
        "stream" => {
            let r: PyRecordBatchReader = item(spec, 2)?;
            let r = r.into_reader()?;
            let schema = r.schema();
            let iter = r.map(|b| b.map_err(|e| Error::Value(format!("reading the source: {e}"))));
            Plan::Source(Box::new(Stream::new(
                schema,
                Box::new(iter),
                size(spec, 3)?,
            )))
        }
        "filter" => {
            let input = child(cx)?;
            let predicate = expression(&spec.get_item(3)?, &input.schema(), slot)?;
            if predicate.ty != DataType::Boolean {
                return Err(PyTypeError::new_err(format!(
                    "a filter needs a boolean, got {}",
                    predicate.ty
                )));
            }
            Plan::Filter {
                input: Box::new(input),
                predicate,
            }
        }
        "project" => {
            let input = child(cx)?;
            let schema = input.schema();
            let items = spec.get_item(3)?;
            let mut cols = Vec::new();
            for it in items.try_iter()? {
                let it = it?;
                let (name, e): (String, Bound<'_, PyAny>) = it.extract()?;
                let c = match e.extract::<String>() {
                    Ok(col) => Column::Input(schema.index_of(&col).map_err(|_| {
                        to_py(Error::column_not_found(
                            &col,
                            schema.fields().iter().map(|f| f.name().as_str()),
                        ))
                    })?),
                    Err(_) => Column::Computed(expression(&e, &schema, slot)?),
                };
                cols.push((name, c));
            }
            Plan::project(input, cols).map_err(to_py)?
        }
        "head" => {
            let input = child(cx)?;
            Plan::Head {
                input: Box::new(input),
                n: item(spec, 3)?,
            }
        }
        "map_batches" => {
            let input = child(cx)?;
            let f: Py<PyAny> = item(spec, 3)?;
            let schema: PySchema = item(spec, 4)?;
            let schema = schema.into_inner();
            let want = schema.clone();
            let slot = slot.clone();
            let f: BatchFn = Arc::new(move |b: RecordBatch| {
                Python::attach(|py| -> PyResult<Vec<RecordBatch>> {
                    let b = PyRecordBatch::new(b).into_pyarrow(py)?;
                    let t = table_in(f.call1(py, (b,))?.extract(py)?)?;
                    py.check_signals()?;
                    if let Some(why) = crate::table::schema_mismatch(&t.schema, &want) {
                        return Err(PyValueError::new_err(format!(
                            "map_batches returned a batch that does not match its schema: {why}"
                        )));
                    }
                    Ok(t.batches)
                })
                .map_err(|e| callback_failed(&slot, e))
            });
            Plan::MapBatches {
                input: Box::new(input),
                f,
                schema,
            }
        }
        "group_by" => {
            let input = child(cx)?;
            let keys: StrOrList = item(spec, 3)?;
            let aggs: Vec<AggTuple<'_>> = item(spec, 4)?;
            let opts = group_by_options(keys, aggs, item(spec, 5)?, item(spec, 6)?)?;
            let restore: Vec<(String, PyDataType)> = item(spec, 7)?;
            let restore = restore
                .into_iter()
                .map(|(n, t)| (n, t.into_inner()))
                .collect();
            Plan::group_by(input, opts, restore).map_err(to_py)?
        }
        "sort" => {
            let input = child(cx)?;
            let by: Vec<String> = item(spec, 3)?;
            let descending: Vec<bool> = item(spec, 4)?;
            let nulls_last: Vec<bool> = item(spec, 5)?;
            let keys = by
                .into_iter()
                .zip(descending)
                .zip(nulls_last)
                .map(|((column, descending), nulls_last)| crate::sort::SortKey {
                    column,
                    descending,
                    nulls_last,
                })
                .collect();
            Plan::Sort {
                input: Box::new(input),
                keys,
                limit: item(spec, 6)?,
            }
        }
        "dedup" => {
            let input = child(cx)?;
            let schema = input.schema();
            let names: Option<Vec<String>> = item(spec, 3)?;
            let subset = match names {
                None => (0..schema.fields().len()).collect(),
                Some(names) => names
                    .iter()
                    .map(|n| schema.index_of(n))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| to_py(e.into()))?,
            };
            let keep: String = item(spec, 4)?;
            Plan::Dedup {
                input: Box::new(input),
                subset,
                keep: keep.parse().map_err(to_py)?,
            }
        }
        "shared" => {
            // ("shared", label, sub-plan (its first occurrence only, else None), key, columns)
            let key: u64 = item(spec, 3)?;
            let (shared, schema) = match cx.shared.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let input = child(cx)?;
                    let cols: Vec<String> = item(spec, 4)?;
                    let schema = input.schema();
                    let cols = names_at(&schema, &cols)?;
                    let s = Shared::new(input, cols).map_err(to_py)?;
                    cx.shared.insert(key, s.clone());
                    s
                }
            };
            Plan::Shared { shared, schema }
        }
        "expect" => {
            let input = child(cx)?;
            let schema = input.schema();
            let expect = Expectations {
                min_rows: item(spec, 3)?,
                max_rows: item(spec, 4)?,
                not_null: names_at(&schema, &item::<Vec<String>>(spec, 5)?)?,
                unique: names_at(&schema, &item::<Vec<String>>(spec, 6)?)?,
            };
            Plan::Expect {
                input: Box::new(input),
                expect,
            }
        }
        "join" => {
            let side = |i: usize, cx: &mut Lowering| -> PyResult<Plan> {
                let c = spec.get_item(i)?;
                plan(py, c.cast::<PyTuple>()?, slot, cx)
            };
            let left = side(2, cx)?;
            let right = side(3, cx)?;
            let (lcols, rcols): (Vec<String>, Vec<String>) = (item(spec, 4)?, item(spec, 5)?);
            let opts = super::join_options(
                item(spec, 6)?,
                item(spec, 7)?,
                &item::<String>(spec, 8)?,
                item(spec, 9)?,
                item(spec, 10)?,
                None,
                None,
            )?;
            Plan::join(left, right, &lcols, &rcols, opts).map_err(to_py)?
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown plan node {other:?}"
            )));
        }
    })
}
