//! `dedup` of a stream under the memory budget, in two passes.
//!
//! While the input fits its reservation it is held and deduplicated by the kernel at the
//! end. Once a batch does not fit (or spilling is forced), the held batches and every later
//! one go, in order, to one spill file, and each row's key goes with its *ordinal* (its row
//! number in the input) into a group-by keyed by the dedup columns with the first (or last)
//! ordinal and the row count per key — memory per distinct key, not per row, and that
//! group-by spills hash partitions in its turn ([`ExternalGroupBy`]); it has the dedup key
//! rules (null == null, NaN == NaN, -0.0 == 0.0). At the end the kept ordinals are marked in
//! a bitmap (`first` / `last`: each key's first / last ordinal; `none`: the last ordinal of
//! the keys seen once), and the second pass reads the spill file back, keeping the marked
//! rows: the kernel's rows, in input order. (`keep="first"` streams when no memory limit is
//! set, [`super::stream`].)

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use arrow_buffer::{BooleanBuffer, MutableBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::Keep;
use crate::budget::{Reservation, batch_bytes};
use crate::error::Result;
use crate::group_by::external::{ExternalGroupBy, Grouped};
use crate::group_by::stream::GroupByState;
use crate::group_by::{AggFn, AggSpec, GroupByOptions};
use crate::spill::{SpillStats, SpillWriter, Spilled};
use crate::table::{Table, fresh_name};

/// Spilling state: the input's spill file being written and the keys' state.
struct Spilling {
    file: SpillWriter,
    keys: ExternalGroupBy,
    opts: GroupByOptions,
    keys_schema: SchemaRef,
    /// Key batches (with ordinals) not yet absorbed: the state takes them
    /// [`ABSORB_ROWS`] at a time, not one partial-state table per small batch.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

/// Rows of keys absorbed into the state at once.
const ABSORB_ROWS: usize = 1 << 16;

/// A dedup of the whole input that spills it (see the module docs).
pub struct ExternalDedup {
    schema: SchemaRef,
    subset: Vec<usize>,
    keep: Keep,
    mem: Reservation,
    kept: Vec<RecordBatch>,
    spilling: Option<Spilling>,
    rows: u64,
    stats: Arc<SpillStats>,
    force: bool,
}

/// A finished [`ExternalDedup`]: the held rows to deduplicate in memory, or the spilled
/// input with the bitmap of its kept rows.
pub enum Deduped {
    Memory(Vec<RecordBatch>, Reservation),
    Spilled(Box<dyn Iterator<Item = Result<RecordBatch>> + Send>),
}

impl ExternalDedup {
    pub fn new(
        schema: SchemaRef,
        subset: Vec<usize>,
        keep: Keep,
        mem: Reservation,
        stats: Arc<SpillStats>,
        force: bool,
    ) -> Self {
        ExternalDedup {
            schema,
            subset,
            keep,
            mem,
            kept: Vec::new(),
            spilling: None,
            rows: 0,
            stats,
            force,
        }
    }

    /// Take `batch`: held while it fits (with the kernel's working memory), else spilled.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.spilling.is_none() {
            let need = 2 * batch_bytes(&batch) + 16 * batch.num_rows() as u64;
            if !self.force && self.mem.try_grow(need).is_ok() {
                self.kept.push(batch);
                return Ok(());
            }
            self.start_spilling()?;
        }
        self.spill(batch)
    }

    fn start_spilling(&mut self) -> Result<()> {
        let mut fields: Vec<Field> = self
            .subset
            .iter()
            .map(|&i| self.schema.field(i).clone())
            .collect();
        let ordinal = fresh_name("__ferrobatch_ordinal", |n| {
            fields.iter().any(|f| f.name() == n)
        });
        fields.push(Field::new(&ordinal, DataType::UInt64, false));
        let keys_schema = Arc::new(Schema::new(fields));
        let opts = GroupByOptions {
            keys: self
                .subset
                .iter()
                .map(|&i| self.schema.field(i).name().clone())
                .collect(),
            aggs: vec![
                AggSpec {
                    name: "pick".into(),
                    column: Some(ordinal),
                    func: if self.keep == Keep::First {
                        AggFn::First
                    } else {
                        AggFn::Last
                    },
                },
                AggSpec {
                    name: "rows".into(),
                    column: None,
                    func: AggFn::Size,
                },
            ],
            dropna: false,
            sort: false,
        };
        self.spilling = Some(Spilling {
            file: SpillWriter::new(&self.schema, self.stats.clone())?,
            keys: ExternalGroupBy::new(
                keys_schema.clone(),
                opts.clone(),
                self.mem.sibling("dedup keys"),
                self.stats.clone(),
                self.force,
            )?,
            opts,
            keys_schema,
            pending: Vec::new(),
            pending_rows: 0,
        });
        let kept = std::mem::take(&mut self.kept);
        self.mem.free();
        for b in kept {
            self.spill(b)?;
        }
        Ok(())
    }

    /// Write `batch` to the spill file and its keys with their ordinals to the state.
    fn spill(&mut self, batch: RecordBatch) -> Result<()> {
        let s = self.spilling.as_mut().expect("spilling");
        let n = batch.num_rows() as u64;
        let mut cols: Vec<ArrayRef> = self
            .subset
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        cols.push(Arc::new(UInt64Array::from_iter_values(
            self.rows..self.rows + n,
        )));
        s.pending
            .push(RecordBatch::try_new(s.keys_schema.clone(), cols)?);
        s.pending_rows += batch.num_rows();
        s.file.write(&batch)?;
        self.rows += n;
        let held = s.pending.iter().map(batch_bytes).sum::<u64>();
        if s.pending_rows >= ABSORB_ROWS || self.mem.resize(held).is_err() {
            self.absorb()
        } else {
            Ok(())
        }
    }

    /// Absorb the pending keys into the state.
    fn absorb(&mut self) -> Result<()> {
        let s = self.spilling.as_mut().expect("spilling");
        if !s.pending.is_empty() {
            let keys = arrow_select::concat::concat_batches(&s.keys_schema, &s.pending)?;
            s.pending.clear();
            s.pending_rows = 0;
            let mut part = GroupByState::new(s.keys_schema.clone(), s.opts.clone())?;
            part.absorb(&keys)?;
            s.keys.merge(part)?;
        }
        self.mem.resize(0)
    }

    pub fn finish(mut self) -> Result<Deduped> {
        if self.spilling.is_none() {
            return Ok(Deduped::Memory(std::mem::take(&mut self.kept), self.mem));
        }
        self.absorb()?;
        let s = self.spilling.take().expect("spilling");
        let keys: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> = match s.keys.finish()? {
            Grouped::Memory(t, _) => Box::new(t.batches.into_iter().map(Ok)),
            Grouped::Spilled(batches) => batches,
        };
        let mut marks = MutableBuffer::from_len_zeroed((self.rows as usize).div_ceil(8));
        let bits = marks.as_slice_mut();
        for b in keys {
            let b = b?;
            let nk = b.num_columns() - 2;
            let pick = b.column(nk).as_primitive::<UInt64Type>();
            let rows = b.column(nk + 1).as_primitive::<Int64Type>();
            for (i, &ord) in pick.values().iter().enumerate() {
                if self.keep != Keep::None || rows.value(i) == 1 {
                    arrow_buffer::bit_util::set_bit(bits, ord as usize);
                }
            }
        }
        let marks = BooleanBuffer::new(marks.into(), 0, self.rows as usize);
        let file: Spilled = s.file.finish()?;
        let mut at = 0usize;
        let batches = file.batches()?;
        let out = batches.filter_map(move |b| {
            let _file = &file;
            let b = match b {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            let keep = BooleanArray::new(marks.slice(at, b.num_rows()), None);
            at += b.num_rows();
            match arrow_select::filter::filter_record_batch(&b, &keep) {
                Ok(out) if out.num_rows() == 0 => None,
                Ok(out) => Some(Ok(out)),
                Err(e) => Some(Err(e.into())),
            }
        });
        Ok(Deduped::Spilled(Box::new(out)))
    }
}

/// The kernel's dedup of held batches (`subset` by position).
pub fn in_memory(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    subset: &[usize],
    keep: Keep,
) -> Result<Vec<RecordBatch>> {
    let table = Table::try_new(schema.clone(), batches)?;
    let keys = Table {
        schema: Arc::new(schema.project(subset)?),
        batches: table
            .batches
            .iter()
            .map(|b| b.project(subset))
            .collect::<std::result::Result<_, _>>()?,
    };
    let kept = super::dedup_indices(&keys, None, keep)?;
    Ok(crate::gather::take_table(&table, &kept)?.batches)
}
