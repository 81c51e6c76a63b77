//! A streaming join under the memory budget: the build side in memory while it fits, a
//! partitioned hash join through spill files past it.
//!
//! [`BuildSide`] holds the build side's batches under a reservation (their bytes, plus the
//! key index's). When a batch does not fit (or spilling is forced), every build row is
//! tagged with its *build ordinal* (its row number on the build side) and written, cut by
//! the hash of its keys, to one of [`PARTITIONS`] spill files; the probe side's batches are
//! then cut the same way ([`SpilledJoin::spill_probe`]), each row tagged with its place in
//! the probe stream (its morsel's sequence number and its row there). Equal keys hash
//! alike under the join's key rules, whatever the key columns' layouts, so every match is
//! within one partition.
//!
//! At the end ([`SpilledJoin::run`]) each partition's build rows are prepared as an
//! in-memory [`JoinBuild`] and probed by the partition's probe rows; an outer join's
//! unmatched build rows of the partition follow. The joined rows carry both tags; sorted by
//! (probe place, build ordinal) — unmatched build rows, with no probe place, last — they are
//! the in-memory join's rows in its order: probe order, each probe row's matches in build
//! order, then the build rows no probe row met in build order. The sort is an
//! [`ExternalSort`], which spills runs itself when the output does not fit.
//!
//! One partition's build rows must fit the budget; a larger one (many build rows of one
//! key) is a [`crate::Error::MemoryLimit`] naming it. A cross join has no keys to
//! partition by and stays in memory.

use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::stream::JoinBuild;
use super::{JoinOptions, JoinType};
use crate::budget::{Reservation, batch_bytes};
use crate::error::{Error, Result};
use crate::keys::partition::hash_split;
use crate::sort::SortKey;
use crate::sort::external::{ExternalSort, Sorted};
use crate::spill::{SpillStats, SpillWriter, Spilled};
use crate::table::{Table, fresh_name};

/// Hash partitions of a spilled join.
pub const PARTITIONS: u32 = 32;

/// Bytes of the key index per build row (hash, group id, row lists).
const INDEX_ROW_BYTES: u64 = 24;

/// A join's prepared build side: in memory, or spilled in partitions.
pub enum Built {
    Memory(Box<JoinBuild>, Reservation),
    Spilled(Box<SpilledJoin>),
}

/// The build side being drained (see the module docs).
pub struct BuildSide {
    schema: SchemaRef,
    probe_schema: SchemaRef,
    opts: JoinOptions,
    mem: Reservation,
    kept: Vec<RecordBatch>,
    spilled: Option<(Vec<SpillWriter>, u64)>,
    stats: Arc<SpillStats>,
    force: bool,
    spillable: bool,
    names: Names,
}

/// The tag columns' names (none of the inputs' names).
#[derive(Clone)]
struct Names {
    build_ord: String,
    probe_seq: String,
    probe_row: String,
}

impl Names {
    fn new(a: &Schema, b: &Schema) -> Names {
        let unused =
            |base: &str| fresh_name(base, |n| a.index_of(n).is_ok() || b.index_of(n).is_ok());
        Names {
            build_ord: unused("__ferrobatch_build_ordinal"),
            probe_seq: unused("__ferrobatch_probe_seq"),
            probe_row: unused("__ferrobatch_probe_row"),
        }
    }
}

fn with_fields(schema: &Schema, names: &[&str]) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(names.iter().map(|n| Field::new(*n, DataType::UInt64, true)));
    Arc::new(Schema::new(fields))
}

impl BuildSide {
    /// The build side of batches of `schema` for probes of `probe_schema`; `spillable`:
    /// whether it may spill (a build that is read in memory afterwards may not).
    pub fn new(
        schema: SchemaRef,
        probe_schema: SchemaRef,
        opts: JoinOptions,
        mem: Reservation,
        stats: Arc<SpillStats>,
        force: bool,
        spillable: bool,
    ) -> Self {
        let names = Names::new(&schema, &probe_schema);
        BuildSide {
            spillable: spillable && opts.how != JoinType::Cross,
            schema,
            probe_schema,
            opts,
            mem,
            kept: Vec::new(),
            spilled: None,
            stats,
            force,
            names,
        }
    }

    pub fn peak_reserved(&self) -> u64 {
        self.mem.peak()
    }

    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.spilled.is_none() {
            let need = batch_bytes(&batch) + INDEX_ROW_BYTES * batch.num_rows() as u64;
            let fits = !(self.force && self.spillable) && self.mem.fits(need);
            if fits || !self.spillable {
                self.mem.try_grow(need)?;
                self.kept.push(batch);
                return Ok(());
            }
            let schema = with_fields(&self.schema, &[&self.names.build_ord]);
            let files = (0..PARTITIONS)
                .map(|_| SpillWriter::new(&schema, self.stats.clone()))
                .collect::<Result<_>>()?;
            self.spilled = Some((files, 0));
            let kept = std::mem::take(&mut self.kept);
            self.mem.free();
            for b in kept {
                self.spill(b)?;
            }
        }
        self.spill(batch)
    }

    fn build_keys(&self) -> &[String] {
        if JoinBuild::builds_left(self.opts.how) {
            &self.opts.left_on
        } else {
            &self.opts.right_on
        }
    }

    fn spill(&mut self, batch: RecordBatch) -> Result<()> {
        let keys = self.build_keys().to_vec();
        let (files, ordinal) = self.spilled.as_mut().expect("spilling");
        let n = batch.num_rows() as u64;
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(UInt64Array::from_iter_values(
            *ordinal..*ordinal + n,
        )));
        *ordinal += n;
        let schema = files[0].schema().clone();
        let tagged = RecordBatch::try_new(schema, cols)?;
        write_partitions(&tagged, &keys, files)
    }

    /// The prepared build side.
    pub fn finish(self) -> Result<Built> {
        let Some((files, _)) = self.spilled else {
            let table = Table::try_new(self.schema.clone(), self.kept)?;
            return Ok(Built::Memory(
                Box::new(JoinBuild::new(self.probe_schema, table, self.opts)?),
                self.mem,
            ));
        };
        let build = files
            .into_iter()
            .map(SpillWriter::finish)
            .collect::<Result<Vec<_>>>()?;
        let probe_schema = with_fields(
            &self.probe_schema,
            &[&self.names.probe_seq, &self.names.probe_row],
        );
        let probe = (0..PARTITIONS)
            .map(|_| {
                SpillWriter::new(&probe_schema, self.stats.clone()).map(|w| Mutex::new(Some(w)))
            })
            .collect::<Result<_>>()?;
        Ok(Built::Spilled(Box::new(SpilledJoin {
            build: Mutex::new(build),
            probe,
            probe_schema,
            opts: self.opts,
            names: self.names,
            mem: Mutex::new(Some(self.mem)),
            stats: self.stats,
            force: self.force,
        })))
    }
}

/// Write the rows of `batch` to the partition of their `keys`' hash.
fn write_partitions(batch: &RecordBatch, keys: &[String], files: &mut [SpillWriter]) -> Result<()> {
    for (p, piece) in hash_split(batch, keys, PARTITIONS)? {
        files[p].write(&piece)?;
    }
    Ok(())
}

/// A join whose build side was spilled in hash partitions (see the module docs). Probe
/// batches are written concurrently; [`SpilledJoin::run`] takes the files once.
pub struct SpilledJoin {
    build: Mutex<Vec<Spilled>>,
    probe: Vec<Mutex<Option<SpillWriter>>>,
    probe_schema: SchemaRef,
    opts: JoinOptions,
    names: Names,
    mem: Mutex<Option<Reservation>>,
    stats: Arc<SpillStats>,
    force: bool,
}

fn failed_earlier<T>(_: T) -> Error {
    Error::Value("a spilled join failed earlier in this run".into())
}

impl SpilledJoin {
    /// Write a probe batch to the partitions, its rows tagged with their place in the
    /// probe stream: `seq` (the morsel's sequence number) and `row` (`sub << 32 | row`).
    pub fn spill_probe(&self, batch: RecordBatch, seq: u64, sub: u32) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let n = batch.num_rows() as u64;
        let base = u64::from(sub) << 32;
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(UInt64Array::from_value(seq, n as usize)));
        cols.push(Arc::new(UInt64Array::from_iter_values(base..base + n)));
        let tagged = RecordBatch::try_new(self.probe_schema.clone(), cols)?;
        let keys = if JoinBuild::builds_left(self.opts.how) {
            &self.opts.right_on
        } else {
            &self.opts.left_on
        };
        for (p, piece) in hash_split(&tagged, keys, PARTITIONS)? {
            let mut file = self.probe[p].lock().map_err(failed_earlier)?;
            file.as_mut()
                .ok_or_else(|| failed_earlier(()))?
                .write(&piece)?;
        }
        Ok(())
    }

    /// Join partition by partition and restore the in-memory order; the output batches
    /// of `schema` (the join's own output schema).
    pub fn run(
        &self,
        schema: SchemaRef,
        out_rows: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        let (probe_schema, opts, names, stats, force) = (
            &self.probe_schema,
            &self.opts,
            &self.names,
            &self.stats,
            self.force,
        );
        let mut mem = self
            .mem
            .lock()
            .map_err(failed_earlier)?
            .take()
            .ok_or_else(|| failed_earlier(()))?;
        let build = std::mem::take(&mut *self.build.lock().map_err(failed_earlier)?);
        let semi = matches!(opts.how, JoinType::Semi | JoinType::Anti);
        let mut sort: Option<ExternalSort> = None;
        for (p, (build, probe)) in build.into_iter().zip(&self.probe).enumerate() {
            let probe = probe
                .lock()
                .map_err(failed_earlier)?
                .take()
                .ok_or_else(|| failed_earlier(()))?
                .finish()?;
            let batches = build.batches()?.collect::<Result<Vec<_>>>()?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let need = batches.iter().map(batch_bytes).sum::<u64>() + INDEX_ROW_BYTES * rows as u64;
            if !mem.fits(need)
                && let Some(sort) = &mut sort
            {
                // The joined rows held so far make room for the partition's build rows.
                sort.spill_run()?;
            }
            mem.try_grow(need).map_err(|e| partition_too_large(e, p))?;
            let table = Table::try_new(build.schema().clone(), batches)?;
            drop(build);
            let jb = JoinBuild::new(probe_schema.clone(), table, opts.clone())?;
            let mut out: Vec<Table> = Vec::new();
            for piece in probe.batches()? {
                let piece = piece?;
                out.push(jb.probe(&Table {
                    schema: piece.schema(),
                    batches: vec![piece],
                })?);
                flush(&mut sort, &mut out, names, semi, stats, &mem, force)?;
            }
            if let Some(t) = jb.finish()? {
                out.push(t);
            }
            flush(&mut sort, &mut out, names, semi, stats, &mem, force)?;
            drop(jb);
            mem.free();
        }
        let sort = match sort {
            Some(s) => s,
            None => return Ok(Box::new(std::iter::empty())),
        };
        let tagged = sort.schema().clone();
        let names = names.clone();
        let drop_tags: Vec<usize> = (0..tagged.fields().len())
            .filter(|&i| {
                let n = tagged.field(i).name();
                n != &names.build_ord && n != &names.probe_seq && n != &names.probe_row
            })
            .collect();
        let untag = move |b: RecordBatch| -> Result<RecordBatch> {
            let cols: Vec<ArrayRef> = drop_tags.iter().map(|&i| b.column(i).clone()).collect();
            let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                schema.clone(),
                cols,
                &opts,
            )?)
        };
        Ok(match sort.finish()? {
            Sorted::Memory(batches, held) => {
                let out: Vec<Result<RecordBatch>> = batches
                    .into_iter()
                    .flat_map(|b| crate::exec::source::split(b, out_rows))
                    .map(untag)
                    .collect();
                // The rows stay reserved until they are handed on.
                Box::new(out.into_iter().inspect(move |_| {
                    let _ = &held;
                }))
            }
            Sorted::Merge(merger) => Box::new(merger.map(move |b| untag(b?))),
        })
    }
}

/// Joined rows (with their tags) into the sort that restores the order, made on first use.
fn flush(
    sort: &mut Option<ExternalSort>,
    out: &mut Vec<Table>,
    names: &Names,
    semi: bool,
    stats: &Arc<SpillStats>,
    mem: &Reservation,
    force: bool,
) -> Result<()> {
    for t in out.drain(..) {
        if sort.is_none() {
            let mut keys = vec![names.probe_seq.clone(), names.probe_row.clone()];
            if !semi {
                keys.push(names.build_ord.clone());
            }
            let keys = keys
                .into_iter()
                .map(|column| SortKey {
                    column,
                    descending: false,
                    nulls_last: true,
                })
                .collect();
            *sort = Some(ExternalSort::new(
                t.schema.clone(),
                keys,
                mem.sibling("join order"),
                stats.clone(),
                force,
            )?);
        }
        let s = sort.as_mut().expect("made above");
        for b in t.batches {
            s.push(b)?;
        }
    }
    Ok(())
}

fn partition_too_large(e: Error, p: usize) -> Error {
    match e {
        Error::MemoryLimit(m) => Error::MemoryLimit(format!(
            "{m}; hash partition {p} of {PARTITIONS} of the spilled join's build side does \
             not fit (many build rows of one key?)"
        )),
        other => other,
    }
}
