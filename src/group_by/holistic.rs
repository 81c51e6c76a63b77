//! Holistic aggregates — median, quantile, n_unique, top_k — which need a group's values,
//! not a fixed-size state.
//!
//! The rows of every group are listed once ([`Members`]: a counting sort by slot inside the
//! slot-range partitions, so a group's rows stay in row order). Each group is then evaluated
//! on its own, in parallel: quantiles by selection (`select_nth_unstable`, linear time, no
//! sort of the group), n_unique by sorting the group's value codes, top_k by selecting the k
//! largest order codes and sorting only those k.

use arrow_buffer::BooleanBuffer;
use rayon::prelude::*;

use super::groups::Groups;
use crate::parallel::{DisjointSlice, partition_count};

/// The rows of every slot: `rows[offsets[s]..offsets[s + 1]]`, in row order.
pub struct Members {
    offsets: Vec<usize>,
    rows: Vec<u32>,
}

impl Members {
    pub fn new(g: &Groups) -> Self {
        let n = g.slot.len();
        let sp = g.partitions(partition_count(n) * 4);
        let bases = &sp.bases;
        // Rows per slot, then offsets; partition p fills offsets[bases[p]..bases[p + 1]].
        let sizes: Vec<usize> = (0..sp.parts.len())
            .into_par_iter()
            .map(|p| {
                crate::cancel::point();
                let mut c = vec![0usize; bases[p + 1] - bases[p]];
                for &s in sp.part(p).1 {
                    c[s as usize - bases[p]] += 1;
                }
                c
            })
            .collect::<Vec<_>>()
            .concat();
        let mut offsets = Vec::with_capacity(g.slots + 1);
        let mut acc = 0;
        offsets.push(0);
        for s in sizes {
            acc += s;
            offsets.push(acc);
        }
        let mut rows = crate::mem::filled(acc, 0u32, "group member rows");
        let out = DisjointSlice::new(&mut rows);
        (0..sp.parts.len()).into_par_iter().for_each(|p| {
            crate::cancel::point();
            let mut pos: Vec<usize> = offsets[bases[p]..bases[p + 1]].to_vec();
            let (prow, pslot) = sp.part(p);
            for (&r, &s) in prow.iter().zip(pslot) {
                let s = s as usize - bases[p];
                // SAFETY: slots of different partitions own disjoint row ranges, and each
                // slot's cursor stays inside its own range.
                unsafe { out.write(pos[s], r) };
                pos[s] += 1;
            }
        });
        Members { offsets, rows }
    }

    pub fn of(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        &self.rows[self.offsets[s]..self.offsets[s + 1]]
    }
}

/// Evaluate `f(group rows, scratch)` for every slot in `order`, in parallel, with one
/// reusable scratch vector per task.
pub fn per_group<T: Send, W: Default + Send>(
    m: &Members,
    order: &[u32],
    f: impl Fn(&[u32], &mut W) -> T + Sync,
) -> Vec<T> {
    order
        .par_iter()
        .with_min_len(64)
        .map_init(W::default, |w, &s| {
            crate::cancel::point();
            f(m.of(s), w)
        })
        .collect()
}

/// Quantile `q` (linear interpolation between the two nearest ranks, as numpy's default) of
/// the valid values among `rows`; NaN when any of them is NaN, `None` when there is none.
pub fn quantile(
    values: &[f64],
    valid: Option<&BooleanBuffer>,
    rows: &[u32],
    q: f64,
    scratch: &mut Vec<f64>,
) -> Option<f64> {
    scratch.clear();
    scratch.extend(
        rows.iter()
            .filter(|&&r| valid.is_none_or(|v| v.value(r as usize)))
            .map(|&r| values[r as usize]),
    );
    let m = scratch.len();
    if m == 0 {
        return None;
    }
    if scratch.iter().any(|x| x.is_nan()) {
        return Some(f64::NAN);
    }
    let pos = q * (m - 1) as f64;
    let lo = pos.floor() as usize;
    let t = pos - lo as f64;
    let (_, &mut a, upper) = scratch.select_nth_unstable_by(lo, f64::total_cmp);
    if t == 0.0 || upper.is_empty() {
        return Some(a);
    }
    let b = upper.iter().copied().fold(f64::INFINITY, f64::min);
    Some(lerp(a, b, t))
}

/// numpy's `_lerp` — `a + (b - a) t`, computed from the nearer end for `t >= 0.5` — for
/// finite ends (`0 < t < 1` here). An infinite end wins, as in pandas and DuckDB (numpy's
/// formula gives NaN for the median of `[0, inf]`); `-inf` and `inf` give NaN.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    if a == b {
        return a;
    }
    match (a.is_infinite(), b.is_infinite()) {
        (true, true) => f64::NAN,
        (true, false) => a,
        (false, true) => b,
        _ => {
            let d = b - a;
            if t >= 0.5 {
                b - d * (1.0 - t)
            } else {
                a + d * t
            }
        }
    }
}

/// Distinct valid codes among `rows`.
pub fn n_unique(
    codes: &[u64],
    valid: Option<&[bool]>,
    rows: &[u32],
    scratch: &mut Vec<u64>,
) -> u64 {
    scratch.clear();
    scratch.extend(
        rows.iter()
            .filter(|&&r| valid.is_none_or(|v| v[r as usize]))
            .map(|&r| codes[r as usize]),
    );
    scratch.sort_unstable();
    scratch.dedup();
    scratch.len() as u64
}

/// The first row of each distinct valid code among `rows`, in row order.
pub fn distinct(
    codes: &[u64],
    valid: Option<&[bool]>,
    rows: &[u32],
    scratch: &mut Vec<(u64, u32)>,
) -> Vec<u32> {
    scratch.clear();
    scratch.extend(
        rows.iter()
            .filter(|&&r| valid.is_none_or(|v| v[r as usize]))
            .map(|&r| (codes[r as usize], r)),
    );
    scratch.sort_unstable();
    scratch.dedup_by_key(|e| e.0);
    let mut out: Vec<u32> = scratch.iter().map(|e| e.1).collect();
    out.sort_unstable();
    out
}

/// Rows of the `k` largest valid order codes among `rows`, largest first (ties: earlier row
/// first).
pub fn top_k(
    codes: &[u64],
    valid: Option<&[bool]>,
    rows: &[u32],
    k: usize,
    scratch: &mut Vec<(std::cmp::Reverse<u64>, u32)>,
) -> Vec<u32> {
    scratch.clear();
    scratch.extend(
        rows.iter()
            .filter(|&&r| valid.is_none_or(|v| v[r as usize]))
            .map(|&r| (std::cmp::Reverse(codes[r as usize]), r)),
    );
    if k == 0 {
        return Vec::new();
    }
    if scratch.len() > k {
        scratch.select_nth_unstable(k - 1);
        scratch.truncate(k);
    }
    scratch.sort_unstable();
    scratch.iter().map(|&(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        let v = [3.0, 1.0, 4.0, 1.5, 9.0];
        let rows: Vec<u32> = (0..5).collect();
        let mut s = Vec::new();
        // numpy.quantile([3, 1, 4, 1.5, 9], q)
        for (q, want) in [(0.0, 1.0), (0.5, 3.0), (0.9, 7.0), (1.0, 9.0), (0.3, 1.8)] {
            let got = quantile(&v, None, &rows, q, &mut s).unwrap();
            assert!((got - want).abs() < 1e-12, "q={q}: {got} != {want}");
        }
        assert_eq!(quantile(&v, None, &[], 0.5, &mut s), None);
        assert!(
            quantile(&[1.0, f64::NAN], None, &[0, 1], 0.5, &mut s)
                .unwrap()
                .is_nan()
        );
    }

    #[test]
    fn top_k_and_n_unique() {
        let codes = [5u64, 9, 5, 1, 9];
        let valid = [true, true, true, true, false];
        let rows: Vec<u32> = (0..5).collect();
        let mut s = Vec::new();
        assert_eq!(top_k(&codes, Some(&valid), &rows, 2, &mut s), vec![1, 0]);
        assert_eq!(top_k(&codes, None, &rows, 9, &mut s), vec![1, 4, 0, 2, 3]);
        assert!(top_k(&codes, None, &rows, 0, &mut s).is_empty());
        let mut u = Vec::new();
        assert_eq!(n_unique(&codes, Some(&valid), &rows, &mut u), 3);
    }
}
