//! Typed errors of this crate.

use std::path::PathBuf;

/// An invalid layout, pattern parameter or block size.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatternError {
    /// A layout dimension is zero or the token count overflows.
    #[error("invalid video layout: {0}")]
    Layout(String),
    /// A pattern parameter is out of range or not finite.
    #[error("invalid {pattern} parameter `{field}`: {reason}")]
    Parameter {
        /// Pattern kind (e.g. `diagonal`).
        pattern: &'static str,
        /// Parameter name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The block size is not one the kernels support.
    #[error("unsupported block size {0}: expected one of 64, 128")]
    BlockSize(usize),
}

/// Why a plan file could not be read, validated or written.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Reading or writing the file failed.
    #[error("plan file {path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The document is not valid RON for a plan (truncated, malformed, wrong types).
    #[error("plan is not a valid RON plan document: {0}")]
    Parse(String),
    /// The document declares a format version this build cannot read.
    #[error("unsupported plan version {found} (this build reads version {expected})")]
    UnsupportedVersion {
        /// Version found in the document.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A field holds an invalid value; `field` is a path such as `ranges[1].layers[3][7]`.
    #[error("invalid plan field `{field}`: {reason}")]
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl PlanError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PlanError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
