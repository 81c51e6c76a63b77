//! Stable multi-key sort and top-k.
//!
//! Each key column is encoded into order-preserving codes (direction and null placement
//! folded in, see [`crate::keys::encode`]), the codes are packed into one integer per row,
//! and the row index is appended in the low bits: `element = packed_key << idx_bits | row`.
//! Elements are then distinct, so any unstable sort of them is a *stable* sort of the rows,
//! and sorting plain integers is the fastest sort there is. Keys too wide for 128 bits fall
//! back to comparing the per-column codes, row index last.
//!
//! `limit = k` selects the k smallest elements in O(n) (`select_nth_unstable`) and sorts
//! only those.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gather::take_table;
use crate::keys::{CodeMode, Keys, bits_for, encode_columns, pack};
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
        .map(|k| CodeMode::Order { descending: k.descending, nulls_last: k.nulls_last })
        .collect();
    let cols = encode_columns(table, &names, &modes)?;
    let k = limit.unwrap_or(n).min(n);
    if k == 0 {
        return Ok(Vec::new());
    }
    let idx_bits = bits_for(n as u128);
    Ok(match pack(cols, n, idx_bits) {
        Keys::U64(mut e) => {
            e.par_iter_mut().enumerate().for_each(|(i, x)| *x |= i as u64);
            smallest(&mut e, k, |a, b| a.cmp(b));
            let mask = (1u64 << idx_bits) - 1;
            e[..k].par_iter().map(|&x| (x & mask) as u32).collect()
        }
        Keys::U128(mut e) => {
            e.par_iter_mut().enumerate().for_each(|(i, x)| *x |= i as u128);
            smallest(&mut e, k, |a, b| a.cmp(b));
            let mask = (1u128 << idx_bits) - 1;
            e[..k].par_iter().map(|&x| (x & mask) as u32).collect()
        }
        Keys::Wide(codes) => {
            let mut rows: Vec<u32> = (0..n as u32).collect();
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

/// Put the `k` smallest elements, sorted, at the front of `v` (all of `v` sorted when
/// `k == v.len()`). `cmp` must be a total order with no ties between distinct positions.
fn smallest<T: Send>(v: &mut [T], k: usize, cmp: impl Fn(&T, &T) -> std::cmp::Ordering + Sync) {
    if k < v.len() {
        v.select_nth_unstable_by(k, &cmp);
    }
    v[..k].par_sort_unstable_by(&cmp);
}

/// `table` sorted by `keys` (first `limit` rows when given).
pub fn sort(table: &Table, keys: &[SortKey], limit: Option<usize>) -> Result<Table> {
    let idx = sort_indices(table, keys, limit)?;
    take_table(table, &idx)
}
