//! The resident state of min / max / first / last and top_k: each group's value(s)
//! themselves (the input's own values, bits and type kept), not rows of the input, which
//! the resident state does not hold.
//!
//! **Slots.** A group has `k` slots (1, or top_k's `k`), filled in order: slot 0 holds the
//! best value. A batch's rows of a partition are gone through in input order; a row's valid
//! value enters its group's slots where it is *strictly* better than a slot's (min: a
//! smaller order code; max and top_k: a larger one; first: only into an empty group; last:
//! always), the slots after it move down one and the last falls out. So ties keep the
//! earliest row, as the kernel's [`super::super::accumulate::Extreme`], `Pick` and
//! [`super::super::holistic::top_k`] do, and a group's slots are its best `k` values,
//! best first.
//!
//! **Values.** A slot filled in the batch being folded points at the row's position in it;
//! after the batch the rows of those slots are taken from it at once, as one new chunk of
//! values, and the slots point there: a slot's value is `chunks[at.0][at.1]`.
//!
//! **Order codes.** Values of one fixed-width column compare by their order-preserving
//! `u64` image (floats: NaN greatest, -0.0 equal to 0.0), kept per slot; other orderable
//! values (byte strings, decimal128) by their arrow-row bytes, kept per slot in an arena.
//!
//! **Garbage.** A value that falls out stays in its chunk (and its code in the arena) until
//! they hold twice the live ones; they are then compacted into one chunk (one arena).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, ListArray, UInt32Array};
use arrow_buffer::BooleanBuffer;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, Field};

use crate::error::Result;
use crate::keys::encode::{Domain, domain_of_types, raw_u64};

/// `at.0` of a slot filled in the batch being folded (`at.1` is the row's position).
const PENDING: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Min,
    Max,
    First,
    Last,
    TopK(usize),
}

impl Kind {
    fn slots(self) -> usize {
        match self {
            Kind::TopK(k) => k,
            _ => 1,
        }
    }
}

/// How values of a column are compared.
pub(super) enum Order {
    /// First / last: not at all.
    None,
    Words(Domain),
    Rows(RowConverter),
}

impl Order {
    /// The order of values of type `dt` (decoded when a dictionary) for `kind`; `None`
    /// when neither a `u64` image nor arrow-row bytes order them.
    pub(super) fn of(kind: Kind, dt: &DataType) -> Option<Order> {
        if matches!(kind, Kind::First | Kind::Last) {
            return Some(Order::None);
        }
        let dt = crate::keys::value_type(dt);
        if let Some(d) = domain_of_types(std::iter::once(dt)).filter(|d| *d != Domain::Wide) {
            return Some(Order::Words(d));
        }
        let fields = [SortField::new(dt.clone())];
        if !RowConverter::supports_fields(&fields) {
            return None;
        }
        RowConverter::new(fields.to_vec()).ok().map(Order::Rows)
    }
}

/// A batch's values of one aggregate, in the order the fold reads them.
pub(super) struct Values {
    /// Decoded (a dictionary's values).
    pub values: ArrayRef,
    pub valid: Option<BooleanBuffer>,
    pub codes: Codes,
}

pub(super) enum Codes {
    None,
    Words(Vec<u64>),
    Rows(Rows),
}

impl Codes {
    /// The code at position `pos`, as bytes to compare (words big-endian).
    #[inline]
    fn at(&self, pos: usize) -> Code<'_> {
        match self {
            Codes::None => Code::None,
            Codes::Words(w) => Code::Word(w[pos]),
            Codes::Rows(r) => Code::Bytes(r.row(pos).data()),
        }
    }
}

#[derive(Clone, Copy)]
enum Code<'a> {
    None,
    Word(u64),
    Bytes(&'a [u8]),
}

impl Code<'_> {
    /// Whether this code is strictly better than `cur` for `kind` (min: smaller; max,
    /// top_k: greater), both of one column's codes.
    #[inline]
    fn beats(self, cur: Code<'_>, kind: Kind) -> bool {
        let less = kind == Kind::Min;
        match (self, cur) {
            (Code::Word(c), Code::Word(cur)) => {
                if less {
                    c < cur
                } else {
                    c > cur
                }
            }
            (Code::Bytes(b), Code::Bytes(cur)) => {
                if less {
                    b < cur
                } else {
                    b > cur
                }
            }
            _ => unreachable!("an ordered kind has codes of one kind"),
        }
    }
}

impl Values {
    /// Each group's row that a min / max / first / last keeps of the rows whose groups are
    /// `gid` (of `groups`; [`u32::MAX`]: left out), as [`Picks::fold`] keeps it: the first
    /// or last valid value, or the first strictly best (ties: the earliest row). `None`
    /// for a group without a valid value.
    pub(super) fn best_rows(&self, kind: Kind, gid: &[u32], groups: usize) -> Vec<Option<u32>> {
        let mut best: Vec<Option<u32>> = vec![None; groups];
        for (r, &g) in gid.iter().enumerate() {
            if g == u32::MAX || self.valid.as_ref().is_some_and(|b| !b.value(r)) {
                continue;
            }
            let b = &mut best[g as usize];
            let better = match (kind, *b) {
                (_, None) | (Kind::Last, Some(_)) => true,
                (Kind::First, Some(_)) => false,
                (Kind::Min | Kind::Max, Some(s)) => {
                    self.codes.at(r).beats(self.codes.at(s as usize), kind)
                }
                (Kind::TopK(_), Some(_)) => unreachable!("top_k keeps k rows"),
            };
            if better {
                *b = Some(r as u32);
            }
        }
        best
    }

    /// `column`'s values, their validity and their order codes under `order`.
    pub(super) fn of(column: &ArrayRef, order: &Order) -> Result<Values> {
        let values = crate::keys::decoded(column)?;
        let valid = super::valid_of(&values);
        let codes = match order {
            Order::None => Codes::None,
            Order::Words(d) => {
                let mut w = vec![0u64; values.len()];
                raw_u64(&values, &mut w, *d);
                Codes::Words(w)
            }
            Order::Rows(conv) => Codes::Rows(conv.convert_columns(std::slice::from_ref(&values))?),
        };
        Ok(Values {
            values,
            valid,
            codes,
        })
    }
}

/// The slots of one min / max / first / last / top_k, `k` per group of a partition (see
/// the module docs).
pub(super) struct Picks {
    kind: Kind,
    k: usize,
    /// The (decoded) value type, and the state's (the input's).
    dt: DataType,
    out: DataType,
    /// Slots filled, per group.
    len: Vec<u32>,
    /// Word codes, per slot.
    code: Vec<u64>,
    /// Row codes, per slot: `arena[span.0..span.0 + span.1]`.
    arena: Vec<u8>,
    span: Vec<(usize, usize)>,
    /// Bytes of the arena that are live codes.
    live_bytes: usize,
    /// Slots filled.
    live: usize,
    words: bool,
    rows: bool,
    /// Each slot's value: `chunks[at.0][at.1]` ([`PENDING`]: row `at.1` of the batch).
    at: Vec<(u32, u32)>,
    chunks: Vec<ArrayRef>,
    /// Values in `chunks`, live or fallen out.
    held: usize,
    /// Groups with a slot filled in the batch being folded, and a mark per group.
    touched: Vec<u32>,
    marked: Vec<bool>,
}

impl Picks {
    pub(super) fn new(kind: Kind, dt: &DataType, order: &Order) -> Picks {
        Picks {
            kind,
            k: kind.slots(),
            dt: crate::keys::value_type(dt).clone(),
            out: dt.clone(),
            len: Vec::new(),
            code: Vec::new(),
            arena: Vec::new(),
            span: Vec::new(),
            live_bytes: 0,
            live: 0,
            words: matches!(order, Order::Words(_)),
            rows: matches!(order, Order::Rows(_)),
            at: Vec::new(),
            chunks: Vec::new(),
            held: 0,
            touched: Vec::new(),
            marked: Vec::new(),
        }
    }

    pub(super) fn resize(&mut self, n: usize) {
        self.len.resize(n, 0);
        self.marked.resize(n, false);
        self.at.resize(n * self.k, (0, 0));
        if self.words {
            self.code.resize(n * self.k, 0);
        }
        if self.rows {
            self.span.resize(n * self.k, (0, 0));
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.len.capacity() * 4
            + self.marked.capacity()
            + self.code.capacity() * 8
            + self.arena.capacity()
            + self.span.capacity() * 16
            + self.at.capacity() * 8
            + super::arrays_bytes(&self.chunks)
    }

    /// Whether code `c` is strictly better than slot `s`'s.
    #[inline]
    fn beats(&self, c: Code<'_>, s: usize) -> bool {
        let cur = match c {
            Code::Word(_) => Code::Word(self.code[s]),
            Code::Bytes(_) => {
                let (at, len) = self.span[s];
                Code::Bytes(&self.arena[at..at + len])
            }
            Code::None => unreachable!("an ordered kind has codes"),
        };
        c.beats(cur, self.kind)
    }

    /// Fold the values at positions `first..` into the groups `gids` (one per position).
    pub(super) fn fold(&mut self, v: &Values, first: usize, gids: &[u32]) -> Result<()> {
        for (i, &g) in gids.iter().enumerate() {
            let pos = first + i;
            if v.valid.as_ref().is_some_and(|b| !b.value(pos)) {
                continue;
            }
            let (g, k) = (g as usize, self.k);
            let n = self.len[g] as usize;
            let c = v.codes.at(pos);
            // The slot the value enters.
            let slot = match self.kind {
                Kind::First if n > 0 => continue,
                Kind::First | Kind::Last => 0,
                _ => match (0..n).find(|&j| self.beats(c, g * k + j)) {
                    Some(j) => j,
                    None if n < k => n,
                    None => continue,
                },
            };
            self.enter(g, slot, c, pos);
        }
        self.take_pending(v)?;
        self.compact()
    }

    /// Put the value at `pos` with code `c` in slot `slot` of group `g`, moving the later
    /// slots down one (the last falls out when all are filled).
    #[inline]
    fn enter(&mut self, g: usize, slot: usize, c: Code<'_>, pos: usize) {
        let (k, n) = (self.k, self.len[g] as usize);
        let base = g * k;
        if n == k {
            self.live -= 1;
            if self.rows {
                self.live_bytes -= self.span[base + k - 1].1;
            }
        }
        let end = n.min(k - 1);
        // Slots slot..end move to slot+1..end+1.
        self.at
            .copy_within(base + slot..base + end, base + slot + 1);
        if self.words {
            self.code
                .copy_within(base + slot..base + end, base + slot + 1);
        }
        if self.rows {
            self.span
                .copy_within(base + slot..base + end, base + slot + 1);
        }
        let s = base + slot;
        self.at[s] = (PENDING, pos as u32);
        match c {
            Code::Word(w) => self.code[s] = w,
            Code::Bytes(b) => {
                self.span[s] = (self.arena.len(), b.len());
                self.arena.extend_from_slice(b);
                self.live_bytes += b.len();
            }
            Code::None => {}
        }
        self.len[g] = (n + 1).min(k) as u32;
        self.live += 1;
        if !self.marked[g] {
            self.marked[g] = true;
            self.touched.push(g as u32);
        }
    }

    /// Take the rows of the slots filled in this batch into one new chunk.
    fn take_pending(&mut self, v: &Values) -> Result<()> {
        if self.touched.is_empty() {
            return Ok(());
        }
        let c = self.chunks.len() as u32;
        let mut idx: Vec<u32> = Vec::new();
        for &g in &self.touched {
            let g = g as usize;
            self.marked[g] = false;
            let base = g * self.k;
            for s in base..base + self.len[g] as usize {
                if self.at[s].0 == PENDING {
                    let pos = self.at[s].1;
                    self.at[s] = (c, idx.len() as u32);
                    idx.push(pos);
                }
            }
        }
        self.touched.clear();
        if !idx.is_empty() {
            self.held += idx.len();
            let idx = UInt32Array::from(idx);
            let taken = super::owned(arrow_select::take::take(v.values.as_ref(), &idx, None)?);
            self.chunks.push(taken);
        }
        Ok(())
    }

    /// Compact fallen-out values and codes away once they are as many as the live ones.
    fn compact(&mut self) -> Result<()> {
        if self.held > 2 * self.live + 1024 || self.chunks.len() > 4096 {
            let (one, slots) = self.filled()?;
            for (i, s) in slots.into_iter().enumerate() {
                self.at[s] = (0, i as u32);
            }
            self.held = one.len();
            self.chunks = vec![one];
        }
        if self.rows && self.arena.len() > 2 * self.live_bytes + (64 << 10) {
            let mut arena = Vec::with_capacity(self.live_bytes);
            for g in 0..self.len.len() {
                let base = g * self.k;
                for span in &mut self.span[base..base + self.len[g] as usize] {
                    let (at, len) = *span;
                    *span = (arena.len(), len);
                    arena.extend_from_slice(&self.arena[at..at + len]);
                }
            }
            self.arena = arena;
        }
        Ok(())
    }

    /// The values of the filled slots, group by group, slot by slot, and those slots.
    fn filled(&self) -> Result<(ArrayRef, Vec<usize>)> {
        let refs: Vec<&dyn Array> = self.chunks.iter().map(|c| c.as_ref()).collect();
        let mut slots = Vec::with_capacity(self.live);
        for (g, &n) in self.len.iter().enumerate() {
            slots.extend(g * self.k..g * self.k + n as usize);
        }
        let idx: Vec<(usize, usize)> = slots
            .iter()
            .map(|&s| (self.at[s].0 as usize, self.at[s].1 as usize))
            .collect();
        let values = if refs.is_empty() {
            arrow_array::new_empty_array(&self.dt)
        } else {
            arrow_select::interleave::interleave(&refs, &idx)?
        };
        Ok((values, slots))
    }

    /// The state column: each group's value (null where it has none) or, for top_k, the
    /// list of its values, best first; in the state's type.
    pub(super) fn state(&self) -> Result<ArrayRef> {
        let (values, _) = self.filled()?;
        if let Kind::TopK(_) = self.kind {
            let out = match &self.out {
                DataType::Dictionary(..) => arrow_cast::cast(&values, &self.out)?,
                _ => values,
            };
            let field = Arc::new(Field::new("item", self.out.clone(), true));
            let offsets = super::super::list_offsets(self.len.iter().map(|&n| n as usize))?;
            return Ok(Arc::new(ListArray::try_new(field, offsets, out, None)?));
        }
        // One value per group that has one: spread out, nulls between.
        let null = arrow_array::new_null_array(&self.dt, 1);
        let mut next = 0usize;
        let idx: Vec<(usize, usize)> = self
            .len
            .iter()
            .map(|&n| {
                if n == 0 {
                    (1, 0)
                } else {
                    next += 1;
                    (0, next - 1)
                }
            })
            .collect();
        let c = arrow_select::interleave::interleave(&[values.as_ref(), null.as_ref()], &idx)?;
        Ok(if self.out == self.dt {
            c
        } else {
            arrow_cast::cast(&c, &self.out)?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    use arrow_array::{Float64Array, StringArray};

    /// Fold `values` (one batch per slice) into one group, `kind` over them.
    fn fold_one(kind: Kind, batches: &[ArrayRef]) -> ArrayRef {
        let dt = batches[0].data_type().clone();
        let order = Order::of(kind, &dt).unwrap();
        let mut p = Picks::new(kind, &dt, &order);
        p.resize(1);
        for b in batches {
            let v = Values::of(b, &order).unwrap();
            p.fold(&v, 0, &vec![0; b.len()]).unwrap();
        }
        p.state().unwrap()
    }

    fn floats(v: &[Option<f64>]) -> ArrayRef {
        Arc::new(Float64Array::from(v.to_vec()))
    }

    fn bits(a: &ArrayRef) -> Vec<Option<u64>> {
        a.as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map(f64::to_bits))
            .collect()
    }

    /// Expected values are the DESIGN.md rules: nulls skipped, NaN greatest, -0.0 equal to
    /// 0.0 with ties to the earliest row.
    #[test]
    fn min_max_keep_the_earliest_of_equal_values() {
        let b = [
            floats(&[None, Some(0.0), Some(f64::NAN)]),
            floats(&[Some(-0.0), Some(f64::INFINITY), None]),
        ];
        assert_eq!(bits(&fold_one(Kind::Min, &b)), vec![Some(0f64.to_bits())]);
        assert_eq!(
            bits(&fold_one(Kind::Max, &b)),
            vec![Some(f64::NAN.to_bits())]
        );
        let b = [floats(&[Some(-0.0)]), floats(&[Some(0.0)])];
        assert_eq!(
            bits(&fold_one(Kind::Max, &b)),
            vec![Some((-0f64).to_bits())]
        );
        assert_eq!(bits(&fold_one(Kind::Last, &b)), vec![Some(0f64.to_bits())]);
        assert_eq!(bits(&fold_one(Kind::First, &[floats(&[None])])), vec![None]);
    }

    #[test]
    fn top_k_keeps_the_k_largest_best_first_ties_by_row() {
        let b: [ArrayRef; 2] = [
            Arc::new(StringArray::from(vec![Some("b"), None, Some("a")])),
            Arc::new(StringArray::from(vec![Some("c"), Some("b"), Some("a")])),
        ];
        let got = fold_one(Kind::TopK(3), &b);
        let list = got.as_list::<i32>();
        let v = list.value(0);
        let s: Vec<_> = v.as_string::<i32>().iter().collect();
        assert_eq!(s, vec![Some("c"), Some("b"), Some("b")]);
        // Of equal values the earlier row comes first: -0.0 of the first batch, then 0.0.
        let z = [
            floats(&[Some(-1.0), Some(-0.0)]),
            floats(&[Some(0.0), None]),
        ];
        let got = fold_one(Kind::TopK(2), &z);
        let v = got.as_list::<i32>().value(0);
        assert_eq!(
            bits(&v),
            vec![Some((-0f64).to_bits()), Some(0f64.to_bits())]
        );
        let none = fold_one(Kind::TopK(0), &b);
        assert_eq!(none.as_list::<i32>().value(0).len(), 0);
    }
}
