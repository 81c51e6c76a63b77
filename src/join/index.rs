//! The build side of a hash join: a group id for every build row, and for any probe row the
//! group id of the equal build key. Built once, in parallel; probed by whole tables or by
//! batches, in parallel. Both `fb.join` and the pipeline's streaming join use it.
//!
//! # Algorithm
//! 1. **One column at a time** ([`ColIndex`]). Fixed-width keys (integers of any width, by
//!    value; temporal types; booleans; decimals; floats with NaN == NaN and -0.0 == 0.0) map
//!    to order images in a domain chosen from *both* sides' types (so `int8` meets `uint64`
//!    by value), offset by the build side's minimum: a probe value outside the build range
//!    misses without any lookup. Byte strings of any layout (utf8, large, view, binary,
//!    dictionary) are interned on the build side — only its distinct values are kept — and
//!    looked up by hash; a dictionary probe column looks up each dictionary value once. Each
//!    column yields codes in `0..card`, plus one slot for null when nulls match.
//! 2. **Columns combined** in mixed radix. When that code space is not much larger than the
//!    build side, the combined code *is* the group id (*direct*: no hash table — most real
//!    keys: dense integers, strings); otherwise the build's combined keys are scattered into
//!    hash partitions and one table per partition is built in parallel (*hashed*).
//!
//! Group ids depend only on the data (never on the thread count): direct ids are codes,
//! hashed ids number the partitions' groups in partition order, each in build-row order.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use hashbrown::HashTable;
use rayon::prelude::*;

use super::NONE;
use crate::dedup::{hash_u64, hash_u128};
use crate::error::{Error, Result};
use crate::keys::encode::{Domain, domain_of_types, raw_u64, raw_u128, validity};
use crate::keys::intern::{ByteChunk, ByteColumn, hash_bytes, intern};
use crate::keys::value_type;
use crate::parallel::{BLOCK, DisjointSlice, partition_by, partition_count, partition_of};
use crate::table::locatable;

/// Combined code spaces up to this size are used as group ids directly: up to 8 ids per
/// build row (a sparse integer key: TPC-H's order keys are a quarter dense), whose cost is
/// the `u32` per id of the grouped build rows — far less than a hash table's probes.
fn direct_limit(build_rows: usize) -> u128 {
    8 * build_rows as u128 + 65536
}

/// A key of the build side, ready for probes.
pub struct KeyIndex {
    cols: Vec<ColIndex>,
    nulls_equal: bool,
    combine: Combine,
    /// Group ids are `0..card`.
    pub card: usize,
}

/// The build side's group ids (`NONE` for rows whose key matches nothing) and its index.
pub struct Built {
    pub gids: Vec<u32>,
    pub index: KeyIndex,
}

impl KeyIndex {
    /// Index the key columns `build` (each the chunks of one column) against probes whose
    /// key columns have types `probe_types`. `names`: the build columns' names (errors).
    pub fn build(
        build: &[Vec<ArrayRef>],
        build_types: &[DataType],
        probe_types: &[DataType],
        names: &[&str],
        nulls_equal: bool,
    ) -> Result<Built> {
        let n: usize = build.first().map_or(0, |c| c.iter().map(|a| a.len()).sum());
        let mut cols = Vec::with_capacity(build.len());
        let mut parts: Vec<Part> = Vec::new();
        let mut hit = Hit::new();
        for (i, chunks) in build.iter().enumerate() {
            let (col, comps) = ColIndex::build(
                chunks,
                &build_types[i],
                &probe_types[i],
                names[i],
                nulls_equal,
                &mut hit,
            )?;
            cols.push(col);
            parts.extend(comps);
        }
        let (combine, gids, card) = Combine::build(parts, n, &hit);
        Ok(Built {
            gids,
            index: KeyIndex {
                cols,
                nulls_equal,
                combine,
                card,
            },
        })
    }

    /// The group id of every probe row (`NONE`: no equal build key). `probe`: the probe
    /// key columns' chunks, of the types the index was built for.
    pub fn probe(&self, probe: &[Vec<ArrayRef>]) -> Result<Vec<u32>> {
        let n: usize = probe.first().map_or(0, |c| c.iter().map(|a| a.len()).sum());
        let mut hit = Hit::new();
        let mut parts = Vec::new();
        for (col, chunks) in self.cols.iter().zip(probe) {
            parts.extend(col.probe(chunks, n, self.nulls_equal, &mut hit)?);
        }
        Ok(self.combine.probe(parts, n, &hit))
    }
}

/// Which rows can still match (a null key without `nulls_equal`, a value the build side
/// lacks): `None` while all can.
struct Hit(Option<Vec<bool>>);

impl Hit {
    fn new() -> Self {
        Hit(None)
    }

    fn get(&self, row: usize) -> bool {
        self.0.as_ref().is_none_or(|v| v[row])
    }

    fn all(&mut self, n: usize) -> &mut Vec<bool> {
        self.0
            .get_or_insert_with(|| crate::mem::filled(n, true, "join key flags"))
    }
}

/// One code column of the combined key: codes in `0..card`.
struct Part {
    codes: Vec<u64>,
    card: u128,
}

/// One key column's index (see the module docs).
enum ColIndex {
    /// Order images of domain `domain`, offset by `lo`; build values span `0..=span`.
    Fixed { domain: Domain, lo: u64, span: u64 },
    /// 128-bit images (a `uint64` key against a signed one, decimal128), offset by `lo`:
    /// one code column when the span fits in 64 bits, else (high, low) halves.
    Wide { lo: u128, span: u128 },
    /// Interned byte strings.
    Bytes(ByteDict),
    /// No valid build value (an empty build side, a null-typed column): no value matches.
    Empty,
}

/// Sign-flipped order image of 128-bit values.
fn is_wide(t: &DataType) -> bool {
    matches!(t, DataType::Decimal128(_, _))
}

pub(crate) fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

/// Chunks with dictionaries decoded to their value type (fixed-width values, or a build
/// side: it is the smaller one, and only its distinct values are kept).
fn decoded(chunks: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    chunks.iter().map(crate::keys::decoded).collect()
}

impl ColIndex {
    /// The index of one build column and its code columns (null rows: the null slot, or
    /// marked in `hit` when nulls match nothing).
    fn build(
        chunks: &[ArrayRef],
        build_type: &DataType,
        probe_type: &DataType,
        name: &str,
        nulls_equal: bool,
        hit: &mut Hit,
    ) -> Result<(ColIndex, Vec<Part>)> {
        let n: usize = chunks.iter().map(|c| c.len()).sum();
        let (bt, pt) = (value_type(build_type), value_type(probe_type));
        let chunks = decoded(chunks)?;
        let valid = validity(&chunks, n);
        let valid = valid.as_deref();
        let domain = domain_of_types([bt, pt].into_iter());
        let (col, mut parts, value_card) = if *bt == DataType::Null {
            (
                ColIndex::Empty,
                vec![Part {
                    codes: vec![0; n],
                    card: 0,
                }],
                0,
            )
        } else if is_bytes(bt) && is_bytes(pt) {
            let (dict, codes) = ByteDict::build(&chunks, bt, n, valid)?;
            let card = dict.len() as u128;
            (ColIndex::Bytes(dict), vec![Part { codes, card }], card)
        } else if (is_wide(bt) && is_wide(pt)) || domain == Some(Domain::Wide) {
            Self::wide(&chunks, n, valid)
        } else if let Some(domain) = domain {
            let mut raw = crate::mem::filled(n, 0u64, "key values");
            fill_chunks(&chunks, &mut raw, |c, out| raw_u64(c, out, domain));
            match min_max(&raw, valid) {
                None => (
                    ColIndex::Empty,
                    vec![Part {
                        codes: raw,
                        card: 0,
                    }],
                    0,
                ),
                Some((lo, hi)) if hi - lo < u64::MAX - 1 => {
                    let span = hi - lo;
                    raw.par_chunks_mut(BLOCK).for_each(|blk| {
                        blk.iter_mut().for_each(|x| *x = x.wrapping_sub(lo));
                    });
                    let card = span as u128 + 1;
                    let col = ColIndex::Fixed { domain, lo, span };
                    (col, vec![Part { codes: raw, card }], card)
                }
                // The whole 64-bit range (extreme integers): no room left for a null code.
                Some(_) => Self::wide(&chunks, n, valid),
            }
        } else {
            return Err(Error::Type(format!(
                "column {name:?} has type {build_type}, which cannot be used as a key"
            )));
        };
        null_slot(&mut parts, valid, value_card, nulls_equal);
        if let Some(v) = valid
            && !nulls_equal
        {
            let h = hit.all(n);
            h.par_iter_mut()
                .zip(v.par_iter())
                .for_each(|(h, &ok)| *h &= ok);
        }
        Ok((col, parts))
    }

    /// [`ColIndex::Wide`] of a build column: its index, code columns and the first code
    /// column's value cardinality.
    fn wide(chunks: &[ArrayRef], n: usize, valid: Option<&[bool]>) -> (ColIndex, Vec<Part>, u128) {
        let mut raw = crate::mem::filled(n, 0u128, "key values");
        fill_chunks(chunks, &mut raw, raw_u128);
        match min_max(&raw, valid) {
            None => (
                ColIndex::Empty,
                vec![Part {
                    codes: vec![0; n],
                    card: 0,
                }],
                0,
            ),
            Some((lo, hi)) => {
                let span = hi - lo;
                let (parts, card) = wide_parts(&raw, lo, span);
                (ColIndex::Wide { lo, span }, parts, card)
            }
        }
    }

    /// The code columns of one probe column; rows that cannot match are cleared in `hit`.
    fn probe(
        &self,
        chunks: &[ArrayRef],
        n: usize,
        nulls_equal: bool,
        hit: &mut Hit,
    ) -> Result<Vec<Part>> {
        let valid = validity(chunks, n);
        let mut miss = crate::mem::filled(n, false, "join key flags");
        let (mut parts, value_card) = match self {
            ColIndex::Empty => {
                miss.iter_mut().for_each(|m| *m = true);
                (
                    vec![Part {
                        codes: vec![0; n],
                        card: 0,
                    }],
                    0u128,
                )
            }
            ColIndex::Bytes(dict) => {
                let codes = dict.probe(chunks, n, &mut miss)?;
                let card = dict.len() as u128;
                (vec![Part { codes, card }], card)
            }
            ColIndex::Fixed { domain, lo, span } => {
                let chunks = decoded(chunks)?;
                let mut codes = crate::mem::filled(n, 0u64, "key codes");
                fill_chunks(&chunks, &mut codes, |c, out| raw_u64(c, out, *domain));
                let (lo, span) = (*lo, *span);
                codes
                    .par_chunks_mut(BLOCK)
                    .zip(miss.par_chunks_mut(BLOCK))
                    .for_each(|(cs, ms)| {
                        crate::cancel::point();
                        for (c, m) in cs.iter_mut().zip(ms) {
                            let x = c.wrapping_sub(lo);
                            *m = x > span;
                            *c = x;
                        }
                    });
                (
                    vec![Part {
                        codes,
                        card: span as u128 + 1,
                    }],
                    span as u128 + 1,
                )
            }
            ColIndex::Wide { lo, span } => {
                let chunks = decoded(chunks)?;
                let mut raw = crate::mem::filled(n, 0u128, "key values");
                fill_chunks(&chunks, &mut raw, raw_u128);
                let (lo, span) = (*lo, *span);
                miss.par_iter_mut()
                    .zip(raw.par_iter())
                    .for_each(|(m, &x)| *m = x.wrapping_sub(lo) > span);
                wide_parts(&raw, lo, span)
            }
        };
        // Null rows: the null slot (matching the build side's, if it has null rows), else a
        // miss.
        null_slot(&mut parts, valid.as_deref(), value_card, nulls_equal);
        if let Some(v) = &valid {
            miss.par_iter_mut().zip(v.par_iter()).for_each(|(m, &ok)| {
                if !ok {
                    *m = !nulls_equal;
                }
            });
        }
        if miss.par_iter().any(|&m| m) {
            let h = hit.all(n);
            h.par_iter_mut()
                .zip(miss.par_iter())
                .for_each(|(h, &m)| *h &= !m);
        }
        Ok(parts)
    }
}

/// With `nulls_equal`, null is one more key value: code `value_card` in the first code
/// column (which gains that slot) and 0 in the others, on the build and the probe side alike.
fn null_slot(parts: &mut [Part], valid: Option<&[bool]>, value_card: u128, nulls_equal: bool) {
    if !nulls_equal {
        return;
    }
    parts[0].card = value_card + 1;
    let Some(v) = valid else { return };
    for (i, p) in parts.iter_mut().enumerate() {
        let code = if i == 0 { value_card as u64 } else { 0 };
        p.codes
            .par_iter_mut()
            .zip(v.par_iter())
            .for_each(|(c, &ok)| {
                if !ok {
                    *c = code;
                }
            });
    }
}

/// Code columns of 128-bit images offset by `lo`: one when the span fits in 64 bits, else
/// the (high, low) halves; with the first column's cardinality.
fn wide_parts(raw: &[u128], lo: u128, span: u128) -> (Vec<Part>, u128) {
    if span < u64::MAX as u128 {
        let codes = raw.par_iter().map(|&x| x.wrapping_sub(lo) as u64).collect();
        return (
            vec![Part {
                codes,
                card: span + 1,
            }],
            span + 1,
        );
    }
    let high = raw
        .par_iter()
        .map(|&x| (x.wrapping_sub(lo) >> 64) as u64)
        .collect();
    let low = raw.par_iter().map(|&x| x.wrapping_sub(lo) as u64).collect();
    let hc = (span >> 64) + 1;
    (
        vec![
            Part {
                codes: high,
                card: hc,
            },
            Part {
                codes: low,
                card: 1 << 64,
            },
        ],
        hc,
    )
}

fn fill_chunks<T>(chunks: &[ArrayRef], out: &mut [T], f: impl Fn(&ArrayRef, &mut [T])) {
    let mut rest = out;
    for c in chunks {
        let (head, tail) = rest.split_at_mut(c.len());
        f(c, head);
        rest = tail;
    }
}

/// Smallest and largest valid value.
fn min_max<T: Copy + Ord + Send + Sync>(raw: &[T], valid: Option<&[bool]>) -> Option<(T, T)> {
    raw.par_chunks(BLOCK)
        .enumerate()
        .filter_map(|(b, blk)| {
            crate::cancel::point();
            (b * BLOCK..)
                .zip(blk)
                .filter(|&(i, _)| valid.is_none_or(|v| v[i]))
                .map(|(_, &x)| (x, x))
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
        })
        .reduce_with(|a, b| (a.0.min(b.0), a.1.max(b.1)))
}

/// The distinct byte strings of a build column, owned, with hash-partitioned lookup tables.
///
/// A probe is memory-bound: a random slot, then the value's bytes. Each value is stored
/// behind its length (8 bytes, little-endian), and each slot holds the value's hash tag, id
/// and byte offset, so a hit costs two cache lines (slot, value) and a miss usually one. A
/// block of probes is looked up in stages (hash and prefetch the slots; prefetch the
/// candidate values; compare), so the misses of a block overlap instead of queueing. A
/// dictionary that fits in a core's cache is probed row by row (the stages would only add
/// work).
struct ByteDict {
    /// Each distinct value as its length then its bytes.
    bytes: Vec<u8>,
    /// Where each value's length prefix starts.
    offsets: Vec<usize>,
    hashes: Vec<u64>,
    tables: Vec<Slots>,
    /// Slots and values within [`CACHED`] bytes.
    cached: bool,
}

/// Size of a dictionary probed without prefetching.
const CACHED: usize = 1 << 20;

/// One partition's open-addressing table (linear probing, at most half full): a slot is
/// `[tag << 32 | id + 1, offset]` with `tag` the hash's high 32 bits; `[0, _]` is empty.
struct Slots {
    mask: usize,
    slots: Vec<[u64; 2]>,
}

impl Slots {
    fn new(n: usize) -> Self {
        let len = (2 * n).next_power_of_two().max(16);
        Slots {
            mask: len - 1,
            slots: vec![[0, 0]; len],
        }
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    fn insert(&mut self, h: u64, id: u32, offset: usize) {
        let mut i = self.home(h);
        while self.slots[i][0] != 0 {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = [tag(h) | (u64::from(id) + 1), offset as u64];
    }
}

#[inline]
fn tag(h: u64) -> u64 {
    h & 0xFFFF_FFFF_0000_0000
}

/// Hint that `p`'s cache line is read soon (a no-op where there is no such instruction).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Probes looked up together (see [`ByteDict`]).
const GROUP: usize = 16;

impl ByteDict {
    fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The value whose length prefix is at `at`.
    #[inline]
    fn stored(&self, at: usize) -> &[u8] {
        let len = u64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"));
        &self.bytes[at + 8..at + 8 + len as usize]
    }

    #[inline]
    fn value(&self, id: u32) -> &[u8] {
        self.stored(self.offsets[id as usize])
    }

    /// The dictionary of a (decoded) build column and every row's id (unspecified for nulls).
    fn build(
        chunks: &[ArrayRef],
        dt: &DataType,
        n: usize,
        valid: Option<&[bool]>,
    ) -> Result<(Self, Vec<u64>)> {
        let (chunks, at) = locatable(chunks.to_vec(), dt)?;
        let col = ByteColumn::new(chunks.iter().filter_map(ByteChunk::new).collect(), at);
        let interned = intern(&col, n, valid);
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(interned.reps.len());
        for &r in &interned.reps {
            let v = col.value(r as usize);
            offsets.push(bytes.len());
            bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
            bytes.extend_from_slice(v);
        }
        let mut dict = ByteDict {
            bytes,
            offsets,
            hashes: Vec::new(),
            tables: Vec::new(),
            cached: false,
        };
        let card = interned.reps.len();
        dict.hashes = (0..card as u32)
            .into_par_iter()
            .map(|id| hash_bytes(dict.value(id)))
            .collect();
        let nparts = partition_count(card);
        let hs = &dict.hashes;
        let parts = partition_by(card, nparts, |id| Some(partition_of(hs[id], nparts)));
        let offsets = &dict.offsets;
        dict.tables = (0..nparts)
            .into_par_iter()
            .map(|p| {
                crate::cancel::point();
                let ids = parts.part(p);
                let mut t = Slots::new(ids.len());
                for &id in ids {
                    t.insert(hs[id as usize], id, offsets[id as usize]);
                }
                t
            })
            .collect();
        let slots: usize = dict.tables.iter().map(|t| t.slots.len() * 16).sum();
        dict.cached = slots + dict.bytes.len() <= CACHED;
        Ok((dict, interned.ids))
    }

    #[inline]
    fn table(&self, h: u64) -> &Slots {
        &self.tables[partition_of(h, self.tables.len())]
    }

    #[inline]
    fn find_hashed(&self, v: &[u8], h: u64) -> Option<u32> {
        let t = self.table(h);
        let mut i = t.home(h);
        loop {
            let [s, at] = t.slots[i];
            if s == 0 {
                return None;
            }
            if tag(s) == tag(h) && self.stored(at as usize) == v {
                return Some((s as u32).wrapping_sub(1));
            }
            i = (i + 1) & t.mask;
        }
    }

    #[inline]
    fn find(&self, v: &[u8]) -> Option<u32> {
        self.find_hashed(v, hash_bytes(v))
    }

    /// Looks up `value(start + j)` for the rows of `out` / `miss`: the id, or `miss` set.
    fn find_block<'v>(
        &self,
        value: impl Fn(usize) -> &'v [u8],
        start: usize,
        out: &mut [u64],
        miss: &mut [bool],
    ) {
        let mut hs = [0u64; GROUP];
        for (g, (os, ms)) in out
            .chunks_mut(GROUP)
            .zip(miss.chunks_mut(GROUP))
            .enumerate()
        {
            let base = start + g * GROUP;
            for (j, h) in hs.iter_mut().enumerate().take(os.len()) {
                *h = hash_bytes(value(base + j));
                let t = self.table(*h);
                prefetch(&t.slots[t.home(*h)]);
            }
            for &h in &hs[..os.len()] {
                let t = self.table(h);
                let [s, at] = t.slots[t.home(h)];
                if s != 0 && tag(s) == tag(h) {
                    prefetch(&self.bytes[at as usize]);
                }
            }
            for (j, (o, m)) in os.iter_mut().zip(ms.iter_mut()).enumerate() {
                match self.find_hashed(value(base + j), hs[j]) {
                    Some(id) => *o = u64::from(id),
                    None => *m = true,
                }
            }
        }
    }

    /// Ids of the probe rows; rows whose value is absent are marked in `miss` (nulls are
    /// the caller's).
    fn probe(&self, chunks: &[ArrayRef], n: usize, miss: &mut [bool]) -> Result<Vec<u64>> {
        let mut codes = crate::mem::filled(n, 0u64, "key codes");
        let (mut crest, mut mrest) = (codes.as_mut_slice(), &mut miss[..]);
        for c in chunks {
            let (ch, ct) = crest.split_at_mut(c.len());
            let (mh, mt) = mrest.split_at_mut(c.len());
            (crest, mrest) = (ct, mt);
            if let DataType::Dictionary(_, _) = c.data_type() {
                // Each dictionary value looked up once.
                let d = c.as_any_dictionary();
                let values = d.values();
                if values.is_empty() {
                    // Every key of an empty dictionary is null (`normalized_keys` would panic).
                    mh.iter_mut().for_each(|m| *m = true);
                    continue;
                }
                let bc = ByteChunk::new(values).ok_or_else(|| {
                    Error::Type(format!("cannot use {} as a string key", c.data_type()))
                })?;
                let ids: Vec<u32> = (0..values.len())
                    .map(|i| self.find(bc.value(i)).unwrap_or(NONE))
                    .collect();
                let keys = d.normalized_keys();
                for ((o, m), &k) in ch.iter_mut().zip(mh.iter_mut()).zip(&keys) {
                    // Keys of null slots may be anything: nulls are handled by the caller.
                    let id = ids.get(k).copied().unwrap_or(NONE);
                    *m = id == NONE;
                    *o = u64::from(id);
                }
                continue;
            }
            let bc = ByteChunk::new(c).ok_or_else(|| {
                Error::Type(format!("cannot use {} as a string key", c.data_type()))
            })?;
            ch.par_chunks_mut(BLOCK)
                .zip(mh.par_chunks_mut(BLOCK))
                .enumerate()
                .for_each(|(b, (os, ms))| {
                    crate::cancel::point();
                    self.find_block(|i| bc.value(i), b * BLOCK, os, ms);
                });
        }
        Ok(codes)
    }
}

/// How the code columns become group ids (see the module docs).
enum Combine {
    /// The mixed-radix code is the group id.
    Direct { strides: Vec<u64> },
    /// The mixed-radix keys hashed into partitioned tables of group ids.
    Hashed(Box<Hashed>),
}

/// Combined keys of the rows: packed in `u64` / `u128` when the code space allows.
enum Packed {
    U64(Vec<u64>),
    U128(Vec<u128>),
    Wide(Vec<Vec<u64>>),
}

impl Packed {
    fn new(parts: Vec<Part>, n: usize, hit: &Hit) -> Self {
        let card = parts
            .iter()
            .try_fold(1u128, |acc, p| acc.checked_mul(p.card.max(1)));
        let stride = |parts: &[Part]| -> Vec<u128> {
            let mut s = vec![1u128; parts.len()];
            for i in (0..parts.len().saturating_sub(1)).rev() {
                s[i] = s[i + 1] * parts[i + 1].card.max(1);
            }
            s
        };
        match card {
            Some(c) if c <= u64::MAX as u128 + 1 => {
                if parts.len() == 1 {
                    return Packed::U64(
                        parts
                            .into_iter()
                            .next()
                            .map(|p| p.codes)
                            .unwrap_or_default(),
                    );
                }
                let s: Vec<u64> = stride(&parts).into_iter().map(|x| x as u64).collect();
                let mut out = crate::mem::filled(n, 0u64, "join keys");
                out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| {
                    for (j, o) in o.iter_mut().enumerate() {
                        let r = b * BLOCK + j;
                        if hit.get(r) {
                            *o = parts.iter().zip(&s).fold(0u64, |acc, (p, &s)| {
                                acc.wrapping_add(p.codes[r].wrapping_mul(s))
                            });
                        }
                    }
                });
                Packed::U64(out)
            }
            Some(_) => {
                let s = stride(&parts);
                let mut out = crate::mem::filled(n, 0u128, "join keys");
                out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| {
                    for (j, o) in o.iter_mut().enumerate() {
                        let r = b * BLOCK + j;
                        if hit.get(r) {
                            *o = parts.iter().zip(&s).fold(0u128, |acc, (p, &s)| {
                                acc.wrapping_add((p.codes[r] as u128).wrapping_mul(s))
                            });
                        }
                    }
                });
                Packed::U128(out)
            }
            None => Packed::Wide(parts.into_iter().map(|p| p.codes).collect()),
        }
    }

    #[inline]
    fn hash(&self, r: usize) -> u64 {
        match self {
            Packed::U64(k) => hash_u64(k[r]),
            Packed::U128(k) => hash_u128(k[r]),
            Packed::Wide(c) => c.iter().fold(0u64, |acc, col| hash_u64(acc ^ col[r])),
        }
    }

    /// Row `a` of `self` equals row `b` of `other`.
    #[inline]
    fn eq(&self, a: usize, other: &Packed, b: usize) -> bool {
        match (self, other) {
            (Packed::U64(x), Packed::U64(y)) => x[a] == y[b],
            (Packed::U128(x), Packed::U128(y)) => x[a] == y[b],
            (Packed::Wide(x), Packed::Wide(y)) => x.iter().zip(y).all(|(x, y)| x[a] == y[b]),
            _ => false,
        }
    }

    /// The keys of rows `rows`, in that order.
    fn take(&self, rows: &[u32]) -> Packed {
        match self {
            Packed::U64(k) => Packed::U64(rows.iter().map(|&r| k[r as usize]).collect()),
            Packed::U128(k) => Packed::U128(rows.iter().map(|&r| k[r as usize]).collect()),
            Packed::Wide(c) => Packed::Wide(
                c.iter()
                    .map(|col| rows.iter().map(|&r| col[r as usize]).collect())
                    .collect(),
            ),
        }
    }
}

/// Per hash partition of the build rows: a table of local group ids (each row's written to
/// `gid`) and each group's first row. `eq(a, b)`: rows `a` and `b` have equal keys.
fn group_partitions(
    rows: &crate::parallel::Partitions,
    hashes: &[u64],
    gid: &mut [u32],
    eq: impl Fn(usize, usize) -> bool + Sync,
) -> Vec<(HashTable<u32>, Vec<u32>)> {
    let out = DisjointSlice::new(gid);
    (0..rows.len())
        .into_par_iter()
        .map(|p| {
            crate::cancel::point();
            let part = rows.part(p);
            let mut table: HashTable<u32> = HashTable::with_capacity(part.len());
            let mut first: Vec<u32> = Vec::with_capacity(part.len());
            for &r in part {
                let r = r as usize;
                let h = hashes[r];
                let g = match table.find(h, |&g| eq(first[g as usize] as usize, r)) {
                    Some(&g) => g,
                    None => {
                        let g = first.len() as u32;
                        first.push(r as u32);
                        table.insert_unique(h, g, |&g| hashes[first[g as usize] as usize]);
                        g
                    }
                };
                // SAFETY: every row is in exactly one partition.
                unsafe { out.write(r, g) };
            }
            (table, first)
        })
        .collect()
}

/// The hashed build: per partition a table of local group ids; group `base[p] + l`'s key
/// is `keys[base[p] + l]`.
struct Hashed {
    tables: Vec<HashTable<u32>>,
    base: Vec<u32>,
    keys: Packed,
}

impl Combine {
    /// The build rows' group ids and the number of groups.
    fn build(parts: Vec<Part>, n: usize, hit: &Hit) -> (Combine, Vec<u32>, usize) {
        let card = parts
            .iter()
            .try_fold(1u128, |acc, p| acc.checked_mul(p.card.max(1)));
        let empty = parts.iter().any(|p| p.card == 0);
        if let Some(c) = card
            && (c <= direct_limit(n) || empty)
            && c < NONE as u128
        {
            let mut strides = vec![1u64; parts.len()];
            for i in (0..parts.len().saturating_sub(1)).rev() {
                strides[i] = strides[i + 1] * parts[i + 1].card.max(1) as u64;
            }
            let combine = Combine::Direct { strides };
            let gids = combine.gids(&parts, n, hit);
            let card = if empty { 0 } else { c as usize };
            let gids = if empty { vec![NONE; n] } else { gids };
            return (combine, gids, card);
        }
        let keys = Packed::new(parts, n, hit);
        let hashes: Vec<u64> = (0..n)
            .into_par_iter()
            .map(|r| if hit.get(r) { keys.hash(r) } else { 0 })
            .collect();
        let nparts = partition_count(n);
        let rows = partition_by(n, nparts, |r| {
            hit.get(r).then(|| partition_of(hashes[r], nparts))
        });
        let mut gid = crate::mem::filled(n, NONE, "join group ids");
        let locals = match &keys {
            Packed::U64(k) => group_partitions(&rows, &hashes, &mut gid, |a, b| k[a] == k[b]),
            Packed::U128(k) => group_partitions(&rows, &hashes, &mut gid, |a, b| k[a] == k[b]),
            Packed::Wide(_) => {
                group_partitions(&rows, &hashes, &mut gid, |a, b| keys.eq(a, &keys, b))
            }
        };
        let mut base = Vec::with_capacity(nparts);
        let mut firsts: Vec<u32> = Vec::new();
        for (_, first) in &locals {
            base.push(firsts.len() as u32);
            firsts.extend_from_slice(first);
        }
        let out = DisjointSlice::new(&mut gid);
        (0..nparts).into_par_iter().for_each(|p| {
            crate::cancel::point();
            for &r in rows.part(p) {
                // SAFETY: as above; each partition rewrites its own rows only.
                unsafe { out.write(r as usize, out.read(r as usize) + base[p]) };
            }
        });
        let card = firsts.len();
        let hashed = Hashed {
            tables: locals.into_iter().map(|(t, _)| t).collect(),
            base,
            keys: keys.take(&firsts),
        };
        (Combine::Hashed(Box::new(hashed)), gid, card)
    }

    /// Group ids of the probe rows.
    fn probe(&self, parts: Vec<Part>, n: usize, hit: &Hit) -> Vec<u32> {
        match self {
            Combine::Direct { .. } => self.gids(&parts, n, hit),
            Combine::Hashed(h) => {
                let keys = Packed::new(parts, n, hit);
                let nparts = h.tables.len();
                let mut gid = crate::mem::filled(n, NONE, "join group ids");
                gid.par_chunks_mut(BLOCK).enumerate().for_each(|(b, gs)| {
                    crate::cancel::point();
                    for (j, g) in gs.iter_mut().enumerate() {
                        let r = b * BLOCK + j;
                        if !hit.get(r) {
                            continue;
                        }
                        let hash = keys.hash(r);
                        let p = partition_of(hash, nparts);
                        let base = h.base[p];
                        if let Some(&l) =
                            h.tables[p].find(hash, |&l| h.keys.eq((base + l) as usize, &keys, r))
                        {
                            *g = base + l;
                        }
                    }
                });
                gid
            }
        }
    }

    /// Direct group ids: the mixed-radix code of every matchable row.
    fn gids(&self, parts: &[Part], n: usize, hit: &Hit) -> Vec<u32> {
        let Combine::Direct { strides } = self else {
            unreachable!("direct only")
        };
        let mut gid = crate::mem::filled(n, NONE, "join group ids");
        if parts.iter().any(|p| p.card == 0) {
            return gid;
        }
        gid.par_chunks_mut(BLOCK).enumerate().for_each(|(b, gs)| {
            crate::cancel::point();
            let base = b * BLOCK;
            match (parts, &hit.0) {
                ([p], None) => {
                    for (g, &c) in gs.iter_mut().zip(&p.codes[base..]) {
                        *g = c as u32;
                    }
                }
                _ => {
                    for (j, g) in gs.iter_mut().enumerate() {
                        let r = base + j;
                        if hit.get(r) {
                            *g = parts
                                .iter()
                                .zip(strides)
                                .fold(0u64, |acc, (p, &s)| acc + p.codes[r] * s)
                                as u32;
                        }
                    }
                }
            }
        });
        gid
    }
}
