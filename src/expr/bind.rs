//! Binding: an [`Expr`] resolved against an input schema into a [`Phys`] tree — columns to
//! indices, pyarrow's implicit casts made explicit, each call checked against what
//! [`super::eval`] implements. A call it does not implement (or an argument type it does not
//! take) is handed to the caller's fallback as one sub-expression.
//!
//! Every node carries two types: `ty`, the type pyarrow gives the value (view strings seen as
//! large strings, dictionaries as their values), and `out`, the type of the array evaluation
//! actually yields (a column keeps its layout; comparisons and string predicates read view
//! and dictionary arrays natively).

use std::sync::Arc;

use arrow_arith::temporal::DatePart;
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch};
use arrow_schema::{DataType, Schema};

use super::strings::Trim;
use super::types::{self, logical};
use super::{Call, Expr};
use crate::error::{Error, Result};

/// A sub-expression evaluated outside this module (by pyarrow, through the bindings).
pub type External = Arc<dyn Fn(&RecordBatch) -> Result<ArrayRef> + Send + Sync>;

/// What a fallback resolves to: the sub-expression's type and how to evaluate it.
pub struct Fallback {
    pub ty: DataType,
    pub eval: External,
}

/// A bound expression (see the module docs).
#[derive(Clone)]
pub struct Phys {
    pub(super) node: Node,
    /// pyarrow's type of the value.
    pub ty: DataType,
    /// The type of the array evaluation yields.
    pub out: DataType,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Logic {
    AndKleene,
    OrKleene,
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Pattern {
    Like,
    ILike,
    StartsWith,
    EndsWith,
    Contains,
}

/// `is_in`'s `null_matching_behavior`: MATCH (a null matches a null in the set), SKIP
/// (nulls never match), EMIT_NULL (a null input gives null).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum NullMatch {
    Match,
    Skip,
    EmitNull,
}

#[derive(Clone)]
pub(super) enum Node {
    Column(usize),
    Literal(ArrayRef),
    Cast(Box<Phys>),
    Arith {
        op: Arith,
        checked: bool,
        l: Box<Phys>,
        r: Box<Phys>,
    },
    Negate {
        checked: bool,
        arg: Box<Phys>,
    },
    Cmp {
        op: Cmp,
        l: Box<Phys>,
        r: Box<Phys>,
    },
    Logic {
        op: Logic,
        l: Box<Phys>,
        r: Box<Phys>,
    },
    Not(Box<Phys>),
    IsNull {
        arg: Box<Phys>,
        nan_is_null: bool,
    },
    IsValid(Box<Phys>),
    IsIn {
        arg: Box<Phys>,
        set: ArrayRef,
        nulls: NullMatch,
    },
    Pattern {
        kind: Pattern,
        arg: Box<Phys>,
        pattern: String,
    },
    IfElse(Box<Phys>, Box<Phys>, Box<Phys>),
    Coalesce(Vec<Phys>),
    DatePart(Box<Phys>, DatePart),
    /// The arguments are plain `string` / `large_string` values.
    Length(Box<Phys>),
    Slice {
        arg: Box<Phys>,
        start: i64,
        stop: i64,
    },
    Trim(Box<Phys>, Trim),
    /// ASCII case mapping; `backup` (pyarrow's `utf8_upper` / `utf8_lower`) takes the
    /// batches with other characters.
    Case {
        arg: Box<Phys>,
        upper: bool,
        backup: Option<External>,
    },
    /// `case_when`: the value of the first true condition (a null one is false), else
    /// `otherwise` (null when absent).
    CaseWhen {
        conds: Vec<Phys>,
        values: Vec<Phys>,
        otherwise: Option<Box<Phys>>,
    },
    External(External),
    /// A call, keyed by its canonical text: evaluated once per batch however often it occurs.
    Shared(Arc<str>, Box<Phys>),
}

/// Whom a fallback is asked for: a call evaluated elsewhere, or the backup of a call
/// evaluated here for the batches it takes (`utf8_upper` over ASCII text).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Need {
    Whole,
    Backup,
}

/// Bind `expr` to `schema`. `fallback` is asked for every call this module cannot evaluate;
/// without one (it returns `Err`), such a call fails the binding.
pub fn bind(
    expr: &Expr,
    schema: &Schema,
    fallback: &mut dyn FnMut(&Call, Need) -> Result<Fallback>,
) -> Result<Phys> {
    match expr {
        Expr::Field(name) => {
            let (i, f) = schema.column_with_name(name).ok_or_else(|| {
                Error::column_not_found(name, schema.fields().iter().map(|f| f.name().as_str()))
            })?;
            let ty = match f.data_type() {
                &DataType::Decimal64(p, s) if f.metadata().contains_key(super::NARROWED) => {
                    DataType::Decimal128(p, s)
                }
                t => logical(t),
            };
            Ok(Phys {
                node: Node::Column(i),
                ty,
                out: f.data_type().clone(),
            })
        }
        Expr::Literal(a) => Ok(literal(a.clone())),
        Expr::Call(call) => {
            let mut arg = |a: &Expr| -> Result<Phys> {
                Ok(match a {
                    Expr::Literal(l) => literal(narrow(l)),
                    a => bind(a, schema, fallback)?,
                })
            };
            let native = match (call.name.as_str(), call.args.first()) {
                // case_when's conditions come as one make_struct: bound one by one.
                ("case_when", Some(Expr::Call(conds))) if conds.name == "make_struct" => {
                    let conds = conds.args.iter().map(&mut arg).collect::<Result<_>>()?;
                    let values = call.args[1..].iter().map(&mut arg).collect::<Result<_>>()?;
                    case_when(conds, values)
                }
                _ => {
                    let args = call.args.iter().map(arg).collect::<Result<Vec<_>>>()?;
                    native(call, args)
                }
            };
            let p = match native {
                Some(mut p) => {
                    if let Node::Case { backup, .. } = &mut p.node
                        && call.name.starts_with("utf8_")
                    {
                        *backup = Some(fallback(call, Need::Backup)?.eval);
                    }
                    p
                }
                None => {
                    let fb = fallback(call, Need::Whole)?;
                    Phys {
                        out: fb.ty.clone(),
                        ty: fb.ty,
                        node: Node::External(fb.eval),
                    }
                }
            };
            Ok(Phys {
                ty: p.ty.clone(),
                out: p.out.clone(),
                node: Node::Shared(expr.canonical().into(), Box::new(p)),
            })
        }
    }
}

fn literal(a: ArrayRef) -> Phys {
    Phys {
        ty: logical(a.data_type()),
        out: a.data_type().clone(),
        node: Node::Literal(a),
    }
}

/// A numeric literal argument as pyarrow binds it: an integer in the smallest integer type
/// of its signedness that holds it, a float in float32 when that is exact.
fn narrow(a: &ArrayRef) -> ArrayRef {
    use DataType::*;
    if a.is_null(0) {
        return a.clone();
    }
    let candidates: &[DataType] = match a.data_type() {
        Int16 | Int32 | Int64 => &[Int8, Int16, Int32],
        UInt16 | UInt32 | UInt64 => &[UInt8, UInt16, UInt32],
        Float64 => &[Float32],
        _ => &[],
    };
    for t in candidates {
        if let Some(n) = exact_cast(a, t) {
            return n;
        }
    }
    a.clone()
}

/// `a` cast to `to` when the value survives the round trip unchanged.
fn exact_cast(a: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    let n = arrow_cast::cast_with_options(a, to, &strict()).ok()?;
    let back = arrow_cast::cast_with_options(&n, a.data_type(), &strict()).ok()?;
    (back.as_ref() == a.as_ref()).then_some(n)
}

/// `p` cast to `to` (a no-op when it already yields `to`). Only casts pyarrow performs
/// identically are made (see [`castable`]); a literal is cast now, when exact.
fn cast(p: Phys, to: &DataType) -> Option<Phys> {
    if &p.out == to {
        return Some(p);
    }
    if let Node::Literal(a) = &p.node {
        let to_storage = match to {
            DataType::Dictionary(_, v) => v.as_ref(),
            t => t,
        };
        return exact_cast(a, to_storage).map(literal);
    }
    if !castable(&p.out, to) {
        return None;
    }
    Some(Phys {
        ty: logical(to),
        out: to.clone(),
        node: Node::Cast(Box::new(p)),
    })
}

/// Casts whose result (and errors) equal pyarrow's safe cast: integer widening or checked
/// narrowing, integers to decimals, decimals to wider decimals of a scale not smaller, small
/// integers to floats (decimal to float rounds differently from pyarrow in the last bit), string layouts to one another, dictionaries to
/// their values, null to anything, dates to timestamps.
pub(super) fn castable(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || *from == Null {
        return true;
    }
    match (from, to) {
        (Dictionary(_, v), to) => **v == *to || castable(v, to),
        (a, b) if types::is_int(a) && types::is_int(b) => true,
        (Boolean, b) if types::is_int(b) => true,
        // pyarrow refuses (even for null rows) a decimal without room for every integer.
        (a, Decimal128(p, s) | Decimal256(p, s)) if types::is_int(a) => {
            let digits = match a {
                Int8 | UInt8 => 3,
                Int16 | UInt16 => 5,
                Int32 | UInt32 => 10,
                UInt64 => 20,
                _ => 19,
            };
            i32::from(*p) - i32::from(*s) >= digits
        }
        (
            Decimal64(_, s1) | Decimal128(_, s1) | Decimal256(_, s1),
            Decimal128(_, s2) | Decimal256(_, s2),
        ) => s2 >= s1,
        (Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32 | Float32, Float64) => true,
        (Int8 | Int16 | UInt8 | UInt16, Float32) => true,
        (a, b) if types::is_string(a) && types::is_string(b) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Date32, Date64 | Timestamp(_, None)) => true,
        _ => false,
    }
}

fn bx(p: Phys) -> Box<Phys> {
    Box::new(p)
}

fn option<'a>(call: &'a Call, name: &str) -> Option<&'a ArrayRef> {
    call.options.as_ref()?.column_by_name(name)
}

fn bool_option(call: &Call, name: &str) -> Option<bool> {
    option(call, name)?
        .as_any()
        .downcast_ref::<arrow_array::BooleanArray>()
        .filter(|a| a.len() == 1 && a.is_valid(0))
        .map(|a| a.value(0))
}

fn string_option(call: &Call, name: &str) -> Option<String> {
    let a = option(call, name)?;
    let a = arrow_cast::cast(a, &DataType::Utf8).ok()?;
    let a = a.as_any().downcast_ref::<arrow_array::StringArray>()?;
    (a.len() == 1 && a.is_valid(0)).then(|| a.value(0).to_string())
}

/// The bound call, or `None` when it is not implemented here for these argument types.
fn native(call: &Call, mut args: Vec<Phys>) -> Option<Phys> {
    use DataType::*;
    let name = call.name.as_str();
    let (base, checked) = match name.strip_suffix("_checked") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let bool_p = |node, out: DataType| Phys {
        node,
        ty: Boolean,
        out,
    };
    match (base, args.len()) {
        ("add" | "subtract" | "multiply" | "divide", 2) => {
            let op = match base {
                "add" => Arith::Add,
                "subtract" => Arith::Sub,
                "multiply" => Arith::Mul,
                _ => Arith::Div,
            };
            let r = args.pop()?;
            let l = args.pop()?;
            let sig = types::arithmetic(base, &l.ty, &r.ty)?;
            // Float division by zero: pyarrow's checked variant raises, arrow-rs' does not.
            if op == Arith::Div && checked && types::is_float(&sig.result) {
                return None;
            }
            // Decimal64 values are read in place where the signature keeps their type.
            let keep = |p: &Phys, to: &DataType| {
                op != Arith::Div
                    && matches!(p.out, Decimal64(..))
                    && matches!(sig.result, Decimal128(..))
                    && p.ty == *to
            };
            let l = if keep(&l, &sig.left) {
                l
            } else {
                cast(l, &sig.left)?
            };
            let r = if keep(&r, &sig.right) {
                r
            } else {
                cast(r, &sig.right)?
            };
            Some(Phys {
                node: Node::Arith {
                    op,
                    checked,
                    l: bx(l),
                    r: bx(r),
                },
                ty: sig.result.clone(),
                out: sig.result,
            })
        }
        ("negate", 1) => {
            let a = args.pop()?;
            if !(types::is_int(&a.ty) && matches!(a.ty, Int8 | Int16 | Int32 | Int64)
                || types::is_float(&a.ty)
                || matches!(a.ty, Decimal128(..)))
            {
                return None;
            }
            let a = cast(a.clone(), &a.ty)?;
            Some(Phys {
                ty: a.ty.clone(),
                out: a.ty.clone(),
                node: Node::Negate {
                    checked,
                    arg: bx(a),
                },
            })
        }
        ("equal" | "not_equal" | "less" | "less_equal" | "greater" | "greater_equal", 2) => {
            let op = match base {
                "equal" => Cmp::Eq,
                "not_equal" => Cmp::Ne,
                "less" => Cmp::Lt,
                "less_equal" => Cmp::Le,
                "greater" => Cmp::Gt,
                _ => Cmp::Ge,
            };
            let r = args.pop()?;
            let l = args.pop()?;
            let t = types::common(&l.ty, &r.ty)?;
            let (l, r) = if types::is_string(&t) || t == Binary || t == LargeBinary {
                // Strings compare in their own layout: the other side's scalar is cast to it.
                string_pair(l, r)?
            } else if let Some(pair) = decimal64_pair(&l, &r) {
                pair
            } else {
                (cast(l, &t)?, cast(r, &t)?)
            };
            let supported = types::is_int(&t)
                || types::is_float(&t)
                || types::is_decimal(&t)
                || types::is_string(&t)
                || matches!(
                    t,
                    Boolean | Date32 | Date64 | Timestamp(..) | Duration(_) | Binary | LargeBinary
                );
            supported.then(|| {
                bool_p(
                    Node::Cmp {
                        op,
                        l: bx(l),
                        r: bx(r),
                    },
                    Boolean,
                )
            })
        }
        ("and_kleene" | "or_kleene" | "and" | "or" | "xor", 2) => {
            let op = match base {
                "and_kleene" => Logic::AndKleene,
                "or_kleene" => Logic::OrKleene,
                "and" => Logic::And,
                "or" => Logic::Or,
                _ => Logic::Xor,
            };
            let r = cast(args.pop()?, &Boolean)?;
            let l = cast(args.pop()?, &Boolean)?;
            Some(bool_p(
                Node::Logic {
                    op,
                    l: bx(l),
                    r: bx(r),
                },
                Boolean,
            ))
        }
        ("invert", 1) => {
            let a = cast(args.pop()?, &Boolean)?;
            Some(bool_p(Node::Not(bx(a)), Boolean))
        }
        ("is_null", 1) => {
            let nan_is_null = bool_option(call, "nan_is_null").unwrap_or(false);
            let a = args.pop()?;
            Some(bool_p(
                Node::IsNull {
                    arg: bx(a),
                    nan_is_null,
                },
                Boolean,
            ))
        }
        ("is_valid", 1) => Some(bool_p(Node::IsValid(bx(args.pop()?)), Boolean)),
        ("is_in", 1) => {
            let a = args.pop()?;
            let nulls = match option(call, "null_matching_behavior").and_then(|o| {
                o.as_any()
                    .downcast_ref::<arrow_array::UInt32Array>()
                    .map(|u| u.value(0))
            }) {
                None | Some(0) => NullMatch::Match,
                Some(1) => NullMatch::Skip,
                Some(2) => NullMatch::EmitNull,
                _ => return None,
            };
            let list = option(call, "value_set")?
                .as_any()
                .downcast_ref::<ListArray>()?;
            let set = list.value(0);
            let target = if types::is_string(&a.ty) {
                Utf8
            } else if types::is_int(&a.ty) || matches!(a.ty, Date32) {
                a.ty.clone()
            } else {
                return None;
            };
            let st = logical(set.data_type());
            if !(types::is_string(&st) && target == Utf8
                || st == target
                || types::is_int(&st) && types::is_int(&target)
                || st == Null)
            {
                return None;
            }
            let set = arrow_cast::cast_with_options(&set, &target, &strict()).ok()?;
            Some(bool_p(
                Node::IsIn {
                    arg: bx(a),
                    set,
                    nulls,
                },
                Boolean,
            ))
        }
        ("match_like" | "starts_with" | "ends_with" | "match_substring", 1) => {
            let a = args.pop()?;
            if !types::is_string(&a.ty) {
                return None;
            }
            let pattern = string_option(call, "pattern")?;
            let ignore_case = bool_option(call, "ignore_case").unwrap_or(false);
            let kind = match (base, ignore_case) {
                ("match_like", false) => Pattern::Like,
                ("match_like", true) if pattern.is_ascii() => Pattern::ILike,
                ("starts_with", false) => Pattern::StartsWith,
                ("ends_with", false) => Pattern::EndsWith,
                ("match_substring", false) => Pattern::Contains,
                _ => return None,
            };
            Some(bool_p(
                Node::Pattern {
                    kind,
                    arg: bx(a),
                    pattern,
                },
                Boolean,
            ))
        }
        ("if_else", 3) => {
            let b = args.pop()?;
            let a = args.pop()?;
            let c = cast(args.pop()?, &Boolean)?;
            let (mut ab, t) = choices(vec![a, b])?;
            let b = ab.pop()?;
            let a = ab.pop()?;
            Some(Phys {
                node: Node::IfElse(bx(c), bx(a), bx(b)),
                ty: t.clone(),
                out: t,
            })
        }
        ("coalesce", n) if n >= 1 => {
            let (args, t) = choices(args)?;
            Some(Phys {
                node: Node::Coalesce(args),
                ty: t.clone(),
                out: t,
            })
        }
        (
            "year" | "month" | "day" | "quarter" | "day_of_year" | "hour" | "minute" | "second",
            1,
        ) => {
            let a = args.pop()?;
            if !matches!(a.ty, Date32 | Date64 | Timestamp(_, None)) {
                return None;
            }
            if matches!(a.ty, Date32 | Date64) && matches!(base, "hour" | "minute" | "second") {
                return None;
            }
            let part = match base {
                "year" => DatePart::Year,
                "month" => DatePart::Month,
                "day" => DatePart::Day,
                "quarter" => DatePart::Quarter,
                "day_of_year" => DatePart::DayOfYear,
                "hour" => DatePart::Hour,
                "minute" => DatePart::Minute,
                _ => DatePart::Second,
            };
            let a = cast(a.clone(), &a.out.clone())?;
            Some(Phys {
                node: Node::DatePart(bx(a), part),
                ty: Int64,
                out: Int64,
            })
        }
        ("utf8_length", 1) => {
            let a = plain_string(args.pop()?)?;
            let t = if a.ty == Utf8 { Int32 } else { Int64 };
            Some(Phys {
                node: Node::Length(bx(a)),
                ty: t.clone(),
                out: t,
            })
        }
        ("utf8_slice_codeunits", 1) => {
            let int = |name| {
                option(call, name)?
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .filter(|a| a.len() == 1 && a.is_valid(0))
                    .map(|a| a.value(0))
            };
            if int("step")? != 1 {
                return None;
            }
            let (start, stop) = (int("start")?, int("stop")?);
            let a = plain_string(args.pop()?)?;
            Some(Phys {
                ty: a.ty.clone(),
                out: a.ty.clone(),
                node: Node::Slice {
                    arg: bx(a),
                    start,
                    stop,
                },
            })
        }
        (
            "utf8_trim"
            | "utf8_ltrim"
            | "utf8_rtrim"
            | "utf8_trim_whitespace"
            | "utf8_ltrim_whitespace"
            | "utf8_rtrim_whitespace",
            1,
        ) => {
            let a = plain_string(args.pop()?)?;
            let side = base.trim_start_matches("utf8_");
            let how = Trim {
                left: !side.starts_with("rtrim"),
                right: !side.starts_with("ltrim"),
                chars: match base.ends_with("_whitespace") {
                    true => None,
                    false => Some(string_option(call, "characters")?.chars().collect()),
                },
            };
            Some(Phys {
                ty: a.ty.clone(),
                out: a.ty.clone(),
                node: Node::Trim(bx(a), how),
            })
        }
        ("utf8_upper" | "utf8_lower" | "ascii_upper" | "ascii_lower", 1) => {
            let a = plain_string(args.pop()?)?;
            Some(Phys {
                ty: a.ty.clone(),
                out: a.ty.clone(),
                node: Node::Case {
                    arg: bx(a),
                    upper: base.ends_with("upper"),
                    backup: None,
                },
            })
        }
        ("cast", 1) => {
            let to = option(call, "to_type")?.data_type().clone();
            // Flags that loosen pyarrow's checks are not modelled.
            for flag in [
                "allow_int_overflow",
                "allow_time_truncate",
                "allow_time_overflow",
                "allow_decimal_truncate",
                "allow_float_truncate",
                "allow_invalid_utf8",
            ] {
                if bool_option(call, flag) == Some(true) {
                    return None;
                }
            }
            let a = args.pop()?;
            // A view column cast to its own logical type stays as pyarrow sees it.
            cast(a, &to)
        }
        _ => None,
    }
}

/// A string argument as a `string` / `large_string` array (views and dictionaries cast to
/// the type pyarrow sees).
fn plain_string(a: Phys) -> Option<Phys> {
    if !types::is_string(&a.ty) {
        return None;
    }
    let t = a.ty.clone();
    cast(a, &t)
}

/// `case_when` of bound conditions and values (one more value than conditions: the else).
fn case_when(conds: Vec<Phys>, values: Vec<Phys>) -> Option<Phys> {
    if values.len() < conds.len() || values.len() > conds.len() + 1 || values.is_empty() {
        return None;
    }
    let conds = conds
        .into_iter()
        .map(|c| cast(c, &DataType::Boolean))
        .collect::<Option<Vec<_>>>()?;
    let (mut values, t) = choices(values)?;
    let otherwise = (values.len() > conds.len()).then(|| values.pop()).flatten();
    Some(Phys {
        node: Node::CaseWhen {
            conds,
            values,
            otherwise: otherwise.map(bx),
        },
        ty: t.clone(),
        out: t,
    })
}

/// The values one of which `if_else` / `coalesce` / `case_when` picks per row, cast to their
/// common type (returned). `None` where pyarrow's result differs from a plain common-type
/// pick: nested, view or dictionary results (pyarrow keeps dictionaries as dictionaries) and
/// decimals of different precision or scale (pyarrow raises rather than align them).
fn choices(values: Vec<Phys>) -> Option<(Vec<Phys>, DataType)> {
    let mut t = values.first()?.ty.clone();
    for v in &values[1..] {
        t = types::common(&t, &v.ty)?;
    }
    if !plain(&t)
        || types::is_decimal(&t) && values.iter().any(|v| v.ty != t)
        || values
            .iter()
            .any(|v| matches!(v.out, DataType::Dictionary(..)))
    {
        return None;
    }
    let values = values
        .into_iter()
        .map(|v| cast(v, &t))
        .collect::<Option<Vec<_>>>()?;
    Some((values, t))
}

/// Types `if_else` / `coalesce` produce here: no nested, view or dictionary types.
fn plain(t: &DataType) -> bool {
    use DataType::*;
    types::is_int(t)
        || types::is_float(t)
        || matches!(
            t,
            Boolean
                | Utf8
                | LargeUtf8
                | Binary
                | LargeBinary
                | Date32
                | Date64
                | Timestamp(..)
                | Duration(_)
                | Decimal128(..)
                | Decimal256(..)
        )
}

/// A string comparison's two sides in one layout: a scalar side takes the array side's
/// layout (dictionary arrays compare their values); two arrays meet as large strings.
fn string_pair(l: Phys, r: Phys) -> Option<(Phys, Phys)> {
    let is_lit = |p: &Phys| matches!(p.node, Node::Literal(_));
    let value_layout = |p: &Phys| match &p.out {
        DataType::Dictionary(_, v) => (**v).clone(),
        t => t.clone(),
    };
    match (is_lit(&l), is_lit(&r)) {
        (false, true) => {
            let t = value_layout(&l);
            let r = cast(r, &t)?;
            Some((l, r))
        }
        (true, false) => {
            let t = value_layout(&r);
            let l = cast(l, &t)?;
            Some((l, r))
        }
        _ => {
            let t = if l.out == r.out && !matches!(l.out, DataType::Dictionary(..)) {
                l.out.clone()
            } else {
                types::common(&l.ty, &r.ty)?
            };
            Some((cast(l, &t)?, cast(r, &t)?))
        }
    }
}

/// A decimal64 column and a literal its type holds exactly, compared as decimal64 values
/// (the order of decimals is the order of their values).
fn decimal64_pair(l: &Phys, r: &Phys) -> Option<(Phys, Phys)> {
    let lit = |p: &Phys| match &p.node {
        Node::Literal(a) => Some(a.clone()),
        _ => None,
    };
    let column = |p: &Phys| matches!(p.out, DataType::Decimal64(..));
    if column(l)
        && let Some(a) = lit(r)
    {
        return Some((l.clone(), literal(exact_cast(&a, &l.out)?)));
    }
    if column(r)
        && let Some(a) = lit(l)
    {
        return Some((literal(exact_cast(&a, &r.out)?), r.clone()));
    }
    None
}

/// arrow-cast options of pyarrow's safe cast: a value that does not fit is an error.
pub(super) fn strict() -> arrow_cast::CastOptions<'static> {
    arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    }
}
