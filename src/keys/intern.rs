//! Parallel interning of byte-string columns (utf8, large_utf8, utf8_view, binary variants).
//!
//! Each distinct value gets a dense id in `0..distinct`. Algorithm: hash every row once,
//! scatter the rows into hash partitions (a parallel counting sort, see
//! [`crate::parallel::partition_rows`]), then build one small hash table per partition in
//! parallel. A partition's ids are offset by the distinct counts of the partitions before it,
//! so ids depend only on the data, never on the number of threads.

use std::hash::BuildHasher;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use hashbrown::HashTable;
use rayon::prelude::*;

use crate::parallel::{BLOCK, DisjointSlice, partition_count, partition_rows};

/// Seed for every hash the core computes: fixed, so runs are reproducible.
pub const SEED: u64 = 0x5eed_f3bb_a7c4_0001;

#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(SEED).hash_one(b)
}

/// A byte-string chunk of any of the supported layouts.
pub enum ByteChunk<'a> {
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    Utf8View(&'a arrow_array::StringViewArray),
    Binary(&'a arrow_array::BinaryArray),
    LargeBinary(&'a arrow_array::LargeBinaryArray),
    BinaryView(&'a arrow_array::BinaryViewArray),
    Fixed(&'a arrow_array::FixedSizeBinaryArray),
}

impl<'a> ByteChunk<'a> {
    /// `None` when the array is not a byte-string layout.
    pub fn new(a: &'a ArrayRef) -> Option<Self> {
        Some(match a.data_type() {
            DataType::Utf8 => ByteChunk::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => ByteChunk::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => ByteChunk::Utf8View(a.as_string_view()),
            DataType::Binary => ByteChunk::Binary(a.as_binary::<i32>()),
            DataType::LargeBinary => ByteChunk::LargeBinary(a.as_binary::<i64>()),
            DataType::BinaryView => ByteChunk::BinaryView(a.as_binary_view()),
            DataType::FixedSizeBinary(_) => ByteChunk::Fixed(a.as_fixed_size_binary()),
            _ => return None,
        })
    }

    /// The bytes of row `i` (unspecified for null rows).
    #[inline]
    pub fn value(&self, i: usize) -> &'a [u8] {
        match self {
            ByteChunk::Utf8(a) => a.value(i).as_bytes(),
            ByteChunk::LargeUtf8(a) => a.value(i).as_bytes(),
            ByteChunk::Utf8View(a) => a.value(i).as_bytes(),
            ByteChunk::Binary(a) => a.value(i),
            ByteChunk::LargeBinary(a) => a.value(i),
            ByteChunk::BinaryView(a) => a.value(i),
            ByteChunk::Fixed(a) => a.value(i),
        }
    }
}

/// Row access across the chunks of one column.
pub struct ByteColumn<'a> {
    chunks: Vec<ByteChunk<'a>>,
    /// Global row index where each chunk starts, plus the total at the end.
    starts: Vec<usize>,
}

impl<'a> ByteColumn<'a> {
    pub fn new(chunks: Vec<ByteChunk<'a>>, lens: &[usize]) -> Self {
        let mut starts = Vec::with_capacity(lens.len() + 1);
        let mut acc = 0;
        for &l in lens {
            starts.push(acc);
            acc += l;
        }
        starts.push(acc);
        ByteColumn { chunks, starts }
    }

    #[inline]
    pub fn value(&self, row: usize) -> &'a [u8] {
        if self.chunks.len() == 1 {
            return self.chunks[0].value(row);
        }
        let c = self.starts.partition_point(|&s| s <= row) - 1;
        self.chunks[c].value(row - self.starts[c])
    }
}

/// The result of interning: `ids[row]` in `0..reps.len()` (unspecified for null rows) and one
/// representative row per id.
pub struct Interned {
    pub ids: Vec<u64>,
    pub reps: Vec<u32>,
}

/// Intern the valid rows of `col` (`valid[row] == false` rows are skipped).
pub fn intern(col: &ByteColumn<'_>, n: usize, valid: Option<&[bool]>) -> Interned {
    let is_valid = |r: usize| valid.is_none_or(|v| v[r]);
    let mut hashes = vec![0u64; n];
    hashes
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, out)| {
            let base = b * BLOCK;
            for (j, h) in out.iter_mut().enumerate() {
                if is_valid(base + j) {
                    *h = hash_bytes(col.value(base + j));
                }
            }
        });
    let parts = partition_rows(&hashes, partition_count(n));
    let mut ids = vec![0u64; n];
    let out = DisjointSlice::new(&mut ids);
    // Per partition: its representatives, in first-appearance order within the partition.
    let local: Vec<Vec<u32>> = (0..parts.len())
        .into_par_iter()
        .map(|p| {
            let mut table: HashTable<u32> = HashTable::new();
            let mut reps: Vec<u32> = Vec::new();
            for &r in parts.part(p) {
                let r = r as usize;
                if !is_valid(r) {
                    continue;
                }
                let h = hashes[r];
                let v = col.value(r);
                let id = match table.find(h, |&id| col.value(reps[id as usize] as usize) == v) {
                    Some(&id) => id,
                    None => {
                        let id = reps.len() as u32;
                        reps.push(r as u32);
                        table.insert_unique(h, id, |&id| hashes[reps[id as usize] as usize]);
                        id
                    }
                };
                // SAFETY: every row belongs to exactly one partition.
                unsafe { out.write(r, id as u64) };
            }
            reps
        })
        .collect();
    // Offset each partition's local ids by the sizes of the partitions before it.
    let mut bases = Vec::with_capacity(local.len());
    let mut acc = 0u64;
    for l in &local {
        bases.push(acc);
        acc += l.len() as u64;
    }
    (0..parts.len()).into_par_iter().for_each(|p| {
        for &r in parts.part(p) {
            let r = r as usize;
            if is_valid(r) {
                // SAFETY: as above, rows are disjoint across partitions; reads of `ids` only
                // happen after this loop.
                unsafe { out.write(r, ids_of(&out, r) + bases[p]) };
            }
        }
    });
    Interned {
        ids,
        reps: local.concat(),
    }
}

#[inline]
fn ids_of(out: &DisjointSlice<'_, u64>, r: usize) -> u64 {
    // SAFETY: only the thread owning row `r`'s partition touches it.
    unsafe { out.read(r) }
}
