//! The pipeline's group-by state: one resident, hash-partitioned table of groups that every
//! input row is folded into where it lands; no partial tables, no merges.
//!
//! **Algorithm.** Each batch is made ready in parallel with the other batches of its wave:
//! its key of every row is hashed (one `u64` word for a single fixed-width key, the bytes
//! for a single byte-string key, arrow-row bytes otherwise) and its rows are cut by hash
//! bits 40..46 into [`PARTS`] partitions, keeping row order. Then each partition, in
//! parallel with the others, probes its own small hash table for the group of each of its
//! rows (inserting the groups it has not seen) and folds the row into the group's state.
//! A group's rows all land in one partition, in input order, so a group's state is the
//! left fold of its rows: the same whatever the batch cuts and the thread count.
//!
//! **Folding a row** is merging the row's own one-row state into the group's
//! (`acc.update(one)`, then `acc.merge(state, one)`), with the kernel's accumulators. That
//! is exactly what merging a partial-state table of one-row states does
//! ([`super::stream`]), so when the state spills — exported as a partial-state table, its
//! later rows handed over as one-row states ([`ResidentState::singletons`]) to the
//! partitions on disk ([`super::external`]) — every group ends with the same bits as in
//! memory.
//!
//! **Batches of few groups.** Where every aggregate is a count, an exact sum / mean (whose
//! folds do not depend on how rows are associated) or a min / max / first / last, a batch
//! is first grouped on its own, in the scan's parallel phase, column by column (dense ids
//! per key column, [`batch_groups`]), and folded as one row per group with its rows'
//! counts and sums and the value each pick keeps: a batch of few groups (TPC-H Q1: 4)
//! would otherwise be hashed, encoded and probed row by row in at most that many
//! partitions, one thread each. Once a batch has more than one group per [`LOCAL_RATIO`]
//! rows, later batches are not tried.
//!
//! **Order.** Each partition numbers its groups in first-appearance order and keeps the
//! ordinal of each group's first row; the finished groups are put in first-appearance
//! order by those ordinals.
//!
//! Every aggregate is folded here: count, size, sum, mean, var, std and corr, whose states
//! are a few words; min / max / first / last and top_k, whose states are the group's best
//! values ([`pick`]); median / quantile and n_unique, whose states are lists of values
//! ([`lists`]). A min / max / top_k / n_unique needs values that a `u64` image or arrow-row
//! bytes order (every type the kernel orders; otherwise a `TypeError`). Without keys every
//! row is in one group.

mod lists;
mod pick;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_buffer::BooleanBuffer;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, SchemaRef};
use hashbrown::HashTable;
use rayon::prelude::*;

use super::accumulate::{Acc, CoMoments, Correlation, Count, Kahan, Moments, Sum, Variance};
use super::stream::{
    Carry, GroupByState, comoments_columns, exact_state, finish_state, int64, kahan_columns,
    moments_columns,
};
use super::{AggFn, GroupByOptions, check};
use crate::error::{Error, Result};
use crate::keys::encode::{Domain, domain_of_types, raw_u64};
use crate::keys::intern::{ByteChunk, Entry, SEED, hash_bytes, head};
use crate::keys::partition::mix;
use crate::table::{Table, schema_mismatch};
use lists::{AllValues, Distinct};
use pick::{Kind, Order, Picks, Values};

/// Hash partitions of the state: many more than threads, so that uneven partitions even
/// out, few enough that a batch's rows per partition are runs worth a loop.
pub const PARTS: usize = 64;

/// The hash of a null key (single-column keys; arrow-row encodes nulls itself).
const NULL_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn part_of(h: u64) -> usize {
    // hashbrown takes its buckets from the low bits and its tags from the top 7.
    (h >> 40) as usize & (PARTS - 1)
}

#[inline]
fn word_hash(w: u64) -> u64 {
    mix(w ^ SEED)
}

/// How keys are compared.
enum Shape {
    /// No key: one group of every row.
    Unit,
    /// One fixed-width key column: its order-preserving `u64` image (floats: NaN == NaN,
    /// -0.0 == 0.0).
    Word(Domain),
    /// One byte-string key column (or a dictionary of byte strings): its bytes.
    Bytes,
    /// Any other key: arrow-row bytes of the key columns, dictionaries decoded and floats
    /// made canonical first.
    Rows(RowConverter),
}

/// One aggregate's states, a value per group of a partition.
enum States {
    Count(Vec<u64>),
    Kahan(Vec<(Kahan, u64)>),
    Exact(Vec<(i128, u64)>),
    Moments(Vec<Moments>),
    Co(Vec<CoMoments>),
    Pick(Box<Picks>),
    All(AllValues),
    Distinct(Box<Distinct>),
}

impl States {
    fn of(carry: &Carry, func: &AggFn, input: Option<&DataType>, order: &Order) -> States {
        match carry {
            Carry::Same | Carry::TopK(_) => States::Pick(Box::new(Picks::new(
                kind(func),
                input.expect("checked: the aggregate has a column"),
                order,
            ))),
            Carry::Quantile(_) => States::All(AllValues::default()),
            Carry::NUnique => States::Distinct(Box::new(Distinct::new(
                input.expect("checked: the aggregate has a column"),
            ))),
            Carry::Count => States::Count(Vec::new()),
            Carry::FloatSum | Carry::Mean { exact: None } => States::Kahan(Vec::new()),
            Carry::Exact { .. } | Carry::Mean { exact: Some(_) } => States::Exact(Vec::new()),
            Carry::Moments { .. } => States::Moments(Vec::new()),
            Carry::Corr => States::Co(Vec::new()),
        }
    }

    fn resize(&mut self, n: usize) {
        match self {
            States::Count(v) => v.resize(n, 0),
            States::Kahan(v) => v.resize(n, Default::default()),
            States::Exact(v) => v.resize(n, (0, 0)),
            States::Moments(v) => v.resize(n, Default::default()),
            States::Co(v) => v.resize(n, Default::default()),
            States::Pick(p) => p.resize(n),
            States::All(a) => a.resize(n),
            States::Distinct(d) => d.resize(n),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            States::Count(v) => v.capacity() * 8,
            States::Kahan(v) => v.capacity() * 24,
            States::Exact(v) => v.capacity() * 32,
            States::Moments(v) => v.capacity() * 24,
            States::Co(v) => v.capacity() * 48,
            States::Pick(p) => p.bytes(),
            States::All(a) => a.bytes(),
            States::Distinct(d) => d.bytes(),
        }
    }
}

/// One hash partition: its groups' keys, first-row ordinals and states.
#[derive(Default)]
struct Part {
    /// (key word, group) of the `Word` shape.
    table: HashTable<(u64, u32)>,
    /// The byte shapes' keys: each one's length and head, so that a probe of a key of up
    /// to 16 bytes is decided in the table (following the group's bytes would be one more
    /// cache miss a row); with the key hash of each group, and its bytes:
    /// `bytes[ends[g - 1]..ends[g]]`.
    strings: HashTable<Entry>,
    hashes: Vec<u64>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// The group of the null key (single-column shapes).
    null: Option<u32>,
    /// Ordinal of each group's first row.
    first: Vec<u64>,
    /// The key columns of the groups, in group order, in chunks (plain types).
    keys: Vec<Vec<ArrayRef>>,
    states: Vec<States>,
}

impl Part {
    fn groups(&self) -> usize {
        self.first.len()
    }

    fn bytes_held(&self) -> usize {
        let keys: usize = self.keys.iter().map(|c| arrays_bytes(c)).sum();
        self.table.capacity() * 17
            + self.strings.capacity() * (std::mem::size_of::<Entry>() + 1)
            + self.bytes.capacity()
            + (self.ends.capacity() + self.first.capacity() + self.hashes.capacity()) * 8
            + keys
            + self.states.iter().map(States::bytes).sum::<usize>()
    }

    #[inline]
    fn word_group(&mut self, w: u64, ordinal: u64) -> (u32, bool) {
        let h = word_hash(w);
        if let Some(&(_, g)) = self.table.find(h, |e| e.0 == w) {
            return (g, false);
        }
        let g = self.first.len() as u32;
        self.table.insert_unique(h, (w, g), |e| word_hash(e.0));
        self.first.push(ordinal);
        (g, true)
    }

    /// The group of the key whose head is `hd`, length `len` and hash `h`; `v` gives its
    /// bytes (read only for keys longer than 16 bytes, and for a new group).
    #[inline]
    fn bytes_group<'v>(
        &mut self,
        hd: [u64; 2],
        len: u32,
        h: u64,
        v: impl Fn() -> &'v [u8],
        ordinal: u64,
    ) -> (u32, bool) {
        let (bytes, ends) = (&self.bytes, &self.ends);
        let at = |g: u32| {
            let g = g as usize;
            &bytes[if g == 0 { 0 } else { ends[g - 1] }..ends[g]]
        };
        let hit = |e: &Entry| e.len == len && e.head == hd && (len <= 16 || at(e.id) == v());
        if let Some(e) = self.strings.find(h, hit) {
            return (e.id, false);
        }
        let g = self.first.len() as u32;
        let e = Entry {
            head: hd,
            len,
            id: g,
        };
        self.bytes.extend_from_slice(v());
        self.ends.push(self.bytes.len());
        self.hashes.push(h);
        let hashes = &self.hashes;
        self.strings.insert_unique(h, e, |e| hashes[e.id as usize]);
        self.first.push(ordinal);
        (g, true)
    }

    #[inline]
    fn null_group(&mut self, ordinal: u64) -> (u32, bool) {
        if let Some(g) = self.null {
            return (g, false);
        }
        let g = self.first.len() as u32;
        self.null = Some(g);
        // `ends` and `hashes` keep an entry per group (the byte shapes read them by group).
        self.ends.push(self.bytes.len());
        self.hashes.push(NULL_HASH);
        self.first.push(ordinal);
        (g, true)
    }
}

/// A batch's keys, ready for probing.
enum BatchKeys {
    /// By position.
    Words(Vec<u64>),
    /// A byte-string column (or a dictionary's values), and by position the index of the
    /// key's value there, its head and its length (read in row order when prepared: read
    /// in partition order, every key was a cache miss).
    Bytes {
        values: ArrayRef,
        idx: Vec<usize>,
        heads: Vec<([u64; 2], u32)>,
    },
    /// Arrow-row bytes: by row, or (`at`) of a batch's own groups' first rows, the one at
    /// each position being `rows.row(at[position])`.
    Rows { rows: Rows, at: Option<Vec<u32>> },
}

/// One aggregate's input in a batch (cast for its fold).
enum Input {
    Size,
    Count(Option<BooleanBuffer>),
    /// Float64 values.
    Float(ArrayRef),
    /// Int64, UInt64 or Decimal128 values.
    Exact(ArrayRef),
    /// Float64 x and y.
    Corr(ArrayRef, ArrayRef),
    Pick(Values),
    /// A batch's own groups' counts, and exact sums (with their value counts; `true` when
    /// one overflowed 128 bits): see [`ResidentState::prepare`].
    Counts(Vec<u64>),
    Sums(Vec<(i128, u64)>, bool),
}

/// A batch made ready for the fold: its rows cut by partition, *in partition order* — the
/// rows of partition `p` at positions `at[p]..at[p + 1]`, ascending — and so are its
/// hashes, key words, dictionary indices and aggregate inputs: a partition's fold reads
/// them in sequence (read at its rows' places in the batch, every value was a cache miss).
struct Prepared {
    keys: BatchKeys,
    /// `false` where the (single-column) key is null, by row.
    valid: Option<BooleanBuffer>,
    /// The row at each position, and its hash.
    rows: Vec<u32>,
    hashes: Vec<u64>,
    at: Vec<usize>,
    inputs: Vec<Input>,
    /// The batch's key columns, for the keys of new groups.
    key_cols: Vec<ArrayRef>,
    /// Ordinal of the batch's first row (set when absorbed).
    base: u64,
    rows_in: usize,
}

/// The resident group-by state (see the module docs).
pub struct ResidentState {
    schema: SchemaRef,
    opts: GroupByOptions,
    carries: Vec<Carry>,
    aggs: Vec<Plan>,
    state_schema: SchemaRef,
    key_idx: Vec<usize>,
    shape: Shape,
    parts: Vec<Part>,
    /// Rows absorbed: the next row's ordinal.
    rows: u64,
    /// Every aggregate a count, an exact sum / mean or a min / max / first / last, whose
    /// fold of a batch group's rows is the fold of one row (the group's count and sums, or
    /// its kept value): batches may be grouped on their own first.
    reducible: bool,
    /// Batches still reduce to few groups of their own (cleared by the first that does not).
    reduces: std::sync::atomic::AtomicBool,
}

impl ResidentState {
    pub fn new(schema: SchemaRef, opts: GroupByOptions) -> Result<Self> {
        let state_schema = GroupByState::new(schema.clone(), opts.clone())?.state_schema();
        let aggs = plan(&schema, &opts)?;
        let key_idx = crate::keys::key_positions(&schema, &opts.keys)?;
        let shape = shape(&schema, &opts)?;
        let reducible = aggs.iter().all(|a| {
            matches!(
                a.carry,
                Carry::Count | Carry::Exact { .. } | Carry::Mean { exact: Some(_) } | Carry::Same
            )
        });
        let mut st = ResidentState {
            schema,
            opts,
            reducible,
            reduces: std::sync::atomic::AtomicBool::new(true),
            carries: aggs.iter().map(|a| a.carry.clone()).collect(),
            aggs,
            state_schema,
            key_idx,
            shape,
            parts: Vec::new(),
            rows: 0,
        };
        st.clear();
        Ok(st)
    }

    /// Drop every group (the state of no rows; the ordinals go on).
    pub fn clear(&mut self) {
        let nk = self.key_idx.len();
        self.parts = (0..PARTS)
            .map(|_| Part {
                keys: vec![Vec::new(); nk],
                states: self.aggs.iter().map(Plan::states).collect(),
                ..Part::default()
            })
            .collect();
    }

    /// Groups held.
    pub fn num_groups(&self) -> usize {
        self.parts.iter().map(Part::groups).sum()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes_held() as u64).sum()
    }

    /// The schema of its partial-state tables ([`GroupByState::state_schema`]).
    pub fn state_schema(&self) -> SchemaRef {
        self.state_schema.clone()
    }

    /// Check `batch` against the input schema and make it ready for the fold; any number
    /// of batches may be made ready at once (in the scan's parallel phase, each right after
    /// its decoding), the order of their rows is set when they are absorbed.
    pub fn prepare(&self, batch: RecordBatch) -> Result<Ready> {
        if let Some(why) = schema_mismatch(&batch.schema(), &self.schema) {
            return Err(Error::Type(format!(
                "record batch does not match the group-by's schema: {why}"
            )));
        }
        Ok(Ready(self.prepare_one(&batch)?))
    }

    fn prepare_one(&self, batch: &RecordBatch) -> Result<Prepared> {
        crate::cancel::point();
        let n = batch.num_rows();
        let key_cols: Vec<ArrayRef> = self
            .key_idx
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        // Rows left out: a null key under `dropna`.
        let mut skip: Option<BooleanBuffer> = None;
        if self.opts.dropna {
            for c in &key_cols {
                if let Some(v) = c.logical_nulls().filter(|v| v.null_count() > 0) {
                    skip = Some(match skip {
                        None => v.inner().clone(),
                        Some(s) => &s & v.inner(),
                    });
                }
            }
        }
        let keep = |r: usize| skip.as_ref().is_none_or(|s| s.value(r));
        // The rows folded (candidates): every kept row, or one row per group of the batch's
        // own with the inputs aggregated per group (a batch of few groups folds few rows;
        // see `local_groups`). Only the candidates' keys are hashed and encoded.
        let local = self.local_groups(&key_cols, keep, n);
        let cand: Vec<u32> = match &local {
            Some((reps, _)) => reps.clone(),
            None => (0..n as u32).filter(|&r| keep(r as usize)).collect(),
        };
        // By candidate.
        let mut hashes = vec![0u64; cand.len()];
        let mut heads = Vec::new();
        let mut valid = None;
        let keys = match &self.shape {
            Shape::Unit => {
                hashes.fill(word_hash(0));
                BatchKeys::Words(vec![0; n])
            }
            Shape::Word(d) => {
                let c = &key_cols[0];
                let mut w = vec![0u64; n];
                raw_u64(c, &mut w, *d);
                for (h, &r) in hashes.iter_mut().zip(&cand) {
                    *h = word_hash(w[r as usize]);
                }
                valid = valid_of(c);
                BatchKeys::Words(w)
            }
            Shape::Bytes => {
                let c = &key_cols[0];
                let (values, idx) = match c.data_type() {
                    DataType::Dictionary(_, _) => {
                        let d = c.as_any_dictionary();
                        // (`normalized_keys` asserts some values; without any, every row
                        // is null and no index is read.)
                        let idx = if d.values().is_empty() {
                            vec![0; n]
                        } else {
                            d.normalized_keys()
                        };
                        (d.values().clone(), Some(idx))
                    }
                    _ => (c.clone(), None),
                };
                let chunk = ByteChunk::new(&values).expect("checked by shape()");
                valid = valid_of(c);
                heads = vec![([0u64; 2], 0u32); cand.len()];
                let idx = idx.unwrap_or_else(|| (0..n).collect());
                for ((h, hd), &r) in hashes.iter_mut().zip(&mut heads).zip(&cand) {
                    let r = r as usize;
                    if valid.as_ref().is_none_or(|v| v.value(r)) {
                        let v = chunk.value(idx[r]);
                        *h = hash_bytes(v);
                        *hd = (head(v), v.len() as u32);
                    }
                }
                BatchKeys::Bytes {
                    values,
                    idx,
                    heads: Vec::new(),
                }
            }
            Shape::Rows(conv) => {
                // A batch grouped on its own encodes only its groups' first rows.
                let cols = match &local {
                    Some(_) => {
                        let idx = arrow_array::UInt32Array::from(cand.clone());
                        key_cols
                            .iter()
                            .map(|c| canonical(&arrow_select::take::take(c.as_ref(), &idx, None)?))
                            .collect::<Result<Vec<_>>>()?
                    }
                    None => key_cols.iter().map(canonical).collect::<Result<Vec<_>>>()?,
                };
                let rows = conv.convert_columns(&cols)?;
                for (j, (h, &r)) in hashes.iter_mut().zip(&cand).enumerate() {
                    let at = if local.is_some() { j } else { r as usize };
                    *h = hash_bytes(rows.row(at).data());
                }
                BatchKeys::Rows {
                    rows,
                    at: local.as_ref().map(|_| Vec::new()),
                }
            }
        };
        if let (Some(v), Shape::Word(_) | Shape::Bytes) = (&valid, &self.shape) {
            for (h, &r) in hashes.iter_mut().zip(&cand) {
                if !v.value(r as usize) {
                    *h = NULL_HASH;
                }
            }
        }
        // Candidates cut by partition (a counting sort, rows ascending in each); `order`:
        // the candidate each position holds.
        let mut at = vec![0usize; PARTS + 1];
        for &h in &hashes {
            at[part_of(h) + 1] += 1;
        }
        for p in 0..PARTS {
            at[p + 1] += at[p];
        }
        let mut fill = at.clone();
        let total = at[PARTS];
        let mut rows = vec![0u32; total];
        let mut cut = vec![0u64; total];
        let mut order = vec![0u32; total];
        for (j, (&r, &h)) in cand.iter().zip(&hashes).enumerate() {
            let p = part_of(h);
            rows[fill[p]] = r;
            cut[fill[p]] = h;
            order[fill[p]] = j as u32;
            fill[p] += 1;
        }
        let keys = match keys {
            BatchKeys::Words(w) => BatchKeys::Words(rows.iter().map(|&r| w[r as usize]).collect()),
            BatchKeys::Bytes { values, idx, .. } => BatchKeys::Bytes {
                values,
                idx: rows.iter().map(|&r| idx[r as usize]).collect(),
                heads: order.iter().map(|&j| heads[j as usize]).collect(),
            },
            BatchKeys::Rows { rows: keys, at } => BatchKeys::Rows {
                rows: keys,
                at: at.map(|_| order.clone()),
            },
        };
        let inputs = match local {
            Some((reps, gid)) => self.local_inputs(batch, &gid, reps.len(), &order)?,
            None => {
                let perm = arrow_array::UInt32Array::from(rows.clone());
                self.inputs(batch, Some(&perm))?
            }
        };
        Ok(Prepared {
            keys,
            valid,
            rows,
            hashes: cut,
            at,
            inputs,
            key_cols,
            base: 0,
            rows_in: n,
        })
    }

    /// The batch's own groups ([`batch_groups`]), when every aggregate is reducible and
    /// the batch has few (at most one for [`LOCAL_RATIO`] rows): their first rows,
    /// ascending, and each row's group ([`u32::MAX`] for a row left out). Folding a batch's
    /// group as one row with its rows' counts and exact sums (which do not depend on
    /// association) and the value a min / max / first / last keeps of its rows (ties: the
    /// earliest row; a group's rows are all in its batch group) gives the state the rows
    /// give one by one. Once a batch has more groups, later batches are not tried.
    fn local_groups(
        &self,
        key_cols: &[ArrayRef],
        keep: impl Fn(usize) -> bool,
        n: usize,
    ) -> Option<(Vec<u32>, Vec<u32>)> {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.reducible || n < LOCAL_RATIO || !self.reduces.load(Relaxed) {
            return None;
        }
        let found = batch_groups(key_cols, keep, n, n / LOCAL_RATIO);
        if found.is_none() {
            self.reduces.store(false, Relaxed);
        }
        found
    }

    /// Each aggregate's counts, exact sums or kept value per batch group (`gid`: each
    /// row's, of `groups`), in the order `order` (batch groups by position).
    fn local_inputs(
        &self,
        batch: &RecordBatch,
        gid: &[u32],
        groups: usize,
        order: &[u32],
    ) -> Result<Vec<Input>> {
        let rows = self.inputs(batch, None)?;
        let counts = |valid: Option<&BooleanBuffer>| {
            let mut c = vec![0u64; groups];
            for (r, &g) in gid.iter().enumerate() {
                if g != u32::MAX && valid.is_none_or(|v| v.value(r)) {
                    c[g as usize] += 1;
                }
            }
            Input::Counts(order.iter().map(|&j| c[j as usize]).collect())
        };
        rows.into_iter()
            .zip(self.opts.aggs.iter().zip(&self.aggs))
            .map(|(input, (spec, plan))| {
                Ok(match input {
                    Input::Pick(v) => {
                        let best = v.best_rows(kind(&spec.func), gid, groups);
                        let idx = arrow_array::UInt32Array::from_iter(
                            order.iter().map(|&j| best[j as usize]),
                        );
                        let kept = arrow_select::take::take(v.values.as_ref(), &idx, None)?;
                        Input::Pick(Values::of(&kept, &plan.order)?)
                    }
                    Input::Size => counts(None),
                    Input::Count(valid) => counts(valid.as_ref()),
                    Input::Exact(v) => {
                        let mut st = vec![(0i128, 0u64); groups];
                        let valid = valid_of(&v);
                        let ok = match v.data_type() {
                            DataType::Int64 => add_rows(
                                &mut st,
                                v.as_primitive::<Int64Type>().values(),
                                &valid,
                                gid,
                            ),
                            DataType::UInt64 => add_rows(
                                &mut st,
                                v.as_primitive::<UInt64Type>().values(),
                                &valid,
                                gid,
                            ),
                            _ => add_rows(
                                &mut st,
                                v.as_primitive::<Decimal128Type>().values(),
                                &valid,
                                gid,
                            ),
                        };
                        Input::Sums(order.iter().map(|&j| st[j as usize]).collect(), !ok)
                    }
                    _ => unreachable!("aggregates of batch groups only"),
                })
            })
            .collect()
    }

    /// Each aggregate's input column of `batch` (its rows `perm`, in that order, if given),
    /// cast for its fold.
    fn inputs(
        &self,
        batch: &RecordBatch,
        perm: Option<&arrow_array::UInt32Array>,
    ) -> Result<Vec<Input>> {
        // Each (column, type) cast and permuted once, however many aggregates read it.
        let mut done: Vec<(String, Option<DataType>, ArrayRef)> = Vec::new();
        let mut col = |name: &Option<String>, to: Option<DataType>| -> Result<ArrayRef> {
            let name = name
                .as_deref()
                .expect("checked: the aggregate has a column");
            if let Some((_, _, a)) = done.iter().find(|(n, t, _)| *n == name && *t == to) {
                return Ok(a.clone());
            }
            let c = batch.column(self.schema.index_of(name)?);
            let c = match &to {
                Some(t) if c.data_type() != t => arrow_cast::cast(c, t)?,
                _ => c.clone(),
            };
            let c = match perm {
                Some(p) => arrow_select::take::take(c.as_ref(), p, None)?,
                None => c,
            };
            done.push((name.to_string(), to, c.clone()));
            Ok(c)
        };
        let f64 = || Some(DataType::Float64);
        let mut out = Vec::with_capacity(self.aggs.len());
        for (a, plan) in self.opts.aggs.iter().zip(&self.aggs) {
            out.push(match &plan.carry {
                Carry::Same | Carry::TopK(_) | Carry::NUnique => {
                    Input::Pick(Values::of(&col(&a.column, None)?, &plan.order)?)
                }
                Carry::Count if a.func == super::AggFn::Size => Input::Size,
                Carry::Count => Input::Count(valid_of(&col(&a.column, None)?)),
                Carry::FloatSum
                | Carry::Mean { exact: None }
                | Carry::Moments { .. }
                | Carry::Quantile(_) => Input::Float(col(&a.column, f64())?),
                Carry::Exact { .. } | Carry::Mean { exact: Some(_) } => {
                    let dt = plan.input.as_ref().expect("checked: a sum has a column");
                    // Read as i64, u64 or i128 values (a decimal128's precision is not).
                    Input::Exact(col(
                        &a.column,
                        match dt {
                            DataType::Int64 | DataType::UInt64 | DataType::Decimal128(_, _) => None,
                            _ if dt.is_decimal() => {
                                Some(DataType::Decimal128(38, super::dt_scale(dt)))
                            }
                            _ => Some(DataType::Int64),
                        },
                    )?)
                }
                Carry::Corr => {
                    let super::AggFn::Corr(y) = &a.func else {
                        unreachable!("corr carries come from corr")
                    };
                    Input::Corr(col(&a.column, f64())?, col(&Some(y.clone()), f64())?)
                }
            });
        }
        Ok(out)
    }

    /// Fold prepared batches, the next rows in this order, into the state: every partition
    /// in parallel, each through all the batches (its states stay in cache from one batch
    /// to the next).
    pub fn absorb(&mut self, ready: &mut [Ready]) -> Result<()> {
        for r in ready.iter_mut() {
            r.0.base = self.rows;
            self.rows += r.0.rows_in as u64;
        }
        let (ready, aggs) = (&*ready, &self.opts.aggs);
        self.parts
            .par_iter_mut()
            .enumerate()
            .map(|(p, part)| {
                crate::cancel::point();
                ready.iter().try_for_each(|b| fold(part, &b.0, p, aggs))
            })
            .collect::<Result<()>>()
    }

    /// The state as one partial-state table ([`GroupByState::state_schema`]), groups in
    /// first-appearance order.
    pub fn export(&self) -> Result<Table> {
        let nk = self.key_idx.len();
        let fields = self.state_schema.fields();
        // Each partition's columns.
        let cols: Vec<Vec<ArrayRef>> = self
            .parts
            .par_iter()
            .map(|part| -> Result<Vec<ArrayRef>> {
                let mut out = Vec::with_capacity(fields.len());
                for (k, chunks) in part.keys.iter().enumerate() {
                    let dt = fields[k].data_type();
                    out.push(if chunks.is_empty() {
                        arrow_array::new_empty_array(dt)
                    } else {
                        let refs: Vec<&dyn Array> = chunks.iter().map(|c| c.as_ref()).collect();
                        arrow_select::concat::concat(&refs)?
                    });
                }
                for (st, carry) in part.states.iter().zip(&self.carries) {
                    out.extend(state_columns(st, carry)?);
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        // First-appearance order across partitions.
        let mut order: Vec<(u64, u32, u32)> = Vec::with_capacity(self.num_groups());
        for (p, part) in self.parts.iter().enumerate() {
            order.extend(
                part.first
                    .iter()
                    .enumerate()
                    .map(|(i, &f)| (f, p as u32, i as u32)),
            );
        }
        order.par_sort_unstable_by_key(|o| o.0);
        let idx: Vec<(usize, usize)> = order
            .iter()
            .map(|&(_, p, i)| (p as usize, i as usize))
            .collect();
        drop(order);
        let columns = (0..fields.len())
            .into_par_iter()
            .map(|c| -> Result<ArrayRef> {
                let refs: Vec<&dyn Array> = cols.iter().map(|p| p[c].as_ref()).collect();
                let a = arrow_select::interleave::interleave(&refs, &idx)?;
                // Keys in the state's (plain) types.
                Ok(if c < nk && a.data_type() != fields[c].data_type() {
                    arrow_cast::cast(&a, fields[c].data_type())?
                } else {
                    a
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let opts = RecordBatchOptions::new().with_row_count(Some(idx.len()));
        let batch = RecordBatch::try_new_with_options(self.state_schema.clone(), columns, &opts)?;
        Ok(Table {
            schema: self.state_schema.clone(),
            batches: vec![batch],
        })
    }

    /// The result, as [`super::group_by`] gives it for all the rows.
    pub fn finish(&self) -> Result<Table> {
        let state = if self.key_idx.is_empty() && self.num_groups() == 0 {
            self.empty_group()?
        } else {
            self.export()?
        };
        finish_state(&self.schema, &self.opts, &self.carries, state)
    }

    /// The partial-state table of the one group of no rows: what a group-by without keys
    /// gives for no input (its aggregates of nothing).
    fn empty_group(&self) -> Result<Table> {
        let mut part = Part {
            states: self.aggs.iter().map(Plan::states).collect(),
            ..Part::default()
        };
        part.word_group(0, 0);
        let mut cols = Vec::new();
        for (st, carry) in part.states.iter_mut().zip(&self.carries) {
            st.resize(1);
            cols.extend(state_columns(st, carry)?);
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(1));
        let batch = RecordBatch::try_new_with_options(self.state_schema.clone(), cols, &opts)?;
        Ok(Table {
            schema: self.state_schema.clone(),
            batches: vec![batch],
        })
    }

    /// The partial-state table of `batch`'s rows, each row its own state (rows with a null
    /// key left out under `dropna`): what the state would fold them as, for a state that
    /// spilled (see the module docs).
    pub fn singletons(&self, batch: &RecordBatch) -> Result<Table> {
        if let Some(why) = schema_mismatch(&batch.schema(), &self.schema) {
            return Err(Error::Type(format!(
                "record batch does not match the group-by's schema: {why}"
            )));
        }
        let mut batch = batch.clone();
        if self.opts.dropna {
            let mut keep: Option<BooleanBuffer> = None;
            for &i in &self.key_idx {
                if let Some(v) = batch
                    .column(i)
                    .logical_nulls()
                    .filter(|v| v.null_count() > 0)
                {
                    keep = Some(match keep {
                        None => v.inner().clone(),
                        Some(k) => &k & v.inner(),
                    });
                }
            }
            if let Some(k) = keep {
                let mask = arrow_array::BooleanArray::new(k, None);
                batch = arrow_select::filter::filter_record_batch(&batch, &mask)?;
            }
        }
        let n = batch.num_rows();
        let fields = self.state_schema.fields();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        for (k, &i) in self.key_idx.iter().enumerate() {
            let c = batch.column(i);
            cols.push(if c.data_type() == fields[k].data_type() {
                c.clone()
            } else {
                arrow_cast::cast(c, fields[k].data_type())?
            });
        }
        let own: Vec<u32> = (0..n as u32).collect();
        for ((input, plan), spec) in self
            .inputs(&batch, None)?
            .iter()
            .zip(&self.aggs)
            .zip(&self.opts.aggs)
        {
            let carry = &plan.carry;
            if *carry == Carry::Same {
                // One value's min / max / first / last is the value.
                let c = spec
                    .column
                    .as_deref()
                    .expect("checked: the aggregate has a column");
                cols.push(batch.column(self.schema.index_of(c)?).clone());
                continue;
            }
            let mut st = plan.states();
            st.resize(n);
            fold_states(&mut st, input, 0, &own, &spec.column)?;
            cols.extend(state_columns(&st, carry)?);
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Table {
            schema: self.state_schema.clone(),
            batches: vec![RecordBatch::try_new_with_options(
                self.state_schema.clone(),
                cols,
                &opts,
            )?],
        })
    }
}

/// A batch made ready for [`ResidentState::absorb`].
pub struct Ready(Prepared);

/// How one aggregate is folded.
struct Plan {
    carry: Carry,
    func: AggFn,
    /// Its column's type.
    input: Option<DataType>,
    /// How a min / max orders values ([`Order::None`] for the others).
    order: Order,
}

impl Plan {
    fn states(&self) -> States {
        States::of(&self.carry, &self.func, self.input.as_ref(), &self.order)
    }
}

/// Each aggregate's fold (checked as the kernel checks them).
fn plan(schema: &SchemaRef, opts: &GroupByOptions) -> Result<Vec<Plan>> {
    let empty = Table {
        schema: schema.clone(),
        batches: vec![],
    };
    let inputs = check(&empty, opts)?;
    opts.aggs
        .iter()
        .zip(&inputs)
        .map(|(a, i)| {
            let input = i.values.as_ref().map(|v| v.data_type().clone());
            let carry = Carry::of(&a.func, input.as_ref());
            let ordered = |kind: Kind| -> Result<Order> {
                let dt = input.as_ref().expect("checked: the aggregate has a column");
                Order::of(kind, dt).ok_or_else(|| {
                    Error::Type(format!(
                        "column {:?} of type {dt} has no order the group-by can keep",
                        a.column.as_deref().unwrap_or("")
                    ))
                })
            };
            let order = match carry {
                Carry::Count
                | Carry::FloatSum
                | Carry::Exact { .. }
                | Carry::Mean { .. }
                | Carry::Moments { .. }
                | Carry::Corr
                | Carry::Quantile(_) => Order::None,
                Carry::Same | Carry::TopK(_) => ordered(kind(&a.func))?,
                // Equality codes: those of an order.
                Carry::NUnique => ordered(Kind::Max)?,
            };
            Ok(Plan {
                carry,
                func: a.func.clone(),
                input,
                order,
            })
        })
        .collect()
}

fn kind(func: &AggFn) -> Kind {
    match func {
        AggFn::Min => Kind::Min,
        AggFn::Max => Kind::Max,
        AggFn::First => Kind::First,
        AggFn::Last => Kind::Last,
        AggFn::TopK(k) => Kind::TopK(*k),
        _ => unreachable!("a pick carry comes from min / max / first / last / top_k"),
    }
}

/// The key shape of `opts.keys` over `schema` (an error when arrow-row cannot encode them).
fn shape(schema: &SchemaRef, opts: &GroupByOptions) -> Result<Shape> {
    let types: Vec<&DataType> = opts
        .keys
        .iter()
        .map(|k| Ok(schema.field_with_name(k)?.data_type()))
        .collect::<Result<_>>()?;
    if types.is_empty() {
        return Ok(Shape::Unit);
    }
    if let [dt] = types[..] {
        if let Some(d) = domain_of_types(std::iter::once(dt)).filter(|d| *d != Domain::Wide) {
            return Ok(Shape::Word(d));
        }
        if crate::join::index::is_bytes(crate::keys::value_type(dt)) {
            return Ok(Shape::Bytes);
        }
    }
    let fields: Vec<SortField> = types
        .iter()
        .map(|t| SortField::new(crate::keys::value_type(t).clone()))
        .collect();
    if !RowConverter::supports_fields(&fields) {
        return Err(Error::Type("keys arrow-row cannot encode".into()));
    }
    Ok(Shape::Rows(RowConverter::new(fields)?))
}

/// A key column as arrow-row encodes it for equality: dictionaries decoded, every NaN the
/// same NaN and -0.0 as 0.0.
fn canonical(c: &ArrayRef) -> Result<ArrayRef> {
    let c = crate::keys::decoded(c)?;
    Ok(match c.data_type() {
        DataType::Float64 => Arc::new(
            c.as_primitive::<Float64Type>()
                .unary::<_, Float64Type>(|v| if v.is_nan() { f64::NAN } else { v + 0.0 }),
        ),
        DataType::Float32 => Arc::new(
            c.as_primitive::<arrow_array::types::Float32Type>()
                .unary::<_, arrow_array::types::Float32Type>(|v| {
                    if v.is_nan() { f32::NAN } else { v + 0.0 }
                }),
        ),
        DataType::Float16 => Arc::new(
            c.as_primitive::<arrow_array::types::Float16Type>()
                .unary::<_, arrow_array::types::Float16Type>(|v| {
                    if v.is_nan() {
                        half::f16::NAN
                    } else {
                        v + half::f16::ZERO
                    }
                }),
        ),
        _ => c,
    })
}

/// Memory of `arrays`.
fn arrays_bytes(arrays: &[ArrayRef]) -> usize {
    arrays.iter().map(|a| a.get_array_memory_size()).sum()
}

fn valid_of(a: &ArrayRef) -> Option<BooleanBuffer> {
    a.logical_nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| n.inner().clone())
}

/// Fold partition `p`'s rows of batch `b` into `part`.
fn fold(part: &mut Part, b: &Prepared, p: usize, aggs: &[super::AggSpec]) -> Result<()> {
    let (lo, hi) = (b.at[p], b.at[p + 1]);
    if lo == hi {
        return Ok(());
    }
    let rows = &b.rows[lo..hi];
    let hashes = &b.hashes[lo..hi];
    let mut gids = Vec::with_capacity(rows.len());
    let mut new: Vec<u32> = Vec::new();
    let null = |r: u32| b.valid.as_ref().is_some_and(|v| !v.value(r as usize));
    let ordinal = |r: u32| b.base + u64::from(r);
    match &b.keys {
        BatchKeys::Words(w) => {
            for (&r, &w) in rows.iter().zip(&w[lo..hi]) {
                let (g, fresh) = if null(r) {
                    part.null_group(ordinal(r))
                } else {
                    part.word_group(w, ordinal(r))
                };
                if fresh {
                    new.push(r);
                }
                gids.push(g);
            }
        }
        BatchKeys::Bytes { values, idx, heads } => {
            let chunk = ByteChunk::new(values).expect("checked by shape()");
            let at = rows
                .iter()
                .zip(hashes)
                .zip(&idx[lo..hi])
                .zip(&heads[lo..hi]);
            for (((&r, &h), &i), &(hd, len)) in at {
                let (g, fresh) = if null(r) {
                    part.null_group(ordinal(r))
                } else {
                    part.bytes_group(hd, len, h, || chunk.value(i), ordinal(r))
                };
                if fresh {
                    new.push(r);
                }
                gids.push(g);
            }
        }
        BatchKeys::Rows { rows: keys, at } => {
            for (i, (&r, &h)) in rows.iter().zip(hashes).enumerate() {
                let v = match at {
                    Some(at) => keys.row(at[lo + i] as usize),
                    None => keys.row(r as usize),
                }
                .data();
                let (hd, len) = (head(v), v.len() as u32);
                let (g, fresh) = part.bytes_group(hd, len, h, || v, ordinal(r));
                if fresh {
                    new.push(r);
                }
                gids.push(g);
            }
        }
    }
    let groups = part.groups();
    for ((st, input), spec) in part.states.iter_mut().zip(&b.inputs).zip(aggs) {
        st.resize(groups);
        fold_states(st, input, lo, &gids, &spec.column)?;
    }
    if !new.is_empty() {
        let idx = arrow_array::UInt32Array::from(new);
        for (k, c) in b.key_cols.iter().enumerate() {
            let taken = arrow_select::take::take(c.as_ref(), &idx, None)?;
            part.keys[k].push(owned(crate::keys::decoded(&taken)?));
        }
    }
    Ok(())
}

/// `a` holding only its own values (a view array keeps its batch's buffers otherwise).
fn owned(a: ArrayRef) -> ArrayRef {
    match a.data_type() {
        DataType::Utf8View => Arc::new(a.as_string_view().gc()),
        DataType::BinaryView => Arc::new(a.as_binary_view().gc()),
        _ => a,
    }
}

/// Fold the values of `input` at positions `first..` into the states of their groups
/// `gids` (one per position): each value's own state merged into its group's, in order.
fn fold_states(
    st: &mut States,
    input: &Input,
    first: usize,
    gids: &[u32],
    col: &Option<String>,
) -> Result<()> {
    match (st, input) {
        (States::Count(s), Input::Size) => {
            for &g in gids {
                s[g as usize] += 1;
            }
        }
        (States::Count(s), Input::Count(valid)) => merge_ones(
            &Count {
                valid: valid.clone(),
            },
            s,
            first,
            gids,
        ),
        (States::Kahan(s), Input::Float(v)) => merge_ones(
            &Sum::<f64, Kahan>::new(v.as_primitive::<Float64Type>().values(), valid_of(v)),
            s,
            first,
            gids,
        ),
        (States::Moments(s), Input::Float(v)) => merge_ones(
            &Variance {
                values: v.as_primitive::<Float64Type>().values(),
                valid: valid_of(v),
            },
            s,
            first,
            gids,
        ),
        (States::Pick(s), Input::Pick(v)) => s.fold(v, first, gids)?,
        (States::Count(s), Input::Counts(c)) => {
            for (&g, &c) in gids.iter().zip(&c[first..]) {
                s[g as usize] += c;
            }
        }
        (States::Exact(s), Input::Sums(v, over)) => {
            let mut ok = !over;
            for (&g, &(sum, n)) in gids.iter().zip(&v[first..]) {
                let st = &mut s[g as usize];
                let (total, o) = st.0.overflowing_add(sum);
                *st = (total, st.1 + n);
                ok &= !o;
            }
            if !ok {
                return Err(Error::Value(format!(
                    "sum of column {:?} overflows 128 bits in at least one group",
                    col.as_deref().unwrap_or("")
                )));
            }
        }
        (States::All(s), Input::Float(v)) => s.fold(v, first, gids),
        (States::Distinct(s), Input::Pick(v)) => s.fold(v, first, gids)?,
        (States::Co(s), Input::Corr(x, y)) => merge_ones(
            &Correlation {
                x: x.as_primitive::<Float64Type>().values(),
                y: y.as_primitive::<Float64Type>().values(),
                valid_x: valid_of(x),
                valid_y: valid_of(y),
            },
            s,
            first,
            gids,
        ),
        (States::Exact(s), Input::Exact(v)) => {
            let valid = valid_of(v);
            let ok = match v.data_type() {
                DataType::Int64 => add_exact(
                    s,
                    v.as_primitive::<Int64Type>().values(),
                    &valid,
                    first,
                    gids,
                ),
                DataType::UInt64 => add_exact(
                    s,
                    v.as_primitive::<UInt64Type>().values(),
                    &valid,
                    first,
                    gids,
                ),
                _ => add_exact(
                    s,
                    v.as_primitive::<Decimal128Type>().values(),
                    &valid,
                    first,
                    gids,
                ),
            };
            if !ok {
                return Err(Error::Value(format!(
                    "sum of column {:?} overflows 128 bits in at least one group",
                    col.as_deref().unwrap_or("")
                )));
            }
        }
        _ => unreachable!("states and inputs come from the same carry"),
    }
    Ok(())
}

/// `acc.merge(state of g, state of position i alone)` for each position `i` from `first`
/// and its group `g`.
#[inline(always)]
fn merge_ones<A: Acc>(acc: &A, st: &mut [A::S], first: usize, gids: &[u32]) {
    for (i, &g) in gids.iter().enumerate() {
        let mut one = acc.init();
        acc.update(&mut one, first + i);
        acc.merge(&mut st[g as usize], &one);
    }
}

/// A batch is grouped on its own first while it has at most one group for this many rows
/// ([`ResidentState::local_groups`]). TPC-H Q1 (4 groups by two strings, lineitem's 6M
/// rows, 2 threads): otherwise each row is probed in one of at most 4 partitions, serially.
const LOCAL_RATIO: usize = 16;

/// The groups of a batch's rows by their key columns `cols`, found column by column: each
/// column's values get dense ids ([`column_ids`]), a row's key is the mixed-radix number of
/// its ids, and the rows are grouped by that number: through an array of a slot per number
/// where there are at most `4 n`, else a hash table. No key column: one group.
///
/// Returns the groups' first rows, ascending, and each row's group ([`u32::MAX`] for a row
/// `keep` leaves out); `None` past `most` groups, or past `most` ids in one column. Keys
/// are equal as the state's are (NaN to NaN, -0.0 to 0.0, a dictionary's values by value):
/// each group is one group of the state.
fn batch_groups(
    cols: &[ArrayRef],
    keep: impl Fn(usize) -> bool,
    n: usize,
    most: usize,
) -> Option<(Vec<u32>, Vec<u32>)> {
    let mut number = vec![0u64; n];
    let mut span: u64 = 1;
    for c in cols {
        let (ids, k) = column_ids(c, most)?;
        let next = span.checked_mul(k)?;
        // id < k, so id * span < next: no overflow.
        for (x, &id) in number.iter_mut().zip(&ids) {
            *x += u64::from(id) * span;
        }
        span = next;
    }
    let mut gid = vec![u32::MAX; n];
    let mut first: Vec<u32> = Vec::new();
    if span <= 4 * n as u64 {
        let mut slot = vec![u32::MAX; span as usize];
        for (r, g) in gid.iter_mut().enumerate() {
            if !keep(r) {
                continue;
            }
            let s = &mut slot[number[r] as usize];
            if *s == u32::MAX {
                if first.len() == most {
                    return None;
                }
                *s = first.len() as u32;
                first.push(r as u32);
            }
            *g = *s;
        }
    } else {
        let mut part = Part::default();
        for (r, g) in gid.iter_mut().enumerate() {
            if !keep(r) {
                continue;
            }
            let (id, fresh) = part.word_group(number[r], r as u64);
            if fresh {
                if first.len() == most {
                    return None;
                }
                first.push(r as u32);
            }
            *g = id;
        }
    }
    Some((first, gid))
}

/// Each row's id among the values of key column `c` in its batch (every null one id of its
/// own), and the number of ids; `None` past `most` ids, or for a type without ids here
/// (neither a fixed-width type of a `u64` image, a byte string nor a dictionary of either,
/// with at most `most` values). Equal values have one id, distinct values distinct ids;
/// ids are dense in the values' range where it is small, else in first appearance.
fn column_ids(c: &ArrayRef, most: usize) -> Option<(Vec<u32>, u64)> {
    let n = c.len();
    let valid = valid_of(c);
    let null = |r: usize| valid.as_ref().is_some_and(|v| !v.value(r));
    if let DataType::Dictionary(_, _) = c.data_type() {
        // A row's id is its value's among the dictionary's values (equal values one id).
        let d = c.as_any_dictionary();
        if d.values().len() > most {
            return None;
        }
        let (of_value, k) = column_ids(d.values(), most)?;
        // (`normalized_keys` asserts some values; without any, every row is null.)
        let keys = if d.values().is_empty() {
            vec![0; n]
        } else {
            d.normalized_keys()
        };
        let ids = (keys.iter().enumerate())
            .map(|(r, &i)| if null(r) { k as u32 } else { of_value[i] })
            .collect();
        return Some((ids, k + 1));
    }
    let words = domain_of_types(std::iter::once(c.data_type())).filter(|d| *d != Domain::Wide);
    if let Some(d) = words {
        let mut w = vec![0u64; n];
        raw_u64(c, &mut w, d);
        // Images within a range of at most `most`: ids by image − least, no table.
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for (r, &x) in w.iter().enumerate() {
            if !null(r) {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        if lo <= hi && hi - lo < most as u64 {
            let nulls = (hi - lo + 1) as u32;
            let ids = (w.iter().enumerate())
                .map(|(r, &x)| if null(r) { nulls } else { (x - lo) as u32 })
                .collect();
            return Some((ids, u64::from(nulls) + 1));
        }
        table_ids(n, null, most, |part, r| part.word_group(w[r], 0).0)
    } else {
        let chunk = ByteChunk::new(c)?;
        table_ids(n, null, most, |part, r| {
            let v = chunk.value(r);
            part.bytes_group(head(v), v.len() as u32, hash_bytes(v), || v, 0)
                .0
        })
    }
}

/// Ids of `n` rows in first appearance through a [`Part`]'s table: `id_of` a non-null row's
/// (inserting its value), nulls one id; `None` past `most` ids.
fn table_ids(
    n: usize,
    null: impl Fn(usize) -> bool,
    most: usize,
    mut id_of: impl FnMut(&mut Part, usize) -> u32,
) -> Option<(Vec<u32>, u64)> {
    let mut part = Part::default();
    let mut ids = vec![0u32; n];
    for (r, id) in ids.iter_mut().enumerate() {
        *id = if null(r) {
            part.null_group(0).0
        } else {
            id_of(&mut part, r)
        };
        if part.groups() > most {
            return None;
        }
    }
    Some((ids, part.groups() as u64))
}

/// Exact sums of the rows' values by their groups `gid` (`u32::MAX`: left out); `false`
/// on a 128-bit overflow.
fn add_rows<V: Copy + Into<i128>>(
    st: &mut [(i128, u64)],
    values: &[V],
    valid: &Option<BooleanBuffer>,
    gid: &[u32],
) -> bool {
    let mut ok = true;
    for (r, &g) in gid.iter().enumerate() {
        if g != u32::MAX && valid.as_ref().is_none_or(|v| v.value(r)) {
            let s = &mut st[g as usize];
            let (sum, over) = s.0.overflowing_add(values[r].into());
            *s = (sum, s.1 + 1);
            ok &= !over;
        }
    }
    ok
}

/// Exact sums: add each valid row's value to its group's; `false` on a 128-bit overflow.
fn add_exact<V: Copy + Into<i128>>(
    st: &mut [(i128, u64)],
    values: &[V],
    valid: &Option<BooleanBuffer>,
    first: usize,
    gids: &[u32],
) -> bool {
    let mut ok = true;
    for (i, &g) in gids.iter().enumerate() {
        let r = first + i;
        if valid.as_ref().is_none_or(|v| v.value(r)) {
            let s = &mut st[g as usize];
            let (sum, over) = s.0.overflowing_add(values[r].into());
            s.0 = sum;
            s.1 += 1;
            ok &= !over;
        }
    }
    ok
}

/// An aggregate's partial-state columns ([`super::stream`]'s table) from its states.
fn state_columns(st: &States, carry: &Carry) -> Result<Vec<ArrayRef>> {
    Ok(match (st, carry) {
        (States::Count(s), _) => vec![int64(s.iter().copied())],
        (States::Kahan(s), _) => kahan_columns(s),
        (States::Moments(s), _) => moments_columns(s),
        (States::Co(s), _) => comoments_columns(s),
        (States::Pick(s), _) => vec![s.state()?],
        (States::All(s), _) => vec![s.state()?],
        (States::Distinct(s), _) => vec![s.state()?],
        (States::Exact(s), Carry::Exact { out }) => {
            vec![exact_state(s, super::dt_scale(out))?]
        }
        (States::Exact(s), Carry::Mean { exact: Some(scale) }) => {
            vec![exact_state(s, *scale)?, int64(s.iter().map(|&(_, n)| n))]
        }
        _ => unreachable!("states come from their carry"),
    })
}
