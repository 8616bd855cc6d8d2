//! Offline stand-in for the `cubecl-llvm` crate (see this crate's README).
//!
//! `cubecl-cuda` 0.11 always links `cubecl-llvm`, whose build script downloads an LLVM
//! bundle. We only run CUDA kernels through cubecl's C++ backend (NVRTC), so this crate
//! provides just the names `cubecl-cuda` refers to:
//!
//! - [`nvptx::ptx_version::PtxVersion`]: the PTX ISA version a driver loads (used in cache
//!   keys and passed to the LLVM backend);
//! - [`shared::lowered_features`]: feature narrowing for the LLVM backend (a no-op here);
//! - [`PlironCompiler`], [`PlironOptions`], [`PlironArtifact`], [`NvptxModule`], [`LlvmTarget`]:
//!   the LLVM compiler variant, whose `compile` always returns a clear error.

#![warn(missing_docs)]

mod compiler;
pub mod nvptx;
pub mod shared;

pub use compiler::{LlvmTarget, NvptxModule, PlironArtifact, PlironCompiler, PlironOptions};
