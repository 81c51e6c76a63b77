//! A join whose build side is prepared once ([`KeyIndex`]) and probed by a stream of
//! batches of the other side: the pipeline's `join`, for every `how`.
//!
//! * inner / left / semi / anti / outer / cross build the **right** side and stream the left
//!   one: each batch's output is exactly `join(batch, right)` (left order, each left row's
//!   matches in right order). An outer join also marks the build groups a probe row met;
//!   [`JoinBuild::finish`] emits the right rows no probe row met, in right order — so the
//!   concatenated output is the whole-table outer join.
//! * right builds the **left** side and streams the right one, so that the output follows
//!   the right order with each right row's matches in left order, as the whole-table join.
//!
//! Probes run in parallel (the build is read-only but for the outer join's flags, which
//! are atomic); a batch's output depends only on the batch.

use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::ArrayRef;
use arrow_schema::{DataType, SchemaRef};
use rayon::prelude::*;

use super::{Csr, JoinIndices, JoinOptions, JoinType, KeyIndex, NONE, Plan, cross};
use super::{driven, present};
use crate::error::Result;
use crate::gather::{Gatherer, NULL_ROW};
use crate::table::Table;

/// The prepared build side of a streaming join.
pub struct JoinBuild {
    build: Table,
    /// The other side's schema, as an empty table.
    probe_empty: Table,
    opts: JoinOptions,
    /// Key columns of the probe side (positions), in key order.
    probe_keys: Vec<usize>,
    /// Absent for a cross join.
    index: Option<KeyIndex>,
    gids: Vec<u32>,
    /// Build rows grouped by group id (inner / left / right / outer).
    csr: Option<Csr>,
    /// Groups with a build row (semi / anti).
    has: Vec<bool>,
    /// Groups some probe row met (outer).
    met: Vec<AtomicBool>,
    plan: Plan,
    /// The build side's output columns, ready to gather (made once).
    gatherer: Gatherer,
}

impl JoinBuild {
    /// The side a join of type `how` builds: the left one for a right join, else the right.
    pub fn builds_left(how: JoinType) -> bool {
        how == JoinType::Right
    }

    /// Prepare `build` (see [`JoinBuild::builds_left`]) for probes by batches of
    /// `probe_schema`.
    pub fn new(probe_schema: SchemaRef, build: Table, opts: JoinOptions) -> Result<Self> {
        let how = opts.how;
        let probe_empty = Table {
            schema: probe_schema,
            batches: Vec::new(),
        };
        let build_left = Self::builds_left(how);
        let (left, right) = if build_left {
            (&build, &probe_empty)
        } else {
            (&probe_empty, &build)
        };
        let (plan, pairs) = Plan::new(left, right, &opts)?;
        build.checked_num_rows()?;
        let (mut index, mut gids, mut csr, mut has, mut met) = (None, vec![], None, vec![], vec![]);
        let probe_keys: Vec<usize>;
        if how == JoinType::Cross {
            probe_keys = vec![];
        } else {
            let (bcols, pcols): (Vec<usize>, Vec<usize>) = if build_left {
                pairs.iter().copied().unzip()
            } else {
                pairs.iter().map(|&(l, r)| (r, l)).unzip()
            };
            let chunks: Vec<Vec<ArrayRef>> = bcols.iter().map(|&i| build.chunks(i)).collect();
            let types = |t: &Table, cols: &[usize]| -> Vec<DataType> {
                cols.iter()
                    .map(|&i| t.schema.field(i).data_type().clone())
                    .collect()
            };
            let names: Vec<&str> = bcols
                .iter()
                .map(|&i| build.schema.field(i).name().as_str())
                .collect();
            let built = KeyIndex::build(
                &chunks,
                &types(&build, &bcols),
                &types(&probe_empty, &pcols),
                &names,
                opts.nulls_equal,
            )?;
            let card = built.index.card;
            match how {
                JoinType::Semi | JoinType::Anti => has = present(&built.gids, card),
                _ => csr = Some(Csr::build(&built.gids, card)),
            }
            if how == JoinType::Outer {
                met = (0..card).map(|_| AtomicBool::new(false)).collect();
            }
            gids = built.gids;
            index = Some(built.index);
            probe_keys = pcols;
        }
        let gatherer = if build_left {
            plan.left_gatherer(&build)?
        } else {
            plan.right_gatherer(&build)?
        };
        Ok(JoinBuild {
            gatherer,
            build,
            probe_empty,
            opts,
            probe_keys,
            index,
            gids,
            csr,
            has,
            met,
            plan,
        })
    }

    /// The joined rows of one probe batch (or table).
    pub fn probe(&self, batch: &Table) -> Result<Table> {
        let n = batch.checked_num_rows()?;
        let how = self.opts.how;
        let max = self.opts.max_output_rows;
        let Some(index) = &self.index else {
            let idx = cross(n, self.build.num_rows(), max)?;
            return self.materialize(batch, &idx);
        };
        let gid = self.probe_groups(index, batch)?;
        let idx = match how {
            JoinType::Semi | JoinType::Anti => {
                let want = how == JoinType::Semi;
                let left = gid
                    .par_iter()
                    .enumerate()
                    .filter(|&(_, &g)| (g != NONE && self.has[g as usize]) == want)
                    .map(|(i, _)| i as u32)
                    .collect();
                JoinIndices {
                    left,
                    right: Vec::new(),
                }
            }
            _ => {
                let csr = self.csr.as_ref().expect("built for this join type");
                let (p, b) = driven(&gid, csr, how != JoinType::Inner, 0, max)?;
                if how == JoinType::Outer {
                    gid.par_iter().filter(|&&g| g != NONE).for_each(|&g| {
                        self.met[g as usize].store(true, Ordering::Relaxed);
                    });
                }
                if Self::builds_left(how) {
                    JoinIndices { left: b, right: p }
                } else {
                    JoinIndices { left: p, right: b }
                }
            }
        };
        self.materialize(batch, &idx)
    }

    /// How many build rows each row of a probe batch pairs with (0: none; 1 for a semi /
    /// anti join's match), before an outer side's unmatched rows are kept.
    pub fn match_counts(&self, batch: &Table) -> Result<Vec<usize>> {
        let n = batch.checked_num_rows()?;
        let Some(index) = &self.index else {
            return Ok(vec![self.build.num_rows(); n]);
        };
        let gid = self.probe_groups(index, batch)?;
        Ok(match &self.csr {
            Some(csr) => gid.iter().map(|&g| csr.group(g).len()).collect(),
            None => gid
                .iter()
                .map(|&g| usize::from(g != NONE && self.has[g as usize]))
                .collect(),
        })
    }

    /// The build side's group of every row of a probe batch ([`NONE`]: no match).
    fn probe_groups(&self, index: &KeyIndex, batch: &Table) -> Result<Vec<u32>> {
        let chunks: Vec<Vec<ArrayRef>> = self.probe_keys.iter().map(|&i| batch.chunks(i)).collect();
        index.probe(&chunks)
    }

    /// The matched `(probe rows, build rows)` of an inner join's probe batch, in output
    /// order: what [`JoinBuild::probe`] would gather, without gathering it.
    pub fn inner_pairs(&self, batch: &Table) -> Result<(Vec<u32>, Vec<u32>)> {
        batch.checked_num_rows()?;
        let (Some(index), Some(csr), JoinType::Inner) = (&self.index, &self.csr, self.opts.how)
        else {
            return Err(crate::error::Error::Value(
                "row pairs are made for inner joins only".into(),
            ));
        };
        let gid = self.probe_groups(index, batch)?;
        driven(&gid, csr, false, 0, self.opts.max_output_rows)
    }

    /// The build side as prepared (its columns the join reads).
    pub fn probe_schema(&self) -> &SchemaRef {
        &self.probe_empty.schema
    }

    /// The prepared side's rows.
    pub fn build_table(&self) -> &Table {
        &self.build
    }

    /// The output rows `idx` of a probe batch and the build side.
    fn materialize(&self, batch: &Table, idx: &JoinIndices) -> Result<Table> {
        if Self::builds_left(self.opts.how) {
            let rg = self.plan.right_gatherer(batch)?;
            self.plan.materialize_with(&self.gatherer, &rg, idx)
        } else {
            let lg = self.plan.left_gatherer(batch)?;
            self.plan.materialize_with(&lg, &self.gatherer, idx)
        }
    }

    /// What an outer join emits once every probe batch is in: the build rows no probe row
    /// met, in build order. `None` for every other join type.
    pub fn finish(&self) -> Result<Option<Table>> {
        if self.opts.how != JoinType::Outer {
            return Ok(None);
        }
        let right: Vec<u32> = self
            .gids
            .par_iter()
            .enumerate()
            .filter(|&(_, &g)| g == NONE || !self.met[g as usize].load(Ordering::Relaxed))
            .map(|(r, _)| r as u32)
            .collect();
        let idx = JoinIndices {
            left: vec![NULL_ROW; right.len()],
            right,
        };
        Ok(Some(self.plan.materialize(
            &self.probe_empty,
            &self.build,
            &idx,
        )?))
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }

    /// Distinct keys on the build side.
    pub fn num_keys(&self) -> usize {
        self.index.as_ref().map_or(0, |i| i.card)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float32Array, Float64Array, Int32Array, Int64Array};

    use super::super::tests::table;
    use super::*;

    /// Every probe equals the whole-table kernel on the same batch: widened integer keys,
    /// float keys with NaN / -0.0, nulls matching or not.
    #[test]
    fn probes_equal_the_kernel() {
        let right = table(vec![
            (
                "k",
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3), Some(1)])),
            ),
            (
                "f",
                Arc::new(Float32Array::from(vec![f32::NAN, 0.0, 1.5, f32::NAN])),
            ),
            ("r", Arc::new(Int64Array::from(vec![10, 11, 12, 13]))),
        ]);
        let left = table(vec![
            (
                "k",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(2),
                    None,
                    Some(3),
                    Some(1),
                ])),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![f64::NAN, 0.0, -0.0, 1.5, 2.0])),
            ),
            ("l", Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4]))),
        ]);
        for keys in [vec!["k"], vec!["f"], vec!["k", "f"]] {
            for how in [
                JoinType::Inner,
                JoinType::Left,
                JoinType::Semi,
                JoinType::Anti,
                JoinType::Outer,
                JoinType::Right,
            ] {
                for nulls_equal in [false, true] {
                    let names: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
                    let mut opts = JoinOptions::new(how, names.clone(), names);
                    opts.nulls_equal = nulls_equal;
                    let (probe, built) = if JoinBuild::builds_left(how) {
                        (&right, &left)
                    } else {
                        (&left, &right)
                    };
                    let build =
                        JoinBuild::new(probe.schema.clone(), built.clone(), opts.clone()).unwrap();
                    let want = crate::join::join(&left, &right, &opts).unwrap();
                    let mut got = build.probe(probe).unwrap();
                    if let Some(rest) = build.finish().unwrap() {
                        got.batches.extend(rest.batches);
                    }
                    let w = arrow_select::concat::concat_batches(&want.schema, &want.batches);
                    let g = arrow_select::concat::concat_batches(&got.schema, &got.batches);
                    assert_eq!(g.unwrap(), w.unwrap(), "{keys:?} {how:?} {nulls_equal}");
                }
            }
        }
    }
}
