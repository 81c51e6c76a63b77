//! pyarrow's implicit casts ("DispatchBest" in Arrow C++), for the functions evaluated here:
//! the type both arguments of an arithmetic or comparison call are cast to, and the result
//! type of decimal arithmetic. A pair these rules do not cover is not evaluated here.

use arrow_schema::DataType;
use arrow_schema::DataType::*;

/// The type an expression argument of type `t` is *seen as*: view strings as large strings
/// (what pyarrow evaluates them as in the pipeline), dictionaries as their values.
pub fn logical(t: &DataType) -> DataType {
    match t {
        Utf8View => LargeUtf8,
        BinaryView => LargeBinary,
        Dictionary(_, v) => logical(v),
        t => t.clone(),
    }
}

fn int_width(t: &DataType) -> Option<(bool, u8)> {
    Some(match t {
        Int8 => (true, 8),
        Int16 => (true, 16),
        Int32 => (true, 32),
        Int64 => (true, 64),
        UInt8 => (false, 8),
        UInt16 => (false, 16),
        UInt32 => (false, 32),
        UInt64 => (false, 64),
        _ => return None,
    })
}

fn int_type(signed: bool, bits: u8) -> DataType {
    match (signed, bits) {
        (true, 8) => Int8,
        (true, 16) => Int16,
        (true, 32) => Int32,
        (true, _) => Int64,
        (false, 8) => UInt8,
        (false, 16) => UInt16,
        (false, 32) => UInt32,
        (false, _) => UInt64,
    }
}

pub fn is_int(t: &DataType) -> bool {
    int_width(t).is_some()
}

pub fn is_float(t: &DataType) -> bool {
    matches!(t, Float16 | Float32 | Float64)
}

pub fn is_string(t: &DataType) -> bool {
    matches!(t, Utf8 | LargeUtf8 | Utf8View)
}

/// Arrow C++ `CommonNumeric` over ints and floats (bool excluded): any float64 → float64,
/// else any float32 → float32; ints: the widest signed, widened past the widest unsigned.
pub fn common_numeric(a: &DataType, b: &DataType) -> Option<DataType> {
    if a == b && (is_int(a) || is_float(a)) {
        return Some(a.clone());
    }
    if !(is_int(a) || is_float(a)) || !(is_int(b) || is_float(b)) {
        return None;
    }
    if *a == Float64 || *b == Float64 {
        return Some(Float64);
    }
    if *a == Float32 || *b == Float32 {
        return Some(Float32);
    }
    if is_float(a) || is_float(b) {
        return None; // float16
    }
    let (mut signed, mut unsigned) = (0u8, 0u8);
    for t in [a, b] {
        let (s, w) = int_width(t)?;
        if s {
            signed = signed.max(w)
        } else {
            unsigned = unsigned.max(w)
        }
    }
    Some(if signed == 0 {
        int_type(false, unsigned)
    } else if signed <= unsigned {
        int_type(true, (unsigned * 2).min(64))
    } else {
        int_type(true, signed)
    })
}

/// The decimal an integer argument becomes next to a decimal: enough digits for its type.
fn int_as_decimal(t: &DataType) -> Option<(u8, i8)> {
    Some(match int_width(t)? {
        (_, 8) => (3, 0),
        (_, 16) => (5, 0),
        (_, 32) => (10, 0),
        (true, _) => (19, 0),
        (false, _) => (20, 0),
    })
}

fn decimal_parts(t: &DataType) -> Option<(u8, i8)> {
    match t {
        Decimal128(p, s) | Decimal256(p, s) => Some((*p, *s)),
        t => int_as_decimal(t),
    }
}

fn decimal(p: u8, s: i8) -> DataType {
    if p <= 38 {
        Decimal128(p, s)
    } else {
        Decimal256(p.min(76), s)
    }
}

pub fn is_decimal(t: &DataType) -> bool {
    matches!(t, Decimal128(..) | Decimal256(..))
}

/// How the arguments of a numeric binary function are cast, and its result type.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub left: DataType,
    pub right: DataType,
    pub result: DataType,
}

/// Arithmetic (`add`, `subtract`, `multiply`, `divide`) on logical types `a`, `b`.
pub fn arithmetic(op: &str, a: &DataType, b: &DataType) -> Option<Signature> {
    if is_decimal(a) || is_decimal(b) {
        if is_float(a) || is_float(b) {
            return same(Float64, Float64);
        }
        let ((p1, s1), (p2, s2)) = (decimal_parts(a)?, decimal_parts(b)?);
        let (pi, si, pj, sj) = (p1 as i32, s1 as i32, p2 as i32, s2 as i32);
        let (p, s) = match op {
            "add" | "subtract" => {
                let s = si.max(sj);
                ((pi - si).max(pj - sj) + s + 1, s)
            }
            "multiply" => (pi + pj + 1, si + sj),
            _ => return None, // decimal division: left to pyarrow
        };
        if !(1..=76).contains(&p) || !(-128..=127).contains(&s) {
            return None;
        }
        let result = decimal(p as u8, s as i8);
        // Arguments keep their scale (the kernel rescales), widened to the result's width.
        let widen = |p: u8, s: i8| {
            if matches!(result, Decimal256(..)) {
                Decimal256(p, s)
            } else {
                Decimal128(p, s)
            }
        };
        return Some(Signature {
            left: widen(p1, s1),
            right: widen(p2, s2),
            result,
        });
    }
    let t = common_numeric(a, b)?;
    same(t.clone(), t)
}

fn same(arg: DataType, result: DataType) -> Option<Signature> {
    Some(Signature {
        left: arg.clone(),
        right: arg,
        result,
    })
}

/// The common type of a comparison's (or if_else / coalesce's) arguments.
pub fn common(a: &DataType, b: &DataType) -> Option<DataType> {
    if a == b {
        return Some(a.clone());
    }
    if *a == Null {
        return Some(b.clone());
    }
    if *b == Null {
        return Some(a.clone());
    }
    if is_decimal(a) || is_decimal(b) {
        if is_float(a) || is_float(b) {
            return Some(Float64);
        }
        let ((p1, s1), (p2, s2)) = (decimal_parts(a)?, decimal_parts(b)?);
        let s = s1.max(s2) as i32;
        let p = ((p1 as i32 - s1 as i32).max(p2 as i32 - s2 as i32) + s) as u8;
        return Some(decimal(p, s as i8));
    }
    if let Some(t) = common_numeric(a, b) {
        return Some(t);
    }
    if is_string(a) && is_string(b) {
        return Some(LargeUtf8);
    }
    match (a, b) {
        (Timestamp(u1, z1), Timestamp(u2, z2)) if z1.is_some() == z2.is_some() => {
            Some(Timestamp(finer(*u1, *u2), z1.clone()))
        }
        _ => None,
    }
}

fn finer(a: arrow_schema::TimeUnit, b: arrow_schema::TimeUnit) -> arrow_schema::TimeUnit {
    use arrow_schema::TimeUnit::*;
    let rank = |u| match u {
        Second => 0,
        Millisecond => 1,
        Microsecond => 2,
        Nanosecond => 3,
    };
    if rank(a) >= rank(b) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyarrow_promotions() {
        assert_eq!(common_numeric(&Int32, &Int64), Some(Int64));
        assert_eq!(common_numeric(&UInt8, &Int8), Some(Int16));
        assert_eq!(common_numeric(&UInt64, &Int64), Some(Int64));
        assert_eq!(common_numeric(&UInt32, &UInt8), Some(UInt32));
        assert_eq!(common_numeric(&Int64, &Float32), Some(Float32));
        let m = arithmetic("multiply", &Decimal128(15, 2), &Decimal128(16, 2)).unwrap();
        assert_eq!(m.result, Decimal128(32, 4));
        let m = arithmetic("multiply", &Decimal128(18, 4), &Decimal128(21, 2)).unwrap();
        assert_eq!(m.result, Decimal256(40, 6));
        let a = arithmetic("subtract", &Decimal128(1, 0), &Decimal128(15, 2)).unwrap();
        assert_eq!(a.result, Decimal128(16, 2));
    }
}
