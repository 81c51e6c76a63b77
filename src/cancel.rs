//! Cooperative cancellation of running kernels (Ctrl-C).
//!
//! A run in progress is stopped by [`interrupt`]: kernels call [`point`] at the start of
//! every block of work (a few milliseconds apart on any core), which unwinds out of the
//! block with an [`Abort::Interrupted`] payload once the flag is up. The unwind crosses rayon's
//! joins like a panic (the sibling blocks stop at their next point too) and is caught where
//! the run entered the pool ([`crate::pool::install_watched`]), which returns
//! [`Error::Interrupted`]. Unwinding needs no `Result` plumbing through closures that
//! return plain values, and it reaches into loops that cannot return early (the comparator
//! of a parallel sort). Every buffer a kernel holds is an owned Rust value, dropped on the
//! way out, so an interrupted run leaves nothing behind; operators whose state outlives a
//! call commit their changes only after the work that may be interrupted.
//!
//! Points go at the start of a block of rows (`par_chunks(BLOCK)`), not per element of a
//! rayon iterator: measured, per-element points in rayon's `filter` / `collect` pipelines
//! turned a stop into seconds of unwinding; inside a comparison sort the comparator is the
//! only place there is, and it stops within milliseconds.
//!
//! Like Ctrl-C itself the flag is process-wide: it stops every run in progress when it is
//! raised, and is lowered when the last of them has returned.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// The unwind payload of a run that stops early.
pub enum Abort {
    /// [`interrupt`] was called.
    Interrupted,
    /// An allocation was refused ([`crate::mem`]); says what was asked for.
    OutOfMemory(String),
}

/// Ask every run in progress to stop.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Whether runs are being asked to stop.
#[inline]
pub fn stopped() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// A cancellation point: unwinds with [`Abort::Interrupted`] when the runs are asked to stop.
#[inline]
pub fn point() {
    if stopped() {
        unwind();
    }
}

#[cold]
#[inline(never)]
fn unwind() -> ! {
    // `resume_unwind` skips the panic hook: nothing is printed.
    std::panic::resume_unwind(Box::new(Abort::Interrupted))
}

/// Run `f` as one cancellable run: an [`Abort`] unwind from inside becomes
/// [`Error::Interrupted`] or [`Error::OutOfMemory`]; any other panic continues. The flag is
/// lowered when the last concurrent run returns.
pub fn run<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    struct Active;
    impl Drop for Active {
        fn drop(&mut self) {
            if ACTIVE.fetch_sub(1, Ordering::AcqRel) == 1 {
                INTERRUPTED.store(false, Ordering::Relaxed);
            }
        }
    }
    ACTIVE.fetch_add(1, Ordering::AcqRel);
    let _active = Active;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => match p.downcast::<Abort>() {
            Ok(a) => Err(match *a {
                Abort::Interrupted => Error::Interrupted,
                Abort::OutOfMemory(what) => Error::OutOfMemory(what),
            }),
            Err(p) => std::panic::resume_unwind(p),
        },
    }
}
