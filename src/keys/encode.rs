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

use super::intern::{ByteChunk, ByteColumn, intern};
use crate::error::{Error, Result};
use crate::parallel::BLOCK;
use crate::table::{locatable, native_values};

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
fn validity(chunks: &[ArrayRef], n: usize) -> Option<Vec<bool>> {
    if chunks.iter().all(|c| c.logical_null_count() == 0) {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for c in chunks {
        match c.logical_nulls() {
            None => out.extend(std::iter::repeat_n(true, c.len())),
            Some(nb) => out.extend(nb.iter()),
        }
    }
    Some(out)
}

/// Map every chunk's values through `f` into one `Vec<u64>` (null slots get whatever `f`
/// gives for their placeholder value; they are ignored later).
fn map_native<N: ArrowNativeType>(
    chunks: &[ArrayRef],
    n: usize,
    f: impl Fn(N) -> u64 + Sync,
) -> Vec<u64> {
    let mut out = vec![0u64; n];
    let mut rest = out.as_mut_slice();
    for c in chunks {
        let (head, tail) = rest.split_at_mut(c.len());
        let vals = native_values::<N>(c);
        head.par_chunks_mut(BLOCK)
            .zip(vals.par_chunks(BLOCK))
            .for_each(|(o, v)| {
                for (o, &v) in o.iter_mut().zip(v) {
                    *o = f(v);
                }
            });
        rest = tail;
    }
    out
}

/// Offset order-preserving raw values (`u64`, or `u128` for decimals) by their minimum;
/// rank-compress when the range leaves no room for a null code.
fn densify<T>(raw: Vec<T>, valid: Option<Vec<bool>>) -> Dense
where
    T: Copy + Ord + Send + Sync + Into<u128>,
{
    let is_valid = |i: usize| valid.as_ref().is_none_or(|v| v[i]);
    let range = raw
        .par_iter()
        .enumerate()
        .filter(|(i, _)| is_valid(*i))
        .map(|(_, &x)| (x, x))
        .reduce_with(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let Some((lo, hi)) = range else {
        // No valid value at all.
        let codes = vec![0; raw.len()];
        return Dense {
            codes,
            valid,
            card: 0,
        };
    };
    let (lo, span) = (lo.into(), hi.into() - lo.into());
    if span < u64::MAX as u128 {
        let codes = raw
            .par_iter()
            .map(|&x| (x.into().wrapping_sub(lo)) as u64)
            .collect();
        return Dense {
            codes,
            valid,
            card: span as u64 + 1,
        };
    }
    rank(raw, valid)
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
    distinct.par_sort_unstable();
    distinct.dedup();
    let codes = raw
        .par_iter()
        .enumerate()
        .map(|(i, x)| {
            if is_valid(i) {
                distinct.binary_search(x).unwrap_or(0) as u64
            } else {
                0
            }
        })
        .collect();
    Dense {
        codes,
        valid,
        card: distinct.len() as u64,
    }
}

fn signed<N: ArrowNativeType + Into<i64>>(chunks: &[ArrayRef], n: usize) -> Vec<u64> {
    map_native::<N>(chunks, n, |v| (v.into() as u64) ^ SIGN)
}

fn unsigned<N: ArrowNativeType + Into<u64>>(chunks: &[ArrayRef], n: usize) -> Vec<u64> {
    map_native::<N>(chunks, n, |v| v.into())
}

/// Codes for one column given as chunks. `name` is used in error messages only.
pub fn dense_codes(name: &str, chunks: &[ArrayRef], ordered: bool) -> Result<Dense> {
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
    use DataType as D;
    let raw = match &dt {
        D::Null => {
            return Ok(Dense {
                codes: vec![0; n],
                valid,
                card: 0,
            });
        }
        D::Boolean => {
            let mut out = Vec::with_capacity(n);
            for c in chunks {
                out.extend(c.as_boolean().values().iter().map(u64::from));
            }
            out
        }
        D::Int8 => signed::<i8>(chunks, n),
        D::Int16 => signed::<i16>(chunks, n),
        D::Int32 | D::Date32 | D::Time32(_) | D::Decimal32(_, _) => signed::<i32>(chunks, n),
        D::Int64
        | D::Date64
        | D::Time64(_)
        | D::Timestamp(_, _)
        | D::Duration(_)
        | D::Decimal64(_, _) => signed::<i64>(chunks, n),
        D::UInt8 => unsigned::<u8>(chunks, n),
        D::UInt16 => unsigned::<u16>(chunks, n),
        D::UInt32 => unsigned::<u32>(chunks, n),
        D::UInt64 => unsigned::<u64>(chunks, n),
        D::Float16 => map_native::<half::f16>(chunks, n, |v| f64_key(v.to_f64())),
        D::Float32 => map_native::<f32>(chunks, n, |v| f64_key(v as f64)),
        D::Float64 => map_native::<f64>(chunks, n, f64_key),
        D::Decimal128(_, _) => return Ok(decimal128(chunks, n, valid)),
        D::Dictionary(_, _) => return dictionary(name, chunks, n, valid, ordered),
        _ => {
            if chunks.iter().any(|c| ByteChunk::new(c).is_none()) {
                return Err(Error::Type(format!(
                    "column {name:?} has type {dt}, which cannot be used as a key"
                )));
            }
            let (chunks, at) = locatable(chunks.to_vec(), &dt)?;
            let typed = chunks.iter().filter_map(ByteChunk::new).collect();
            let col = ByteColumn::new(typed, at);
            let interned = intern(&col, n, valid.as_deref());
            let card = interned.reps.len() as u64;
            let mut codes = interned.ids;
            if ordered {
                let ranks = rank_bytes(&col, &interned.reps);
                codes.par_iter_mut().for_each(|c| {
                    if let Some(&r) = ranks.get(*c as usize) {
                        *c = r;
                    }
                });
            }
            return Ok(Dense { codes, valid, card });
        }
    };
    Ok(densify(raw, valid))
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
    let mut raw: Vec<u128> = Vec::with_capacity(n);
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
fn dictionary(
    name: &str,
    chunks: &[ArrayRef],
    n: usize,
    valid: Option<Vec<bool>>,
    ordered: bool,
) -> Result<Dense> {
    let dicts: Vec<&dyn arrow_array::AnyDictionaryArray> =
        chunks.iter().map(|c| c.as_any_dictionary()).collect();
    let values: Vec<ArrayRef> = dicts.iter().map(|d| d.values().clone()).collect();
    let vd = dense_codes(name, &values, ordered)?;
    let mut codes = Vec::with_capacity(n);
    let mut base = 0usize;
    for (d, v) in dicts.iter().zip(&values) {
        if v.is_empty() {
            // Every key of an empty dictionary is null.
            codes.extend(std::iter::repeat_n(0, d.keys().len()));
        } else {
            let keys = d.normalized_keys();
            codes.extend(
                keys.iter()
                    .map(|&k| vd.codes.get(base + k).copied().unwrap_or(0)),
            );
        }
        base += v.len();
    }
    Ok(Dense {
        codes,
        valid,
        card: vd.card,
    })
}
