//! Keys: turning (multi-column) keys of any supported Arrow type into compact integers.
//!
//! Every key column becomes `u64` codes ([`encode`]); the codes of several columns are then
//! packed into one integer per row by mixed-radix arithmetic (`((c0 * card1) + c1) * card2 + c2
//! ...`) when the product of the cardinalities fits, which it does for most real keys because
//! integer ranges are offset by their minimum and strings are interned. Keys that do not fit
//! stay as one code vector per column ([`Keys::Wide`]).

pub mod encode;
pub mod intern;
pub mod partition;

use rayon::prelude::*;

pub use encode::{CodeMode, KeyCodes};

use crate::error::Result;
use crate::parallel::BLOCK;
use crate::table::Table;

/// Encode the columns `names` of `table`, each with its own mode.
pub fn encode_columns(
    table: &Table,
    names: &[String],
    modes: &[CodeMode],
) -> Result<Vec<KeyCodes>> {
    let idx: Vec<usize> = names
        .iter()
        .map(|n| table.index_of(n))
        .collect::<Result<_>>()?;
    encode_positions(table, &idx, modes)
}

/// Encode the columns at positions `idx` of `table` (names may repeat), each with its mode.
pub fn encode_positions(table: &Table, idx: &[usize], modes: &[CodeMode]) -> Result<Vec<KeyCodes>> {
    idx.iter()
        .zip(modes)
        .map(|(&i, &mode)| {
            let ordered = matches!(mode, CodeMode::Order { .. });
            let name = table.schema.field(i).name();
            let dense = encode::dense_codes(name, &table.chunks(i), ordered)?;
            Ok(KeyCodes::new(dense, mode))
        })
        .collect()
}

/// The type a key column compares as: a dictionary's value type, else the type itself.
pub fn value_type(t: &arrow_schema::DataType) -> &arrow_schema::DataType {
    match t {
        arrow_schema::DataType::Dictionary(_, v) => v,
        t => t,
    }
}

/// A key chunk with a dictionary decoded to its values (others as they are).
pub fn decoded(c: &arrow_array::ArrayRef) -> Result<arrow_array::ArrayRef> {
    Ok(match c.data_type() {
        arrow_schema::DataType::Dictionary(_, v) => arrow_cast::cast(c, v)?,
        _ => c.clone(),
    })
}

/// Whether values of type `dt` can be keys (of a sort, group-by, join or dedup): checked
/// from the type alone, as [`encode::dense_codes`] accepts them. `name` is for the error.
pub fn check_key_type(name: &str, dt: &arrow_schema::DataType) -> Result<()> {
    use arrow_schema::DataType as D;
    let ok = |t: &D| {
        matches!(
            t,
            D::Null
                | D::Decimal128(_, _)
                | D::Utf8
                | D::LargeUtf8
                | D::Utf8View
                | D::Binary
                | D::LargeBinary
                | D::BinaryView
                | D::FixedSizeBinary(_)
        ) || encode::domain_of_types(std::iter::once(t)).is_some()
    };
    if ok(value_type(dt)) {
        Ok(())
    } else {
        Err(crate::error::Error::Type(format!(
            "column {name:?} has type {dt}, which cannot be used as a key"
        )))
    }
}

/// The positions of the key columns `names` in `schema`, each checked to exist once and to
/// have a key type ([`check_key_type`]).
pub fn key_positions(schema: &arrow_schema::SchemaRef, names: &[String]) -> Result<Vec<usize>> {
    let t = crate::table::Table {
        schema: schema.clone(),
        batches: Vec::new(),
    };
    names
        .iter()
        .map(|n| {
            let i = t.index_of(n)?;
            check_key_type(n, schema.field(i).data_type())?;
            Ok(i)
        })
        .collect()
}

/// Multi-column keys, one value per row.
pub enum Keys {
    /// Packed into a `u64`, shifted left by the requested spare bits.
    U64(Vec<u64>),
    /// Packed into a `u128`, shifted left by the requested spare bits.
    U128(Vec<u128>),
    /// Too wide to pack: one code vector per column.
    Wide(Vec<Vec<u64>>),
}

/// Bits needed to store values `0..card`.
pub fn bits_for(card: u128) -> u32 {
    if card <= 1 {
        0
    } else {
        128 - (card - 1).leading_zeros()
    }
}

/// Product of the cardinalities, `None` on overflow.
pub fn packed_card(cols: &[KeyCodes]) -> Option<u128> {
    cols.iter()
        .try_fold(1u128, |acc, c| acc.checked_mul(c.card.max(1)))
}

/// Pack `cols` into one integer per row, leaving `spare_bits` zero low bits for the caller
/// (the sort puts the row index there). Row order of the packed values equals the
/// lexicographic order of the column codes.
pub fn pack(mut cols: Vec<KeyCodes>, n: usize, spare_bits: u32) -> Keys {
    let bits = packed_card(&cols).map(|p| bits_for(p) + spare_bits);
    match bits {
        // One column needs no packing: its codes are the key.
        Some(b) if b <= 64 && cols.len() == 1 && spare_bits == 0 => {
            Keys::U64(cols.pop().map(|c| c.codes).unwrap_or_default())
        }
        Some(b) if b <= 64 => Keys::U64(pack_as::<u64>(&cols, n, spare_bits)),
        Some(b) if b <= 128 => Keys::U128(pack_as::<u128>(&cols, n, spare_bits)),
        _ => Keys::Wide(cols.into_iter().map(|c| c.codes).collect()),
    }
}

trait PackInt:
    Copy
    + Send
    + Sync
    + std::ops::Mul<Output = Self>
    + std::ops::Add<Output = Self>
    + std::ops::Shl<u32, Output = Self>
{
    const ZERO: Self;
    fn from_u128(x: u128) -> Self;
}
impl PackInt for u64 {
    const ZERO: Self = 0;
    fn from_u128(x: u128) -> Self {
        x as u64
    }
}
impl PackInt for u128 {
    const ZERO: Self = 0;
    fn from_u128(x: u128) -> Self {
        x
    }
}

fn pack_as<T: PackInt>(cols: &[KeyCodes], n: usize, spare_bits: u32) -> Vec<T> {
    let mut out = crate::mem::filled(n, T::ZERO, "packed keys");
    for c in cols {
        let card = T::from_u128(c.card.max(1));
        out.par_chunks_mut(BLOCK)
            .zip(c.codes.par_chunks(BLOCK))
            .for_each(|(o, codes)| {
                crate::cancel::point();
                for (o, &code) in o.iter_mut().zip(codes) {
                    *o = *o * card + T::from_u128(code as u128);
                }
            });
    }
    if spare_bits > 0 {
        out.par_chunks_mut(BLOCK).for_each(|o| {
            crate::cancel::point();
            o.iter_mut().for_each(|o| *o = *o << spare_bits);
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(256), 8);
        assert_eq!(bits_for(257), 9);
        assert_eq!(bits_for(1u128 << 64), 64);
    }

    #[test]
    fn pack_is_lexicographic() {
        let a = KeyCodes {
            codes: vec![1, 0, 1, 0],
            card: 2,
        };
        let b = KeyCodes {
            codes: vec![0, 2, 1, 0],
            card: 3,
        };
        let Keys::U64(p) = pack(vec![a, b], 4, 0) else {
            panic!("expected u64")
        };
        assert_eq!(p, vec![3, 2, 4, 0]);
    }
}
