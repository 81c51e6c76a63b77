//! Group-by aggregation.
//!
//! 1. [`groups::group`] gives every row a group slot (dense key codes, or hash partitions for
//!    wide / high-cardinality keys) and lists the groups in output order (first appearance,
//!    or key order with `sort`).
//! 2. Each aggregate is computed independently over the slots: the decomposable ones (count,
//!    size, sum, mean, std, var, corr, min, max, first, last) fold rows into per-slot states
//!    ([`accumulate`]); the holistic ones (median, quantile, n_unique, top_k) evaluate each
//!    group's row list ([`holistic`]). min / max / first / last produce a *row* per group, and
//!    the values are gathered from the input, so they keep the input type (strings, dates,
//!    dictionaries, ...).
//! 3. The output is the key columns gathered at each group's first row, then one column per
//!    aggregate in the requested order.
//!
//! Rules (DESIGN.md): nulls are skipped by every aggregate but `size`; a group without a
//! non-null value gets null (0 for count / size / n_unique, `[]` for top_k); NaN propagates
//! through sum / mean / std / var / median / quantile / corr; min / max / top_k follow the sort
//! order (NaN greatest). Integer sums are exact (`i128` accumulators) and raise on int64 /
//! uint64 overflow; decimal sums raise past 38 digits.

pub mod accumulate;
pub mod external;
pub mod groups;
pub mod holistic;
pub mod resident;
pub mod stream;

use std::sync::{Arc, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal64Type, Decimal128Type, Float64Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Decimal128Array, Float64Array, Int64Array, ListArray, RecordBatch,
    RecordBatchOptions, UInt32Array, UInt64Array,
};
use arrow_buffer::{BooleanBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::take::take;

use crate::error::{Error, Result};
use crate::gather::take_table;
use crate::keys::encode::{dense_codes, order_codes};
use crate::table::{Table, concat_chunks};
use accumulate::{
    Acc, Correlation, Count, Extreme, Kahan, OVERFLOWED, Pick, Sum, SumDecimal, SumI64, Variance,
    accumulate, chunk_starts,
};
use groups::{Groups, NO_ROW, group};
use holistic::{Members, per_group};

/// A parameter of an aggregate: `q` of quantile, `k` of top_k, the other column of corr.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Int(i64),
    Float(f64),
    Str(String),
}

/// An aggregate function.
#[derive(Clone, Debug, PartialEq)]
pub enum AggFn {
    Count,
    Size,
    Sum,
    Mean,
    Min,
    Max,
    First,
    Last,
    Std,
    Var,
    Median,
    NUnique,
    Quantile(f64),
    TopK(usize),
    Corr(String),
}

const NAMES: &str = "count, size, sum, mean, min, max, first, last, std, var, median, n_unique, \
                     quantile, top_k, corr";

impl AggFn {
    /// The function `name` with its parameter, checked.
    pub fn parse(name: &str, param: Option<Param>) -> Result<Self> {
        let plain = |f: AggFn| match &param {
            None => Ok(f),
            Some(p) => Err(Error::Value(format!(
                "aggregate {name:?} takes no parameter, got {p:?}"
            ))),
        };
        match name {
            "count" => plain(AggFn::Count),
            "size" => plain(AggFn::Size),
            "sum" => plain(AggFn::Sum),
            "mean" => plain(AggFn::Mean),
            "min" => plain(AggFn::Min),
            "max" => plain(AggFn::Max),
            "first" => plain(AggFn::First),
            "last" => plain(AggFn::Last),
            "std" => plain(AggFn::Std),
            "var" => plain(AggFn::Var),
            "median" => plain(AggFn::Median),
            "n_unique" => plain(AggFn::NUnique),
            "quantile" => {
                let q = match param {
                    Some(Param::Float(q)) => q,
                    Some(Param::Int(q)) => q as f64,
                    Some(Param::Str(s)) => {
                        return Err(Error::Type(format!(
                            "quantile takes a number q in [0, 1], got {s:?}"
                        )));
                    }
                    None => {
                        return Err(Error::Value(
                            "quantile needs q: (\"column\", \"quantile\", 0.9)".into(),
                        ));
                    }
                };
                if !(0.0..=1.0).contains(&q) {
                    return Err(Error::Value(format!(
                        "quantile q must be in [0, 1], got {q}"
                    )));
                }
                Ok(AggFn::Quantile(q))
            }
            "top_k" => match param {
                Some(Param::Int(k)) if k >= 0 => Ok(AggFn::TopK(k as usize)),
                Some(Param::Int(k)) => Err(Error::Value(format!("top_k k must be >= 0, got {k}"))),
                Some(p) => Err(Error::Type(format!("top_k takes an integer k, got {p:?}"))),
                None => Err(Error::Value(
                    "top_k needs k: (\"column\", \"top_k\", 3)".into(),
                )),
            },
            "corr" => match param {
                Some(Param::Str(c)) => Ok(AggFn::Corr(c)),
                Some(p) => Err(Error::Type(format!(
                    "corr takes the other column's name, got {p:?}"
                ))),
                None => Err(Error::Value(
                    "corr needs the other column: (\"x\", \"corr\", \"y\")".into(),
                )),
            },
            _ => Err(Error::Value(format!(
                "unknown aggregate {name:?}; expected one of {NAMES}"
            ))),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Size => "size",
            AggFn::Sum => "sum",
            AggFn::Mean => "mean",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::First => "first",
            AggFn::Last => "last",
            AggFn::Std => "std",
            AggFn::Var => "var",
            AggFn::Median => "median",
            AggFn::NUnique => "n_unique",
            AggFn::Quantile(_) => "quantile",
            AggFn::TopK(_) => "top_k",
            AggFn::Corr(_) => "corr",
        }
    }
}

/// One output column: `func` of `column` (`None` only for `size`).
#[derive(Clone, Debug, PartialEq)]
pub struct AggSpec {
    pub name: String,
    pub column: Option<String>,
    pub func: AggFn,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupByOptions {
    pub keys: Vec<String>,
    pub aggs: Vec<AggSpec>,
    pub dropna: bool,
    pub sort: bool,
}

/// Key columns, then one column per aggregate; one row per group.
pub fn group_by(table: &Table, opts: &GroupByOptions) -> Result<Table> {
    let inputs = check(table, opts)?;
    let g = group(table, &opts.keys, opts.dropna, opts.sort)?;
    let members = opts
        .aggs
        .iter()
        .any(|a| {
            matches!(
                a.func,
                AggFn::Median | AggFn::Quantile(_) | AggFn::NUnique | AggFn::TopK(_)
            )
        })
        .then(|| Members::new(&g));
    let mut cols = Vec::with_capacity(opts.aggs.len());
    for (spec, input) in opts.aggs.iter().zip(&inputs) {
        cols.push(aggregate(spec, input, &g, members.as_ref())?);
    }
    assemble(table, opts, &g, cols)
}

/// The type of `func`'s output column over an input column of type `input` (`None` for
/// `size`): what [`group_by`] and [`stream::GroupByState::finish`] produce, known before any
/// row is read.
pub fn output_type(func: &AggFn, input: Option<&DataType>) -> DataType {
    match (func, input) {
        (AggFn::Count | AggFn::Size | AggFn::NUnique, _) => DataType::Int64,
        (AggFn::Sum, Some(dt)) if dt.is_floating() => DataType::Float64,
        (AggFn::Sum, Some(dt)) if dt.is_decimal() => DataType::Decimal128(38, dt_scale(dt)),
        (AggFn::Sum, Some(dt)) if dt.is_unsigned_integer() => DataType::UInt64,
        (AggFn::Sum, _) => DataType::Int64,
        (AggFn::Min | AggFn::Max | AggFn::First | AggFn::Last, Some(dt)) => dt.clone(),
        (AggFn::TopK(_), Some(dt)) => {
            DataType::List(Arc::new(Field::new("item", dt.clone(), true)))
        }
        _ => DataType::Float64,
    }
}

/// The output schema of a group-by of input batches of `schema`: the key fields, then one
/// nullable field per aggregate. Checks names and types as [`group_by`] does; reads no data.
pub fn output_schema(schema: &SchemaRef, opts: &GroupByOptions) -> Result<SchemaRef> {
    let empty = Table {
        schema: schema.clone(),
        batches: vec![],
    };
    let inputs = check(&empty, opts)?;
    let mut fields: Vec<Field> = Vec::with_capacity(opts.keys.len() + opts.aggs.len());
    for k in &opts.keys {
        fields.push(schema.field(empty.index_of(k)?).clone());
    }
    for (a, input) in opts.aggs.iter().zip(&inputs) {
        let dt = output_type(&a.func, input.values.as_ref().map(Column::data_type));
        fields.push(Field::new(&a.name, dt, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// An aggregated column as its input chunks (at least one), concatenated only on demand.
struct Column {
    chunks: Vec<ArrayRef>,
    starts: Vec<usize>,
    whole: OnceLock<ArrayRef>,
}

impl Column {
    fn new(mut chunks: Vec<ArrayRef>, dt: &DataType) -> Self {
        if chunks.is_empty() {
            chunks.push(arrow_array::new_empty_array(dt));
        }
        let starts = chunk_starts(chunks.iter().map(|c| c.len()));
        Column {
            chunks,
            starts,
            whole: OnceLock::new(),
        }
    }

    fn one(a: ArrayRef) -> Self {
        let dt = a.data_type().clone();
        Column::new(vec![a], &dt)
    }

    fn data_type(&self) -> &DataType {
        self.chunks[0].data_type()
    }

    /// The column as one array.
    fn whole(&self) -> Result<&ArrayRef> {
        if let Some(w) = self.whole.get() {
            return Ok(w);
        }
        let w = match self.chunks.as_slice() {
            [one] => one.clone(),
            many => concat_chunks(many, self.data_type())?,
        };
        Ok(self.whole.get_or_init(|| w))
    }

    /// `f` applied to every chunk (a cast to the same type costs nothing).
    fn map(&self, f: impl Fn(&ArrayRef) -> Result<ArrayRef>) -> Result<Column> {
        let chunks = self.chunks.iter().map(f).collect::<Result<Vec<_>>>()?;
        Ok(Column {
            chunks,
            starts: self.starts.clone(),
            whole: OnceLock::new(),
        })
    }

    fn cast(&self, dt: &DataType) -> Result<Column> {
        self.map(|c| Ok(arrow_cast::cast(c, dt)?))
    }

    /// Every group's state of the accumulator `make(chunk, chunk's first row)` builds per
    /// chunk, in output order.
    fn run<'s, A: Acc + 's>(
        &'s self,
        g: &Groups,
        make: impl Fn(&'s ArrayRef, usize) -> A,
    ) -> Vec<A::S> {
        let accs: Vec<A> = self
            .chunks
            .iter()
            .zip(&self.starts)
            .map(|(c, &s)| make(c, s))
            .collect();
        let st = accumulate(&accs, &self.starts, g);
        g.order.iter().map(|&s| st[s as usize]).collect()
    }
}

/// An aggregate's input column(s).
struct Input {
    name: String,
    values: Option<Column>,
    other: Option<(String, Column)>,
}

/// Check names and types before any work.
fn check(table: &Table, opts: &GroupByOptions) -> Result<Vec<Input>> {
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for k in &opts.keys {
        table.index_of(k)?;
        if !seen.insert(k) {
            return Err(Error::Value(format!("key column {k:?} is listed twice")));
        }
    }
    let column = |name: &str| -> Result<Column> {
        let i = table.index_of(name)?;
        Ok(Column::new(
            table.chunks(i),
            table.schema.field(i).data_type(),
        ))
    };
    let mut out = Vec::with_capacity(opts.aggs.len());
    for a in &opts.aggs {
        if !seen.insert(&a.name) {
            return Err(Error::Value(format!(
                "output column {:?} is named twice (keys and aggregates share one namespace)",
                a.name
            )));
        }
        let values = match (&a.column, &a.func) {
            (None, AggFn::Size) => None,
            (None, f) => {
                return Err(Error::Value(format!(
                    "aggregate {:?}: {} needs a column (only size takes None)",
                    a.name,
                    f.name()
                )));
            }
            (Some(c), _) => Some(column(c)?),
        };
        let other = match &a.func {
            AggFn::Corr(y) => Some((y.clone(), column(y)?)),
            _ => None,
        };
        let col = a.column.as_deref().unwrap_or("");
        let bad = |dt: &DataType| {
            Error::Type(format!(
                "aggregate {:?}: cannot compute {} of column {col:?} of type {dt}",
                a.name,
                a.func.name()
            ))
        };
        if let Some(v) = &values {
            let dt = v.data_type();
            let ok = match &a.func {
                AggFn::Count | AggFn::Size | AggFn::First | AggFn::Last => true,
                AggFn::Sum => {
                    numeric(dt)
                        || matches!(
                            dt,
                            DataType::Decimal32(..)
                                | DataType::Decimal64(..)
                                | DataType::Decimal128(..)
                        )
                }
                AggFn::Mean
                | AggFn::Std
                | AggFn::Var
                | AggFn::Median
                | AggFn::Quantile(_)
                | AggFn::Corr(_) => numeric(dt) || dt.is_decimal(),
                AggFn::Min | AggFn::Max | AggFn::TopK(_) | AggFn::NUnique => orderable(dt),
            };
            if !ok {
                return Err(bad(dt));
            }
        }
        if let Some((y, v)) = &other
            && !(numeric(v.data_type()) || v.data_type().is_decimal())
        {
            return Err(Error::Type(format!(
                "aggregate {:?}: cannot compute corr with column {y:?} of type {}",
                a.name,
                v.data_type()
            )));
        }
        out.push(Input {
            name: col.to_string(),
            values,
            other,
        });
    }
    Ok(out)
}

/// Integers, floats and booleans.
fn numeric(dt: &DataType) -> bool {
    dt.is_integer() || dt.is_floating() || *dt == DataType::Boolean
}

/// Types with an order (and equality) the key encoders know.
fn orderable(dt: &DataType) -> bool {
    use DataType as D;
    match dt {
        D::Dictionary(_, v) => orderable(v),
        D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Binary | D::LargeBinary | D::BinaryView => true,
        D::Date32 | D::Date64 | D::Time32(_) | D::Time64(_) | D::Timestamp(_, _) => true,
        D::Duration(_) | D::Decimal32(_, _) | D::Decimal64(_, _) | D::Decimal128(_, _) => true,
        dt => numeric(dt),
    }
}

fn validity(a: &ArrayRef) -> Option<BooleanBuffer> {
    a.logical_nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| n.inner().clone())
}

/// The column as float64 (a float64 column itself, not copied).
fn as_f64(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(arrow_cast::cast(a, &DataType::Float64)?)
}

fn f64s(c: &ArrayRef) -> &[f64] {
    c.as_primitive::<Float64Type>().values()
}

/// The offsets of lists of these lengths (an error, not arrow's panic, past 2^31 - 1
/// values in all).
pub(crate) fn list_offsets(lengths: impl IntoIterator<Item = usize>) -> Result<OffsetBuffer<i32>> {
    let lengths: Vec<usize> = lengths.into_iter().collect();
    let total: usize = lengths.iter().sum();
    if i32::try_from(total).is_err() {
        return Err(Error::Value(format!(
            "a group-by's lists hold {total} values, more than a list column's 2^31 - 1"
        )));
    }
    Ok(OffsetBuffer::from_lengths(lengths))
}

fn int64s(n: Vec<u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        n.into_iter().map(|c| c as i64),
    ))
}

/// One aggregate's output column, a value per group in `g.order`.
fn aggregate(
    spec: &AggSpec,
    input: &Input,
    g: &Groups,
    members: Option<&Members>,
) -> Result<ArrayRef> {
    let order = &g.order;
    let size = || run(&Count { valid: None }, g);
    let Some(values) = &input.values else {
        return Ok(int64s(size()));
    };
    let col = &input.name;
    Ok(match &spec.func {
        AggFn::Size => int64s(size()),
        AggFn::Count => int64s(values.run(g, |c, _| Count { valid: validity(c) })),
        AggFn::Sum => sum(values, g, col)?,
        AggFn::Mean if values.data_type().is_integer() || values.data_type().is_decimal() => {
            // Exact integer sums (decimals: unscaled), divided once.
            let scale = 10f64.powi(i32::from(dt_scale(values.data_type())));
            let st = exact_sums(values, g)?;
            Arc::new(Float64Array::from_iter(
                st.iter()
                    .map(|&(s, n)| (n > 0).then(|| s as f64 / scale / n as f64)),
            ))
        }
        AggFn::Mean => {
            let v = values.map(as_f64)?;
            let st = v.run(g, |c, _| Sum::<f64, Kahan>::new(f64s(c), validity(c)));
            Arc::new(Float64Array::from_iter(
                st.iter()
                    .map(|&(s, n)| (n > 0).then(|| s.value() / n as f64)),
            ))
        }
        AggFn::Var | AggFn::Std => {
            let st = moments(values, g)?;
            let std = spec.func == AggFn::Std;
            Arc::new(Float64Array::from_iter(
                st.iter()
                    .map(|m| m.var().map(|v| if std { v.sqrt() } else { v })),
            ))
        }
        AggFn::Corr(_) => {
            let (_, other) = input.other.as_ref().expect("checked: corr has a column");
            let st = comoments(values, other, g)?;
            Arc::new(Float64Array::from_iter(st.iter().map(|c| c.corr())))
        }
        AggFn::Min | AggFn::Max => {
            let codes = order_codes(col, &values.chunks)?;
            let v = codes.valid.as_deref();
            let rows: Vec<u32> = if spec.func == AggFn::Min {
                let acc = Extreme::<false> {
                    codes: &codes.codes,
                    valid: v,
                };
                run(&acc, g).iter().map(|s| s.1).collect()
            } else {
                let acc = Extreme::<true> {
                    codes: &codes.codes,
                    valid: v,
                };
                run(&acc, g).iter().map(|s| s.1).collect()
            };
            gather(values.whole()?, &rows)?
        }
        AggFn::First => {
            let rows = values.run(g, |c, base| Pick::<false> {
                valid: validity(c),
                base,
            });
            gather(values.whole()?, &rows)?
        }
        AggFn::Last => {
            let rows = values.run(g, |c, base| Pick::<true> {
                valid: validity(c),
                base,
            });
            gather(values.whole()?, &rows)?
        }
        AggFn::Median | AggFn::Quantile(_) => {
            let q = match spec.func {
                AggFn::Quantile(q) => q,
                _ => 0.5,
            };
            let whole = values.whole()?;
            let v = as_f64(whole)?;
            let valid = validity(whole);
            let m = members.expect("members are built for holistic aggregates");
            let out = per_group(m, order, |rows, s: &mut Vec<f64>| {
                holistic::quantile(f64s(&v), valid.as_ref(), rows, q, s)
            });
            Arc::new(Float64Array::from(out))
        }
        AggFn::NUnique => {
            let codes = dense_codes(col, &values.chunks, false)?;
            let v = codes.valid.as_deref();
            let m = members.expect("members are built for holistic aggregates");
            let out = per_group(m, order, |rows, s: &mut Vec<u64>| {
                holistic::n_unique(&codes.codes, v, rows, s) as i64
            });
            Arc::new(Int64Array::from(out))
        }
        AggFn::TopK(k) => {
            let codes = order_codes(col, &values.chunks)?;
            let v = codes.valid.as_deref();
            let m = members.expect("members are built for holistic aggregates");
            let lists = per_group(m, order, |rows, s: &mut Vec<_>| {
                holistic::top_k(&codes.codes, v, rows, *k, s)
            });
            let offsets = list_offsets(lists.iter().map(|l| l.len()))?;
            let rows: Vec<u32> = lists.concat();
            let whole = values.whole()?;
            let vals = gather(whole, &rows)?;
            let field = Arc::new(Field::new("item", whole.data_type().clone(), true));
            Arc::new(ListArray::try_new(field, offsets, vals, None)?)
        }
    })
}

/// Welford moments of every group, in output order.
fn moments(values: &Column, g: &Groups) -> Result<Vec<accumulate::Moments>> {
    let v = values.map(as_f64)?;
    Ok(v.run(g, |c, _| Variance {
        values: f64s(c),
        valid: validity(c),
    }))
}

/// Co-moments of `x` and `y` (columns of the same table) of every group, in output order.
fn comoments(x: &Column, y: &Column, g: &Groups) -> Result<Vec<accumulate::CoMoments>> {
    let (x, y) = (x.map(as_f64)?, y.map(as_f64)?);
    // Both come from the same record batches: the chunks line up.
    Ok(x.run(g, |c, base| {
        let yc = &y.chunks[x.starts.partition_point(|&s| s < base)];
        Correlation {
            x: f64s(c),
            y: f64s(yc),
            valid_x: validity(c),
            valid_y: validity(yc),
        }
    }))
}

/// `acc`'s state of every group, in output order (`acc` reads rows `0..n`).
fn run<A: Acc>(acc: &A, g: &Groups) -> Vec<A::S> {
    let st = accumulate(std::slice::from_ref(acc), &[0, g.slot.len()], g);
    g.order.iter().map(|&s| st[s as usize]).collect()
}

/// Exact sums as `T`, null for a group without values; a sum outside `T` is an error.
fn exact<S: Copy, T: TryFrom<S>>(
    st: &[(S, u64)],
    overflow: impl Fn() -> Error,
) -> Result<Vec<Option<T>>> {
    st.iter()
        .map(|&(s, n)| {
            (n > 0)
                .then(|| T::try_from(s).map_err(|_| overflow()))
                .transpose()
        })
        .collect()
}

/// `values` at `rows` ([`NO_ROW`] → null), any type.
fn gather(values: &ArrayRef, rows: &[u32]) -> Result<ArrayRef> {
    let idx: UInt32Array = rows.iter().map(|&r| (r != NO_ROW).then_some(r)).collect();
    Ok(take(values.as_ref(), &idx, None)?)
}

/// Exact `i128` sums and counts of an integer, bool or decimal (unscaled) column; decimal
/// sums past 128 bits raise (the caller names the column).
fn exact_sums(values: &Column, g: &Groups) -> Result<Vec<(i128, u64)>> {
    let dt = values.data_type();
    if dt.is_decimal() {
        // Decimal64 and decimal128 of any precision are summed in place; others are cast.
        let cast;
        let st = match dt {
            DataType::Decimal64(..) => values.run(g, |c, _| SumDecimal {
                values: c.as_primitive::<Decimal64Type>().values().as_ref(),
                valid: validity(c),
            }),
            DataType::Decimal128(..) => values.run(g, |c, _| SumDecimal {
                values: c.as_primitive::<Decimal128Type>().values().as_ref(),
                valid: validity(c),
            }),
            _ => {
                cast = values.cast(&DataType::Decimal128(38, dt_scale(dt)))?;
                cast.run(g, |c, _| SumDecimal {
                    values: c.as_primitive::<Decimal128Type>().values().as_ref(),
                    valid: validity(c),
                })
            }
        };
        if st.iter().any(|s| s.2) {
            return Err(Error::Value("an exact sum overflows 128 bits".into()));
        }
        return Ok(st.iter().map(|&(s, n, _)| (s, n)).collect());
    }
    if matches!(dt, DataType::UInt64) {
        let st = values.run(g, |c, _| {
            Sum::<u64, u128>::new(c.as_primitive::<UInt64Type>().values(), validity(c))
        });
        // A u64 sum over fewer than 2^63 rows fits an i128.
        return Ok(st.iter().map(|&(s, n)| (s as i128, n)).collect());
    }
    // Every other integer (and bool) widens losslessly to int64; summed in 64 bits, and
    // again in 128 only when some group's steps overflowed.
    let v = values.cast(&DataType::Int64)?;
    let narrow = v.run(g, |c, _| SumI64 {
        values: c.as_primitive::<Int64Type>().values(),
        valid: validity(c),
    });
    if narrow.iter().all(|&(_, n)| n & OVERFLOWED == 0) {
        return Ok(narrow.iter().map(|&(s, n)| (i128::from(s), n)).collect());
    }
    Ok(v.run(g, |c, _| {
        Sum::<i64, i128>::new(c.as_primitive::<Int64Type>().values(), validity(c))
    }))
}

fn dt_scale(dt: &DataType) -> i8 {
    match dt {
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => *s,
        _ => 0,
    }
}

/// Sums: exact for integers (int64 / uint64 out, overflow raises), float64 for floats,
/// decimal128(38, s) for decimals (overflow raises). Null for a group without values.
fn sum(values: &Column, g: &Groups, col: &str) -> Result<ArrayRef> {
    let overflow = |ty: &str| {
        Error::Value(format!(
            "sum of column {col:?} overflows {ty} in at least one group; cast the column to \
             float64 or decimal first"
        ))
    };
    let dt = values.data_type();
    if dt.is_floating() {
        let v = values.map(as_f64)?;
        let st = v.run(g, |c, _| Sum::<f64, Kahan>::new(f64s(c), validity(c)));
        return Ok(Arc::new(Float64Array::from_iter(
            st.iter().map(|&(s, n)| (n > 0).then(|| s.value())),
        )));
    }
    let st = exact_sums(values, g).map_err(|_| overflow("decimal128(38)"))?;
    if dt.is_decimal() {
        let scale = &dt_scale(dt);
        const MAX38: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;
        if st.iter().any(|&(s, _)| !(-MAX38..=MAX38).contains(&s)) {
            return Err(overflow("decimal128(38)"));
        }
        let out = Decimal128Array::from_iter(st.iter().map(|&(s, n)| (n > 0).then_some(s)))
            .with_precision_and_scale(38, *scale)?;
        return Ok(Arc::new(out));
    }
    if dt.is_unsigned_integer() {
        return Ok(Arc::new(UInt64Array::from(exact(&st, || {
            overflow("uint64")
        })?)));
    }
    Ok(Arc::new(Int64Array::from(exact(&st, || {
        overflow("int64")
    })?)))
}

/// Key columns at each group's first row, then the aggregates, cut into the key gather's
/// record batches.
fn assemble(
    table: &Table,
    opts: &GroupByOptions,
    g: &Groups,
    cols: Vec<ArrayRef>,
) -> Result<Table> {
    let ngroups = g.order.len();
    let mut fields: Vec<Field> = Vec::new();
    let key_idx: Vec<usize> = opts
        .keys
        .iter()
        .map(|k| table.index_of(k))
        .collect::<Result<_>>()?;
    for &i in &key_idx {
        fields.push(table.schema.field(i).clone());
    }
    for (a, c) in opts.aggs.iter().zip(&cols) {
        fields.push(Field::new(&a.name, c.data_type().clone(), true));
    }
    let schema = Arc::new(Schema::new(fields));
    let key_batches: Vec<RecordBatch> = if key_idx.is_empty() || ngroups == 0 {
        Vec::new()
    } else {
        let keys = table.project(&key_idx)?;
        let rows: Vec<u32> = g.order.iter().map(|&s| g.first[s as usize]).collect();
        take_table(&keys, &rows)?.batches
    };
    let opts_rows = |n: usize| RecordBatchOptions::new().with_row_count(Some(n));
    if key_batches.is_empty() {
        let mut all: Vec<ArrayRef> = key_idx
            .iter()
            .map(|&i| arrow_array::new_empty_array(table.schema.field(i).data_type()))
            .collect();
        all.extend(cols);
        let b = RecordBatch::try_new_with_options(schema.clone(), all, &opts_rows(ngroups))?;
        return Ok(Table {
            schema,
            batches: vec![b],
        });
    }
    let mut batches = Vec::with_capacity(key_batches.len());
    let mut at = 0;
    for kb in key_batches {
        let len = kb.num_rows();
        let mut all: Vec<ArrayRef> = kb.columns().to_vec();
        all.extend(cols.iter().map(|c| c.slice(at, len)));
        batches.push(RecordBatch::try_new_with_options(
            schema.clone(),
            all,
            &opts_rows(len),
        )?);
        at += len;
    }
    Ok(Table { schema, batches })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        BooleanArray, Date32Array, DictionaryArray, Float32Array, Int8Array, Int32Array,
        StringArray, StringViewArray, TimestampMicrosecondArray, UInt16Array, types::Int32Type,
    };

    /// One column of each kind of type a group-by takes, `n` rows with nulls.
    fn table(n: usize) -> Table {
        let v = |i: usize| (i % 3 != 2).then_some(i);
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "k",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| (i % 4) as i64))),
            ),
            (
                "i8",
                Arc::new(Int8Array::from_iter((0..n).map(|i| v(i).map(|x| x as i8)))),
            ),
            (
                "i32",
                Arc::new(Int32Array::from_iter(
                    (0..n).map(|i| v(i).map(|x| x as i32)),
                )),
            ),
            (
                "u16",
                Arc::new(UInt16Array::from_iter(
                    (0..n).map(|i| v(i).map(|x| x as u16)),
                )),
            ),
            (
                "u64",
                Arc::new(UInt64Array::from_iter(
                    (0..n).map(|i| v(i).map(|x| x as u64)),
                )),
            ),
            (
                "f32",
                Arc::new(Float32Array::from_iter(
                    (0..n).map(|i| v(i).map(|x| x as f32)),
                )),
            ),
            (
                "f64",
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| v(i).map(|x| x as f64)),
                )),
            ),
            (
                "b",
                Arc::new(BooleanArray::from_iter(
                    (0..n).map(|i| v(i).map(|x| x % 2 == 0)),
                )),
            ),
            (
                "d",
                Arc::new(
                    Decimal128Array::from_iter((0..n).map(|i| v(i).map(|x| x as i128)))
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            (
                "s",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| v(i).map(|x| format!("s{x}"))),
                )),
            ),
            (
                "sv",
                Arc::new(StringViewArray::from_iter(
                    (0..n).map(|i| v(i).map(|x| format!("v{x}"))),
                )),
            ),
            (
                "dict",
                Arc::new(
                    (0..n)
                        .map(|i| v(i).map(|x| if x % 2 == 0 { "a" } else { "b" }))
                        .collect::<DictionaryArray<Int32Type>>(),
                ),
            ),
            (
                "date",
                Arc::new(Date32Array::from_iter(
                    (0..n).map(|i| v(i).map(|x| x as i32)),
                )),
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from_iter((0..n).map(|i| v(i).map(|x| x as i64)))
                        .with_timezone("Europe/Paris"),
                ),
            ),
        ];
        let schema = Arc::new(Schema::new(
            cols.iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let b =
            RecordBatch::try_new(schema.clone(), cols.into_iter().map(|c| c.1).collect()).unwrap();
        Table {
            schema,
            batches: vec![b],
        }
    }

    /// Every aggregate over every column it accepts.
    fn options(t: &Table) -> GroupByOptions {
        let funcs = [
            ("count", None),
            ("sum", None),
            ("mean", None),
            ("min", None),
            ("max", None),
            ("first", None),
            ("last", None),
            ("std", None),
            ("var", None),
            ("median", None),
            ("n_unique", None),
            ("quantile", Some(Param::Float(0.25))),
            ("top_k", Some(Param::Int(2))),
            ("corr", Some(Param::Str("f64".into()))),
        ];
        let mut aggs = vec![AggSpec {
            name: "size".into(),
            column: None,
            func: AggFn::Size,
        }];
        for f in t.schema.fields().iter().skip(1) {
            for (name, param) in &funcs {
                let spec = AggSpec {
                    name: format!("{name}_{}", f.name()),
                    column: Some(f.name().clone()),
                    func: AggFn::parse(name, param.clone()).unwrap(),
                };
                let one = GroupByOptions {
                    keys: vec!["k".into()],
                    aggs: vec![spec.clone()],
                    dropna: false,
                    sort: false,
                };
                if output_schema(&t.schema, &one).is_ok() {
                    aggs.push(spec);
                }
            }
        }
        GroupByOptions {
            keys: vec!["k".into(), "dict".into()],
            aggs,
            dropna: false,
            sort: true,
        }
    }

    /// The schema computed from the input schema alone is the schema the whole-table kernel
    /// and the streaming state produce, with rows and without.
    #[test]
    fn output_schema_is_the_schema_of_the_output() {
        for n in [0, 1, 50] {
            let t = table(n);
            let opts = options(&t);
            assert!(opts.aggs.len() > 100, "{}", opts.aggs.len());
            let want = output_schema(&t.schema, &opts).unwrap();
            assert_eq!(group_by(&t, &opts).unwrap().schema, want, "rows {n}");
            let mut st = stream::GroupByState::new(t.schema.clone(), opts.clone()).unwrap();
            for b in &t.batches {
                st.absorb(b).unwrap();
            }
            assert_eq!(st.finish().unwrap().schema, want, "rows {n}");
        }
    }

    /// The partial-state schema computed from the input schema alone is the schema of the
    /// partial-state tables built from rows, and of the resident state's export: every
    /// aggregate over every input type, a dictionary key among the keys, and no key.
    #[test]
    fn state_schema_is_the_schema_of_the_states() {
        for (n, keyless) in [(1, false), (50, false), (50, true)] {
            let t = table(n);
            let mut opts = options(&t);
            if keyless {
                opts.keys.clear();
            }
            let st = stream::GroupByState::new(t.schema.clone(), opts.clone()).unwrap();
            let want = st.state_schema();
            for b in &t.batches {
                assert_eq!(st.partial_of(b).unwrap().schema, want, "rows {n}");
            }
            let mut res = resident::ResidentState::new(t.schema.clone(), opts).unwrap();
            let mut ready: Vec<_> = (t.batches.iter())
                .map(|b| res.prepare(b.clone()).unwrap())
                .collect();
            res.absorb(&mut ready).unwrap();
            assert_eq!(res.export().unwrap().schema, want, "rows {n}");
        }
    }

    /// A state keyed by each row regrouped by coarser keys is the state of grouping by those
    /// keys directly: every aggregate whose merge ignores the split, over every input type,
    /// nulls in the keys dropped or kept, sorted or in first-appearance order.
    #[test]
    fn regroup_equals_grouping_by_the_coarser_keys() {
        let t = table(50);
        let n = t.num_rows();
        let mut cols: Vec<ArrayRef> = t.batches[0].columns().to_vec();
        cols.push(Arc::new(arrow_array::UInt32Array::from_iter_values(
            0..n as u32,
        )));
        let mut fields: Vec<arrow_schema::FieldRef> = t.schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("row", DataType::UInt32, false)));
        let schema = Arc::new(arrow_schema::Schema::new(fields));
        let by_row = Table {
            schema: schema.clone(),
            batches: vec![RecordBatch::try_new(schema.clone(), cols).unwrap()],
        };
        let float = |c: &Option<String>| {
            c.as_ref().is_some_and(|c| {
                t.schema
                    .field_with_name(c)
                    .unwrap()
                    .data_type()
                    .is_floating()
            })
        };
        let aggs: Vec<AggSpec> = options(&t)
            .aggs
            .into_iter()
            .filter(|a| match a.func {
                AggFn::Count | AggFn::Size | AggFn::NUnique | AggFn::Median => true,
                AggFn::Quantile(_) => true,
                AggFn::Sum | AggFn::Mean | AggFn::Min | AggFn::Max => !float(&a.column),
                _ => false,
            })
            .collect();
        assert!(aggs.len() > 40, "{}", aggs.len());
        // Coarser keys, and keys with a fixed-width column distinct on every row (regroup
        // then keeps the groups as they are).
        let key_sets = [["k", "dict"], ["dict", "row"]];
        let modes = [(false, false), (true, false), (false, true), (true, true)];
        for (names, (dropna, sort)) in key_sets.iter().flat_map(|k| modes.map(|m| (k, m))) {
            let coarse = GroupByOptions {
                keys: names.iter().map(|k| k.to_string()).collect(),
                aggs: aggs.clone(),
                dropna,
                sort,
            };
            let fine = GroupByOptions {
                keys: vec!["row".into()],
                aggs: aggs.clone(),
                dropna: false,
                sort: false,
            };
            let mut st = stream::GroupByState::new(schema.clone(), fine).unwrap();
            for b in by_row.batches.iter() {
                // Two pieces: the state holds partial tables of both.
                st.absorb(&b.slice(0, 20)).unwrap();
                st.absorb(&b.slice(20, n - 20)).unwrap();
            }
            let at = |c: &str| by_row.schema.index_of(c).unwrap();
            let keys = by_row.project(&[at(names[0]), at(names[1])]);
            let mut st = st
                .regroup(schema.clone(), coarse.clone(), |old| {
                    let rows = old[0]
                        .as_primitive::<arrow_array::types::UInt32Type>()
                        .values();
                    let k = crate::gather::take_table(&keys.unwrap(), rows)?;
                    Ok(vec![k.column(0)?, k.column(1)?])
                })
                .unwrap();
            let got = st.finish().unwrap();
            let want = group_by(&by_row, &coarse).unwrap();
            assert_eq!(got.schema, want.schema);
            let cat = |x: &Table| arrow_select::concat::concat_batches(&x.schema, &x.batches);
            assert_eq!(
                cat(&got).unwrap(),
                cat(&want).unwrap(),
                "keys {names:?} dropna {dropna} sort {sort}"
            );
        }
    }

    #[test]
    fn output_schema_checks_like_the_kernel() {
        let t = table(3);
        let bad = |column: &str, func: &str| GroupByOptions {
            keys: vec!["k".into()],
            aggs: vec![AggSpec {
                name: "x".into(),
                column: Some(column.into()),
                func: AggFn::parse(func, None).unwrap(),
            }],
            dropna: false,
            sort: false,
        };
        for (column, func) in [("s", "sum"), ("nope", "sum"), ("dict", "mean")] {
            let o = bad(column, func);
            let static_err = output_schema(&t.schema, &o).unwrap_err().to_string();
            let run_err = group_by(&t, &o).unwrap_err().to_string();
            assert_eq!(static_err, run_err);
        }
    }
}
