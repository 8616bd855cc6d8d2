//! The error type of the pipelines.

use std::path::PathBuf;

/// Why a pipeline could not be loaded or run, or its outputs not written.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A model part failed (loading, shapes, config); `context` says which part.
    #[error("{context}: {source}")]
    Model {
        /// Which part or step (e.g. `loading PIPE/vae`).
        context: String,
        /// The model error.
        source: vdit_models::ModelError,
    },
    /// A model error outside a named part (shapes, settings).
    #[error(transparent)]
    Models(#[from] vdit_models::ModelError),
    /// A video could not be built, written or read.
    #[error(transparent)]
    Video(#[from] vdit_video::VideoError),
    /// A plan does not fit, or could not be read.
    #[error("{0}")]
    Plan(String),
    /// A pipeline folder is incomplete or inconsistent; names the file or key.
    #[error("{path}: {message}")]
    Folder {
        /// The folder or file.
        path: PathBuf,
        /// What is missing or wrong.
        message: String,
    },
    /// A request or setting is invalid.
    #[error("{0}")]
    Input(String),
    /// A file could not be written or read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl PipelineError {
    /// A model error with the part or step it happened in.
    pub fn model(context: impl Into<String>, source: vdit_models::ModelError) -> Self {
        PipelineError::Model {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
