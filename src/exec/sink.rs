//! The Parquet sink: batches in, a Parquet file out, its column chunks encoded in parallel.
//!
//! Batches are buffered until a row group's worth (`row_group_rows` rows, or
//! [`FLUSH_BYTES`] of buffers, whichever comes first), then every column chunk of those row
//! groups is encoded at once on the pool (arrow-rs' `ArrowColumnWriter`, one per column and
//! row group) and the chunks are appended in order. The file is the same whatever the
//! thread count: row group boundaries depend only on the batches written.
//!
//! Dictionary encoding is chosen per column from the first row group: a writer that tries a
//! dictionary on a column of distinct values (ids, amounts, timestamps) hashes every value
//! only to fall back to plain pages, or keeps a dictionary as large as the data. A strided
//! sample of `s` rows decides: among `s` values drawn from `D` distinct ones, about
//! `s² / 2D` pairs repeat, so `D ≈ s² / 2·dups`; a dictionary is kept when that estimate is
//! below half the rows (each value repeating at least twice on average). A sample without
//! a repeat means (almost) distinct values: plain encoding.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::table::schema_mismatch;

/// Buffered bytes that end a row group early (wide rows), by default; under a memory limit
/// the pipeline asks for less.
pub const FLUSH_BYTES: usize = 128 << 20;

pub struct ParquetSink<W: Write + Send> {
    /// The output until the first row group fixes the properties.
    out: Option<W>,
    compression: Compression,
    file: Option<(SerializedFileWriter<W>, ArrowRowGroupWriterFactory)>,
    schema: SchemaRef,
    row_group_rows: usize,
    /// Buffered bytes that end a row group early.
    flush_bytes: usize,
    pending: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    groups: usize,
}

fn parquet_error(e: parquet::errors::ParquetError) -> Error {
    Error::Value(format!("writing Parquet: {e}"))
}

/// The compression of a name as pyarrow spells it (case-insensitive): none / uncompressed,
/// snappy, gzip, brotli, zstd, lz4 (raw LZ4 as pyarrow's "lz4").
pub fn compression(name: &str) -> Result<Compression> {
    use parquet::basic::{BrotliLevel, GzipLevel, ZstdLevel};
    Ok(match name.to_ascii_lowercase().as_str() {
        "none" | "uncompressed" => Compression::UNCOMPRESSED,
        "snappy" => Compression::SNAPPY,
        "gzip" => Compression::GZIP(GzipLevel::default()),
        "brotli" => Compression::BROTLI(BrotliLevel::default()),
        "zstd" => Compression::ZSTD(ZstdLevel::default()),
        "lz4" | "lz4_raw" => Compression::LZ4_RAW,
        _ => {
            return Err(Error::Value(format!(
                "unknown compression {name:?}: use one of 'none', 'snappy', 'gzip', 'brotli', \
                 'zstd', 'lz4'"
            )));
        }
    })
}

impl<W: Write + Send> ParquetSink<W> {
    pub fn new(
        out: W,
        schema: SchemaRef,
        compression: Compression,
        row_group_rows: usize,
        flush_bytes: usize,
    ) -> Result<Self> {
        if row_group_rows == 0 {
            return Err(Error::Value("row_group_size must be at least 1".into()));
        }
        Ok(ParquetSink {
            out: Some(out),
            compression,
            file: None,
            schema,
            row_group_rows,
            flush_bytes: flush_bytes.max(1),
            pending: Vec::new(),
            rows: 0,
            bytes: 0,
            groups: 0,
        })
    }

    /// The file writer, opened with dictionary encoding chosen from `sample` (see the module
    /// docs).
    fn open(&mut self, sample: &[RecordBatch]) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let mut props = WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_rows));
        for (c, field) in self.schema.fields().iter().enumerate() {
            if let Some(dictionary) = worth_a_dictionary(sample, c) {
                let path = parquet::schema::types::ColumnPath::new(vec![field.name().clone()]);
                props = props.set_column_dictionary_enabled(path, dictionary);
            }
        }
        let file = ArrowWriter::try_new(out, self.schema.clone(), Some(props.build()))
            .and_then(|w| w.into_serialized_writer())
            .map_err(parquet_error)?;
        self.file = Some(file);
        Ok(())
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(why) = schema_mismatch(&batch.schema(), &self.schema) {
            return Err(Error::Value(format!(
                "a record batch does not match the file's schema: {why}"
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        self.pending.push(batch.clone());
        if self.rows >= self.row_group_rows || self.bytes >= self.flush_bytes {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Write the footer; the writer is flushed, not closed.
    pub fn finish(mut self) -> Result<W> {
        self.flush(true)?;
        self.open(&[])?;
        let (writer, _) = self.file.take().expect("opened");
        writer.into_inner().map_err(parquet_error)
    }

    /// Encode the buffered rows as row groups of `row_group_rows` (the last one shorter only
    /// when `all`, or when the buffer is full by bytes), the rest kept for later.
    fn flush(&mut self, all: bool) -> Result<()> {
        let mut groups: Vec<Vec<RecordBatch>> = Vec::new();
        let mut group: Vec<RecordBatch> = Vec::new();
        let mut in_group = 0;
        let by_bytes = self.bytes >= self.flush_bytes;
        for b in std::mem::take(&mut self.pending) {
            let mut b = b;
            loop {
                let take = (self.row_group_rows - in_group).min(b.num_rows());
                group.push(b.slice(0, take));
                in_group += take;
                if in_group == self.row_group_rows {
                    groups.push(std::mem::take(&mut group));
                    in_group = 0;
                }
                if take == b.num_rows() {
                    break;
                }
                b = b.slice(take, b.num_rows() - take);
            }
        }
        if !group.is_empty() {
            if all || by_bytes {
                groups.push(group);
            } else {
                self.pending = group;
            }
        }
        self.rows = self.pending.iter().map(RecordBatch::num_rows).sum();
        self.bytes = self
            .pending
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        if groups.is_empty() {
            return Ok(());
        }
        self.open(&groups[0])?;
        let (writer, factory) = self.file.as_mut().expect("opened");
        // Every (row group, column) pair encoded in parallel.
        let fields = self.schema.fields().clone();
        let mut jobs = Vec::new();
        for (g, batches) in groups.iter().enumerate() {
            let writers = factory
                .create_column_writers(self.groups + g)
                .map_err(parquet_error)?;
            // One writer per leaf; a nested column has several, in field order.
            let mut writers = writers.into_iter();
            for (c, field) in fields.iter().enumerate() {
                let mut per_leaf: Vec<Vec<ArrowLeafColumn>> = Vec::new();
                for b in batches {
                    let leaves = compute_leaves(field, b.column(c)).map_err(parquet_error)?;
                    per_leaf.resize_with(leaves.len(), Vec::new);
                    for (k, l) in leaves.into_iter().enumerate() {
                        per_leaf[k].push(l);
                    }
                }
                for parts in per_leaf {
                    let w = writers.next().ok_or_else(|| {
                        Error::Value(format!("no Parquet column writer for {}", field.name()))
                    })?;
                    jobs.push((g, w, parts));
                }
            }
        }
        let chunks: Vec<(usize, ArrowColumnChunk)> = jobs
            .into_par_iter()
            .map(|(g, mut w, parts)| {
                crate::cancel::point();
                for p in &parts {
                    w.write(p).map_err(parquet_error)?;
                }
                Ok((g, w.close().map_err(parquet_error)?))
            })
            .collect::<Result<_>>()?;
        let mut chunks = chunks.into_iter().peekable();
        for g in 0..groups.len() {
            let mut rg = writer.next_row_group().map_err(parquet_error)?;
            while let Some((_, chunk)) = chunks.next_if(|(at, _)| *at == g) {
                chunk.append_to_row_group(&mut rg).map_err(parquet_error)?;
            }
            rg.close().map_err(parquet_error)?;
        }
        self.groups += groups.len();
        Ok(())
    }
}

/// Rows sampled to choose dictionary encoding.
const SAMPLE: usize = 4096;

/// Whether column `c` of `batches` is worth a dictionary (see the module docs); `None` for
/// a nested column (the writer's default) or a type the row format lacks.
fn worth_a_dictionary(batches: &[RecordBatch], c: usize) -> Option<bool> {
    use arrow_row::{RowConverter, SortField};
    let first = batches.first()?;
    let dt = first.schema().field(c).data_type().clone();
    if dt.is_nested() {
        return None;
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows < 2 {
        return Some(false);
    }
    let s = SAMPLE.min(rows);
    // Rows k·rows/s, taken batch by batch.
    let mut parts = Vec::new();
    let (mut k, mut base) = (0, 0);
    for b in batches {
        let mut idx = Vec::new();
        while k < s && k * rows / s < base + b.num_rows() {
            idx.push((k * rows / s - base) as u32);
            k += 1;
        }
        if !idx.is_empty() {
            let idx = arrow_array::UInt32Array::from(idx);
            parts.push(arrow_select::take::take(b.column(c), &idx, None).ok()?);
        }
        base += b.num_rows();
    }
    let converter = RowConverter::new(vec![SortField::new(dt)]).ok()?;
    let mut seen = hashbrown::HashSet::with_capacity(s);
    let mut dups = 0usize;
    for p in parts {
        let rows = converter.convert_columns(&[p]).ok()?;
        for r in rows.iter() {
            if !seen.insert(r.as_ref().to_vec()) {
                dups += 1;
            }
        }
    }
    Some(if s == rows {
        // Every row seen: D = rows - dups.
        2 * dups > rows
    } else {
        // D ≈ s² / 2·dups < rows / 2, without dividing.
        dups > 0 && s * s < rows * dups
    })
}
