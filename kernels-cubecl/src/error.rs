//! Typed errors: bad input never panics.

use thiserror::Error;

/// Why a layer could not be uploaded or an attention launch was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// The head dimension is not supported by the chosen kernel path.
    #[error("head_dim {head_dim} is not supported: {reason}")]
    HeadDim {
        /// The requested head dimension.
        head_dim: usize,
        /// Which constraint failed.
        reason: String,
    },
    /// The block size of the layer's tables is not supported by the kernels.
    #[error("block size {0} is not supported (use 16, 32, 64 or 128)")]
    BlockSize(usize),
    /// The element type cannot run on this device / path.
    #[error("dtype {dtype} is not supported here: {reason}")]
    Dtype {
        /// The element type's name.
        dtype: &'static str,
        /// Why.
        reason: String,
    },
    /// The problem does not match the uploaded layer (heads, tokens).
    #[error("shape mismatch in {field}: expected {expected}, got {got}")]
    Shape {
        /// The field that differs.
        field: &'static str,
        /// What the layer or problem requires.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// A buffer is smaller than the problem needs.
    #[error("buffer {name} holds {got} bytes, the problem needs {needed}")]
    Buffer {
        /// The buffer's role (`q`, `k`, `out`, ...).
        name: &'static str,
        /// Bytes required.
        needed: u64,
        /// Bytes available in the handle.
        got: u64,
    },
    /// An option is inconsistent (e.g. a lse buffer without `want_lse`).
    #[error("invalid option: {0}")]
    Option(String),
    /// The requested path cannot run on this device.
    #[error("kernel path {path} is not available on this device: {reason}")]
    Path {
        /// The requested path.
        path: &'static str,
        /// Which feature is missing.
        reason: String,
    },
    /// The layer's block tables are inconsistent (corrupt or mixed layouts).
    #[error("invalid layer: {0}")]
    Layer(String),
    /// The grid would exceed the device's cube-count limits.
    #[error("grid too large: {0}")]
    Grid(String),
}
