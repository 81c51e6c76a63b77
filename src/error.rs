//! The one error type of the core. `python/` maps each variant to exactly one Python
//! exception class (`KeyError`, `TypeError`, `ValueError`, ...); nothing else does any mapping.

use arrow_schema::ArrowError;

/// Every fallible kernel returns `Result<T, Error>`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A column that the caller named is not in the table. Maps to `KeyError`.
    #[error("{0}")]
    ColumnNotFound(String),
    /// A column (or argument) has a type the operation cannot use. Maps to `TypeError`.
    #[error("{0}")]
    Type(String),
    /// An argument has a bad value (negative limit, mismatched lengths, overflow, ...).
    /// Maps to `ValueError`.
    #[error("{0}")]
    Value(String),
    /// A buffer could not be allocated ([`crate::mem`]). Maps to `MemoryError`.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The memory budget ([`crate::budget`]) refused a reservation: the operation cannot
    /// finish within it. Maps to `ferrobatch.MemoryLimitError` (a `MemoryError`).
    #[error("{0}")]
    MemoryLimit(String),
    /// Spilling ran out of temp space: past `max_temp_directory_size`, or a full disk
    /// ([`crate::spill`]). Maps to `OSError`.
    #[error("{0}")]
    TempSpace(String),
    /// A pipeline's `expect` checks failed. Maps to `ferrobatch.ExpectationError` (a
    /// `ValueError`).
    #[error("{0}")]
    Expectation(String),
    /// The run was interrupted ([`crate::cancel`]). Maps to `KeyboardInterrupt`.
    #[error("interrupted")]
    Interrupted,
    /// An error raised by an arrow-rs kernel. Maps to `ValueError`.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A `ColumnNotFound` whose message names the column and suggests close matches among
    /// `available` (by Jaro-Winkler similarity, or an edit distance of at most a third of the
    /// name: typos and swapped letters), as a "did you mean" hint.
    pub fn column_not_found<'a>(name: &str, available: impl IntoIterator<Item = &'a str>) -> Self {
        let mut scored: Vec<(f64, &str)> = available
            .into_iter()
            .map(|c| {
                let (a, b) = (name.to_lowercase(), c.to_lowercase());
                let edits = strsim::damerau_levenshtein(&a, &b);
                let close = edits <= (a.chars().count() / 3).max(1);
                (
                    strsim::jaro_winkler(&a, &b).max(if close { 0.7 } else { 0.0 }),
                    c,
                )
            })
            .filter(|(score, _)| *score >= 0.7)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hints: Vec<String> = scored
            .iter()
            .take(3)
            .map(|(_, c)| format!("{c:?}"))
            .collect();
        let hint = if hints.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", hints.join(" or "))
        };
        Error::ColumnNotFound(format!("column {name:?} not found{hint}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_matches() {
        let e = Error::column_not_found("amout", ["amount", "id", "customer"]);
        let msg = e.to_string();
        assert!(msg.contains("\"amout\""), "{msg}");
        assert!(msg.contains("did you mean \"amount\""), "{msg}");
        let e = Error::column_not_found("kye", ["key", "value"]);
        assert!(e.to_string().contains("did you mean \"key\""), "{e}");
        let e = Error::column_not_found("zzz", ["amount"]);
        assert!(!e.to_string().contains("did you mean"));
    }
}
