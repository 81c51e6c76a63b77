//! Hash join: inner, left, right, outer, semi, anti and cross joins of two tables.
//!
//! # Algorithm
//! 1. **Keys in one code space.** Each key column pair is encoded as *one* column (the left
//!    chunks followed by the right chunks, see [`crate::keys::encode::dense_codes`]), so equal
//!    values get equal codes on both sides whatever their physical types (integers of any
//!    width by value, dictionary next to plain strings, NaN == NaN, -0.0 == 0.0). Several
//!    columns are packed into one `u64` / `u128` per row, or kept as code vectors.
//! 2. **Group ids.** Every row gets the id `gid` of its key among the keys of the *build*
//!    side, or [`NONE`] when its key cannot match (absent from the build side, or null with
//!    `nulls_equal=false`):
//!    * *dense*: a packed single-`u64` key whose code space is not much larger than the
//!      input is its own id — integers are offset by their minimum and strings are interned,
//!      so most real keys land here and need no hash table at all;
//!    * *hashed*: the build side (the smaller one) is hashed once, scattered into hash
//!      partitions and one hash table is built per partition in parallel; the probe side
//!      looks its keys up in parallel.
//! 3. **Emission.** The rows of the side whose matches must follow its order are grouped by
//!    id with a stable parallel counting sort ([`Csr`]); the driving side is then walked in
//!    fixed blocks: the block's output size is counted, a prefix sum gives every block its
//!    output range, and the pairs are written in parallel. Output order therefore depends only
//!    on the data: inner/left/semi/anti follow the left order with each left row's matches in
//!    right order; right follows the right order with matches in left order; outer is the
//!    left join followed by the unmatched right rows in right order.
//! 4. **Gather.** Output columns are gathered from both inputs by the typed gathers of
//!    [`crate::gather`] (a [`NULL_ROW`] index gives a null); the key columns of right and
//!    outer joins are coalesced (left value where the left row exists, else the right one).

pub mod stream;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use arrow_array::{Array, ArrayRef, BooleanArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hashbrown::HashTable;
use rayon::prelude::*;

use crate::dedup::{hash_u64, hash_u128};
use crate::error::{Error, Result};
use crate::gather::{Gatherer, NULL_ROW, batch, pieces};
use crate::keys::encode::{dense_codes, validity};
use crate::keys::intern::{ByteChunk, ByteColumn, hash_bytes, intern};
use crate::keys::{CodeMode, KeyCodes, Keys, pack, packed_card};
use crate::parallel::{BLOCK, DisjointSlice, partition_by, partition_count, partition_of};
use crate::table::{MAX_ROWS, Table, locatable};

/// "This row matches nothing."
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    Left,
    Right,
    Outer,
    Semi,
    Anti,
    Cross,
}

impl std::str::FromStr for JoinType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "inner" => JoinType::Inner,
            "left" => JoinType::Left,
            "right" => JoinType::Right,
            "outer" | "full" => JoinType::Outer,
            "semi" => JoinType::Semi,
            "anti" => JoinType::Anti,
            "cross" => JoinType::Cross,
            _ => {
                return Err(Error::Value(format!(
                    "how must be one of \"inner\", \"left\", \"right\", \"outer\", \"semi\", \
                     \"anti\", \"cross\"; got {s:?}"
                )));
            }
        })
    }
}

/// Which sides' keys must be unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validate {
    OneToOne,
    OneToMany,
    ManyToOne,
    ManyToMany,
}

impl std::str::FromStr for Validate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "1:1" | "one_to_one" => Validate::OneToOne,
            "1:m" | "one_to_many" => Validate::OneToMany,
            "m:1" | "many_to_one" => Validate::ManyToOne,
            "m:m" | "many_to_many" => Validate::ManyToMany,
            _ => {
                return Err(Error::Value(format!(
                    "validate must be \"1:1\", \"1:m\", \"m:1\" or \"m:m\", got {s:?}"
                )));
            }
        })
    }
}

/// Everything but the two tables.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    pub how: JoinType,
    pub left_on: Vec<String>,
    pub right_on: Vec<String>,
    pub suffix: String,
    pub nulls_equal: bool,
    pub validate: Option<Validate>,
    pub max_output_rows: Option<u64>,
}

impl JoinOptions {
    pub fn new(how: JoinType, left_on: Vec<String>, right_on: Vec<String>) -> Self {
        JoinOptions {
            how,
            left_on,
            right_on,
            suffix: "_right".into(),
            nulls_equal: false,
            validate: None,
            max_output_rows: None,
        }
    }
}

/// Matched row pairs: `left[i]` and `right[i]` form output row `i`; [`NULL_ROW`] marks a
/// missing side (left / right / outer joins). Semi and anti joins leave `right` empty.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JoinIndices {
    pub left: Vec<u32>,
    pub right: Vec<u32>,
}

/// The joined table.
pub fn join(left: &Table, right: &Table, opts: &JoinOptions) -> Result<Table> {
    let (plan, key_pairs) = Plan::new(left, right, opts)?;
    let idx = indices_for(left, right, opts, &key_pairs)?;
    plan.materialize(left, right, &idx)
}

/// The row pairs of the join, in output order.
pub fn join_indices(left: &Table, right: &Table, opts: &JoinOptions) -> Result<JoinIndices> {
    let key_pairs = check_keys(left, right, opts)?;
    indices_for(left, right, opts, &key_pairs)
}

/// [`join_indices`] for key pairs already checked by [`check_keys`].
fn indices_for(
    left: &Table,
    right: &Table,
    opts: &JoinOptions,
    key_pairs: &[(usize, usize)],
) -> Result<JoinIndices> {
    let (n_l, n_r) = (left.checked_num_rows()?, right.checked_num_rows()?);
    if opts.how == JoinType::Cross {
        return cross(n_l, n_r, opts.max_output_rows);
    }
    if opts.validate.is_none()
        && let [(li, ri)] = key_pairs[..]
        && let Some(gids) = byte_gids(left, right, li, ri, opts.nulls_equal)?
    {
        return emit(&gids, opts.how, opts.max_output_rows);
    }
    let keys = JoinKeys::encode(left, right, key_pairs, opts.nulls_equal)?;
    if let Some(v) = opts.validate {
        let (l_unique, r_unique) = match v {
            Validate::OneToOne => (true, true),
            Validate::OneToMany => (true, false),
            Validate::ManyToOne => (false, true),
            Validate::ManyToMany => (false, false),
        };
        for (side, must) in [(Side::Left, l_unique), (Side::Right, r_unique)] {
            if must && let Some(row) = keys.first_duplicate(side) {
                let (t, names) = match side {
                    Side::Left => (left, &opts.left_on),
                    Side::Right => (right, &opts.right_on),
                };
                return Err(Error::Value(format!(
                    "validate={:?}: the {} keys are not unique: {} occurs more than once \
                     (again at row {row})",
                    match v {
                        Validate::OneToOne => "1:1",
                        Validate::OneToMany => "1:m",
                        _ => "m:1",
                    },
                    side.name(),
                    describe_key(t, names, row)?
                )));
            }
        }
    }
    let gids = keys.gids();
    emit(&gids, opts.how, opts.max_output_rows)
}

#[derive(Clone, Copy)]
enum Side {
    Left,
    Right,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// `(left column, right column)` positions of each key pair, after checking names, counts
/// and type compatibility.
fn check_keys(left: &Table, right: &Table, opts: &JoinOptions) -> Result<Vec<(usize, usize)>> {
    let (lo, ro) = (&opts.left_on, &opts.right_on);
    if opts.how == JoinType::Cross {
        if !lo.is_empty() || !ro.is_empty() {
            return Err(Error::Value(
                "a cross join takes no keys (on / left_on / right_on)".into(),
            ));
        }
        return Ok(Vec::new());
    }
    if lo.is_empty() || ro.is_empty() {
        return Err(Error::Value(format!(
            "a {:?} join needs keys: pass on= or left_on= and right_on=",
            opts.how
        )));
    }
    if lo.len() != ro.len() {
        return Err(Error::Value(format!(
            "left_on has {} columns but right_on has {}",
            lo.len(),
            ro.len()
        )));
    }
    lo.iter()
        .zip(ro)
        .map(|(l, r)| {
            let side = |t: &Table, name: &str, which: &str| {
                t.index_of(name).map_err(|e| match e {
                    Error::ColumnNotFound(m) => Error::ColumnNotFound(m.replacen(
                        " not found",
                        &format!(" not found in the {which} table"),
                        1,
                    )),
                    Error::Value(m) => Error::Value(m.replacen(
                        " is ambiguous",
                        &format!(" is ambiguous in the {which} table"),
                        1,
                    )),
                    e => e,
                })
            };
            let (li, ri) = (side(left, l, "left")?, side(right, r, "right")?);
            let (lt, rt) = (
                left.schema.field(li).data_type(),
                right.schema.field(ri).data_type(),
            );
            if !compatible(lt, rt) {
                return Err(Error::Type(format!(
                    "cannot join left column {l:?} of type {lt} with right column {r:?} of \
                     type {rt}: key types must match (integers of any width, and string \
                     layouts, are compatible)"
                )));
            }
            Ok((li, ri))
        })
        .collect()
}

/// The logical family of a key type, for compatibility checks.
#[derive(PartialEq, Eq)]
enum Family {
    Int,
    Float,
    Str,
    Bin,
    /// Anything else must match exactly.
    Exact(DataType),
}

fn family(dt: &DataType) -> Family {
    use DataType as D;
    match dt {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            Family::Int
        }
        D::Float16 | D::Float32 | D::Float64 => Family::Float,
        D::Utf8 | D::LargeUtf8 | D::Utf8View => Family::Str,
        D::Binary | D::LargeBinary | D::BinaryView => Family::Bin,
        D::Dictionary(_, v) => family(v),
        other => Family::Exact(other.clone()),
    }
}

fn compatible(a: &DataType, b: &DataType) -> bool {
    family(a) == family(b)
}

/// The type of a coalesced key column: the narrowest type holding both sides.
fn coalesced_type(l: &DataType, r: &DataType, names: (&str, &str)) -> Result<DataType> {
    use DataType as D;
    if l == r {
        return Ok(l.clone());
    }
    let value = |d: &DataType| match d {
        D::Dictionary(_, v) => v.as_ref().clone(),
        d => d.clone(),
    };
    let (lv, rv) = (value(l), value(r));
    if lv == rv {
        return Ok(lv);
    }
    Ok(match family(&lv) {
        Family::Int => {
            let (ls, lb) = int_shape(&lv);
            let (rs, rb) = int_shape(&rv);
            if ls == rs {
                int_type(ls, lb.max(rb))
            } else {
                // Signed type holding an unsigned one of `u` bits needs `u + 1` bits.
                let (sb, ub) = if ls { (lb, rb) } else { (rb, lb) };
                if ub == 64 {
                    return Err(Error::Type(format!(
                        "cannot coalesce join keys {:?} ({l}) and {:?} ({r}): no integer type \
                         holds both uint64 and signed values",
                        names.0, names.1
                    )));
                }
                int_type(true, sb.max(ub * 2))
            }
        }
        Family::Float => D::Float64,
        Family::Str if lv == D::LargeUtf8 || rv == D::LargeUtf8 => D::LargeUtf8,
        Family::Str => D::Utf8,
        Family::Bin if lv == D::LargeBinary || rv == D::LargeBinary => D::LargeBinary,
        Family::Bin => D::Binary,
        Family::Exact(d) => d,
    })
}

fn int_shape(d: &DataType) -> (bool, u32) {
    use DataType as D;
    match d {
        D::Int8 => (true, 8),
        D::Int16 => (true, 16),
        D::Int32 => (true, 32),
        D::Int64 => (true, 64),
        D::UInt8 => (false, 8),
        D::UInt16 => (false, 16),
        D::UInt32 => (false, 32),
        _ => (false, 64),
    }
}

fn int_type(signed: bool, bits: u32) -> DataType {
    use DataType as D;
    match (signed, bits) {
        (true, 8) => D::Int8,
        (true, 16) => D::Int16,
        (true, 32) => D::Int32,
        (true, _) => D::Int64,
        (false, 8) => D::UInt8,
        (false, 16) => D::UInt16,
        (false, 32) => D::UInt32,
        (false, _) => D::UInt64,
    }
}

/// The key of `row` of `t` as text, for error messages.
fn describe_key(t: &Table, names: &[String], row: usize) -> Result<String> {
    let mut parts = Vec::new();
    for name in names {
        let chunks = t.chunks(t.index_of(name)?);
        let mut r = row;
        for c in &chunks {
            if r < c.len() {
                let f = arrow_cast::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &arrow_cast::display::FormatOptions::default().with_null("null"),
                )?;
                parts.push(format!("{name}={}", f.value(r)));
                break;
            }
            r -= c.len();
        }
    }
    Ok(format!("key ({})", parts.join(", ")))
}

/// Packed keys of both sides in one code space: rows `0..n_l` are the left rows, then the
/// right rows.
struct JoinKeys {
    keys: Keys,
    /// `Some(v)`: `v[row]` is true where some key column is null (only kept when nulls
    /// match nothing).
    null_rows: Option<Vec<bool>>,
    /// Packed code space when it is a single `u64` range.
    card: Option<u128>,
    n_l: usize,
    n_r: usize,
}

impl JoinKeys {
    fn encode(
        left: &Table,
        right: &Table,
        pairs: &[(usize, usize)],
        nulls_equal: bool,
    ) -> Result<Self> {
        let (n_l, n_r) = (left.num_rows(), right.num_rows());
        let mut null_rows: Option<Vec<bool>> = None;
        let mut cols = Vec::with_capacity(pairs.len());
        for &(li, ri) in pairs {
            let mut chunks = left.chunks(li);
            chunks.extend(right.chunks(ri));
            let name = left.schema.field(li).name();
            let d = dense_codes(name, &chunks, false)?;
            if !nulls_equal && let Some(valid) = &d.valid {
                match &mut null_rows {
                    None => null_rows = Some(valid.par_iter().map(|v| !v).collect()),
                    Some(nr) => nr
                        .par_iter_mut()
                        .zip(valid.par_iter())
                        .for_each(|(n, v)| *n |= !v),
                }
            }
            cols.push(KeyCodes::new(d, CodeMode::Equality));
        }
        let card = packed_card(&cols);
        let keys = pack(cols, n_l + n_r, 0);
        Ok(JoinKeys {
            keys,
            null_rows,
            card,
            n_l,
            n_r,
        })
    }

    #[inline]
    fn is_null(&self, row: usize) -> bool {
        self.null_rows.as_ref().is_some_and(|v| v[row])
    }

    #[inline]
    fn hash(&self, row: usize) -> u64 {
        match &self.keys {
            Keys::U64(k) => hash_u64(k[row]),
            Keys::U128(k) => hash_u128(k[row]),
            Keys::Wide(c) => c.iter().fold(0u64, |acc, col| hash_u64(acc ^ col[row])),
        }
    }

    #[inline]
    fn eq(&self, a: usize, b: usize) -> bool {
        match &self.keys {
            Keys::U64(k) => k[a] == k[b],
            Keys::U128(k) => k[a] == k[b],
            Keys::Wide(c) => c.iter().all(|col| col[a] == col[b]),
        }
    }

    fn range(&self, side: Side) -> std::ops::Range<usize> {
        match side {
            Side::Left => 0..self.n_l,
            Side::Right => self.n_l..self.n_l + self.n_r,
        }
    }

    /// Group ids of both sides.
    fn gids(&self) -> Gids {
        let total = self.n_l + self.n_r;
        match (&self.keys, self.card) {
            (Keys::U64(k), Some(card))
                if card <= 2 * total as u128 + 4096 && card < NONE as u128 =>
            {
                let mut gid = crate::mem::filled(k.len(), NONE, "join group ids");
                gid.par_chunks_mut(BLOCK)
                    .zip(k.par_chunks(BLOCK))
                    .enumerate()
                    .for_each(|(b, (out, codes))| {
                        crate::cancel::point();
                        for (row, (o, &c)) in (b * BLOCK..).zip(out.iter_mut().zip(codes)) {
                            if !self.is_null(row) {
                                *o = c as u32;
                            }
                        }
                    });
                Gids::split(gid, self.n_l, card as usize)
            }
            _ => self.hashed_gids(),
        }
    }

    /// Group ids from hash tables over the smaller side.
    fn hashed_gids(&self) -> Gids {
        let (build, probe) = if self.n_r <= self.n_l {
            (Side::Right, Side::Left)
        } else {
            (Side::Left, Side::Right)
        };
        let (b, p) = (self.range(build), self.range(probe));
        let mut hashes: Vec<u64> = crate::mem::with_capacity(b.len(), "key hashes");
        b.clone()
            .into_par_iter()
            .map(|r| self.hash(r))
            .collect_into_vec(&mut hashes);
        let nparts = partition_count(b.len());
        let parts = partition_by(b.len(), nparts, |i| {
            (!self.is_null(b.start + i)).then(|| partition_of(hashes[i], nparts))
        });
        let mut gid = crate::mem::filled(self.n_l + self.n_r, NONE, "join group ids");
        let out = DisjointSlice::new(&mut gid);
        // Per partition: a table of local group ids, and each group's (hash, first row).
        let tables: Vec<PartTable> = (0..nparts)
            .into_par_iter()
            .map(|p| {
                crate::cancel::point();
                let mut table: HashTable<u32> = HashTable::new();
                let mut groups: Vec<(u64, u32)> = Vec::new();
                for &i in parts.part(p) {
                    let row = b.start + i as usize;
                    let h = hashes[i as usize];
                    let g = match table.find(h, |&g| self.eq(groups[g as usize].1 as usize, row)) {
                        Some(&g) => g,
                        None => {
                            let g = groups.len() as u32;
                            groups.push((h, row as u32));
                            table.insert_unique(h, g, |&g| groups[g as usize].0);
                            g
                        }
                    };
                    // SAFETY: every build row is in exactly one partition.
                    unsafe { out.write(row, g) };
                }
                (table, groups)
            })
            .collect();
        let mut base = Vec::with_capacity(nparts + 1);
        let mut acc = 0usize;
        for (_, g) in &tables {
            base.push(acc);
            acc += g.len();
        }
        let card = acc;
        // Make build gids global.
        let out = DisjointSlice::new(&mut gid);
        (0..nparts).into_par_iter().for_each(|p| {
            crate::cancel::point();
            for &i in parts.part(p) {
                let row = b.start + i as usize;
                // SAFETY: as above; reads and writes the partition's own rows only.
                unsafe { out.write(row, out.read(row) + base[p] as u32) };
            }
        });
        drop(parts);
        // Probe.
        gid[p.clone()]
            .par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(blk, g)| {
                crate::cancel::point();
                for (j, g) in g.iter_mut().enumerate() {
                    let row = p.start + blk * BLOCK + j;
                    if self.is_null(row) {
                        continue;
                    }
                    let h = self.hash(row);
                    let part = partition_of(h, nparts);
                    let (table, groups) = &tables[part];
                    if let Some(&lg) =
                        table.find(h, |&lg| self.eq(groups[lg as usize].1 as usize, row))
                    {
                        *g = base[part] as u32 + lg;
                    }
                }
            });
        Gids::split(gid, self.n_l, card)
    }

    /// The first row (counted within `side`) whose key occurred earlier on that side, if any.
    /// Null keys count as equal when they match (`nulls_equal`), else they are skipped.
    fn first_duplicate(&self, side: Side) -> Option<usize> {
        let r = self.range(side);
        let mut hashes: Vec<u64> = crate::mem::with_capacity(r.len(), "key hashes");
        r.clone()
            .into_par_iter()
            .map(|i| self.hash(i))
            .collect_into_vec(&mut hashes);
        let nparts = partition_count(r.len());
        let parts = partition_by(r.len(), nparts, |i| {
            (!self.is_null(r.start + i)).then(|| partition_of(hashes[i], nparts))
        });
        (0..nparts)
            .into_par_iter()
            .filter_map(|p| {
                crate::cancel::point();
                let mut table: HashTable<u32> = HashTable::new();
                for &i in parts.part(p) {
                    let h = hashes[i as usize];
                    let row = r.start + i as usize;
                    if table
                        .find(h, |&j| self.eq(r.start + j as usize, row))
                        .is_some()
                    {
                        return Some(i as usize);
                    }
                    table.insert_unique(h, i, |&j| hashes[j as usize]);
                }
                None
            })
            .min()
    }
}

/// One hash partition of the build side: a table of local group ids, and each group's
/// (hash, first row).
type PartTable = (HashTable<u32>, Vec<(u64, u32)>);

/// Group ids for a single byte-string key pair (utf8 / large_utf8 / utf8_view / binary of
/// any layout on either side), without encoding the larger side at all: the smaller (build)
/// side is interned, its distinct values go into hash-partitioned tables, and every probe row
/// hashes its bytes once and looks them up. `None` when the columns are not byte strings.
fn byte_gids(
    left: &Table,
    right: &Table,
    li: usize,
    ri: usize,
    nulls_equal: bool,
) -> Result<Option<Gids>> {
    let (lc, rc) = (left.chunks(li), right.chunks(ri));
    if !lc.iter().chain(&rc).all(|c| ByteChunk::new(c).is_some()) {
        return Ok(None);
    }
    let (n_l, n_r) = (left.num_rows(), right.num_rows());
    let build_left = n_l < n_r;
    let (bchunks, pchunks, nb, np) = if build_left {
        (lc, rc, n_l, n_r)
    } else {
        (rc, lc, n_r, n_l)
    };
    let bvalid = validity(&bchunks, nb);
    let dt = bchunks
        .first()
        .map_or(DataType::Utf8, |c| c.data_type().clone());
    let (bchunks, at) = locatable(bchunks, &dt)?;
    let bcol = ByteColumn::new(bchunks.iter().filter_map(ByteChunk::new).collect(), at);
    let interned = intern(&bcol, nb, bvalid.as_deref());
    let card = interned.reps.len();
    // With nulls_equal, every null row of both sides is group `card`.
    let null_gid = if nulls_equal { card as u32 } else { NONE };
    let mut bgid: Vec<u32> = interned.ids.iter().map(|&id| id as u32).collect();
    if let Some(v) = &bvalid {
        bgid.par_iter_mut().zip(v.par_iter()).for_each(|(g, &ok)| {
            if !ok {
                *g = null_gid;
            }
        });
    }
    // Hash-partitioned tables over the distinct build values.
    let hs: Vec<u64> = interned
        .reps
        .par_iter()
        .map(|&r| hash_bytes(bcol.value(r as usize)))
        .collect();
    let nparts = partition_count(card);
    let parts = partition_by(card, nparts, |id| Some(partition_of(hs[id], nparts)));
    let tables: Vec<HashTable<u32>> = (0..nparts)
        .into_par_iter()
        .map(|p| {
            crate::cancel::point();
            let ids = parts.part(p);
            let mut t = HashTable::with_capacity(ids.len());
            for &id in ids {
                t.insert_unique(hs[id as usize], id, |&i| hs[i as usize]);
            }
            t
        })
        .collect();
    let reps = &interned.reps;
    // Probe chunk by chunk.
    let mut pgid = vec![NONE; np];
    let mut rest = pgid.as_mut_slice();
    for c in &pchunks {
        let (head, tail) = rest.split_at_mut(c.len());
        rest = tail;
        let bc = ByteChunk::new(c).expect("checked above");
        let nulls = c.logical_nulls();
        head.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(blk, out)| {
                crate::cancel::point();
                for (j, g) in out.iter_mut().enumerate() {
                    let r = blk * BLOCK + j;
                    if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                        *g = null_gid;
                        continue;
                    }
                    let v = bc.value(r);
                    let h = hash_bytes(v);
                    if let Some(&id) = tables[partition_of(h, nparts)]
                        .find(h, |&id| bcol.value(reps[id as usize] as usize) == v)
                    {
                        *g = id;
                    }
                }
            });
    }
    let card = card + usize::from(nulls_equal);
    Ok(Some(if build_left {
        Gids {
            left: bgid,
            right: pgid,
            card,
        }
    } else {
        Gids {
            left: pgid,
            right: bgid,
            card,
        }
    }))
}

/// Group ids of both sides in `0..card`, or [`NONE`].
struct Gids {
    left: Vec<u32>,
    right: Vec<u32>,
    card: usize,
}

impl Gids {
    fn split(mut all: Vec<u32>, n_l: usize, card: usize) -> Self {
        let right = all.split_off(n_l);
        Gids {
            left: all,
            right,
            card,
        }
    }
}

/// Rows grouped by group id, each group's rows in increasing order.
enum Csr {
    /// Every group has at most one row (a key unique on this side — the usual dimension
    /// table): `row[g]`, or [`NONE`].
    Unique(Vec<u32>),
    /// `rows[offsets[g]..offsets[g + 1]]` hold group `g`.
    Groups { offsets: Vec<u32>, rows: Vec<u32> },
}

impl Csr {
    fn build(gid: &[u32], card: usize) -> Self {
        Self::unique(gid, card).unwrap_or_else(|| Self::groups(gid, card))
    }

    /// One parallel pass claiming `row[g]` per row; `None` as soon as a group has two rows.
    fn unique(gid: &[u32], card: usize) -> Option<Self> {
        let mut row = crate::mem::filled(card, NONE, "join groups");
        let cells: &[AtomicU32] =
            // SAFETY: `AtomicU32` has the same size, alignment and bit validity as `u32`, and
            // `row` is exclusively borrowed for as long as `cells` lives.
            unsafe { &*(row.as_mut_slice() as *mut [u32] as *const [AtomicU32]) };
        let dup = AtomicBool::new(false);
        gid.par_chunks(BLOCK).enumerate().for_each(|(b, gs)| {
            crate::cancel::point();
            if dup.load(Ordering::Relaxed) {
                return;
            }
            for (j, &g) in gs.iter().enumerate() {
                if g != NONE
                    && cells[g as usize]
                        .compare_exchange(
                            NONE,
                            (b * BLOCK + j) as u32,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_err()
                {
                    dup.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        (!dup.into_inner()).then_some(Csr::Unique(row))
    }

    /// Stable parallel counting sort of the rows by `gid` (rows with [`NONE`] left out):
    /// rows are first scattered into contiguous gid ranges (partitions), then every
    /// partition sorts its rows locally.
    fn groups(gid: &[u32], card: usize) -> Self {
        let nparts = partition_count(gid.len()).min(card.max(1));
        let part_of = |g: u32| (g as u64 * nparts as u64 / card.max(1) as u64) as usize;
        // First gid of partition p: the smallest g with part_of(g) >= p.
        let lo = |p: usize| (p as u64 * card as u64).div_ceil(nparts as u64) as usize;
        let parts = partition_by(gid.len(), nparts, |r| {
            let g = gid[r];
            (g != NONE).then(|| part_of(g))
        });
        let mut offsets = vec![0u32; card + 1];
        let mut rows = crate::mem::filled(parts.rows.len(), 0u32, "join build rows");
        let off = DisjointSlice::new(&mut offsets);
        let out = DisjointSlice::new(&mut rows);
        (0..parts.len()).into_par_iter().for_each(|p| {
            crate::cancel::point();
            let (g0, g1) = (lo(p), lo(p + 1));
            let mut count = vec![0u32; g1 - g0];
            let prows = parts.part(p);
            for &r in prows {
                count[gid[r as usize] as usize - g0] += 1;
            }
            let mut acc = parts.offsets[p] as u32;
            for (k, c) in count.iter_mut().enumerate() {
                // SAFETY: partitions own disjoint gid ranges of `offsets`.
                unsafe { off.write(g0 + k, acc) };
                let n = *c;
                *c = acc;
                acc += n;
            }
            for &r in prows {
                let k = gid[r as usize] as usize - g0;
                // SAFETY: positions of partition p lie in its own range of `rows`.
                unsafe { out.write(count[k] as usize, r) };
                count[k] += 1;
            }
        });
        offsets[card] = rows.len() as u32;
        Csr::Groups { offsets, rows }
    }

    #[inline]
    fn group(&self, g: u32) -> &[u32] {
        if g == NONE {
            return &[];
        }
        let g = g as usize;
        match self {
            Csr::Unique(row) if row[g] == NONE => &[],
            Csr::Unique(row) => std::slice::from_ref(&row[g]),
            Csr::Groups { offsets, rows } => &rows[offsets[g] as usize..offsets[g + 1] as usize],
        }
    }
}

/// `flags[g]`: some row has group id `g`.
fn present(gid: &[u32], card: usize) -> Vec<bool> {
    let mut flags = crate::mem::filled(card, false, "join group flags");
    let cells: &[AtomicBool] =
        // SAFETY: `AtomicBool` has the same size, alignment and bit validity as `bool`, and
        // `flags` is exclusively borrowed for as long as `cells` lives.
        unsafe { &*(flags.as_mut_slice() as *mut [bool] as *const [AtomicBool]) };
    gid.par_chunks(BLOCK).for_each(|gs| {
        crate::cancel::point();
        for &g in gs {
            if g != NONE {
                cells[g as usize].store(true, Ordering::Relaxed);
            }
        }
    });
    flags
}

fn check_size(rows: u128, max: Option<u64>) -> Result<()> {
    if let Some(max) = max
        && rows > max as u128
    {
        return Err(Error::Value(format!(
            "the join would produce {rows} rows, more than max_output_rows={max}"
        )));
    }
    Ok(())
}

/// Row pairs in output order from the group ids.
fn emit(g: &Gids, how: JoinType, max: Option<u64>) -> Result<JoinIndices> {
    match how {
        JoinType::Semi | JoinType::Anti => {
            let has = present(&g.right, g.card);
            let want = how == JoinType::Semi;
            let left: Vec<u32> = g
                .left
                .par_iter()
                .enumerate()
                .filter(|&(_, &gid)| (gid != NONE && has[gid as usize]) == want)
                .map(|(i, _)| i as u32)
                .collect();
            check_size(left.len() as u128, max)?;
            Ok(JoinIndices {
                left,
                right: Vec::new(),
            })
        }
        JoinType::Right => {
            let csr = Csr::build(&g.left, g.card);
            let (right, left) = driven(&g.right, &csr, true, 0, max)?;
            Ok(JoinIndices { left, right })
        }
        JoinType::Inner | JoinType::Left | JoinType::Outer => {
            let csr = Csr::build(&g.right, g.card);
            let unmatched_right: Vec<u32> = if how == JoinType::Outer {
                let has = present(&g.left, g.card);
                g.right
                    .par_iter()
                    .enumerate()
                    .filter(|&(_, &gid)| gid == NONE || !has[gid as usize])
                    .map(|(j, _)| j as u32)
                    .collect()
            } else {
                Vec::new()
            };
            let extra = unmatched_right.len();
            let (mut left, mut right) = driven(&g.left, &csr, how != JoinType::Inner, extra, max)?;
            left.resize(left.len() + extra, NULL_ROW);
            right.extend_from_slice(&unmatched_right);
            Ok(JoinIndices { left, right })
        }
        JoinType::Cross => unreachable!("cross joins have no keys"),
    }
}

/// Walk the driving side's rows in order; each row is paired with its group's rows in
/// `csr` (in their order), or with [`NULL_ROW`] when it has none and `keep_unmatched`.
/// Returns (driving rows, other rows). `extra` rows will be appended by the caller; they
/// count towards `max`.
fn driven(
    drive: &[u32],
    csr: &Csr,
    keep_unmatched: bool,
    extra: usize,
    max: Option<u64>,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let out_len = |g: u32| {
        let m = csr.group(g).len();
        if m == 0 && keep_unmatched { 1 } else { m }
    };
    let sizes: Vec<usize> = drive
        .par_chunks(BLOCK)
        .map(|b| {
            crate::cancel::point();
            b.iter().map(|&g| out_len(g)).sum()
        })
        .collect();
    let mut starts = Vec::with_capacity(sizes.len());
    let mut total = 0usize;
    for s in &sizes {
        starts.push(total);
        total += s;
    }
    check_size(total as u128 + extra as u128, max)?;
    let mut a = crate::mem::filled(total, 0u32, "join output row pairs");
    let mut b = crate::mem::filled(total, 0u32, "join output row pairs");
    let (wa, wb) = (DisjointSlice::new(&mut a), DisjointSlice::new(&mut b));
    drive
        .par_chunks(BLOCK)
        .zip(starts.par_iter())
        .enumerate()
        .for_each(|(blk, (gs, &start))| {
            crate::cancel::point();
            let mut pos = start;
            for (j, &g) in gs.iter().enumerate() {
                let row = (blk * BLOCK + j) as u32;
                let group = csr.group(g);
                // SAFETY: block `blk` owns `start..start + sizes[blk]`.
                unsafe {
                    if group.is_empty() {
                        if keep_unmatched {
                            wa.write(pos, row);
                            wb.write(pos, NULL_ROW);
                            pos += 1;
                        }
                    } else {
                        for &o in group {
                            wa.write(pos, row);
                            wb.write(pos, o);
                            pos += 1;
                        }
                    }
                }
            }
        });
    Ok((a, b))
}

/// Left-major cross product.
fn cross(n_l: usize, n_r: usize, max: Option<u64>) -> Result<JoinIndices> {
    let total = n_l as u128 * n_r as u128;
    check_size(total, max)?;
    if total > MAX_ROWS as u128 * 4 {
        return Err(Error::Value(format!(
            "the cross join would produce {total} rows; pass max_output_rows to confirm \
             outputs this large are intended, or filter first"
        )));
    }
    let total = total as usize;
    let left = (0..total)
        .into_par_iter()
        .map(|i| (i / n_r.max(1)) as u32)
        .collect();
    let right = (0..total)
        .into_par_iter()
        .map(|i| (i % n_r.max(1)) as u32)
        .collect();
    Ok(JoinIndices { left, right })
}

/// Output schema and column sources, worked out (and checked) before any data is touched.
struct Plan {
    schema: SchemaRef,
    /// Left column positions of the key columns to coalesce, with their right positions
    /// and output type (right and outer joins only).
    coalesce: Vec<(usize, usize, DataType)>,
    /// Right columns in the output.
    right_cols: Vec<usize>,
    how: JoinType,
}

impl Plan {
    /// The plan, and the checked key pairs (see [`check_keys`]).
    fn new(left: &Table, right: &Table, opts: &JoinOptions) -> Result<(Self, Vec<(usize, usize)>)> {
        let pairs = check_keys(left, right, opts)?;
        let how = opts.how;
        let nullable_left = matches!(how, JoinType::Right | JoinType::Outer);
        let nullable_right = matches!(how, JoinType::Left | JoinType::Outer);
        let mut coalesce = Vec::new();
        if nullable_left {
            for (&(li, ri), (ln, rn)) in pairs.iter().zip(opts.left_on.iter().zip(&opts.right_on)) {
                if coalesce
                    .iter()
                    .any(|c: &(usize, usize, DataType)| c.0 == li)
                {
                    continue;
                }
                let dt = coalesced_type(
                    left.schema.field(li).data_type(),
                    right.schema.field(ri).data_type(),
                    (ln, rn),
                )?;
                coalesce.push((li, ri, dt));
            }
        }
        let mut fields: Vec<Field> = left
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| match coalesce.iter().find(|c| c.0 == i) {
                Some((_, ri, dt)) => f
                    .as_ref()
                    .clone()
                    .with_data_type(dt.clone())
                    .with_nullable(f.is_nullable() || right.schema.field(*ri).is_nullable()),
                None if nullable_left => f.as_ref().clone().with_nullable(true),
                None => f.as_ref().clone(),
            })
            .collect();
        let mut right_cols = Vec::new();
        if !matches!(how, JoinType::Semi | JoinType::Anti) {
            let right_keys: HashSet<usize> = pairs.iter().map(|p| p.1).collect();
            let mut taken: HashSet<String> = fields.iter().map(|f| f.name().clone()).collect();
            let right_names: HashSet<&String> = right
                .schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(i, _)| !right_keys.contains(i))
                .map(|(_, f)| f.name())
                .collect();
            for (i, f) in right.schema.fields().iter().enumerate() {
                if right_keys.contains(&i) {
                    continue;
                }
                let mut name = f.name().clone();
                if taken.contains(&name) {
                    name = format!("{name}{}", opts.suffix);
                    if taken.contains(&name) || right_names.contains(&name) {
                        return Err(Error::Value(format!(
                            "right column {:?} clashes with a left column and its suffixed \
                             name {name:?} is taken too; pass another suffix",
                            f.name()
                        )));
                    }
                }
                taken.insert(name.clone());
                fields.push(
                    f.as_ref()
                        .clone()
                        .with_name(name)
                        .with_nullable(f.is_nullable() || nullable_right),
                );
                right_cols.push(i);
            }
        }
        let plan = Plan {
            schema: Arc::new(Schema::new(fields)),
            coalesce,
            right_cols,
            how,
        };
        Ok((plan, pairs))
    }

    fn materialize(&self, left: &Table, right: &Table, idx: &JoinIndices) -> Result<Table> {
        let n_left_cols = left.schema.fields().len();
        let left_cols: Vec<usize> = (0..n_left_cols).collect();
        let lg = Gatherer::new(left, &left_cols)?;
        // Right gatherer: output columns, then the keys to coalesce.
        let mut rcols = self.right_cols.clone();
        rcols.extend(self.coalesce.iter().map(|c| c.1));
        let rg = Gatherer::new(right, &rcols)?;
        let semi = matches!(self.how, JoinType::Semi | JoinType::Anti);
        // Pieces aligned to the chunks of the side whose rows come in order.
        let ranges = if self.how == JoinType::Right {
            pieces(&idx.right, rg.chunk_starts())
        } else {
            pieces(&idx.left, lg.chunk_starts())
        };
        let batches = ranges
            .into_par_iter()
            .map(|range| {
                crate::cancel::point();
                let lpiece = &idx.left[range.clone()];
                let lat = lg.locate(lpiece);
                let rpiece: &[u32] = if semi { &[] } else { &idx.right[range] };
                let rat = rg.locate(rpiece);
                // Tasks: every left column, then every right output column.
                let n_tasks = n_left_cols + if semi { 0 } else { self.right_cols.len() };
                let mut cols = (0..n_tasks)
                    .into_par_iter()
                    .map(|t| {
                        crate::cancel::point();
                        if t < n_left_cols {
                            lg.gather(t, lpiece, &lat)
                        } else {
                            rg.gather(t - n_left_cols, rpiece, &rat)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                for (c, (li, _, dt)) in self.coalesce.iter().enumerate() {
                    let r = rg.gather(self.right_cols.len() + c, rpiece, &rat)?;
                    cols[*li] = coalesce(&cols[*li], &r, lpiece, dt)?;
                }
                batch(&self.schema, cols, lpiece.len())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Table {
            schema: self.schema.clone(),
            batches,
        })
    }
}

/// `l` where the left row exists, else `r`, as type `dt`.
fn coalesce(l: &ArrayRef, r: &ArrayRef, lpiece: &[u32], dt: &DataType) -> Result<ArrayRef> {
    let cast = |a: &ArrayRef| -> Result<ArrayRef> {
        Ok(if a.data_type() == dt {
            a.clone()
        } else {
            arrow_cast::cast(a, dt)?
        })
    };
    if !lpiece.contains(&NULL_ROW) {
        return cast(l);
    }
    let mask: BooleanArray = lpiece.iter().map(|&i| Some(i != NULL_ROW)).collect();
    Ok(arrow_select::zip::zip(&mask, &cast(l)?, &cast(r)?)?)
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};

    use super::*;

    /// A one-batch table of named columns (also used by the streaming join's tests).
    pub(super) fn table(cols: Vec<(&str, ArrayRef)>) -> Table {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let b =
            RecordBatch::try_new(schema.clone(), cols.into_iter().map(|c| c.1).collect()).unwrap();
        Table::try_new(schema, vec![b]).unwrap()
    }

    fn ints(v: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    fn opts(how: JoinType) -> JoinOptions {
        JoinOptions::new(how, vec!["k".into()], vec!["k".into()])
    }

    #[test]
    fn order_of_every_join_type() {
        // pandas M3: left [3,1,2,1] ⋈ right [1,3,4,1].
        let l = table(vec![("k", ints(&[Some(3), Some(1), Some(2), Some(1)]))]);
        let r = table(vec![("k", ints(&[Some(1), Some(3), Some(4), Some(1)]))]);
        let n = NULL_ROW;
        let cases = [
            (JoinType::Inner, vec![0, 1, 1, 3, 3], vec![1, 0, 3, 0, 3]),
            (
                JoinType::Left,
                vec![0, 1, 1, 2, 3, 3],
                vec![1, 0, 3, n, 0, 3],
            ),
            (
                JoinType::Right,
                vec![1, 3, 0, n, 1, 3],
                vec![0, 0, 1, 2, 3, 3],
            ),
            (
                JoinType::Outer,
                vec![0, 1, 1, 2, 3, 3, n],
                vec![1, 0, 3, n, 0, 3, 2],
            ),
            (JoinType::Semi, vec![0, 1, 3], vec![]),
            (JoinType::Anti, vec![2], vec![]),
        ];
        for (how, left, right) in cases {
            let got = join_indices(&l, &r, &opts(how)).unwrap();
            assert_eq!(got, JoinIndices { left, right }, "{how:?}");
        }
    }

    #[test]
    fn nulls_nan_and_mixed_int_widths() {
        let l = table(vec![(
            "k",
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                None,
                Some(-0.0),
                Some(1.0),
            ])) as ArrayRef,
        )]);
        let r = table(vec![(
            "k",
            Arc::new(Float64Array::from(vec![None, Some(0.0), Some(-f64::NAN)])) as ArrayRef,
        )]);
        let got = join_indices(&l, &r, &opts(JoinType::Inner)).unwrap();
        assert_eq!(got.left, vec![0, 2]);
        assert_eq!(got.right, vec![2, 1]);
        let mut o = opts(JoinType::Inner);
        o.nulls_equal = true;
        let got = join_indices(&l, &r, &o).unwrap();
        assert_eq!(got.left, vec![0, 1, 2]);
        assert_eq!(got.right, vec![2, 0, 1]);

        let l = table(vec![("k", ints(&[Some(-1), Some(7), Some(i64::MAX)]))]);
        let r = table(vec![(
            "k",
            Arc::new(Int32Array::from(vec![7, -1])) as ArrayRef,
        )]);
        let got = join(&l, &r, &opts(JoinType::Outer)).unwrap();
        let k = got.batches[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(k.values().to_vec(), vec![-1, 7, i64::MAX]);
    }

    #[test]
    fn hashed_path_matches_dense_semantics() {
        // Two wide float keys force the hashed path.
        let f = |v: Vec<f64>| Arc::new(Float64Array::from(v)) as ArrayRef;
        let l = table(vec![
            ("a", f(vec![1e300, -1e300, 1e300, 5.0])),
            ("b", f(vec![1.0, 2.0, 1.0, 3.0])),
        ]);
        let r = table(vec![
            ("a", f(vec![1e300, 1e300, 5.0])),
            ("b", f(vec![1.0, 1.0, 4.0])),
        ]);
        let o = JoinOptions::new(
            JoinType::Inner,
            vec!["a".into(), "b".into()],
            vec!["a".into(), "b".into()],
        );
        let got = join_indices(&l, &r, &o).unwrap();
        assert_eq!(got.left, vec![0, 0, 2, 2]);
        assert_eq!(got.right, vec![0, 1, 0, 1]);
    }

    #[test]
    fn errors() {
        let l = table(vec![("k", ints(&[Some(1), Some(1)]))]);
        let r = table(vec![(
            "k",
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
        )]);
        assert!(matches!(
            join(&l, &r, &opts(JoinType::Inner)),
            Err(Error::Type(_))
        ));
        let r = table(vec![("k", ints(&[Some(1)])), ("v", ints(&[Some(2)]))]);
        let mut o = opts(JoinType::Inner);
        o.validate = Some(Validate::OneToOne);
        let e = join(&l, &r, &o).unwrap_err().to_string();
        assert!(e.contains("k=1") && e.contains("left"), "{e}");
        let mut o = opts(JoinType::Inner);
        o.max_output_rows = Some(1);
        let e = join(&l, &r, &o).unwrap_err().to_string();
        assert!(e.contains("2 rows"), "{e}");
        let o = JoinOptions::new(JoinType::Cross, vec!["k".into()], vec!["k".into()]);
        assert!(matches!(join(&l, &r, &o), Err(Error::Value(_))));
        let o = JoinOptions::new(JoinType::Inner, vec!["x".into()], vec!["k".into()]);
        assert!(matches!(join(&l, &r, &o), Err(Error::ColumnNotFound(_))));
    }
}
