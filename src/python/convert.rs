//! Conversions between Python objects and core types.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList, PyString, PyTuple};
use pyo3_arrow::PyTable;
use pyo3_arrow::input::AnyRecordBatch;

use std::sync::Arc;

use arrow_schema::{DataType, Field};

use crate::Table;

/// A column name or a list of them.
pub struct StrOrList(Vec<String>);

impl StrOrList {
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for StrOrList {
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = ob.cast::<PyString>() {
            return Ok(StrOrList(vec![s.to_str()?.to_owned()]));
        }
        if ob.cast::<PyList>().is_ok() || ob.cast::<PyTuple>().is_ok() {
            let mut out = Vec::new();
            for item in ob.try_iter()? {
                let item = item?;
                match item.cast::<PyString>() {
                    Ok(s) => out.push(s.to_str()?.to_owned()),
                    Err(_) => {
                        return Err(PyTypeError::new_err(format!(
                            "column names must be str, got {}",
                            item.get_type().name()?
                        )));
                    }
                }
            }
            return Ok(StrOrList(out));
        }
        Err(PyTypeError::new_err(format!(
            "expected a column name or a list of column names, got {}",
            ob.get_type().name()?
        )))
    }
}

/// A bool, or a list of bools of length `len`, for the argument `what`.
pub fn bool_list(ob: &Bound<'_, PyAny>, len: usize, what: &str) -> PyResult<Vec<bool>> {
    if let Ok(b) = ob.cast::<PyBool>() {
        return Ok(vec![b.is_true(); len]);
    }
    if ob.cast::<PyList>().is_ok() || ob.cast::<PyTuple>().is_ok() {
        let mut out = Vec::new();
        for item in ob.try_iter()? {
            let item = item?;
            match item.cast::<PyBool>() {
                Ok(b) => out.push(b.is_true()),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "{what} must be a bool or a list of bools, got an item of type {}",
                        item.get_type().name()?
                    )));
                }
            }
        }
        if out.len() != len {
            return Err(PyValueError::new_err(format!(
                "{what} has {} entries but there are {len} sort keys",
                out.len()
            )));
        }
        return Ok(out);
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a bool or a list of bools, got {}",
        ob.get_type().name()?
    )))
}

/// Any Arrow record-batch source (C data / stream interface) as a core table.
///
/// Every batch of a stream is checked against the stream's declared schema (column count
/// and types) before a kernel can touch it, and a stream error or a panic inside the
/// importer becomes a `ValueError` naming the batch. The Python wrappers read pyarrow
/// streams themselves (which keeps a producer's exception class); this is the last line.
pub fn table_in(data: AnyRecordBatch) -> PyResult<Table> {
    let read = || -> PyResult<Table> {
        let reader = data.into_reader()?;
        let schema = reader.schema();
        let mut batches = Vec::new();
        for (i, batch) in reader.enumerate() {
            let batch = batch.map_err(|e| {
                PyValueError::new_err(format!("cannot read record batch {i} of the stream: {e}"))
            })?;
            if let Some(why) = crate::table::schema_mismatch(&batch.schema(), &schema) {
                return Err(PyValueError::new_err(format!(
                    "record batch {i} does not match the stream's schema: {why}"
                )));
            }
            batches.push(batch);
        }
        Ok(Table { schema, batches })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        Err(PyValueError::new_err(
            "malformed Arrow input: its record batches do not match its declared schema",
        ))
    })
}

/// A core table as a `pyarrow.Table`.
pub fn table_out(py: Python<'_>, t: Table) -> PyResult<Bound<'_, PyAny>> {
    PyTable::try_new(t.batches, t.schema)?.into_pyarrow(py)
}

/// Row indices as a `pyarrow.UInt32Array` (handed over zero-copy through the C data
/// interface).
pub fn indices_out(py: Python<'_>, idx: Vec<u32>) -> PyResult<Bound<'_, PyAny>> {
    let arr = arrow_array::UInt32Array::from(idx);
    let field = Arc::new(Field::new("", DataType::UInt32, false));
    let arr = pyo3_arrow::PyArray::new(Arc::new(arr), field).into_pyobject(py)?;
    py.import("pyarrow")?.getattr("array")?.call1((arr,))
}
