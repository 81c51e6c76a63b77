//! A group-by whose keys all come from the build side of an inner join, aggregated as the
//! join probes: eager aggregation by build row.
//!
//! `group_by(K, aggs)` over `join(L, R)` where every key in `K` is a column of the build
//! side `R` (or a join key with exactly the same type on both sides, so its value is the
//! build row's), and every aggregate reads a column of the probe side `L` (or none):
//! then all output rows joined to one build row fall into one group. So the probe does not
//! gather the joined rows; each probe batch yields its matched `(probe row, build row)`
//! pairs, and the group-by aggregates the probe columns by **build row** — an integer key
//! instead of `K` (often strings) over every joined row. At the end the state is
//! [regrouped](GroupByState::regroup) by `K`, whose values are gathered from the build rows
//! that were met (at most one row per build row), merging build rows with equal `K`.
//!
//! Groups come out in the order of their first joined row, as grouping the join's output
//! would give. The rewrite is taken only for aggregates whose merge ignores how the rows
//! were split (see [`order_free`]), so the answer is the same to the bit.

use std::sync::{Arc, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::{At, Chain, Operator, Pending, Plan, Start, Stats, build, in_memory, probe_columns};
use crate::error::Result;
use crate::gather::take_table;
use crate::group_by::stream::GroupByState;
use crate::group_by::{AggFn, GroupByOptions};
use crate::join::external::Built;
use crate::join::{JoinType, output_layout};
use crate::table::Table;

/// Where a group-by over a join reads its columns, when it can aggregate by build row.
pub(super) struct Lineage {
    /// Per group key, its column on the build side (positions among the columns the join
    /// reads).
    build_keys: Vec<usize>,
    /// The probe side's columns the aggregates read: output name, position among the
    /// probe columns the join reads.
    probe_values: Vec<(String, usize)>,
}

/// Whether values of `t` (a dictionary's: of its values) are floats.
fn floating(t: &DataType) -> bool {
    crate::keys::value_type(t).is_floating()
}

/// Aggregates whose result does not depend on how the rows of a group are split into
/// partial states nor on their order: counts, exact sums and means (integers, decimals,
/// booleans), min / max of non-float values (equal values are identical), and the list
/// aggregates whose result is a function of the multiset.
fn order_free(func: &AggFn, input: Option<&DataType>) -> bool {
    match func {
        AggFn::Count | AggFn::Size | AggFn::NUnique | AggFn::Median | AggFn::Quantile(_) => true,
        AggFn::Sum | AggFn::Mean | AggFn::Min | AggFn::Max => !input.is_some_and(floating),
        _ => false,
    }
}

/// Whether join keys of types `l` and `r` that are equal are identical values (so a left
/// key column's value is its build partner's): the same type, not floats (`-0.0 == 0.0`).
fn identical_when_equal(l: &DataType, r: &DataType) -> bool {
    l == r && !floating(l)
}

/// The lineage of `options` over `join` when the group-by can run by build row, else
/// `None` (the group-by then runs over the join's output as usual).
pub(super) fn lineage(join: &Plan, options: &GroupByOptions) -> Option<Lineage> {
    let Plan::Join {
        left,
        right,
        left_cols,
        right_cols,
        opts,
        schema,
    } = join
    else {
        return None;
    };
    if opts.how != JoinType::Inner || opts.validate.is_some() || options.keys.is_empty() {
        return None;
    }
    let ls = Arc::new(left.schema().project(left_cols).ok()?);
    let rs = Arc::new(right.schema().project(right_cols).ok()?);
    let (_, origins) = output_layout(&ls, &rs, opts).ok()?;
    let origin = |name: &str| origins.get(schema.index_of(name).ok()?).copied();
    let mut build_keys = Vec::with_capacity(options.keys.len());
    for key in &options.keys {
        build_keys.push(match origin(key)? {
            (true, r) => r,
            (false, l) => {
                // A left join key: its build partner holds the same value.
                let k = opts
                    .left_on
                    .iter()
                    .position(|n| ls.index_of(n).ok() == Some(l))?;
                let r = rs.index_of(&opts.right_on[k]).ok()?;
                identical_when_equal(ls.field(l).data_type(), rs.field(r).data_type())
                    .then_some(r)?
            }
        });
    }
    let mut probe_values: Vec<(String, usize)> = Vec::new();
    for agg in &options.aggs {
        let input = match &agg.column {
            None => None,
            Some(name) => {
                let (false, l) = origin(name)? else {
                    return None;
                };
                if !probe_values.iter().any(|(n, _)| n == name) {
                    probe_values.push((name.clone(), l));
                }
                Some(ls.field(l).data_type())
            }
        };
        if !order_free(&agg.func, input) {
            return None;
        }
    }
    Some(Lineage {
        build_keys,
        probe_values,
    })
}

/// The chain of `group_by(options)` over `join` (a [`Plan::Join`] whose [`lineage`] is
/// `lineage`): the probe side's chain ending in [`PairsOp`], started into a group-by by
/// build row that regroups by the keys at its end. The join's report entry and its inputs'
/// are made as for the join itself.
#[allow(clippy::too_many_arguments)]
pub(super) fn chain(
    join: Plan,
    lineage: Lineage,
    options: GroupByOptions,
    group_schema: SchemaRef,
    group_stats: Arc<Stats>,
    labels: &mut dyn Iterator<Item = String>,
    report: &mut Vec<(String, usize, Arc<Stats>)>,
    depth: usize,
) -> Result<Chain> {
    let join_schema = join.schema();
    let Plan::Join {
        left,
        right,
        left_cols,
        right_cols,
        opts,
        ..
    } = join
    else {
        unreachable!("lineage is made for joins only")
    };
    let join_stats = Arc::new(Stats::default());
    report.push((
        labels.next().unwrap_or_default(),
        depth + 1,
        join_stats.clone(),
    ));
    let mut probe = build(*left, labels, report, depth + 2, None)?;
    let built = build(*right, labels, report, depth + 2, None)?;
    probe_columns(&mut probe, left_cols)?;
    let cell = Arc::new(OnceLock::new());
    probe.builds.push(Pending {
        chain: Box::new(built),
        cols: right_cols,
        probe_schema: probe.schema(),
        opts,
        cell: cell.clone(),
        stats: join_stats.clone(),
        spillable: false,
    });

    // The pairs' batches: the build row, then the probe columns the aggregates read.
    let probe_schema = probe.schema();
    let row = crate::table::fresh_name("#build_row", |n| join_schema.index_of(n).is_ok());
    let mut fields = vec![Field::new(&row, DataType::UInt32, false)];
    fields.extend(
        lineage
            .probe_values
            .iter()
            .map(|(name, i)| probe_schema.field(*i).clone().with_name(name)),
    );
    let pairs_schema = Arc::new(Schema::new(fields));
    let op = PairsOp {
        cell: cell.clone(),
        values: lineage.probe_values.iter().map(|(_, i)| *i).collect(),
        schema: pairs_schema.clone(),
    };
    probe.push(Box::new(op), join_stats);
    probe.out_schema = pairs_schema;

    let by_row = GroupByOptions {
        keys: vec![row],
        aggs: options.aggs.clone(),
        dropna: false,
        sort: false,
    };
    let size = probe.size;
    let start = Start::GroupBy {
        input: Box::new(probe),
        options: by_row,
        schema: group_schema.clone(),
        stats: group_stats,
        regroup: Some(Regroup {
            cell,
            build_keys: lineage.build_keys,
            schema: join_schema,
            options,
        }),
    };
    Ok(Chain::starting(start, group_schema, size, Arc::default()))
}

/// The end of a group-by by build row: the keys it stands for.
pub(super) struct Regroup {
    cell: Arc<OnceLock<Built>>,
    build_keys: Vec<usize>,
    /// The join's output schema and the group-by's options over it.
    schema: SchemaRef,
    options: GroupByOptions,
}

impl Regroup {
    /// `state` (keyed by build row) keyed by the group-by's keys.
    pub(super) fn apply(&self, state: GroupByState) -> Result<GroupByState> {
        let build = in_memory(&self.cell)?;
        state.regroup(self.schema.clone(), self.options.clone(), |old| {
            let rows = old[0].as_primitive::<UInt32Type>().values();
            let keys = build.build_table().project(&self.build_keys)?;
            let t = take_table(&keys, rows)?;
            (0..self.build_keys.len()).map(|i| t.column(i)).collect()
        })
    }
}

/// The probe of an inner join by one batch, as `(build row, probe values)` rows: the
/// joined rows minus every column but the ones aggregated.
struct PairsOp {
    cell: Arc<OnceLock<Built>>,
    values: Vec<usize>,
    schema: SchemaRef,
}

impl Operator for PairsOp {
    fn push(&self, batch: RecordBatch, _: At) -> Result<Vec<RecordBatch>> {
        let build = in_memory(&self.cell)?;
        let t = Table {
            schema: batch.schema(),
            batches: vec![batch],
        };
        let (p, b) = build.inner_pairs(&t)?;
        if p.is_empty() {
            return Ok(vec![]);
        }
        let n = p.len();
        let values = take_table(&t.project(&self.values)?, &p)?;
        let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(b))];
        for i in 0..self.values.len() {
            cols.push(values.column(i)?);
        }
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(vec![RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &opts,
        )?])
    }
}
