//! Errors of the attention operator.

/// Why an attention call was rejected or failed.
#[derive(Debug, thiserror::Error)]
pub enum AttentionError {
    /// Input shapes disagree with each other or with the layout/plan.
    #[error("attention shape mismatch: {0}")]
    Shape(String),
    /// The plan does not fit the tensors (head count, layout, layer index).
    #[error("plan does not match the attention call: {0}")]
    Plan(String),
    /// The backend cannot run this dtype or head dimension.
    #[error("unsupported on this backend: {0}")]
    Unsupported(String),
    /// Compiling patterns failed.
    #[error(transparent)]
    Pattern(#[from] vdit_patterns::PatternError),
    /// A [`crate::CaptureHook`] stopped the forward pass (e.g. a search that no longer
    /// needs the rest of a run).
    #[error("attention call aborted: {0}")]
    Aborted(String),
    /// A GPU kernel reported an error.
    #[error("kernel error: {0}")]
    Kernel(String),
}
