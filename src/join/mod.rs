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

pub mod external;
pub(crate) mod index;
pub mod stream;

pub use index::KeyIndex;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use arrow_array::{Array, ArrayRef, BooleanArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gather::{Gatherer, NULL_ROW, batch, pieces};
use crate::parallel::{BLOCK, DisjointSlice, partition_by, partition_count};
use crate::table::{MAX_ROWS, Table};

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

/// Where an output column of a join comes from: `(false, i)` left column `i` (a key
/// coalesced with its right partner in right / outer joins), `(true, i)` right column `i`.
pub type Origin = (bool, usize);

/// The schema `join` gives for inputs of these schemas, and each output column's origin —
/// checked as `join` checks them, computed from the schemas alone.
pub fn output_layout(
    left: &SchemaRef,
    right: &SchemaRef,
    opts: &JoinOptions,
) -> Result<(SchemaRef, Vec<Origin>)> {
    let empty = |schema: &SchemaRef| Table {
        schema: schema.clone(),
        batches: Vec::new(),
    };
    let plan = Plan::new(&empty(left), &empty(right), opts)?.0;
    let origins = (0..left.fields().len())
        .map(|i| (false, i))
        .chain(plan.right_cols.iter().map(|&i| (true, i)))
        .collect();
    Ok((plan.schema, origins))
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
    if let Some(v) = opts.validate {
        let (l_unique, r_unique) = match v {
            Validate::OneToOne => (true, true),
            Validate::OneToMany => (true, false),
            Validate::ManyToOne => (false, true),
            Validate::ManyToMany => (false, false),
        };
        for (side, must) in [(Side::Left, l_unique), (Side::Right, r_unique)] {
            if must
                && let Some(row) = first_duplicate(left, right, key_pairs, side, opts.nulls_equal)?
            {
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
    let gids = gids(left, right, key_pairs, opts.nulls_equal)?;
    emit(&gids, opts.how, opts.max_output_rows)
}

/// The key columns `cols` of `t`: their chunks and types.
fn key_columns(
    t: &Table,
    cols: impl Iterator<Item = usize>,
) -> (Vec<Vec<ArrayRef>>, Vec<DataType>) {
    cols.map(|i| (t.chunks(i), t.schema.field(i).data_type().clone()))
        .unzip()
}

/// Group ids of both sides: the smaller side is built ([`KeyIndex`]), the other probes it.
fn gids(left: &Table, right: &Table, pairs: &[(usize, usize)], nulls_equal: bool) -> Result<Gids> {
    let build_left = left.num_rows() < right.num_rows();
    let (lk, lt) = key_columns(left, pairs.iter().map(|p| p.0));
    let (rk, rt) = key_columns(right, pairs.iter().map(|p| p.1));
    let names: Vec<&str> = pairs
        .iter()
        .map(|p| left.schema.field(p.0).name().as_str())
        .collect();
    Ok(if build_left {
        let built = KeyIndex::build(&lk, &lt, &rt, &names, nulls_equal)?;
        let right = built.index.probe(&rk)?;
        Gids {
            left: built.gids,
            right,
            card: built.index.card,
        }
    } else {
        let built = KeyIndex::build(&rk, &rt, &lt, &names, nulls_equal)?;
        let left = built.index.probe(&lk)?;
        Gids {
            left,
            right: built.gids,
            card: built.index.card,
        }
    })
}

/// The first row of `side` whose key occurred earlier on that side, if any. Null keys count
/// as equal when they match (`nulls_equal`), else they are skipped.
fn first_duplicate(
    left: &Table,
    right: &Table,
    pairs: &[(usize, usize)],
    side: Side,
    nulls_equal: bool,
) -> Result<Option<usize>> {
    let (lk, lt) = key_columns(left, pairs.iter().map(|p| p.0));
    let (rk, rt) = key_columns(right, pairs.iter().map(|p| p.1));
    let names: Vec<&str> = pairs
        .iter()
        .map(|p| left.schema.field(p.0).name().as_str())
        .collect();
    let built = match side {
        Side::Left => KeyIndex::build(&lk, &lt, &rt, &names, nulls_equal)?,
        Side::Right => KeyIndex::build(&rk, &rt, &lt, &names, nulls_equal)?,
    };
    let mut seen = vec![false; built.index.card];
    for (row, &g) in built.gids.iter().enumerate() {
        if g == NONE {
            continue;
        }
        if std::mem::replace(&mut seen[g as usize], true) {
            return Ok(Some(row));
        }
    }
    Ok(None)
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

/// Group ids of both sides in `0..card`, or [`NONE`].
struct Gids {
    left: Vec<u32>,
    right: Vec<u32>,
    card: usize,
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
        self.materialize_with(
            &self.left_gatherer(left)?,
            &self.right_gatherer(right)?,
            idx,
        )
    }

    /// Every left column, ready to gather.
    fn left_gatherer(&self, left: &Table) -> Result<Gatherer> {
        let cols: Vec<usize> = (0..left.schema.fields().len()).collect();
        Gatherer::new(left, &cols)
    }

    /// The right output columns, then the keys to coalesce, ready to gather.
    fn right_gatherer(&self, right: &Table) -> Result<Gatherer> {
        let mut rcols = self.right_cols.clone();
        rcols.extend(self.coalesce.iter().map(|c| c.1));
        Gatherer::new(right, &rcols)
    }

    /// The output rows `idx` from the two sides' gatherers.
    fn materialize_with(&self, lg: &Gatherer, rg: &Gatherer, idx: &JoinIndices) -> Result<Table> {
        let n_left_cols = self.schema.fields().len() - self.right_cols.len();
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
