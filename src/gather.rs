//! Gathering rows: the output of sort and dedup is a list of row indices, materialized here
//! with arrow's `take` kernel (every Arrow type, nested ones included).
//!
//! The indices are cut into fixed-size pieces; every (piece, column) pair is an independent
//! `take`, run in parallel, and each piece becomes one output record batch. Piece sizes
//! depend only on the row count, so the output never depends on the thread count.

use arrow_array::{RecordBatch, RecordBatchOptions, UInt32Array};
use arrow_select::take::take;
use rayon::prelude::*;

use crate::error::Result;
use crate::table::Table;

/// Rows per output batch.
pub const OUT_BATCH: usize = 1 << 20;

/// The rows `indices` of `table`, in that order.
pub fn take_table(table: &Table, indices: &[u32]) -> Result<Table> {
    let columns = table.contiguous_columns()?;
    let pieces: Vec<&[u32]> = if indices.is_empty() {
        vec![indices]
    } else {
        indices.chunks(OUT_BATCH).collect()
    };
    let batches = pieces
        .par_iter()
        .map(|piece| {
            let idx = UInt32Array::from(piece.to_vec());
            let cols = columns
                .par_iter()
                .map(|c| Ok(take(c.as_ref(), &idx, None)?))
                .collect::<Result<Vec<_>>>()?;
            let opts = RecordBatchOptions::new().with_row_count(Some(piece.len()));
            Ok(RecordBatch::try_new_with_options(
                table.schema.clone(),
                cols,
                &opts,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Table {
        schema: table.schema.clone(),
        batches,
    })
}
