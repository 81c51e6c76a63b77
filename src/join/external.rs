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
//! A partition whose build rows do not fit the budget (many build rows of one key, which
//! no further hash bits would split) is joined in chunks of build rows that fit, its probe
//! rows read once per chunk: a chunk emits its matches (and an outer join's build rows no
//! probe row met: each build row is in one chunk), and a last pass over the probe rows
//! emits those no chunk matched (left, right, outer, anti) or some chunk matched (semi),
//! each once. The sort puts them all in place. Only a single batch larger than the budget
//! is a [`crate::Error::MemoryLimit`]. A cross join has no keys to partition by: its rows
//! all go to one partition, always joined in chunks, so that its output (every probe row
//! with every build row) reaches the sort in slices of bounded size.

use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt64Array};
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
    /// A probe row's place in its partition's file (only while a partition is joined in
    /// chunks).
    probe_pos: String,
}

impl Names {
    fn new(a: &Schema, b: &Schema) -> Names {
        let unused =
            |base: &str| fresh_name(base, |n| a.index_of(n).is_ok() || b.index_of(n).is_ok());
        Names {
            build_ord: unused("__ferrobatch_build_ordinal"),
            probe_seq: unused("__ferrobatch_probe_seq"),
            probe_row: unused("__ferrobatch_probe_row"),
            probe_pos: unused("__ferrobatch_probe_pos"),
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
            spillable,
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

/// Write the rows of `batch` to the partition of their `keys`' hash (all to one when there
/// are no keys: a cross join's).
fn write_partitions(batch: &RecordBatch, keys: &[String], files: &mut [SpillWriter]) -> Result<()> {
    for piece in hash_split(batch, keys, PARTITIONS, 0)? {
        let (p, piece) = piece?;
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
        for piece in hash_split(&tagged, keys, PARTITIONS, 0)? {
            let (p, piece) = piece?;
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
        // A partition's build rows take at most half the room: the rest holds its output
        // on the way to the sort.
        let chunk_cap = mem.headroom() / 2;
        for (p, (build, probe)) in build.into_iter().zip(&self.probe).enumerate() {
            let probe = probe
                .lock()
                .map_err(failed_earlier)?
                .take()
                .ok_or_else(|| failed_earlier(()))?
                .finish()?;
            let mut part = Partition {
                probe: &probe,
                build_schema: build.schema().clone(),
                probe_schema,
                opts,
                names,
                semi,
                stats,
                force,
                mem: &mut mem,
                sort: &mut sort,
                matched: None,
                out_cap: (chunk_cap / 8).max(1 << 16),
            };
            // The build rows in chunks that fit; the partition's probe rows are read once
            // per chunk. Almost always one chunk: a partition outgrows the budget only with
            // many build rows of few keys.
            let mut chunk: Vec<RecordBatch> = Vec::new();
            let mut held = 0u64;
            for b in build.batches()? {
                let b = b?;
                let need = batch_bytes(&b) + INDEX_ROW_BYTES * b.num_rows() as u64;
                if !part.mem.fits(need) {
                    if let Some(sort) = part.sort.as_mut() {
                        // The joined rows held so far make room for the build rows.
                        sort.spill_run()?;
                    }
                }
                if (!part.mem.fits(need) || held + need > chunk_cap) && !chunk.is_empty() {
                    part.join(std::mem::take(&mut chunk), true)?;
                    part.mem.free();
                    held = 0;
                }
                part.mem
                    .try_grow(need)
                    .map_err(|e| partition_too_large(e, p))?;
                held += need;
                chunk.push(b);
            }
            drop(build);
            // A cross join's partition is joined in chunks even when it is one: its output
            // is then cut in slices of bounded size ([`Partition::slices`]).
            let chunked = part.matched.is_some() || opts.how == JoinType::Cross;
            part.join(chunk, chunked)?;
            part.mem.free();
            if chunked {
                part.unmatched()?;
            }
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

/// One partition of a spilled join being joined (see [`SpilledJoin::run`]).
struct Partition<'a> {
    probe: &'a Spilled,
    /// The build rows' schema (with their ordinal).
    build_schema: SchemaRef,
    probe_schema: &'a SchemaRef,
    opts: &'a JoinOptions,
    names: &'a Names,
    semi: bool,
    stats: &'a Arc<SpillStats>,
    force: bool,
    mem: &'a mut Reservation,
    sort: &'a mut Option<ExternalSort>,
    /// In chunks: which of the partition's probe rows (by place in its file) some chunk
    /// matched.
    matched: Option<Vec<bool>>,
    /// Most bytes of joined rows handed to the sort at once.
    out_cap: u64,
}

impl Partition<'_> {
    /// Join the build rows `chunk` with the partition's probe rows; the joined rows go to
    /// the sort. `chunked`: the build rows come in several chunks, so a probe row's match
    /// may be in another one — this chunk's output is its matches alone (and an outer
    /// join's build rows no probe row met, each in one chunk), and which probe rows matched
    /// is recorded for [`Partition::unmatched`].
    fn join(&mut self, chunk: Vec<RecordBatch>, chunked: bool) -> Result<()> {
        // An empty partition still has probe rows to emit (a left join's).
        let table = Table::try_new(self.build_schema.clone(), chunk)?;
        let (table_bytes, table_rows) = (
            table.batches.iter().map(batch_bytes).sum::<u64>(),
            table.num_rows(),
        );
        if !chunked {
            let jb = JoinBuild::new(self.probe_schema.clone(), table, self.opts.clone())?;
            let mut out: Vec<Table> = Vec::new();
            for piece in self.probe.batches()? {
                out.push(jb.probe(&Table::try_new(self.probe_schema.clone(), vec![piece?])?)?);
                self.flush(&mut out)?;
            }
            out.extend(jb.finish()?);
            return self.flush(&mut out);
        }
        let positioned = with_fields(self.probe_schema, &[&self.names.probe_pos]);
        let mut opts = self.opts.clone();
        if self.semi {
            // Which probe rows this chunk matches: what a semi join emits.
            opts.how = JoinType::Semi;
        }
        let jb = JoinBuild::new(positioned.clone(), table, opts)?;
        let mut matched = self.matched.take().unwrap_or_default();
        let mut out: Vec<Table> = Vec::new();
        let mut at = 0u64;
        let build_row = (table_bytes / table_rows.max(1) as u64).max(1);
        for piece in self.probe.batches()? {
            let piece = with_positions(piece?, &positioned, &mut at)?;
            for piece in self.slices(&jb, &positioned, piece, build_row)? {
                self.chunk_probe(&jb, &positioned, piece, &mut matched, &mut out)?;
                self.flush(&mut out)?;
            }
        }
        if let Some(t) = jb.finish()? {
            out.push(without(&t.schema, t.batches, &self.names.probe_pos)?);
        }
        self.matched = Some(matched);
        self.flush(&mut out)
    }

    /// `piece` cut so that each part's joined rows (by [`JoinBuild::match_counts`]) stay
    /// within [`Partition::out_cap`] bytes; a probe row is never cut.
    fn slices(
        &self,
        jb: &JoinBuild,
        schema: &SchemaRef,
        piece: RecordBatch,
        build_row: u64,
    ) -> Result<Vec<RecordBatch>> {
        let n = piece.num_rows();
        let probe_row = batch_bytes(&piece) / n.max(1) as u64;
        let cap_rows = (self.out_cap / (probe_row + build_row).max(1)).max(1) as usize;
        let counts = jb.match_counts(&Table::try_new(schema.clone(), vec![piece.clone()])?)?;
        let mut out = Vec::new();
        let (mut start, mut rows) = (0usize, 0usize);
        for (i, &c) in counts.iter().enumerate() {
            let c = c.max(1);
            if rows > 0 && rows + c > cap_rows {
                out.push(piece.slice(start, i - start));
                (start, rows) = (i, 0);
            }
            rows += c;
        }
        if start < n {
            out.push(piece.slice(start, n - start));
        }
        Ok(out)
    }

    /// One probe slice against a chunk: its matches to `out`, its matched rows marked.
    fn chunk_probe(
        &self,
        jb: &JoinBuild,
        positioned: &SchemaRef,
        piece: RecordBatch,
        matched: &mut Vec<bool>,
        out: &mut Vec<Table>,
    ) -> Result<()> {
        {
            let joined = jb.probe(&Table::try_new(positioned.clone(), vec![piece])?)?;
            let mut kept = Vec::new();
            for b in joined.batches {
                let pos = b
                    .column(b.schema().index_of(&self.names.probe_pos)?)
                    .as_primitive::<arrow_array::types::UInt64Type>()
                    .clone();
                // Semi / anti output no build columns: every row a semi join emits matched.
                let hit = match b.schema().index_of(&self.names.build_ord) {
                    Ok(i) => arrow_array::BooleanArray::from(
                        b.column(i)
                            .logical_nulls()
                            .map_or(vec![true; b.num_rows()], |n| n.iter().collect()),
                    ),
                    Err(_) => arrow_array::BooleanArray::from(vec![true; b.num_rows()]),
                };
                for (p, h) in pos.iter().zip(hit.iter()) {
                    if let (Some(p), Some(true)) = (p, h) {
                        let p = p as usize;
                        if matched.len() <= p {
                            matched.resize(p + 1, false);
                        }
                        matched[p] = true;
                    }
                }
                if !self.semi {
                    kept.push(arrow_select::filter::filter_record_batch(&b, &hit)?);
                }
            }
            out.push(without(&joined.schema, kept, &self.names.probe_pos)?);
        }
        Ok(())
    }

    /// After the chunks: the probe rows none matched (left, right, outer, anti join) or
    /// some matched (semi), each once, with null build columns where the join has them.
    fn unmatched(&mut self) -> Result<()> {
        if matches!(self.opts.how, JoinType::Inner | JoinType::Cross) {
            return Ok(());
        }
        let matched = self.matched.take().unwrap_or_default();
        let want = self.opts.how == JoinType::Semi;
        let mut opts = self.opts.clone();
        if self.semi {
            // An anti join with no build rows emits every probe row it is given.
            opts.how = JoinType::Anti;
        }
        let jb = JoinBuild::new(
            self.probe_schema.clone(),
            Table::try_new(self.build_schema.clone(), vec![])?,
            opts,
        )?;
        let mut out: Vec<Table> = Vec::new();
        let mut at = 0usize;
        for piece in self.probe.batches()? {
            let piece = piece?;
            let n = piece.num_rows();
            let keep = arrow_array::BooleanArray::from(
                (at..at + n)
                    .map(|p| matched.get(p).copied().unwrap_or(false) == want)
                    .collect::<Vec<_>>(),
            );
            at += n;
            let rows = arrow_select::filter::filter_record_batch(&piece, &keep)?;
            if rows.num_rows() > 0 {
                out.push(jb.probe(&Table::try_new(self.probe_schema.clone(), vec![rows])?)?);
                self.flush(&mut out)?;
            }
        }
        Ok(())
    }

    /// Joined rows (with their tags) into the sort that restores the order, made on first
    /// use.
    fn flush(&mut self, out: &mut Vec<Table>) -> Result<()> {
        for t in out.drain(..) {
            if self.sort.is_none() {
                let names = self.names;
                let mut keys = vec![names.probe_seq.clone(), names.probe_row.clone()];
                if !self.semi {
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
                *self.sort = Some(ExternalSort::new(
                    t.schema.clone(),
                    keys,
                    self.mem.sibling("join order"),
                    self.stats.clone(),
                    self.force,
                )?);
            }
            let s = self.sort.as_mut().expect("made above");
            for b in t.batches {
                // Pieces the sort can hold beside what it holds (a key with many matches
                // makes large outputs).
                let rows = b.num_rows();
                let per =
                    u128::from(self.out_cap) * rows as u128 / u128::from(batch_bytes(&b).max(1));
                let per = per.clamp(1, rows.max(1) as u128) as usize;
                for at in (0..rows).step_by(per.max(1)) {
                    s.push(b.slice(at, per.min(rows - at)))?;
                }
            }
        }
        Ok(())
    }
}

/// `batch` (of a partition's probe rows) with each row's place in the file, counting on
/// from `at`.
fn with_positions(batch: RecordBatch, schema: &SchemaRef, at: &mut u64) -> Result<RecordBatch> {
    let n = batch.num_rows() as u64;
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(UInt64Array::from_iter_values(*at..*at + n)));
    *at += n;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// `batches` of `schema` without the column `name`.
fn without(schema: &SchemaRef, batches: Vec<RecordBatch>, name: &str) -> Result<Table> {
    let i = schema.index_of(name)?;
    let keep: Vec<usize> = (0..schema.fields().len()).filter(|&c| c != i).collect();
    Ok(Table {
        schema: Arc::new(schema.project(&keep)?),
        batches: batches
            .iter()
            .map(|b| b.project(&keep))
            .collect::<std::result::Result<_, _>>()?,
    })
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
