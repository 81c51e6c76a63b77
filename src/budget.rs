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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    POOL.limit
        .store(limit.unwrap_or(UNLIMITED), Ordering::SeqCst);
}

/// The budget in bytes, `None` when unlimited.
pub fn limit() -> Option<u64> {
    Some(POOL.limit.load(Ordering::SeqCst)).filter(|&l| l != UNLIMITED)
}

/// Bytes reserved now, by every live reservation together.
pub fn reserved() -> u64 {
    POOL.reserved.load(Ordering::SeqCst)
}

/// A named claim on the pool, released when dropped.
pub struct Reservation {
    id: u64,
    name: String,
    bytes: u64,
}

impl Reservation {
    /// An empty reservation for the operator `name`.
    pub fn new(name: &str) -> Self {
        let id = POOL.next_id.fetch_add(1, Ordering::Relaxed);
        Reservation {
            id,
            name: name.to_owned(),
            bytes: 0,
        }
    }

    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.bytes
    }

    /// Hold `bytes` more, or refuse (holding nothing more) when the pool would pass its
    /// limit.
    pub fn try_grow(&mut self, bytes: u64) -> Result<()> {
        let limit = POOL.limit.load(Ordering::SeqCst);
        let grown = POOL
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                r.checked_add(bytes).filter(|&t| t <= limit)
            });
        match grown {
            Ok(_) => {
                self.bytes += bytes;
                self.register();
                Ok(())
            }
            Err(now) => Err(self.refusal(bytes, limit, now)),
        }
    }

    /// Give back `bytes` (at most what is held).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        POOL.reserved.fetch_sub(bytes, Ordering::SeqCst);
        self.bytes -= bytes;
        self.register();
    }

    fn register(&self) {
        let mut holders = POOL.holders.lock().unwrap_or_else(|p| p.into_inner());
        if self.bytes == 0 {
            holders.remove(&self.id);
        } else {
            holders.insert(self.id, (self.name.clone(), self.bytes));
        }
    }

    fn refusal(&self, bytes: u64, limit: u64, reserved: u64) -> Error {
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
            "{} needs {} more but the memory limit is {} and {} is reserved ({held})",
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

/// Bytes of a table's buffers (shared buffers counted once per array that uses them).
pub fn table_bytes(table: &Table) -> u64 {
    table
        .batches
        .iter()
        .map(|b| b.get_array_memory_size() as u64)
        .sum()
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
        set_limit(Some(1000));
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
        assert!(within("dedup", u64::MAX / 2, || Ok(())).is_ok());
        assert_eq!(reserved(), base);
    }
}
