//! Per-column key codes: every supported key type is mapped to `u64` codes so that the
//! kernels never look at Arrow types again.
//!
//! Two steps:
//! 1. [`dense_codes`] maps each valid row to a code in `0..card` such that equal values (by
//!    the ferrobatch key rules: NaN == NaN whatever its payload, -0.0 == 0.0) get equal codes
//!    and, when `ordered`, the code order is the value order (floats `-inf < .. < inf < NaN`,
//!    strings byte-wise). Integers and temporal types are offset by their minimum; strings are
//!    interned (and ranked when ordered); a range too wide for the null slot is rank-compressed.
//! 2. [`KeyCodes::new`] places nulls and applies the direction: descending flips value codes,
//!    nulls get `0` or `card` (first / last) whatever the direction.
//!
//! Codes of several columns are then packed by the caller (see [`super::pack`]).

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_buffer::ArrowNativeType;
use arrow_schema::DataType;
use rayon::prelude::*;

use super::intern::{ByteChunk, ByteColumn, Known, intern, intern_known};
use crate::error::{Error, Result};
use crate::parallel::BLOCK;
use crate::table::{RowLocator, locatable, native_values};

const SIGN: u64 = 1 << 63;

/// Order-preserving `u64` image of an `f64`, with every NaN one value above `+inf` and
/// `-0.0` equal to `0.0`.
#[inline]
pub fn f64_key(v: f64) -> u64 {
    // `v + 0.0` turns -0.0 into +0.0 and leaves every other value unchanged.
    let v = if v.is_nan() { f64::NAN } else { v + 0.0 };
    let b = v.to_bits();
    if b & SIGN != 0 { !b } else { b | SIGN }
}

/// How codes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMode {
    /// Equal values get equal codes; code order is meaningless (cheapest).
    Equality,
    /// Code order is the sort order for this direction and null placement.
    Order { descending: bool, nulls_last: bool },
}

/// Codes of one column: valid rows in `0..card`, before null placement.
pub struct Dense {
    pub codes: Vec<u64>,
    pub valid: Option<Vec<bool>>,
    /// Number of value codes; `card <= u64::MAX` so a null slot always fits.
    pub card: u64,
}

/// Final codes of one key column: every row (nulls included) in `0..card`.
pub struct KeyCodes {
    pub codes: Vec<u64>,
    pub card: u128,
}

impl KeyCodes {
    /// Place nulls and apply the direction of `mode`.
    pub fn new(d: Dense, mode: CodeMode) -> Self {
        let Dense {
            mut codes,
            valid,
            card,
        } = d;
        let (descending, nulls_last) = match mode {
            CodeMode::Equality => (false, true),
            CodeMode::Order {
                descending,
                nulls_last,
            } => (descending, nulls_last),
        };
        let has_null = valid.as_ref().is_some_and(|v| v.iter().any(|&x| !x));
        let top = card.saturating_sub(1);
        let shift = u64::from(has_null && !nulls_last);
        let null_code = if nulls_last { card } else { 0 };
        let valid = valid.filter(|_| has_null);
        match &valid {
            None if !descending && shift == 0 => {}
            None => codes.par_iter_mut().for_each(|c| {
                *c = if descending { top - *c } else { *c } + shift;
            }),
            Some(valid) => codes
                .par_iter_mut()
                .zip(valid.par_iter())
                .for_each(|(c, &ok)| {
                    *c = if !ok {
                        null_code
                    } else {
                        (if descending { top - *c } else { *c }) + shift
                    };
                }),
        }
        KeyCodes {
            codes,
            card: card as u128 + u128::from(has_null),
        }
    }
}

/// `true` where the row is valid, or `None` when every row is.
pub(crate) fn validity(chunks: &[ArrayRef], n: usize) -> Option<Vec<bool>> {
    if chunks.iter().all(|c| c.logical_null_count() == 0) {
        return None;
    }
    let mut out = crate::mem::with_capacity(n, "key validity");
    for c in chunks {
        match c.logical_nulls() {
            None => out.extend(std::iter::repeat_n(true, c.len())),
            Some(nb) => out.extend(nb.iter()),
        }
    }
    Some(out)
}

/// Write `f(value)` of every slot of chunk `c` into `out` (null slots get whatever `f` gives
/// for their placeholder value; they are ignored later).
fn fill<N: ArrowNativeType, T: Send>(c: &ArrayRef, out: &mut [T], f: impl Fn(N) -> T + Sync) {
    let vals = native_values::<N>(c);
    out.par_chunks_mut(BLOCK)
        .zip(vals.par_chunks(BLOCK))
        .for_each(|(o, v)| {
            crate::cancel::point();
            for (o, &v) in o.iter_mut().zip(v) {
                *o = f(v);
            }
        });
}

/// The raw-key domain of a set of fixed-width chunks. A column has one type, but the two
/// key columns of a join are encoded together and may differ in width or signedness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Domain {
    /// Unsigned integers (and booleans): the value itself.
    Unsigned,
    /// Signed integers, temporal types, and unsigned ones below 64 bits next to them:
    /// the value as `i64` with the sign bit flipped.
    Signed,
    /// `uint64` next to a signed type: `i128` with the sign bit flipped.
    Wide,
    /// Floating point: [`f64_key`].
    Float,
}

fn domain_of(chunks: &[ArrayRef]) -> Option<Domain> {
    domain_of_types(chunks.iter().map(|c| c.data_type()))
}

/// The raw-key domain of values of these types, `None` when they are not all fixed-width
/// integers, temporal types, booleans, or all floats.
pub(crate) fn domain_of_types<'a>(types: impl Iterator<Item = &'a DataType>) -> Option<Domain> {
    use DataType as D;
    let (mut signed, mut u64s, mut unsigned, mut float) = (false, false, false, false);
    for t in types {
        match t {
            D::Boolean | D::UInt8 | D::UInt16 | D::UInt32 => unsigned = true,
            D::UInt64 => u64s = true,
            D::Int8
            | D::Int16
            | D::Int32
            | D::Int64
            | D::Date32
            | D::Date64
            | D::Time32(_)
            | D::Time64(_)
            | D::Timestamp(_, _)
            | D::Duration(_)
            | D::Decimal32(_, _)
            | D::Decimal64(_, _) => signed = true,
            D::Float16 | D::Float32 | D::Float64 => float = true,
            _ => return None,
        }
    }
    match (float, signed, u64s) {
        (true, false, false) if !unsigned => Some(Domain::Float),
        (true, _, _) => None,
        (false, true, true) => Some(Domain::Wide),
        (false, true, false) => Some(Domain::Signed),
        (false, false, _) => Some(Domain::Unsigned),
    }
}

/// The order-preserving `u64` image of chunk `c` in domain `d` (not [`Domain::Wide`]).
pub(crate) fn raw_u64(c: &ArrayRef, out: &mut [u64], d: Domain) {
    use DataType as D;
    let flip = if d == Domain::Signed { SIGN } else { 0 };
    match c.data_type() {
        D::Boolean => {
            for (o, v) in out.iter_mut().zip(c.as_boolean().values().iter()) {
                *o = u64::from(v) ^ flip;
            }
        }
        D::Int8 => fill::<i8, _>(c, out, |v| (v as u64) ^ SIGN),
        D::Int16 => fill::<i16, _>(c, out, |v| (v as u64) ^ SIGN),
        D::Int32 | D::Date32 | D::Time32(_) | D::Decimal32(_, _) => {
            fill::<i32, _>(c, out, |v| (v as u64) ^ SIGN)
        }
        D::UInt8 => fill::<u8, _>(c, out, |v| (v as u64) ^ flip),
        D::UInt16 => fill::<u16, _>(c, out, |v| (v as u64) ^ flip),
        D::UInt32 => fill::<u32, _>(c, out, |v| (v as u64) ^ flip),
        D::UInt64 => fill::<u64, _>(c, out, |v| v),
        D::Float16 => fill::<half::f16, _>(c, out, |v| f64_key(v.to_f64())),
        D::Float32 => fill::<f32, _>(c, out, |v| f64_key(v as f64)),
        D::Float64 => fill::<f64, _>(c, out, f64_key),
        // Every other fixed-width type `domain_of` accepts is a 64-bit signed integer.
        _ => fill::<i64, _>(c, out, |v| (v as u64) ^ SIGN),
    }
}

/// The order-preserving `u128` image of an integer or decimal128 chunk (for
/// [`Domain::Wide`]).
pub(crate) fn raw_u128(c: &ArrayRef, out: &mut [u128]) {
    use DataType as D;
    const SIGN128: u128 = 1 << 127;
    let s = |v: i128| (v as u128) ^ SIGN128;
    match c.data_type() {
        D::Boolean => {
            for (o, v) in out.iter_mut().zip(c.as_boolean().values().iter()) {
                *o = s(i128::from(v));
            }
        }
        D::Int8 => fill::<i8, _>(c, out, |v| s(v.into())),
        D::Int16 => fill::<i16, _>(c, out, |v| s(v.into())),
        D::UInt8 => fill::<u8, _>(c, out, |v| s(v.into())),
        D::UInt16 => fill::<u16, _>(c, out, |v| s(v.into())),
        D::UInt32 => fill::<u32, _>(c, out, |v| s(v.into())),
        D::UInt64 => fill::<u64, _>(c, out, |v| s(v.into())),
        D::Int32 | D::Date32 | D::Time32(_) | D::Decimal32(_, _) => {
            fill::<i32, _>(c, out, |v| s(v.into()))
        }
        D::Decimal128(_, _) => fill::<i128, _>(c, out, s),
        _ => fill::<i64, _>(c, out, |v| s(v.into())),
    }
}

/// Raw keys of fixed-width chunks, one after the other.
fn raw_fixed(chunks: &[ArrayRef], n: usize, valid: Option<Vec<bool>>, d: Domain) -> Dense {
    if d == Domain::Wide {
        let mut raw = vec![0u128; n];
        let mut rest = raw.as_mut_slice();
        for c in chunks {
            let (head, tail) = rest.split_at_mut(c.len());
            raw_u128(c, head);
            rest = tail;
        }
        return densify(raw, valid);
    }
    densify(raw_u64_column(chunks, n, d), valid)
}

/// [`raw_u64`] of every chunk, one after the other.
fn raw_u64_column(chunks: &[ArrayRef], n: usize, d: Domain) -> Vec<u64> {
    let mut raw = crate::mem::filled(n, 0u64, "key values");
    let mut rest = raw.as_mut_slice();
    for c in chunks {
        let (head, tail) = rest.split_at_mut(c.len());
        raw_u64(c, head, d);
        rest = tail;
    }
    raw
}

/// Offset order-preserving raw values (`u64`, or `u128` for decimals) by their minimum;
/// rank-compress when the range leaves no room for a null code.
fn densify<T: Raw>(raw: Vec<T>, valid: Option<Vec<bool>>) -> Dense {
    let is_valid = |i: usize| valid.as_ref().is_none_or(|v| v[i]);
    let range = raw
        .par_chunks(BLOCK)
        .enumerate()
        .filter_map(|(b, blk)| {
            crate::cancel::point();
            (b * BLOCK..)
                .zip(blk)
                .filter(|&(i, _)| is_valid(i))
                .map(|(_, &x)| (x, x))
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
        })
        .reduce_with(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let Some((lo, hi)) = range else {
        // No valid value at all.
        let codes = crate::mem::filled(raw.len(), 0, "key codes");
        return Dense {
            codes,
            valid,
            card: 0,
        };
    };
    let (lo, span) = (lo.into(), hi.into() - lo.into());
    if span < u64::MAX as u128 {
        let codes = T::offset(raw, lo);
        return Dense {
            codes,
            valid,
            card: span as u64 + 1,
        };
    }
    rank(raw, valid)
}

/// Raw order images: `u64`, or `u128` for decimals.
trait Raw: Copy + Ord + Send + Sync + Into<u128> {
    /// `x - lo` of every value (all within `u64`).
    fn offset(raw: Vec<Self>, lo: u128) -> Vec<u64>;
}

impl Raw for u64 {
    /// In place: no second column-sized buffer.
    fn offset(mut raw: Vec<u64>, lo: u128) -> Vec<u64> {
        let lo = lo as u64;
        raw.par_chunks_mut(BLOCK).for_each(|blk| {
            crate::cancel::point();
            blk.iter_mut().for_each(|x| *x = x.wrapping_sub(lo));
        });
        raw
    }
}

impl Raw for u128 {
    fn offset(raw: Vec<u128>, lo: u128) -> Vec<u64> {
        raw.par_iter().map(|&x| x.wrapping_sub(lo) as u64).collect()
    }
}

/// Replace each valid value by its rank among the distinct valid values.
fn rank<T: Ord + Copy + Send + Sync>(raw: Vec<T>, valid: Option<Vec<bool>>) -> Dense {
    let is_valid = |i: usize| valid.as_ref().is_none_or(|v| v[i]);
    let mut distinct: Vec<T> = raw
        .par_iter()
        .enumerate()
        .filter(|(i, _)| is_valid(*i))
        .map(|(_, &x)| x)
        .collect();
    distinct.par_sort_unstable_by(|a, b| {
        crate::cancel::point();
        a.cmp(b)
    });
    distinct.dedup();
    let mut codes = crate::mem::filled(raw.len(), 0u64, "key codes");
    codes
        .par_chunks_mut(BLOCK)
        .zip(raw.par_chunks(BLOCK))
        .enumerate()
        .for_each(|(b, (out, xs))| {
            crate::cancel::point();
            for (i, (o, x)) in (b * BLOCK..).zip(out.iter_mut().zip(xs)) {
                if is_valid(i) {
                    *o = distinct.binary_search(x).unwrap_or(0) as u64;
                }
            }
        });
    Dense {
        codes,
        valid,
        card: distinct.len() as u64,
    }
}

/// Codes for one column given as chunks. `name` is used in error messages only.
///
/// The chunks normally share one type. They may also differ within one family — integers of
/// any width and signedness (compared by value), floats of any width, byte strings of any
/// layout, dictionaries next to their value type — which is how the two key columns of a
/// join get codes in one space: both sides' chunks are encoded as one column.
pub fn dense_codes(name: &str, chunks: &[ArrayRef], ordered: bool) -> Result<Dense> {
    dense_codes_known(name, chunks, ordered, None)
}

/// [`dense_codes`], a byte-string column's equality codes taken from the values `known`
/// holds where they cover it ([`intern_known`]).
pub fn dense_codes_known(
    name: &str,
    chunks: &[ArrayRef],
    ordered: bool,
    known: Option<&Known>,
) -> Result<Dense> {
    let n: usize = chunks.iter().map(|c| c.len()).sum();
    let Some(first) = chunks.first() else {
        return Ok(Dense {
            codes: Vec::new(),
            valid: None,
            card: 0,
        });
    };
    let dt = first.data_type().clone();
    let valid = validity(chunks, n);
    let same_type = chunks.iter().all(|c| c.data_type() == &dt);
    let type_error = || {
        let types: Vec<String> = chunks.iter().map(|c| c.data_type().to_string()).collect();
        Error::Type(format!(
            "column {name:?} has type {}, which cannot be used as a key",
            if same_type {
                dt.to_string()
            } else {
                types.join(" / ")
            }
        ))
    };
    if chunks
        .iter()
        .any(|c| matches!(c.data_type(), DataType::Dictionary(_, _)))
    {
        return dictionary(name, chunks, n, valid, ordered);
    }
    match &dt {
        DataType::Null if same_type => Ok(Dense {
            codes: crate::mem::filled(n, 0, "key codes"),
            valid,
            card: 0,
        }),
        DataType::Decimal128(_, _) if same_type => Ok(decimal128(chunks, n, valid)),
        _ if chunks.iter().all(|c| ByteChunk::new(c).is_some()) => {
            Ok(bytes(chunks, n, valid, ordered, same_type, known)?)
        }
        _ => match domain_of(chunks) {
            Some(d) => Ok(raw_fixed(chunks, n, valid, d)),
            None => Err(type_error()),
        },
    }
}

/// Order codes of one column for comparisons (min / max / top-k): valid rows get `u64` codes
/// whose order is the value order (floats `-inf < .. < inf < NaN`, -0.0 == 0.0, strings
/// byte-wise). Integer, boolean, float and temporal columns map each value straight to its
/// order-preserving image (one pass, no ranking); other types are encoded as ordered keys.
/// `card` is meaningless here.
pub fn order_codes(name: &str, chunks: &[ArrayRef]) -> Result<Dense> {
    let n: usize = chunks.iter().map(|c| c.len()).sum();
    match domain_of(chunks) {
        Some(d) if !chunks.is_empty() && d != Domain::Wide => Ok(Dense {
            codes: raw_u64_column(chunks, n, d),
            valid: validity(chunks, n),
            card: u64::MAX,
        }),
        _ => dense_codes(name, chunks, true),
    }
}

/// Byte-string chunks: interned (against `known` where it covers them, unless `ordered`),
/// and ranked when `ordered`.
fn bytes(
    chunks: &[ArrayRef],
    n: usize,
    valid: Option<Vec<bool>>,
    ordered: bool,
    same_type: bool,
    known: Option<&Known>,
) -> Result<Dense> {
    with_bytes(chunks, same_type, |col| {
        if let Some(k) = known.filter(|k| !ordered && !k.is_empty())
            && let Some((codes, card)) = intern_known(col, n, valid.as_deref(), k)
        {
            return Dense { codes, valid, card };
        }
        let interned = intern(col, n, valid.as_deref());
        let card = interned.reps.len() as u64;
        let mut codes = interned.ids;
        if ordered {
            let ranks = rank_bytes(col, &interned.reps);
            codes.par_iter_mut().for_each(|c| {
                if let Some(&r) = ranks.get(*c as usize) {
                    *c = r;
                }
            });
        }
        Dense { codes, valid, card }
    })
}

/// Add the values of a key column given as `chunks` to `known` ([`Known::learn`]): how many
/// were new, `None` (nothing added) when it is not a byte-string column.
pub fn learn(known: &mut Known, chunks: &[ArrayRef]) -> Result<Option<usize>> {
    if chunks.is_empty() || !chunks.iter().all(|c| ByteChunk::new(c).is_some()) {
        return Ok(None);
    }
    let n = chunks.iter().map(|c| c.len()).sum();
    let valid = validity(chunks, n);
    let same_type = chunks
        .iter()
        .all(|c| c.data_type() == chunks[0].data_type());
    with_bytes(chunks, same_type, |col| {
        Some(known.learn(col, n, valid.as_deref()))
    })
}

/// `f` of the byte-string `chunks` as one column.
fn with_bytes<T>(
    chunks: &[ArrayRef],
    same_type: bool,
    f: impl FnOnce(&ByteColumn<'_>) -> T,
) -> Result<T> {
    let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    let chunks: Vec<ArrayRef> = if !same_type && RowLocator::new(&lens).is_none() {
        // Too fragmented for a locator and not concatenable as is: one common layout first.
        chunks
            .iter()
            .map(|c| Ok(arrow_cast::cast(c, &DataType::LargeBinary)?))
            .collect::<Result<_>>()?
    } else {
        chunks.to_vec()
    };
    let dt = chunks[0].data_type().clone();
    let (chunks, at) = locatable(chunks, &dt)?;
    let typed = chunks.iter().filter_map(ByteChunk::new).collect();
    Ok(f(&ByteColumn::new(typed, at)))
}

/// `ranks[id]`: position of the value of interned id `id` in byte-wise order.
///
/// The distinct values are sorted as (8-byte big-endian prefix, id) pairs, so that most
/// comparisons are one integer comparison in a contiguous array; only equal prefixes look at
/// the full values.
fn rank_bytes(col: &ByteColumn<'_>, reps: &[u32]) -> Vec<u64> {
    let prefix = |v: &[u8]| {
        let mut p = [0u8; 8];
        let k = v.len().min(8);
        p[..k].copy_from_slice(&v[..k]);
        u64::from_be_bytes(p)
    };
    let mut order: Vec<(u64, u32)> = reps
        .par_iter()
        .enumerate()
        .map(|(id, &r)| (prefix(col.value(r as usize)), id as u32))
        .collect();
    order.par_sort_unstable_by(|a, b| {
        crate::cancel::point();
        a.0.cmp(&b.0).then_with(|| {
            col.value(reps[a.1 as usize] as usize)
                .cmp(col.value(reps[b.1 as usize] as usize))
        })
    });
    let mut ranks = vec![0u64; reps.len()];
    for (r, &(_, id)) in order.iter().enumerate() {
        ranks[id as usize] = r as u64;
    }
    ranks
}

fn decimal128(chunks: &[ArrayRef], n: usize, valid: Option<Vec<bool>>) -> Dense {
    const SIGN128: u128 = 1 << 127;
    let mut raw: Vec<u128> = crate::mem::with_capacity(n, "key values");
    for c in chunks {
        raw.extend(
            native_values::<i128>(c)
                .iter()
                .map(|&v| (v as u128) ^ SIGN128),
        );
    }
    densify(raw, valid)
}

/// Dictionary columns: codes of the dictionary values (all chunks' dictionaries together,
/// so equal values in different dictionaries get equal codes), looked up through the keys.
/// Chunks that share one dictionary (the pieces of one row group) encode it once.
/// Plain chunks among them (the other side of a join) are encoded with the values.
fn dictionary(
    name: &str,
    chunks: &[ArrayRef],
    n: usize,
    valid: Option<Vec<bool>>,
    ordered: bool,
) -> Result<Dense> {
    // The distinct value arrays, and each chunk's (index among them).
    let mut values: Vec<ArrayRef> = Vec::new();
    let mut data: Vec<arrow_data::ArrayData> = Vec::new();
    let mut of_chunk = Vec::with_capacity(chunks.len());
    for c in chunks {
        let v = match c.data_type() {
            DataType::Dictionary(_, _) => c.as_any_dictionary().values().clone(),
            _ => c.clone(),
        };
        let d = v.to_data();
        let shared = matches!(c.data_type(), DataType::Dictionary(_, _))
            .then(|| data.iter().position(|e| e.ptr_eq(&d)))
            .flatten();
        of_chunk.push(shared.unwrap_or_else(|| {
            values.push(v);
            data.push(d);
            values.len() - 1
        }));
    }
    // Empty arrays (an empty dictionary: every key null) contribute no values.
    let nonempty: Vec<ArrayRef> = values.iter().filter(|v| !v.is_empty()).cloned().collect();
    let vd = dense_codes(name, &nonempty, ordered)?;
    let mut bases = Vec::with_capacity(values.len());
    let mut base = 0usize;
    for v in &values {
        bases.push(base);
        base += v.len();
    }
    let mut codes = crate::mem::with_capacity(n, "key codes");
    for (c, &vi) in chunks.iter().zip(&of_chunk) {
        let v = &values[vi];
        let vcodes = &vd.codes[bases[vi]..bases[vi] + v.len()];
        match c.data_type() {
            // Every key of an empty dictionary is null (and `normalized_keys` would panic).
            DataType::Dictionary(_, _) if v.is_empty() => {
                codes.extend(std::iter::repeat_n(0, c.len()));
            }
            DataType::Dictionary(_, _) => {
                let keys = c.as_any_dictionary().normalized_keys();
                // Keys of null slots may be anything: out-of-range keys get code 0, ignored
                // as nulls later.
                codes.extend(keys.iter().map(|&k| vcodes.get(k).copied().unwrap_or(0)));
            }
            _ => codes.extend_from_slice(vcodes),
        }
    }
    Ok(Dense {
        codes,
        valid,
        card: vd.card,
    })
}
