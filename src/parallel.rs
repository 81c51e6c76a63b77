//! Small parallel building blocks shared by the kernels: fixed-size work blocks (so results
//! never depend on the thread count), hash partitioning of row indices, and a slice that
//! several threads may write at disjoint positions.

use std::cell::UnsafeCell;

use rayon::prelude::*;

/// Rows per work block. Block boundaries depend only on the input length, never on the
/// number of threads, which keeps every result independent of the pool size.
pub const BLOCK: usize = 1 << 16;

/// A slice written from several threads at positions that are known to be disjoint.
pub struct DisjointSlice<'a, T> {
    cells: &'a [UnsafeCell<T>],
}

// SAFETY: callers guarantee that no two threads write the same index and that nobody reads
// the slice until the writers are done (enforced by the `&mut` borrow held by this value).
unsafe impl<T: Send> Sync for DisjointSlice<'_, T> {}

impl<'a, T> DisjointSlice<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        let len = slice.len();
        let ptr = slice.as_mut_ptr() as *const UnsafeCell<T>;
        // SAFETY: UnsafeCell<T> has the same layout as T; the exclusive borrow is held.
        let cells = unsafe { std::slice::from_raw_parts(ptr, len) };
        DisjointSlice { cells }
    }

    /// # Safety
    /// No other thread may write index `i` while this value is alive.
    #[inline]
    pub unsafe fn write(&self, i: usize, value: T) {
        unsafe { *self.cells[i].get() = value };
    }

    /// Copy `src` to positions `at..at + src.len()`.
    ///
    /// # Safety
    /// No other thread may write that range while this value is alive.
    #[inline]
    pub unsafe fn write_slice(&self, at: usize, src: &[T])
    where
        T: Copy,
    {
        let dst = &self.cells[at..at + src.len()];
        // SAFETY: the range is in bounds (checked by the slicing above) and exclusively ours.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_ptr() as *mut T, src.len()) };
    }

    /// # Safety
    /// No other thread may write index `i` while this value is alive.
    #[inline]
    pub unsafe fn read(&self, i: usize) -> T
    where
        T: Copy,
    {
        unsafe { *self.cells[i].get() }
    }
}

/// Hash partitions: `rows[offsets[p]..offsets[p + 1]]` are the rows whose hash falls in
/// partition `p`, in increasing row order.
pub struct Partitions {
    pub rows: Vec<u32>,
    pub offsets: Vec<usize>,
}

impl Partitions {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn part(&self, p: usize) -> &[u32] {
        &self.rows[self.offsets[p]..self.offsets[p + 1]]
    }
}

/// Number of partitions for `n` rows: enough for every thread to get many, few enough that
/// each holds a useful amount of work. Depends only on `n`.
pub fn partition_count(n: usize) -> usize {
    (n / (1 << 15)).next_power_of_two().clamp(1, 256)
}

/// Partition of a hash: bits 40..48 (for up to 256 partitions). A partition's hash table
/// takes its bucket from the low bits and hashbrown's 7-bit control tag from the top 7
/// (57..64), so neither loses entropy to the partition: with the partition in the top bits,
/// every key of a partition shared its tag and each probe compared keys at every slot.
#[inline]
pub fn partition_of(hash: u64, nparts: usize) -> usize {
    if nparts <= 1 {
        0
    } else {
        (((hash >> 16) & 0xFFFF_FFFF).wrapping_mul(nparts as u64) >> 32) as usize
    }
}

/// Scatter row indices into `nparts` hash partitions with a parallel counting sort.
pub fn partition_rows(hashes: &[u64], nparts: usize) -> Partitions {
    partition_by(hashes.len(), nparts, |i| {
        Some(partition_of(hashes[i], nparts))
    })
}

/// Scatter the rows `0..n` into `nparts` partitions by `part(row)` (`None`: left out), with a
/// parallel counting sort over fixed blocks: each partition lists its rows in increasing
/// order.
pub fn partition_by(
    n: usize,
    nparts: usize,
    part: impl Fn(usize) -> Option<usize> + Sync,
) -> Partitions {
    partition_with(n, nparts, part, |_| ()).0
}

/// [`partition_by`], also scattering `value(row)` alongside each row, so that work per
/// partition reads its rows' values sequentially instead of gathering them across the
/// table.
pub fn partition_with<T: Copy + Default + Send + Sync>(
    n: usize,
    nparts: usize,
    part: impl Fn(usize) -> Option<usize> + Sync,
    value: impl Fn(usize) -> T + Sync,
) -> (Partitions, Vec<T>) {
    let blocks: Vec<std::ops::Range<usize>> = (0..n.div_ceil(BLOCK))
        .map(|b| b * BLOCK..((b + 1) * BLOCK).min(n))
        .collect();
    // counts[b][p]: rows of block b in partition p.
    let counts: Vec<Vec<usize>> = blocks
        .par_iter()
        .map(|blk| {
            crate::cancel::point();
            let mut c = vec![0usize; nparts];
            for r in blk.clone() {
                if let Some(p) = part(r) {
                    c[p] += 1;
                }
            }
            c
        })
        .collect();
    // Start of each (block, partition) slot: partition-major, then block order.
    let mut starts = vec![vec![0usize; nparts]; blocks.len()];
    let mut offsets = Vec::with_capacity(nparts + 1);
    let mut acc = 0;
    for p in 0..nparts {
        offsets.push(acc);
        for (b, c) in counts.iter().enumerate() {
            starts[b][p] = acc;
            acc += c[p];
        }
    }
    offsets.push(acc);
    let mut rows = crate::mem::filled(acc, 0u32, "partitioned rows");
    let nvalues = if size_of::<T>() == 0 { 0 } else { acc };
    let mut values = crate::mem::filled(nvalues, T::default(), "partitioned values");
    let out = DisjointSlice::new(&mut rows);
    let vals = DisjointSlice::new(&mut values);
    blocks
        .par_iter()
        .zip(starts.into_par_iter())
        .for_each(|(blk, mut pos)| {
            crate::cancel::point();
            for r in blk.clone() {
                if let Some(p) = part(r) {
                    // SAFETY: the (block, partition) slots are disjoint ranges of `rows` (and
                    // of `values`, unless `T` is zero-sized and nothing is written).
                    unsafe {
                        out.write(pos[p], r as u32);
                        if size_of::<T>() != 0 {
                            vals.write(pos[p], value(r));
                        }
                    }
                    pos[p] += 1;
                }
            }
        });
    (Partitions { rows, offsets }, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_every_row_in_order() {
        let hashes: Vec<u64> = (0..200_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let parts = partition_rows(&hashes, 16);
        let mut seen = vec![false; hashes.len()];
        for p in 0..parts.len() {
            let rows = parts.part(p);
            assert!(rows.windows(2).all(|w| w[0] < w[1]));
            for &r in rows {
                assert_eq!(partition_of(hashes[r as usize], 16), p);
                seen[r as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
