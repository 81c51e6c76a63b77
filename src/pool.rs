//! The thread pool every kernel runs in.
//!
//! A dedicated rayon pool (not rayon's global one, which cannot be resized) sized by
//! `set_num_threads`, else `FERROBATCH_NUM_THREADS`, else the number of cores. Kernels are
//! written so that their output never depends on the pool size: work is split into pieces
//! whose boundaries depend only on the input, and partial results are merged in a fixed order.

use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

fn default_threads() -> usize {
    std::env::var("FERROBATCH_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn build(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("ferrobatch-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Value(format!("cannot start {n} threads: {e}")))
}

fn pool() -> Result<Arc<rayon::ThreadPool>> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(p.clone());
    }
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return Ok(p.clone());
    }
    let p = build(default_threads())?;
    *guard = Some(p.clone());
    Ok(p)
}

/// Resize the pool. Work already running keeps the pool it started on.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Value("number of threads must be at least 1".into()));
    }
    let p = build(n)?;
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(p);
    Ok(())
}

pub fn get_num_threads() -> usize {
    pool().map_or(1, |p| p.current_num_threads())
}

/// Run `f` inside the ferrobatch pool as one cancellable run ([`crate::cancel::run`]), while
/// the calling thread calls `watch` until `f` is done, each time again after the period
/// `watch` returns; `watch` may [`crate::cancel::interrupt`] it. Called on a pool thread, `f`
/// runs inline.
pub fn install_watched<T: Send>(
    f: impl FnOnce() -> Result<T> + Send,
    mut watch: impl FnMut() -> std::time::Duration,
) -> Result<T> {
    let pool = pool()?;
    if pool.current_thread_index().is_some() {
        // Called from inside a run (a kernel under a callback of the executor): run inline
        // on this worker; the outer caller watches for Ctrl-C.
        return crate::cancel::run(f);
    }
    crate::cancel::run(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        pool.in_place_scope(|s| {
            s.spawn(move |_| {
                // Ship a panic (an interrupt included) to the waiting thread, which resumes it.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                let _ = tx.send(r);
            });
            let mut period = watch();
            loop {
                match rx.recv_timeout(period) {
                    Ok(r) => break r.unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => period = watch(),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        unreachable!("the job always sends its result")
                    }
                }
            }
        })
    })
}

/// `background` on the pool while the calling thread runs `foreground`; both results once
/// both are done (the foreground's error first). The background is a cancellable run of its
/// own ([`crate::cancel::run`]) and should be short: the caller waits for it unwatched. On a
/// pool thread, one after the other.
pub fn alongside<A: Send, B>(
    background: impl FnOnce() -> Result<A> + Send,
    foreground: impl FnOnce() -> Result<B>,
) -> Result<(A, B)> {
    let pool = pool()?;
    if pool.current_thread_index().is_some() {
        let b = foreground()?;
        return Ok((background()?, b));
    }
    let mut a = None;
    let b = pool.in_place_scope(|s| {
        s.spawn(|_| a = Some(crate::cancel::run(background)));
        foreground()
    });
    let b = b?;
    Ok((a.expect("the scope waits for its task")?, b))
}
