//! Fallible allocation of the large buffers a kernel makes.
//!
//! Rust's allocation failure aborts the process, and an allocator may not unwind. The
//! row-sized buffers of the kernels (packed keys, index vectors, partitions, radix scratch)
//! are therefore asked for with `try_reserve`: a refusal unwinds out of the run with
//! [`Abort::OutOfMemory`], which [`crate::cancel::run`] turns into
//! [`crate::Error::OutOfMemory`] (Python's `MemoryError`). Outputs that arrow-rs allocates
//! itself are probed first ([`ensure`]). Fills run in parallel blocks, each a cancellation
//! point, so a large buffer is neither written by one thread nor a long wait for Ctrl-C.

use rayon::prelude::*;

use crate::cancel::{self, Abort};
use crate::parallel::BLOCK;

/// Resident set size of the process now (Linux `/proc/self/statm`, in pages of the
/// system's size; 0 elsewhere).
pub fn resident_bytes() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// Unwind out of the run with [`Abort::OutOfMemory`]: `bytes` for `what` were refused.
#[cold]
#[inline(never)]
pub fn refuse(bytes: usize, what: &str) -> ! {
    std::panic::resume_unwind(Box::new(Abort::OutOfMemory(format!(
        "cannot allocate {} for {what}",
        human(bytes)
    ))))
}

/// `bytes` in binary units, for messages.
pub fn human(bytes: usize) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// An empty vector with room for `n` values, or an out-of-memory unwind.
pub fn with_capacity<T>(n: usize, what: &str) -> Vec<T> {
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        refuse(n.saturating_mul(size_of::<T>()), what);
    }
    v
}

/// `n` copies of `value`, written in parallel blocks, or an out-of-memory unwind.
pub fn filled<T: Copy + Send + Sync>(n: usize, value: T, what: &str) -> Vec<T> {
    let mut v = with_capacity::<T>(n, what);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(BLOCK)
        .for_each(|blk| {
            cancel::point();
            for x in blk {
                x.write(value);
            }
        });
    // SAFETY: the first `n` slots were all written above (an unwind skips this line).
    unsafe { v.set_len(n) };
    v
}

/// Check that `bytes` more can be allocated now (an out-of-memory unwind if not), before
/// arrow-rs allocates them itself, which would abort on failure. Best effort: the probe is
/// released at once.
pub fn ensure(bytes: usize, what: &str) {
    drop(with_capacity::<u8>(bytes, what));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_allocation_is_an_error_not_an_abort() {
        let r = cancel::run(|| {
            let v = filled(usize::MAX / 16, 0u64, "a test buffer");
            Ok(v.len())
        });
        match r {
            Err(crate::Error::OutOfMemory(m)) => assert!(m.contains("a test buffer"), "{m}"),
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
        let v = cancel::run(|| Ok(filled(100_000, 7u32, "x"))).unwrap();
        assert!(v.len() == 100_000 && v.iter().all(|&x| x == 7));
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
