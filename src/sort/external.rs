//! External sort: the input in sorted runs on disk, merged k-way.
//!
//! [`ExternalSort`] holds input batches under a memory [`Reservation`] (twice their bytes:
//! the rows and the sorted copy the kernel makes). When the next batch does not fit, the
//! held rows are sorted with the in-memory kernel and written as one *run* (an IPC spill
//! file of sorted batches of `run_batch` rows), and the reservation is given back. At the
//! end the held rows become the last run, and the runs are merged.
//!
//! **Stability.** Run `i` is a stable sort of input rows that all precede run `i + 1`'s,
//! so the merge breaks ties between runs by run number: a row's place among equal keys is
//! its input order, exactly as the in-memory kernel's stable sort.
//!
//! **Merge.** The [`Merger`] keeps one batch per run, with its keys in arrow-row's
//! comparable byte format (floats first mapped to the kernel's order image, so -0.0 == 0.0
//! and every NaN is one value above +inf), and a binary heap of runs ordered by (current
//! row, run number). Output batches are gathered with `interleave`. At most [`FAN_IN`] runs
//! are merged at once (fewer when the budget holds fewer runs' batches); beyond that,
//! groups of consecutive runs (so run order stays input order) are first merged into longer
//! runs, the fewest bytes and runs that bring the count down ([`RunMerge::merge`]).
//!
//! With no run spilled, the result is the kernel's sort of the held rows — the same rows in
//! the same order as after spilling.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt64Array};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, SchemaRef, SortOptions};

use super::SortKey;
use crate::budget::{Reservation, batch_bytes};
use crate::error::{Error, Result};
use crate::keys::encode::f64_key;
use crate::spill::{SpillStats, SpillWriter, Spilled};
use crate::table::Table;

/// Runs merged at once.
pub const FAN_IN: usize = 32;

/// The largest batch written to a run (and produced by a merge).
const MAX_RUN_BATCH: usize = 16 << 10;

/// A sort that spills sorted runs when its reservation is refused (see the module docs).
pub struct ExternalSort {
    schema: SchemaRef,
    keys: Vec<SortKey>,
    key_idx: Vec<usize>,
    mem: Reservation,
    kept: Vec<RecordBatch>,
    runs: Vec<Spilled>,
    stats: Arc<SpillStats>,
    force: bool,
    /// The largest batch written to a run.
    piece_bytes: u64,
}

/// What a finished [`ExternalSort`] gives: the sorted rows in memory (nothing spilled), or
/// a merge of the runs to pull.
pub enum Sorted {
    Memory(Vec<RecordBatch>, Reservation),
    Merge(Merger),
}

impl ExternalSort {
    /// A sort of batches of `schema` by `keys`, holding rows under `mem` and counting its
    /// spill files in `stats`; `force` spills every batch but the first of each run.
    pub fn new(
        schema: SchemaRef,
        keys: Vec<SortKey>,
        mem: Reservation,
        stats: Arc<SpillStats>,
        force: bool,
    ) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::Value("sort needs at least one key column".into()));
        }
        let names: Vec<String> = keys.iter().map(|k| k.column.clone()).collect();
        let key_idx = crate::keys::key_positions(&schema, &names)?;
        Ok(ExternalSort {
            schema,
            keys,
            key_idx,
            mem,
            kept: Vec::new(),
            runs: Vec::new(),
            stats,
            force,
            piece_bytes: 0,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Whether a run was spilled.
    pub fn spilled(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Hold `batch`, spilling the held rows first when it does not fit beside them.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let need = 2 * batch_bytes(&batch);
        if !self.kept.is_empty() && (self.force || !self.mem.fits(need)) {
            self.spill_run()?;
        }
        self.mem.try_grow(need)?;
        self.kept.push(batch);
        Ok(())
    }

    /// Rows per batch of a run: a merge holds one batch per run (and its keys) and an
    /// output batch, all within a quarter of what this sort may hold.
    fn run_batch(&self) -> usize {
        let rows: usize = self.kept.iter().map(RecordBatch::num_rows).sum();
        let bytes: u64 = self.kept.iter().map(batch_bytes).sum();
        let row_bytes = (bytes / rows.max(1) as u64).max(1);
        let may_hold = self.mem.may_hold();
        let rows = may_hold / 4 / (FAN_IN as u64 + 1) / (2 * row_bytes);
        (rows as usize).clamp(8, MAX_RUN_BATCH)
    }

    /// Runs merged at once: as many as the budget holds a batch of each for (with its keys
    /// and a share of the output), at least 2 and at most [`FAN_IN`].
    fn fan_in(&self) -> usize {
        let may_hold = self.mem.may_hold();
        let per_run = 4 * self.piece_bytes.max(1);
        ((may_hold / per_run) as usize).clamp(2, FAN_IN)
    }

    /// Sort the held rows and write them as a run (giving their memory back for another
    /// operator of the run).
    pub fn spill_run(&mut self) -> Result<()> {
        if self.kept.is_empty() {
            return Ok(());
        }
        let size = self.run_batch();
        let table = Table {
            schema: self.schema.clone(),
            batches: std::mem::take(&mut self.kept),
        };
        let sorted = super::sort(&table, &self.keys, None)?;
        drop(table);
        let mut w = SpillWriter::new(&self.schema, self.stats.clone())?;
        for b in sorted.batches {
            for piece in crate::exec::source::split(b, size) {
                self.piece_bytes = self.piece_bytes.max(batch_bytes(&piece));
                w.write(&piece)?;
            }
        }
        self.runs.push(w.finish()?);
        self.mem.free();
        Ok(())
    }

    /// The sorted rows: in memory when nothing spilled, else a merge of the runs.
    pub fn finish(mut self) -> Result<Sorted> {
        if self.runs.is_empty() {
            let table = Table {
                schema: self.schema.clone(),
                batches: std::mem::take(&mut self.kept),
            };
            let out = super::sort(&table, &self.keys, None)?.batches;
            return Ok(Sorted::Memory(out, self.mem));
        }
        let size = self.run_batch();
        self.spill_run()?;
        let runs = std::mem::take(&mut self.runs);
        let merge = RunMerge {
            schema: &self.schema,
            keys: &self.keys,
            key_idx: &self.key_idx,
            run_rows: size,
            out_rows: size,
            mem: &self.mem,
            name: "sort merge",
            stats: &self.stats,
        };
        merge.merge(runs, self.fan_in()).map(Sorted::Merge)
    }
}

/// How sorted runs are merged: their schema and sort keys, rows per batch of the runs a
/// pass writes and of the output, and the reservation (and spill statistics) the merges
/// take part in.
pub struct RunMerge<'a> {
    pub schema: &'a SchemaRef,
    pub keys: &'a [SortKey],
    pub key_idx: &'a [usize],
    pub run_rows: usize,
    pub out_rows: usize,
    pub mem: &'a Reservation,
    pub name: &'static str,
    pub stats: &'a Arc<SpillStats>,
}

impl RunMerge<'_> {
    /// A merge of `runs` holding at most `fan_in` runs' batches at once. While there are
    /// more, the consecutive runs (so ties still go by run order) of the fewest bytes are
    /// merged into one, as few at a time as bring the count to `fan_in` (at most `fan_in`):
    /// 34 runs under a fan-in of 32 rewrite the 3 smallest neighbours, not all 34.
    pub fn merge(&self, mut runs: Vec<Spilled>, fan_in: usize) -> Result<Merger> {
        let fan_in = fan_in.max(2);
        while runs.len() > fan_in {
            let k = (runs.len() - fan_in + 1).min(fan_in);
            let bytes: Vec<u64> = runs.iter().map(Spilled::bytes).collect();
            let at = (0..=runs.len() - k)
                .min_by_key(|&i| bytes[i..i + k].iter().sum::<u64>())
                .expect("more runs than the fan-in");
            let group: Vec<Spilled> = runs.drain(at..at + k).collect();
            let mut merger = self.merger(group, self.run_rows)?;
            let mut w = SpillWriter::new(self.schema, self.stats.clone())?;
            while let Some(b) = merger.next_batch()? {
                w.write(&b)?;
            }
            runs.insert(at, w.finish()?);
        }
        self.merger(runs, self.out_rows)
    }

    fn merger(&self, runs: Vec<Spilled>, out_rows: usize) -> Result<Merger> {
        Merger::new(
            self.schema.clone(),
            runs,
            self.keys,
            self.key_idx,
            out_rows,
            self.mem.sibling(self.name),
        )
    }
}

/// The key columns of `batch` at `idx` as arrow-row compares them in the kernel's order:
/// floating columns (dictionaries of floats too) as their `u64` order image.
fn comparable(batch: &RecordBatch, idx: &[usize]) -> Result<Vec<ArrayRef>> {
    idx.iter()
        .map(|&i| {
            let c = batch.column(i);
            if !crate::keys::value_type(c.data_type()).is_floating() {
                return Ok(c.clone());
            }
            let f = arrow_cast::cast(c, &DataType::Float64)?;
            let f = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Float64Type>(&f);
            let image: Vec<u64> = f.values().iter().map(|&v| f64_key(v)).collect();
            Ok(Arc::new(UInt64Array::new(image.into(), f.nulls().cloned())) as ArrayRef)
        })
        .collect()
}

/// One run being merged: its current batch and that batch's comparable keys.
struct Cursor {
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    batch: RecordBatch,
    rows: Rows,
    pos: usize,
    /// Index of `batch` among the output batch's sources, once a row of it was picked.
    slot: Option<usize>,
    held: u64,
    _run: Spilled,
}

/// A k-way merge of sorted runs, ties by run number (see the module docs).
pub struct Merger {
    key_idx: Vec<usize>,
    converter: RowConverter,
    cursors: Vec<Cursor>,
    /// A binary min-heap of live cursors.
    heap: Vec<usize>,
    out_rows: usize,
    mem: Reservation,
}

impl Merger {
    /// A merge of `runs` (in input order), sorted by `keys` at `key_idx`, producing
    /// batches of `out_rows` rows; the batches it holds reserved under `mem`.
    pub fn new(
        schema: SchemaRef,
        runs: Vec<Spilled>,
        keys: &[SortKey],
        key_idx: &[usize],
        out_rows: usize,
        mem: Reservation,
    ) -> Result<Self> {
        let fields = keys
            .iter()
            .zip(key_idx)
            .map(|(k, &i)| {
                let dt = schema.field(i).data_type();
                let dt = if crate::keys::value_type(dt).is_floating() {
                    DataType::UInt64
                } else {
                    dt.clone()
                };
                SortField::new_with_options(
                    dt,
                    SortOptions {
                        descending: k.descending,
                        nulls_first: !k.nulls_last,
                    },
                )
            })
            .collect();
        let mut m = Merger {
            key_idx: key_idx.to_vec(),
            converter: RowConverter::new(fields)?,
            cursors: Vec::with_capacity(runs.len()),
            heap: Vec::with_capacity(runs.len()),
            out_rows: out_rows.max(1),
            mem,
        };
        for run in runs {
            let mut batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> =
                Box::new(run.batches()?);
            let Some(first) = next_nonempty(&mut batches)? else {
                continue;
            };
            let mut c = Cursor {
                batches,
                rows: m.converter.empty_rows(0, 0),
                batch: first.clone(),
                pos: 0,
                slot: None,
                held: 0,
                _run: run,
            };
            load(&m.converter, &m.key_idx, &mut m.mem, &mut c, first)?;
            m.heap.push(m.cursors.len());
            m.cursors.push(c);
        }
        for i in (0..m.heap.len() / 2).rev() {
            m.sift_down(i);
        }
        Ok(m)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.cursors[a], &self.cursors[b]);
        match x.rows.row(x.pos).cmp(&y.rows.row(y.pos)) {
            std::cmp::Ordering::Equal => a < b,
            o => o.is_lt(),
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut min = i;
            if l < n && self.less(self.heap[l], self.heap[min]) {
                min = l;
            }
            if r < n && self.less(self.heap[r], self.heap[min]) {
                min = r;
            }
            if min == i {
                return;
            }
            self.heap.swap(i, min);
            i = min;
        }
    }

    /// The next merged batch, `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.heap.is_empty() {
            return Ok(None);
        }
        for c in &mut self.cursors {
            c.slot = None;
        }
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(self.out_rows);
        while picks.len() < self.out_rows && !self.heap.is_empty() {
            let c = self.heap[0];
            let cur = &mut self.cursors[c];
            let slot = *cur.slot.get_or_insert_with(|| {
                sources.push(cur.batch.clone());
                sources.len() - 1
            });
            picks.push((slot, cur.pos));
            cur.pos += 1;
            if cur.pos == cur.batch.num_rows() {
                crate::cancel::point();
                match next_nonempty(&mut self.cursors[c].batches)? {
                    Some(b) => load(
                        &self.converter,
                        &self.key_idx,
                        &mut self.mem,
                        &mut self.cursors[c],
                        b,
                    )?,
                    None => {
                        let held = std::mem::take(&mut self.cursors[c].held);
                        self.mem.shrink(held);
                        let last = self.heap.pop().expect("not empty");
                        if self.heap.is_empty() {
                            break;
                        }
                        self.heap[0] = last;
                    }
                }
            }
            self.sift_down(0);
        }
        let refs: Vec<&RecordBatch> = sources.iter().collect();
        Ok(Some(arrow_select::interleave::interleave_record_batch(
            &refs, &picks,
        )?))
    }
}

/// Make `batch` the cursor's current one, its keys converted and its bytes reserved.
fn load(
    converter: &RowConverter,
    key_idx: &[usize],
    mem: &mut Reservation,
    c: &mut Cursor,
    batch: RecordBatch,
) -> Result<()> {
    let rows = converter.convert_columns(&comparable(&batch, key_idx)?)?;
    let held = batch_bytes(&batch) + rows.size() as u64;

    mem.shrink(c.held);
    c.held = 0;
    mem.try_grow(held)?;
    c.held = held;
    c.rows = rows;
    c.batch = batch;
    c.pos = 0;
    c.slot = None;
    Ok(())
}

fn next_nonempty(
    it: &mut Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
) -> Result<Option<RecordBatch>> {
    for b in it.by_ref() {
        let b = b?;
        if b.num_rows() > 0 {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

impl Iterator for Merger {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Result<RecordBatch>> {
        self.next_batch().transpose()
    }
}
