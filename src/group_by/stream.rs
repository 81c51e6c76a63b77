//! Streaming group-by: a state that absorbs record batches one at a time, merges with other
//! states, and finishes into exactly the table [`super::group_by`] returns for all the rows.
//!
//! The state is a *partial-state table*: the key columns and, per aggregate, the columns of
//! its mergeable state, one row per group seen, groups in first-appearance order. A batch is
//! aggregated on its own into such a table (the partial step, with the in-memory kernels);
//! buffered partial tables are merged into the state by grouping their concatenation on the
//! keys again and folding the state columns (the merge step). Concatenation keeps batch
//! order, so first appearance, `first` / `last`, and the earliest-row tie rule of min / max /
//! top_k are those of the whole input. Memory is bounded by the groups (plus one buffer of
//! partial tables, merged once it holds [`PENDING_TIMES_MERGED`] times as many rows as the
//! state), except for median / quantile, whose state is every non-null value of the group.
//!
//! | aggregate | state columns | merge |
//! |---|---|---|
//! | count, size | int64 count | sum |
//! | min, max, first, last | the aggregate itself | the same aggregate |
//! | float sum | compensated sum, compensation, count | Kahan steps |
//! | integer / decimal sum | exact decimal128 sum (i128, unscaled) | exact sum, range checked at the end |
//! | mean (float) | compensated sum, compensation, count | Kahan steps |
//! | mean (integer, decimal) | exact sum, count | sums |
//! | var, std | count, mean, M2 | Chan's merge |
//! | corr | count, means, M2s, co-moment | Chan's merge |
//! | top_k | list of the k largest | top k of the lists |
//! | n_unique | list of the distinct values | distinct values of the lists |
//! | median, quantile | list of the values | concatenation |
//!
//! A merge folds each group's partial states one by one in input order (never in blocks),
//! and every state is whole (a float sum keeps its compensation), so a group's state is
//! the left fold of its partial states whichever of them were merged together, and when:
//! merged in one state or in hash partitions, spilled or not, the bits are the same.
//!
//! Floating-point results can differ from the in-memory kernel's in the last bits (the sums
//! associate per batch); they do not depend on the thread count.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Decimal128Array, Float64Array, Int64Array, ListArray, RecordBatch, UInt64Array,
};
use arrow_buffer::BooleanBuffer;
use arrow_schema::{DataType, Field, SchemaRef};

use super::accumulate::{CoMoments, Combine, Kahan, Moments, Sum};
use super::groups::{Groups, group, group_known};
use super::holistic::{self, Members, per_group};
use super::{
    AggFn, AggSpec, Column, GroupByOptions, Input, aggregate, as_f64, check, comoments, exact,
    exact_sums, moments, validity,
};
use crate::error::{Error, Result};
use crate::gather::take_table;
use crate::keys::encode::{dense_codes, learn, order_codes};
use crate::keys::intern::Known;
use crate::table::{Table, schema_mismatch};

/// How one aggregate travels between batches (see the module table).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Carry {
    Count,
    /// The aggregate is its own merge: min, max, first, last.
    Same,
    /// Float sums: the compensated sum, its compensation and the count of values.
    FloatSum,
    /// Exact sums of integers (`out` int64 / uint64) or decimals (`out` decimal128(38, s)).
    Exact {
        out: DataType,
    },
    /// `exact`: integer / decimal input summed exactly (decimal scale), else float sums.
    Mean {
        exact: Option<i8>,
    },
    Moments {
        std: bool,
    },
    Corr,
    TopK(usize),
    Quantile(f64),
    NUnique,
}

impl Carry {
    pub(super) fn of(func: &AggFn, input: Option<&DataType>) -> Carry {
        match func {
            AggFn::Count | AggFn::Size => Carry::Count,
            AggFn::Sum => match input {
                Some(dt) if dt.is_floating() => Carry::FloatSum,
                Some(
                    DataType::Decimal32(_, s)
                    | DataType::Decimal64(_, s)
                    | DataType::Decimal128(_, s),
                ) => Carry::Exact {
                    out: DataType::Decimal128(38, *s),
                },
                Some(dt) if dt.is_unsigned_integer() => Carry::Exact {
                    out: DataType::UInt64,
                },
                _ => Carry::Exact {
                    out: DataType::Int64,
                },
            },
            AggFn::Min | AggFn::Max | AggFn::First | AggFn::Last => Carry::Same,
            AggFn::Mean => Carry::Mean {
                exact: input
                    .filter(|dt| dt.is_integer() || dt.is_decimal() || **dt == DataType::Boolean)
                    .map(super::dt_scale),
            },
            AggFn::Var => Carry::Moments { std: false },
            AggFn::Std => Carry::Moments { std: true },
            AggFn::Corr(_) => Carry::Corr,
            AggFn::TopK(k) => Carry::TopK(*k),
            AggFn::Median => Carry::Quantile(0.5),
            AggFn::Quantile(q) => Carry::Quantile(*q),
            AggFn::NUnique => Carry::NUnique,
        }
    }

    fn holistic(&self) -> bool {
        matches!(self, Carry::TopK(_) | Carry::Quantile(_) | Carry::NUnique)
    }
}

/// Aggregation state that absorbs record batches one at a time (see the module docs).
pub struct GroupByState {
    opts: GroupByOptions,
    schema: SchemaRef,
    carries: Vec<Carry>,
    /// Partial-state tables in input order; the first is the merged state.
    tables: Vec<Table>,
    /// Rows of `tables[0]` after the last merge.
    merged_rows: usize,
    /// Rows of the other tables.
    pending_rows: usize,
    /// The values of its byte-string keys, learnt from its partial-state tables.
    known: KnownKeys,
}

/// The values a state has seen of each of its byte-string key columns ([`Known`]; `None`
/// for other columns and for those forgotten), which the partial steps of its later batches
/// intern against. Read-only while shared with them; the state learns only when it holds
/// the one reference.
#[derive(Clone, Default)]
struct KnownKeys(Arc<Vec<Option<Known>>>);

/// Most values kept of one key column.
const MAX_KNOWN: usize = 1 << 22;

/// Smallest buffer of partial-state rows worth a merge.
const MIN_PENDING: usize = 1 << 16;

/// The buffer of partial-state rows is merged once it holds this many times the merged
/// rows. A merge regroups every row the state holds, so each merged row is regrouped again
/// at every later merge: at a buffer as large as the merged state, a stream whose batches
/// repeat the same groups regroups two rows per partial row; at four times, 1.25. Memory
/// is bounded by the budget ([`super::external`] merges, then spills, when the state's
/// reservation is refused), and where the groups are mostly distinct a merge would not
/// shrink the buffer anyway. G1 at 10^7 rows, 2 threads, when the pipeline's group-by
/// merged its runs' partial states here (in memory / under 100 MiB): q3 0.80 / 1.27 ->
/// 0.66 / 1.0 s, q5 0.48 / 0.87 -> 0.40 / 0.62, q10 8.6 / 15.4 -> 6.6 / 12.5 (8 times the
/// merged rows gains no more).
const PENDING_TIMES_MERGED: usize = 4;

impl GroupByState {
    /// An empty state for input batches of `schema`; checks the options against it.
    pub fn new(schema: SchemaRef, opts: GroupByOptions) -> Result<Self> {
        let empty = Table {
            schema: schema.clone(),
            batches: vec![],
        };
        let inputs = check(&empty, &opts)?;
        let carries: Vec<Carry> = opts
            .aggs
            .iter()
            .zip(&inputs)
            .map(|(a, i)| Carry::of(&a.func, i.values.as_ref().map(|v| v.data_type())))
            .collect();
        let known = KnownKeys(Arc::new(
            opts.keys.iter().map(|_| Some(Known::default())).collect(),
        ));
        let state_schema = state_schema(&schema, &opts, &carries, &inputs)?;
        let mut st = GroupByState {
            opts,
            schema,
            carries,
            tables: vec![],
            merged_rows: 0,
            pending_rows: 0,
            known,
        };
        // The state of no rows: no groups, or without keys the one group of no rows.
        let first = if st.opts.keys.is_empty() {
            st.partial(&empty, &st.known)?
        } else {
            Table {
                batches: vec![RecordBatch::new_empty(state_schema.clone())],
                schema: state_schema,
            }
        };
        st.merged_rows = first.num_rows();
        st.tables.push(first);
        Ok(st)
    }

    /// The state whose merged partial-state table is `state` (of [`Self::state_schema`],
    /// one row per group, in first-appearance order): another state's, exported.
    pub fn of_state(schema: SchemaRef, opts: GroupByOptions, state: Table) -> Result<Self> {
        let mut st = GroupByState::new(schema, opts)?;
        if let Some(why) = schema_mismatch(&state.schema, &st.state_schema()) {
            return Err(Error::Type(format!(
                "partial-state table does not match the group-by's: {why}"
            )));
        }
        st.merged_rows = state.num_rows();
        st.tables = vec![state];
        Ok(st)
    }

    /// Groups in the state (an upper bound while partial tables wait to be merged).
    pub fn num_groups(&self) -> usize {
        self.merged_rows + self.pending_rows
    }

    /// The schema of its partial-state tables.
    pub fn state_schema(&self) -> SchemaRef {
        self.tables[0].schema.clone()
    }

    /// Bytes the state holds (its partial-state tables and known key values).
    pub fn bytes(&self) -> u64 {
        let known: u64 = self.known.0.iter().flatten().map(Known::memory).sum();
        known
            + self
                .tables
                .iter()
                .map(crate::budget::table_bytes)
                .sum::<u64>()
    }

    /// Aggregate `batch` into the state.
    pub fn absorb(&mut self, batch: &RecordBatch) -> Result<()> {
        self.absorb_table(&Table {
            schema: batch.schema(),
            batches: vec![batch.clone()],
        })
    }

    /// Aggregate the rows of `table` into the state: one partial step over all its batches
    /// (cheaper than a batch at a time when batches hold many groups each).
    pub fn absorb_table(&mut self, table: &Table) -> Result<()> {
        let p = vec![self.partial_of_table(table, &self.known.clone())?];
        self.learn(&p)?;
        self.push(p)
    }

    /// The partial-state table of `batch`'s rows, leaving the state as it is:
    /// `absorb(b)` is `absorb_partial(partial_of(b))`. A distributed group-by computes these
    /// where the rows are and folds them in order where the groups are.
    pub fn partial_of(&self, batch: &RecordBatch) -> Result<Table> {
        let table = Table {
            schema: batch.schema(),
            batches: vec![batch.clone()],
        };
        self.partial_of_table(&table, &self.known)
    }

    fn partial_of_table(&self, table: &Table, known: &KnownKeys) -> Result<Table> {
        if let Some(why) = schema_mismatch(&table.schema, &self.schema) {
            return Err(Error::Type(format!(
                "record batch does not match the group-by state's schema: {why}"
            )));
        }
        let table = Table {
            schema: self.schema.clone(),
            batches: table.batches.clone(),
        };
        self.partial(&table, known)
    }

    /// Fold in a partial-state table of later rows (from [`Self::partial_of`] or
    /// [`Self::export`] of a state of the same schema and options). Its schema is checked
    /// before anything reads it; its rows are merged as partial states, so any table of
    /// that schema (repeated keys included) leaves a valid state.
    pub fn absorb_partial(&mut self, partial: Table) -> Result<()> {
        self.check_partial(&partial)?;
        let p = vec![partial];
        self.learn(&p)?;
        self.push(p)
    }

    fn check_partial(&self, partial: &Table) -> Result<()> {
        match schema_mismatch(&partial.schema, &self.tables[0].schema) {
            Some(why) => Err(Error::Value(format!(
                "the table is not a partial state of this group-by: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Fold in `other`, a state of the same options and schema over *later* rows.
    pub fn merge(&mut self, other: GroupByState) -> Result<()> {
        if schema_mismatch(&other.schema, &self.schema).is_some() || other.opts != self.opts {
            return Err(Error::Value(
                "cannot merge group-by states of different schemas or options".into(),
            ));
        }
        self.learn(&other.tables)?;
        self.push(other.tables)
    }

    fn push(&mut self, tables: Vec<Table>) -> Result<()> {
        self.pending_rows += tables.iter().map(Table::num_rows).sum::<usize>();
        self.tables.extend(tables);
        if self.pending_rows >= PENDING_TIMES_MERGED * self.merged_rows.max(MIN_PENDING) {
            self.compact()?;
        }
        Ok(())
    }

    /// Learn the key values of `tables`, partial-state tables joining the state, unless
    /// its known values are shared with a partial step now. A column whose values keep
    /// coming new — more than an eighth of a table's rows while as many values as the
    /// table has rows are known already — is forgotten: its values look mostly distinct,
    /// and probing them first would only add work.
    fn learn(&mut self, tables: &[Table]) -> Result<()> {
        let Some(known) = Arc::get_mut(&mut self.known.0) else {
            return Ok(());
        };
        for (slot, name) in known.iter_mut().zip(&self.opts.keys) {
            for t in tables.iter().filter(|t| t.num_rows() > 0) {
                let Some(k) = slot.as_mut() else { break };
                let (had, rows) = (k.len(), t.num_rows());
                match learn(k, &t.chunks(t.index_of(name)?))? {
                    Some(new) if (new * 8 <= rows || had < rows) && k.len() <= MAX_KNOWN => {}
                    _ => *slot = None,
                }
            }
        }
        Ok(())
    }

    /// Merge every partial table into one (what the state holds shrinks to one row per
    /// group; the result is the same whenever it happens, see the module docs).
    pub fn compact(&mut self) -> Result<()> {
        if self.tables.len() > 1 {
            // The tables are replaced only once the merge succeeded: an interrupted or
            // failed merge leaves the state as it was.
            let all = Table {
                schema: self.tables[0].schema.clone(),
                batches: self.tables.iter().flat_map(|t| t.batches.clone()).collect(),
            };
            let merged = self.merge_states(&all)?;
            self.tables = vec![merged];
        }
        self.merged_rows = self.tables[0].num_rows();
        self.pending_rows = 0;
        Ok(())
    }

    /// The state as partial-state tables (the key columns, then each aggregate's state
    /// columns): the merged groups, then the partial tables waiting to be merged, as they
    /// are — what [`GroupByState::import`] takes back (e.g. on another machine) to go on
    /// exactly as this state would, float bits included.
    pub fn export(&self) -> Vec<Table> {
        self.tables.clone()
    }

    /// A state of `opts` over rows of `schema` holding `tables`, which
    /// [`GroupByState::export`] made from a state of the same schema and options. Every
    /// table's schema is checked before anything reads it. The first table becomes the
    /// merged state when its keys are distinct (as an export's are); otherwise it is merged
    /// like the others, so the result is a valid state whatever the tables' origin.
    pub fn import(schema: SchemaRef, opts: GroupByOptions, tables: Vec<Table>) -> Result<Self> {
        let mut st = GroupByState::new(schema, opts)?;
        tables.iter().try_for_each(|t| st.check_partial(t))?;
        let mut tables = tables.into_iter();
        let Some(first) = tables.next() else {
            return Ok(st);
        };
        let g = group(&first, &st.opts.keys, false, false)?;
        if g.order.len() == first.num_rows() {
            st.merged_rows = first.num_rows();
            st.tables = vec![first];
        } else {
            st.push(vec![first])?;
        }
        st.push(tables.collect())?;
        Ok(st)
    }

    /// The same aggregates keyed by other columns: a state of `opts` over rows of `schema`
    /// whose groups are this state's, merged where `new_keys` gives equal keys, in this
    /// state's group order. `new_keys` maps this state's key columns (one row per group) to
    /// the new key columns, typed as `schema` declares them.
    ///
    /// When every group of this state lies within one group of the new keys, the result is
    /// the state of the same rows grouped by the new keys directly, in first-appearance
    /// order — exactly for the aggregates whose merge ignores how the rows were split
    /// (counts, exact sums and means, min / max of non-float values, n_unique, median,
    /// quantile); float sums and moments can differ in the last bits, `first` / `last`
    /// follow group order, not row order. The caller picks the aggregates.
    pub fn regroup(
        mut self,
        schema: SchemaRef,
        opts: GroupByOptions,
        new_keys: impl FnOnce(&[ArrayRef]) -> Result<Vec<ArrayRef>>,
    ) -> Result<GroupByState> {
        self.compact()?;
        let mut next = GroupByState::new(schema, opts)?;
        if next.carries != self.carries {
            return Err(Error::Value(
                "cannot regroup a group-by state into other aggregates".into(),
            ));
        }
        let state = &self.tables[0];
        let old: Vec<ArrayRef> = (0..self.opts.keys.len())
            .map(|i| state.column(i))
            .collect::<Result<_>>()?;
        let target = next.tables[0].schema.clone();
        let mut cols = Vec::with_capacity(target.fields().len());
        for (key, field) in new_keys(&old)?.into_iter().zip(target.fields()) {
            cols.push(if key.data_type() == field.data_type() {
                key
            } else {
                arrow_cast::cast(&key, field.data_type())?
            });
        }
        for i in old.len()..state.schema.fields().len() {
            cols.push(state.column(i)?);
        }
        let row_count =
            arrow_array::RecordBatchOptions::new().with_row_count(Some(state.num_rows()));
        let mut batch = RecordBatch::try_new_with_options(target.clone(), cols, &row_count)?;
        if next.opts.dropna {
            // Groups whose new key has a null are dropped, as grouping with `dropna` would.
            let keys = next.opts.keys.len();
            let mut keep = BooleanBuffer::new_set(batch.num_rows());
            for c in &batch.columns()[..keys] {
                if let Some(valid) = c.logical_nulls() {
                    keep = &keep & valid.inner();
                }
            }
            if keep.count_set_bits() < batch.num_rows() {
                let mask = arrow_array::BooleanArray::new(keep, None);
                batch = arrow_select::filter::filter_record_batch(&batch, &mask)?;
            }
        }
        let table = Table {
            schema: target,
            batches: vec![batch],
        };
        if distinct_by_a_fixed_width_key(&table, &next.opts.keys)? {
            // No two groups share the new key: the state as it is, keyed anew.
            next.merged_rows = table.num_rows();
            next.tables = vec![table];
            return Ok(next);
        }
        next.push(vec![table])?;
        next.compact()?;
        Ok(next)
    }

    /// The result: key columns and one column per aggregate, as [`super::group_by`] gives.
    /// The state is left usable (and unchanged in content) whether or not this succeeds.
    pub fn finish(&mut self) -> Result<Table> {
        self.compact()?;
        finish_state(
            &self.schema,
            &self.opts,
            &self.carries,
            self.tables[0].clone(),
        )
    }

    /// Member lists of the groups, when a list-state aggregate needs them.
    fn members(&self, g: &Groups) -> Option<Members> {
        self.carries
            .iter()
            .any(Carry::holistic)
            .then(|| Members::new(g))
    }

    /// The partial-state table of `table`'s rows.
    fn partial(&self, table: &Table, known: &KnownKeys) -> Result<Table> {
        let inputs = check(table, &self.opts)?;
        let g = group_known(table, &self.opts.keys, self.opts.dropna, false, &known.0)?;
        let members = self.members(&g);
        let mut sums = ExactSums::default();
        let mut cols = Vec::new();
        for ((spec, carry), input) in self.opts.aggs.iter().zip(&self.carries).zip(&inputs) {
            cols.extend(partial(
                spec,
                carry,
                input,
                &g,
                members.as_ref(),
                &mut sums,
            )?);
        }
        let state = self.assemble(table, &g, cols)?;
        plain_keys(state, self.opts.keys.len())
    }

    /// The partial-state table of the partial-state tables `all` (in input order).
    fn merge_states(&self, all: &Table) -> Result<Table> {
        let g = group_known(all, &self.opts.keys, false, false, &self.known.0)?;
        let members = self.members(&g);
        let mut cols = Vec::new();
        let mut at = self.opts.keys.len();
        for (spec, carry) in self.opts.aggs.iter().zip(&self.carries) {
            let width = state_width(carry);
            let st = (at..at + width)
                .map(|i| all.column(i))
                .collect::<Result<Vec<_>>>()?;
            cols.extend(merge(spec, carry, &st, &g, members.as_ref())?);
            at += width;
        }
        self.assemble(all, &g, cols)
    }

    /// Keys at each group's first row, then the state columns.
    fn assemble(&self, table: &Table, g: &Groups, cols: Vec<ArrayRef>) -> Result<Table> {
        let opts = GroupByOptions {
            keys: self.opts.keys.clone(),
            aggs: (0..cols.len())
                .map(|i| AggSpec {
                    name: format!("state#{i}"),
                    column: None,
                    func: AggFn::Size,
                })
                .collect(),
            dropna: false,
            sort: false,
        };
        super::assemble(table, &opts, g, cols)
    }
}

/// The schema of the partial-state tables of a group-by of `schema` by `opts` (its
/// aggregates' carries and checked inputs), as [`GroupByState::partial`] builds them: the
/// key fields with dictionaries as their value types, then each aggregate's state columns
/// (nullable, named `state#i` in order), of types its carry fixes.
fn state_schema(
    schema: &SchemaRef,
    opts: &GroupByOptions,
    carries: &[Carry],
    inputs: &[Input],
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    for k in &opts.keys {
        let f = schema.field_with_name(k)?;
        fields.push(match f.data_type() {
            DataType::Dictionary(_, v) => f.clone().with_data_type(*v.clone()),
            _ => f.clone(),
        });
    }
    let list = |dt: DataType| DataType::List(Arc::new(Field::new("item", dt, true)));
    let mut types: Vec<DataType> = Vec::new();
    for ((spec, carry), input) in opts.aggs.iter().zip(carries).zip(inputs) {
        let dt = input.values.as_ref().map(|v| v.data_type().clone());
        let (f, i) = (DataType::Float64, DataType::Int64);
        match carry {
            Carry::Count | Carry::Same | Carry::TopK(_) => {
                types.push(super::output_type(&spec.func, dt.as_ref()))
            }
            Carry::Exact { out } => types.push(DataType::Decimal128(38, super::dt_scale(out))),
            Carry::Mean { exact: Some(scale) } => {
                types.extend([DataType::Decimal128(38, *scale), i])
            }
            Carry::FloatSum | Carry::Mean { exact: None } => types.extend([f.clone(), f, i]),
            Carry::Moments { .. } => types.extend([i, f.clone(), f]),
            Carry::Corr => types.extend([i, f.clone(), f.clone(), f.clone(), f.clone(), f]),
            Carry::Quantile(_) => types.push(list(f)),
            Carry::NUnique => types.push(list(dt.expect("checked: n_unique has a column"))),
        }
    }
    fields.extend(
        (types.into_iter().enumerate()).map(|(i, dt)| Field::new(format!("state#{i}"), dt, true)),
    );
    Ok(Arc::new(arrow_schema::Schema::new(fields)))
}

/// The result of a merged partial-state table `state` (one row per group, in group order):
/// key columns in `schema`'s types and one column per aggregate, sorted by the keys when
/// `opts.sort`.
pub(super) fn finish_state(
    schema: &SchemaRef,
    opts: &GroupByOptions,
    carries: &[Carry],
    state: Table,
) -> Result<Table> {
    let nk = opts.keys.len();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(opts.aggs.len());
    let mut at = nk;
    for (spec, carry) in opts.aggs.iter().zip(carries) {
        let width = state_width(carry);
        let st = (at..at + width)
            .map(|i| state.column(i))
            .collect::<Result<Vec<_>>>()?;
        let out = finish(spec, carry, &st)?;
        // Computed floats only: a min / max / first / last gives the input's own value.
        cols.push(if matches!(carry, Carry::Same) {
            out
        } else {
            one_nan(out)
        });
        at += width;
    }
    // Keys in the input's types (dictionary keys are plain in the state).
    let mut fields = Vec::with_capacity(nk + cols.len());
    let mut all = Vec::with_capacity(nk + cols.len());
    for (i, name) in opts.keys.iter().enumerate() {
        let field = schema.field_with_name(name)?;
        let key = state.column(i)?;
        all.push(if key.data_type() == field.data_type() {
            key
        } else {
            arrow_cast::cast(&key, field.data_type())?
        });
        fields.push(
            state
                .schema
                .field(i)
                .clone()
                .with_data_type(field.data_type().clone()),
        );
    }
    for (a, c) in opts.aggs.iter().zip(&cols) {
        fields.push(Field::new(&a.name, c.data_type().clone(), true));
    }
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    all.extend(cols);
    let row_count = arrow_array::RecordBatchOptions::new().with_row_count(Some(state.num_rows()));
    let out = Table {
        schema: schema.clone(),
        batches: vec![RecordBatch::try_new_with_options(schema, all, &row_count)?],
    };
    if !opts.sort || nk == 0 {
        return Ok(out);
    }
    // One row per group: the sorted group order is a row order.
    let g = group(&out, &opts.keys, false, true)?;
    let rows: Vec<u32> = g.order.iter().map(|&s| g.first[s as usize]).collect();
    take_table(&out, &rows)
}

/// A float column with every NaN the same NaN. Which NaN an operation on two NaNs (or on
/// infinities) gives depends on the order of its operands, which the compiler may swap
/// where a fold is inlined: the state folded in memory and the one merged from spilled
/// partial states would otherwise differ in NaN payloads.
fn one_nan(a: ArrayRef) -> ArrayRef {
    let Some(f) = a.as_primitive_opt::<Float64Type>() else {
        return a;
    };
    if !f
        .values()
        .iter()
        .any(|v| v.is_nan() && v.to_bits() != f64::NAN.to_bits())
    {
        return a;
    }
    Arc::new(f.unary::<_, Float64Type>(|v| if v.is_nan() { f64::NAN } else { v }))
}

/// `state` with its first `nk` (key) columns decoded where they are dictionary-encoded: a
/// partial state keeps only the values. Pieces of a scan each carry their row group's whole
/// dictionary, and states merged from many of them would carry (and encode at every merge)
/// all those dictionaries; the finished groups get the input's key types back.
fn plain_keys(state: Table, nk: usize) -> Result<Table> {
    let dictionary = |f: &Arc<Field>| matches!(f.data_type(), DataType::Dictionary(_, _));
    if !state.schema.fields()[..nk].iter().any(dictionary) {
        return Ok(state);
    }
    let fields: Vec<Field> = state
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match f.data_type() {
            DataType::Dictionary(_, v) if i < nk => f.as_ref().clone().with_data_type(*v.clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    let batches = crate::table::cast_batches(state.batches, &schema)?;
    Ok(Table { schema, batches })
}

/// Whether one of the fixed-width `keys` of `table` (grouped without hashing strings) has a
/// different value (or null) on every row: then so has the whole key.
fn distinct_by_a_fixed_width_key(table: &Table, keys: &[String]) -> Result<bool> {
    let rows = table.num_rows();
    for k in keys {
        let dt = table.schema.field_with_name(k)?.data_type();
        if !dt.is_primitive() {
            continue;
        }
        if group(table, std::slice::from_ref(k), false, false)?
            .order
            .len()
            == rows
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Number of state columns of an aggregate.
pub(super) fn state_width(c: &Carry) -> usize {
    match c {
        Carry::Mean { exact: Some(_) } => 2,
        Carry::FloatSum | Carry::Mean { exact: None } => 3,
        Carry::Moments { .. } => 3,
        Carry::Corr => 6,
        _ => 1,
    }
}

fn spec_of(spec: &AggSpec, func: AggFn) -> AggSpec {
    AggSpec {
        name: spec.name.clone(),
        column: spec.column.clone(),
        func,
    }
}

fn input_of(name: &str, values: ArrayRef) -> Input {
    Input {
        name: name.to_string(),
        values: Some(Column::one(values)),
        other: None,
    }
}

/// Exact sums as decimal128(38, `scale`) (unscaled i128; past 128 bits raises), null for a
/// group without values.
/// Exact per-group sums and value counts of the columns one partial aggregation has summed
/// so far, by column name: `sum` and `mean` of one column (Q1's `sum_qty` and `avg_qty`)
/// read it once.
#[derive(Default)]
struct ExactSums(HashMap<String, Arc<Vec<(i128, u64)>>>);

impl ExactSums {
    fn of(&mut self, values: &Column, g: &Groups, col: &str) -> Result<Arc<Vec<(i128, u64)>>> {
        if let Some(st) = self.0.get(col) {
            return Ok(st.clone());
        }
        let st = Arc::new(exact_sums(values, g).map_err(|_| {
            Error::Value(format!(
                "sum of column {col:?} overflows 128 bits in at least one group"
            ))
        })?);
        self.0.insert(col.to_string(), st.clone());
        Ok(st)
    }
}

pub(super) fn exact_state(st: &[(i128, u64)], scale: i8) -> Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from_iter(st.iter().map(|&(s, n)| (n > 0).then_some(s)))
            .with_precision_and_scale(38, scale)?,
    ))
}

pub(super) fn int64(v: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v.map(|c| c as i64)))
}

fn f64s(v: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(v))
}

pub(super) fn moments_columns(st: &[Moments]) -> Vec<ArrayRef> {
    vec![
        int64(st.iter().map(|m| m.n)),
        f64s(st.iter().map(|m| m.mean)),
        f64s(st.iter().map(|m| m.m2)),
    ]
}

/// Compensated float sums of `values` per group of `g` (as the kernel's `sum` / `mean`).
fn float_sums(values: &Column, g: &Groups) -> Result<Vec<(Kahan, u64)>> {
    let v = values.map(as_f64)?;
    Ok(v.run(g, |c, _| {
        Sum::<f64, Kahan>::new(c.as_primitive::<Float64Type>().values(), validity(c))
    }))
}

pub(super) fn kahan_columns(st: &[(Kahan, u64)]) -> Vec<ArrayRef> {
    vec![
        f64s(st.iter().map(|(k, _)| k.parts().0)),
        f64s(st.iter().map(|(k, _)| k.parts().1)),
        int64(st.iter().map(|&(_, n)| n)),
    ]
}

fn kahan_of(cols: &[ArrayRef]) -> Vec<(Kahan, u64)> {
    let sum = cols[0].as_primitive::<Float64Type>().values();
    let comp = cols[1].as_primitive::<Float64Type>().values();
    let n = cols[2].as_primitive::<Int64Type>().values();
    (0..n.len())
        .map(|i| (Kahan::from_parts(sum[i], comp[i]), n[i] as u64))
        .collect()
}

/// One state per group of `g` (in group order), each group's rows folded in row order
/// ([`super::accumulate::in_row_order`]).
fn in_order<A: super::accumulate::Acc>(acc: &A, g: &Groups) -> Vec<A::S> {
    let st = super::accumulate::in_row_order(std::slice::from_ref(acc), &[0, g.slot.len()], g);
    g.order.iter().map(|&s| st[s as usize]).collect()
}

fn moments_of(cols: &[ArrayRef]) -> Vec<Moments> {
    let n = cols[0].as_primitive::<Int64Type>().values();
    let mean = cols[1].as_primitive::<Float64Type>().values();
    let m2 = cols[2].as_primitive::<Float64Type>().values();
    (0..n.len())
        .map(|i| Moments {
            n: n[i] as u64,
            mean: mean[i],
            m2: m2[i],
        })
        .collect()
}

pub(super) fn comoments_columns(st: &[CoMoments]) -> Vec<ArrayRef> {
    vec![
        int64(st.iter().map(|m| m.n)),
        f64s(st.iter().map(|m| m.mx)),
        f64s(st.iter().map(|m| m.my)),
        f64s(st.iter().map(|m| m.m2x)),
        f64s(st.iter().map(|m| m.m2y)),
        f64s(st.iter().map(|m| m.cxy)),
    ]
}

fn comoments_of(cols: &[ArrayRef]) -> Vec<CoMoments> {
    let n = cols[0].as_primitive::<Int64Type>().values();
    let f = |i: usize| cols[i].as_primitive::<Float64Type>().values();
    let (mx, my, m2x, m2y, cxy) = (f(1), f(2), f(3), f(4), f(5));
    (0..n.len())
        .map(|i| CoMoments {
            n: n[i] as u64,
            mx: mx[i],
            my: my[i],
            m2x: m2x[i],
            m2y: m2y[i],
            cxy: cxy[i],
        })
        .collect()
}

/// One list per group in `g.order`: `values` at the rows `pick` returns from each group's
/// candidate rows (`candidates` turns a group's member rows into candidate rows).
fn lists<W: Default + Send>(
    values: &ArrayRef,
    g: &Groups,
    m: &Members,
    candidates: impl Fn(&[u32], &mut Vec<u32>) + Sync,
    pick: impl Fn(&[u32], &mut W) -> Vec<u32> + Sync,
) -> Result<ArrayRef> {
    let picked = per_group(m, &g.order, |rows, w: &mut (Vec<u32>, W)| {
        w.0.clear();
        candidates(rows, &mut w.0);
        pick(&w.0, &mut w.1)
    });
    let offsets = super::list_offsets(picked.iter().map(Vec::len))?;
    let rows: Vec<u32> = picked.concat();
    let vals = super::gather(values, &rows)?;
    let field = Arc::new(Field::new("item", values.data_type().clone(), true));
    Ok(Arc::new(ListArray::try_new(field, offsets, vals, None)?))
}

/// Candidate rows of a list kind: a group's rows themselves (partial step) or the value
/// positions of its rows' lists (merge step).
fn own_rows(rows: &[u32], out: &mut Vec<u32>) {
    out.extend_from_slice(rows);
}

/// A list column's values (from its first offset on) and its offsets rebased onto them.
fn flatten(list: &ArrayRef) -> (ArrayRef, Vec<u32>) {
    let l = list.as_list::<i32>();
    let off = l.value_offsets();
    let base = off[0];
    let values = l
        .values()
        .slice(base as usize, (off[l.len()] - base) as usize);
    (values, off.iter().map(|&o| (o - base) as u32).collect())
}

/// Candidate rows of the merge step: the positions of a group's state rows' list elements.
fn elements(off: &[u32]) -> impl Fn(&[u32], &mut Vec<u32>) + Sync + '_ {
    move |rows, out| {
        for &r in rows {
            out.extend(off[r as usize]..off[r as usize + 1]);
        }
    }
}

fn partial(
    spec: &AggSpec,
    carry: &Carry,
    input: &Input,
    g: &Groups,
    m: Option<&Members>,
    sums: &mut ExactSums,
) -> Result<Vec<ArrayRef>> {
    let col = input.name.as_str();
    let values = || {
        input
            .values
            .as_ref()
            .expect("checked: the aggregate has a column")
    };
    Ok(match carry {
        Carry::Count | Carry::Same | Carry::TopK(_) => vec![aggregate(spec, input, g, m)?],
        Carry::Exact { out } => {
            vec![exact_state(
                &sums.of(values(), g, col)?,
                super::dt_scale(out),
            )?]
        }
        Carry::Mean { exact: Some(scale) } => {
            // The sums' value counts are the counts.
            let st = sums.of(values(), g, col)?;
            vec![exact_state(&st, *scale)?, int64(st.iter().map(|&(_, n)| n))]
        }
        Carry::FloatSum | Carry::Mean { exact: None } => kahan_columns(&float_sums(values(), g)?),
        Carry::Moments { .. } => moments_columns(&moments(values(), g)?),
        Carry::Corr => {
            let (_, other) = input.other.as_ref().expect("checked: corr has a column");
            comoments_columns(&comoments(values(), other, g)?)
        }
        Carry::Quantile(_) => {
            let f = as_f64(values().whole()?)?;
            let valid: Option<BooleanBuffer> = validity(&f);
            let m = m.expect("members are built for holistic aggregates");
            vec![lists(&f, g, m, own_rows, |c, _: &mut ()| match &valid {
                None => c.to_vec(),
                Some(v) => c.iter().copied().filter(|&r| v.value(r as usize)).collect(),
            })?]
        }
        Carry::NUnique => {
            let v = values();
            let codes = dense_codes(col, &v.chunks, false)?;
            let valid = codes.valid.as_deref();
            let m = m.expect("members are built for holistic aggregates");
            vec![lists(v.whole()?, g, m, own_rows, |c, w| {
                holistic::distinct(&codes.codes, valid, c, w)
            })?]
        }
    })
}

fn merge(
    spec: &AggSpec,
    carry: &Carry,
    st: &[ArrayRef],
    g: &Groups,
    m: Option<&Members>,
) -> Result<Vec<ArrayRef>> {
    let col = spec.column.as_deref().unwrap_or("");
    Ok(match carry {
        Carry::Count => vec![aggregate(
            &spec_of(spec, AggFn::Sum),
            &input_of(col, st[0].clone()),
            g,
            m,
        )?],
        Carry::Same => vec![aggregate(spec, &input_of(col, st[0].clone()), g, m)?],
        Carry::Exact { .. } | Carry::Mean { exact: Some(_) } => {
            let scale = super::dt_scale(st[0].data_type());
            let sums = ExactSums::default().of(&Column::one(st[0].clone()), g, col)?;
            let mut out = vec![exact_state(&sums, scale)?];
            if st.len() == 2 {
                let sum = spec_of(spec, AggFn::Sum);
                out.push(aggregate(&sum, &input_of(col, st[1].clone()), g, m)?);
            }
            out
        }
        Carry::FloatSum | Carry::Mean { exact: None } => {
            let states = kahan_of(st);
            kahan_columns(&in_order(&Combine { states: &states }, g))
        }
        Carry::Moments { .. } => {
            let states = moments_of(st);
            moments_columns(&in_order(&Combine { states: &states }, g))
        }
        Carry::Corr => {
            let states = comoments_of(st);
            comoments_columns(&in_order(&Combine { states: &states }, g))
        }
        Carry::TopK(k) => {
            let m = m.expect("members are built for holistic aggregates");
            let (values, off) = flatten(&st[0]);
            let codes = order_codes(col, std::slice::from_ref(&values))?;
            let valid = codes.valid.as_deref();
            vec![lists(&values, g, m, elements(&off), |c, w| {
                holistic::top_k(&codes.codes, valid, c, *k, w)
            })?]
        }
        Carry::Quantile(_) => {
            let m = m.expect("members are built for holistic aggregates");
            let (values, off) = flatten(&st[0]);
            vec![lists(&values, g, m, elements(&off), |c, _: &mut ()| {
                c.to_vec()
            })?]
        }
        Carry::NUnique => {
            let m = m.expect("members are built for holistic aggregates");
            let (values, off) = flatten(&st[0]);
            let codes = dense_codes(col, std::slice::from_ref(&values), false)?;
            let valid = codes.valid.as_deref();
            vec![lists(&values, g, m, elements(&off), |c, w| {
                holistic::distinct(&codes.codes, valid, c, w)
            })?]
        }
    })
}

/// The aggregate's output column from its merged state columns.
fn finish(spec: &AggSpec, carry: &Carry, st: &[ArrayRef]) -> Result<ArrayRef> {
    let col = spec.column.as_deref().unwrap_or("");
    Ok(match carry {
        Carry::Count | Carry::Same | Carry::TopK(_) => st[0].clone(),
        Carry::Exact { out } => {
            let d = st[0].as_primitive::<Decimal128Type>();
            let sums: Vec<(i128, u64)> = d
                .iter()
                .map(|v| (v.unwrap_or(0), u64::from(v.is_some())))
                .collect();
            let overflow = |ty: &str| {
                Error::Value(format!(
                    "sum of column {col:?} overflows {ty} in at least one group; cast the \
                     column to float64 or decimal first"
                ))
            };
            match out {
                DataType::Int64 => Arc::new(Int64Array::from(exact::<i128, i64>(&sums, || {
                    overflow("int64")
                })?)),
                DataType::UInt64 => Arc::new(UInt64Array::from(exact::<i128, u64>(&sums, || {
                    overflow("uint64")
                })?)),
                _ => {
                    const MAX38: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;
                    if d.values().iter().any(|s| !(-MAX38..=MAX38).contains(s)) {
                        return Err(overflow("decimal128(38)"));
                    }
                    st[0].clone()
                }
            }
        }
        Carry::Mean { exact: Some(scale) } => {
            let s = st[0].as_primitive::<Decimal128Type>();
            let n = st[1].as_primitive::<Int64Type>();
            let scale = 10f64.powi(i32::from(*scale));
            Arc::new(Float64Array::from_iter(s.iter().zip(n.values()).map(
                |(s, &n)| (n > 0).then(|| s.unwrap_or(0) as f64 / scale / n as f64),
            )))
        }
        Carry::FloatSum => Arc::new(Float64Array::from_iter(
            kahan_of(st)
                .iter()
                .map(|&(s, n)| (n > 0).then(|| s.value())),
        )),
        Carry::Mean { exact: None } => Arc::new(Float64Array::from_iter(
            kahan_of(st)
                .iter()
                .map(|&(s, n)| (n > 0).then(|| s.value() / n as f64)),
        )),
        Carry::Moments { std } => Arc::new(Float64Array::from_iter(
            moments_of(st)
                .iter()
                .map(|m| m.var().map(|v| if *std { v.sqrt() } else { v })),
        )),
        Carry::Corr => Arc::new(Float64Array::from_iter(
            comoments_of(st).iter().map(CoMoments::corr),
        )),
        Carry::Quantile(q) => {
            let l = st[0].as_list::<i32>();
            let values = l.values().as_primitive::<Float64Type>().values();
            let off = l.value_offsets();
            let mut scratch = Vec::new();
            let out: Vec<Option<f64>> = (0..l.len())
                .map(|i| {
                    let rows: Vec<u32> = (off[i] as u32..off[i + 1] as u32).collect();
                    holistic::quantile(values, None, &rows, *q, &mut scratch)
                })
                .collect();
            Arc::new(Float64Array::from(out))
        }
        Carry::NUnique => {
            let l = st[0].as_list::<i32>();
            int64(l.value_offsets().windows(2).map(|w| (w[1] - w[0]) as u64))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array};
    use arrow_schema::Schema;

    /// Merging partial states in one piece, one at a time, or per hash partition gives the
    /// same bits for every group.
    #[test]
    fn merge_timing_and_partitioning_do_not_change_the_bits() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("y", DataType::Float64, true),
        ]));
        let batches: Vec<RecordBatch> = (0..40u64)
            .map(|b| {
                let n = 500;
                let k = Int64Array::from_iter_values((0..n).map(|i| ((i * 7 + b) % 5) as i64));
                let x = Float64Array::from_iter((0..n).map(|i| {
                    let v = ((i * 2654435761 + b * 97) % 1000) as f64;
                    (i % 17 != 0).then_some(v * 1e12f64.powi((i % 3) as i32 - 1) + 0.1)
                }));
                let y = Float64Array::from_iter_values((0..n).map(|i| (i as f64).sin() * 1e8));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(x), Arc::new(y)])
                    .unwrap()
            })
            .collect();
        let agg = |name: &str, func: AggFn| AggSpec {
            name: name.into(),
            column: Some("x".into()),
            func,
        };
        let opts = GroupByOptions {
            keys: vec!["k".into()],
            aggs: vec![
                agg("sum", AggFn::Sum),
                agg("mean", AggFn::Mean),
                agg("var", AggFn::Var),
                agg("corr", AggFn::Corr("y".into())),
            ],
            dropna: false,
            sort: true,
        };
        let mut once = GroupByState::new(schema.clone(), opts.clone()).unwrap();
        let mut each = GroupByState::new(schema.clone(), opts.clone()).unwrap();
        let mut parts: Vec<GroupByState> = (0..3)
            .map(|_| GroupByState::new(schema.clone(), opts.clone()).unwrap())
            .collect();
        for b in &batches {
            let p = once.partial_of(b).unwrap();
            once.tables.push(p.clone());
            each.absorb_partial(p.clone()).unwrap();
            each.compact().unwrap();
            for (j, part) in parts.iter_mut().enumerate() {
                let keep: Vec<u32> = (0..p.num_rows() as u32)
                    .filter(|&r| {
                        let k = p.batches[0]
                            .column(0)
                            .as_primitive::<Int64Type>()
                            .value(r as usize);
                        k as usize % 3 == j
                    })
                    .collect();
                part.absorb_partial(take_table(&p, &keep).unwrap()).unwrap();
            }
        }
        let want = once.finish().unwrap();
        assert_eq!(each.finish().unwrap().batches, want.batches);
        let want = want.batches[0].clone();
        for (j, part) in parts.iter_mut().enumerate() {
            let got = part.finish().unwrap().batches[0].clone();
            let rows: Vec<u32> = (0..want.num_rows() as u32)
                .filter(|&r| {
                    want.column(0).as_primitive::<Int64Type>().value(r as usize) as usize % 3 == j
                })
                .collect();
            let idx = arrow_array::UInt32Array::from(rows);
            let expect = arrow_select::take::take_record_batch(&want, &idx).unwrap();
            assert_eq!(got, expect);
        }
    }
}
