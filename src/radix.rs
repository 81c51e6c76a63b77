//! Parallel LSD radix sort of `u64` elements on a bit range.
//!
//! The sort kernel lays out `element = key << idx_bits | row`, with rows in increasing order
//! initially. An LSD radix sort is stable, so sorting on the key bits only (never the row
//! bits) yields the rows in key order with ties in row order — a stable sort in
//! `ceil(key_bits / DIGIT)` passes, e.g. one pass for a 100-value string key.
//!
//! Each pass: per-block digit histograms in parallel, prefix sums in (digit, block) order,
//! then every block scatters its elements into its own disjoint slots in parallel.

use rayon::prelude::*;

use crate::parallel::{BLOCK, DisjointSlice};

/// Bits per pass (2048 buckets: histograms stay in L1).
const DIGIT: u32 = 11;

/// Sort `v` by bits `lo..lo + bits` of each element, stably.
pub fn sort_bits(v: &mut Vec<u64>, lo: u32, bits: u32) {
    if v.len() <= 1 || bits == 0 {
        return;
    }
    let passes = bits.div_ceil(DIGIT);
    // Spread the bits evenly over the passes (fewer buckets per pass when possible).
    let width = bits.div_ceil(passes);
    let mut tmp = crate::mem::filled(v.len(), 0u64, "sort scratch");
    let mut shift = lo;
    let end = lo + bits;
    while shift < end {
        let w = width.min(end - shift);
        pass(v, &mut tmp, shift, w);
        std::mem::swap(v, &mut tmp);
        shift += w;
    }
}

fn pass(src: &[u64], dst: &mut [u64], shift: u32, width: u32) {
    let buckets = 1usize << width;
    let mask = (buckets - 1) as u64;
    let digit = |x: u64| ((x >> shift) & mask) as usize;
    let counts: Vec<Vec<usize>> = src
        .par_chunks(BLOCK)
        .map(|blk| {
            crate::cancel::point();
            let mut c = vec![0usize; buckets];
            for &x in blk {
                c[digit(x)] += 1;
            }
            c
        })
        .collect();
    // A pass whose digit is the same everywhere changes nothing but costs a copy.
    let mut starts = vec![vec![0usize; buckets]; counts.len()];
    let mut acc = 0;
    for d in 0..buckets {
        for (b, c) in counts.iter().enumerate() {
            starts[b][d] = acc;
            acc += c[d];
        }
    }
    let out = DisjointSlice::new(dst);
    src.par_chunks(BLOCK)
        .zip(starts.into_par_iter())
        .for_each(|(blk, mut pos)| {
            crate::cancel::point();
            for &x in blk {
                let d = digit(x);
                // SAFETY: each (block, digit) pair owns the disjoint range starting at its
                // prefix sum, of exactly its count.
                unsafe { out.write(pos[d], x) };
                pos[d] += 1;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_on_key_bits() {
        let n = 300_000u64;
        let idx_bits = 19;
        let mut v: Vec<u64> = (0..n)
            .map(|i| ((i.wrapping_mul(2_654_435_761) % 5000) << idx_bits) | i)
            .collect();
        let mut want = v.clone();
        want.sort_unstable();
        sort_bits(&mut v, idx_bits, 13);
        assert_eq!(v, want);
    }
}
