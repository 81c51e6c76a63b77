//! `Table`: the core's view of a table, a schema plus record batches (chunks), and the
//! lookups every kernel needs (columns by name, with a helpful error when missing).

use arrow_array::{Array, ArrayRef, RecordBatch, new_empty_array};
use arrow_buffer::{ArrowNativeType, ScalarBuffer};
use arrow_schema::{DataType, Schema, SchemaRef};

use crate::error::{Error, Result};

/// The largest row count a kernel accepts: row indices are `u32`.
pub const MAX_ROWS: usize = u32::MAX as usize;

#[derive(Clone, Debug)]
pub struct Table {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Table {
    /// A table from batches that all have `schema` (checked).
    pub fn try_new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        for b in &batches {
            if b.schema().fields() != schema.fields() {
                return Err(Error::Value(
                    "record batches of one table must share its schema".into(),
                ));
            }
        }
        Ok(Table { schema, batches })
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Row count, checked against [`MAX_ROWS`].
    pub fn checked_num_rows(&self) -> Result<usize> {
        let n = self.num_rows();
        if n > MAX_ROWS {
            return Err(Error::Value(format!(
                "table has {n} rows; ferrobatch kernels take at most {MAX_ROWS} rows"
            )));
        }
        Ok(n)
    }

    /// Position of the column `name`: a `ColumnNotFound` error suggesting close names when
    /// there is none, a `Value` error when several columns have that name (picking one would
    /// silently answer a question nobody asked).
    pub fn index_of(&self, name: &str) -> Result<usize> {
        let fields = self.schema.fields();
        let mut hits = fields.iter().enumerate().filter(|(_, f)| f.name() == name);
        match (hits.next(), hits.count()) {
            (Some((i, _)), 0) => Ok(i),
            (Some(_), more) => Err(Error::Value(format!(
                "column {name:?} is ambiguous: {} columns have that name",
                more + 1
            ))),
            (None, _) => Err(Error::column_not_found(
                name,
                fields.iter().map(|f| f.name().as_str()),
            )),
        }
    }

    /// The chunks of column `i`, one per batch (empty batches skipped).
    pub fn chunks(&self, i: usize) -> Vec<ArrayRef> {
        self.batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| b.column(i).clone())
            .collect()
    }

    /// Column `i` as one array.
    pub fn column(&self, i: usize) -> Result<ArrayRef> {
        concat_chunks(&self.chunks(i), self.schema.field(i).data_type())
    }

    /// The columns at `cols`, in that order.
    pub fn project(&self, cols: &[usize]) -> Result<Table> {
        Ok(Table {
            schema: std::sync::Arc::new(self.schema.project(cols)?),
            batches: self
                .batches
                .iter()
                .map(|b| b.project(cols))
                .collect::<std::result::Result<_, _>>()?,
        })
    }
}

/// How the columns of `got` differ from the ones `want` declares — count, names, types;
/// nullability and metadata aside — if they do.
pub fn schema_mismatch(got: &Schema, want: &Schema) -> Option<String> {
    let (g, w) = (got.fields(), want.fields());
    if g.len() != w.len() {
        return Some(format!(
            "it has {} columns, the schema declares {}",
            g.len(),
            w.len()
        ));
    }
    g.iter().zip(w.iter()).find_map(|(x, y)| {
        if x.name() != y.name() {
            Some(format!(
                "column {:?} is where the schema declares {:?}",
                x.name(),
                y.name()
            ))
        } else if x.data_type() != y.data_type() {
            Some(format!(
                "column {:?} is {} but the schema declares {}",
                x.name(),
                x.data_type(),
                y.data_type()
            ))
        } else {
            None
        }
    })
}

/// Maps a global row number to (chunk, row within the chunk) in O(1).
///
/// Rows are grouped in blocks of `2^shift` rows, no longer than any chunk but the last, so a
/// block overlaps at most two chunks: `first[block]` is the chunk holding the block's first
/// row and one comparison settles the rest. Tables whose chunks are too small for that
/// (fewer than [`MIN_CHUNK`] rows) should be made contiguous first ([`Self::new`] says so).
pub struct RowLocator {
    starts: Vec<usize>,
    shift: u32,
    first: Vec<u32>,
}

/// Smallest chunk (but the last) the locator takes.
pub const MIN_CHUNK: usize = 1024;

impl RowLocator {
    /// `None` when some chunk other than the last is shorter than [`MIN_CHUNK`].
    pub fn new(lens: &[usize]) -> Option<Self> {
        let mut starts = Vec::with_capacity(lens.len() + 1);
        let mut acc = 0;
        for &l in lens {
            starts.push(acc);
            acc += l;
        }
        starts.push(acc);
        if lens.len() <= 1 {
            return Some(RowLocator {
                starts,
                shift: 63,
                first: vec![0],
            });
        }
        let min = lens[..lens.len() - 1]
            .iter()
            .copied()
            .min()
            .unwrap_or(usize::MAX);
        if min < MIN_CHUNK {
            return None;
        }
        let shift = usize::BITS - 1 - min.leading_zeros();
        let nblocks = acc.div_ceil(1 << shift).max(1);
        let mut first = Vec::with_capacity(nblocks);
        let mut c = 0usize;
        for b in 0..nblocks {
            let row = b << shift;
            while c + 1 < lens.len() && starts[c + 1] <= row {
                c += 1;
            }
            first.push(c as u32);
        }
        Some(RowLocator {
            starts,
            shift,
            first,
        })
    }

    /// The locator of a single chunk.
    pub fn contiguous() -> Self {
        RowLocator {
            starts: vec![0, usize::MAX],
            shift: 63,
            first: vec![0],
        }
    }

    /// Whether there is at most one chunk (rows are their own location).
    pub fn is_single(&self) -> bool {
        self.starts.len() <= 2
    }

    /// First row of each chunk.
    pub fn chunk_starts(&self) -> &[usize] {
        &self.starts[..self.starts.len() - 1]
    }

    #[inline]
    pub fn locate(&self, row: usize) -> (usize, usize) {
        if self.first.len() == 1 {
            return (0, row);
        }
        let mut c = self.first[row >> self.shift] as usize;
        if row >= self.starts[c + 1] {
            c += 1;
        }
        (c, row - self.starts[c])
    }
}

/// The chunks of a column, concatenated when they are too small for a [`RowLocator`].
pub fn locatable(chunks: Vec<ArrayRef>, dt: &DataType) -> Result<(Vec<ArrayRef>, RowLocator)> {
    let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    if let Some(at) = RowLocator::new(&lens) {
        return Ok((chunks, at));
    }
    Ok((vec![concat_chunks(&chunks, dt)?], RowLocator::contiguous()))
}

/// The chunks of one column as a single array (an empty one of type `dt` when none).
pub fn concat_chunks(chunks: &[ArrayRef], dt: &DataType) -> Result<ArrayRef> {
    Ok(match chunks.len() {
        0 => new_empty_array(dt),
        1 => chunks[0].clone(),
        _ => {
            let refs: Vec<&dyn Array> = chunks.iter().map(|a| a.as_ref()).collect();
            arrow_select::concat::concat(&refs)?
        }
    })
}

/// The values buffer of a fixed-width chunk as native `N`s, whatever its logical type
/// (timestamps of every unit, decimals and dates are plain native integers underneath).
pub fn native_values<N: ArrowNativeType>(c: &ArrayRef) -> ScalarBuffer<N> {
    let data = c.to_data();
    ScalarBuffer::new(data.buffers()[0].clone(), data.offset(), data.len())
}

/// `batches` with every column cast to `schema`'s type where they differ.
pub fn cast_batches(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let cols = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| match c.data_type() == f.data_type() {
                    true => Ok(c.clone()),
                    false => Ok(arrow_cast::cast(c, f.data_type())?),
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                schema.clone(),
                cols,
                &opts,
            )?)
        })
        .collect()
}

/// `base`, with `_` appended until `taken` refuses it: the name of a column an operator
/// adds for itself (an ordinal, a tag) that no input column has.
pub fn fresh_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut name = base.to_owned();
    while taken(&name) {
        name.push('_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_and_missing_names() {
        use arrow_array::Int64Array;
        use arrow_schema::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
            Field::new("a", DataType::Int64, true),
        ]));
        let col: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let b = RecordBatch::try_new(schema.clone(), vec![col.clone(), col.clone(), col]).unwrap();
        let t = Table::try_new(schema, vec![b]).unwrap();
        assert_eq!(t.index_of("b").unwrap(), 1);
        let e = t.index_of("a").unwrap_err();
        assert!(
            matches!(&e, Error::Value(m) if m.contains("ambiguous")),
            "{e}"
        );
        assert!(matches!(t.index_of("c"), Err(Error::ColumnNotFound(_))));
    }

    #[test]
    fn locator_maps_every_row() {
        for lens in [
            vec![5000, 1024, 3000, 7],
            vec![1 << 17, 1 << 17, 100],
            vec![10],
        ] {
            let at = RowLocator::new(&lens).unwrap();
            let mut row = 0;
            for (c, &l) in lens.iter().enumerate() {
                for r in 0..l {
                    assert_eq!(at.locate(row), (c, r));
                    row += 1;
                }
            }
        }
        assert!(RowLocator::new(&[10, 10]).is_none());
    }
}
