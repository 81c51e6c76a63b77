//! The resident states of median / quantile and n_unique, whose states are lists of values
//! per group.
//!
//! **Quantile.** Every valid value of a group is kept, as float64: a partition appends each
//! row's value and group, in input order, and its state column lists each group's values in
//! that order (a stable counting sort by group). What the lists hold is all a quantile reads:
//! a selection in total order, which the order of the values does not change.
//!
//! **n_unique.** A partition keeps a hash set of (group, value) pairs, values compared by
//! their equality codes (fixed-width values by their `u64` image: NaN equal to NaN, -0.0 to
//! 0.0; others by their arrow-row bytes). A pair not seen before becomes an entry, and its
//! value is taken from the batch after the batch (one chunk per batch). Its state column
//! lists each group's distinct values, first seen first.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, ListArray, UInt32Array};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};
use hashbrown::HashTable;

use super::pick::{Codes, Values};
use crate::error::Result;
use crate::keys::intern::{SEED, hash_bytes};
use crate::keys::partition::mix;

/// Each group's valid values, as float64, in input order.
#[derive(Default)]
pub(super) struct AllValues {
    values: Vec<f64>,
    gids: Vec<u32>,
    groups: usize,
}

impl AllValues {
    pub(super) fn resize(&mut self, groups: usize) {
        self.groups = groups;
    }

    pub(super) fn bytes(&self) -> usize {
        self.values.capacity() * 8 + self.gids.capacity() * 4
    }

    /// Fold the float64 `values` at positions `first..` into the groups `gids`.
    pub(super) fn fold(&mut self, values: &ArrayRef, first: usize, gids: &[u32]) {
        let v = values.as_primitive::<Float64Type>();
        let valid = v.logical_nulls().filter(|n| n.null_count() > 0);
        for (i, &g) in gids.iter().enumerate() {
            let pos = first + i;
            if valid.as_ref().is_none_or(|b| b.is_valid(pos)) {
                self.values.push(v.value(pos));
                self.gids.push(g);
            }
        }
    }

    /// The state column: the list of each group's values.
    pub(super) fn state(&self) -> Result<ArrayRef> {
        let (offsets, order) = by_group(&self.gids, self.groups)?;
        let values: Vec<f64> = order.iter().map(|&i| self.values[i as usize]).collect();
        let field = Arc::new(Field::new("item", DataType::Float64, true));
        Ok(Arc::new(ListArray::try_new(
            field,
            offsets,
            Arc::new(Float64Array::new(ScalarBuffer::from(values), None)),
            None,
        )?))
    }
}

/// Positions of `gids` grouped by group (stable: in order within a group), and the list
/// offsets of `groups` groups.
fn by_group(gids: &[u32], groups: usize) -> Result<(OffsetBuffer<i32>, Vec<u32>)> {
    let mut counts = vec![0usize; groups];
    for &g in gids {
        counts[g as usize] += 1;
    }
    let offsets = super::super::list_offsets(counts.iter().copied())?;
    let mut fill: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
    let mut order = vec![0u32; gids.len()];
    for (i, &g) in gids.iter().enumerate() {
        order[fill[g as usize]] = i as u32;
        fill[g as usize] += 1;
    }
    Ok((offsets, order))
}

/// Each group's distinct values (see the module docs).
pub(super) struct Distinct {
    /// The (decoded) value type and the state's item type (the input's).
    dt: DataType,
    out: DataType,
    /// Entries (group, value), by their hash.
    table: HashTable<u32>,
    hashes: Vec<u64>,
    gids: Vec<u32>,
    /// Word codes of the entries, or their row codes `arena[span.0..span.0 + span.1]`.
    words: Vec<u64>,
    arena: Vec<u8>,
    span: Vec<(usize, usize)>,
    /// The entries' values, in entry order.
    chunks: Vec<ArrayRef>,
    /// The positions of the batch's new entries.
    new: Vec<u32>,
    groups: usize,
}

impl Distinct {
    pub(super) fn new(dt: &DataType) -> Distinct {
        Distinct {
            dt: crate::keys::value_type(dt).clone(),
            out: dt.clone(),
            table: HashTable::new(),
            hashes: Vec::new(),
            gids: Vec::new(),
            words: Vec::new(),
            arena: Vec::new(),
            span: Vec::new(),
            chunks: Vec::new(),
            new: Vec::new(),
            groups: 0,
        }
    }

    pub(super) fn resize(&mut self, groups: usize) {
        self.groups = groups;
    }

    pub(super) fn bytes(&self) -> usize {
        self.table.capacity() * 5
            + (self.hashes.capacity() + self.words.capacity()) * 8
            + self.gids.capacity() * 4
            + self.arena.capacity()
            + self.span.capacity() * 16
            + super::arrays_bytes(&self.chunks)
    }

    /// Fold the values at positions `first..` into the groups `gids`.
    pub(super) fn fold(&mut self, v: &Values, first: usize, gids: &[u32]) -> Result<()> {
        for (i, &g) in gids.iter().enumerate() {
            let pos = first + i;
            if v.valid.as_ref().is_some_and(|b| !b.value(pos)) {
                continue;
            }
            let salt = mix(u64::from(g) ^ SEED);
            let Self {
                table,
                hashes,
                gids,
                words,
                arena,
                span,
                new,
                ..
            } = self;
            let e = gids.len() as u32;
            match &v.codes {
                Codes::Words(w) => {
                    let w = w[pos];
                    let h = mix(w ^ salt);
                    let hit = |&x: &u32| gids[x as usize] == g && words[x as usize] == w;
                    if table.find(h, hit).is_none() {
                        table.insert_unique(h, e, |&x| hashes[x as usize]);
                        words.push(w);
                        gids.push(g);
                        hashes.push(h);
                        new.push(pos as u32);
                    }
                }
                Codes::Rows(r) => {
                    let b = r.row(pos).data();
                    let h = hash_bytes(b) ^ salt;
                    let hit = |&x: &u32| {
                        let (at, len) = span[x as usize];
                        gids[x as usize] == g && &arena[at..at + len] == b
                    };
                    if table.find(h, hit).is_none() {
                        table.insert_unique(h, e, |&x| hashes[x as usize]);
                        span.push((arena.len(), b.len()));
                        arena.extend_from_slice(b);
                        gids.push(g);
                        hashes.push(h);
                        new.push(pos as u32);
                    }
                }
                Codes::None => unreachable!("n_unique has equality codes"),
            }
        }
        if !self.new.is_empty() {
            let idx = UInt32Array::from(std::mem::take(&mut self.new));
            let taken = arrow_select::take::take(v.values.as_ref(), &idx, None)?;
            self.chunks.push(super::owned(taken));
        }
        Ok(())
    }

    /// The state column: the list of each group's distinct values.
    pub(super) fn state(&self) -> Result<ArrayRef> {
        let (offsets, order) = by_group(&self.gids, self.groups)?;
        let values = if self.chunks.is_empty() {
            arrow_array::new_empty_array(&self.dt)
        } else {
            let refs: Vec<&dyn Array> = self.chunks.iter().map(|c| c.as_ref()).collect();
            arrow_select::concat::concat(&refs)?
        };
        let values = arrow_select::take::take(values.as_ref(), &UInt32Array::from(order), None)?;
        let values = if values.data_type() == &self.out {
            values
        } else {
            arrow_cast::cast(&values, &self.out)?
        };
        let field = Arc::new(Field::new("item", self.out.clone(), true));
        Ok(Arc::new(ListArray::try_new(field, offsets, values, None)?))
    }
}
