//! The pipeline executor: a plan of physical operators run morsel by morsel on the pool.
//!
//! A plan is a chain `source → operators`; a *breaker* (group-by, sort, a dedup that keeps
//! the last or no duplicate) ends one chain and its finished output starts the next, and so
//! does a [`Shared`] sub-plan (run once, its output replayed to each consumer). A join's
//! build side is a chain of its own, drained before the probing chain claims its first
//! input.
//!
//! A chain runs in **waves**: the source hands out the next few inputs (row groups,
//! batches) in order, and the pool decodes each and pushes it through the chain's
//! *parallel* operators (filter, project, a join's probe: functions of one batch) and, for a
//! group-by, its partial aggregation — all inputs of a wave at once, one task each. Then, in
//! sequence order on one thread, the *serial* operators (`head`, `map_batches`, streaming
//! dedup, `expect`, and any operator after one) see the batches, and partial states merge into the group-by's
//! state. Every morsel's place in the order comes from the source, never from the thread
//! that ran it, so output order and float results do not depend on the thread count. A
//! cancel point runs between morsels and inside decoding.
//!
//! Two things happen around a join. A group-by whose keys all come from an inner join's
//! build side aggregates by build row as the join probes ([`join_aggregate`]); and while a
//! chain's join build sides run on the calling thread, the pool reads the chain's first wave
//! of inputs.
//!
//! The interface every operator implements is [`Operator::push`]: a batch in, batches (or
//! nothing) out, and [`Operator::finish`]: what is due once the input ends (an outer join's
//! unmatched build rows), passed through the operators after it. Serial stages end the same
//! way ([`Plan::Expect`] gives its verdict there), also when a `head` ends the input early.

mod join_aggregate;
pub mod sink;
pub mod source;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use crate::dedup::Keep;
use crate::dedup::external::{Deduped, ExternalDedup};
use crate::error::{Error, Result};
use crate::expr::bind::Phys;
use crate::group_by::GroupByOptions;
use crate::group_by::external::{ExternalGroupBy, Grouped};
use crate::group_by::resident::{Ready, ResidentState};
use crate::group_by::stream::GroupByState;
use crate::join::JoinOptions;
use crate::join::external::{BuildSide, Built};
use crate::join::stream::JoinBuild;
use crate::sort::SortKey;
use crate::sort::external::{ExternalSort, Sorted};
use crate::table::Table;
use arrow_array::cast::AsArray;
use source::{Batches, Source};

/// A Python callback over one batch (`map_batches`), behind the bindings.
pub type BatchFn = Arc<dyn Fn(RecordBatch) -> Result<Vec<RecordBatch>> + Send + Sync>;

/// One output column of a projection.
pub enum Column {
    /// An input column passed through (its type kept).
    Input(usize),
    /// A computed column.
    Computed(Phys),
}

/// A physical plan, built bottom-up by the caller (the bindings).
pub enum Plan {
    Source(Box<dyn Source>),
    Filter {
        input: Box<Plan>,
        predicate: Phys,
    },
    Project {
        input: Box<Plan>,
        columns: Vec<Column>,
        schema: SchemaRef,
    },
    Head {
        input: Box<Plan>,
        n: u64,
    },
    MapBatches {
        input: Box<Plan>,
        f: BatchFn,
        schema: SchemaRef,
    },
    GroupBy {
        input: Box<Plan>,
        options: GroupByOptions,
        /// Output columns cast to these types at the end (key columns read as dictionaries
        /// get their declared types back).
        restore: Vec<(String, DataType)>,
        schema: SchemaRef,
    },
    /// A sort of the whole input (`limit`: its first rows only, a running top-k).
    Sort {
        input: Box<Plan>,
        keys: Vec<SortKey>,
        limit: Option<usize>,
    },
    /// A dedup on the columns at `subset`. `keep="first"` streams: a serial stage (see
    /// [`crate::dedup::stream`]); `"last"` / `"none"` need the whole input (a breaker running
    /// the kernel).
    Dedup {
        input: Box<Plan>,
        subset: Vec<usize>,
        keep: Keep,
    },
    /// One sub-plan consumed by several nodes of this plan (every consumer holds a
    /// `Plan::Shared` of the same [`Shared`]): it runs once, when the first consumer needs
    /// it, and its output is kept and replayed to each.
    Shared {
        shared: Arc<Shared>,
        schema: SchemaRef,
    },
    /// Checks over the whole stream (a pass-through), failing the run at its end with
    /// [`Error::Expectation`].
    Expect {
        input: Box<Plan>,
        expect: Expectations,
    },
    /// A hash join: the build side ([`JoinBuild::builds_left`]) runs to its end first, then
    /// the other side's morsels probe it in parallel.
    Join {
        left: Box<Plan>,
        right: Box<Plan>,
        /// The columns of each input the join reads (positions, in order).
        left_cols: Vec<usize>,
        right_cols: Vec<usize>,
        opts: JoinOptions,
        schema: SchemaRef,
    },
}

impl Plan {
    pub fn schema(&self) -> SchemaRef {
        match self {
            Plan::Source(s) => s.schema(),
            Plan::Filter { input, .. }
            | Plan::Head { input, .. }
            | Plan::Dedup { input, .. }
            | Plan::Expect { input, .. }
            | Plan::Sort { input, .. } => input.schema(),
            Plan::Project { schema, .. }
            | Plan::MapBatches { schema, .. }
            | Plan::GroupBy { schema, .. }
            | Plan::Shared { schema, .. }
            | Plan::Join { schema, .. } => schema.clone(),
        }
    }

    /// A projection of `input`: output names with their columns; the schema is computed.
    pub fn project(input: Plan, columns: Vec<(String, Column)>) -> Result<Plan> {
        let in_schema = input.schema();
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, c)| match c {
                Column::Input(i) => in_schema.field(*i).clone().with_name(name),
                Column::Computed(p) => Field::new(name, p.ty.clone(), true),
            })
            .collect();
        Ok(Plan::Project {
            input: Box::new(input),
            columns: columns.into_iter().map(|(_, c)| c).collect(),
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// A join of the columns `left_cols` of `left` and `right_cols` of `right` (by name, in
    /// that order); its output schema computed from theirs.
    pub fn join(
        left: Plan,
        right: Plan,
        left_cols: &[String],
        right_cols: &[String],
        opts: JoinOptions,
    ) -> Result<Plan> {
        let positions = |p: &Plan, names: &[String]| -> Result<Vec<usize>> {
            let schema = p.schema();
            names.iter().map(|n| Ok(schema.index_of(n)?)).collect()
        };
        let (left_cols, right_cols) =
            (positions(&left, left_cols)?, positions(&right, right_cols)?);
        let (ls, rs) = (
            Arc::new(left.schema().project(&left_cols)?),
            Arc::new(right.schema().project(&right_cols)?),
        );
        let schema = crate::join::output_layout(&ls, &rs, &opts)?.0;
        Ok(Plan::Join {
            left: Box::new(left),
            right: Box::new(right),
            left_cols,
            right_cols,
            opts,
            schema,
        })
    }

    /// A group-by of `input`; its output schema computed from the input's (no data read),
    /// with the `restore` types.
    pub fn group_by(
        input: Plan,
        options: GroupByOptions,
        restore: Vec<(String, DataType)>,
    ) -> Result<Plan> {
        let schema = crate::group_by::output_schema(&input.schema(), &options)?;
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match restore.iter().find(|(n, _)| n == f.name()) {
                Some((_, t)) => f.as_ref().clone().with_data_type(t.clone()),
                None => f.as_ref().clone(),
            })
            .collect();
        Ok(Plan::GroupBy {
            input: Box::new(input),
            options,
            restore,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

/// A sub-plan with several consumers in one run ([`Plan::Shared`]): first its plan, then,
/// once lowered, its chain, then, once run, its output.
pub struct Shared(std::sync::Mutex<SharedState>);

enum SharedState {
    Plan(Box<Plan>, Vec<usize>),
    Chain(Box<Chain>, Vec<usize>),
    Done(Vec<RecordBatch>),
    /// Lowered or run elsewhere: only reachable through a cycle, which a plan cannot have.
    Taken,
}

impl Shared {
    /// The shared sub-plan `plan`, of which its consumers read the columns at `cols`.
    pub fn new(plan: Plan, cols: Vec<usize>) -> Result<(Arc<Shared>, SchemaRef)> {
        let schema = Arc::new(plan.schema().project(&cols)?);
        let state = SharedState::Plan(Box::new(plan), cols);
        Ok((Arc::new(Shared(std::sync::Mutex::new(state))), schema))
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, SharedState>> {
        self.0
            .lock()
            .map_err(|_| Error::Value("a shared sub-plan failed earlier in this run".into()))
    }

    /// The output, running the sub-plan to its end the first time.
    fn output(&self, runner: &dyn Runner) -> Result<Vec<RecordBatch>> {
        let mut state = self.state()?;
        if let SharedState::Chain(..) = &*state {
            let SharedState::Chain(mut chain, cols) =
                std::mem::replace(&mut *state, SharedState::Taken)
            else {
                unreachable!("matched above")
            };
            let mut out = Vec::new();
            while let Some(bs) = chain.wave(&|b: RecordBatch| Ok(b.project(&cols)?), runner)? {
                out.extend(bs);
            }
            *state = SharedState::Done(out);
        }
        match &*state {
            SharedState::Done(out) => Ok(out.clone()),
            _ => Err(Error::Value(
                "a shared sub-plan was read before it was lowered".into(),
            )),
        }
    }
}

/// What [`Plan::Expect`] checks: the row count's bounds, columns without nulls, and columns
/// whose combined value is unique (nulls equal to each other, as in a group-by key).
pub struct Expectations {
    pub min_rows: Option<u64>,
    pub max_rows: Option<u64>,
    pub not_null: Vec<usize>,
    pub unique: Vec<usize>,
}

/// The running state of an [`Expectations`] check.
struct Checking {
    expect: Expectations,
    names: Vec<String>,
    rows: u64,
    nulls: Vec<u64>,
    /// Rows per distinct `unique` key.
    seen: Option<GroupByState>,
}

impl Checking {
    fn new(expect: Expectations, schema: &SchemaRef) -> Result<Self> {
        let seen = if expect.unique.is_empty() {
            None
        } else {
            let keys = Arc::new(schema.project(&expect.unique)?);
            let opts = GroupByOptions {
                keys: keys.fields().iter().map(|f| f.name().clone()).collect(),
                aggs: vec![crate::group_by::AggSpec {
                    name: "rows".into(),
                    column: None,
                    func: crate::group_by::AggFn::Size,
                }],
                dropna: false,
                sort: false,
            };
            Some(GroupByState::new(keys, opts)?)
        };
        Ok(Checking {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            nulls: vec![0; expect.not_null.len()],
            expect,
            rows: 0,
            seen,
        })
    }

    fn push(&mut self, b: &RecordBatch) -> Result<()> {
        self.rows += b.num_rows() as u64;
        for (n, &c) in self.nulls.iter_mut().zip(&self.expect.not_null) {
            *n += b.column(c).logical_null_count() as u64;
        }
        if let Some(seen) = &mut self.seen {
            seen.absorb(&b.project(&self.expect.unique)?)?;
        }
        Ok(())
    }

    /// Every failed check, named with its count; an error if any failed.
    fn verdict(&mut self) -> Result<()> {
        let mut failed = Vec::new();
        let e = &self.expect;
        if let Some(min) = e.min_rows.filter(|&m| self.rows < m) {
            failed.push(format!(
                "min_rows: {} rows, expected at least {}",
                thousands(self.rows),
                thousands(min)
            ));
        }
        if let Some(max) = e.max_rows.filter(|&m| self.rows > m) {
            failed.push(format!(
                "max_rows: {} rows, expected at most {}",
                thousands(self.rows),
                thousands(max)
            ));
        }
        for (&n, &c) in self.nulls.iter().zip(&e.not_null) {
            if n > 0 {
                failed.push(format!(
                    "not_null: column {} has {} null rows",
                    py_repr(&self.names[c]),
                    thousands(n)
                ));
            }
        }
        if let Some(seen) = &mut self.seen {
            let counts = seen.finish()?;
            let mut dup = 0u64;
            for b in &counts.batches {
                let c = b.column(b.num_columns() - 1);
                let c = c.as_primitive::<arrow_array::types::Int64Type>();
                dup += c.values().iter().filter(|&&n| n > 1).sum::<i64>() as u64;
            }
            if dup > 0 {
                let cols: Vec<String> = e.unique.iter().map(|&c| py_repr(&self.names[c])).collect();
                failed.push(format!(
                    "unique: {} rows share their [{}] with another row",
                    thousands(dup),
                    cols.join(", ")
                ));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Expectation(format!(
                "expectation failed: {}",
                failed.join("; ")
            )))
        }
    }
}

/// A column name quoted as Python's `repr` quotes a `str` (the messages name columns as
/// the Python API does).
fn py_repr(name: &str) -> String {
    let quote = if name.contains('\'') && !name.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for ch in name.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `n` with thousands separators.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Counters of one operator over a run.
#[derive(Default)]
pub struct Stats {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    pub batches: AtomicU64,
    /// Busy time: each batch's work summed over the threads that did it, and the wall time
    /// of each phase that runs on every thread at once (a wave read together, a merge, a
    /// finish), counted once — not CPU time, which a phase's wall time undercounts by up to
    /// the thread count.
    pub nanos: AtomicU64,
    /// What the operator spilled.
    pub spill: Arc<crate::spill::SpillStats>,
    /// What the operator's reservations hold ([`reservation`]).
    pub reserved: Arc<crate::budget::Usage>,
}

impl Stats {
    /// Count `batches` as output.
    fn produced(&self, batches: &[RecordBatch]) {
        for b in batches {
            self.rows_out
                .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record(&self, rows_in: usize, out: Option<usize>, start: Instant) {
        self.rows_in.fetch_add(rows_in as u64, Ordering::Relaxed);
        if let Some(n) = out {
            self.rows_out.fetch_add(n as u64, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// A row of the run report: an operator's label and counters.
pub struct OpReport {
    pub label: String,
    pub depth: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub batches: u64,
    pub cpu_seconds: f64,
    pub spilled_bytes: u64,
    pub spill_files: u64,
    pub spill_seconds: f64,
    pub peak_reserved: u64,
}

/// Runs the parallel parts of a run on the pool. The serial parts (claiming inputs, the
/// serial operators, Python callbacks among them) run on the thread that pulls the output,
/// so that a callback runs where the caller is (for Python: where signals are handled).
pub trait Runner {
    fn parallel(&self, f: &mut (dyn FnMut() -> Result<()> + Send)) -> Result<()>;

    /// The run's own memory limit, if any ([`crate::budget::Scope`]).
    fn scope(&self) -> Option<Arc<crate::budget::Scope>> {
        None
    }
}

/// A runner with the run's memory scope.
struct Scoped<'a> {
    runner: &'a dyn Runner,
    scope: Option<Arc<crate::budget::Scope>>,
}

impl Runner for Scoped<'_> {
    fn parallel(&self, f: &mut (dyn FnMut() -> Result<()> + Send)) -> Result<()> {
        self.runner.parallel(f)
    }

    fn scope(&self) -> Option<Arc<crate::budget::Scope>> {
        self.scope.clone()
    }
}

/// A reservation for the operator `name` of the run `runner` runs, counted in its `stats`
/// (with every sibling reservation made from it).
fn reservation(name: &str, runner: &dyn Runner, stats: &Stats) -> crate::budget::Reservation {
    crate::budget::Reservation::counted(name, runner.scope(), stats.reserved.clone())
}

/// The plain runner: the pool, nobody watching.
pub struct InPool;

impl Runner for InPool {
    fn parallel(&self, f: &mut (dyn FnMut() -> Result<()> + Send)) -> Result<()> {
        crate::pool::install_watched(f, || std::time::Duration::from_secs(3600))
    }
}

/// Where a batch is in its chain's stream: `seq`, the sequence number of the input it came
/// from (and its batch there); `sub`, its place among the batches that input had become by
/// this operator. Ordered like the stream, whichever thread runs it.
#[derive(Clone, Copy, Debug)]
struct At {
    seq: u64,
    sub: u32,
}

/// Batches an operator emits at the end, pulled as the output is.
type Tail = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// The `seq` of the batches an operator emits at its end: after every input's (operator
/// `i`'s after those of operators before it).
fn end_seq(i: usize) -> u64 {
    (1 << 63) + i as u64
}

/// A per-batch operator.
trait Operator: Send + Sync {
    /// The operator applied to one batch: its output batches (none when no row remains).
    fn push(&self, batch: RecordBatch, at: At) -> Result<Vec<RecordBatch>>;

    /// Batches due once the input is exhausted (an outer join's unmatched build rows, a
    /// spilled join's output).
    fn finish(&self) -> Result<Tail> {
        Ok(Box::new(std::iter::empty()))
    }
}

struct FilterOp(Phys);

impl Operator for FilterOp {
    fn push(&self, batch: RecordBatch, _: At) -> Result<Vec<RecordBatch>> {
        let mask = self.0.evaluate(&batch)?;
        let mask = arrow_array::cast::AsArray::as_boolean(&mask);
        if mask.true_count() == batch.num_rows() && mask.null_count() == 0 {
            return Ok(vec![batch]);
        }
        let out = arrow_select::filter::filter_record_batch(&batch, mask)?;
        Ok(if out.num_rows() > 0 {
            vec![out]
        } else {
            vec![]
        })
    }
}

struct ProjectOp {
    columns: Vec<Column>,
    schema: SchemaRef,
}

impl Operator for ProjectOp {
    fn push(&self, batch: RecordBatch, _: At) -> Result<Vec<RecordBatch>> {
        let mut memo = crate::expr::eval::Memo::default();
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Input(i) => Ok(batch.column(*i).clone()),
                Column::Computed(p) => p.evaluate_with(&batch, &mut memo),
            })
            .collect::<Result<_>>()?;
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(vec![RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &opts,
        )?])
    }
}

/// The probe side of a join: each batch joined with the build side, made before the first
/// probe (see [`Pending`]); or, when the build side spilled, each batch written to the
/// partitions and the whole join run at the end ([`SpilledJoin`]).
struct ProbeOp {
    cell: Arc<OnceLock<Built>>,
    /// The join's output schema and batch size (of a spilled join's output).
    schema: SchemaRef,
    size: usize,
}

/// A join's build side, made before the first probe (see [`Pending`]).
fn built(cell: &OnceLock<Built>) -> &Built {
    cell.get()
        .expect("the build side is made before the first probe")
}

/// A join's build side held in memory (a join that cannot spill).
fn in_memory(cell: &OnceLock<Built>) -> Result<&JoinBuild> {
    match built(cell) {
        Built::Memory(jb, _) => Ok(jb),
        Built::Spilled(_) => Err(Error::Value(
            "internal: this join's build side must stay in memory".into(),
        )),
    }
}

fn nonempty(t: Table) -> Vec<RecordBatch> {
    t.batches.into_iter().filter(|b| b.num_rows() > 0).collect()
}

impl Operator for ProbeOp {
    fn push(&self, batch: RecordBatch, at: At) -> Result<Vec<RecordBatch>> {
        match built(&self.cell) {
            Built::Memory(jb, _) => {
                let t = Table {
                    schema: batch.schema(),
                    batches: vec![batch],
                };
                Ok(nonempty(jb.probe(&t)?))
            }
            Built::Spilled(join) => {
                join.spill_probe(batch, at.seq, at.sub)?;
                Ok(vec![])
            }
        }
    }

    fn finish(&self) -> Result<Tail> {
        match built(&self.cell) {
            Built::Memory(jb, _) => {
                let out = jb.finish()?.map(nonempty).unwrap_or_default();
                Ok(Box::new(out.into_iter().map(Ok)))
            }
            Built::Spilled(join) => join.run(self.schema.clone(), self.size),
        }
    }
}

/// A join's build side, still to run: its chain is drained and built before the probing
/// chain claims its first input.
struct Pending {
    chain: Box<Chain>,
    /// The build side's columns the join reads.
    cols: Vec<usize>,
    probe_schema: SchemaRef,
    opts: JoinOptions,
    cell: Arc<OnceLock<Built>>,
    stats: Arc<Stats>,
    /// Whether the build side may spill (not when it is read in memory afterwards).
    spillable: bool,
}

impl Pending {
    fn run(mut self, runner: &dyn Runner) -> Result<()> {
        let cols = &self.cols;
        let mut side = BuildSide::new(
            Arc::new(self.chain.schema().project(cols)?),
            self.probe_schema.clone(),
            self.opts.clone(),
            reservation("join build", runner, &self.stats),
            self.stats.spill.clone(),
            crate::spill::force(),
            self.spillable,
        );
        while let Some(bs) = self
            .chain
            .wave(&|b: RecordBatch| Ok(b.project(cols)?), runner)?
        {
            let t = Instant::now();
            let mut bs = Some(bs);
            runner.parallel(&mut || {
                for b in bs.take().unwrap_or_default() {
                    side.push(b)?;
                }
                Ok(())
            })?;
            self.stats.record(0, None, t);
        }
        let t = Instant::now();
        let (mut side, mut built) = (Some(side), None);
        runner.parallel(&mut || {
            built = Some(side.take().expect("built once").finish()?);
            Ok(())
        })?;
        self.stats.record(0, None, t);
        let _ = self.cell.set(built.expect("built above"));
        Ok(())
    }
}

/// A serial operator: sees batches in sequence order on one thread.
enum Serial {
    Op(Box<dyn Operator>),
    Head {
        left: u64,
    },
    Map(BatchFn),
    /// Streaming dedup: state across batches, parallel within one.
    Dedup(crate::dedup::stream::SeenKeys),
    Expect(Box<Checking>),
}

struct Stage<T> {
    op: T,
    stats: Arc<Stats>,
}

/// How a chain starts: a source, or a group-by whose input chain runs first.
enum Start {
    Source(Box<dyn Source>),
    GroupBy {
        input: Box<Chain>,
        options: GroupByOptions,
        schema: SchemaRef,
        stats: Arc<Stats>,
        /// A group-by by build row over a join's probe: the keys it ends by.
        regroup: Option<join_aggregate::Regroup>,
    },
    Sort {
        input: Box<Chain>,
        keys: Vec<SortKey>,
        limit: Option<usize>,
        stats: Arc<Stats>,
    },
    /// `dedup(keep="last" | "none")` of the whole input.
    Dedup {
        input: Box<Chain>,
        subset: Vec<usize>,
        keep: Keep,
        stats: Arc<Stats>,
    },
    /// A shared sub-plan's output, with its schema.
    Shared(Arc<Shared>, SchemaRef),
}

/// An input of a wave: claimed, or already read.
enum Claimed {
    Input(source::Input),
    Read(Result<Vec<RecordBatch>>),
}

/// The next wave's inputs of `source` (`wave` per thread), the time counted in `stats`.
fn claim(source: &mut dyn Source, wave: usize, stats: &Stats) -> Result<Vec<source::Input>> {
    let t = Instant::now();
    let inputs = source.claim(wave * rayon::current_num_threads())?;
    stats.record(0, None, t);
    Ok(inputs)
}

/// `input` read from `source`, counted in `stats`.
fn read_input(
    source: &dyn Source,
    stats: &Stats,
    input: source::Input,
) -> Result<Vec<RecordBatch>> {
    crate::cancel::point();
    let t = Instant::now();
    let read = source.rows_read(&input);
    let batches = source.read(input)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    stats.record(read.map_or(rows, |r| r as usize), None, t);
    stats.produced(&batches);
    Ok(batches)
}

/// A wave's `inputs` read together ([`Source::read_wave`]), counted in `stats`.
fn read_wave(
    source: &dyn Source,
    stats: &Stats,
    inputs: Vec<source::Input>,
    runner: &dyn Runner,
) -> Result<Vec<Result<Vec<RecordBatch>>>> {
    let t = Instant::now();
    let read: u64 = inputs.iter().filter_map(|i| source.rows_read(i)).sum();
    let (mut inputs, mut out) = (Some(inputs), Vec::new());
    runner.parallel(&mut || {
        crate::cancel::point();
        out = source.read_wave(inputs.take().unwrap_or_default());
        Ok(())
    })?;
    stats.record(read as usize, None, t);
    out.iter().flatten().for_each(|b| stats.produced(b));
    Ok(out)
}

/// `batches` (of the input `seq`) through the per-batch operators `stages`, in order.
fn through(
    stages: &[Stage<Box<dyn Operator>>],
    mut batches: Vec<RecordBatch>,
    seq: u64,
) -> Result<Vec<RecordBatch>> {
    for stage in stages {
        if batches.is_empty() {
            break;
        }
        let mut next = Vec::with_capacity(batches.len());
        for (sub, b) in batches.into_iter().enumerate() {
            crate::cancel::point();
            let t = Instant::now();
            let rows = b.num_rows();
            let at = At {
                seq,
                sub: sub as u32,
            };
            let out = stage.op.push(b, at)?;
            stage.stats.record(rows, None, t);
            stage.stats.produced(&out);
            next.extend(out);
        }
        batches = next;
    }
    Ok(batches)
}

/// A chain of operators from a start to the next breaker (see the module docs).
struct Chain {
    start: Start,
    source_stats: Arc<Stats>,
    parallel: Vec<Stage<Box<dyn Operator>>>,
    serial: Vec<Stage<Serial>>,
    done: bool,
    size: usize,
    out_schema: SchemaRef,
    /// Inputs claimed per wave per thread.
    wave: usize,
    /// Join build sides to make before the first input is claimed.
    builds: Vec<Pending>,
    /// The first wave's inputs, read while the build sides ran.
    prefetched: Option<Vec<Result<Vec<RecordBatch>>>>,
    /// Inputs claimed so far (the next input's sequence number).
    next_seq: u64,
    /// Batches through the serial operators so far.
    serial_seq: u64,
    /// The operator whose end output is being pulled (parallel ones first, then serial
    /// ones, by index), and that output; the next operator to end.
    ending: Option<(usize, Tail)>,
    next_end: usize,
    /// The output due at the end was emitted.
    ended: bool,
}

/// Inputs per wave per thread when the output streams: enough to keep every thread busy
/// while the slowest finishes, few enough to keep memory and latency low.
pub const STREAMING_WAVE: usize = 2;

/// Inputs per wave per thread under a memory limit: a wave's decoded inputs are all in
/// memory at once, outside the operators' reservations.
pub const BOUNDED_WAVE: usize = 1;

/// Inputs per wave per thread when the caller keeps the whole output anyway (a collect):
/// long waves leave threads idle at fewer barriers.
pub const COLLECTING_WAVE: usize = 32;

impl Chain {
    /// Set the inputs per wave (see [`Execution::new`]); `bounded`: under a memory limit,
    /// where every chain reads in short waves (a wave's inputs are all in memory at once).
    fn set_wave(&mut self, wave: usize, bounded: bool) {
        let head = self
            .serial
            .iter()
            .any(|s| matches!(s.op, Serial::Head { .. }));
        self.wave = if bounded {
            BOUNDED_WAVE
        } else if head {
            STREAMING_WAVE
        } else {
            wave
        };
        match &mut self.start {
            Start::GroupBy { input, .. } => input.set_wave(STREAMING_WAVE, bounded),
            Start::Sort { input, .. } | Start::Dedup { input, .. } => {
                input.set_wave(COLLECTING_WAVE, bounded)
            }
            Start::Shared(shared, _) => {
                if let Ok(mut state) = shared.state()
                    && let SharedState::Chain(c, _) = &mut *state
                {
                    c.set_wave(COLLECTING_WAVE, bounded);
                }
            }
            Start::Source(_) => {}
        }
        for b in &mut self.builds {
            b.chain.set_wave(COLLECTING_WAVE, bounded);
        }
    }

    /// The next wave's batches, in order, each passed through `tail` (run in the parallel
    /// phase when the chain has no serial operator). `None` once the chain is exhausted.
    fn wave<T: Send>(
        &mut self,
        tail: &(dyn Fn(RecordBatch) -> Result<T> + Sync),
        runner: &dyn Runner,
    ) -> Result<Option<Vec<T>>> {
        if self.ended {
            return Ok(None);
        }
        if self.done {
            return self.end(tail, runner);
        }
        self.open(runner)?;
        let Start::Source(source) = &mut self.start else {
            unreachable!("opened above")
        };
        let inputs: Vec<Claimed> = match self.prefetched.take() {
            Some(read) => read.into_iter().map(Claimed::Read).collect(),
            None => {
                let inputs = claim(source.as_mut(), self.wave, &self.source_stats)?;
                if source.reads_waves() {
                    read_wave(source.as_ref(), &self.source_stats, inputs, runner)?
                        .into_iter()
                        .map(Claimed::Read)
                        .collect()
                } else {
                    inputs.into_iter().map(Claimed::Input).collect()
                }
            }
        };
        if inputs.is_empty() {
            self.done = true;
            return self.end(tail, runner);
        }
        let source: &dyn Source = source.as_ref();
        let (parallel, fused) = (&self.parallel, self.serial.is_empty());
        let source_stats = &self.source_stats;
        let first_seq = self.next_seq;
        self.next_seq += inputs.len() as u64;
        enum Item<T> {
            Batch(RecordBatch),
            Done(T),
        }
        let mut inputs = Some(inputs);
        let mut per_input: Vec<Result<Vec<Item<T>>>> = Vec::new();
        runner.parallel(&mut || {
            per_input = inputs
                .take()
                .unwrap_or_default()
                .into_par_iter()
                .enumerate()
                .map(|(i, input)| {
                    let seq = (first_seq + i as u64) << 24;
                    let batches = match input {
                        Claimed::Input(input) => read_input(source, source_stats, input)?,
                        Claimed::Read(read) => read?,
                    };
                    // The input's batches in parallel too: one large row group is not
                    // one thread's work.
                    let per_batch: Vec<Result<Vec<Item<T>>>> = batches
                        .into_par_iter()
                        .enumerate()
                        .map(|(j, b)| {
                            let mut out = Vec::new();
                            for b in through(parallel, vec![b], seq | j as u64)? {
                                out.push(if fused {
                                    Item::Done(tail(b)?)
                                } else {
                                    Item::Batch(b)
                                });
                            }
                            Ok(out)
                        })
                        .collect();
                    let mut out = Vec::new();
                    for items in per_batch {
                        out.extend(items?);
                    }
                    Ok(out)
                })
                .collect();
            Ok(())
        })?;
        let mut out = Vec::new();
        for items in per_input {
            for item in items? {
                match item {
                    Item::Done(t) => out.push(t),
                    Item::Batch(b) => {
                        for b in self.serial_push(b, runner)? {
                            out.push(tail(b)?);
                        }
                    }
                }
                if self.done {
                    return Ok(Some(out));
                }
            }
        }
        Ok(Some(out))
    }

    /// Make the input claimable: run the breaker the chain starts with (its input chain to
    /// its end) and the join build sides. Nothing happens the second time.
    fn open(&mut self, runner: &dyn Runner) -> Result<()> {
        let size = self.size;
        let opened: Option<Box<dyn Source>> = match &mut self.start {
            Start::Source(_) => None,
            Start::GroupBy {
                input,
                options,
                schema,
                stats,
                regroup,
            } => Some(run_group_by(
                input,
                options.clone(),
                regroup.as_ref(),
                stats,
                runner,
                schema,
                size,
            )?),
            Start::Sort {
                input,
                keys,
                limit,
                stats,
            } => Some(run_sort(input, keys, *limit, stats, runner, size)?),
            Start::Dedup {
                input,
                subset,
                keep,
                stats,
            } => Some(run_dedup(input, subset, *keep, stats, runner, size)?),
            Start::Shared(shared, schema) => Some(Box::new(Batches::new(
                schema.clone(),
                shared.output(runner)?,
                size,
            ))),
        };
        if let Some(source) = opened {
            self.start = Start::Source(source);
        }
        let builds = std::mem::take(&mut self.builds);
        if builds.is_empty() {
            return Ok(());
        }
        // The build sides run on this thread while the pool reads the first wave's inputs
        // (decoding needs no build): the pool's idle time in the builds' serial parts, and
        // the imbalance of their parallel ones, go to the probe side.
        let Start::Source(source) = &mut self.start else {
            unreachable!("a source by now")
        };
        let inputs = claim(source.as_mut(), self.wave, &self.source_stats)?;
        let (source, stats): (&dyn Source, _) = (source.as_ref(), &self.source_stats);
        let (read, ()) = crate::pool::alongside(
            || {
                Ok(inputs
                    .into_par_iter()
                    .map(|input| read_input(source, stats, input))
                    .collect())
            },
            || builds.into_iter().try_for_each(|b| b.run(runner)),
        )?;
        self.prefetched = Some(read);
        Ok(())
    }

    /// The output due once the input is exhausted (or a `head` satisfied), in chain order:
    /// each operator's [`Operator::finish`] (an outer join's unmatched build rows, a spilled
    /// join's output) through the operators after it, and the serial checks
    /// ([`Plan::Expect`]); pulled a wave's worth of batches per call, `None` at the end.
    fn end<T: Send>(
        &mut self,
        tail: &(dyn Fn(RecordBatch) -> Result<T> + Sync),
        runner: &dyn Runner,
    ) -> Result<Option<Vec<T>>> {
        self.open(runner)?;
        let (np, ns) = (self.parallel.len(), self.serial.len());
        loop {
            if let Some((k, ending)) = &mut self.ending {
                let k = *k;
                let want = self.wave.max(1) * rayon::current_num_threads();
                let mut got = Vec::new();
                let stats = if k < np {
                    &self.parallel[k].stats
                } else {
                    &self.serial[k - np].stats
                };
                let t = Instant::now();
                let mut pull = || -> Result<()> {
                    while got.len() < want {
                        match ending.next() {
                            Some(b) => got.push(b?),
                            None => break,
                        }
                    }
                    Ok(())
                };
                // A per-batch operator's tail (a spilled join's partitions, joined and
                // merged) runs on the pool like its pushes; a serial one's where the caller is.
                if k < np {
                    runner.parallel(&mut pull)?;
                } else {
                    pull()?;
                }
                stats.record(0, None, t);
                stats.produced(&got);
                if got.is_empty() {
                    self.ending = None;
                    continue;
                }
                let rest = if k < np {
                    let rest = through(&self.parallel[k + 1..], got, end_seq(k))?;
                    self.serial_from(0, rest, runner)?
                } else {
                    self.serial_from(k - np + 1, got, runner)?
                };
                let out: Vec<T> = rest.into_iter().map(tail).collect::<Result<_>>()?;
                if !out.is_empty() {
                    return Ok(Some(out));
                }
                continue;
            }
            let k = self.next_end;
            if k >= np + ns {
                self.ended = true;
                return Ok(None);
            }
            self.next_end += 1;
            let t = Instant::now();
            let ending: Tail = if k < np {
                let (op, mut tail) = (&self.parallel[k].op, None);
                runner.parallel(&mut || {
                    tail = Some(op.finish()?);
                    Ok(())
                })?;
                tail.expect("finished above")
            } else {
                match &mut self.serial[k - np].op {
                    Serial::Op(op) => op.finish()?,
                    Serial::Expect(check) => {
                        check.verdict()?;
                        Box::new(std::iter::empty())
                    }
                    Serial::Head { .. } | Serial::Map(_) | Serial::Dedup(_) => {
                        Box::new(std::iter::empty())
                    }
                }
            };
            let stats = if k < np {
                &self.parallel[k].stats
            } else {
                &self.serial[k - np].stats
            };
            stats.record(0, None, t);
            self.ending = Some((k, ending));
        }
    }

    /// `b` through the serial operators; sets `done` once a `head` is satisfied.
    fn serial_push(&mut self, b: RecordBatch, runner: &dyn Runner) -> Result<Vec<RecordBatch>> {
        self.serial_from(0, vec![b], runner)
    }

    /// `batches` through the serial operators from the `first`.
    fn serial_from(
        &mut self,
        first: usize,
        mut batches: Vec<RecordBatch>,
        runner: &dyn Runner,
    ) -> Result<Vec<RecordBatch>> {
        for stage in self.serial.iter_mut().skip(first) {
            if batches.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for b in batches {
                crate::cancel::point();
                let t = Instant::now();
                let rows = b.num_rows();
                let produced: Vec<RecordBatch> = match &mut stage.op {
                    Serial::Op(op) => {
                        self.serial_seq += 1;
                        let at = At {
                            seq: self.serial_seq << 24,
                            sub: 0,
                        };
                        op.push(b, at)?
                    }
                    Serial::Head { left } => {
                        let take = (*left).min(rows as u64) as usize;
                        *left -= take as u64;
                        if take > 0 {
                            vec![b.slice(0, take)]
                        } else {
                            vec![]
                        }
                    }
                    Serial::Map(f) => f(b)?,
                    Serial::Dedup(seen) => {
                        let (mut input, mut out) = (Some(b), None);
                        runner.parallel(&mut || {
                            let b = input.take().expect("one batch");
                            out = Some(seen.first_rows(&b)?);
                            Ok(())
                        })?;
                        out.into_iter().filter(|b| b.num_rows() > 0).collect()
                    }
                    Serial::Expect(check) => {
                        check.push(&b)?;
                        vec![b]
                    }
                };
                stage.stats.record(rows, None, t);
                stage.stats.produced(&produced);
                next.extend(produced);
            }
            batches = next;
        }
        if self
            .serial
            .iter()
            .any(|s| matches!(s.op, Serial::Head { left: 0 }))
        {
            self.done = true;
        }
        Ok(batches)
    }
}

/// Drain `input` and sort it: in memory with the kernel, or spilling sorted runs when the
/// budget refuses and merging them as the output is pulled ([`ExternalSort`]). With a
/// `limit`, each morsel keeps its own top `limit` rows in the parallel phase and after every
/// wave the running top rows and the wave's (in sequence order) are cut to the top `limit`
/// again: memory O(limit per morsel), and — the kernel being stable — the rows of a full
/// stable sort's head. A top-k never spills.
fn run_sort(
    input: &mut Chain,
    keys: &[SortKey],
    limit: Option<usize>,
    stats: &Arc<Stats>,
    runner: &dyn Runner,
    size: usize,
) -> Result<Box<dyn Source>> {
    let schema = input.schema();
    let Some(k) = limit else {
        return external_sort(input, keys, stats, runner, size);
    };
    let table = |batches: Vec<RecordBatch>| Table {
        schema: schema.clone(),
        batches,
    };
    let mut kept: Vec<RecordBatch> = Vec::new();
    let top = |b: RecordBatch| -> Result<Vec<RecordBatch>> {
        let t = Instant::now();
        let rows = b.num_rows();
        let out = crate::sort::sort(&table(vec![b]), keys, Some(k))?.batches;
        stats.record(rows, None, t);
        Ok(out)
    };
    let mut mem = reservation("sort (top-k)", runner, stats);
    while let Some(parts) = input.wave(&top, runner)? {
        kept.extend(parts.into_iter().flatten());
        let t = Instant::now();
        let mut all = Some(std::mem::take(&mut kept));
        runner.parallel(&mut || {
            let t = table(all.take().unwrap_or_default());
            kept = crate::sort::sort(&t, keys, Some(k))?.batches;
            Ok(())
        })?;
        let held: u64 = kept.iter().map(crate::budget::batch_bytes).sum();
        mem.resize(held)?;
        stats.record(0, None, t);
    }
    stats.produced(&kept);
    Ok(Box::new(Batches::new(schema, kept, size)))
}

/// The full sort of [`run_sort`].
fn external_sort(
    input: &mut Chain,
    keys: &[SortKey],
    stats: &Arc<Stats>,
    runner: &dyn Runner,
    size: usize,
) -> Result<Box<dyn Source>> {
    let schema = input.schema();
    let mut sort = ExternalSort::new(
        schema.clone(),
        keys.to_vec(),
        reservation("sort", runner, stats),
        stats.spill.clone(),
        crate::spill::force(),
    )?;
    while let Some(parts) = input.wave(&|b: RecordBatch| Ok(b), runner)? {
        let t = Instant::now();
        let mut parts = Some(parts);
        runner.parallel(&mut || {
            for b in parts.take().unwrap_or_default() {
                sort.push(b)?;
            }
            Ok(())
        })?;
        stats.record(0, None, t);
    }
    let t = Instant::now();
    let mut sort = Some(sort);
    let mut sorted = None;
    runner.parallel(&mut || {
        sorted = Some(sort.take().expect("finished once").finish()?);
        Ok(())
    })?;
    stats.record(0, None, t);
    Ok(match sorted.expect("finished above") {
        Sorted::Memory(out, mem) => {
            stats.produced(&out);
            Box::new(Held(Batches::new(schema, out, size), mem))
        }
        Sorted::Merge(merger) => counted(schema, Box::new(merger), stats, size),
    })
}

/// A source holding the reservation of the rows it hands out (an operator's output).
struct Held(Batches, crate::budget::Reservation);

impl Source for Held {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }
    fn claim(&mut self, n: usize) -> Result<Vec<source::Input>> {
        let out = self.0.claim(n)?;
        if out.is_empty() {
            self.1.free();
        }
        Ok(out)
    }
}

/// Drain `input` and keep what `dedup(keep)` keeps of it (the columns at `subset` by
/// position): the kernel over the held input, or, past the budget, two passes over the
/// spilled input ([`ExternalDedup`]).
fn run_dedup(
    input: &mut Chain,
    subset: &[usize],
    keep: Keep,
    stats: &Arc<Stats>,
    runner: &dyn Runner,
    size: usize,
) -> Result<Box<dyn Source>> {
    let schema = input.schema();
    let mut dedup = ExternalDedup::new(
        schema.clone(),
        subset.to_vec(),
        keep,
        reservation("dedup", runner, stats),
        stats.spill.clone(),
        crate::spill::force(),
    );
    while let Some(bs) = input.wave(&|b: RecordBatch| Ok(b), runner)? {
        let t = Instant::now();
        let rows: usize = bs.iter().map(RecordBatch::num_rows).sum();
        let mut bs = Some(bs);
        runner.parallel(&mut || {
            for b in bs.take().unwrap_or_default() {
                dedup.push(b)?;
            }
            Ok(())
        })?;
        stats.record(rows, None, t);
    }
    let t = Instant::now();
    let mut out = None;
    let mut dedup = Some(dedup);
    runner.parallel(&mut || {
        out = Some(match dedup.take().expect("finished once").finish()? {
            Deduped::Memory(batches, mem) => Deduped::Memory(
                crate::dedup::external::in_memory(&schema, batches, subset, keep)?,
                mem,
            ),
            spilled => spilled,
        });
        Ok(())
    })?;
    stats.record(0, None, t);
    Ok(match out.expect("finished above") {
        Deduped::Memory(out, mem) => {
            stats.produced(&out);
            Box::new(Held(Batches::new(schema, out, size), mem))
        }
        Deduped::Spilled(batches) => counted(schema, batches, stats, size),
    })
}

/// A source over `batches`, counted as `stats`' output.
fn counted(
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    stats: &Arc<Stats>,
    size: usize,
) -> Box<dyn Source> {
    let stats = stats.clone();
    let counted = batches.inspect(move |b| {
        if let Ok(b) = b {
            stats.produced(std::slice::from_ref(b));
        }
    });
    Box::new(source::Stream::new(schema, Box::new(counted), size))
}

/// Drain `input` into a [`ResidentState`] wave by wave (each batch made ready in the scan's
/// parallel phase, right after its decoding); past the budget (or when spilling is forced)
/// the state is handed to an [`ExternalGroupBy`] as one partial-state table and every later
/// row as its own ([`ResidentState::singletons`]), so that spilled or not, every group gets
/// the same bits. The finished groups, cast to `schema`'s types. A state regrouped by a
/// join's build rows (`regroup`) stays in memory: it holds at most a group per build row
/// of a join whose build side is in memory. Without keys there is one group, which does not
/// spill: past the budget it is a `MemoryLimit` error (a median's values).
fn run_group_by(
    input: &mut Chain,
    options: GroupByOptions,
    regroup: Option<&join_aggregate::Regroup>,
    stats: &Arc<Stats>,
    runner: &dyn Runner,
    schema: &SchemaRef,
    size: usize,
) -> Result<Box<dyn Source>> {
    let in_schema = input.schema();
    let keyless = options.keys.is_empty();
    let force = crate::spill::force() && regroup.is_none() && !keyless;
    let mut spilled = Some(ExternalGroupBy::new(
        in_schema.clone(),
        options.clone(),
        reservation("group_by", runner, stats),
        stats.spill.clone(),
        force,
    )?);
    let mut state = ResidentState::new(in_schema.clone(), options.clone())?;
    let mut mem = Some(reservation("group_by", runner, stats));
    let mut in_memory = true;
    let mut pending = SpillBuffer::default();
    enum Item {
        Ready(Box<Ready>),
        Spill(crate::table::Table),
    }
    loop {
        let wave = {
            let (st, keep) = (&state, in_memory);
            let tail = move |b: RecordBatch| -> Result<Item> {
                let t = Instant::now();
                stats.record(b.num_rows(), None, t);
                Ok(if keep {
                    let r = st.prepare(b)?;
                    stats.record(0, None, t);
                    Item::Ready(Box::new(r))
                } else {
                    let one = st.singletons(&b)?;
                    stats.record(0, None, t);
                    Item::Spill(one)
                })
            };
            input.wave(&tail, runner)?
        };
        let Some(items) = wave else { break };
        let t = Instant::now();
        let mut items = Some(items);
        runner.parallel(&mut || {
            let ext = spilled.as_mut().expect("finished once");
            let mem = mem.as_mut().expect("finished once");
            let mut ready = Vec::new();
            for item in items.take().unwrap_or_default() {
                match item {
                    Item::Ready(r) => ready.push(*r),
                    Item::Spill(one) => {
                        crate::cancel::point();
                        pending.add(one, mem, ext)?;
                    }
                }
            }
            if ready.is_empty() {
                return Ok(());
            }
            state.absorb(&mut ready)?;
            // Twice the state: finishing copies it.
            match mem.resize(2 * state.bytes()) {
                Ok(()) if !force => {}
                // Its one group cannot be split: past the budget it is a `MemoryLimit`.
                Err(e) if keyless => return Err(e),
                _ if keyless || regroup.is_some() => {}
                _ => {
                    ext.spill_partial(state.export()?)?;
                    state.clear();
                    mem.free();
                    in_memory = false;
                }
            }
            Ok(())
        })?;
        stats.record(0, None, t);
    }
    let t = Instant::now();
    let mut out = None;
    runner.parallel(&mut || {
        if let (Some(ext), Some(mem)) = (spilled.as_mut(), mem.as_mut()) {
            pending.flush(mem, ext)?;
        }
        let mem = mem.take().expect("finished once");
        out = Some(match (in_memory, regroup) {
            (true, None) => Grouped::Memory(state.finish()?, mem),
            (true, Some(r)) => {
                let st =
                    GroupByState::of_state(in_schema.clone(), options.clone(), state.export()?)?;
                Grouped::Memory(r.apply(st)?.finish()?, mem)
            }
            (false, _) => spilled.take().expect("finished once").finish()?,
        });
        Ok(())
    })?;
    stats.record(0, None, t);
    grouped_source(out.expect("finished above"), schema, stats, size)
}

/// One-row states of a spilled resident group-by waiting to be spilled, held under the
/// state's reservation (free once it spilled): spilled a batch at a time, the hash
/// partitions got pieces of a few hundred rows each (G1's q10 under 16 MiB: 54 000 pieces,
/// 112 s; buffered, 31 s).
#[derive(Default)]
struct SpillBuffer {
    tables: Vec<crate::table::Table>,
    bytes: u64,
}

impl SpillBuffer {
    fn add(
        &mut self,
        t: crate::table::Table,
        mem: &mut crate::budget::Reservation,
        ext: &mut ExternalGroupBy,
    ) -> Result<()> {
        self.bytes += crate::budget::table_bytes(&t);
        self.tables.push(t);
        // Four times its bytes: cutting it by partition copies it, and a table's bytes
        // undercount what its arrays hold.
        if mem.resize(4 * self.bytes).is_err() {
            self.flush(mem, ext)?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        mem: &mut crate::budget::Reservation,
        ext: &mut ExternalGroupBy,
    ) -> Result<()> {
        let tables = std::mem::take(&mut self.tables);
        if let Some(first) = tables.first() {
            let schema = first.schema.clone();
            let batches = tables.into_iter().flat_map(|t| t.batches).collect();
            ext.spill_partial(crate::table::Table { schema, batches })?;
        }
        self.bytes = 0;
        mem.free();
        Ok(())
    }
}

/// The source of a finished group-by's groups, cast to `schema`'s types.
fn grouped_source(
    out: Grouped,
    schema: &SchemaRef,
    stats: &Arc<Stats>,
    size: usize,
) -> Result<Box<dyn Source>> {
    Ok(match out {
        Grouped::Memory(out, mem) => {
            let batches = crate::table::cast_batches(out.batches, schema)?;
            stats.produced(&batches);
            Box::new(Held(Batches::new(schema.clone(), batches, size), mem))
        }
        Grouped::Spilled(batches) => {
            let target = schema.clone();
            let restored = batches.map(move |b| {
                crate::table::cast_batches(vec![b?], &target)
                    .map(|mut v| v.pop().expect("one batch"))
            });
            counted(schema.clone(), Box::new(restored), stats, size)
        }
    })
}

impl Chain {
    fn schema(&self) -> SchemaRef {
        self.out_schema.clone()
    }
}

/// A run of a plan: pull its output batch by batch ([`Execution::next`]); each pull runs the
/// next wave on the calling pool.
pub struct Execution {
    chain: Chain,
    pending: std::collections::VecDeque<RecordBatch>,
    report: Vec<(String, usize, Arc<Stats>)>,
    peak_rss: u64,
    /// A wave failed: the operators' state is partial (a join's build side may be missing),
    /// so the run cannot go on.
    failed: bool,
    /// The run's own memory limit.
    scope: Option<Arc<crate::budget::Scope>>,
    /// What the consumer of the output buffers (a writer's row group), held until the end.
    output: Option<crate::budget::Reservation>,
}

/// Rows per morsel for sources that do not fix it (in-memory tables, CSV).
pub const DEFAULT_MORSEL: usize = 1 << 17;

/// Under a memory limit a source's batches are cut to at most about this fraction of it
/// (where the source can tell a row's size): a sort holds a batch twice while it takes it,
/// a wave decodes a batch per thread, and the output writer holds a quarter of the limit.
/// G1's 10^7 rows (about 80 bytes a row in all 9 columns) read in batches of 131 072 rows,
/// 10 MiB: under 16 MiB a sort refused its first batch; under 100 MiB nothing changes.
pub const BATCHES_PER_LIMIT: u64 = 8;

impl Execution {
    /// An execution of `plan` (`labels`: its operators in pre-order). `wave`: inputs claimed
    /// per wave per thread ([`STREAMING_WAVE`] or [`COLLECTING_WAVE`]) by the output chain;
    /// a chain with a `head` keeps short waves (it stops reading early), and so does a
    /// group-by's input (a wave's batches, made ready for its resident state, are all alive
    /// until folded). Under a memory limit — the process's, or this run's
    /// `memory_limit` (bytes) — every chain reads in short waves, and operators that hold
    /// data reserve it and spill what does not fit.
    pub fn new(
        plan: Plan,
        labels: Vec<String>,
        wave: usize,
        memory_limit: Option<u64>,
    ) -> Result<Self> {
        let mut report = Vec::new();
        let limit = memory_limit.into_iter().chain(crate::budget::limit()).min();
        let bounded = limit.or(crate::spill::force().then_some(u64::MAX));
        let mut chain = build(plan, &mut labels.into_iter(), &mut report, 0, bounded)?;
        chain.set_wave(wave.max(1), bounded.is_some());
        Ok(Execution {
            chain,
            pending: Default::default(),
            report,
            peak_rss: crate::mem::resident_bytes(),
            failed: false,
            scope: memory_limit.map(crate::budget::Scope::new),
            output: None,
        })
    }

    /// Reserve `bytes` for the output's consumer (a writer buffering a row group) until the
    /// output ends or fails, so the operators leave it room. Under a budget too small for
    /// it, nothing is reserved (the consumer buffers them anyway).
    pub fn reserve_output(&mut self, bytes: u64) {
        let mut r = crate::budget::Reservation::in_scope("output writer", self.scope.clone());
        self.output = r.try_grow(bytes).is_ok().then_some(r);
    }

    pub fn schema(&self) -> SchemaRef {
        self.chain.out_schema.clone()
    }

    /// The next output batch; `None` at the end. Call it inside [`crate::cancel::run`].
    pub fn next(&mut self, runner: &dyn Runner) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(Some(b));
            }
            if self.failed {
                return Err(Error::Value(
                    "this run failed earlier and cannot continue".into(),
                ));
            }
            let scoped = Scoped {
                runner,
                scope: self.scope.clone(),
            };
            let wave = self.chain.wave(&|b| Ok(b), &scoped);
            self.failed = wave.is_err();
            if self.failed {
                self.output = None;
            }
            let wave = wave?;
            self.peak_rss = self.peak_rss.max(crate::mem::resident_bytes());
            match wave {
                None => {
                    self.output = None;
                    return Ok(None);
                }
                Some(bs) => self.pending.extend(bs),
            }
        }
    }

    /// Every operator's counters so far, output first.
    pub fn report(&self) -> Vec<OpReport> {
        self.report
            .iter()
            .map(|(label, depth, s)| OpReport {
                label: label.clone(),
                depth: *depth,
                rows_in: s.rows_in.load(Ordering::Relaxed),
                rows_out: s.rows_out.load(Ordering::Relaxed),
                batches: s.batches.load(Ordering::Relaxed),
                cpu_seconds: s.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
                spilled_bytes: s.spill.bytes.load(Ordering::Relaxed),
                spill_files: s.spill.files.load(Ordering::Relaxed),
                spill_seconds: s.spill.nanos.load(Ordering::Relaxed) as f64 * 1e-9,
                peak_reserved: s.reserved.peak(),
            })
            .collect()
    }

    /// The largest resident set size seen between waves (bytes).
    pub fn peak_rss(&self) -> u64 {
        self.peak_rss
    }
}

/// Lower `plan` into chains. `report` gets one entry per operator, output first.
/// `bounded`: the run's tightest memory limit (`u64::MAX` when it only spills by force):
/// `dedup(keep="first")` then runs as a breaker that can spill rather than as a streaming
/// stage, a group-by over a join is not fused with it, and sources cut their inputs into
/// batches of at most a [`BATCHES_PER_LIMIT`]th of the limit.
fn build(
    plan: Plan,
    labels: &mut dyn Iterator<Item = String>,
    report: &mut Vec<(String, usize, Arc<Stats>)>,
    depth: usize,
    bounded: Option<u64>,
) -> Result<Chain> {
    let stats = Arc::new(Stats::default());
    report.push((labels.next().unwrap_or_default(), depth, stats.clone()));
    let out_schema = plan.schema();
    Ok(match plan {
        Plan::Source(mut s) => {
            if let Some(limit) = bounded {
                s.bound_inputs(limit / BATCHES_PER_LIMIT);
            }
            Chain::starting(Start::Source(s), out_schema, DEFAULT_MORSEL, stats)
        }
        Plan::GroupBy {
            input,
            options,
            schema,
            ..
        } => {
            // Under a memory limit the join and the group-by run apart, each able to spill
            // (the fused form keeps the build side and its groups in memory).
            if bounded.is_none()
                && let Some(lineage) = join_aggregate::lineage(&input, &options)
            {
                return join_aggregate::chain(
                    *input, lineage, options, schema, stats, labels, report, depth,
                );
            }
            let input = build(*input, labels, report, depth + 1, bounded)?;
            let size = input.size;
            let start = Start::GroupBy {
                input: Box::new(input),
                options,
                schema,
                stats,
                regroup: None,
            };
            Chain::starting(start, out_schema, size, Arc::default())
        }
        Plan::Sort { input, keys, limit } => {
            let input = build(*input, labels, report, depth + 1, bounded)?;
            let size = input.size;
            let start = Start::Sort {
                input: Box::new(input),
                keys,
                limit,
                stats,
            };
            Chain::starting(start, out_schema, size, Arc::default())
        }
        Plan::Join {
            left,
            right,
            left_cols,
            right_cols,
            opts,
            ..
        } => {
            let l = build(*left, labels, report, depth + 1, bounded)?;
            let r = build(*right, labels, report, depth + 1, bounded)?;
            let ((mut probe, probe_cols), (built, cols)) = if JoinBuild::builds_left(opts.how) {
                ((r, right_cols), (l, left_cols))
            } else {
                ((l, left_cols), (r, right_cols))
            };
            probe_columns(&mut probe, probe_cols)?;
            let cell = Arc::new(OnceLock::new());
            probe.builds.push(Pending {
                chain: Box::new(built),
                cols,
                probe_schema: probe.schema(),
                opts,
                cell: cell.clone(),
                stats: stats.clone(),
                spillable: true,
            });
            let size = probe.size;
            probe.push(
                Box::new(ProbeOp {
                    cell,
                    schema: out_schema.clone(),
                    size,
                }),
                stats,
            );
            probe.out_schema = out_schema;
            probe
        }
        Plan::Filter { input, predicate } => {
            let mut c = build(*input, labels, report, depth + 1, bounded)?;
            c.push(Box::new(FilterOp(predicate)), stats);
            c.out_schema = out_schema;
            c
        }
        Plan::Project {
            input,
            columns,
            schema,
        } => {
            let mut c = build(*input, labels, report, depth + 1, bounded)?;
            c.push(Box::new(ProjectOp { columns, schema }), stats);
            c.out_schema = out_schema;
            c
        }
        Plan::Head { input, n } => {
            let mut c = build(*input, labels, report, depth + 1, bounded)?;
            c.serial.push(Stage {
                op: Serial::Head { left: n },
                stats,
            });
            if n == 0 {
                c.done = true;
            }
            c.out_schema = out_schema;
            c
        }
        Plan::Dedup {
            input,
            subset,
            keep: Keep::First,
        } if bounded.is_none() => {
            let mut c = build(*input, labels, report, depth + 1, bounded)?;
            let seen = crate::dedup::stream::SeenKeys::new(&c.schema(), subset)?;
            c.serial.push(Stage {
                op: Serial::Dedup(seen),
                stats,
            });
            c.out_schema = out_schema;
            c
        }
        Plan::Dedup {
            input,
            subset,
            keep,
        } => {
            let input = build(*input, labels, report, depth + 1, bounded)?;
            let size = input.size;
            let start = Start::Dedup {
                input: Box::new(input),
                subset,
                keep,
                stats,
            };
            Chain::starting(start, out_schema, size, Arc::default())
        }
        Plan::Shared { shared, schema } => {
            {
                let mut state = shared.state()?;
                if let SharedState::Plan(..) = &*state {
                    let SharedState::Plan(plan, cols) =
                        std::mem::replace(&mut *state, SharedState::Taken)
                    else {
                        unreachable!("matched above")
                    };
                    let chain = build(*plan, labels, report, depth + 1, bounded)?;
                    *state = SharedState::Chain(Box::new(chain), cols);
                }
            }
            // Its counters: the rows it replays to this consumer.
            Chain::starting(
                Start::Shared(shared, schema),
                out_schema,
                DEFAULT_MORSEL,
                stats,
            )
        }
        Plan::Expect { input, expect } => {
            let mut c = build(*input, labels, report, depth + 1, bounded)?;
            let check = Checking::new(expect, &c.schema())?;
            c.serial.push(Stage {
                op: Serial::Expect(Box::new(check)),
                stats,
            });
            c.out_schema = out_schema;
            c
        }
        Plan::MapBatches { input, f, .. } => {
            let mut c = build(*input, labels, report, depth + 1, bounded)?;
            c.serial.push(Stage {
                op: Serial::Map(f),
                stats,
            });
            c.out_schema = out_schema;
            c
        }
    })
}

/// `probe` cut to the columns a join reads (positions): a projection that is part of the
/// join (its own counters stay out of the report).
fn probe_columns(probe: &mut Chain, cols: Vec<usize>) -> Result<()> {
    let all = probe.schema();
    if cols.len() != all.fields().len() || cols.iter().enumerate().any(|(i, &c)| i != c) {
        let schema = Arc::new(all.project(&cols)?);
        let columns = cols.into_iter().map(Column::Input).collect();
        probe.push(
            Box::new(ProjectOp {
                columns,
                schema: schema.clone(),
            }),
            Arc::default(),
        );
        probe.out_schema = schema;
    }
    Ok(())
}

impl Chain {
    /// A chain whose input is `start`, with no operator yet; `source_stats` count what the
    /// start hands on (a breaker counts its own output in its stats).
    fn starting(
        start: Start,
        out_schema: SchemaRef,
        size: usize,
        source_stats: Arc<Stats>,
    ) -> Chain {
        Chain {
            start,
            source_stats,
            parallel: vec![],
            serial: vec![],
            done: false,
            size,
            out_schema,
            wave: STREAMING_WAVE,
            builds: Vec::new(),
            prefetched: None,
            next_seq: 0,
            serial_seq: 0,
            ending: None,
            next_end: 0,
            ended: false,
        }
    }

    /// Append a per-batch operator: parallel unless a serial operator precedes it.
    fn push(&mut self, op: Box<dyn Operator>, stats: Arc<Stats>) {
        if self.serial.is_empty() {
            self.parallel.push(Stage { op, stats });
        } else {
            self.serial.push(Stage {
                op: Serial::Op(op),
                stats,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_by::{AggFn, AggSpec};
    use arrow_array::{Float64Array, Int64Array};

    fn batches(n: usize, size: usize) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Float64, false),
        ]));
        let out = (0..n)
            .step_by(size)
            .map(|o| {
                let rows = o..(o + size).min(n);
                let k = Int64Array::from_iter_values(rows.clone().map(|i| (i % 7) as i64));
                let v = Float64Array::from_iter_values(rows.map(|i| i as f64 * 0.1));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(v)]).unwrap()
            })
            .collect();
        (schema, out)
    }

    fn run(plan: Plan) -> Vec<RecordBatch> {
        run_with(plan, STREAMING_WAVE)
    }

    fn run_with(plan: Plan, wave: usize) -> Vec<RecordBatch> {
        let mut e = Execution::new(plan, vec![], wave, None).unwrap();
        let mut out = Vec::new();
        crate::cancel::run(|| {
            while let Some(b) = e.next(&InPool)? {
                out.push(b);
            }
            Ok(())
        })
        .unwrap();
        out
    }

    fn source(n: usize, size: usize) -> Plan {
        let (schema, b) = batches(n, size);
        Plan::Source(Box::new(Batches::new(schema, b, size)))
    }

    #[test]
    fn head_keeps_source_order_and_stops() {
        let out = run(Plan::Head {
            input: Box::new(source(100_000, 1000)),
            n: 2500,
        });
        let ks: Vec<f64> = out
            .iter()
            .flat_map(|b| {
                arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Float64Type>(
                    b.column(1),
                )
                .values()
                .to_vec()
            })
            .collect();
        assert_eq!(ks.len(), 2500);
        assert!(ks.iter().enumerate().all(|(i, v)| *v == i as f64 * 0.1));
    }

    #[test]
    fn head_stops_early_and_output_keeps_order_with_long_waves() {
        let plan = || Plan::Head {
            input: Box::new(source(100_000, 1000)),
            n: 2500,
        };
        assert_eq!(run_with(plan(), COLLECTING_WAVE), run(plan()));
        let all = || source(100_000, 1000);
        assert_eq!(run_with(all(), COLLECTING_WAVE), run(all()));
    }

    #[test]
    fn group_by_is_the_same_for_every_pool_size() {
        let plan = || {
            let opts = GroupByOptions {
                keys: vec!["k".into()],
                aggs: vec![AggSpec {
                    name: "s".into(),
                    column: Some("v".into()),
                    func: AggFn::parse("sum", None).unwrap(),
                }],
                dropna: false,
                sort: true,
            };
            Plan::group_by(source(50_000, 777), opts, vec![]).unwrap()
        };
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            crate::pool::set_num_threads(threads).unwrap();
            results.push(run(plan()));
            results.push(run_with(plan(), COLLECTING_WAVE));
        }
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
    }

    /// A sub-plan both sides of a join share runs once; each side reads all of its output.
    #[test]
    fn a_shared_sub_plan_runs_once() {
        let calls = Arc::new(AtomicU64::new(0));
        let counting: BatchFn = {
            let calls = calls.clone();
            Arc::new(move |b| {
                calls.fetch_add(1, Ordering::Relaxed);
                Ok(vec![b])
            })
        };
        let sub = Plan::MapBatches {
            schema: source(10, 5).schema(),
            input: Box::new(source(1000, 100)),
            f: counting,
        };
        let (shared, schema) = Shared::new(sub, vec![0, 1]).unwrap();
        let side = || Plan::Shared {
            shared: shared.clone(),
            schema: schema.clone(),
        };
        let opts = JoinOptions::new(
            crate::join::JoinType::Inner,
            vec!["v".into()],
            vec!["v".into()],
        );
        let names = ["k".to_string(), "v".to_string()];
        let plan = Plan::join(side(), side(), &names, &names[1..], opts).unwrap();
        let rows: usize = run(plan).iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 1000);
        assert_eq!(calls.load(Ordering::Relaxed), 10);
    }

    /// A failed build side ends the run: later pulls report the failure, never probe a
    /// build that was not made.
    #[test]
    fn a_failed_join_build_fails_every_later_pull() {
        let failing: BatchFn = Arc::new(|_| Err(crate::error::Error::Value("boom".into())));
        let right = Plan::MapBatches {
            schema: source(10, 5).schema(),
            input: Box::new(source(10, 5)),
            f: failing,
        };
        let opts = JoinOptions::new(
            crate::join::JoinType::Inner,
            vec!["k".into()],
            vec!["k".into()],
        );
        let names = ["k".to_string(), "v".to_string()];
        let plan = Plan::join(source(1000, 100), right, &names, &names[..1], opts).unwrap();
        let mut e = Execution::new(plan, vec![], STREAMING_WAVE, None).unwrap();
        let mut pull = || crate::cancel::run(|| e.next(&InPool).map(|_| ()));
        assert!(pull().unwrap_err().to_string().contains("boom"));
        assert!(pull().unwrap_err().to_string().contains("failed earlier"));
    }
}
