//! Per-group states of the decomposable aggregates and the parallel driver that fills them.
//!
//! An aggregate is an [`Acc`]: a per-group state, an `update` with one row, and a `merge` of
//! two states (the state of earlier rows first). [`accumulate`] fills one state per slot in
//! one of two layouts, chosen from the row and slot counts only (never the thread count):
//! * **blocks** (few groups: `slots * 8 <= n`): the rows are cut into at most 64 fixed blocks;
//!   each block fills its own state array, and the arrays are merged slot by slot in block
//!   order. Low-cardinality keys thus aggregate into dense arrays with no synchronization.
//! * **partitions** (many groups): the rows are split into partitions that each own a slot
//!   range (the hash partitions of hashed groups), and each partition updates its own states
//!   in row order.
//!
//! Either way a group's rows are folded in a fixed order, so float results are bit-identical
//! for every thread count. Everything here is `Copy` state — the holistic aggregates
//! (median, quantile, n_unique, top_k) live in `holistic.rs`.

use arrow_buffer::BooleanBuffer;
use rayon::prelude::*;

use super::groups::{Groups, NO_GROUP, NO_ROW};
use crate::parallel::partition_count;

/// One aggregate's per-group state machine over one input chunk.
pub trait Acc: Sync {
    type S: Copy + Send + Sync;
    fn init(&self) -> Self::S;
    /// Fold row `row` (of this accumulator's chunk) into `s`.
    fn update(&self, s: &mut Self::S, row: usize);
    /// Fold `b` (the state of later rows) into `a`.
    fn merge(&self, a: &mut Self::S, b: &Self::S);
    /// Fold the rows `first..` whose slots are `slots` (a run of one chunk) into `st`.
    #[inline(always)]
    fn update_run(&self, st: &mut [Self::S], slots: &[u32], first: usize) {
        update_rows(self, st, slots, first);
    }
}

/// [`Acc::update`] of every grouped row of a run (the general `update_run`; accumulators
/// whose input has no nulls override it with a tighter loop).
#[inline(always)]
fn update_rows<A: Acc + ?Sized>(acc: &A, st: &mut [A::S], slots: &[u32], first: usize) {
    for (j, &s) in slots.iter().enumerate() {
        if s != NO_GROUP {
            acc.update(&mut st[s as usize], first + j);
        }
    }
}

/// `add(state of row j's slot, j)` for every grouped row `j` of a run, for an aggregate
/// whose states may be folded in any order (exact sums, counts). With few slots, rows that
/// follow each other mostly hit the same slot and each update waits for the previous one's
/// store; four lanes of states (row `j` in lane `j % 4`), merged at the end, keep four
/// independent chains in flight.
#[inline(always)]
fn laned<S: Copy>(
    st: &mut [S],
    slots: &[u32],
    zero: S,
    add: impl Fn(&mut S, usize),
    merge: impl Fn(&mut S, &S),
) {
    const LANES: usize = 4;
    let n = st.len();
    if n > 64 || slots.len() < 16 * n {
        for (j, &s) in slots.iter().enumerate() {
            if s != NO_GROUP {
                add(&mut st[s as usize], j);
            }
        }
        return;
    }
    let mut lanes = vec![zero; LANES * n];
    let (lane0, rest) = lanes.split_at_mut(n);
    let (lane1, rest) = rest.split_at_mut(n);
    let (lane2, lane3) = rest.split_at_mut(n);
    let whole = slots.len() / LANES * LANES;
    for (c, four) in slots[..whole].chunks_exact(LANES).enumerate() {
        let j = c * LANES;
        if four[0] != NO_GROUP {
            add(&mut lane0[four[0] as usize], j);
        }
        if four[1] != NO_GROUP {
            add(&mut lane1[four[1] as usize], j + 1);
        }
        if four[2] != NO_GROUP {
            add(&mut lane2[four[2] as usize], j + 2);
        }
        if four[3] != NO_GROUP {
            add(&mut lane3[four[3] as usize], j + 3);
        }
    }
    for (j, &s) in slots.iter().enumerate().skip(whole) {
        if s != NO_GROUP {
            add(&mut lane0[s as usize], j);
        }
    }
    for (k, out) in st.iter_mut().enumerate() {
        for lane in lanes.chunks_exact(n) {
            merge(out, &lane[k]);
        }
    }
}

/// Most blocks of the block layout.
const MAX_BLOCKS: usize = 64;

/// One state per slot of `g`. The input comes in chunks: `accs[c]` reads the rows
/// `starts[c]..starts[c + 1]` (by their offset in the chunk), so chunked columns are read in
/// place, never concatenated. Block ranges are cut at chunk boundaries; a partition's rows
/// ascend, so its chunk cursor only moves forward. `accs` holds at least one accumulator.
pub fn accumulate<A: Acc>(accs: &[A], starts: &[usize], g: &Groups) -> Vec<A::S> {
    let n = g.slot.len();
    debug_assert_eq!(starts.len(), accs.len() + 1);
    debug_assert_eq!(starts.last().copied().unwrap_or(0), n);
    let slots = g.slots;
    let zero = accs[0].init();
    if slots * 8 <= n || slots == 1 {
        let slot = &g.slot;
        let nblocks = (n / (4 * slots.max(1))).clamp(1, MAX_BLOCKS);
        let size = n.div_ceil(nblocks).max(1);
        let mut blocks: Vec<Vec<A::S>> = (0..n.div_ceil(size).max(1))
            .into_par_iter()
            .map(|b| {
                crate::cancel::point();
                let mut st = vec![zero; slots];
                let (lo, hi) = (b * size, ((b + 1) * size).min(n));
                let mut c = starts.partition_point(|&s| s <= lo).saturating_sub(1);
                let mut at = lo;
                while at < hi {
                    let end = starts[c + 1].min(hi);
                    accs[c].update_run(&mut st, &slot[at..end], at - starts[c]);
                    at = end;
                    c += 1;
                }
                st
            })
            .collect();
        let rest = blocks.split_off(1);
        let mut out = blocks.pop().unwrap_or_default();
        let acc = &accs[0];
        out.par_iter_mut().enumerate().for_each(|(s, st)| {
            for b in &rest {
                acc.merge(st, &b[s]);
            }
        });
        out
    } else {
        in_row_order(accs, starts, g)
    }
}

/// One state per slot of `g`, each group's rows folded one by one in row order (the
/// **partitions** layout of [`accumulate`], whatever the slot count). The group-by state
/// merges partial states this way: a group's state is then the left fold of its partial
/// states in input order, whichever rows were merged together and when — so it is the same
/// whether the state was merged in one piece or in hash partitions, spilled or not.
pub fn in_row_order<A: Acc>(accs: &[A], starts: &[usize], g: &Groups) -> Vec<A::S> {
    let n = g.slot.len();
    let zero = accs[0].init();
    let sp = g.partitions(partition_count(n) * 4);
    let locals: Vec<Vec<A::S>> = (0..sp.parts.len())
        .into_par_iter()
        .map(|p| {
            crate::cancel::point();
            let base = sp.bases[p];
            let mut st = vec![zero; sp.bases[p + 1] - base];
            let mut c = 0;
            let (rows, slots) = sp.part(p);
            for (&r, &s) in rows.iter().zip(slots) {
                let r = r as usize;
                while r >= starts[c + 1] {
                    c += 1;
                }
                accs[c].update(&mut st[s as usize - base], r - starts[c]);
            }
            st
        })
        .collect();
    locals.concat()
}

/// Row offsets of chunks of these lengths, and the total.
pub fn chunk_starts(lens: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut out = vec![0];
    for l in lens {
        out.push(out.last().copied().unwrap_or(0) + l);
    }
    out
}

/// Validity of a column (`None`: every row valid).
#[inline(always)]
fn ok(valid: Option<&BooleanBuffer>, row: usize) -> bool {
    valid.is_none_or(|v| v.value(row))
}

/// Non-null count (`count`), or rows (`size`, with no validity).
pub struct Count {
    pub valid: Option<BooleanBuffer>,
}

impl Acc for Count {
    type S = u64;
    fn init(&self) -> u64 {
        0
    }
    #[inline(always)]
    fn update(&self, s: &mut u64, row: usize) {
        *s += u64::from(ok(self.valid.as_ref(), row));
    }
    fn merge(&self, a: &mut u64, b: &u64) {
        *a += b;
    }
    /// Without nulls: every row counts.
    #[inline(always)]
    fn update_run(&self, st: &mut [u64], slots: &[u32], first: usize) {
        if self.valid.is_some() {
            return update_rows(self, st, slots, first);
        }
        laned(st, slots, 0, |c, _| *c += 1, |a, b| *a += b);
    }
}

/// Sums in accumulator type `A` (state: sum, non-null count): `i128` for signed integers and
/// `u128` for `u64` — exact, since they cannot overflow before 2^64 rows (the caller checks
/// the final range) — and [`Kahan`] for floats (also the numerator of means).
pub struct Sum<'a, V, A> {
    pub values: &'a [V],
    pub valid: Option<BooleanBuffer>,
    pub acc: std::marker::PhantomData<A>,
}

impl<'a, V, A> Sum<'a, V, A> {
    pub fn new(values: &'a [V], valid: Option<BooleanBuffer>) -> Self {
        Sum {
            values,
            valid,
            acc: std::marker::PhantomData,
        }
    }
}

impl<V, A> Acc for Sum<'_, V, A>
where
    V: Copy + Sync,
    A: Copy + Default + Send + Sync + std::ops::AddAssign + From<V>,
{
    type S = (A, u64);
    fn init(&self) -> Self::S {
        (A::default(), 0)
    }
    #[inline(always)]
    fn update(&self, s: &mut Self::S, row: usize) {
        if ok(self.valid.as_ref(), row) {
            s.0 += A::from(self.values[row]);
            s.1 += 1;
        }
    }
    fn merge(&self, a: &mut Self::S, b: &Self::S) {
        a.0 += b.0;
        a.1 += b.1;
    }
    #[inline(always)]
    fn update_run(&self, st: &mut [Self::S], slots: &[u32], first: usize) {
        let add = |s: &mut Self::S, v: V| {
            s.0 += A::from(v);
            s.1 += 1;
        };
        values_run(
            self,
            self.valid.is_some(),
            self.values,
            st,
            slots,
            first,
            add,
        );
    }
}

/// [`Acc::update_run`] of an accumulator folding one value per row with `add`: without
/// nulls a tight loop over the values, with no validity test per row.
#[inline(always)]
fn values_run<A: Acc, V: Copy>(
    acc: &A,
    nullable: bool,
    values: &[V],
    st: &mut [A::S],
    slots: &[u32],
    first: usize,
    add: impl Fn(&mut A::S, V),
) {
    if nullable {
        return update_rows(acc, st, slots, first);
    }
    let values = &values[first..first + slots.len()];
    for (&s, &v) in slots.iter().zip(values) {
        if s != NO_GROUP {
            add(&mut st[s as usize], v);
        }
    }
}

/// The count's top bit in a [`SumI64`] state: an addition or merge overflowed 64 bits.
pub const OVERFLOWED: u64 = 1 << 63;

/// Exact sums of int64 values in 64 bits: the state is the wrapping sum and the count of
/// values, whose top bit ([`OVERFLOWED`]) is set once any step of the group overflowed —
/// the sum is then not exact, and the caller sums again in 128 bits ([`Sum`]). While no
/// step overflows, every step is exact, so the sum is. Half the bytes of an `i128` state:
/// twice the groups per cache line and level.
pub struct SumI64<'a> {
    pub values: &'a [i64],
    pub valid: Option<BooleanBuffer>,
}

#[inline(always)]
fn add_i64(s: &mut (i64, u64), v: i64) {
    let (sum, over) = s.0.overflowing_add(v);
    s.0 = sum;
    s.1 = (s.1 + 1) | (u64::from(over) << 63);
}

impl Acc for SumI64<'_> {
    type S = (i64, u64);
    fn init(&self) -> Self::S {
        (0, 0)
    }
    #[inline(always)]
    fn update(&self, s: &mut Self::S, row: usize) {
        if ok(self.valid.as_ref(), row) {
            add_i64(s, self.values[row]);
        }
    }
    fn merge(&self, a: &mut Self::S, b: &Self::S) {
        let (sum, over) = a.0.overflowing_add(b.0);
        a.0 = sum;
        a.1 = ((a.1 & !OVERFLOWED) + (b.1 & !OVERFLOWED))
            | ((a.1 | b.1) & OVERFLOWED)
            | (u64::from(over) << 63);
    }
    #[inline(always)]
    fn update_run(&self, st: &mut [Self::S], slots: &[u32], first: usize) {
        values_run(
            self,
            self.valid.is_some(),
            self.values,
            st,
            slots,
            first,
            add_i64,
        );
    }
}

/// A compensated float sum: Kahan summation exactly as pandas' groupby `sum` / `mean`
/// compute it (`y = x - c; t = s + y; c = (t - s) - y; s = t`, the compensation reset to 0
/// when an infinity makes it NaN), so `1e16 + 97 - 5e15 - 5e15` is 97, not 96, and the
/// pandas drop-ins get pandas' bits. A group's rows are folded in row order within a block;
/// block states merge in block order (the later sum added with the same step, compensations
/// combined), a fixed order for every thread count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Kahan {
    sum: f64,
    comp: f64,
}

impl Kahan {
    /// The running sum and its compensation: the whole state.
    pub fn parts(self) -> (f64, f64) {
        (self.sum, self.comp)
    }

    pub fn from_parts(sum: f64, comp: f64) -> Self {
        Kahan { sum, comp }
    }

    /// The sum (pandas returns the running sum, not sum minus compensation).
    #[inline]
    pub fn value(self) -> f64 {
        self.sum
    }

    #[inline(always)]
    fn add(&mut self, x: f64) {
        let y = x - self.comp;
        let t = self.sum + y;
        let c = (t - self.sum) - y;
        // An infinity makes the compensation NaN, which would turn inf into NaN (GH#53606).
        self.comp = if c.is_nan() { 0.0 } else { c };
        self.sum = t;
    }
}

impl From<f64> for Kahan {
    #[inline(always)]
    fn from(x: f64) -> Self {
        Kahan { sum: x, comp: 0.0 }
    }
}

impl std::ops::AddAssign for Kahan {
    #[inline(always)]
    fn add_assign(&mut self, b: Kahan) {
        self.add(b.sum);
        self.comp += b.comp;
    }
}

/// Decimal sums with overflow detection. State: (sum, non-null count, overflowed).
pub struct SumDecimal<'a, V> {
    pub values: &'a [V],
    pub valid: Option<BooleanBuffer>,
}

impl<V: Copy + Sync + Into<i128>> Acc for SumDecimal<'_, V> {
    type S = (i128, u64, bool);
    fn init(&self) -> Self::S {
        (0, 0, false)
    }
    #[inline(always)]
    fn update(&self, s: &mut Self::S, row: usize) {
        if ok(self.valid.as_ref(), row) {
            let (v, o) = s.0.overflowing_add(self.values[row].into());
            *s = (v, s.1 + 1, s.2 | o);
        }
    }
    fn merge(&self, a: &mut Self::S, b: &Self::S) {
        let (v, o) = a.0.overflowing_add(b.0);
        *a = (v, a.1 + b.1, a.2 | b.2 | o);
    }
    /// Without nulls: no validity test per row.
    #[inline(always)]
    fn update_run(&self, st: &mut [Self::S], slots: &[u32], first: usize) {
        if self.valid.is_some() {
            return update_rows(self, st, slots, first);
        }
        let values = &self.values[first..first + slots.len()];
        let add = |st: &mut Self::S, j: usize| {
            let (sum, o) = st.0.overflowing_add(values[j].into());
            *st = (sum, st.1 + 1, st.2 | o);
        };
        laned(st, slots, self.init(), add, |a, b| self.merge(a, b));
    }
}

/// Count, mean and sum of squared deviations (Welford updates, Chan merges) for var / std.
#[derive(Clone, Copy, Default)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    #[inline(always)]
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn combine(&mut self, b: &Moments) {
        if b.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *b;
            return;
        }
        let (na, nb) = (self.n as f64, b.n as f64);
        let n = na + nb;
        let d = b.mean - self.mean;
        self.mean += d * nb / n;
        self.m2 += b.m2 + d * d * na * nb / n;
        self.n += b.n;
    }

    /// Sample variance (ddof = 1); `None` below two values.
    pub fn var(&self) -> Option<f64> {
        (self.n >= 2).then(|| self.m2 / (self.n - 1) as f64)
    }
}

pub struct Variance<'a> {
    pub values: &'a [f64],
    pub valid: Option<BooleanBuffer>,
}

impl Acc for Variance<'_> {
    type S = Moments;
    fn init(&self) -> Moments {
        Moments::default()
    }
    #[inline(always)]
    fn update(&self, s: &mut Moments, row: usize) {
        if ok(self.valid.as_ref(), row) {
            s.push(self.values[row]);
        }
    }
    fn merge(&self, a: &mut Moments, b: &Moments) {
        a.combine(b);
    }
    /// Without nulls: no validity test per row.
    #[inline(always)]
    fn update_run(&self, st: &mut [Moments], slots: &[u32], first: usize) {
        if self.valid.is_some() {
            return update_rows(self, st, slots, first);
        }
        let values = &self.values[first..first + slots.len()];
        for (&s, &v) in slots.iter().zip(values) {
            if s != NO_GROUP {
                st[s as usize].push(v);
            }
        }
    }
}

/// Co-moments of two columns over rows where both are valid (Pearson correlation).
#[derive(Clone, Copy, Default)]
pub struct CoMoments {
    pub n: u64,
    pub mx: f64,
    pub my: f64,
    pub m2x: f64,
    pub m2y: f64,
    pub cxy: f64,
}

impl CoMoments {
    /// Fold in `b`, the co-moments of later rows (Chan et al.).
    pub fn combine(&mut self, b: &CoMoments) {
        if b.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *b;
            return;
        }
        let (na, nb) = (self.n as f64, b.n as f64);
        let n = na + nb;
        let (dx, dy) = (b.mx - self.mx, b.my - self.my);
        let w = na * nb / n;
        self.m2x += b.m2x + dx * dx * w;
        self.m2y += b.m2y + dy * dy * w;
        self.cxy += b.cxy + dx * dy * w;
        self.mx += dx * nb / n;
        self.my += dy * nb / n;
        self.n += b.n;
    }

    /// Pearson's r; `None` below two rows.
    pub fn corr(&self) -> Option<f64> {
        (self.n >= 2).then(|| self.cxy / (self.m2x * self.m2y).sqrt())
    }
}

pub struct Correlation<'a> {
    pub x: &'a [f64],
    pub y: &'a [f64],
    pub valid_x: Option<BooleanBuffer>,
    pub valid_y: Option<BooleanBuffer>,
}

impl Acc for Correlation<'_> {
    type S = CoMoments;
    fn init(&self) -> CoMoments {
        CoMoments::default()
    }
    #[inline(always)]
    fn update(&self, s: &mut CoMoments, row: usize) {
        if ok(self.valid_x.as_ref(), row) && ok(self.valid_y.as_ref(), row) {
            let (x, y) = (self.x[row], self.y[row]);
            s.n += 1;
            let n = s.n as f64;
            let dx = x - s.mx;
            s.mx += dx / n;
            let dy = y - s.my;
            s.my += dy / n;
            s.m2x += dx * (x - s.mx);
            s.m2y += dy * (y - s.my);
            s.cxy += dx * (y - s.my);
        }
    }
    fn merge(&self, a: &mut CoMoments, b: &CoMoments) {
        a.combine(b);
    }
}

/// States that merge (partial states of earlier batches first).
pub trait Mergeable: Copy + Default + Send + Sync {
    fn combine(&mut self, b: &Self);
}

impl Mergeable for Moments {
    fn combine(&mut self, b: &Self) {
        Moments::combine(self, b)
    }
}

/// A float sum's state: the compensated sum and the count of values.
impl Mergeable for (Kahan, u64) {
    fn combine(&mut self, b: &Self) {
        self.0 += b.0;
        self.1 += b.1;
    }
}

impl Mergeable for CoMoments {
    fn combine(&mut self, b: &Self) {
        CoMoments::combine(self, b)
    }
}

/// Rows that are themselves partial states (of earlier record batches), merged per group.
pub struct Combine<'a, T> {
    pub states: &'a [T],
}

impl<T: Mergeable> Acc for Combine<'_, T> {
    type S = T;
    fn init(&self) -> T {
        T::default()
    }
    #[inline(always)]
    fn update(&self, s: &mut T, row: usize) {
        s.combine(&self.states[row]);
    }
    fn merge(&self, a: &mut T, b: &T) {
        a.combine(b);
    }
}

/// Row of the least (`MAX = false`) or greatest order code among valid rows; ties keep the
/// earliest row. State: (code, row), row [`NO_ROW`] when none.
pub struct Extreme<'a, const MAX: bool> {
    pub codes: &'a [u64],
    pub valid: Option<&'a [bool]>,
}

impl<const MAX: bool> Extreme<'_, MAX> {
    #[inline(always)]
    fn better(a: u64, b: u64) -> bool {
        if MAX { b > a } else { b < a }
    }
}

impl<const MAX: bool> Acc for Extreme<'_, MAX> {
    type S = (u64, u32);
    fn init(&self) -> Self::S {
        (0, NO_ROW)
    }
    #[inline(always)]
    fn update(&self, s: &mut Self::S, row: usize) {
        if self.valid.is_none_or(|v| v[row]) {
            let c = self.codes[row];
            if s.1 == NO_ROW || Self::better(s.0, c) {
                *s = (c, row as u32);
            }
        }
    }
    fn merge(&self, a: &mut Self::S, b: &Self::S) {
        if b.1 != NO_ROW && (a.1 == NO_ROW || Self::better(a.0, b.0)) {
            *a = *b;
        }
    }
}

/// First (`LAST = false`) or last valid row (table row: chunk row + `base`).
pub struct Pick<const LAST: bool> {
    pub valid: Option<BooleanBuffer>,
    pub base: usize,
}

impl<const LAST: bool> Acc for Pick<LAST> {
    type S = u32;
    fn init(&self) -> u32 {
        NO_ROW
    }
    #[inline(always)]
    fn update(&self, s: &mut u32, row: usize) {
        if ok(self.valid.as_ref(), row) && (LAST || *s == NO_ROW) {
            *s = (self.base + row) as u32;
        }
    }
    fn merge(&self, a: &mut u32, b: &u32) {
        if *b != NO_ROW && (LAST || *a == NO_ROW) {
            *a = *b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kahan;

    fn sum(xs: &[f64]) -> f64 {
        let mut s = Kahan::default();
        for &x in xs {
            s += Kahan::from(x);
        }
        s.value()
    }

    /// Expected values are pandas' (`df.groupby(g).sum()` of the same rows).
    #[test]
    fn compensated_sums_as_pandas() {
        assert_eq!(sum(&[1e16, 97.0, -5e15, -5e15]), 97.0);
        assert_eq!(sum(&[1e16, 98.0, -5e15, -5e15]), 98.0);
        assert_eq!(sum(&[0.1; 10]), 1.0);
        assert_eq!(sum(&[f64::INFINITY, 1.0]), f64::INFINITY);
        assert_eq!(sum(&[1e308, 1e308]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(sum(&[1.0, f64::NAN]).is_nan());
        let two62 = 2f64.powi(62);
        assert_eq!(sum(&[0.0, 0.0, 1.0, two62, -two62]), 0.0); // pandas' Kahan loses the 1
    }
}
