//! Gathering rows: the output of sort and dedup is a list of row indices into the table's
//! chunks, materialized here.
//!
//! Fixed-width primitives (ints, floats, temporal, decimals) and offset-based strings /
//! binaries — the columns that dominate real tables — are gathered straight from the input
//! chunks by our own typed gathers (no concatenation of the input first). Every other type
//! (booleans, views, dictionaries, nested types) is concatenated once and gathered with
//! arrow's `take`, which handles all of Arrow.
//!
//! The indices are cut into fixed-size pieces; every (piece, column) pair is an independent
//! task, run in parallel, and each piece becomes one output record batch. Piece sizes depend
//! only on the row count, so the output never depends on the thread count.

use arrow_array::cast::AsArray;
use arrow_array::types::{ByteArrayType, GenericBinaryType, GenericStringType};
use arrow_array::{
    Array, ArrayRef, GenericByteArray, RecordBatch, RecordBatchOptions, UInt32Array, make_array,
};
use arrow_buffer::{
    ArrowNativeType, BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer,
};
use arrow_data::ArrayDataBuilder;
use arrow_schema::DataType;
use arrow_select::take::take;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::table::{RowLocator, Table, concat_chunks, native_values};

/// Rows per output batch.
pub const OUT_BATCH: usize = 1 << 20;
/// Copy window for short values: one unaligned 16-byte copy instead of a `memcpy` call.
const WORD: usize = 16;
/// Source columns up to this many bytes stay in cache: their gathers do not prefetch.
const CACHED: usize = 512 << 10;
/// How many rows ahead the gathers prefetch.
const AHEAD: usize = 16;

/// An index meaning "no row": the gathered value is null.
pub const NULL_ROW: u32 = u32::MAX;

/// The rows `indices` of `table`, in that order, with every index checked to be a row of
/// `table` (the entry point for indices from outside the core).
pub fn take_checked(table: &Table, indices: &[u32]) -> Result<Table> {
    let n = table.checked_num_rows()?;
    if let Some(&bad) = indices.iter().find(|&&i| i as usize >= n) {
        return Err(Error::Value(format!(
            "take: index {bad} is out of bounds for a table of {n} rows"
        )));
    }
    take_table(table, indices)
}

/// The rows `indices` of `table`, in that order.
pub fn take_table(table: &Table, indices: &[u32]) -> Result<Table> {
    // The output's size, scaled from the input's; its pieces are allocated inside gathers
    // and arrow-rs kernels that cannot fail gracefully, so the room is checked up front.
    let (n, bytes) = table
        .batches
        .iter()
        .fold((0usize, 0usize), |(n, b), batch| {
            let size: usize = batch
                .columns()
                .iter()
                .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
                .sum();
            (n + batch.num_rows(), b + size)
        });
    let out_bytes = (bytes as u128 * indices.len() as u128 / n.max(1) as u128) as usize;
    crate::mem::ensure(out_bytes, "the output table");
    let all: Vec<usize> = (0..table.schema.fields().len()).collect();
    let g = Gatherer::new(table, &all)?;
    let batches = pieces(indices, g.chunk_starts())
        .into_par_iter()
        .map(|range| {
            crate::cancel::point();
            let piece = &indices[range];
            let at = g.locate(piece);
            let cols = (0..all.len())
                .into_par_iter()
                .map(|c| g.gather(c, piece, &at))
                .collect::<Result<Vec<_>>>()?;
            batch(&table.schema, cols, piece.len())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Table {
        schema: table.schema.clone(),
        batches,
    })
}

/// The output pieces (one record batch each) of a gather by `indices`: ranges of at most
/// [`OUT_BATCH`] positions. When `indices` is non-decreasing, pieces are also cut where the
/// indices enter a new input chunk (`chunk_starts`), so that runs of consecutive rows become
/// zero-copy slices ([`Gatherer::locate`]). Boundaries depend only on the data, never on
/// the thread count.
pub fn pieces(indices: &[u32], chunk_starts: &[usize]) -> Vec<std::ops::Range<usize>> {
    let n = indices.len();
    let mut cuts: Vec<usize> = (0..n).step_by(OUT_BATCH).collect();
    if chunk_starts.len() > 1 && indices.par_windows(2).all(|w| w[0] <= w[1]) {
        cuts.extend(
            chunk_starts
                .iter()
                .map(|&s| indices.partition_point(|&i| (i as usize) < s)),
        );
        cuts.sort_unstable();
        cuts.dedup();
    }
    cuts.retain(|&c| c < n);
    if cuts.first() != Some(&0) {
        cuts.insert(0, 0);
    }
    cuts.push(n);
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// One output record batch of `rows` rows.
pub fn batch(
    schema: &arrow_schema::SchemaRef,
    cols: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    let opts = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &opts,
    )?)
}

/// Some columns of a table, prepared for gathering rows by global row number.
///
/// Every column shares the table's chunk boundaries, so rows are located once per piece
/// ([`Self::locate`]) for all columns. Chunks too small for a locator are concatenated (all
/// columns alike).
pub struct Gatherer {
    columns: Vec<Source>,
    at: RowLocator,
}

impl Gatherer {
    pub fn new(table: &Table, columns: &[usize]) -> Result<Self> {
        let lens: Vec<usize> = table
            .batches
            .iter()
            .map(|b| b.num_rows())
            .filter(|&l| l > 0)
            .collect();
        let at = RowLocator::new(&lens);
        let columns: Vec<Source> = columns
            .par_iter()
            .map(|&i| {
                Source::new(
                    table.chunks(i),
                    table.schema.field(i).data_type(),
                    at.is_none(),
                )
            })
            .collect::<Result<_>>()?;
        let at = at.unwrap_or_else(RowLocator::contiguous);
        Ok(Gatherer { columns, at })
    }

    /// First global row of each input chunk.
    pub fn chunk_starts(&self) -> &[usize] {
        self.at.chunk_starts()
    }

    /// Where the rows of `piece` are: a run of consecutive rows inside one chunk (gathered
    /// as a zero-copy slice), or (chunk, row within the chunk) per index, [`NULL_ROW`]
    /// becoming a null location.
    pub fn locate(&self, piece: &[u32]) -> Located {
        if let (Some(&first), Some(&last)) = (piece.first(), piece.last())
            && first != NULL_ROW
            && last >= first
            && (last - first) as usize == piece.len() - 1
            && piece.windows(2).all(|w| w[1] == w[0] + 1)
        {
            let (c0, r0) = self.at.locate(first as usize);
            let (c1, _) = self.at.locate(last as usize);
            if c0 == c1 {
                return Located::Run {
                    chunk: c0,
                    start: r0,
                    global: first as usize,
                };
            }
        }
        let present = piece.contains(&NULL_ROW).then(|| {
            NullBuffer::new(BooleanBuffer::collect_bool(piece.len(), |j| {
                piece[j] != NULL_ROW
            }))
        });
        if self.at.is_single() {
            return Located::Direct { present };
        }
        let loc = piece
            .iter()
            .map(|&i| {
                if i == NULL_ROW {
                    NULL_LOC
                } else {
                    let (c, r) = self.at.locate(i as usize);
                    (c as u32, r as u32)
                }
            })
            .collect();
        Located::Rows { loc, present }
    }

    /// Column `c` (the position in the list given to [`Self::new`]) at rows `piece`, located
    /// as `at`.
    pub fn gather(&self, c: usize, piece: &[u32], at: &Located) -> Result<ArrayRef> {
        match at {
            &Located::Run {
                chunk,
                start,
                global,
            } => Ok(self.columns[c].slice(chunk, start, global, piece.len())),
            Located::Direct { present } => self.columns[c].gather(piece, &InChunk0(piece), present),
            Located::Rows { loc, present } => {
                self.columns[c].gather(piece, &InChunks(loc), present)
            }
        }
    }
}

/// The rows of one output piece, located in the input chunks.
pub enum Located {
    /// Consecutive rows of chunk `chunk` from row `start` (global row number `global`).
    Run {
        chunk: usize,
        start: usize,
        global: usize,
    },
    /// Row by row from a single-chunk source: the indices are the rows.
    Direct { present: Option<NullBuffer> },
    /// Row by row.
    Rows {
        loc: Vec<Loc>,
        present: Option<NullBuffer>,
    },
}

/// Where each output row of a gather comes from.
trait Rows: Sync {
    fn len(&self) -> usize;
    /// (chunk, row within the chunk) of output row `j`; `None` for a null row.
    fn at(&self, j: usize) -> Option<(usize, usize)>;
}

/// Indices into a single chunk, [`NULL_ROW`] for null rows.
struct InChunk0<'a>(&'a [u32]);

impl Rows for InChunk0<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn at(&self, j: usize) -> Option<(usize, usize)> {
        let i = self.0[j];
        (i != NULL_ROW).then_some((0, i as usize))
    }
}

/// Located rows of a multi-chunk source.
struct InChunks<'a>(&'a [Loc]);

impl Rows for InChunks<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn at(&self, j: usize) -> Option<(usize, usize)> {
        let (c, r) = self.0[j];
        (c != NULL_LOC.0).then_some((c as usize, r as usize))
    }
}

/// A row's (chunk, row within the chunk).
pub type Loc = (u32, u32);
/// The location of [`NULL_ROW`].
const NULL_LOC: Loc = (u32::MAX, 0);

/// One input column, prepared for gathering.
enum Source {
    /// Fixed-width values of `width` bytes, gathered from the chunks' value buffers.
    Fixed {
        dt: DataType,
        width: usize,
        chunks: Vec<ArrayRef>,
    },
    /// utf8 / large_utf8 / binary / large_binary chunks.
    Bytes(Vec<ArrayRef>),
    /// Anything else: one concatenated array for arrow's `take`.
    Other(ArrayRef),
}

impl Source {
    fn new(chunks: Vec<ArrayRef>, dt: &DataType, make_contiguous: bool) -> Result<Self> {
        let fixed_width = match dt {
            DataType::Boolean | DataType::Null | DataType::Dictionary(_, _) => None,
            dt => dt
                .primitive_width()
                .filter(|w| matches!(w, 1 | 2 | 4 | 8 | 16)),
        };
        let bytes = matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
        );
        if chunks.is_empty() || !(bytes || fixed_width.is_some()) {
            return Ok(Source::Other(concat_chunks(&chunks, dt)?));
        }
        let chunks = if make_contiguous {
            vec![concat_chunks(&chunks, dt)?]
        } else {
            chunks
        };
        Ok(match fixed_width {
            Some(width) => Source::Fixed {
                dt: dt.clone(),
                width,
                chunks,
            },
            None => Source::Bytes(chunks),
        })
    }

    /// `len` rows of chunk `chunk` from `start` (global row `global`), zero-copy.
    fn slice(&self, chunk: usize, start: usize, global: usize, len: usize) -> ArrayRef {
        match self {
            Source::Fixed { chunks, .. } | Source::Bytes(chunks) => chunks[chunk].slice(start, len),
            // One concatenation of every chunk.
            Source::Other(a) => a.slice(global, len),
        }
    }

    /// Rows `idx` (global row numbers), located as `rows`; `present`: which indices are not
    /// [`NULL_ROW`] (`None`: all), shared by every column of a piece.
    fn gather(
        &self,
        idx: &[u32],
        rows: &impl Rows,
        present: &Option<NullBuffer>,
    ) -> Result<ArrayRef> {
        match self {
            Source::Other(a) if a.is_empty() => {
                Ok(arrow_array::new_null_array(a.data_type(), idx.len()))
            }
            Source::Other(a) => {
                let idx: UInt32Array = if present.is_some() {
                    idx.iter().map(|&i| (i != NULL_ROW).then_some(i)).collect()
                } else {
                    UInt32Array::from(idx.to_vec())
                };
                Ok(take(a.as_ref(), &idx, None)?)
            }
            Source::Fixed { dt, width, chunks } => {
                let far = chunks.iter().map(|c| c.len()).sum::<usize>() * width > CACHED;
                let values = match (width, far) {
                    (1, _) => gather_native::<u8, false>(chunks, rows),
                    (2, _) => gather_native::<u16, false>(chunks, rows),
                    (4, false) => gather_native::<u32, false>(chunks, rows),
                    (4, true) => gather_native::<u32, true>(chunks, rows),
                    (8, false) => gather_native::<u64, false>(chunks, rows),
                    (8, true) => gather_native::<u64, true>(chunks, rows),
                    (_, false) => gather_native::<i128, false>(chunks, rows),
                    (_, true) => gather_native::<i128, true>(chunks, rows),
                };
                let data = ArrayDataBuilder::new(dt.clone())
                    .len(rows.len())
                    .add_buffer(values)
                    .nulls(gather_nulls(chunks, rows, present))
                    .build()?;
                Ok(make_array(data))
            }
            Source::Bytes(chunks) => {
                let size: usize = chunks.iter().map(|c| c.get_buffer_memory_size()).sum();
                if size > CACHED {
                    bytes_of::<true>(chunks, rows, present)
                } else {
                    bytes_of::<false>(chunks, rows, present)
                }
            }
        }
    }
}

/// [`gather_bytes`] for the chunks' byte-array type.
fn bytes_of<const FAR: bool>(
    chunks: &[ArrayRef],
    rows: &impl Rows,
    present: &Option<NullBuffer>,
) -> Result<ArrayRef> {
    match chunks[0].data_type() {
        DataType::Utf8 => gather_bytes::<GenericStringType<i32>, FAR>(chunks, rows, present),
        DataType::LargeUtf8 => gather_bytes::<GenericStringType<i64>, FAR>(chunks, rows, present),
        DataType::Binary => gather_bytes::<GenericBinaryType<i32>, FAR>(chunks, rows, present),
        _ => gather_bytes::<GenericBinaryType<i64>, FAR>(chunks, rows, present),
    }
}

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

/// Validity of the gathered rows: `present` itself when no chunk has nulls, else built
/// straight into a bitmap.
fn gather_nulls(
    chunks: &[ArrayRef],
    rows: &impl Rows,
    present: &Option<NullBuffer>,
) -> Option<NullBuffer> {
    if chunks.iter().all(|c| c.null_count() == 0) {
        return present.clone();
    }
    let nulls: Vec<Option<&NullBuffer>> = chunks.iter().map(|c| c.nulls()).collect();
    Some(NullBuffer::new(BooleanBuffer::collect_bool(
        rows.len(),
        |j| {
            rows.at(j)
                .is_some_and(|(c, r)| nulls[c].is_none_or(|n| n.is_valid(r)))
        },
    )))
}

/// Gather of fixed-width values, as their bit patterns; from a source too big for the cache
/// (`FAR`), prefetching `AHEAD` rows ahead.
fn gather_native<N: ArrowNativeType, const FAR: bool>(
    chunks: &[ArrayRef],
    rows: &impl Rows,
) -> Buffer {
    let bufs: Vec<ScalarBuffer<N>> = chunks.iter().map(native_values).collect();
    let n = rows.len();
    let mut out: Vec<N> = crate::mem::with_capacity(n, "gathered values");
    out.extend((0..n).map(|j| {
        if FAR
            && j + AHEAD < n
            && let Some((c, r)) = rows.at(j + AHEAD)
        {
            prefetch(bufs[c].as_ptr().wrapping_add(r));
        }
        match rows.at(j) {
            Some((c, r)) => bufs[c][r],
            None => N::default(),
        }
    }));
    Buffer::from_vec(out)
}

/// Gather of offset-based byte arrays in one pass (the offset range is checked once, on the
/// total). Random rows of a source too big for the cache (`FAR`) cost two cache misses each
/// (offsets, then bytes), so the offsets are prefetched `AHEAD` rows ahead and the bytes
/// `AHEAD / 2` rows ahead. Values of at most 16 bytes are copied as one 16-byte block (the
/// output keeps 16 bytes of slack and each later value overwrites the previous spill), which
/// avoids a `memcpy` call per value.
fn gather_bytes<T: ByteArrayType, const FAR: bool>(
    chunks: &[ArrayRef],
    rows: &impl Rows,
    present: &Option<NullBuffer>,
) -> Result<ArrayRef> {
    let srcs: Vec<(&[T::Offset], &[u8])> = chunks
        .iter()
        .map(|a| {
            let a = a.as_bytes::<T>();
            (a.value_offsets(), a.values().as_slice())
        })
        .collect();
    let n = rows.len();
    let span = |c: usize, r: usize| {
        let off = srcs[c].0;
        (off[r].as_usize(), off[r + 1].as_usize())
    };
    let total_bytes: usize = srcs.iter().map(|s| s.1.len()).sum();
    let total_rows: usize = chunks.iter().map(|a| a.len()).sum();
    let mut offsets: Vec<T::Offset> = crate::mem::with_capacity(n + 1, "gathered offsets");
    offsets.push(T::Offset::usize_as(0));
    let mut out: Vec<u8> = crate::mem::filled(
        n * (total_bytes / total_rows.max(1)) + WORD,
        0u8,
        "gathered values",
    );
    let mut pos = 0usize;
    for j in 0..n {
        if FAR
            && j + AHEAD < n
            && let Some((c, r)) = rows.at(j + AHEAD)
        {
            prefetch(srcs[c].0.as_ptr().wrapping_add(r));
        }
        if FAR
            && j + AHEAD / 2 < n
            && let Some((c, r)) = rows.at(j + AHEAD / 2)
        {
            prefetch(srcs[c].1.as_ptr().wrapping_add(srcs[c].0[r].as_usize()));
        }
        if let Some((c, r)) = rows.at(j) {
            let (s, e) = span(c, r);
            let src = srcs[c].1;
            let len = e - s;
            if pos + len.max(WORD) > out.len() {
                let grow = (out.len() * 2).max(pos + len + WORD) - out.len();
                if out.try_reserve(grow).is_err() {
                    crate::mem::refuse(grow, "gathered values");
                }
                out.resize(out.len() + grow, 0);
            }
            if len <= WORD && s + WORD <= src.len() {
                out[pos..pos + WORD].copy_from_slice(&src[s..s + WORD]);
            } else {
                out[pos..pos + len].copy_from_slice(&src[s..e]);
            }
            pos += len;
        }
        offsets.push(T::Offset::usize_as(pos));
    }
    let total = pos;
    if T::Offset::from_usize(total).is_none() {
        return Err(Error::Value(format!(
            "gathered values exceed the offset range of {}; use the large type",
            T::DATA_TYPE
        )));
    }
    out.truncate(total);
    let nulls = gather_nulls(chunks, rows, present);
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // SAFETY: offsets are monotonic and end at `out.len()`; every value is a copy of a valid
    // value of the same type (so UTF-8 stays valid for strings).
    let out =
        unsafe { GenericByteArray::<T>::new_unchecked(offsets, Buffer::from_vec(out), nulls) };
    Ok(std::sync::Arc::new(out))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int32Array, ListArray, StringArray, types::Int32Type};
    use arrow_schema::{Field, Schema};

    use super::*;

    #[test]
    fn gathers_across_chunks_every_layout() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", DataType::new_list(DataType::Int32, true), true),
        ]));
        let batch = |i: Vec<Option<i32>>, s: Vec<Option<&str>>| {
            let l = ListArray::from_iter_primitive::<Int32Type, _, _>(
                i.iter().map(|v| v.map(|x| vec![Some(x)])),
            );
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int32Array::from(i)),
                    Arc::new(StringArray::from(s)),
                    Arc::new(l),
                ],
            )
            .unwrap()
        };
        let t = Table::try_new(
            schema.clone(),
            vec![
                batch(
                    vec![Some(1), None],
                    vec![Some("a long string over 16 bytes"), None],
                ),
                batch(vec![Some(3)], vec![Some("c")]),
            ],
        )
        .unwrap();
        let out = take_table(&t, &[2, 0, 1, 2]).unwrap();
        let b = &out.batches[0];
        let i = b.column(0).as_primitive::<Int32Type>();
        assert_eq!(
            i.iter().collect::<Vec<_>>(),
            vec![Some(3), Some(1), None, Some(3)]
        );
        let s = b.column(1).as_string::<i32>();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![
                Some("c"),
                Some("a long string over 16 bytes"),
                None,
                Some("c")
            ]
        );
        assert_eq!(b.column(2).as_list::<i32>().value(0).len(), 1);
        assert!(b.column(2).is_null(2));

        // NULL_ROW gives a null row in every layout, from one chunk or several, with the
        // source's own nulls kept.
        let one = Table::try_new(schema.clone(), vec![t.batches[0].clone()]).unwrap();
        for (table, idx) in [
            (&t, vec![NULL_ROW, 2, 1, 0]),
            (&one, vec![NULL_ROW, 0, 1, 0]),
        ] {
            let out = take_table(table, &idx).unwrap();
            let b = &out.batches[0];
            let i = b.column(0).as_primitive::<Int32Type>();
            let s = b.column(1).as_string::<i32>();
            assert_eq!(i.null_count(), 2);
            assert!(i.is_null(0) && i.is_null(2) && s.is_null(0) && s.is_null(2));
            assert!(b.column(2).is_null(0));
            assert_eq!(s.value(3), "a long string over 16 bytes");
        }

        // Indices from outside the core are checked: NULL_ROW and any index past the end
        // are errors, not panics.
        assert_eq!(take_checked(&t, &[2, 0]).unwrap().num_rows(), 2);
        for bad in [3, NULL_ROW] {
            let e = take_checked(&t, &[0, bad]).unwrap_err().to_string();
            assert!(e.contains("out of bounds for a table of 3 rows"), "{e}");
        }
    }
}
