//! Expressions: pyarrow's `pyarrow.compute.Expression`, read from its serialized form and
//! evaluated with arrow-rs kernels.
//!
//! `Expression.__reduce__()` yields Arrow C++'s serialization: an Arrow IPC file whose
//! schema metadata is a list of tokens in prefix order — `call` (a function name), its
//! arguments, an optional `options` (a column index), `end`; `field_ref` (a column name);
//! `literal` (a column index) — and whose one-row record batch holds the literals and the
//! function options (a struct per options object). Metadata keys repeat, so the tokens are
//! read from the file footer's flatbuffer, not through arrow-rs' `Schema` (a hash map).
//!
//! [`Expr`] is that tree; [`bind::bind`] resolves it against an input schema into a
//! [`bind::Phys`], which evaluates batches. A call the Rust side does not implement becomes a
//! *fallback*: the binder reports its token span, and the caller evaluates that
//! sub-expression elsewhere (the bindings hand it to pyarrow compute).

pub mod bind;
pub mod eval;
mod strings;
mod types;

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};

use crate::error::{Error, Result};

/// Field metadata key of a decimal column a reader narrowed to decimal64 (at most 18
/// digits): expressions see it as the decimal128 it is declared as, and read its 64-bit
/// values in place (no widening copy). Never seen outside the executor: the planner narrows
/// only columns that native expressions and `sum` / `mean` consume.
pub const NARROWED: &str = "ferrobatch:narrowed";

/// `f` as a decimal64 column marked [`NARROWED`].
pub fn narrowed(f: &arrow_schema::Field, precision: u8, scale: i8) -> arrow_schema::Field {
    let mut meta = f.metadata().clone();
    meta.insert(NARROWED.into(), String::new());
    f.clone()
        .with_data_type(arrow_schema::DataType::Decimal64(precision, scale))
        .with_metadata(meta)
}

/// A parsed expression tree.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A column, by name.
    Field(String),
    /// A constant: a one-row array.
    Literal(ArrayRef),
    /// A function call.
    Call(Call),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub args: Vec<Expr>,
    /// The function's options, a one-row struct (fields named as pyarrow's options).
    pub options: Option<Arc<StructArray>>,
    /// The call's tokens in the serialized form: `tokens[span.0..span.1]`.
    pub span: (usize, usize),
}

/// A serialized expression: its tokens and the batch of literals and options.
#[derive(Debug, Clone)]
pub struct Serialized {
    pub tokens: Vec<(String, String)>,
    pub root: Expr,
}

impl Serialized {
    /// Parse the bytes `Expression.__reduce__()` returns.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::Value(format!("not a serialized Arrow expression: {what}"));
        let n = bytes.len();
        if n < 16 || &bytes[n - 6..] != b"ARROW1" || &bytes[..6] != b"ARROW1" {
            return Err(bad("no Arrow IPC file magic"));
        }
        let len = i32::from_le_bytes(bytes[n - 10..n - 6].try_into().expect("4 bytes"));
        let start = usize::try_from(len)
            .ok()
            .and_then(|l| (n - 10).checked_sub(l))
            .ok_or_else(|| bad("footer length"))?;
        let footer = arrow_ipc::root_as_footer(&bytes[start..n - 10]).map_err(|_| bad("footer"))?;
        let tokens: Vec<(String, String)> = footer
            .schema()
            .and_then(|s| s.custom_metadata())
            .map(|kv| {
                kv.iter()
                    .map(|kv| {
                        (
                            kv.key().unwrap_or("").to_string(),
                            kv.value().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let reader = arrow_ipc::reader::FileReader::try_new(Cursor::new(bytes), None)?;
        let batch = match reader.into_iter().next() {
            Some(b) => Some(b?),
            None => None,
        };
        let mut pos = 0;
        let root = parse_one(&tokens, &mut pos, batch.as_ref())?;
        if pos != tokens.len() {
            return Err(bad("trailing tokens"));
        }
        Ok(Serialized { tokens, root })
    }
}

fn column(batch: Option<&RecordBatch>, index: &str) -> Result<ArrayRef> {
    let i: usize = index
        .parse()
        .map_err(|_| Error::Value(format!("bad expression column index {index:?}")))?;
    let b = batch
        .filter(|b| i < b.num_columns() && b.num_rows() >= 1)
        .ok_or_else(|| Error::Value(format!("expression column {i} is missing")))?;
    Ok(b.column(i).slice(0, 1))
}

fn parse_one(
    tokens: &[(String, String)],
    pos: &mut usize,
    batch: Option<&RecordBatch>,
) -> Result<Expr> {
    let (key, value) = tokens
        .get(*pos)
        .ok_or_else(|| Error::Value("truncated serialized expression".into()))?;
    let start = *pos;
    *pos += 1;
    match key.as_str() {
        "field_ref" => Ok(Expr::Field(value.clone())),
        "literal" => Ok(Expr::Literal(column(batch, value)?)),
        "call" => {
            let mut args = Vec::new();
            let mut options = None;
            loop {
                match tokens.get(*pos).map(|(k, _)| k.as_str()) {
                    Some("end") => {
                        *pos += 1;
                        break;
                    }
                    Some("options") => {
                        let col = column(batch, &tokens[*pos].1)?;
                        *pos += 1;
                        let st = col
                            .as_any()
                            .downcast_ref::<StructArray>()
                            .ok_or_else(|| {
                                Error::Value("function options are not a struct".into())
                            })?
                            .clone();
                        options = Some(Arc::new(st));
                    }
                    Some(_) => args.push(parse_one(tokens, pos, batch)?),
                    None => return Err(Error::Value("truncated serialized expression".into())),
                }
            }
            Ok(Expr::Call(Call {
                name: value.clone(),
                args,
                options,
                span: (start, *pos),
            }))
        }
        other => Err(Error::Value(format!("unknown expression token {other:?}"))),
    }
}

impl Expr {
    /// A text equal for equal trees (the same calls, options, columns and literal values).
    pub fn canonical(&self) -> String {
        match self {
            Expr::Field(n) => format!("{n:?}"),
            Expr::Literal(a) => format!("{}:{:?}", a.data_type(), a),
            Expr::Call(c) => {
                let args: Vec<String> = c.args.iter().map(Expr::canonical).collect();
                let options = c
                    .options
                    .as_ref()
                    .map(|o| format!("{o:?}"))
                    .unwrap_or_default();
                format!("{}({}){}", c.name, args.join(","), options)
            }
        }
    }

    /// The column names the expression reads, in first-reference order.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Field(n) => {
                if !out.contains(n) {
                    out.push(n.clone())
                }
            }
            Expr::Literal(_) => {}
            Expr::Call(c) => c.args.iter().for_each(|a| a.collect_columns(out)),
        }
    }
}
