//! Gathering rows: the output of sort and dedup is a list of row indices, materialized here
//! with arrow's `take` kernel (every Arrow type, nested ones included), except for
//! offset-based strings and binaries, which have their own gather ([`gather_bytes`]).
//!
//! The indices are cut into fixed-size pieces; every (piece, column) pair is an independent
//! `take`, run in parallel, and each piece becomes one output record batch. Piece sizes
//! depend only on the row count, so the output never depends on the thread count.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{ByteArrayType, GenericBinaryType, GenericStringType};
use arrow_array::{
    Array, ArrayRef, GenericByteArray, OffsetSizeTrait, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use arrow_buffer::{ArrowNativeType, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::DataType;
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
                .map(|c| gather(c, piece, &idx))
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

/// Rows `idx` of one column.
fn gather(c: &ArrayRef, idx: &[u32], idx_array: &UInt32Array) -> Result<ArrayRef> {
    Ok(match c.data_type() {
        DataType::Utf8 => Arc::new(gather_bytes::<GenericStringType<i32>>(c.as_string(), idx)?),
        DataType::LargeUtf8 => {
            Arc::new(gather_bytes::<GenericStringType<i64>>(c.as_string(), idx)?)
        }
        DataType::Binary => Arc::new(gather_bytes::<GenericBinaryType<i32>>(c.as_binary(), idx)?),
        DataType::LargeBinary => {
            Arc::new(gather_bytes::<GenericBinaryType<i64>>(c.as_binary(), idx)?)
        }
        _ => take(c.as_ref(), idx_array, None)?,
    })
}

/// Copy window for short values: one unaligned 16-byte copy instead of a `memcpy` call.
const WORD: usize = 16;

/// Gather of offset-based byte arrays in two passes: output offsets from the lengths, then
/// the bytes. Values of at most 16 bytes are copied as one 16-byte block (the output has 16
/// bytes of slack, and each later value overwrites the previous one's spill), which is what
/// makes this faster than arrow's per-value `extend_from_slice`.
fn gather_bytes<T: ByteArrayType>(
    a: &GenericByteArray<T>,
    idx: &[u32],
) -> Result<GenericByteArray<T>> {
    let src_off = a.value_offsets();
    let src = a.values().as_slice();
    let mut offsets: Vec<T::Offset> = Vec::with_capacity(idx.len() + 1);
    offsets.push(T::Offset::usize_as(0));
    let mut total = 0usize;
    for &i in idx {
        let i = i as usize;
        total += (src_off[i + 1] - src_off[i]).as_usize();
        offsets.push(T::Offset::from_usize(total).ok_or_else(|| {
            crate::Error::Value(format!(
                "gathered {} values exceed the {} offset range; use large_string / large_binary",
                idx.len(),
                if T::Offset::IS_LARGE {
                    "64-bit"
                } else {
                    "32-bit"
                }
            ))
        })?);
    }
    let mut out = vec![0u8; total + WORD];
    let mut pos = 0usize;
    for &i in idx {
        let i = i as usize;
        let (s, e) = (src_off[i].as_usize(), src_off[i + 1].as_usize());
        let len = e - s;
        if len <= WORD && s + WORD <= src.len() {
            out[pos..pos + WORD].copy_from_slice(&src[s..s + WORD]);
        } else {
            out[pos..pos + len].copy_from_slice(&src[s..e]);
        }
        pos += len;
    }
    out.truncate(total);
    let nulls = a.nulls().filter(|n| n.null_count() > 0).map(|n| {
        NullBuffer::from(
            idx.iter()
                .map(|&i| n.is_valid(i as usize))
                .collect::<Vec<bool>>(),
        )
    });
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // SAFETY: offsets are monotonic and end at `out.len()`; every value is a copy of a valid
    // value of the same type (so UTF-8 stays valid for strings).
    Ok(unsafe { GenericByteArray::<T>::new_unchecked(offsets, Buffer::from_vec(out), nulls) })
}
