//! `Table`: the core's view of a table, a schema plus record batches (chunks), and the
//! lookups every kernel needs (columns by name, with a helpful error when missing).

use arrow_array::{ArrayRef, RecordBatch, new_empty_array};
use arrow_schema::SchemaRef;
use arrow_select::concat::concat;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The largest row count a kernel accepts: row indices are `u32`.
pub const MAX_ROWS: usize = u32::MAX as usize;

#[derive(Clone, Debug)]
pub struct Table {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Table {
    /// A table from batches that all have `schema` (checked).
    pub fn try_new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        for b in &batches {
            if b.schema().fields() != schema.fields() {
                return Err(Error::Value(
                    "record batches of one table must share its schema".into(),
                ));
            }
        }
        Ok(Table { schema, batches })
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Row count, checked against [`MAX_ROWS`].
    pub fn checked_num_rows(&self) -> Result<usize> {
        let n = self.num_rows();
        if n > MAX_ROWS {
            return Err(Error::Value(format!(
                "table has {n} rows; ferrobatch kernels take at most {MAX_ROWS} rows"
            )));
        }
        Ok(n)
    }

    /// Position of the column `name`, or a `ColumnNotFound` error suggesting close names.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.schema.index_of(name).map_err(|_| {
            Error::column_not_found(name, self.schema.fields().iter().map(|f| f.name().as_str()))
        })
    }

    /// The chunks of column `i`, one per batch (empty batches skipped).
    pub fn chunks(&self, i: usize) -> Vec<ArrayRef> {
        self.batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| b.column(i).clone())
            .collect()
    }

    /// Every column as one contiguous array (chunks concatenated in parallel where needed).
    pub fn contiguous_columns(&self) -> Result<Vec<ArrayRef>> {
        (0..self.schema.fields().len())
            .into_par_iter()
            .map(|i| {
                let chunks = self.chunks(i);
                match chunks.len() {
                    0 => Ok(new_empty_array(self.schema.field(i).data_type())),
                    1 => Ok(chunks[0].clone()),
                    _ => {
                        let refs: Vec<&dyn arrow_array::Array> =
                            chunks.iter().map(|a| a.as_ref()).collect();
                        Ok(concat(&refs)?)
                    }
                }
            })
            .collect()
    }
}
