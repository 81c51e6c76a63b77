//! Group assignment: every row gets a group *slot*, and the groups are listed in output order.
//!
//! Keys are encoded (equality codes; order codes when the output is sorted) and packed as in
//! dedup. Two ways to slots:
//! * **dense**: a packed key space no larger than `max(n, 2^16)` is its own slot space — the
//!   key code *is* the slot, no hashing at all (small ints, dictionary and low-cardinality
//!   strings, which intern to small codes). Some slots stay empty.
//! * **hashed**: rows are scattered into hash partitions (each partition lists its rows in row
//!   order); each partition runs one hash table in parallel and numbers its groups from its
//!   own base, so partition `p` owns the slot range `base[p]..base[p + 1]`.
//!
//! The output order is a list of the non-empty slots: by first row (first appearance), or by
//! key with `sort=True` (the packed order codes compare like the keys, nulls last). Nothing
//! here depends on the thread count.

use hashbrown::HashTable;
use rayon::prelude::*;

use crate::dedup::{hash_u64, hash_u128};
use crate::error::Result;
use crate::keys::encode::{KeyCodes, dense_codes_known};
use crate::keys::intern::Known;
use crate::keys::{CodeMode, Keys, pack, packed_card};
use crate::parallel::{DisjointSlice, Partitions, partition_count, partition_with};
use crate::table::Table;

/// Slot of a row that belongs to no group (a null key under `dropna`).
pub const NO_GROUP: u32 = u32::MAX;
/// First row of a slot that holds no row.
pub const NO_ROW: u32 = u32::MAX;

/// The groups of a table.
pub struct Groups {
    /// Slot of every row, [`NO_GROUP`] for dropped rows.
    pub slot: Vec<u32>,
    /// Number of slots.
    pub slots: usize,
    /// First row of every slot ([`NO_ROW`] when empty).
    pub first: Vec<u32>,
    /// The non-empty slots in output order.
    pub order: Vec<u32>,
    /// Row lists that each own a contiguous slot range. Set by hashed grouping; built on
    /// demand otherwise ([`Self::partitions`]).
    parts: std::sync::OnceLock<SlotParts>,
}

/// Partitions of the rows that each own a slot range: partition `p` lists its rows in row
/// order, `slots` holds each listed row's slot alongside (so work per partition reads slots
/// sequentially), and it owns the slots `bases[p]..bases[p + 1]`.
pub struct SlotParts {
    pub parts: Partitions,
    pub slots: Vec<u32>,
    pub bases: Vec<usize>,
}

impl SlotParts {
    /// Rows and their slots of partition `p`.
    pub fn part(&self, p: usize) -> (&[u32], &[u32]) {
        let range = self.parts.offsets[p]..self.parts.offsets[p + 1];
        (&self.parts.rows[range.clone()], &self.slots[range])
    }
}

impl Groups {
    /// Rows in partitions that each own a slot range ([`SlotParts`]), built on first use;
    /// `want` is a hint of the number of partitions (a function of the row count only).
    pub fn partitions(&self, want: usize) -> &SlotParts {
        self.parts.get_or_init(|| {
            let shift = crate::keys::bits_for(self.slots.div_ceil(want.max(1)) as u128);
            let nparts = (self.slots >> shift) + 1;
            let slot = &self.slot;
            let (parts, slots) = partition_with(
                slot.len(),
                nparts,
                |r| {
                    let s = slot[r];
                    (s != NO_GROUP).then_some((s >> shift) as usize)
                },
                |r| slot[r],
            );
            let bases = (0..=nparts).map(|p| (p << shift).min(self.slots)).collect();
            SlotParts {
                parts,
                slots,
                bases,
            }
        })
    }
}

/// Group the rows of `table` by the columns `keys` (`[]`: one group of every row, present
/// even for an empty table).
pub fn group(table: &Table, keys: &[String], dropna: bool, sort: bool) -> Result<Groups> {
    group_known(table, keys, dropna, sort, &[])
}

/// [`group`], a byte-string key `i` interned against `known[i]` where given (the groups are
/// the same; only the work differs, see [`Known`]).
pub fn group_known(
    table: &Table,
    keys: &[String],
    dropna: bool,
    sort: bool,
    known: &[Option<Known>],
) -> Result<Groups> {
    let n = table.checked_num_rows()?;
    if keys.is_empty() {
        return Ok(Groups {
            slot: crate::mem::filled(n, 0, "group ids"),
            slots: 1,
            first: vec![if n > 0 { 0 } else { NO_ROW }],
            order: vec![0],
            parts: Default::default(),
        });
    }
    let mode = if sort {
        CodeMode::Order {
            descending: false,
            nulls_last: true,
        }
    } else {
        CodeMode::Equality
    };
    let mut keep: Option<Vec<bool>> = None;
    let mut cols = Vec::with_capacity(keys.len());
    for (k, name) in keys.iter().enumerate() {
        let i = table.index_of(name)?;
        let known = known.get(k).and_then(Option::as_ref);
        let dense = dense_codes_known(name, &table.chunks(i), sort, known)?;
        if dropna && let Some(valid) = &dense.valid {
            match &mut keep {
                None => keep = Some(valid.clone()),
                Some(k) => k.par_iter_mut().zip(valid).for_each(|(k, &v)| *k &= v),
            }
        }
        cols.push(KeyCodes::new(dense, mode));
    }
    let card = packed_card(&cols);
    let keys = pack(cols, n, 0);
    let mut g = match keys {
        Keys::U64(k) if card.is_some_and(|c| c <= n.max(1 << 16) as u128) => {
            let card = card.map_or(0, |c| c as usize);
            let mut slot: Vec<u32> = crate::mem::with_capacity(n, "group ids");
            k.into_par_iter()
                .map(|c| c as u32)
                .collect_into_vec(&mut slot);
            if let Some(keep) = &keep {
                slot.par_iter_mut()
                    .zip(keep.par_iter())
                    .for_each(|(s, &k)| {
                        if !k {
                            *s = NO_GROUP;
                        }
                    });
            }
            let first = first_rows(&slot, card);
            // Slot order is key order for order codes.
            let order = (0..card as u32)
                .filter(|&s| first[s as usize] != NO_ROW)
                .collect();
            Groups {
                slot,
                slots: card,
                first,
                order,
                parts: Default::default(),
            }
        }
        Keys::U64(k) => hashed(
            n,
            sort,
            keep.as_deref(),
            |i| k[i],
            hash_u64,
            |a, b| a == b,
            |a, b| k[a].cmp(&k[b]),
        ),
        Keys::U128(k) => hashed(
            n,
            sort,
            keep.as_deref(),
            |i| k[i],
            hash_u128,
            |a, b| a == b,
            |a, b| k[a].cmp(&k[b]),
        ),
        // Wide keys: the table holds a row of the group, compared column by column.
        Keys::Wide(c) => hashed(
            n,
            sort,
            keep.as_deref(),
            |i| i as u32,
            |i| c.iter().fold(0u64, |h, col| hash_u64(h ^ col[i as usize])),
            |a, b| c.iter().all(|col| col[a as usize] == col[b as usize]),
            |a, b| {
                c.iter()
                    .map(|col| col[a].cmp(&col[b]))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            },
        ),
    };
    if !sort {
        g.order = by_first_row(&g.order, &g.first, n);
    }
    Ok(g)
}

/// `slots` ordered by their first row. Many slots are placed by their first row in a row-sized
/// array and read back in row order (linear; first rows are distinct); few are sorted.
fn by_first_row(slots: &[u32], first: &[u32], n: usize) -> Vec<u32> {
    if slots.len() * 16 < n {
        let mut order = slots.to_vec();
        order.par_sort_unstable_by_key(|&s| {
            crate::cancel::point();
            first[s as usize]
        });
        return order;
    }
    let mut at = vec![NO_GROUP; n];
    let out = DisjointSlice::new(&mut at);
    slots.par_iter().for_each(|&s| {
        // SAFETY: first rows of distinct slots are distinct rows < n.
        unsafe { out.write(first[s as usize] as usize, s) };
    });
    at.into_par_iter().filter(|&s| s != NO_GROUP).collect()
}

/// First row of every slot `0..card`, by per-block arrays merged with `min` (commutative, so
/// the split never matters).
fn first_rows(slot: &[u32], card: usize) -> Vec<u32> {
    // At most `n / card` pieces keeps the arrays within 4 bytes per row.
    let pieces = rayon::current_num_threads().clamp(1, (slot.len() / card.max(1)).max(1));
    let piece = slot.len().div_ceil(pieces).max(1 << 14);
    slot.par_chunks(piece)
        .enumerate()
        .map(|(p, ss)| {
            crate::cancel::point();
            let base = (p * piece) as u32;
            let mut first = vec![NO_ROW; card];
            for (j, &s) in ss.iter().enumerate() {
                if s != NO_GROUP && first[s as usize] == NO_ROW {
                    first[s as usize] = base + j as u32;
                }
            }
            first
        })
        .reduce_with(|mut a, b| {
            a.par_iter_mut()
                .zip(b.par_iter())
                .for_each(|(x, &y)| *x = (*x).min(y));
            a
        })
        .unwrap_or_else(|| vec![NO_ROW; card])
}

/// Hash-partitioned groups. `key(row)` is what the tables store and compare with `eq` (the
/// packed key itself where it fits a `u64` / `u128`, so a probe touches no other memory);
/// `hash` hashes a key; `cmp` orders rows by key (for `sort`; without it the caller orders
/// the slots). The keys are scattered into partition order along with the rows, so each
/// partition's table reads its keys sequentially and records local ids sequentially; one
/// final pass writes every row's global slot.
///
/// A table starts small; once a sixteenth of its partition is seen it reserves room for the
/// groups extrapolated from that prefix, so all-distinct keys do not rehash a dozen times.
#[allow(clippy::too_many_arguments)]
fn hashed<K: Copy + Default + Send + Sync>(
    n: usize,
    sort: bool,
    keep: Option<&[bool]>,
    key: impl Fn(usize) -> K + Sync,
    hash: impl Fn(K) -> u64 + Sync,
    eq: impl Fn(K, K) -> bool + Sync,
    cmp: impl Fn(usize, usize) -> std::cmp::Ordering + Sync,
) -> Groups {
    let nparts = partition_count(n);
    let (parts, keys) = partition_with(
        n,
        nparts,
        |r| {
            keep.is_none_or(|k| k[r])
                .then(|| crate::parallel::partition_of(hash(key(r)), nparts))
        },
        &key,
    );
    // Local group ids, numbered from 0 within each partition, in partition order.
    let mut local = crate::mem::filled(parts.rows.len(), 0u32, "group ids");
    let local_w = DisjointSlice::new(&mut local);
    // First rows of each partition's groups.
    let firsts: Vec<Vec<u32>> = (0..parts.len())
        .into_par_iter()
        .map(|p| {
            crate::cancel::point();
            let range = parts.offsets[p]..parts.offsets[p + 1];
            let len = range.len();
            let probe = len / 16;
            let mut first: Vec<u32> = Vec::new();
            let mut table: HashTable<(K, u32)> = HashTable::new();
            for (i, e) in range.enumerate() {
                if i == probe && i > 0 {
                    let expect = first.len() * (len / i);
                    table.reserve(expect.saturating_sub(first.len()), |e| hash(e.0));
                    first.reserve(expect.saturating_sub(first.len()));
                }
                let k = keys[e];
                let h = hash(k);
                let g = match table.find(h, |t| eq(t.0, k)) {
                    Some(t) => t.1,
                    None => {
                        let g = first.len() as u32;
                        first.push(parts.rows[e]);
                        table.insert_unique(h, (k, g), |t| hash(t.0));
                        g
                    }
                };
                // SAFETY: every entry belongs to exactly one partition.
                unsafe { local_w.write(e, g) };
            }
            first
        })
        .collect();
    let mut bases = Vec::with_capacity(firsts.len() + 1);
    let mut acc = 0usize;
    for f in &firsts {
        bases.push(acc);
        acc += f.len();
    }
    bases.push(acc);
    // Global slots: local id + the partition's base, in partition order and in row order.
    let mut slot = vec![NO_GROUP; n];
    let out = DisjointSlice::new(&mut slot);
    let local_w = DisjointSlice::new(&mut local);
    (0..parts.len()).into_par_iter().for_each(|p| {
        crate::cancel::point();
        let base = bases[p] as u32;
        for e in parts.offsets[p]..parts.offsets[p + 1] {
            // SAFETY: each row and each entry is in one partition only.
            unsafe {
                let g = local_w.read(e) + base;
                local_w.write(e, g);
                out.write(parts.rows[e] as usize, g);
            }
        }
    });
    let first: Vec<u32> = firsts.concat();
    let mut order: Vec<u32> = (0..acc as u32).collect();
    if sort {
        order.par_sort_unstable_by(|&a, &b| {
            crate::cancel::point();
            cmp(first[a as usize] as usize, first[b as usize] as usize)
        });
    }
    Groups {
        slot,
        slots: acc,
        first,
        order,
        parts: std::sync::OnceLock::from(SlotParts {
            parts,
            slots: local,
            bases,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn table(a: Vec<Option<i64>>, f: Vec<Option<f64>>) -> Table {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(a)),
            Arc::new(Float64Array::from(f)),
        ];
        Table::try_new(
            schema.clone(),
            vec![RecordBatch::try_new(schema, cols).unwrap()],
        )
        .unwrap()
    }

    /// The groups as lists of rows, in output order.
    fn lists(g: &Groups) -> Vec<Vec<u32>> {
        g.order
            .iter()
            .map(|&s| {
                (0..g.slot.len() as u32)
                    .filter(|&r| g.slot[r as usize] == s)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn first_appearance_sorted_and_dropna() {
        let t = table(
            vec![Some(5), None, Some(-1), Some(5), None, Some(-1)],
            vec![
                Some(-0.0),
                Some(f64::NAN),
                Some(1.0),
                Some(0.0),
                Some(-f64::NAN),
                None,
            ],
        );
        let k = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let g = group(&t, &k(&["a"]), false, false).unwrap();
        assert_eq!(lists(&g), vec![vec![0, 3], vec![1, 4], vec![2, 5]]);
        let g = group(&t, &k(&["a"]), false, true).unwrap();
        assert_eq!(lists(&g), vec![vec![2, 5], vec![0, 3], vec![1, 4]]);
        let g = group(&t, &k(&["a"]), true, true).unwrap();
        assert_eq!(lists(&g), vec![vec![2, 5], vec![0, 3]]);
        // NaN == NaN and -0.0 == 0.0; sorted: 0.0 < 1.0 < NaN < null.
        let g = group(&t, &k(&["f"]), false, true).unwrap();
        assert_eq!(lists(&g), vec![vec![0, 3], vec![2], vec![1, 4], vec![5]]);
        let g = group(&t, &k(&["a", "f"]), true, false).unwrap();
        assert_eq!(lists(&g), vec![vec![0, 3], vec![2]]);
        let g = group(&t, &[], true, false).unwrap();
        assert_eq!(lists(&g), vec![vec![0, 1, 2, 3, 4, 5]]);
    }

    #[test]
    fn hashed_matches_dense() {
        // Wide float keys take the hashed path; compare with grouping on a dense int image.
        let n = 50_000;
        let a: Vec<Option<i64>> = (0..n).map(|i| Some((i * 7919) % 1013)).collect();
        let f: Vec<Option<f64>> = a
            .iter()
            .map(|v| v.map(|x| (x as f64) * 1e300 - 3e300))
            .collect();
        let t = table(a, f);
        for sort in [false, true] {
            let d = group(&t, &["a".to_string()], false, sort).unwrap();
            let h = group(&t, &["a".to_string(), "f".to_string()], false, sort).unwrap();
            assert!(h.parts.get().is_some() && d.parts.get().is_none());
            assert_eq!(lists(&d), lists(&h));
        }
    }
}
