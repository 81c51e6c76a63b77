//! ferrobatch: parallel sort, hash join, group-by and dedup kernels over Apache Arrow.
//!
//! The kernels ([`sort`], [`dedup`]) work on a [`table::Table`] and know nothing of Python;
//! the `python` feature adds the bindings in [`python`], which only convert arguments,
//! release the GIL and map [`error::Error`] to Python exceptions.

pub mod budget;
pub mod cancel;
pub mod dedup;
pub mod error;
pub mod exec;
pub mod expr;
pub mod gather;
pub mod group_by;
pub mod join;
pub mod keys;
pub mod mem;
pub mod parallel;
pub mod pool;
pub mod radix;
pub mod read_at;
pub mod sort;
pub mod spill;
pub mod table;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use table::Table;
