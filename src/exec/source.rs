//! Sources of the executor. A source hands out *inputs* in order, one wave at a time
//! ([`Source::claim`], serial); each input is decoded by [`Source::read`], which runs on many
//! threads at once. A Parquet row group is an input (decoded in parallel); an Arrow IPC or
//! CSV file and a stream of batches are read serially by `claim` and hand out ready batches.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection,
};

use crate::error::{Error, Result};
use crate::expr::bind::bind;
use crate::expr::{Call, Expr};
use crate::read_at::ReadAt;

/// One unit of work handed out by a source.
pub enum Input {
    /// A piece the source decodes in [`Source::read`] (a Parquet row group).
    Piece(usize),
    /// A batch already read.
    Batch(RecordBatch),
}

pub trait Source: Send + Sync {
    fn schema(&self) -> SchemaRef;
    /// Up to `n` more inputs, in source order; none once the source is exhausted.
    fn claim(&mut self, n: usize) -> Result<Vec<Input>>;
    /// The batches of one input (called concurrently).
    fn read(&self, input: Input) -> Result<Vec<RecordBatch>> {
        match input {
            Input::Batch(b) => Ok(vec![b]),
            Input::Piece(_) => Err(Error::Value("this source has no pieces".into())),
        }
    }
    /// Rows decoded to produce `input` (a row group's rows, before a pushed filter), when
    /// that differs from the rows it yields.
    fn rows_read(&self, _input: &Input) -> Option<u64> {
        None
    }
    /// Under a memory limit, before the first claim: cut inputs larger than a batch into
    /// inputs of a batch each where the source can (a wave's inputs are all decoded at
    /// once, outside the reservations), a batch being of at most about `batch_bytes`
    /// decoded bytes where the source can tell from its metadata. The rows it yields stay
    /// the same, in the same order.
    fn bound_inputs(&mut self, _batch_bytes: u64) {}
    /// Whether [`Source::read_wave`] reads a wave's inputs together with less work than
    /// [`Source::read`] one by one.
    fn reads_waves(&self) -> bool {
        false
    }
    /// The batches of each of a wave's inputs, in order: the same as [`Source::read`] of
    /// each (called on the pool, once per wave, the waves in order).
    fn read_wave(&self, inputs: Vec<Input>) -> Vec<Result<Vec<RecordBatch>>> {
        inputs.into_par_iter().map(|i| self.read(i)).collect()
    }
}

/// A batch from outside must have the declared schema before any operator reads it.
fn check_schema(b: &RecordBatch, want: &Schema) -> Result<()> {
    match crate::table::schema_mismatch(&b.schema(), want) {
        Some(why) => Err(Error::Value(format!(
            "a record batch does not match the stream's schema: {why}"
        ))),
        None => Ok(()),
    }
}

/// Slices of at most `size` rows of `b`.
pub fn split(b: RecordBatch, size: usize) -> Vec<RecordBatch> {
    if b.num_rows() <= size {
        return vec![b];
    }
    (0..b.num_rows())
        .step_by(size)
        .map(|o| b.slice(o, size.min(b.num_rows() - o)))
        .collect()
}

/// Batches held in memory (a table, or an operator's finished output).
pub struct Batches {
    schema: SchemaRef,
    batches: std::vec::IntoIter<RecordBatch>,
}

impl Batches {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>, size: usize) -> Self {
        let batches: Vec<RecordBatch> = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .flat_map(|b| split(b, size))
            .collect();
        Batches {
            schema,
            batches: batches.into_iter(),
        }
    }
}

impl Source for Batches {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn claim(&mut self, n: usize) -> Result<Vec<Input>> {
        Ok(self.batches.by_ref().take(n).map(Input::Batch).collect())
    }
}

/// A one-pass stream of batches (a reader handed in by the caller), checked against its
/// declared schema batch by batch.
pub struct Stream {
    schema: SchemaRef,
    iter: std::sync::Mutex<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>>,
    size: usize,
    done: bool,
}

impl Stream {
    pub fn new(
        schema: SchemaRef,
        iter: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
        size: usize,
    ) -> Self {
        Stream {
            schema,
            iter: std::sync::Mutex::new(iter),
            size,
            done: false,
        }
    }
}

impl Source for Stream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn claim(&mut self, n: usize) -> Result<Vec<Input>> {
        let mut out = Vec::new();
        let iter = self.iter.get_mut().unwrap_or_else(|e| e.into_inner());
        while !self.done && out.len() < n {
            match iter.next() {
                None => self.done = true,
                Some(b) => {
                    let b = b?;
                    check_schema(&b, &self.schema)?;
                    out.extend(split(b, self.size).into_iter().map(Input::Batch));
                }
            }
        }
        Ok(out)
    }
}

/// Arrow IPC files (file format), read batch by batch with `arrow-ipc`.
pub struct Ipc {
    schema: SchemaRef,
    files: std::vec::IntoIter<PathBuf>,
    reader: Option<arrow_ipc::reader::FileReader<std::io::BufReader<File>>>,
    projection: Vec<usize>,
    size: usize,
}

impl Ipc {
    pub fn new(files: Vec<PathBuf>, columns: Option<&[String]>, size: usize) -> Result<Self> {
        let first = files
            .first()
            .ok_or_else(|| Error::Value("no input files".into()))?;
        let r = open_ipc(first)?;
        let file_schema = r.schema();
        let projection = projection(&file_schema, columns)?;
        Ok(Ipc {
            schema: Arc::new(file_schema.project(&projection)?),
            files: files.into_iter(),
            reader: None,
            projection,
            size,
        })
    }
}

fn open_ipc(path: &PathBuf) -> Result<arrow_ipc::reader::FileReader<std::io::BufReader<File>>> {
    let f = File::open(path)
        .map_err(|e| Error::Value(format!("cannot open {}: {e}", path.display())))?;
    arrow_ipc::reader::FileReader::try_new_buffered(f, None)
        .map_err(|e| Error::Value(format!("{}: not an Arrow IPC file: {e}", path.display())))
}

fn projection(schema: &Schema, columns: Option<&[String]>) -> Result<Vec<usize>> {
    match columns {
        None => Ok((0..schema.fields().len()).collect()),
        Some(cols) => cols
            .iter()
            .map(|c| {
                schema.index_of(c).map_err(|_| {
                    Error::column_not_found(c, schema.fields().iter().map(|f| f.name().as_str()))
                })
            })
            .collect(),
    }
}

impl Source for Ipc {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn claim(&mut self, n: usize) -> Result<Vec<Input>> {
        let mut out = Vec::new();
        while out.len() < n {
            if self.reader.is_none() {
                match self.files.next() {
                    None => break,
                    Some(p) => self.reader = Some(open_ipc(&p)?),
                }
            }
            match self.reader.as_mut().and_then(|r| r.next()) {
                None => self.reader = None,
                Some(b) => {
                    let b = b?.project(&self.projection)?;
                    check_schema(&b, &self.schema)?;
                    out.extend(split(b, self.size).into_iter().map(Input::Batch));
                }
            }
        }
        Ok(out)
    }
}

/// CSV files with a header, read by `arrow-csv` with the schema pyarrow infers (so both
/// readers give the same types), and pyarrow's null rule: in non-string columns the values of
/// pyarrow's default `null_values` are null; string columns are never null (pyarrow's
/// `strings_can_be_null=False`). arrow-csv has one null rule per reader, so string and other
/// columns are read by two readers in lockstep over the same lines and zipped. Booleans are
/// read as text and parsed with pyarrow's `true_values` / `false_values`, which arrow-csv's
/// parser does not share.
pub struct Csv {
    schema: SchemaRef,
    file_schema: SchemaRef,
    /// `file_schema` with booleans as strings: what arrow-csv parses.
    read_schema: SchemaRef,
    files: std::vec::IntoIter<PathBuf>,
    readers: Vec<arrow_csv::reader::BufReader<std::io::BufReader<File>>>,
    path: PathBuf,
    /// Per reader: its file column indices and, per output column, (reader, column in it).
    groups: Vec<Vec<usize>>,
    layout: Vec<(usize, usize)>,
    size: usize,
}

/// Text as pyarrow's CSV reader converts it to bool (its default `true_values` and
/// `false_values`); the first other value is the error.
fn csv_bool(a: &arrow_array::ArrayRef) -> std::result::Result<arrow_array::ArrayRef, String> {
    let s = arrow_array::cast::AsArray::as_string::<i32>(a);
    let out: BooleanArray = s
        .iter()
        .map(|v| match v {
            None => Ok(None),
            Some("1" | "True" | "TRUE" | "true") => Ok(Some(true)),
            Some("0" | "False" | "FALSE" | "false") => Ok(Some(false)),
            Some(v) => Err(v.to_string()),
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(Arc::new(out))
}

/// pyarrow's default CSV `null_values`, as one anchored pattern.
const CSV_NULLS: &str = r"^(|#N/A|#N/A N/A|#NA|-1\.#IND|-1\.#QNAN|-NaN|-nan|1\.#IND|1\.#QNAN|N/A|NA|NULL|NaN|n/a|nan|null)$";

impl Csv {
    pub fn new(
        files: Vec<PathBuf>,
        file_schema: SchemaRef,
        columns: Option<&[String]>,
        size: usize,
    ) -> Result<Self> {
        let projection = projection(&file_schema, columns)?;
        let is_string = |i: usize| {
            matches!(
                file_schema.field(i).data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        };
        let strings: Vec<usize> = projection
            .iter()
            .copied()
            .filter(|&i| is_string(i))
            .collect();
        let others: Vec<usize> = projection
            .iter()
            .copied()
            .filter(|&i| !is_string(i))
            .collect();
        let groups: Vec<Vec<usize>> = [others, strings]
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect();
        let layout = projection
            .iter()
            .map(|i| {
                let g = groups
                    .iter()
                    .position(|g| g.contains(i))
                    .expect("every column in a group");
                (
                    g,
                    groups[g].iter().position(|j| j == i).expect("in its group"),
                )
            })
            .collect();
        let read_schema = Arc::new(Schema::new(
            file_schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Boolean => f.as_ref().clone().with_data_type(DataType::Utf8),
                    _ => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        ));
        Ok(Csv {
            schema: Arc::new(file_schema.project(&projection)?),
            file_schema,
            read_schema,
            files: files.into_iter(),
            readers: Vec::new(),
            path: PathBuf::new(),
            groups,
            layout,
            size,
        })
    }

    fn open(&mut self, p: PathBuf) -> Result<()> {
        let nulls = regex::Regex::new(CSV_NULLS).expect("a valid pattern");
        let never = regex::Regex::new(r"[^\s\S]").expect("a valid pattern");
        self.readers.clear();
        for g in &self.groups {
            let f = File::open(&p)
                .map_err(|e| Error::Value(format!("cannot open {}: {e}", p.display())))?;
            let strings = matches!(
                self.file_schema.field(g[0]).data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            let r = arrow_csv::ReaderBuilder::new(self.read_schema.clone())
                .with_header(true)
                .with_batch_size(self.size)
                .with_projection(g.clone())
                .with_null_regex(if strings {
                    never.clone()
                } else {
                    nulls.clone()
                })
                .build_buffered(std::io::BufReader::with_capacity(1 << 20, f))
                .map_err(|e| Error::Value(format!("{}: {e}", p.display())))?;
            self.readers.push(r);
        }
        self.path = p;
        Ok(())
    }
}

impl Source for Csv {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn claim(&mut self, n: usize) -> Result<Vec<Input>> {
        let mut out = Vec::new();
        while out.len() < n {
            if self.readers.is_empty() {
                match self.files.next() {
                    None => break,
                    Some(p) => self.open(p)?,
                }
                if self.readers.is_empty() {
                    if self.file_schema.fields().is_empty() {
                        return Err(Error::Value(format!("{}: no columns", self.path.display())));
                    }
                    // No column is needed: count the lines with one reader of the first column.
                    self.groups = vec![vec![0]];
                    let p = self.path.clone();
                    self.open(p)?;
                    self.groups.clear();
                }
            }
            let path = self.path.display().to_string();
            let parts: Vec<Option<RecordBatch>> = self
                .readers
                .iter_mut()
                .map(|r| {
                    r.next()
                        .transpose()
                        .map_err(|e| Error::Value(format!("{path}: {e}")))
                })
                .collect::<Result<_>>()?;
            if parts.iter().any(Option::is_none) {
                self.readers.clear();
                continue;
            }
            let parts: Vec<RecordBatch> = parts.into_iter().flatten().collect();
            let rows = parts[0].num_rows();
            let cols = self
                .layout
                .iter()
                .zip(self.schema.fields())
                .map(|(&(g, c), f)| {
                    let a = parts[g].column(c).clone();
                    match f.data_type() {
                        DataType::Boolean => csv_bool(&a).map_err(|v| {
                            Error::Value(format!(
                                "{path}: column {:?}: CSV conversion error to bool: invalid \
                                 value {v:?}",
                                f.name()
                            ))
                        }),
                        _ => Ok(a),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
            out.push(Input::Batch(RecordBatch::try_new_with_options(
                self.schema.clone(),
                cols,
                &opts,
            )?));
        }
        Ok(out)
    }
}

/// Parquet files, decoded row group by row group in parallel with the `parquet` crate: only
/// the needed columns; row groups whose statistics rule the pushed predicate out are never
/// read; the predicate's columns are decoded first and the other columns only for the rows
/// that pass (arrow-rs' `RowFilter`).
pub struct Parquet {
    schema: SchemaRef,
    files: Vec<(PathBuf, ArrowReaderMetadata)>,
    /// (file, row group) in file order, after pruning.
    pieces: Vec<(usize, usize)>,
    /// Per piece: the rows of the pages the page index does not rule out (`None`: all).
    pages: Vec<Option<RowSelection>>,
    /// Whether the page index ruled pages out.
    pages_pruned: bool,
    next: usize,
    /// Root column indices to decode, per file; output order by `columns`.
    columns: Vec<String>,
    predicate: Option<Expr>,
    size: usize,
    /// Per piece, once [`Source::bound_inputs`] cut the row groups: its first row in its
    /// row group.
    starts: Vec<usize>,
    /// Row groups read in part, by (file, row group) ([`Parquet::read_wave`]).
    open: std::sync::Mutex<std::collections::HashMap<(usize, usize), OpenRowGroup>>,
}

/// The column readers of a row group read in part, and the row they stopped at.
struct OpenRowGroup {
    at: usize,
    readers: Vec<ParquetRecordBatchReader>,
}

/// What a Parquet scan will decode, from the metadata alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reads {
    pub row_groups: usize,
    pub row_groups_total: usize,
    /// Rows of the kept row groups, less the pages the page index rules out.
    pub rows: u64,
    pub rows_total: u64,
    /// Whether the page index ruled pages out.
    pub pages_pruned: bool,
}

impl Parquet {
    /// A reader of root columns `cols` of row group `g` of file `fi` (only `selection`'s
    /// rows) in batches of `size` rows: arrays sized to the batch, never one
    /// row-group-sized array grown by doubling while it is decoded.
    fn reader(
        &self,
        fi: usize,
        g: usize,
        cols: &[usize],
        selection: Option<RowSelection>,
    ) -> Result<ParquetRecordBatchReader> {
        let (path, meta) = &self.files[fi];
        let f = PagedFile::open(path)?;
        let mask = ProjectionMask::roots(meta.parquet_schema(), cols.iter().copied());
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta.clone())
            .with_row_groups(vec![g])
            .with_batch_size(self.size.max(1))
            .with_projection(mask);
        if let Some(sel) = selection {
            builder = builder.with_row_selection(sel);
        }
        builder.build().map_err(|e| read_error(path, e))
    }

    /// The next batch of `reader` (of file `fi`).
    fn next_batch(
        &self,
        fi: usize,
        reader: &mut ParquetRecordBatchReader,
    ) -> Option<Result<RecordBatch>> {
        crate::cancel::point();
        let path = &self.files[fi].0;
        reader
            .next()
            .map(|b| b.map_err(|e| Error::Value(format!("{}: {e}", path.display()))))
    }

    /// Positions in `cols` (root columns of `file_schema` in file order) of the output
    /// columns, in `columns` order.
    fn output_order(&self, file_schema: &Schema, cols: &[usize]) -> Vec<usize> {
        self.columns
            .iter()
            .map(|c| {
                let at = file_schema.index_of(c).expect("checked");
                cols.iter().position(|&x| x == at).expect("decoded")
            })
            .collect()
    }

    /// A decoded batch (its columns in file order) as an output batch.
    fn output(&self, batch: &RecordBatch, order: &[usize]) -> Result<RecordBatch> {
        let b = batch.project(order)?;
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            b.columns().to_vec(),
            &opts,
        )?)
    }

    /// Decoded bytes of a row of the output columns, estimated from the first file's
    /// metadata: a fixed-width column's width; another column's uncompressed bytes per row
    /// in the file (its pages, dictionary included) plus 8 (offsets, or a list's).
    fn row_bytes(&self) -> u64 {
        let Some((_, meta)) = self.files.first() else {
            return 1;
        };
        let meta = meta.metadata();
        let rows = meta.file_metadata().num_rows().max(1) as u64;
        let mut file_bytes: std::collections::HashMap<&str, u64> = Default::default();
        for rg in meta.row_groups() {
            for c in rg.columns() {
                if let Some(root) = c.column_path().parts().first() {
                    *file_bytes.entry(root.as_str()).or_default() +=
                        c.uncompressed_size().max(0) as u64;
                }
            }
        }
        self.schema
            .fields()
            .iter()
            .map(|f| match f.data_type().primitive_width() {
                Some(w) => w as u64,
                None => file_bytes.get(f.name().as_str()).copied().unwrap_or(0) / rows + 8,
            })
            .sum()
    }

    /// Rows of row group `g` of file `fi`.
    fn group_rows(&self, fi: usize, g: usize) -> usize {
        self.files[fi].1.metadata().row_group(g).num_rows().max(0) as usize
    }

    /// The batches of `pieces` pieces of `size` rows (the last may be shorter; one of no
    /// rows has none) of row group `g` of file `fi` from row `start`, with the readers left
    /// there by the previous pieces when there are some.
    fn read_run(
        &self,
        fi: usize,
        g: usize,
        start: usize,
        pieces: usize,
    ) -> Result<Vec<Vec<RecordBatch>>> {
        let (path, meta) = &self.files[fi];
        let file_schema = meta.schema().clone();
        let n = self.group_rows(fi, g);
        let cols = root_columns(&file_schema, &self.columns)?;
        let kept = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.remove(&(fi, g)) {
                Some(o) if o.at == start => Some(o.readers),
                _ => None,
            }
        };
        let readers = match kept {
            Some(r) => r,
            None => {
                let rest = RowSelection::from_consecutive_ranges(std::iter::once(start..n), n);
                cols.iter()
                    .map(|&c| self.reader(fi, g, &[c], Some(rest.clone())))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let decoded = readers
            .into_par_iter()
            .map(|mut reader| {
                let mut batches = Vec::with_capacity(pieces);
                for _ in 0..pieces {
                    match self.next_batch(fi, &mut reader) {
                        Some(b) => batches.push(b?),
                        None => break,
                    }
                }
                Ok((reader, batches))
            })
            .collect::<Result<Vec<_>>>()?;
        let read_schema = Arc::new(file_schema.project(&cols)?);
        let order = self.output_order(&file_schema, &cols);
        let mut out = Vec::with_capacity(pieces);
        let mut end = start;
        for j in 0..pieces {
            let rows = self.size.min(n.saturating_sub(start + j * self.size));
            if rows == 0 {
                out.push(vec![]);
                continue;
            }
            if decoded
                .iter()
                .any(|(_, b)| b.get(j).map(RecordBatch::num_rows) != Some(rows))
            {
                return Err(Error::Value(format!(
                    "{}: the columns of row group {g} have different row counts",
                    path.display()
                )));
            }
            let columns: Vec<_> = decoded
                .iter()
                .map(|(_, b)| b[j].column(0).clone())
                .collect();
            let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
            let b = RecordBatch::try_new_with_options(read_schema.clone(), columns, &opts)?;
            out.push(vec![self.output(&b, &order)?]);
            end += rows;
        }
        if end < n {
            let readers = decoded.into_iter().map(|(r, _)| r).collect();
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.insert((fi, g), OpenRowGroup { at: end, readers });
        }
        Ok(out)
    }

    /// The row groups and rows this scan decodes (after statistics and page-index pruning).
    pub fn reads(&self) -> Reads {
        let total = |f: &(PathBuf, ArrowReaderMetadata)| {
            let md = f.1.metadata();
            (
                md.num_row_groups(),
                md.file_metadata().num_rows().max(0) as u64,
            )
        };
        Reads {
            row_groups: self.pieces.len(),
            row_groups_total: self.files.iter().map(|f| total(f).0).sum(),
            rows: (0..self.pieces.len())
                .filter_map(|i| self.rows_read(&Input::Piece(i)))
                .sum(),
            rows_total: self.files.iter().map(|f| total(f).1).sum(),
            pages_pruned: self.pages_pruned,
        }
    }

    pub fn new(
        files: Vec<PathBuf>,
        columns: Option<&[String]>,
        predicate: Option<Expr>,
        size: usize,
        dictionary: &[String],
        narrow: &[String],
    ) -> Result<Self> {
        // The page index (per-page statistics and offsets) only serves a pushed predicate.
        let policy = match predicate {
            Some(_) => parquet::file::metadata::PageIndexPolicy::Optional,
            None => parquet::file::metadata::PageIndexPolicy::Skip,
        };
        let opts = ArrowReaderOptions::new().with_page_index_policy(policy);
        let mut metas = Vec::with_capacity(files.len());
        for p in files {
            let f = File::open(&p)
                .map_err(|e| Error::Value(format!("cannot open {}: {e}", p.display())))?;
            let m = ArrowReaderMetadata::load(&f, opts.clone())
                .map_err(|e| Error::Value(format!("{}: not a Parquet file: {e}", p.display())))?;
            metas.push((p, m));
        }
        let first = metas
            .first()
            .ok_or_else(|| Error::Value("no input files".into()))?
            .1
            .schema()
            .clone();
        let idx = projection(&first, columns)?;
        let schema = Arc::new(first.project(&idx)?);
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut pieces = Vec::new();
        let mut pages = Vec::new();
        for (fi, (path, m)) in metas.iter().enumerate() {
            let s = m.schema();
            for c in columns.iter() {
                let want = schema.field_with_name(c)?;
                match s.field_with_name(c) {
                    Ok(f) if f.data_type() == want.data_type() => {}
                    Ok(f) => {
                        return Err(Error::Value(format!(
                            "{}: column {c:?} is {} where the first file has {}",
                            path.display(),
                            f.data_type(),
                            want.data_type()
                        )));
                    }
                    Err(_) => {
                        return Err(Error::Value(format!("{}: no column {c:?}", path.display())));
                    }
                }
            }
            let keep = match &predicate {
                Some(p) => prune(p, m),
                None => vec![true; m.metadata().num_row_groups()],
            };
            for (g, _) in keep.into_iter().enumerate().filter(|(_, k)| *k) {
                let sel = predicate.as_ref().and_then(|p| prune_pages(p, m, g));
                if sel.as_ref().is_some_and(|s| !s.selects_any()) {
                    continue;
                }
                pieces.push((fi, g));
                pages.push(sel);
            }
        }
        // A string column is read as a dictionary only where every row group stores it
        // dictionary-encoded: a chunk whose dictionary overflowed into plain pages would be
        // decoded to strings and hashed into a new dictionary row by row (twice the work of
        // reading the strings, which the consumer hashes anyway).
        let mut dictionary: Vec<String> = dictionary
            .iter()
            .filter(|c| metas.iter().all(|(_, m)| dictionary_encoded(m, c)))
            .cloned()
            .collect();
        // String columns the pushed predicate alone reads (no output has them) are read as
        // dictionaries too where the predicate evaluates natively on dictionaries: it then
        // compares each page's distinct values once instead of every row's string.
        if let Some(p) = &predicate {
            let only: Vec<String> = p
                .columns()
                .into_iter()
                .filter(|c| !columns.contains(c) && !dictionary.contains(c))
                .filter(|c| {
                    first
                        .field_with_name(c)
                        .is_ok_and(|f| matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View))
                })
                .filter(|c| metas.iter().all(|(_, m)| dictionary_encoded(m, c)))
                .collect();
            if !only.is_empty() {
                let fields: Vec<arrow_schema::FieldRef> = first
                    .fields()
                    .iter()
                    .map(|f| match only.contains(f.name()) {
                        true => Arc::new(f.as_ref().clone().with_data_type(DataType::Dictionary(
                            Box::new(DataType::Int32),
                            Box::new(DataType::Utf8),
                        ))),
                        false => f.clone(),
                    })
                    .collect();
                let native = bind(p, &Arc::new(Schema::new(fields)), &mut |_: &Call, _| {
                    Err(Error::Value("not native".into()))
                })
                .is_ok();
                if native {
                    dictionary.extend(only);
                }
            }
        }
        // String columns read as dictionaries (their values decoded once per page, rows as
        // codes) and decimals of at most 18 digits read as decimal64 (marked, see
        // `crate::expr::NARROWED`): the reading schema differs from the file's in those
        // columns only.
        if !dictionary.is_empty() || !narrow.is_empty() {
            for (path, m) in metas.iter_mut() {
                let fields: Vec<arrow_schema::FieldRef> = m
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                            if dictionary.contains(f.name()) =>
                        {
                            let value = if f.data_type() == &DataType::LargeUtf8 {
                                DataType::LargeUtf8
                            } else {
                                DataType::Utf8
                            };
                            let t =
                                DataType::Dictionary(Box::new(DataType::Int32), Box::new(value));
                            Arc::new(f.as_ref().clone().with_data_type(t))
                        }
                        &DataType::Decimal128(p, s) if p <= 18 && narrow.contains(f.name()) => {
                            Arc::new(crate::expr::narrowed(f.as_ref(), p, s))
                        }
                        _ => f.clone(),
                    })
                    .collect();
                let full = Arc::new(Schema::new_with_metadata(
                    fields,
                    m.schema().metadata().clone(),
                ));
                *m = ArrowReaderMetadata::try_new(
                    m.metadata().clone(),
                    ArrowReaderOptions::new().with_schema(full),
                )
                .map_err(|e| read_error(path, e))?;
            }
        }
        let read_schema = metas[0].1.schema();
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| read_schema.field_with_name(c).cloned())
                .collect::<std::result::Result<Vec<_>, _>>()?,
        ));
        Ok(Parquet {
            schema,
            files: metas,
            pieces,
            pages_pruned: pages.iter().any(Option::is_some),
            pages,
            next: 0,
            columns,
            predicate,
            size,
            starts: Vec::new(),
            open: Default::default(),
        })
    }
}

/// Whether every data page of the top-level column `name`, in every row group of the file,
/// is dictionary-encoded, as the chunks' page encoding statistics say. A chunk whose
/// dictionary overflowed falls back to plain pages (a dictionary page alone proves nothing):
/// read as a dictionary, its strings would be hashed into one. No statistics: no.
fn dictionary_encoded(m: &ArrowReaderMetadata, name: &str) -> bool {
    use parquet::basic::{Encoding, PageType};
    let descr = m.metadata().file_metadata().schema_descr();
    let Some(leaf) = (0..descr.num_columns()).find(|&i| descr.column(i).path().parts() == [name])
    else {
        return false;
    };
    let dict = |e: Encoding| matches!(e, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY);
    m.metadata().row_groups().iter().all(|rg| {
        let c = rg.column(leaf);
        let pages_dict = if let Some(mask) = c.page_encoding_stats_mask() {
            mask.is_only(Encoding::PLAIN_DICTIONARY) || mask.is_only(Encoding::RLE_DICTIONARY)
        } else if let Some(stats) = c.page_encoding_stats() {
            stats
                .iter()
                .filter(|s| matches!(s.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2))
                .all(|s| dict(s.encoding))
        } else {
            false
        };
        c.dictionary_page_offset().is_some() && pages_dict
    })
}

impl Source for Parquet {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Up to `n` row groups, or all the rest when fewer than `n / 2` would remain: a last
    /// wave of one row group would leave the other threads little to do.
    fn claim(&mut self, n: usize) -> Result<Vec<Input>> {
        let len = self.pieces.len();
        let mut end = (self.next + n).min(len);
        if len - end <= n / 2 {
            end = len;
        }
        let out = (self.next..end).map(Input::Piece).collect();
        self.next = end;
        Ok(out)
    }

    /// One row group: without a predicate, its columns decoded; with one, the predicate's
    /// columns first, then the other columns — all of them, filtered afterwards, when more
    /// than a quarter of the rows pass (skipping costs more than decoding then), else only
    /// the passing rows (a `RowSelection` from the mask). Either way the output is the
    /// passing rows in batches of `size` rows, so results do not depend on the choice.
    fn read(&self, input: Input) -> Result<Vec<RecordBatch>> {
        let i = match input {
            Input::Piece(i) => i,
            Input::Batch(b) => return Ok(vec![b]),
        };
        let (fi, g) = self.pieces[i];
        let pages = &self.pages[i];
        let (path, meta) = &self.files[fi];
        let file_schema = meta.schema().clone();
        let index = |names: &[String]| root_columns(&file_schema, names);
        // Decode root columns `cols` of the row group (only `selection`'s rows).
        let decode_columns =
            |cols: &[usize], selection: Option<RowSelection>| -> Result<Vec<RecordBatch>> {
                let mut reader = self.reader(fi, g, cols, selection)?;
                let mut batches = Vec::new();
                while let Some(b) = self.next_batch(fi, &mut reader) {
                    batches.push(b?);
                }
                Ok(batches)
            };
        // The same, each column by its own reader, in parallel (a file of one row group is
        // not one thread's work), the columns then side by side: every reader cuts the same
        // rows into the same batches.
        let decode = |cols: &[usize],
                      selection: Option<RowSelection>|
         -> Result<Vec<RecordBatch>> {
            if cols.len() < 2 {
                return decode_columns(cols, selection);
            }
            let parts = cols
                .par_iter()
                .map(|&c| decode_columns(&[c], selection.clone()))
                .collect::<Result<Vec<_>>>()?;
            let schema = Arc::new(file_schema.project(cols)?);
            (0..parts[0].len())
                .map(|i| {
                    let rows = parts[0][i].num_rows();
                    if parts
                        .iter()
                        .any(|p| p.get(i).map(RecordBatch::num_rows) != Some(rows))
                    {
                        return Err(Error::Value(format!(
                            "{}: the columns of row group {g} have different row counts",
                            path.display()
                        )));
                    }
                    let columns = parts.iter().map(|p| p[i].column(0).clone()).collect();
                    let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
                    Ok(RecordBatch::try_new_with_options(
                        schema.clone(),
                        columns,
                        &opts,
                    )?)
                })
                .collect()
        };
        // One batch of `cols` (the predicate's path works on the whole row group).
        let decode_one = |cols: &[usize], selection: Option<RowSelection>| -> Result<RecordBatch> {
            let batches = decode(cols, selection)?;
            let schema = Arc::new(file_schema.project(cols)?);
            Ok(match batches.len() {
                1 => batches.into_iter().next().expect("one"),
                _ => arrow_select::concat::concat_batches(&schema, &batches)?,
            })
        };
        let out_cols = index(&self.columns)?;
        let (batches, cols) = match &self.predicate {
            None => (decode(&out_cols, pages.clone())?, out_cols),
            Some(pred) => {
                let pred_cols = index(&pred.columns())?;
                let pb = decode_one(&pred_cols, pages.clone())?;
                let bound = bind(pred, &pb.schema(), &mut |c: &Call, _| {
                    Err(Error::Value(format!(
                        "cannot push {} into the Parquet reader",
                        c.name
                    )))
                })?;
                let mask = bound.evaluate(&pb)?;
                let mask = arrow_array::cast::AsArray::as_boolean(&mask);
                // Null is false; a mask without nulls for the selection and the filter.
                let mask = match mask.nulls() {
                    Some(n) => BooleanArray::new(mask.values() & n.inner(), None),
                    None => mask.clone(),
                };
                let kept = mask.true_count();
                if kept == 0 {
                    return Ok(vec![]);
                }
                let rest: Vec<usize> = out_cols
                    .iter()
                    .copied()
                    .filter(|c| !pred_cols.contains(c))
                    .collect();
                let dense = kept * 4 > mask.len();
                let other = if rest.is_empty() {
                    None
                } else if dense || kept == mask.len() {
                    let b = decode_one(&rest, pages.clone())?;
                    Some(arrow_select::filter::filter_record_batch(&b, &mask)?)
                } else {
                    // The mask is over the rows of the selected pages.
                    let rows = RowSelection::from_filters(std::slice::from_ref(&mask));
                    let sel = match pages {
                        Some(p) => p.and_then(&rows),
                        None => rows,
                    };
                    Some(decode_one(&rest, Some(sel))?)
                };
                let pb = arrow_select::filter::filter_record_batch(&pb, &mask)?;
                // Both parts in file column order, as one batch.
                let mut fields = Vec::new();
                let mut arrays = Vec::new();
                let mut cols = Vec::new();
                for c in &out_cols {
                    let (b, at) = match pred_cols.binary_search(c) {
                        Ok(k) => (&pb, k),
                        Err(_) => (
                            other.as_ref().expect("rest is decoded"),
                            rest.binary_search(c).expect("in rest"),
                        ),
                    };
                    fields.push(b.schema().field(at).clone());
                    arrays.push(b.column(at).clone());
                    cols.push(*c);
                }
                let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(kept));
                let b = RecordBatch::try_new_with_options(
                    Arc::new(Schema::new(fields)),
                    arrays,
                    &opts,
                )?;
                (vec![b], cols)
            }
        };
        // The batch holds `cols` in file order; the output is in `columns` order.
        let order = self.output_order(&file_schema, &cols);
        let mut out = Vec::new();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            out.extend(split(self.output(batch, &order)?, self.size));
        }
        Ok(out)
    }

    /// Row groups of more than `size` rows become pieces of `size` rows (a selection of
    /// the row group's rows, within what the page index keeps): a reader skips whole pages
    /// before a piece by their headers, decoding at most a page more than the piece needs.
    /// The pieces start at multiples of `size`, where a whole row group's batches would.
    /// `size` first shrinks to the rows of about `batch_bytes` ([`Parquet::row_bytes`]), so
    /// that a budget of a few MiB is not smaller than one batch of wide rows.
    fn bound_inputs(&mut self, batch_bytes: u64) {
        if self.next > 0 {
            return;
        }
        let rows = batch_bytes / self.row_bytes().max(1);
        self.size = self.size.min(rows.max(1) as usize).max(1);
        let size = self.size;
        let (mut pieces, mut pages, mut starts) = (Vec::new(), Vec::new(), Vec::new());
        for (&(fi, g), sel) in self.pieces.iter().zip(&self.pages) {
            let n = self.group_rows(fi, g);
            if n <= size {
                pieces.push((fi, g));
                pages.push(sel.clone());
                starts.push(0);
                continue;
            }
            for start in (0..n).step_by(size) {
                let rows = start..(start + size).min(n);
                let range = RowSelection::from_consecutive_ranges(std::iter::once(rows), n);
                let piece = match sel {
                    Some(kept) => kept.intersection(&range),
                    None => range,
                };
                if piece.row_count() > 0 {
                    pieces.push((fi, g));
                    pages.push(Some(piece));
                    starts.push(start);
                }
            }
        }
        (self.pieces, self.pages, self.starts) = (pieces, pages, starts);
    }

    /// Pieces of row groups without a predicate (none prunes pages): plain row ranges.
    fn reads_waves(&self) -> bool {
        self.predicate.is_none() && !self.starts.is_empty()
    }

    /// The pieces of one row group that follow each other in a wave are read together: one
    /// reader per column, from the first piece's row to the end of the row group, yields
    /// the pieces' batches one after the other (the pieces are `size` rows from a multiple
    /// of `size`, and so are the reader's batches), the columns decoded in parallel. The
    /// readers are kept for the row group's next pieces (in the next wave), so a column's
    /// dictionary page and the data page a piece ends in are decompressed and decoded once
    /// per row group, not once per piece. Other inputs are read one by one.
    fn read_wave(&self, inputs: Vec<Input>) -> Vec<Result<Vec<RecordBatch>>> {
        // Runs of pieces: (file, row group, first row, inputs' positions).
        let mut runs: Vec<(usize, usize, usize, Vec<usize>)> = Vec::new();
        let mut alone = Vec::new();
        for (at, input) in inputs.into_iter().enumerate() {
            let Input::Piece(i) = input else {
                alone.push((at, input));
                continue;
            };
            let ((fi, g), start) = (self.pieces[i], self.starts[i]);
            match runs.last_mut() {
                Some(r) if (r.0, r.1) == (fi, g) && r.2 + r.3.len() * self.size == start => {
                    r.3.push(at)
                }
                _ => runs.push((fi, g, start, vec![at])),
            }
        }
        let count = runs.iter().map(|r| r.3.len()).sum::<usize>() + alone.len();
        let mut out: Vec<Option<Result<Vec<RecordBatch>>>> = (0..count).map(|_| None).collect();
        let read = runs
            .par_iter()
            .map(|r| self.read_run(r.0, r.1, r.2, r.3.len()))
            .collect::<Vec<_>>();
        for (r, batches) in runs.iter().zip(read) {
            match batches {
                Ok(batches) => {
                    for (&at, b) in r.3.iter().zip(batches) {
                        out[at] = Some(Ok(b));
                    }
                }
                Err(e) => {
                    // The first input carries the error; the executor stops at it.
                    let mut e = Some(e);
                    for &at in &r.3 {
                        out[at] = Some(Err(e.take().unwrap_or_else(|| {
                            Error::Value("an earlier piece of the row group failed".into())
                        })));
                    }
                }
            }
        }
        let alone: Vec<_> = alone
            .into_par_iter()
            .map(|(at, input)| (at, self.read(input)))
            .collect();
        for (at, r) in alone {
            out[at] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Value("an input was not read".into()))))
            .collect()
    }

    fn rows_read(&self, input: &Input) -> Option<u64> {
        match input {
            Input::Piece(i) => Some(match &self.pages[*i] {
                Some(sel) => sel.row_count() as u64,
                None => {
                    let (fi, g) = self.pieces[*i];
                    self.group_rows(fi, g) as u64
                }
            }),
            Input::Batch(_) => None,
        }
    }
}

/// A Parquet file read by positioned reads (`pread`) of exactly what the reader asks for: a
/// page header through a small buffer, then the page's bytes in one read. Pages a row
/// selection skips are never read, only their headers (so a piece of a row group reads
/// about its own share of the column chunks). Many readers share the descriptor; none
/// seeks it. (The `parquet` crate's own `File` reader duplicates the descriptor, seeks and
/// reads through a small buffer for every page.)
struct PagedFile {
    file: Arc<File>,
    len: u64,
}

impl PagedFile {
    fn open(path: &std::path::Path) -> Result<Self> {
        let io = |e: std::io::Error| Error::Value(format!("cannot read {}: {e}", path.display()));
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(PagedFile {
            file: Arc::new(file),
            len,
        })
    }
}

impl parquet::file::reader::Length for PagedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for PagedFile {
    type T = std::io::BufReader<ReadAt>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // Page headers are a few hundred bytes at most (with statistics).
        Ok(std::io::BufReader::with_capacity(
            1 << 10,
            ReadAt::new(self.file.clone(), start),
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        use std::io::Read;
        let err = |e: String| parquet::errors::ParquetError::General(e);
        if start
            .checked_add(length as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(err(format!(
                "a read of {length} bytes at {start} lies outside the file"
            )));
        }
        // `read_to_end` fills the buffer without zeroing it first.
        let mut buf = crate::mem::with_capacity::<u8>(length, "a Parquet page");
        let mut at = ReadAt::new(self.file.clone(), start);
        (&mut at)
            .take(length as u64)
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("cannot read {length} bytes at {start}: {e}")))?;
        if buf.len() != length {
            return Err(err(format!(
                "a read of {length} bytes at {start} ended early (file truncated)"
            )));
        }
        Ok(bytes::Bytes::from(buf))
    }
}

/// Indices of the root columns `names` of `schema`, in file order, each once.
fn root_columns(schema: &Schema, names: &[String]) -> Result<Vec<usize>> {
    let mut idx: Vec<usize> = names
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<_, _>>()?;
    idx.sort_unstable();
    idx.dedup();
    Ok(idx)
}

fn read_error(path: &std::path::Path, e: parquet::errors::ParquetError) -> Error {
    Error::Value(format!("{}: {e}", path.display()))
}

/// Which row groups of a file the predicate may select: each conjunct `column OP literal`
/// (either way round) is evaluated on the row groups' minima or maxima; a row group is
/// skipped when one conjunct is false there. Anything else keeps the row group.
fn prune(pred: &Expr, meta: &ArrowReaderMetadata) -> Vec<bool> {
    let mut keep = vec![true; meta.metadata().num_row_groups()];
    let rgs = meta.metadata().row_groups();
    for (col, op, lit, conv) in comparisons(pred, meta) {
        let (Ok(mins), Ok(maxes)) = (
            conv.row_group_mins(rgs.iter()),
            conv.row_group_maxes(rgs.iter()),
        ) else {
            continue;
        };
        if let Some(k) = may_match(col, op, lit, &mins, &maxes) {
            keep.iter_mut().zip(k).for_each(|(a, b)| *a &= b);
        }
    }
    keep
}

/// The rows of row group `g` on the pages whose page-index statistics do not rule `pred`
/// out; `None` when the file has no page index or every page may match. The pages of
/// different columns have different row ranges: each conjunct selects its column's page
/// ranges, and the selections intersect.
fn prune_pages(pred: &Expr, meta: &ArrowReaderMetadata, g: usize) -> Option<RowSelection> {
    let md = meta.metadata();
    let (ci, oi) = (md.column_index()?, md.offset_index()?);
    let rows = md.row_group(g).num_rows() as usize;
    let mut out: Option<RowSelection> = None;
    for (col, op, lit, conv) in comparisons(pred, meta) {
        let (Ok(mins), Ok(maxes), Ok(Some(counts))) = (
            conv.data_page_mins(ci, oi, [&g]),
            conv.data_page_maxes(ci, oi, [&g]),
            conv.data_page_row_counts(oi, md.row_groups(), [&g]),
        ) else {
            continue;
        };
        let Some(keep) = may_match(col, op, lit, &mins, &maxes) else {
            continue;
        };
        if keep.len() != counts.len() || counts.values().iter().sum::<u64>() != rows as u64 {
            continue;
        }
        let mut at = 0;
        let mut ranges = Vec::new();
        for (k, &n) in keep.iter().zip(counts.values()) {
            let n = n as usize;
            if *k {
                ranges.push(at..at + n);
            }
            at += n;
        }
        let sel = RowSelection::from_consecutive_ranges(ranges.into_iter(), rows);
        out = Some(match out {
            None => sel,
            Some(prev) => prev.intersection(&sel),
        });
    }
    out.filter(|s| s.skipped_row_count() > 0)
}

/// The conjuncts of `pred` that are `column OP literal` (either way round) over a column
/// the file has statistics for, with that column's statistics converter.
fn comparisons<'a>(
    pred: &'a Expr,
    meta: &'a ArrowReaderMetadata,
) -> Vec<(
    &'a str,
    &'static str,
    &'a arrow_array::ArrayRef,
    StatisticsConverter<'a>,
)> {
    let mut conjuncts = Vec::new();
    split_and(pred, &mut conjuncts);
    conjuncts
        .into_iter()
        .filter_map(|c| {
            let (col, op, lit) = as_comparison(c)?;
            let conv =
                StatisticsConverter::try_new(col, meta.schema(), meta.parquet_schema()).ok()?;
            Some((col, op, lit, conv))
        })
        .collect()
}

/// Per statistics entry (row group or page) with minimum `mins` and maximum `maxes`:
/// whether a value there may satisfy `col OP lit` (missing statistics may). `None` when
/// the comparison cannot be evaluated on these statistics.
fn may_match(
    col: &str,
    op: &str,
    lit: &arrow_array::ArrayRef,
    mins: &arrow_array::ArrayRef,
    maxes: &arrow_array::ArrayRef,
) -> Option<Vec<bool>> {
    let test = |stats: &arrow_array::ArrayRef, op: &str| -> Option<BooleanArray> {
        let schema = Arc::new(Schema::new(vec![arrow_schema::Field::new(
            col,
            stats.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![stats.clone()]).ok()?;
        let e = Expr::Call(Call {
            name: op.to_string(),
            args: vec![Expr::Field(col.to_string()), Expr::Literal(lit.clone())],
            options: None,
            span: (0, 0),
        });
        let p = bind(&e, &schema, &mut |_, _| Err(Error::Value(String::new()))).ok()?;
        let m = p.evaluate(&batch).ok()?;
        Some(arrow_array::cast::AsArray::as_boolean(&m).clone())
    };
    let tests: Vec<BooleanArray> = match op {
        "less" | "less_equal" => vec![test(mins, op)?],
        "greater" | "greater_equal" => vec![test(maxes, op)?],
        "equal" => vec![test(mins, "less_equal")?, test(maxes, "greater_equal")?],
        _ => return None,
    };
    let mut keep = vec![true; mins.len()];
    for t in tests {
        for (i, k) in keep.iter_mut().enumerate() {
            // Null (no statistics) keeps the entry.
            if t.is_valid(i) && !t.value(i) {
                *k = false;
            }
        }
    }
    Some(keep)
}

fn split_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::Call(c) if matches!(c.name.as_str(), "and" | "and_kleene") && c.args.len() == 2 => {
            split_and(&c.args[0], out);
            split_and(&c.args[1], out);
        }
        e => out.push(e),
    }
}

/// `column OP literal` as (column, OP, literal), a reversed comparison turned round.
fn as_comparison(e: &Expr) -> Option<(&str, &'static str, &arrow_array::ArrayRef)> {
    let Expr::Call(c) = e else { return None };
    if c.args.len() != 2 || c.options.is_some() {
        return None;
    }
    let (op, flipped): (&'static str, &'static str) = match c.name.as_str() {
        "less" => ("less", "greater"),
        "less_equal" => ("less_equal", "greater_equal"),
        "greater" => ("greater", "less"),
        "greater_equal" => ("greater_equal", "less_equal"),
        "equal" => ("equal", "equal"),
        _ => return None,
    };
    match (&c.args[0], &c.args[1]) {
        (Expr::Field(f), Expr::Literal(l)) => Some((f, op, l)),
        (Expr::Literal(l), Expr::Field(f)) => Some((f, flipped, l)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// A file of one string column `s`: 40 000 distinct values in one row group, its
    /// dictionary page limited to `dict_bytes`.
    fn write(path: &std::path::Path, dict_bytes: usize) {
        let values: Vec<String> = (0..40_000)
            .map(|i| format!("key-{:06}", i % 20_000))
            .collect();
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(values)) as arrow_array::ArrayRef,
        )])
        .unwrap();
        let props = WriterProperties::builder()
            .set_dictionary_page_size_limit(dict_bytes)
            .build();
        let mut w =
            ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn read(path: &std::path::Path) -> (DataType, Vec<RecordBatch>) {
        let files = vec![path.to_path_buf()];
        let mut p = Parquet::new(files, None, None, 1 << 16, &["s".to_string()], &[]).unwrap();
        let dt = p.schema().field(0).data_type().clone();
        let batches = p
            .claim(16)
            .unwrap()
            .into_iter()
            .flat_map(|i| p.read(i).unwrap())
            .collect();
        (dt, batches)
    }

    #[test]
    fn a_string_column_is_read_as_a_dictionary_only_where_every_page_is_dictionary_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let (whole, spilled) = (
            dir.path().join("whole.parquet"),
            dir.path().join("over.parquet"),
        );
        write(&whole, 1 << 20);
        write(&spilled, 1 << 10); // overflows: the later pages are plain
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let (a, a_batches) = read(&whole);
        let (b, b_batches) = read(&spilled);
        assert_eq!(a, dict);
        assert_eq!(b, DataType::Utf8);
        // Either way the same strings, in the same order.
        let strings = |bs: &[RecordBatch]| -> Vec<String> {
            bs.iter()
                .flat_map(|b| {
                    let c = arrow_cast::cast(b.column(0), &DataType::Utf8).unwrap();
                    let c = c.as_any().downcast_ref::<StringArray>().unwrap().clone();
                    (0..c.len()).map(move |i| c.value(i).to_string())
                })
                .collect()
        };
        let want: Vec<String> = (0..40_000)
            .map(|i| format!("key-{:06}", i % 20_000))
            .collect();
        assert_eq!(strings(&a_batches), want);
        assert_eq!(strings(&b_batches), want);
    }
}
