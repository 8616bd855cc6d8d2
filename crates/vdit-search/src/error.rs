//! Typed errors of the search crate.

use std::path::PathBuf;

/// Why a search, a capture file or a cost table was rejected.
///
/// Every variant's message names the file, option or field concerned and the values found,
/// so that a command-line user can fix the input without reading the code.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A capture file is unreadable or inconsistent (missing tensors, shapes that disagree
    /// with each other or with the metadata, bad metadata values, unsupported dtypes).
    #[error("capture file {path}: {reason}")]
    Capture {
        /// File concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Several inputs (samples) that must describe the same model and layout do not.
    #[error("inconsistent search inputs: {0}")]
    Inconsistent(String),
    /// An option value is impossible (negative epsilon, empty candidate set, ...).
    #[error("invalid option `{option}`: {reason}")]
    Option {
        /// Option name as the command line spells it (e.g. `epsilon`).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The target speedup cannot be reached within the requested tolerance.
    #[error("target speedup {target:.3}x is not reachable within {tolerance_pct:.0}%: {detail}")]
    Unreachable {
        /// Requested speedup.
        target: f64,
        /// Allowed relative deviation, in percent.
        tolerance_pct: f64,
        /// The nearest achievable speedups.
        detail: String,
    },
    /// A cost table is malformed or has no entry that can price a pattern.
    #[error("cost table {source_name}: {reason}")]
    CostTable {
        /// File or description of the table.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plan does not fit the model or inputs it is used with.
    #[error("plan does not match the search inputs: {0}")]
    PlanMismatch(String),
    /// An attention output or error is NaN or infinite although q, k and v are finite
    /// (the scores overflowed f32, e.g. from huge q/k): no decision can be made on it.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// A model-driven source failed to produce q/k/v.
    #[error("q/k/v source failed: {0}")]
    Source(String),
    /// A pattern could not be compiled.
    #[error(transparent)]
    Pattern(#[from] vdit_patterns::PatternError),
    /// A plan could not be validated or written.
    #[error(transparent)]
    Plan(#[from] vdit_patterns::PlanError),
}

impl SearchError {
    pub(crate) fn option(option: &'static str, reason: impl Into<String>) -> Self {
        SearchError::Option {
            option,
            reason: reason.into(),
        }
    }

    /// The same error with `context` (e.g. `sample 0, step 2, layer 1`) in front of a
    /// [`SearchError::NonFinite`] message; other errors are returned unchanged.
    pub fn at(self, context: impl std::fmt::Display) -> Self {
        match self {
            SearchError::NonFinite(m) => SearchError::NonFinite(format!("{context}: {m}")),
            other => other,
        }
    }

    pub(crate) fn capture(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        SearchError::Capture {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
