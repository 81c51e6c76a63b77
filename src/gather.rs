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
/// How many rows ahead the gathers prefetch.
const AHEAD: usize = 16;

/// Hint the CPU to start loading the cache line holding `p`.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Gather of offset-based byte arrays in one pass. Random rows cost two cache misses each
/// (offsets, then bytes), so the offsets are prefetched `AHEAD` rows ahead and the bytes
/// `AHEAD / 2` rows ahead. Values of at most 16 bytes are copied as one 16-byte block (the
/// output keeps 16 bytes of slack and each later value overwrites the previous spill), which
/// avoids a `memcpy` call per value.
fn gather_bytes<T: ByteArrayType>(
    a: &GenericByteArray<T>,
    idx: &[u32],
) -> Result<GenericByteArray<T>> {
    let src_off = a.value_offsets();
    let src = a.values().as_slice();
    let mut offsets: Vec<T::Offset> = Vec::with_capacity(idx.len() + 1);
    offsets.push(T::Offset::usize_as(0));
    let avg = src.len() / a.len().max(1);
    let mut out: Vec<u8> = vec![0u8; idx.len() * avg + WORD];
    let mut pos = 0usize;
    for (j, &i) in idx.iter().enumerate() {
        if let Some(&far) = idx.get(j + AHEAD) {
            prefetch(src_off.as_ptr().wrapping_add(far as usize));
        }
        if let Some(&near) = idx.get(j + AHEAD / 2) {
            prefetch(src.as_ptr().wrapping_add(src_off[near as usize].as_usize()));
        }
        let i = i as usize;
        let (s, e) = (src_off[i].as_usize(), src_off[i + 1].as_usize());
        let len = e - s;
        if pos + len.max(WORD) > out.len() {
            out.resize((out.len() * 2).max(pos + len + WORD), 0);
        }
        if len <= WORD && s + WORD <= src.len() {
            out[pos..pos + WORD].copy_from_slice(&src[s..s + WORD]);
        } else {
            out[pos..pos + len].copy_from_slice(&src[s..e]);
        }
        pos += len;
        offsets.push(T::Offset::from_usize(pos).ok_or_else(|| {
            crate::Error::Value(format!(
                "gathered values exceed the {} offset range of {}; use a large type",
                if T::Offset::IS_LARGE {
                    "64-bit"
                } else {
                    "32-bit"
                },
                a.data_type()
            ))
        })?);
    }
    out.truncate(pos);
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
