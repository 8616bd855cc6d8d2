//! Errors of model construction, loading and I/O.

use std::path::PathBuf;

/// Why a model could not be configured, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `config.json` (or an index file) is not valid JSON for the expected structure.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde said.
        message: String,
    },
    /// `config.json` names a model class this project does not implement.
    #[error("unknown model class `{class}` in {path} (supported: {supported})")]
    UnknownModel {
        /// The `_class_name` found.
        class: String,
        /// The config file.
        path: PathBuf,
        /// Comma-separated list of supported classes.
        supported: String,
    },
    /// A configuration value is outside what the model supports.
    #[error("invalid config: {0}")]
    Config(String),
    /// A safetensors file is malformed.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The model needs a weight the checkpoint does not have.
    #[error("missing weight `{key}` (expected shape {expected:?})")]
    MissingKey {
        /// Full key, e.g. `blocks.3.attn1.to_q.weight`.
        key: String,
        /// Shape the model expects.
        expected: Vec<usize>,
    },
    /// The checkpoint has weights the model does not use.
    #[error("unexpected weight(s) in checkpoint: {}", keys.join(", "))]
    UnexpectedKeys {
        /// The unused keys (sorted).
        keys: Vec<String>,
    },
    /// A weight has a different shape than the model expects.
    #[error("weight `{key}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// Full key.
        key: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// Shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A weight or input has a dtype that cannot be used.
    #[error("`{key}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Key of the tensor.
        key: String,
        /// The dtype, as safetensors names it.
        dtype: String,
    },
    /// A forward-pass input is missing or has the wrong shape.
    #[error("invalid input: {0}")]
    Input(String),
    /// The attention operator rejected a call.
    #[error(transparent)]
    Attention(#[from] vdit_attention::AttentionError),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
