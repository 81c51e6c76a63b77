//! Stable multi-key sort and top-k.
//!
//! Each key column is encoded into order-preserving codes (direction and null placement
//! folded in, see [`crate::keys::encode`]), the codes are packed into one integer per row,
//! and the row index is appended in the low bits: `element = packed_key << idx_bits | row`.
//! Elements are then distinct, so any unstable sort of them is a *stable* sort of the rows,
//! and sorting plain integers is the fastest sort there is. Keys too wide for 128 bits fall
//! back to comparing the per-column codes, row index last.
//!
//! Full sorts of narrow keys use an LSD radix sort on the key bits alone ([`crate::radix`]).
//! `limit = k` selects the k smallest elements in O(n) (`select_nth_unstable`) and sorts
//! only those.

use rayon::prelude::*;

pub mod external;

use crate::error::{Error, Result};
use crate::gather::take_table;
use crate::keys::{CodeMode, Keys, bits_for, encode_columns, pack, packed_card};
use crate::radix;

/// Full sorts of `u64` elements with at most this many key bits use the LSD radix sort
/// (at most 4 passes); wider keys use a parallel pattern-defeating quicksort.
const RADIX_MAX_KEY_BITS: u32 = 44;
use crate::table::Table;

/// One sort key.
#[derive(Clone, Debug)]
pub struct SortKey {
    pub column: String,
    pub descending: bool,
    pub nulls_last: bool,
}

/// Row indices of `table` in sorted order (the first `limit` of them when given).
pub fn sort_indices(table: &Table, keys: &[SortKey], limit: Option<usize>) -> Result<Vec<u32>> {
    if keys.is_empty() {
        return Err(Error::Value("sort needs at least one key column".into()));
    }
    let n = table.checked_num_rows()?;
    let names: Vec<String> = keys.iter().map(|k| k.column.clone()).collect();
    let modes: Vec<CodeMode> = keys
        .iter()
        .map(|k| CodeMode::Order {
            descending: k.descending,
            nulls_last: k.nulls_last,
        })
        .collect();
    let cols = encode_columns(table, &names, &modes)?;
    let k = limit.unwrap_or(n).min(n);
    if k == 0 {
        return Ok(Vec::new());
    }
    let idx_bits = bits_for(n as u128);
    let key_bits = packed_card(&cols).map_or(u32::MAX, bits_for);
    Ok(match pack(cols, n, idx_bits) {
        Keys::U64(mut e) => {
            e.par_iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x |= i as u64);
            if k == n && key_bits <= RADIX_MAX_KEY_BITS {
                radix::sort_bits(&mut e, idx_bits, key_bits);
            } else {
                smallest(&mut e, k, |a, b| a.cmp(b));
            }
            let mask = (1u64 << idx_bits) - 1;
            rows_of(&e[..k], |x| (x & mask) as u32)
        }
        Keys::U128(mut e) => {
            e.par_iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x |= i as u128);
            smallest(&mut e, k, |a, b| a.cmp(b));
            let mask = (1u128 << idx_bits) - 1;
            rows_of(&e[..k], |x| (x & mask) as u32)
        }
        Keys::Wide(codes) => {
            let mut rows: Vec<u32> = crate::mem::with_capacity(n, "sorted row indices");
            rows.extend(0..n as u32);
            smallest(&mut rows, k, |&a, &b| {
                codes
                    .iter()
                    .map(|c| c[a as usize].cmp(&c[b as usize]))
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| a.cmp(&b))
            });
            rows.truncate(k);
            rows
        }
    })
}

/// The row index held in the low bits of each sorted element.
fn rows_of<T: Copy + Send + Sync>(e: &[T], row: impl Fn(T) -> u32 + Sync) -> Vec<u32> {
    let mut idx = crate::mem::with_capacity(e.len(), "sorted row indices");
    e.par_iter().map(|&x| row(x)).collect_into_vec(&mut idx);
    idx
}

/// Put the `k` smallest elements, sorted, at the front of `v` (all of `v` sorted when
/// `k == v.len()`). `cmp` must be a total order with no ties between distinct positions.
/// The comparator is a cancellation point: a comparison sort has no blocks to check
/// between, and one relaxed load per comparison is lost in the comparison's own cost.
fn smallest<T: Send>(v: &mut [T], k: usize, cmp: impl Fn(&T, &T) -> std::cmp::Ordering + Sync) {
    let cmp = |a: &T, b: &T| {
        crate::cancel::point();
        cmp(a, b)
    };
    if k < v.len() {
        v.select_nth_unstable_by(k, cmp);
    }
    v[..k].par_sort_unstable_by(cmp);
}

/// `table` sorted by `keys` (first `limit` rows when given).
pub fn sort(table: &Table, keys: &[SortKey], limit: Option<usize>) -> Result<Table> {
    let idx = sort_indices(table, keys, limit)?;
    take_table(table, &idx)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
        let schema = Arc::new(Schema::new(
            cols.iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch =
            RecordBatch::try_new(schema.clone(), cols.into_iter().map(|c| c.1).collect()).unwrap();
        // Two chunks, to exercise the multi-chunk paths.
        let (a, b) = (
            batch.slice(0, batch.num_rows() / 2),
            batch.slice(
                batch.num_rows() / 2,
                batch.num_rows() - batch.num_rows() / 2,
            ),
        );
        Table::try_new(schema, vec![a, b]).unwrap()
    }

    fn key(c: &str, descending: bool, nulls_last: bool) -> SortKey {
        SortKey {
            column: c.into(),
            descending,
            nulls_last,
        }
    }

    #[test]
    fn floats_nan_after_inf_nulls_placed_stably() {
        let f = Float64Array::from(vec![
            Some(f64::NAN),
            Some(1.0),
            None,
            Some(-0.0),
            Some(f64::INFINITY),
            Some(0.0),
            Some(f64::NEG_INFINITY),
        ]);
        let t = table(vec![("f", Arc::new(f))]);
        assert_eq!(
            sort_indices(&t, &[key("f", false, true)], None).unwrap(),
            vec![6, 3, 5, 1, 4, 0, 2]
        );
        assert_eq!(
            sort_indices(&t, &[key("f", true, false)], None).unwrap(),
            vec![2, 0, 4, 1, 3, 5, 6]
        );
    }

    #[test]
    fn multi_key_strings_and_ints_with_limit() {
        let s = StringArray::from(vec![
            Some("b"),
            Some("a"),
            None,
            Some("b"),
            Some("a"),
            Some(""),
        ]);
        let i = Int64Array::from(vec![1, 2, 3, 4, 2, i64::MIN]);
        let t = table(vec![("s", Arc::new(s)), ("i", Arc::new(i))]);
        let keys = [key("s", false, false), key("i", true, true)];
        assert_eq!(
            sort_indices(&t, &keys, None).unwrap(),
            vec![2, 5, 1, 4, 3, 0]
        );
        assert_eq!(sort_indices(&t, &keys, Some(3)).unwrap(), vec![2, 5, 1]);
        assert_eq!(sort_indices(&t, &keys, Some(0)).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn errors() {
        let t = table(vec![("amount", Arc::new(Int64Array::from(vec![1, 2])))]);
        assert!(matches!(
            sort_indices(&t, &[key("amout", false, true)], None),
            Err(Error::ColumnNotFound(_))
        ));
        assert!(matches!(sort_indices(&t, &[], None), Err(Error::Value(_))));
        let l = arrow_array::new_null_array(
            &DataType::List(Arc::new(Field::new("x", DataType::Int8, true))),
            2,
        );
        let t = table(vec![("l", l)]);
        assert!(matches!(
            sort_indices(&t, &[key("l", false, true)], None),
            Err(Error::Type(_))
        ));
    }
}
