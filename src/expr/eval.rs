//! Evaluation of a bound expression over a record batch with arrow-rs kernels.
//!
//! Values are arrays or one-row scalars (a literal, or a call on scalars only), so a literal
//! is never repeated to the batch length until it must be. Where arrow-rs and pyarrow differ,
//! the kernel here follows pyarrow: float comparisons are IEEE (NaN unequal to itself,
//! -0.0 == 0.0), where arrow-ord compares by total order; unchecked integer arithmetic
//! wraps; a null condition in `if_else` gives null.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, Datum, DictionaryArray, PrimitiveArray,
    RecordBatch, Scalar, UInt32Array, new_null_array,
};
use arrow_schema::DataType;

use super::bind::{Arith, Cmp, Logic, Node, NullMatch, Pattern, Phys, strict};
use super::strings;
use crate::error::{Error, Result};

/// Values of keyed sub-expressions over one batch.
#[derive(Default)]
pub struct Memo(hashbrown::HashMap<Arc<str>, Value>);

#[derive(Clone)]
enum Value {
    Array(ArrayRef),
    /// A one-row array standing for every row.
    Scalar(ArrayRef),
}

impl Value {
    fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(a) | Value::Scalar(a) => a,
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    fn datum(&self) -> Box<dyn Datum + '_> {
        match self {
            Value::Array(a) => Box::new(a),
            Value::Scalar(a) => Box::new(Scalar::new(a.clone())),
        }
    }

    /// Same kind (array / scalar) as `self`, holding `a`.
    fn like(&self, a: ArrayRef) -> Value {
        match self {
            Value::Array(_) => Value::Array(a),
            Value::Scalar(_) => Value::Scalar(a),
        }
    }

    /// The value as an array of `len` rows.
    fn into_array(self, len: usize) -> Result<ArrayRef> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(a) => repeat(&a, len),
        }
    }
}

fn repeat(a: &ArrayRef, len: usize) -> Result<ArrayRef> {
    if a.is_null(0) {
        return Ok(new_null_array(a.data_type(), len));
    }
    let idx = UInt32Array::from(vec![0u32; len]);
    Ok(arrow_select::take::take(a.as_ref(), &idx, None)?)
}

/// Both sides scalar → scalar; otherwise an array.
fn combine(l: &Value, r: &Value, a: ArrayRef) -> Value {
    if l.is_scalar() && r.is_scalar() {
        Value::Scalar(a)
    } else {
        Value::Array(a)
    }
}

impl Phys {
    /// The expression over `batch`: an array of its rows, of pyarrow's type (`self.ty`).
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        self.evaluate_with(batch, &mut Memo::default())
    }

    /// [`Phys::evaluate`], sharing the values of sub-expressions already computed for this
    /// batch in `memo` (the columns of one projection share their common sub-expressions).
    pub fn evaluate_with(&self, batch: &RecordBatch, memo: &mut Memo) -> Result<ArrayRef> {
        let a = self.value(batch, memo)?.into_array(batch.num_rows())?;
        if a.data_type() == &self.ty {
            Ok(a)
        } else {
            Ok(arrow_cast::cast_with_options(&a, &self.ty, &strict())?)
        }
    }

    fn value(&self, batch: &RecordBatch, memo: &mut Memo) -> Result<Value> {
        Ok(match &self.node {
            Node::Shared(key, p) => {
                if let Some(v) = memo.0.get(key) {
                    return Ok(v.clone());
                }
                let v = p.value(batch, memo)?;
                memo.0.insert(key.clone(), v.clone());
                v
            }
            Node::Column(i) => Value::Array(batch.column(*i).clone()),
            Node::Literal(a) => Value::Scalar(a.clone()),
            Node::External(f) => Value::Array(f(batch)?),
            Node::Cast(p) => {
                let v = p.value(batch, memo)?;
                let a = match rescale_free_cast(v.array(), &self.out) {
                    Some(a) => a,
                    None => arrow_cast::cast_with_options(v.array(), &self.out, &strict())?,
                };
                v.like(a)
            }
            Node::Arith { op, checked, l, r } => {
                let (lv, rv) = (l.value(batch, memo)?, r.value(batch, memo)?);
                let a = arith(*op, *checked, &lv, &rv, &self.out)?;
                combine(&lv, &rv, a)
            }
            Node::Negate { checked, arg } => {
                let v = arg.value(batch, memo)?;
                let a = if *checked || matches!(self.out, DataType::Decimal128(..)) {
                    arrow_arith::numeric::neg(v.array().as_ref())?
                } else {
                    arrow_arith::numeric::neg_wrapping(v.array().as_ref())?
                };
                v.like(a)
            }
            Node::Cmp { op, l, r } => {
                let (lv, rv) = (l.value(batch, memo)?, r.value(batch, memo)?);
                let a = compare(*op, &lv, &rv)?;
                combine(&lv, &rv, Arc::new(a))
            }
            Node::Logic { op, l, r } => {
                let (lv, rv) = (l.value(batch, memo)?, r.value(batch, memo)?);
                let n = batch.num_rows();
                let scalar = lv.is_scalar() && rv.is_scalar();
                let len = if scalar { 1 } else { n };
                let la = lv.into_array(len)?;
                let ra = rv.into_array(len)?;
                let (la, ra) = (la.as_boolean(), ra.as_boolean());
                let out = match op {
                    Logic::AndKleene => arrow_arith::boolean::and_kleene(la, ra)?,
                    Logic::OrKleene => arrow_arith::boolean::or_kleene(la, ra)?,
                    Logic::And => arrow_arith::boolean::and(la, ra)?,
                    Logic::Or => arrow_arith::boolean::or(la, ra)?,
                    Logic::Xor => arrow_ord::cmp::neq(la, ra)?,
                };
                let out: ArrayRef = Arc::new(out);
                if scalar {
                    Value::Scalar(out)
                } else {
                    Value::Array(out)
                }
            }
            Node::Not(p) => {
                let v = p.value(batch, memo)?;
                let a = arrow_arith::boolean::not(v.array().as_boolean())?;
                v.like(Arc::new(a))
            }
            Node::IsNull { arg, nan_is_null } => {
                let v = arg.value(batch, memo)?;
                let mut m = arrow_arith::boolean::is_null(v.array().as_ref())?;
                if *nan_is_null {
                    if let Some(nan) = is_nan(v.array()) {
                        // Kleene: a null row is already true in `m`.
                        m = arrow_arith::boolean::or_kleene(&m, &nan)?;
                    }
                }
                v.like(Arc::new(m))
            }
            Node::IsValid(p) => {
                let v = p.value(batch, memo)?;
                let m = arrow_arith::boolean::is_not_null(v.array().as_ref())?;
                v.like(Arc::new(m))
            }
            Node::IsIn { arg, set, nulls } => {
                let v = arg.value(batch, memo)?;
                let a = by_values(v.array(), |vals| is_in(vals, set, *nulls))?;
                let a = match nulls {
                    NullMatch::EmitNull => a,
                    // A null row (a null dictionary key included) is not "unknown" here.
                    _ if a.null_count() > 0 => {
                        let null_hit = *nulls == NullMatch::Match && set.null_count() > 0;
                        fill_nulls(&a, null_hit)
                    }
                    _ => a,
                };
                v.like(Arc::new(a))
            }
            Node::Pattern { kind, arg, pattern } => {
                let v = arg.value(batch, memo)?;
                let a = by_values(v.array(), |vals| {
                    let pat = arrow_cast::cast(
                        &(Arc::new(arrow_array::StringArray::from(vec![pattern.as_str()]))
                            as ArrayRef),
                        vals.data_type(),
                    )?;
                    let pat = Scalar::new(pat);
                    let vals = vals.as_ref();
                    Ok(match kind {
                        Pattern::Like => arrow_string::like::like(&vals, &pat)?,
                        Pattern::ILike => arrow_string::like::ilike(&vals, &pat)?,
                        Pattern::StartsWith => arrow_string::like::starts_with(&vals, &pat)?,
                        Pattern::EndsWith => arrow_string::like::ends_with(&vals, &pat)?,
                        Pattern::Contains => arrow_string::like::contains(&vals, &pat)?,
                    })
                })?;
                v.like(Arc::new(a))
            }
            Node::IfElse(c, a, b) => {
                let n = batch.num_rows();
                let cv = c.value(batch, memo)?;
                let (av, bv) = (a.value(batch, memo)?, b.value(batch, memo)?);
                if let Value::Scalar(cs) = &cv {
                    return Ok(if cs.is_null(0) {
                        Value::Scalar(new_null_array(&self.out, 1))
                    } else if cs.as_boolean().value(0) {
                        av
                    } else {
                        bv
                    });
                }
                let cond = cv.array().as_boolean();
                let out = arrow_select::zip::zip(cond, &*av.datum(), &*bv.datum())?;
                let out = if cond.null_count() > 0 {
                    let null = arrow_arith::boolean::is_null(cond)?;
                    arrow_select::nullif::nullif(&out, &null)?
                } else {
                    out
                };
                debug_assert_eq!(out.len(), n);
                Value::Array(out)
            }
            Node::Coalesce(args) => {
                let n = batch.num_rows();
                let mut acc = args[0].value(batch, memo)?;
                for p in &args[1..] {
                    if acc.array().null_count() == 0 {
                        break;
                    }
                    let next = p.value(batch, memo)?;
                    let len = if acc.is_scalar() && next.is_scalar() {
                        1
                    } else {
                        n
                    };
                    let mask = arrow_arith::boolean::is_not_null(acc.array().as_ref())?;
                    let mask = if acc.is_scalar() && len > 1 {
                        repeat(&(Arc::new(mask) as ArrayRef), len)?
                            .as_boolean()
                            .clone()
                    } else {
                        mask
                    };
                    let out = arrow_select::zip::zip(&mask, &*acc.datum(), &*next.datum())?;
                    acc = if len == 1 && acc.is_scalar() {
                        Value::Scalar(out)
                    } else {
                        Value::Array(out)
                    };
                }
                acc
            }
            Node::DatePart(p, part) => {
                let v = p.value(batch, memo)?;
                let a = arrow_arith::temporal::date_part(v.array().as_ref(), *part)?;
                v.like(arrow_cast::cast(&a, &DataType::Int64)?)
            }
            Node::Length(p) => {
                let v = p.value(batch, memo)?;
                v.like(strings::length(v.array())?)
            }
            Node::Slice { arg, start, stop } => {
                let v = arg.value(batch, memo)?;
                v.like(strings::slice(v.array(), *start, *stop)?)
            }
            Node::Trim(p, how) => {
                let v = p.value(batch, memo)?;
                v.like(strings::trim(v.array(), how)?)
            }
            Node::Case { arg, upper, backup } => {
                let v = arg.value(batch, memo)?;
                match backup {
                    Some(f) if !strings::is_ascii(v.array()) => {
                        let lower = match upper {
                            false => strings::unicode_lower(v.array())?,
                            true => None,
                        };
                        match lower {
                            Some(a) => v.like(a),
                            None => {
                                let a = f(batch)?;
                                if a.data_type() == &self.out {
                                    Value::Array(a)
                                } else {
                                    Value::Array(arrow_cast::cast_with_options(
                                        &a,
                                        &self.out,
                                        &strict(),
                                    )?)
                                }
                            }
                        }
                    }
                    _ => v.like(strings::ascii_case(v.array(), *upper)?),
                }
            }
            Node::CaseWhen {
                conds,
                values,
                otherwise,
            } => {
                let n = batch.num_rows();
                let mut acc = match otherwise {
                    Some(o) => o.value(batch, memo)?.into_array(n)?,
                    None => new_null_array(&self.out, n),
                };
                // From the last branch to the first: an earlier true condition wins.
                for (c, v) in conds.iter().zip(values).rev() {
                    let c = c.value(batch, memo)?.into_array(n)?;
                    let c = c.as_boolean();
                    let c = if c.null_count() > 0 {
                        fill_nulls(c, false)
                    } else {
                        c.clone()
                    };
                    let v = v.value(batch, memo)?;
                    acc = arrow_select::zip::zip(&c, &*v.datum(), &acc)?;
                }
                Value::Array(acc)
            }
        })
    }
}

/// Decimal128 arithmetic whose result fits its precision by construction (pyarrow's result
/// precision is at most 38, so `|a| < 10^p1, |b| < 10^p2` bounds every sum and product
/// below 10^38): plain wrapping i128 operations, vectorized, no per-row overflow branch.
/// `None` when the arguments are not two decimal128 values (one may be a scalar).
fn decimal128_arith(op: Arith, l: &Value, r: &Value, out: &DataType) -> Option<Result<ArrayRef>> {
    let (_, s) = decimal_type(out)?;
    let s = &s;
    let (p1, s1) = decimal_type(l.array().data_type())?;
    let (p2, s2) = decimal_type(r.array().data_type())?;
    if op == Arith::Div || (l.is_scalar() && r.is_scalar()) {
        return None;
    }
    let a = match op {
        // Both factors below 10^18 < 2^63: one 64 x 64 -> 128-bit multiply.
        Arith::Mul if p1 <= 18 && p2 <= 18 => {
            decimal128_binary(l, r, out, |a, b| (a as i64 as i128) * (b as i64 as i128))
        }
        Arith::Mul => decimal128_binary(l, r, out, i128::wrapping_mul),
        // Add / subtract align both scales to the result's.
        _ => {
            let fl = 10i128.checked_pow((*s - s1) as u32)?;
            let fr = 10i128.checked_pow((*s - s2) as u32)?;
            match (op, fl, fr) {
                (Arith::Add, 1, 1) => decimal128_binary(l, r, out, i128::wrapping_add),
                (Arith::Sub, 1, 1) => decimal128_binary(l, r, out, i128::wrapping_sub),
                (Arith::Add, ..) => decimal128_binary(l, r, out, move |a, b| {
                    a.wrapping_mul(fl).wrapping_add(b.wrapping_mul(fr))
                }),
                _ => decimal128_binary(l, r, out, move |a, b| {
                    a.wrapping_mul(fl).wrapping_sub(b.wrapping_mul(fr))
                }),
            }
        }
    };
    Some(a)
}

/// Precision and scale of a decimal64 / decimal128 type.
fn decimal_type(t: &DataType) -> Option<(u8, i8)> {
    match t {
        &DataType::Decimal64(p, s) | &DataType::Decimal128(p, s) => Some((p, s)),
        _ => None,
    }
}

/// `f` over two decimal64 / decimal128 values (at most one a scalar; 64-bit ones read in
/// place), the null of a null scalar; the result a decimal64 or decimal128 array of type
/// `out` (whose precision bounds every result, so narrowing to 64 bits is exact).
fn decimal128_binary(
    l: &Value,
    r: &Value,
    out: &DataType,
    f: impl Fn(i128, i128) -> i128,
) -> Result<ArrayRef> {
    use DataType::Decimal64 as D64;
    macro_rules! go {
        ($a:ty, $b:ty) => {
            match out {
                D64(..) => {
                    decimal_binary::<$a, $b, Decimal64Type>(l, r, out, |a, b| f(a, b) as i64)
                }
                _ => decimal_binary::<$a, $b, Decimal128Type>(l, r, out, &f),
            }
        };
    }
    match (l.array().data_type(), r.array().data_type()) {
        (D64(..), D64(..)) => go!(Decimal64Type, Decimal64Type),
        (D64(..), _) => go!(Decimal64Type, Decimal128Type),
        (_, D64(..)) => go!(Decimal128Type, Decimal64Type),
        _ => go!(Decimal128Type, Decimal128Type),
    }
}

fn decimal_binary<A, B, O>(
    l: &Value,
    r: &Value,
    out: &DataType,
    f: impl Fn(i128, i128) -> O::Native,
) -> Result<ArrayRef>
where
    A: ArrowPrimitiveType,
    B: ArrowPrimitiveType,
    O: DecimalType,
    A::Native: Into<i128>,
    B::Native: Into<i128>,
{
    let (la, ra) = (l.array().as_primitive::<A>(), r.array().as_primitive::<B>());
    let a: PrimitiveArray<O> = match (l, r) {
        (Value::Array(_), Value::Scalar(_)) => match ra.is_null(0) {
            true => return Ok(new_null_array(out, la.len())),
            false => {
                let b = ra.value(0).into();
                la.unary(|a| f(a.into(), b))
            }
        },
        (Value::Scalar(_), Value::Array(_)) => match la.is_null(0) {
            true => return Ok(new_null_array(out, ra.len())),
            false => {
                let a = la.value(0).into();
                ra.unary(|b| f(a, b.into()))
            }
        },
        _ => arrow_arith::arity::binary(la, ra, |a, b| f(a.into(), b.into()))?,
    };
    let (p, s) = decimal_type(out).expect("a decimal result");
    Ok(Arc::new(a.with_precision_and_scale(p, s)?))
}

/// A decimal -> decimal128 cast that keeps the scale needs no arithmetic: a wider precision
/// only relabels the values (or widens decimal64 ones to 128 bits), a narrower one checks
/// that every valid value fits (one vectorized pass). `None` (cast by arrow, which also
/// words the error) for any other cast or a value that does not fit.
fn rescale_free_cast(a: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    let (p1, s1) = decimal_type(a.data_type())?;
    let &DataType::Decimal128(p2, s2) = to else {
        return None;
    };
    if s1 != s2 || p2 > 38 || p2 == 0 {
        return None;
    }
    let out = match a.data_type() {
        DataType::Decimal64(..) => {
            let d = a.as_primitive::<Decimal64Type>();
            (p2 >= p1 || all_fit(d, p2)).then(|| d.unary::<_, Decimal128Type>(i128::from))?
        }
        _ => {
            let d = a.as_primitive::<Decimal128Type>();
            (p2 >= p1 || all_fit(d, p2)).then(|| d.clone())?
        }
    };
    Some(Arc::new(out.with_precision_and_scale(p2, s2).ok()?))
}

/// Whether every valid value of `d` has at most `p` digits.
fn all_fit<T: ArrowPrimitiveType>(d: &PrimitiveArray<T>, p: u8) -> bool
where
    T::Native: Into<i128>,
{
    let max = 10i128.pow(u32::from(p)) - 1;
    let fits = |v: T::Native| (-max..=max).contains(&v.into());
    match d.nulls() {
        None => d.values().iter().fold(true, |ok, &v| ok & fits(v)),
        Some(n) => d
            .values()
            .iter()
            .zip(n.iter())
            .all(|(&v, valid)| !valid || fits(v)),
    }
}

fn arith(op: Arith, checked: bool, l: &Value, r: &Value, out: &DataType) -> Result<ArrayRef> {
    use arrow_arith::numeric as n;
    if let Some(a) = decimal128_arith(op, l, r, out) {
        return a;
    }
    // The general path: decimal64 inputs widened, a decimal64 result narrowed after.
    if let &DataType::Decimal64(p, s) = out {
        let wide = |v: &Value| -> Result<Value> {
            Ok(match v.array().data_type() {
                &DataType::Decimal64(p, s) => {
                    v.like(arrow_cast::cast(v.array(), &DataType::Decimal128(p, s))?)
                }
                _ => v.clone(),
            })
        };
        let a = arith(
            op,
            checked,
            &wide(l)?,
            &wide(r)?,
            &DataType::Decimal128(p, s),
        )?;
        return Ok(arrow_cast::cast_with_options(&a, out, &strict())?);
    }
    let (ld, rd) = (l.datum(), r.datum());
    let (ld, rd) = (&*ld, &*rd);
    let decimal = matches!(out, DataType::Decimal128(..) | DataType::Decimal256(..));
    let a = match (op, checked || decimal) {
        (Arith::Add, true) => n::add(ld, rd)?,
        (Arith::Add, false) => n::add_wrapping(ld, rd)?,
        (Arith::Sub, true) => n::sub(ld, rd)?,
        (Arith::Sub, false) => n::sub_wrapping(ld, rd)?,
        (Arith::Mul, true) => n::mul(ld, rd)?,
        (Arith::Mul, false) => n::mul_wrapping(ld, rd)?,
        (Arith::Div, _) => n::div(ld, rd)?,
    };
    // arrow-rs sizes a decimal result's precision its own way; the digits are pyarrow's.
    Ok(match (out, a.data_type()) {
        (DataType::Decimal128(p, s), DataType::Decimal128(..)) => Arc::new(
            a.as_primitive::<Decimal128Type>()
                .clone()
                .with_precision_and_scale(*p, *s)?,
        ),
        (DataType::Decimal256(p, s), DataType::Decimal256(..)) => Arc::new(
            a.as_primitive::<Decimal256Type>()
                .clone()
                .with_precision_and_scale(*p, *s)?,
        ),
        _ => a,
    })
}

fn compare(op: Cmp, l: &Value, r: &Value) -> Result<BooleanArray> {
    use arrow_ord::cmp;
    macro_rules! float {
        ($t:ty) => {
            return Ok(float_cmp::<$t>(op, l, r))
        };
    }
    match l.array().data_type() {
        DataType::Float64 => float!(Float64Type),
        DataType::Float32 => float!(Float32Type),
        DataType::Float16 => float!(Float16Type),
        _ => {}
    }
    let f = |a: &dyn Datum, b: &dyn Datum| -> Result<BooleanArray> {
        Ok(match op {
            Cmp::Eq => cmp::eq(a, b)?,
            Cmp::Ne => cmp::neq(a, b)?,
            Cmp::Lt => cmp::lt(a, b)?,
            Cmp::Le => cmp::lt_eq(a, b)?,
            Cmp::Gt => cmp::gt(a, b)?,
            Cmp::Ge => cmp::gt_eq(a, b)?,
        })
    };
    // A dictionary array against a scalar: compare the dictionary's values once.
    match (l, r) {
        (Value::Array(a), Value::Scalar(s))
            if matches!(a.data_type(), DataType::Dictionary(..)) =>
        {
            by_values(a, |vals| f(vals, &Scalar::new(s.clone())))
        }
        (Value::Scalar(s), Value::Array(a))
            if matches!(a.data_type(), DataType::Dictionary(..)) =>
        {
            by_values(a, |vals| f(&Scalar::new(s.clone()), vals))
        }
        _ => f(&*l.datum(), &*r.datum()),
    }
}

/// IEEE comparison (pyarrow's): NaN compares false (true for `!=`), -0.0 == 0.0.
fn float_cmp<T: ArrowPrimitiveType>(op: Cmp, l: &Value, r: &Value) -> BooleanArray
where
    T::Native: PartialOrd,
{
    let f = move |a: T::Native, b: T::Native| match op {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    };
    let (la, ra) = (l.array().as_primitive::<T>(), r.array().as_primitive::<T>());
    match (l, r) {
        (Value::Array(_), Value::Scalar(_)) | (Value::Scalar(_), Value::Scalar(_))
            if ra.is_null(0) =>
        {
            BooleanArray::new_null(la.len())
        }
        (Value::Scalar(_), Value::Array(_)) if la.is_null(0) => BooleanArray::new_null(ra.len()),
        (Value::Array(_), Value::Scalar(_)) => {
            let b = ra.value(0);
            BooleanArray::from_unary(la, |a| f(a, b))
        }
        (Value::Scalar(_), Value::Array(_)) => {
            let a = la.value(0);
            BooleanArray::from_unary(ra, |b| f(a, b))
        }
        _ => BooleanArray::from_binary(la, ra, f),
    }
}

fn is_nan(a: &ArrayRef) -> Option<BooleanArray> {
    Some(match a.data_type() {
        DataType::Float64 => {
            BooleanArray::from_unary(a.as_primitive::<Float64Type>(), |x| x.is_nan())
        }
        DataType::Float32 => {
            BooleanArray::from_unary(a.as_primitive::<Float32Type>(), |x| x.is_nan())
        }
        DataType::Float16 => {
            BooleanArray::from_unary(a.as_primitive::<Float16Type>(), |x| x.is_nan())
        }
        _ => return None,
    })
}

/// `f` over a dictionary's values, spread to its rows by the keys (a null key gives null);
/// `f` of the array itself otherwise.
fn by_values(
    a: &ArrayRef,
    f: impl FnOnce(&ArrayRef) -> Result<BooleanArray>,
) -> Result<BooleanArray> {
    macro_rules! dict {
        ($k:ty) => {{
            let d: &DictionaryArray<$k> = a.as_dictionary::<$k>();
            let per_value = f(d.values())?;
            let out = arrow_select::take::take(&per_value, d.keys(), None)?;
            Ok(out.as_boolean().clone())
        }};
    }
    match a.data_type() {
        DataType::Dictionary(k, _) => match k.as_ref() {
            DataType::Int8 => dict!(Int8Type),
            DataType::Int16 => dict!(Int16Type),
            DataType::Int32 => dict!(Int32Type),
            DataType::Int64 => dict!(Int64Type),
            DataType::UInt8 => dict!(UInt8Type),
            DataType::UInt16 => dict!(UInt16Type),
            DataType::UInt32 => dict!(UInt32Type),
            DataType::UInt64 => dict!(UInt64Type),
            t => Err(Error::Type(format!("dictionary keys of type {t}"))),
        },
        _ => f(a),
    }
}

fn fill_nulls(a: &BooleanArray, with: bool) -> BooleanArray {
    a.iter().map(|v| Some(v.unwrap_or(with))).collect()
}

/// Membership of each row of `vals` in `set` (already cast to `vals`' logical type). A null
/// row gives null here; the caller applies the null-matching rule.
fn is_in(vals: &ArrayRef, set: &ArrayRef, _nulls: NullMatch) -> Result<BooleanArray> {
    use hashbrown::HashSet;
    if let Some(strings) = string_values(set) {
        let members: HashSet<&[u8]> = strings.into_iter().flatten().collect();
        let rows =
            string_values(vals).ok_or_else(|| Error::Type("is_in on a non-string".into()))?;
        return Ok(rows
            .into_iter()
            .map(|v| v.map(|v| members.contains(v)))
            .collect());
    }
    let members: HashSet<i128> = int_values(set)?.into_iter().flatten().collect();
    Ok(int_values(vals)?
        .into_iter()
        .map(|v| v.map(|v| members.contains(&v)))
        .collect())
}

fn string_values(a: &ArrayRef) -> Option<Vec<Option<&[u8]>>> {
    Some(match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::as_bytes))
            .collect(),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .map(|v| v.map(str::as_bytes))
            .collect(),
        DataType::Utf8View => a
            .as_string_view()
            .iter()
            .map(|v| v.map(str::as_bytes))
            .collect(),
        _ => return None,
    })
}

fn int_values(a: &ArrayRef) -> Result<Vec<Option<i128>>> {
    fn ints<T: ArrowPrimitiveType>(a: &ArrayRef) -> Vec<Option<i128>>
    where
        T::Native: Into<i128>,
    {
        let p: &PrimitiveArray<T> = a.as_primitive::<T>();
        p.iter().map(|v| v.map(Into::into)).collect()
    }
    Ok(match a.data_type() {
        DataType::Int8 => ints::<Int8Type>(a),
        DataType::Int16 => ints::<Int16Type>(a),
        DataType::Int32 => ints::<Int32Type>(a),
        DataType::Int64 => ints::<Int64Type>(a),
        DataType::UInt8 => ints::<UInt8Type>(a),
        DataType::UInt16 => ints::<UInt16Type>(a),
        DataType::UInt32 => ints::<UInt32Type>(a),
        DataType::UInt64 => ints::<UInt64Type>(a),
        DataType::Date32 => ints::<Date32Type>(a),
        DataType::Null => vec![None; a.len()],
        t => return Err(Error::Type(format!("is_in on {t}"))),
    })
}
