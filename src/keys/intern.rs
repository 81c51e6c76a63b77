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

use crate::parallel::{BLOCK, DisjointSlice, partition_count, partition_of};
use crate::table::RowLocator;

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
    at: RowLocator,
}

impl<'a> ByteColumn<'a> {
    pub fn new(chunks: Vec<ByteChunk<'a>>, at: RowLocator) -> Self {
        ByteColumn { chunks, at }
    }

    #[inline]
    pub fn value(&self, row: usize) -> &'a [u8] {
        let (c, r) = self.at.locate(row);
        self.chunks[c].value(r)
    }

    /// `f(row, value)` for every row of `rows`, chunk by chunk with one layout dispatch per
    /// chunk (no per-row chunk lookup).
    #[inline]
    pub fn for_each(&self, rows: std::ops::Range<usize>, mut f: impl FnMut(usize, &'a [u8])) {
        let mut row = rows.start;
        while row < rows.end {
            let (c, r) = self.at.locate(row);
            let len = (self.chunk_len(c) - r).min(rows.end - row);
            let base = row - r;
            match &self.chunks[c] {
                ByteChunk::Utf8(a) => {
                    offsets_each(a.value_offsets(), a.values(), r..r + len, base, &mut f)
                }
                ByteChunk::LargeUtf8(a) => {
                    offsets_each(a.value_offsets(), a.values(), r..r + len, base, &mut f)
                }
                ByteChunk::Binary(a) => {
                    offsets_each(a.value_offsets(), a.values(), r..r + len, base, &mut f)
                }
                ByteChunk::LargeBinary(a) => {
                    offsets_each(a.value_offsets(), a.values(), r..r + len, base, &mut f)
                }
                other => (r..r + len).for_each(|i| f(base + i, other.value(i))),
            }
            row += len;
        }
    }

    fn chunk_len(&self, c: usize) -> usize {
        match &self.chunks[c] {
            ByteChunk::Utf8(a) => a.len(),
            ByteChunk::LargeUtf8(a) => a.len(),
            ByteChunk::Utf8View(a) => a.len(),
            ByteChunk::Binary(a) => a.len(),
            ByteChunk::LargeBinary(a) => a.len(),
            ByteChunk::BinaryView(a) => a.len(),
            ByteChunk::Fixed(a) => a.len(),
        }
    }
}

/// `f(base + i, value i)` over offset-based values.
#[inline(always)]
fn offsets_each<'a, O: arrow_array::OffsetSizeTrait>(
    offsets: &'a [O],
    values: &'a [u8],
    rows: std::ops::Range<usize>,
    base: usize,
    f: &mut impl FnMut(usize, &'a [u8]),
) {
    for i in rows {
        let (s, e) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
        f(base + i, &values[s..e]);
    }
}

/// The result of interning: `ids[row]` in `0..reps.len()` (unspecified for null rows) and one
/// representative row per id.
pub struct Interned {
    pub ids: Vec<u64>,
    pub reps: Vec<u32>,
}

/// Intern the valid rows of `col` (`valid[row] == false` rows are skipped).
///
/// Far fewer distinct values than rows: one shared dictionary probed in parallel
/// ([`intern_shared`]). Mostly distinct values: the rows are hash-partitioned
/// ([`intern_partitioned`]).
pub fn intern(col: &ByteColumn<'_>, n: usize, valid: Option<&[bool]>) -> Interned {
    let is_valid = |r: usize| valid.is_none_or(|v| v[r]);
    intern_shared(col, n, &is_valid).unwrap_or_else(|| intern_partitioned(col, n, valid))
}

/// Rows value-interned sequentially before the shared dictionary is probed in parallel.
const STEP: usize = 1 << 16;

/// One dictionary for the whole column: grown sequentially over leading steps of rows until a
/// step adds under 1 % new values, then probed read-only by all threads in parallel; the rows
/// whose values it lacks are added afterwards in row order. Ids are first-appearance order.
/// `None` (the caller hash-partitions instead) when the values look mostly distinct: a step
/// adds over half its rows while the dictionary holds more than a step, or the parallel probe
/// misses more than an eighth of the rows.
fn intern_shared(
    col: &ByteColumn<'_>,
    n: usize,
    is_valid: &(impl Fn(usize) -> bool + Sync),
) -> Option<Interned> {
    let mut dict = Dictionary::default();
    let mut ids = crate::mem::filled(n, 0u64, "string ids");
    let mut at = 0;
    while at < n {
        let end = (at + STEP).min(n);
        let before = dict.reps.len();
        col.for_each(at..end, |r, v| {
            if is_valid(r) {
                ids[r] = dict.id_of(v, r as u32, hash_bytes(v));
            }
        });
        let new = dict.reps.len() - before;
        at = end;
        if new * 2 > STEP && dict.reps.len() > STEP {
            return None;
        }
        if new * 100 <= STEP {
            break;
        }
    }
    let dict_ref = &dict;
    let misses = probe(col, &mut ids[at..], at, is_valid, |v, h| {
        dict_ref.find(v, h)
    });
    if misses.len() > n / 8 {
        return None;
    }
    for (r, h) in misses {
        ids[r as usize] = dict.id_of(col.value(r as usize), r, h);
    }
    Some(Interned {
        ids,
        reps: dict.reps.into_iter().map(|(r, _)| r).collect(),
    })
}

/// `out[r - at] = find(value of row r)` for the valid rows `at..at + out.len()`, in parallel
/// blocks; the rows `find` does not know, with their hashes, in row order (their `out` is
/// left as it was).
fn probe(
    col: &ByteColumn<'_>,
    out: &mut [u64],
    at: usize,
    is_valid: &(impl Fn(usize) -> bool + Sync),
    find: impl Fn(&[u8], u64) -> Option<u64> + Sync,
) -> Vec<(u32, u64)> {
    let misses: Vec<Vec<(u32, u64)>> = out
        .par_chunks_mut(BLOCK)
        .enumerate()
        .map(|(b, out)| {
            crate::cancel::point();
            let start = at + b * BLOCK;
            let mut miss = Vec::new();
            col.for_each(start..start + out.len(), |r, v| {
                if is_valid(r) {
                    let h = hash_bytes(v);
                    match find(v, h) {
                        Some(id) => out[r - start] = id,
                        None => miss.push((r as u32, h)),
                    }
                }
            });
            miss
        })
        .collect();
    misses.concat()
}

/// The byte strings a stream has seen so far in one key column, each with an id of its own,
/// kept from batch to batch by a streaming group-by ([`crate::group_by::stream`]): once a
/// stream's values repeat, a later batch's rows are interned by a read-only parallel probe
/// ([`intern_known`]) instead of a dictionary grown anew, row after row, for every batch.
/// The values are owned (copied once, when learnt).
#[derive(Default)]
pub struct Known {
    table: HashTable<Entry>,
    hashes: Vec<u64>,
    /// Value `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<usize>,
    bytes: Vec<u8>,
}

impl Known {
    /// Values known.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Bytes held.
    pub fn memory(&self) -> u64 {
        (self.table.capacity() * (std::mem::size_of::<Entry>() + 1)
            + (self.hashes.capacity() + self.ends.capacity()) * 8
            + self.bytes.capacity()) as u64
    }

    fn value(&self, id: usize) -> &[u8] {
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.bytes[start..self.ends[id]]
    }

    #[inline]
    fn find(&self, v: &[u8], h: u64) -> Option<u64> {
        let hd = head(v);
        self.table
            .find(h, |e| e.holds(v, hd, |id| self.value(id)))
            .map(|e| e.id as u64)
    }

    /// Add the values of the valid rows of `col` that are not known yet (in row order);
    /// how many were added.
    pub fn learn(&mut self, col: &ByteColumn<'_>, n: usize, valid: Option<&[bool]>) -> usize {
        let is_valid = |r: usize| valid.is_none_or(|v| v[r]);
        let mut ids = crate::mem::filled(n, 0u64, "string ids");
        let misses = probe(col, &mut ids, 0, &is_valid, |v, h| self.find(v, h));
        let before = self.len();
        for (r, h) in misses {
            let v = col.value(r as usize);
            if self.find(v, h).is_some() {
                continue;
            }
            let e = Entry {
                head: head(v),
                len: v.len() as u32,
                id: self.len() as u32,
            };
            self.bytes.extend_from_slice(v);
            self.ends.push(self.bytes.len());
            self.hashes.push(h);
            let hashes = &self.hashes;
            self.table.insert_unique(h, e, |e| hashes[e.id as usize]);
        }
        self.len() - before
    }
}

/// The valid rows of `col` interned against `known`: a known value gets its id there, any
/// other `known.len()` plus its rank in first appearance among those. The ids are not the
/// first-appearance ids [`intern`] gives, but equal values get equal ids, and nothing else
/// does. `None` (the caller interns the column on its own) when more than an eighth of the
/// rows are not known. Returns the ids and their number.
pub fn intern_known(
    col: &ByteColumn<'_>,
    n: usize,
    valid: Option<&[bool]>,
    known: &Known,
) -> Option<(Vec<u64>, u64)> {
    let is_valid = |r: usize| valid.is_none_or(|v| v[r]);
    let mut ids = crate::mem::filled(n, 0u64, "string ids");
    let misses = probe(col, &mut ids, 0, &is_valid, |v, h| known.find(v, h));
    if misses.len() > n / 8 {
        return None;
    }
    let mut rest = Dictionary::default();
    let base = known.len() as u64;
    for (r, h) in misses {
        ids[r as usize] = base + rest.id_of(col.value(r as usize), r, h);
    }
    Some((ids, base + rest.reps.len() as u64))
}

/// Distinct values as (representative row, hash), ids in insertion order, with the values
/// themselves at hand for comparisons.
///
/// The table holds each value's length and first 16 bytes (zero-padded) next to its id, so a
/// probe of a value of up to 16 bytes is decided inside the table entry, without following a
/// pointer into the column (a cache miss per probe once the dictionary outgrows the cache).
#[derive(Default)]
struct Dictionary<'a> {
    table: HashTable<Entry>,
    reps: Vec<(u32, u64)>,
    values: Vec<&'a [u8]>,
}

/// A byte string in a hash table: its length and first 16 bytes next to its id.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub head: [u64; 2],
    pub len: u32,
    pub id: u32,
}

impl Entry {
    /// Whether the entry is `v` (head `hd`): length and head decide values of up to 16
    /// bytes; longer ones are compared in full (`value` of the entry's id).
    #[inline(always)]
    pub(crate) fn holds<'v>(
        &self,
        v: &[u8],
        hd: [u64; 2],
        value: impl Fn(usize) -> &'v [u8],
    ) -> bool {
        let len = v.len() as u32;
        self.len == len && self.head == hd && (len <= 16 || value(self.id as usize) == v)
    }
}

/// The first 16 bytes of `v`, zero-padded, as little-endian words — from at most two
/// overlapping word loads per word (a variable-length copy into a buffer would stall the
/// loads that read it back).
#[inline(always)]
pub(crate) fn head(v: &[u8]) -> [u64; 2] {
    let w8 = |at: usize| u64::from_le_bytes(v[at..at + 8].try_into().unwrap_or([0; 8]));
    let w4 = |at: usize| {
        u64::from(u32::from_le_bytes(
            v[at..at + 4].try_into().unwrap_or([0; 4]),
        ))
    };
    let n = v.len();
    match n {
        16.. => [w8(0), w8(8)],
        9..=15 => [w8(0), w8(n - 8) >> (8 * (16 - n))],
        8 => [w8(0), 0],
        4..=7 => [w4(0) | (w4(n - 4) >> (8 * (8 - n))) << 32, 0],
        _ => [
            v.iter()
                .enumerate()
                .fold(0, |w, (i, &b)| w | u64::from(b) << (8 * i)),
            0,
        ],
    }
}

impl<'a> Dictionary<'a> {
    /// The id of `v` (hash `h`) if present.
    #[inline]
    fn find(&self, v: &[u8], h: u64) -> Option<u64> {
        self.lookup(v, head(v), h)
    }

    /// [`Self::find`] with the value's head at hand.
    #[inline(always)]
    fn lookup(&self, v: &[u8], hd: [u64; 2], h: u64) -> Option<u64> {
        self.table
            .find(h, |e| e.holds(v, hd, |id| self.values[id]))
            .map(|e| e.id as u64)
    }

    /// The id of `v` (the value at `row`, hash `h`), inserting it when new.
    #[inline]
    fn id_of(&mut self, v: &'a [u8], row: u32, h: u64) -> u64 {
        let hd = head(v);
        if let Some(id) = self.lookup(v, hd, h) {
            return id;
        }
        let (reps, values) = (&mut self.reps, &mut self.values);
        let id = reps.len() as u32;
        reps.push((row, h));
        values.push(v);
        let e = Entry {
            head: hd,
            len: v.len() as u32,
            id,
        };
        self.table.insert_unique(h, e, |e| reps[e.id as usize].1);
        id as u64
    }
}

/// Byte-slice equality without a `memcmp` call for short values: two overlapping word
/// loads per side cover any length from 4 to 16 bytes.
#[inline(always)]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word8 =
        |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let word4 =
        |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        0 => true,
        1..=3 => a == b,
        4..=7 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

/// Hash-partitioned interning, for many distinct values.
///
/// Pass 1 hashes every row and counts rows and bytes per (block, partition); pass 2 copies
/// each row's bytes into its partition's contiguous region, so that the per-partition hash
/// tables read their strings sequentially from a buffer that fits in cache instead of
/// chasing every row across the whole column.
fn intern_partitioned(col: &ByteColumn<'_>, n: usize, valid: Option<&[bool]>) -> Interned {
    let is_valid = |r: usize| valid.is_none_or(|v| v[r]);
    let nparts = partition_count(n);
    let nblocks = n.div_ceil(BLOCK);
    let mut hashes = crate::mem::filled(n, 0u64, "string hashes");
    // Pass 1: hashes, and (rows, bytes) per partition for every block.
    let counts: Vec<Vec<(usize, usize)>> = hashes
        .par_chunks_mut(BLOCK)
        .enumerate()
        .map(|(b, out)| {
            crate::cancel::point();
            let base = b * BLOCK;
            let mut c = vec![(0usize, 0usize); nparts];
            for (j, h) in out.iter_mut().enumerate() {
                if is_valid(base + j) {
                    let v = col.value(base + j);
                    *h = hash_bytes(v);
                    let p = partition_of(*h, nparts);
                    c[p].0 += 1;
                    c[p].1 += v.len();
                }
            }
            c
        })
        .collect();
    // Slots of every (block, partition): partition-major, then block order.
    let mut starts = vec![vec![(0usize, 0usize); nparts]; nblocks];
    let mut part_start = Vec::with_capacity(nparts + 1);
    let (mut rows_acc, mut bytes_acc) = (0usize, 0usize);
    for p in 0..nparts {
        part_start.push(rows_acc);
        for (b, c) in counts.iter().enumerate() {
            starts[b][p] = (rows_acc, bytes_acc);
            rows_acc += c[p].0;
            bytes_acc += c[p].1;
        }
    }
    part_start.push(rows_acc);
    let nvalid = rows_acc;
    // Pass 2: scatter (row, hash, bytes) into the partitions.
    let mut rows = crate::mem::filled(nvalid, 0u32, "string partitions");
    let mut ehash = crate::mem::filled(nvalid, 0u64, "string partitions");
    let mut offs = vec![0usize; nvalid + 1];
    offs[nvalid] = bytes_acc;
    let mut buf = vec![0u8; bytes_acc];
    {
        let rows_w = DisjointSlice::new(&mut rows);
        let hash_w = DisjointSlice::new(&mut ehash);
        let offs_w = DisjointSlice::new(&mut offs);
        let buf_w = DisjointSlice::new(&mut buf);
        starts.into_par_iter().enumerate().for_each(|(b, mut pos)| {
            crate::cancel::point();
            let base = b * BLOCK;
            let end = (base + BLOCK).min(n);
            for (r, &h) in (base..end).zip(&hashes[base..end]) {
                if !is_valid(r) {
                    continue;
                }
                let v = col.value(r);
                let p = partition_of(h, nparts);
                let (e, o) = pos[p];
                // SAFETY: every (block, partition) slot owns a disjoint range of entries and
                // of bytes.
                unsafe {
                    rows_w.write(e, r as u32);
                    hash_w.write(e, h);
                    offs_w.write(e, o);
                    buf_w.write_slice(o, v);
                }
                pos[p] = (e + 1, o + v.len());
            }
        });
    }
    drop(hashes);
    let bytes_of = |e: usize| &buf[offs[e]..offs[e + 1]];
    let mut ids = crate::mem::filled(n, 0u64, "string ids");
    let out = DisjointSlice::new(&mut ids);
    // Per partition: local ids in first-appearance order, and the entry of each id.
    let local: Vec<Vec<u32>> = (0..nparts)
        .into_par_iter()
        .map(|p| {
            crate::cancel::point();
            let mut table: HashTable<u32> = HashTable::new();
            let mut reps: Vec<u32> = Vec::new();
            for e in part_start[p]..part_start[p + 1] {
                let h = ehash[e];
                let v = bytes_of(e);
                let id = match table.find(h, |&id| bytes_of(reps[id as usize] as usize) == v) {
                    Some(&id) => id,
                    None => {
                        let id = reps.len() as u32;
                        reps.push(e as u32);
                        table.insert_unique(h, id, |&id| ehash[reps[id as usize] as usize]);
                        id
                    }
                };
                // SAFETY: every row is the entry of exactly one partition.
                unsafe { out.write(rows[e] as usize, id as u64) };
            }
            reps
        })
        .collect();
    // Offset each partition's local ids by the sizes of the partitions before it.
    let mut bases = Vec::with_capacity(nparts);
    let mut acc = 0u64;
    for l in &local {
        bases.push(acc);
        acc += l.len() as u64;
    }
    (0..nparts).into_par_iter().for_each(|p| {
        crate::cancel::point();
        if bases[p] == 0 {
            return;
        }
        for &r in &rows[part_start[p]..part_start[p + 1]] {
            let r = r as usize;
            // SAFETY: as above; `ids` is read only after this loop.
            unsafe { out.write(r, out.read(r) + bases[p]) };
        }
    });
    let reps = local
        .concat()
        .into_iter()
        .map(|e| rows[e as usize])
        .collect();
    Interned { ids, reps }
}

#[cfg(test)]
mod eq_tests {
    use super::bytes_eq;

    #[test]
    fn bytes_eq_matches_slice_equality_at_every_length() {
        let base: Vec<u8> = (0u8..40).collect();
        for n in 0..=20 {
            let a = &base[..n];
            assert!(bytes_eq(a, a));
            for flip in 0..n {
                let mut b = a.to_vec();
                b[flip] ^= 0x80;
                assert!(!bytes_eq(a, &b), "n={n} flip={flip}");
            }
            assert!(!bytes_eq(a, &base[..n + 1]));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow_array::{ArrayRef, StringArray};

    use super::*;

    /// Intern `values` (as two chunks) and check: equal ids exactly for equal values, each
    /// representative holds its id's value, and (`ordered`) ids number the values in order of
    /// first appearance.
    fn check(values: &[String], valid: Option<&[bool]>, ordered: bool) {
        let mid = values.len() / 3;
        let chunks: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(&values[..mid])),
            Arc::new(StringArray::from_iter_values(&values[mid..])),
        ];
        let at = RowLocator::new(&[mid, values.len() - mid]).unwrap();
        let col = ByteColumn::new(chunks.iter().filter_map(ByteChunk::new).collect(), at);
        let got = intern(&col, values.len(), valid);
        let mut first: HashMap<&str, u64> = HashMap::new();
        let mut next = 0u64;
        for (r, v) in values.iter().enumerate() {
            if valid.is_some_and(|ok| !ok[r]) {
                continue;
            }
            let id = got.ids[r];
            assert_eq!(values[got.reps[id as usize] as usize], *v, "row {r}");
            let want = *first.entry(v).or_insert_with(|| {
                next += 1;
                if ordered { next - 1 } else { id }
            });
            assert_eq!(id, want, "row {r}: {v:?}");
        }
        assert_eq!(got.reps.len(), first.len());
    }

    fn column(values: &[&str]) -> (Vec<ArrayRef>, RowLocator) {
        let chunks: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(values))];
        (chunks, RowLocator::contiguous())
    }

    #[test]
    fn known_values_give_equal_ids_exactly_to_equal_values() {
        // Long values equal in their first 16 bytes, the empty string, unicode.
        let long = |i: usize| format!("{}{i:04}", "x".repeat(20));
        let learnt: Vec<String> = (0..40)
            .map(|i| match i % 4 {
                0 => long(i),
                1 => format!("ä漢{i}"),
                2 => String::new(),
                _ => format!("k{i}"),
            })
            .collect();
        let refs: Vec<&str> = learnt.iter().map(String::as_str).collect();
        let (chunks, at) = column(&refs);
        let col = ByteColumn::new(chunks.iter().filter_map(ByteChunk::new).collect(), at);
        let mut known = Known::default();
        // A null row's value is not learnt.
        let mut valid = vec![true; refs.len()];
        valid[3] = false;
        assert_eq!(known.learn(&col, refs.len(), Some(&valid)), 30);
        assert_eq!(
            known.learn(&col, refs.len(), None),
            1,
            "the null row's value"
        );
        assert_eq!(known.learn(&col, refs.len(), None), 0);
        assert_eq!(known.len(), 31);

        // Mostly known rows, a few new ones (one longer than 16 bytes, like a known one).
        let mut rows: Vec<String> = (0..200).map(|i| learnt[i * 7 % 40].clone()).collect();
        rows[5] = "new".into();
        rows[17] = long(1000);
        rows[90] = "new".into();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let (chunks, at) = column(&refs);
        let col = ByteColumn::new(chunks.iter().filter_map(ByteChunk::new).collect(), at);
        let mut valid = vec![true; refs.len()];
        valid[40] = false;
        let (ids, card) = intern_known(&col, refs.len(), Some(&valid), &known).unwrap();
        assert_eq!(card, 33, "31 known and 2 new values");
        for a in (0..refs.len()).filter(|&r| valid[r]) {
            assert!(ids[a] < card);
            for b in (0..refs.len()).filter(|&r| valid[r]) {
                assert_eq!(ids[a] == ids[b], refs[a] == refs[b], "rows {a} and {b}");
            }
        }
        // More than an eighth of the rows unknown: left to `intern`.
        let fresh: Vec<String> = (0..200).map(|i| format!("f{}", i % 30)).collect();
        let refs: Vec<&str> = fresh.iter().map(String::as_str).collect();
        let (chunks, at) = column(&refs);
        let col = ByteColumn::new(chunks.iter().filter_map(ByteChunk::new).collect(), at);
        assert!(intern_known(&col, refs.len(), None, &known).is_none());
    }

    #[test]
    fn head_is_the_zero_padded_prefix() {
        let base: Vec<u8> = (1u8..=40).collect();
        for n in 0..=20 {
            let mut b = [0u8; 16];
            b[..n.min(16)].copy_from_slice(&base[..n.min(16)]);
            let want = [
                u64::from_le_bytes(b[..8].try_into().unwrap()),
                u64::from_le_bytes(b[8..].try_into().unwrap()),
            ];
            assert_eq!(head(&base[..n]), want, "n={n}");
        }
    }

    #[test]
    fn shared_dictionary_paths_and_fallback() {
        let n = 300_000usize;
        let s = |i: usize| format!("v{i:011}");
        // Few distinct, 20k distinct spread out, long values past the inline 16 bytes.
        check(
            &(0..n).map(|i| s(i * 7 % 97)).collect::<Vec<_>>(),
            None,
            true,
        );
        check(
            &(0..n).map(|i| s(i * 7919 % 20_000)).collect::<Vec<_>>(),
            None,
            true,
        );
        let long: Vec<String> = (0..n).map(|i| format!("{:030}{}", 0, i % 50)).collect();
        check(&long, None, true);
        // New values keep appearing after the sequential prefix: the parallel probe misses
        // them and they are added in row order.
        let late: Vec<String> = (0..n)
            .map(|i| {
                if i < 270_000 {
                    s(i % 10)
                } else {
                    s(10 + i % 5_000)
                }
            })
            .collect();
        check(&late, None, true);
        // Nulls are skipped wherever they are.
        let valid: Vec<bool> = (0..n).map(|i| i % 5 != 0).collect();
        check(&late, Some(&valid), true);
        // Mostly distinct, or too many rows missed by the probe: hash-partitioned (ids not in
        // appearance order).
        check(&(0..n).map(s).collect::<Vec<_>>(), None, false);
        let later: Vec<String> = (0..n)
            .map(|i| {
                if i < 70_000 {
                    s(i % 10)
                } else {
                    s(10 + i % 30_000)
                }
            })
            .collect();
        check(&later, None, false);
    }
}
