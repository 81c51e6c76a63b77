//! Dedup: keep the first, the last, or only the unduplicated row of each distinct key.
//!
//! Keys are encoded for equality (null == null, NaN == NaN, -0.0 == 0.0) and packed. For
//! each distinct key we need the first and the last row holding it; the kept rows follow:
//! `first` → rows that are their key's first, `last` → their key's last, `none` → rows whose
//! key's first and last row coincide. Two ways to find first/last:
//! * **dense**: a packed key space no larger than the table is indexed directly — per-block
//!   arrays merged by min/max (commutative, so the split never matters), no hashing at all;
//! * **hashed**: rows are scattered into hash partitions, and each partition runs one
//!   hash table over its rows in row order, in parallel.
//!
//! Kept rows are emitted in input order.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gather::take_table;
use crate::keys::intern::SEED;
use crate::keys::{CodeMode, Keys, encode_positions, pack, packed_card};
use crate::parallel::{BLOCK, DisjointSlice, partition_count, partition_rows};
use crate::table::Table;

pub mod external;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    First,
    Last,
    /// Drop every row whose key occurs more than once.
    None,
}

impl std::str::FromStr for Keep {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "first" => Ok(Keep::First),
            "last" => Ok(Keep::Last),
            "none" => Ok(Keep::None),
            _ => Err(Error::Value(format!(
                "keep must be \"first\", \"last\" or \"none\", got {s:?}"
            ))),
        }
    }
}

pub mod stream;

/// Row indices (in input order) of the rows `dedup` keeps.
pub fn dedup_indices(table: &Table, subset: Option<&[String]>, keep: Keep) -> Result<Vec<u32>> {
    let n = table.checked_num_rows()?;
    // Without a subset every column counts, by position: two columns may share a name.
    let idx: Vec<usize> = match subset {
        Some([]) => {
            return Err(Error::Value(
                "dedup subset must name at least one column".into(),
            ));
        }
        Some(s) => s.iter().map(|c| table.index_of(c)).collect::<Result<_>>()?,
        None => (0..table.schema.fields().len()).collect(),
    };
    let cols = encode_positions(table, &idx, &vec![CodeMode::Equality; idx.len()])?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let card = packed_card(&cols);
    Ok(match pack(cols, n, 0) {
        Keys::U64(k) if card.is_some_and(|c| c <= n as u128) => {
            dense(&k, card.map_or(0, |c| c as usize), keep)
        }
        Keys::U64(k) => hashed(&k, |i| hash_u64(k[i]), |a, b| k[a] == k[b], keep),
        Keys::U128(k) => hashed(&k, |i| hash_u128(k[i]), |a, b| k[a] == k[b], keep),
        Keys::Wide(c) => hashed(
            &c[0],
            |i| c.iter().fold(0u64, |h, col| hash_u64(h ^ col[i])),
            |a, b| c.iter().all(|col| col[a] == col[b]),
            keep,
        ),
    })
}

/// `table` without its duplicate rows.
pub fn dedup(table: &Table, subset: Option<&[String]>, keep: Keep) -> Result<Table> {
    let idx = dedup_indices(table, subset, keep)?;
    take_table(table, &idx)
}

#[inline]
pub fn hash_u64(x: u64) -> u64 {
    foldhash::fast::FixedState::with_seed(SEED).hash_one(x)
}

#[inline]
pub fn hash_u128(x: u128) -> u64 {
    foldhash::fast::FixedState::with_seed(SEED).hash_one(x)
}

#[inline]
fn kept(keep: Keep, row: u32, first: u32, last: u32) -> bool {
    match keep {
        Keep::First => row == first,
        Keep::Last => row == last,
        Keep::None => first == last,
    }
}

/// Direct-indexed first/last rows for keys in `0..card`.
fn dense(keys: &[u64], card: usize, keep: Keep) -> Vec<u32> {
    // One (first, last) array pair per piece: at most `n / card` pieces keeps the arrays'
    // memory within 8 bytes per row whatever the thread count.
    let pieces = rayon::current_num_threads().clamp(1, (keys.len() / card.max(1)).max(1));
    let piece = keys.len().div_ceil(pieces).max(1 << 14);
    let (first, last) = keys
        .par_chunks(piece)
        .enumerate()
        .map(|(p, ks)| {
            crate::cancel::point();
            let base = (p * piece) as u32;
            let mut first = crate::mem::filled(card, u32::MAX, "dedup first rows");
            let mut last = crate::mem::filled(card, 0u32, "dedup last rows");
            for (b, blk) in ks.chunks(BLOCK).enumerate() {
                crate::cancel::point();
                for (j, &k) in blk.iter().enumerate() {
                    let row = base + (b * BLOCK + j) as u32;
                    let k = k as usize;
                    if first[k] == u32::MAX {
                        first[k] = row;
                    }
                    last[k] = row;
                }
            }
            (first, last)
        })
        .reduce_with(|(mut f1, mut l1), (f2, l2)| {
            f1.par_iter_mut()
                .zip(f2.par_iter())
                .for_each(|(a, &b)| *a = (*a).min(b));
            l1.par_iter_mut()
                .zip(l2.par_iter())
                .for_each(|(a, &b)| *a = (*a).max(b));
            (f1, l1)
        })
        .unwrap_or_default();
    keys.par_chunks(BLOCK)
        .enumerate()
        .map(|(b, blk)| {
            crate::cancel::point();
            let base = (b * BLOCK) as u32;
            (base..)
                .zip(blk)
                .filter(|&(i, &k)| kept(keep, i, first[k as usize], last[k as usize]))
                .map(|(i, _)| i)
                .collect::<Vec<u32>>()
        })
        .collect::<Vec<_>>()
        .concat()
}

/// Hash-partitioned first/last rows. `hash(i)` / `eq(a, b)` look at row keys.
fn hashed<K: Sync>(
    keys: &[K],
    hash: impl Fn(usize) -> u64 + Sync,
    eq: impl Fn(usize, usize) -> bool + Sync,
    keep: Keep,
) -> Vec<u32> {
    let n = keys.len();
    let mut hashes: Vec<u64> = crate::mem::with_capacity(n, "key hashes");
    (0..n)
        .into_par_iter()
        .map(&hash)
        .collect_into_vec(&mut hashes);
    let parts = partition_rows(&hashes, partition_count(n));
    let mut mask = vec![false; n];
    let out = DisjointSlice::new(&mut mask);
    (0..parts.len()).into_par_iter().for_each(|p| {
        crate::cancel::point();
        // Groups of this partition as (first, last) rows.
        let mut groups: Vec<(u32, u32)> = Vec::new();
        let mut table: HashTable<u32> = HashTable::new();
        for &r in parts.part(p) {
            let h = hashes[r as usize];
            match table.find(h, |&g| eq(groups[g as usize].0 as usize, r as usize)) {
                Some(&g) => groups[g as usize].1 = r,
                None => {
                    let g = groups.len() as u32;
                    groups.push((r, r));
                    table.insert_unique(h, g, |&g| hashes[groups[g as usize].0 as usize]);
                }
            }
        }
        for &(first, last) in &groups {
            let row = match keep {
                Keep::First => first,
                Keep::Last => last,
                Keep::None if first == last => first,
                Keep::None => continue,
            };
            // SAFETY: each row belongs to exactly one partition and one group.
            unsafe { out.write(row as usize, true) };
        }
    });
    mask.par_iter()
        .enumerate()
        .filter(|&(_, &m)| m)
        .map(|(i, _)| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, RecordBatch, StringArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    fn table(f: Vec<Option<f64>>, s: Vec<Option<&str>>) -> Table {
        let schema = Arc::new(Schema::new(vec![
            Field::new("f", arrow_schema::DataType::Float64, true),
            Field::new("s", arrow_schema::DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Float64Array::from(f)),
                Arc::new(StringArray::from(s)),
            ],
        )
        .unwrap();
        Table::try_new(schema, vec![b]).unwrap()
    }

    #[test]
    fn keep_modes_with_nan_zero_and_null_keys() {
        let t = table(
            vec![
                Some(0.0),
                Some(f64::NAN),
                None,
                Some(-0.0),
                Some(-f64::NAN),
                None,
                Some(1.0),
            ],
            vec![Some("a"); 7],
        );
        let all = ["f".to_string(), "s".to_string()];
        assert_eq!(
            dedup_indices(&t, Some(&all), Keep::First).unwrap(),
            vec![0, 1, 2, 6]
        );
        assert_eq!(
            dedup_indices(&t, Some(&all), Keep::Last).unwrap(),
            vec![3, 4, 5, 6]
        );
        assert_eq!(dedup_indices(&t, Some(&all), Keep::None).unwrap(), vec![6]);
    }

    #[test]
    fn wide_keys_use_the_hash_path() {
        // Two full-range float keys and a string: too wide to pack into 128 bits.
        let n = 1000;
        let f: Vec<Option<f64>> = (0..n)
            .map(|i| Some(((i % 7) as f64) * 1e300 - 3e300))
            .collect();
        let s: Vec<Option<&str>> = (0..n)
            .map(|i| if i % 3 == 0 { None } else { Some("x") })
            .collect();
        let t = table(f, s);
        let got = dedup_indices(&t, None, Keep::First).unwrap();
        let mut seen = std::collections::HashSet::new();
        let want: Vec<u32> = (0..n as u32)
            .filter(|&i| seen.insert((i % 7, i % 3 == 0)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_arguments() {
        let t = table(vec![Some(1.0)], vec![Some("a")]);
        assert!(matches!(
            dedup_indices(&t, Some(&[]), Keep::First),
            Err(Error::Value(_))
        ));
        assert!(matches!("sometimes".parse::<Keep>(), Err(Error::Value(_))));
        let missing = ["g".to_string()];
        assert!(matches!(
            dedup_indices(&t, Some(&missing), Keep::First),
            Err(Error::ColumnNotFound(_))
        ));
    }

    #[test]
    fn empty_dictionary_is_all_null() {
        use arrow_array::{ArrayRef, DictionaryArray, Int32Array};
        let d = DictionaryArray::new(
            Int32Array::from(vec![None::<i32>, None]),
            Arc::new(StringArray::from(Vec::<&str>::new())),
        );
        let a: ArrayRef = Arc::new(d);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "d",
            a.data_type().clone(),
            true,
        )]));
        let b = RecordBatch::try_new(schema.clone(), vec![a]).unwrap();
        let t = Table::try_new(schema, vec![b]).unwrap();
        assert_eq!(dedup_indices(&t, None, Keep::First).unwrap(), vec![0]);
    }
}
