//! The process-wide memory budget: one pool that every operator holding data reserves from.
//!
//! A [`Reservation`] is a named claim on the pool that grows and shrinks with what its
//! holder keeps; growing past the limit is refused with [`Error::MemoryLimit`] (Python's
//! `ferrobatch.MemoryLimitError`, a `MemoryError`) naming the operator and the largest
//! live reservations, and nothing is reserved by a refused request. A reservation gives its
//! bytes back when dropped — on success, on an error and on an interrupt alike — so the
//! pool is back to zero after every run. With no limit (the default) reservations are only
//! counted.
//!
//! Whole-table kernels (`fb.sort(table)` ...) hold their input already: [`within`] reserves
//! their working memory and output, estimated from the input, before they start, and
//! refuses instead of running past the budget.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::mem::human;
use crate::table::Table;

const UNLIMITED: u64 = u64::MAX;

struct Pool {
    limit: AtomicU64,
    reserved: AtomicU64,
    next_id: AtomicU64,
    /// Live reservations: id -> (name, bytes), for the refusal message.
    holders: Mutex<BTreeMap<u64, (String, u64)>>,
}

static POOL: Pool = Pool {
    limit: AtomicU64::new(UNLIMITED),
    reserved: AtomicU64::new(0),
    next_id: AtomicU64::new(0),
    holders: Mutex::new(BTreeMap::new()),
};

/// Set the budget in bytes (`None`: unlimited). Reservations already held are kept; the
/// next growth is judged against the new limit.
pub fn set_limit(limit: Option<u64>) {
    let scopes = SCOPES.lock().unwrap_or_else(|e| e.into_inner());
    POOL.limit
        .store(limit.unwrap_or(UNLIMITED), Ordering::SeqCst);
    notify(&scopes);
}

/// The limits of the live runs that have one of their own ([`Scope`]); the lock also
/// orders the notifications.
static SCOPES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Told the tightest limit in force, whenever that may have changed.
static ON_BOUNDED: std::sync::OnceLock<fn(Option<u64>)> = std::sync::OnceLock::new();

/// Whether a budget is in force: the process-wide limit, or a run's own.
pub fn bounded() -> bool {
    tightest(&SCOPES.lock().unwrap_or_else(|e| e.into_inner())).is_some()
}

/// The smallest of the process-wide limit and the live runs' own, `None` when none is set.
fn tightest(scopes: &[u64]) -> Option<u64> {
    scopes.iter().copied().chain(limit()).min()
}

/// Call `f` with the tightest limit in force (`None`: no budget), now and at every change
/// (the first `f` registered stays). The bindings own the allocator: one that keeps freed
/// memory for reuse holds bytes no reservation counts, which a budget has to bound too.
pub fn on_bounded(f: fn(Option<u64>)) {
    let scopes = SCOPES.lock().unwrap_or_else(|e| e.into_inner());
    let _ = ON_BOUNDED.set(f);
    notify(&scopes);
}

fn notify(scopes: &[u64]) {
    if let Some(f) = ON_BOUNDED.get() {
        f(tightest(scopes));
    }
}

/// The budget in bytes, `None` when unlimited.
pub fn limit() -> Option<u64> {
    Some(POOL.limit.load(Ordering::SeqCst)).filter(|&l| l != UNLIMITED)
}

/// Bytes reserved now, by every live reservation together.
pub fn reserved() -> u64 {
    POOL.reserved.load(Ordering::SeqCst)
}

/// A limit of its own for the reservations of one run (`collect(memory_limit=...)`),
/// judged together with the process-wide one.
pub struct Scope {
    limit: u64,
    reserved: AtomicU64,
}

impl Scope {
    pub fn new(limit: u64) -> Arc<Scope> {
        let mut scopes = SCOPES.lock().unwrap_or_else(|e| e.into_inner());
        scopes.push(limit);
        notify(&scopes);
        Arc::new(Scope {
            limit,
            reserved: AtomicU64::new(0),
        })
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let mut scopes = SCOPES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = scopes.iter().position(|&l| l == self.limit) {
            scopes.swap_remove(i);
        }
        notify(&scopes);
    }
}

/// Add `bytes` to `counter` unless that passes `limit`; the value before, or the value
/// that refused.
fn add_within(counter: &AtomicU64, bytes: u64, limit: u64) -> std::result::Result<u64, u64> {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
        r.checked_add(bytes).filter(|&t| t <= limit)
    })
}

/// What the reservations of one operator hold together — its own and their siblings, such
/// as a merge's buffers after the operator's state — now and at most at once: an operator's
/// peak in the run report, the finishing phases included.
#[derive(Debug, Default)]
pub struct Usage {
    held: AtomicU64,
    peak: AtomicU64,
}

impl Usage {
    /// The most bytes held at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// A named claim on the pool (and on its run's [`Scope`], if any), released when dropped.
pub struct Reservation {
    id: u64,
    name: String,
    bytes: u64,
    scope: Option<Arc<Scope>>,
    usage: Arc<Usage>,
}

impl Reservation {
    /// An empty reservation for the operator `name`.
    pub fn new(name: &str) -> Self {
        Reservation::in_scope(name, None)
    }

    /// An empty reservation for the operator `name` of a run limited by `scope`.
    pub fn in_scope(name: &str, scope: Option<Arc<Scope>>) -> Self {
        Reservation::counted(name, scope, Arc::default())
    }

    /// [`Reservation::in_scope`], its bytes counted in `usage` (the operator's).
    pub fn counted(name: &str, scope: Option<Arc<Scope>>, usage: Arc<Usage>) -> Self {
        let id = POOL.next_id.fetch_add(1, Ordering::Relaxed);
        Reservation {
            id,
            name: name.to_owned(),
            bytes: 0,
            scope,
            usage,
        }
    }

    /// An empty reservation for `name` in the same run (scope) and operator as this one.
    pub fn sibling(&self, name: &str) -> Reservation {
        Reservation::counted(name, self.scope.clone(), self.usage.clone())
    }

    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.bytes
    }

    /// Whether `bytes` more could be held now (nothing is reserved).
    pub fn fits(&self, bytes: u64) -> bool {
        let fits = |r: u64, limit: u64| r.checked_add(bytes).is_some_and(|t| t <= limit);
        fits(reserved(), POOL.limit.load(Ordering::SeqCst))
            && self
                .scope
                .as_ref()
                .is_none_or(|s| fits(s.reserved.load(Ordering::SeqCst), s.limit))
    }

    /// Bytes it may hold in all: what it holds and what can still be reserved.
    pub fn may_hold(&self) -> u64 {
        self.bytes.saturating_add(self.headroom())
    }

    /// Bytes that can still be reserved before a limit refuses (`u64::MAX` when unlimited).
    pub fn headroom(&self) -> u64 {
        let pool = POOL.limit.load(Ordering::SeqCst).saturating_sub(reserved());
        match &self.scope {
            Some(s) => pool.min(s.limit.saturating_sub(s.reserved.load(Ordering::SeqCst))),
            None => pool,
        }
    }

    /// Hold `bytes` more, or refuse (holding nothing more) when the pool, or the run's
    /// scope, would pass its limit.
    pub fn try_grow(&mut self, bytes: u64) -> Result<()> {
        if let Some(s) = &self.scope
            && let Err(now) = add_within(&s.reserved, bytes, s.limit)
        {
            return Err(self.refusal(bytes, s.limit, now, "the run's memory_limit"));
        }
        let limit = POOL.limit.load(Ordering::SeqCst);
        match add_within(&POOL.reserved, bytes, limit) {
            Ok(_) => {
                self.bytes += bytes;
                let held = self.usage.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
                self.usage.peak.fetch_max(held, Ordering::Relaxed);
                self.register();
                Ok(())
            }
            Err(now) => {
                if let Some(s) = &self.scope {
                    s.reserved.fetch_sub(bytes, Ordering::SeqCst);
                }
                Err(self.refusal(bytes, limit, now, "the memory limit"))
            }
        }
    }

    /// Give back `bytes` (at most what is held).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        POOL.reserved.fetch_sub(bytes, Ordering::SeqCst);
        if let Some(s) = &self.scope {
            s.reserved.fetch_sub(bytes, Ordering::SeqCst);
        }
        self.usage.held.fetch_sub(bytes, Ordering::Relaxed);
        self.bytes -= bytes;
        self.register();
    }

    /// Hold exactly `bytes`: grow (or be refused, holding what it held) or shrink to it.
    pub fn resize(&mut self, bytes: u64) -> Result<()> {
        if bytes > self.bytes {
            self.try_grow(bytes - self.bytes)
        } else {
            self.shrink(self.bytes - bytes);
            Ok(())
        }
    }

    /// Give back everything held.
    pub fn free(&mut self) {
        self.shrink(self.bytes);
    }

    fn register(&self) {
        let mut holders = POOL.holders.lock().unwrap_or_else(|p| p.into_inner());
        if self.bytes == 0 {
            holders.remove(&self.id);
        } else {
            holders.insert(self.id, (self.name.clone(), self.bytes));
        }
    }

    fn refusal(&self, bytes: u64, limit: u64, reserved: u64, which: &str) -> Error {
        let holders = POOL.holders.lock().unwrap_or_else(|p| p.into_inner());
        let mut top: Vec<&(String, u64)> = holders.values().collect();
        top.sort_by_key(|h| std::cmp::Reverse(h.1));
        let list: Vec<String> = top
            .iter()
            .take(3)
            .map(|(n, b)| format!("{n} {}", human(*b as usize)))
            .collect();
        let held = if list.is_empty() {
            "nothing else is reserved".to_owned()
        } else {
            format!("largest reservations: {}", list.join(", "))
        };
        Error::MemoryLimit(format!(
            "{} needs {} more but {which} is {} and {} is reserved ({held})",
            self.name,
            human(bytes as usize),
            human(limit as usize),
            human(reserved as usize),
        ))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

/// Bytes of `batch`'s rows: a slice counts its own rows' part of the buffers, not the
/// buffers it shares with other slices; a dictionary column its keys and, of its
/// dictionary, at most a share as large as its rows' (the batches cut from one column
/// share one dictionary, which would otherwise count once per batch).
pub fn batch_bytes(batch: &arrow_array::RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| array_bytes(c.as_ref()))
        .sum()
}

fn array_bytes(c: &dyn arrow_array::Array) -> u64 {
    use arrow_array::cast::AsArray;
    if let arrow_schema::DataType::Dictionary(_, _) = c.data_type() {
        let d = c.as_any_dictionary();
        let keys = array_bytes(d.keys());
        let values = d.values();
        let all = array_bytes(values.as_ref());
        let share = all.saturating_mul(c.len() as u64) / (values.len().max(1) as u64);
        return keys + all.min(share);
    }
    let data = c.to_data();
    data.get_slice_memory_size()
        .unwrap_or(c.get_array_memory_size()) as u64
}

/// Bytes of a table's rows ([`batch_bytes`]): batches sliced from one buffer (a state's
/// columns cut along its key pieces) count their slices, not the whole buffer each.
pub fn table_bytes(table: &Table) -> u64 {
    table.batches.iter().map(batch_bytes).sum()
}

/// Run the whole-table kernel `name` with its working memory and output, `bytes`, reserved
/// first: refused with [`Error::MemoryLimit`] before it allocates anything when they do
/// not fit the budget.
pub fn within<T>(name: &str, bytes: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut r = Reservation::new(name);
    r.try_grow(bytes)?;
    f()
}

/// The working memory and output estimate of a whole-table kernel over `rows` rows of
/// inputs of `input` bytes with `keys` key columns: an output as large as the input, and a
/// few row-sized index and key-code vectors (8 bytes per row per key, plus 16).
pub fn kernel_estimate(input: u64, rows: u64, keys: usize) -> u64 {
    input.saturating_add(rows.saturating_mul(16 + 8 * keys as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test owns the process-wide pool (the others in this module only count).
    #[test]
    fn reservations_are_refused_past_the_limit_and_given_back() {
        assert!(!bounded());
        let scope = Scope::new(10);
        assert!(bounded());
        drop(scope);
        assert!(!bounded());
        set_limit(Some(1000));
        assert!(bounded());
        let base = reserved();
        {
            let mut a = Reservation::new("sort");
            a.try_grow(600).unwrap();
            let mut b = Reservation::new("join build");
            let err = b.try_grow(500).unwrap_err().to_string();
            assert!(err.contains("join build needs 500 bytes more"), "{err}");
            assert!(err.contains("sort 600 bytes"), "{err}");
            assert_eq!(b.size(), 0);
            b.try_grow(400).unwrap();
            assert_eq!(reserved(), base + 1000);
            a.shrink(100);
            b.try_grow(100).unwrap();
            assert!(within("dedup", 1, || Ok(())).is_err());
        }
        assert_eq!(reserved(), base);
        assert!(within("dedup", 1000, || Ok(1)).is_ok());
        set_limit(None);
        assert_eq!(limit(), None);
        assert!(!bounded());
        assert!(within("dedup", u64::MAX / 2, || Ok(())).is_ok());
        assert_eq!(reserved(), base);
    }
}
