//! The resident state of min / max / first / last: each group's value itself (the input's
//! own value, bits and type kept), not a row of the input, which the resident state does
//! not hold.
//!
//! **Fold.** A batch's rows of a partition are gone through in input order; a row's valid
//! value replaces its group's when it is *strictly* better (min / max by the value's order
//! code, first only into a group without one, last always), so ties keep the earliest row,
//! as the kernel's [`super::super::accumulate::Extreme`] and `Pick` do. Each group's winner
//! in the batch is noted, and after the batch the winners are taken from it at once, as one
//! new chunk of values: a group's value is `chunks[at.0][at.1]`.
//!
//! **Order codes.** Values of one fixed-width column compare by their order-preserving
//! `u64` image (floats: NaN greatest, -0.0 equal to 0.0), kept per group; other orderable
//! values (byte strings, decimal128) by their arrow-row bytes, kept per group in an arena.
//!
//! **Garbage.** A replaced value stays in its chunk (and a replaced code in the arena) until
//! they hold twice the live ones; they are then compacted into one chunk (one arena).

use arrow_array::{Array, ArrayRef, UInt32Array};
use arrow_buffer::BooleanBuffer;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::DataType;

use crate::error::Result;
use crate::keys::encode::{Domain, domain_of_types, raw_u64};

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Min,
    Max,
    First,
    Last,
}

/// How a min / max compares values of its column.
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

/// A batch's values of one min / max / first / last, in the order the fold reads them.
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

impl Values {
    /// `column`'s values, their validity and their order codes under `order`.
    pub(super) fn of(column: &ArrayRef, order: &Order) -> Result<Values> {
        let values = crate::keys::decoded(column)?;
        let valid = values
            .logical_nulls()
            .filter(|n| n.null_count() > 0)
            .map(|n| n.inner().clone());
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

/// The values of one min / max / first / last, a value per group of a partition (see the
/// module docs).
pub(super) struct Picks {
    kind: Kind,
    /// The (decoded) value type, and the state's (the input's).
    dt: DataType,
    out: DataType,
    /// Whether each group has a value.
    set: Vec<bool>,
    /// Word codes: each group's value's.
    code: Vec<u64>,
    /// Row codes: each group's value's, `arena[span.0..span.0 + span.1]`.
    arena: Vec<u8>,
    span: Vec<(usize, usize)>,
    /// Bytes of the arena that are live codes.
    live_bytes: usize,
    /// Groups with a value.
    live: usize,
    rows_order: bool,
    words_order: bool,
    /// Each group's value: `chunks[at.0][at.1]`.
    at: Vec<(u32, u32)>,
    chunks: Vec<ArrayRef>,
    /// Values in `chunks`, live or replaced.
    held: usize,
    /// Each group's winner in the batch being folded: its index in the batch's winners.
    pending: Vec<u32>,
}

impl Picks {
    pub(super) fn new(kind: Kind, dt: &DataType, order: &Order) -> Picks {
        Picks {
            kind,
            dt: crate::keys::value_type(dt).clone(),
            out: dt.clone(),
            set: Vec::new(),
            code: Vec::new(),
            arena: Vec::new(),
            span: Vec::new(),
            live_bytes: 0,
            live: 0,
            rows_order: matches!(order, Order::Rows(_)),
            words_order: matches!(order, Order::Words(_)),
            at: Vec::new(),
            chunks: Vec::new(),
            held: 0,
            pending: Vec::new(),
        }
    }

    pub(super) fn resize(&mut self, n: usize) {
        self.set.resize(n, false);
        self.at.resize(n, (0, 0));
        self.pending.resize(n, NONE);
        if self.words_order {
            self.code.resize(n, 0);
        }
        if self.rows_order {
            self.span.resize(n, (0, 0));
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.set.capacity()
            + self.code.capacity() * 8
            + self.arena.capacity()
            + self.span.capacity() * 16
            + self.at.capacity() * 8
            + self.pending.capacity() * 4
            + self
                .chunks
                .iter()
                .map(|c| c.get_array_memory_size())
                .sum::<usize>()
    }

    /// Fold the values at positions `first..` into the groups `gids` (one per position).
    pub(super) fn fold(&mut self, v: &Values, first: usize, gids: &[u32]) -> Result<()> {
        let mut win: Vec<(u32, u32)> = Vec::new();
        let max = self.kind == Kind::Max;
        for (i, &g) in gids.iter().enumerate() {
            let pos = first + i;
            if v.valid.as_ref().is_some_and(|b| !b.value(pos)) {
                continue;
            }
            let gi = g as usize;
            let set = self.set[gi];
            let better = match (self.kind, &v.codes) {
                (Kind::First, _) => !set,
                (Kind::Last, _) => true,
                (_, Codes::Words(c)) => {
                    !set || if max {
                        c[pos] > self.code[gi]
                    } else {
                        c[pos] < self.code[gi]
                    }
                }
                (_, Codes::Rows(r)) => {
                    let (at, len) = self.span[gi];
                    let (b, cur) = (r.row(pos).data(), &self.arena[at..at + len]);
                    !set || if max { b > cur } else { b < cur }
                }
                (_, Codes::None) => unreachable!("a min / max has order codes"),
            };
            if !better {
                continue;
            }
            if !set {
                self.set[gi] = true;
                self.live += 1;
            }
            match &v.codes {
                Codes::Words(c) => self.code[gi] = c[pos],
                Codes::Rows(r) => {
                    let b = r.row(pos).data();
                    if set {
                        self.live_bytes -= self.span[gi].1;
                    }
                    self.span[gi] = (self.arena.len(), b.len());
                    self.arena.extend_from_slice(b);
                    self.live_bytes += b.len();
                }
                Codes::None => {}
            }
            match self.pending[gi] {
                NONE => {
                    self.pending[gi] = win.len() as u32;
                    win.push((g, pos as u32));
                }
                w => win[w as usize].1 = pos as u32,
            }
        }
        if win.is_empty() {
            return Ok(());
        }
        let idx = UInt32Array::from_iter_values(win.iter().map(|w| w.1));
        let taken = super::owned(arrow_select::take::take(v.values.as_ref(), &idx, None)?);
        let c = self.chunks.len() as u32;
        for (j, &(g, _)) in win.iter().enumerate() {
            self.at[g as usize] = (c, j as u32);
            self.pending[g as usize] = NONE;
        }
        self.chunks.push(taken);
        self.held += win.len();
        self.compact()
    }

    /// Compact replaced values and codes away once they are as many as the live ones.
    fn compact(&mut self) -> Result<()> {
        if self.held > 2 * self.live + 1024 || self.chunks.len() > 4096 {
            let one = self.column()?;
            let n = self.set.len() as u32;
            self.at = (0..n).map(|g| (0, g)).collect();
            self.held = one.len();
            self.chunks = vec![one];
        }
        if self.rows_order && self.arena.len() > 2 * self.live_bytes + (64 << 10) {
            let mut arena = Vec::with_capacity(self.live_bytes);
            for (g, span) in self.span.iter_mut().enumerate() {
                if self.set[g] {
                    let (at, len) = *span;
                    *span = (arena.len(), len);
                    arena.extend_from_slice(&self.arena[at..at + len]);
                }
            }
            self.arena = arena;
        }
        Ok(())
    }

    /// The value of every group, null where it has none, in the state's type.
    pub(super) fn state(&self) -> Result<ArrayRef> {
        let c = self.column()?;
        Ok(if self.out == self.dt {
            c
        } else {
            arrow_cast::cast(&c, &self.out)?
        })
    }

    /// The value of every group, null where it has none, in the (decoded) value type.
    fn column(&self) -> Result<ArrayRef> {
        let null = arrow_array::new_null_array(&self.dt, 1);
        let mut refs: Vec<&dyn Array> = self.chunks.iter().map(|c| c.as_ref()).collect();
        let blank = refs.len();
        refs.push(null.as_ref());
        let idx: Vec<(usize, usize)> = self
            .at
            .iter()
            .zip(&self.set)
            .map(|(&(c, r), &s)| {
                if s {
                    (c as usize, r as usize)
                } else {
                    (blank, 0)
                }
            })
            .collect();
        Ok(arrow_select::interleave::interleave(&refs, &idx)?)
    }
}
