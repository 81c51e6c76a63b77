//! A join whose build (right) side is prepared once and probed by a stream of left batches:
//! the pipeline's `join` for inner / left / semi / anti, whose output follows the left order
//! and can therefore be produced batch by batch.
//!
//! # Algorithm
//! Keys are compared in one *normalized* type per key pair, fixed when the build is made
//! from both schemas: integers of any widths in the narrowest type holding both (or
//! `decimal128(20, 0)` for `uint64` against signed), floats as `float64` with `-0.0 → 0.0`
//! and every NaN made the same NaN, strings / binaries of any layout (dictionary, view,
//! large) as their large layout, anything else as itself. Normalized key columns are turned
//! into arrow's row format (one comparable byte string per row, nulls included), so equal
//! keys — under the same rules as [`crate::join::join`] — are equal byte strings.
//!
//! * **Build** (once): the right rows' key rows are hashed and inserted into one hashbrown
//!   table of group ids (first row of each distinct key); the right rows are then grouped by
//!   id with a counting sort, each group's rows in right order.
//! * **Probe** (per batch): the left key rows are hashed and looked up in parallel blocks;
//!   rows are emitted in left order, each left row with its group's rows in right order
//!   (inner), or a null right row when it has none (left), or once if it has a match (semi)
//!   or none (anti). The pairs are gathered by the same code as [`crate::join::join`], so a
//!   batch's output is exactly `join(batch, right)`.
//!
//! With `nulls_equal=false` a key with a null in any column matches nothing (it is never
//! inserted and never looked up).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, SchemaRef};
use hashbrown::HashTable;
use rayon::prelude::*;

use super::{Family, JoinIndices, JoinOptions, JoinType, NONE, Plan, check_keys, check_size};
use super::{coalesced_type, family};
use crate::error::{Error, Result};
use crate::gather::NULL_ROW;
use crate::keys::intern::hash_bytes;
use crate::parallel::BLOCK;
use crate::table::{Table, concat_chunks};

/// The prepared right side of a streaming join.
pub struct JoinBuild {
    right: Table,
    opts: JoinOptions,
    left_schema: SchemaRef,
    /// (left column, right column, normalized type) per key pair.
    keys: Vec<(usize, usize, DataType)>,
    converter: RowConverter,
    /// The right rows' keys in row format.
    rows: Rows,
    /// Group ids by key: each entry is a group id, whose first right row is `first[id]`.
    table: HashTable<u32>,
    first: Vec<u32>,
    /// Right rows grouped by id: group `g` is `grouped[start[g]..start[g + 1]]`.
    start: Vec<u32>,
    grouped: Vec<u32>,
}

impl JoinBuild {
    /// Prepare `right` for probes by batches of `left_schema`.
    pub fn new(left_schema: SchemaRef, right: Table, opts: JoinOptions) -> Result<Self> {
        if !matches!(
            opts.how,
            JoinType::Inner | JoinType::Left | JoinType::Semi | JoinType::Anti
        ) {
            return Err(Error::Value(format!(
                "a streaming join is inner, left, semi or anti, not {:?}",
                opts.how
            )));
        }
        let empty_left = Table {
            schema: left_schema.clone(),
            batches: Vec::new(),
        };
        let pairs = check_keys(&empty_left, &right, &opts)?;
        let keys = pairs
            .iter()
            .map(|&(li, ri)| {
                let (l, r) = (left_schema.field(li), right.schema.field(ri));
                Ok((
                    li,
                    ri,
                    key_type(l.data_type(), r.data_type(), (l.name(), r.name()))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let converter =
            RowConverter::new(keys.iter().map(|k| SortField::new(k.2.clone())).collect())?;
        let n = right.checked_num_rows()?;
        let cols = keys
            .iter()
            .map(|&(_, ri, ref dt)| normalized(&right, ri, dt))
            .collect::<Result<Vec<_>>>()?;
        let valid = all_valid(&cols, n, opts.nulls_equal);
        let rows = converter.convert_columns(&cols)?;

        let mut table = HashTable::new();
        let mut first: Vec<u32> = Vec::new();
        let mut gid = vec![NONE; n];
        for (row, g) in gid.iter_mut().enumerate() {
            if !valid.as_ref().is_none_or(|v| v[row]) {
                continue;
            }
            let key = rows.row(row);
            let h = hash_bytes(key.as_ref());
            let eq = |&id: &u32| rows.row(first[id as usize] as usize) == key;
            *g = match table.find(h, eq) {
                Some(&id) => id,
                None => {
                    let id = first.len() as u32;
                    first.push(row as u32);
                    let hasher =
                        |&id: &u32| hash_bytes(rows.row(first[id as usize] as usize).as_ref());
                    table.insert_unique(h, id, hasher);
                    id
                }
            };
        }
        // Counting sort of the right rows by group id (stable: right order within a group).
        let mut start = vec![0u32; first.len() + 1];
        for &g in gid.iter().filter(|&&g| g != NONE) {
            start[g as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut next = start.clone();
        let mut grouped = crate::mem::filled(start[first.len()] as usize, 0u32, "join build rows");
        for (row, &g) in gid.iter().enumerate().filter(|(_, g)| **g != NONE) {
            grouped[next[g as usize] as usize] = row as u32;
            next[g as usize] += 1;
        }
        Ok(JoinBuild {
            right,
            opts,
            left_schema,
            keys,
            converter,
            rows,
            table,
            first,
            start,
            grouped,
        })
    }

    /// `join(left, right)` for one batch (or table) of left rows.
    pub fn probe(&self, left: &Table) -> Result<Table> {
        for &(li, _, _) in &self.keys {
            let (want, got) = (self.left_schema.field(li), left.schema.fields().get(li));
            if got.is_none_or(|g| g.name() != want.name() || g.data_type() != want.data_type()) {
                return Err(Error::Value(format!(
                    "probe batch: key column {} is not at position {li} with type {}, as \
                     in the schema the join was built for",
                    want.name(),
                    want.data_type()
                )));
            }
        }
        let n = left.checked_num_rows()?;
        let cols = self
            .keys
            .iter()
            .map(|&(li, _, ref dt)| normalized(left, li, dt))
            .collect::<Result<Vec<_>>>()?;
        let valid = all_valid(&cols, n, self.opts.nulls_equal);
        let rows = self.converter.convert_columns(&cols)?;
        let mut gid = vec![NONE; n];
        gid.par_chunks_mut(BLOCK).enumerate().for_each(|(b, out)| {
            crate::cancel::point();
            for (i, g) in out.iter_mut().enumerate() {
                let row = b * BLOCK + i;
                if valid.as_ref().is_none_or(|v| v[row]) {
                    *g = self.lookup(&rows, row);
                }
            }
        });
        let idx = self.emit(&gid)?;
        let (plan, _) = Plan::new(left, &self.right, &self.opts)?;
        plan.materialize(left, &self.right, &idx)
    }

    fn lookup(&self, rows: &Rows, row: usize) -> u32 {
        let key = rows.row(row);
        let h = hash_bytes(key.as_ref());
        self.table
            .find(h, |&id| {
                self.rows.row(self.first[id as usize] as usize) == key
            })
            .copied()
            .unwrap_or(NONE)
    }

    fn matches(&self, g: u32) -> &[u32] {
        let (a, b) = (self.start[g as usize], self.start[g as usize + 1]);
        &self.grouped[a as usize..b as usize]
    }

    /// Row pairs in left order (see the module docs).
    fn emit(&self, gid: &[u32]) -> Result<JoinIndices> {
        let how = self.opts.how;
        let rows: u128 = match how {
            JoinType::Inner => gid
                .iter()
                .filter(|&&g| g != NONE)
                .map(|&g| self.matches(g).len() as u128)
                .sum(),
            JoinType::Left => gid
                .iter()
                .map(|&g| {
                    if g == NONE {
                        1
                    } else {
                        self.matches(g).len() as u128
                    }
                })
                .sum(),
            _ => 0,
        };
        check_size(rows, self.opts.max_output_rows)?;
        let mut out = JoinIndices::default();
        for (l, &g) in gid.iter().enumerate() {
            let l = l as u32;
            match how {
                JoinType::Semi if g != NONE => out.left.push(l),
                JoinType::Anti if g == NONE => out.left.push(l),
                JoinType::Left if g == NONE => {
                    out.left.push(l);
                    out.right.push(NULL_ROW);
                }
                JoinType::Inner | JoinType::Left if g != NONE => {
                    for &r in self.matches(g) {
                        out.left.push(l);
                        out.right.push(r);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Distinct keys on the build side.
    pub fn num_keys(&self) -> usize {
        self.first.len()
    }
}

/// The type both sides' key columns are compared in (see the module docs).
fn key_type(l: &DataType, r: &DataType, names: (&str, &str)) -> Result<DataType> {
    Ok(match family(l) {
        Family::Int => coalesced_type(l, r, names).unwrap_or(DataType::Decimal128(20, 0)),
        Family::Float => DataType::Float64,
        Family::Str => DataType::LargeUtf8,
        Family::Bin => DataType::LargeBinary,
        Family::Exact(d) => d,
    })
}

/// Column `i` of `t` in the normalized key type `dt` (one array).
fn normalized(t: &Table, i: usize, dt: &DataType) -> Result<ArrayRef> {
    let col = concat_chunks(&t.chunks(i), t.schema.field(i).data_type())?;
    let col = arrow_cast::cast(&col, dt)?;
    if *dt != DataType::Float64 {
        return Ok(col);
    }
    let f = col
        .as_primitive::<Float64Type>()
        .unary::<_, Float64Type>(|v| {
            if v == 0.0 {
                0.0
            } else if v.is_nan() {
                f64::NAN
            } else {
                v
            }
        });
    Ok(Arc::new(f))
}

/// `Some(v)`: `v[row]` is false where some key is null (only when nulls match nothing).
fn all_valid(cols: &[ArrayRef], n: usize, nulls_equal: bool) -> Option<Vec<bool>> {
    if nulls_equal || cols.iter().all(|c| c.logical_null_count() == 0) {
        return None;
    }
    let mut v = vec![true; n];
    for c in cols {
        if let Some(nulls) = c.logical_nulls() {
            for (x, ok) in v.iter_mut().zip(nulls.iter()) {
                *x &= ok;
            }
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
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
            ] {
                for nulls_equal in [false, true] {
                    let names: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
                    let mut opts = JoinOptions::new(how, names.clone(), names);
                    opts.nulls_equal = nulls_equal;
                    let build =
                        JoinBuild::new(left.schema.clone(), right.clone(), opts.clone()).unwrap();
                    let want = crate::join::join(&left, &right, &opts).unwrap();
                    let got = build.probe(&left).unwrap();
                    let (g, w) = (&got.batches, &want.batches);
                    assert_eq!(format!("{g:?}"), format!("{w:?}"), "{keys:?} {how:?}");
                }
            }
        }
        let outer = JoinOptions::new(JoinType::Outer, vec!["k".into()], vec!["k".into()]);
        assert!(JoinBuild::new(left.schema.clone(), right, outer).is_err());
    }
}
