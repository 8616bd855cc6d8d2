//! Video token layouts, sparse attention patterns, block masks and plan files.
//!
//! This crate is the vocabulary every other Sparse-vDiT crate speaks, and it has no
//! dependency on Burn, CubeCL or any GPU library:
//!
//! - [`VideoLayout`]: where the video and text tokens of a joint sequence sit.
//! - [`Pattern`]: the five per-head attention patterns (dense, skip, diagonal,
//!   multi-diagonal, vertical stripe), with parameters relative to the layout so that a
//!   plan carries across resolutions and frame counts.
//! - [`BlockTable`]: a pattern compiled for one layout and block size into a CSR table
//!   (row pointers + key-block indices per query block) that GPU kernels and the CPU
//!   path consume directly, together with the [`TokenOrder`] it is expressed in.
//! - [`Plan`]: the versioned RON plan file (per timestep range x layer x head decisions),
//!   its validation and atomic writes; [`CompiledLayer`] groups the heads of one layer
//!   that share a block table.
//!
//! ```
//! use vdit_patterns::{BlockTable, Pattern, TextPosition, VideoLayout};
//!
//! // CogVideoX1.5 at 1360x768x81 frames: 11 x 48 x 85 video tokens after a 226-token text prefix.
//! let layout = VideoLayout::new(11, 48, 85)?.with_text(226, TextPosition::Prefix)?;
//! assert_eq!(layout.total_tokens(), 45_106);
//! let table = BlockTable::compile(&Pattern::Diagonal { band: 0.25 }, &layout, 64)?;
//! assert!(table.density() < 0.2);
//! # Ok::<(), vdit_patterns::PatternError>(())
//! ```
#![warn(missing_docs)]

mod block;
mod error;
mod io;
mod layout;
mod order;
mod pattern;
mod plan;

pub use block::{BlockTable, SUPPORTED_BLOCK_SIZES};
pub use error::{PatternError, PlanError};
pub use io::{
    MAX_STEPS, MAX_TEXT_BYTES, OutputSet, PathError, check_distinct, check_input_file,
    check_output_path, read_text_capped, same_file, write_atomic,
};
pub use layout::{TextPosition, TokenKind, VideoLayout};
pub use order::TokenOrder;
pub use pattern::{Pattern, PatternKind, TokenSpan};
pub use plan::{
    CompiledLayer, CostTableRef, HeadSlot, ModelInfo, PLAN_VERSION, Plan, Provenance, SearchParams,
    StepRange, TableCache,
};
