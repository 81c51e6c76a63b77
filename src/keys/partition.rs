//! Partition rows by key: the routing of a distributed shuffle (ferrobatch on Dask).
//!
//! [`hash_partitions`] sends equal keys to the same partition *by the key rules*, so the two
//! sides of a join land together even when their key columns differ in layout: integers of
//! any width or signedness (and decimals, temporal types, booleans) hash their value as an
//! `i128`, floats their order key (`encode::f64_key`: every NaN one value, `-0.0` as `0.0`), strings and binary
//! their bytes whatever the layout (plain, large, view, dictionary), and a null one constant.
//! Column hashes are chained and finished with a 64-bit mixer; the partition is the high bits
//! of `hash * n` (no modulo bias). The seed is fixed, so routing is the same on every worker.
//!
//! [`range_partitions`] sends each row to the range between sorted boundary rows it falls in,
//! in ferrobatch's sort order (per-key direction and null placement); a row equal to a
//! boundary goes to the range that ends with it, so equal keys always share a partition.

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use rayon::prelude::*;

use super::encode::{CodeMode, Domain, KeyCodes, dense_codes, raw_u64, raw_u128};
use super::intern::{ByteChunk, SEED, hash_bytes};
use super::{decoded, key_positions};
use crate::error::{Error, Result};
use crate::parallel::BLOCK;
use crate::table::Table;

const NULL_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

/// A 64-bit finalizer (murmur3's fmix64): every input bit reaches every output bit.
#[inline]
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline]
fn mix128(v: u128) -> u64 {
    mix((v as u64) ^ mix((v >> 64) as u64 ^ SEED))
}

/// The value hash of every row of one (decoded) key chunk into `out`.
fn chunk_hashes(c: &ArrayRef, out: &mut [u64]) -> Result<()> {
    use DataType as D;
    match c.data_type() {
        D::Null => out.fill(NULL_HASH),
        D::Float16 | D::Float32 | D::Float64 => {
            raw_u64(c, out, Domain::Float);
            out.par_iter_mut().for_each(|h| *h = mix(*h ^ SEED));
        }
        _ if ByteChunk::new(c).is_some() => {
            out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| {
                crate::cancel::point();
                // `ByteChunk` borrows the array; built per block as it is not `Sync`.
                let bytes = ByteChunk::new(c).expect("a byte layout");
                for (j, h) in o.iter_mut().enumerate() {
                    *h = hash_bytes(bytes.value(b * BLOCK + j));
                }
            });
        }
        t if super::encode::domain_of_types(std::iter::once(t)).is_some()
            || matches!(t, D::Decimal128(_, _)) =>
        {
            let mut wide = crate::mem::filled(c.len(), 0u128, "partition hashes");
            raw_u128(c, &mut wide);
            out.par_iter_mut()
                .zip(wide.par_iter())
                .for_each(|(h, &v)| *h = mix128(v));
        }
        t => {
            return Err(Error::Type(format!(
                "type {t} cannot be used as a partitioning key"
            )));
        }
    }
    if let Some(nulls) = c.logical_nulls() {
        out.par_iter_mut()
            .enumerate()
            .filter(|(i, _)| nulls.is_null(*i))
            .for_each(|(_, h)| *h = NULL_HASH);
    }
    Ok(())
}

/// The partition in `0..n` of every row of `table`, by the hash of its `keys` (see the
/// module doc). Rows with equal keys under the join / group-by key rules get equal
/// partitions, whatever the layout of each table's key columns.
pub fn hash_partitions(table: &Table, keys: &[String], n: u32) -> Result<Vec<u32>> {
    hash_partitions_at(table, keys, n, 0)
}

/// [`hash_partitions`] at `level`: level 0 is that routing; each further level draws the
/// partition from other bits of the same key hash (the hash re-mixed with a salt), so the
/// rows of one partition spread over all the partitions of the next level.
fn hash_partitions_at(table: &Table, keys: &[String], n: u32, level: u32) -> Result<Vec<u32>> {
    if n == 0 {
        return Err(Error::Value("the number of partitions must be >= 1".into()));
    }
    let pos = key_positions(&table.schema, keys)?;
    let rows = table.checked_num_rows()?;
    let mut acc = crate::mem::filled(rows, SEED, "partition hashes");
    let mut col = crate::mem::filled(rows, 0u64, "partition hashes");
    for &i in &pos {
        let mut at = 0;
        for chunk in table.chunks(i) {
            let chunk = decoded(&chunk)?;
            let len = chunk.len();
            chunk_hashes(&chunk, &mut col[at..at + len])?;
            at += len;
        }
        acc.par_iter_mut()
            .zip(col.par_iter())
            .for_each(|(a, &h)| *a = mix(a.rotate_left(27) ^ h));
    }
    Ok(acc
        .into_par_iter()
        .map(|h| {
            let h = mix(h ^ u64::from(level).wrapping_mul(NULL_HASH));
            ((u128::from(h) * u128::from(n)) >> 64) as u32
        })
        .collect())
}

/// The rows of `batch` cut by [`hash_partitions`] of its `keys` into `n` partitions, at
/// `level` (0 for a first split; a partition split again uses the next level): each
/// non-empty partition's number and rows (in row order), taken as the iterator is pulled —
/// a caller writing each piece away holds one partition's copy of the rows, not all. Rows
/// that all fall in one partition (no keys at all, as a cross join's: every row hashes
/// alike) are the batch itself, not a copy.
pub fn hash_split<'a>(
    batch: &'a RecordBatch,
    keys: &[String],
    n: u32,
    level: u32,
) -> Result<impl Iterator<Item = Result<(usize, RecordBatch)>> + 'a> {
    let t = Table {
        schema: batch.schema(),
        batches: vec![batch.clone()],
    };
    let ids = hash_partitions_at(&t, keys, n, level)?;
    let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    for (r, &p) in ids.iter().enumerate() {
        rows_of[p as usize].push(r as u32);
    }
    Ok(rows_of
        .into_iter()
        .enumerate()
        .filter(|(_, idx)| !idx.is_empty())
        .map(move |(p, idx)| {
            if idx.len() == batch.num_rows() {
                return Ok((p, batch.clone()));
            }
            let idx = arrow_array::UInt32Array::from(idx);
            Ok((p, arrow_select::take::take_record_batch(batch, &idx)?))
        }))
}

/// For every row of `table`, the number of rows of `bounds` that sort strictly before it
/// by `by` (each key with its direction and null placement, `(descending, nulls_last)`),
/// i.e. its range partition in `0..=bounds.num_rows()`. `bounds` need not be sorted; its
/// key columns must have the types of `table`'s.
pub fn range_partitions(
    table: &Table,
    bounds: &Table,
    by: &[String],
    order: &[(bool, bool)],
) -> Result<Vec<u32>> {
    if by.len() != order.len() {
        return Err(Error::Value(format!(
            "{} sort keys but {} directions",
            by.len(),
            order.len()
        )));
    }
    let tpos = key_positions(&table.schema, by)?;
    let bpos = key_positions(&bounds.schema, by)?;
    for ((&t, &b), name) in tpos.iter().zip(&bpos).zip(by) {
        let (tt, bt) = (
            table.schema.field(t).data_type(),
            bounds.schema.field(b).data_type(),
        );
        if tt != bt {
            return Err(Error::Type(format!(
                "boundary column {name:?} has type {bt}, the data {tt}"
            )));
        }
    }
    let nb = bounds.checked_num_rows()?;
    let rows = table.checked_num_rows()?;
    // One code vector per key over the boundaries then the rows, so both share a scale.
    let codes: Vec<KeyCodes> = tpos
        .iter()
        .zip(&bpos)
        .zip(by.iter().zip(order))
        .map(|((&t, &b), (name, &(descending, nulls_last)))| {
            let mut chunks: Vec<ArrayRef> = bounds.chunks(b);
            chunks.extend(table.chunks(t));
            let dense = dense_codes(name, &chunks, true)?;
            Ok(KeyCodes::new(
                dense,
                CodeMode::Order {
                    descending,
                    nulls_last,
                },
            ))
        })
        .collect::<Result<_>>()?;
    let tuple = |r: usize| codes.iter().map(move |k| k.codes[r]);
    let mut sorted: Vec<usize> = (0..nb).collect();
    sorted.sort_by(|&a, &b| tuple(a).cmp(tuple(b)));
    Ok((0..rows)
        .into_par_iter()
        .map(|r| {
            let row = nb + r;
            sorted.partition_point(|&b| tuple(b).lt(tuple(row))) as u32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
        UInt8Array, UInt64Array, types::Int8Type,
    };
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    fn table(name: &str, a: ArrayRef) -> Table {
        let schema = Arc::new(Schema::new(vec![Field::new(
            name,
            a.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![a]).unwrap();
        Table::try_new(schema, vec![batch]).unwrap()
    }

    fn parts(t: &Table, n: u32) -> Vec<u32> {
        hash_partitions(t, &["k".to_string()], n).unwrap()
    }

    #[test]
    fn equal_keys_of_different_layouts_share_a_partition() {
        let ints = [Some(-5i64), Some(0), Some(7), None, Some(1 << 40)];
        let narrow = [Some(-5i32), Some(0), Some(7), None, Some(0)];
        let a = parts(&table("k", Arc::new(Int64Array::from(ints.to_vec()))), 64);
        let b = parts(&table("k", Arc::new(Int32Array::from(narrow.to_vec()))), 64);
        assert_eq!(a[..4], b[..4]);
        let s = ["x", "", "ü", "x"];
        let plain = parts(&table("k", Arc::new(StringArray::from(s.to_vec()))), 64);
        let dict: DictionaryArray<Int8Type> = s.iter().copied().collect();
        let dict = parts(&table("k", Arc::new(dict)), 64);
        assert_eq!(plain, dict);
        assert_eq!(plain[0], plain[3]);
        let f = [0.0, -0.0, f64::NAN, -f64::NAN, 1.5];
        let f = parts(&table("k", Arc::new(Float64Array::from(f.to_vec()))), 64);
        assert_eq!((f[0], f[2]), (f[1], f[3]));
    }

    #[test]
    fn hashes_spread_over_the_partitions() {
        let t = table("k", Arc::new(Int64Array::from_iter_values(0..10_000)));
        let p = parts(&t, 16);
        let mut counts = [0usize; 16];
        p.iter().for_each(|&i| counts[i as usize] += 1);
        assert!(
            counts.iter().all(|&c| (400..850).contains(&c)),
            "{counts:?}"
        );
        assert!(hash_partitions(&t, &["k".to_string()], 0).is_err());
    }

    #[test]
    fn range_partitions_follow_the_sort_order() {
        let t = table(
            "k",
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(3.0),
                None,
                Some(-0.0),
                Some(10.0),
                Some(f64::INFINITY),
            ])),
        );
        let b = table(
            "k",
            Arc::new(Float64Array::from(vec![Some(10.0), Some(0.0)])),
        );
        let k = ["k".to_string()];
        // ascending, nulls last: [-0.0 | 3.0, 10.0 | inf, NaN, null]
        let p = range_partitions(&t, &b, &k, &[(false, true)]).unwrap();
        assert_eq!(p, vec![2, 1, 2, 0, 1, 2]);
        // descending, nulls first: [null, NaN, inf, 10 | 3, -0.0 | ]
        let p = range_partitions(&t, &b, &k, &[(true, false)]).unwrap();
        assert_eq!(p, vec![0, 1, 0, 1, 0, 0]);
        // Extreme values next to a null slot (nulls first): u64::MAX sorts last.
        let t = table(
            "k",
            Arc::new(UInt64Array::from(vec![Some(0), Some(u64::MAX), None])),
        );
        let b = table(
            "k",
            Arc::new(UInt64Array::from(vec![None, Some(u64::MAX - 1)])),
        );
        let p = range_partitions(&t, &b, &k, &[(false, false)]).unwrap();
        assert_eq!(p, vec![1, 2, 0]);
        let other = table("k", Arc::new(UInt8Array::from(vec![1u8])));
        assert!(range_partitions(&t, &other, &k, &[(false, true)]).is_err());
    }
}
