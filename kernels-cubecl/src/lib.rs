//! Block-sparse flash attention for video diffusion transformers, in CubeCL.
//!
//! One launch computes every head of one attention layer. Each head reads its own block
//! table (compiled by [`vdit_patterns`]) from a [`DeviceLayer`]: for each
//! `(batch, head, query block)` the kernel iterates only the key blocks listed in that
//! head's CSR row, with an online softmax (scores are never materialised as `L x L`).
//! Skip heads and empty rows write zeros (and `lse = -inf`). Heads whose table is in
//! [`vdit_patterns::TokenOrder::SpatialMajor`] are computed in permuted coordinates: row
//! `p` of the table reads and writes natural token `perm[p]`, so multi-diagonal patterns run
//! as a band without an extra permutation pass.
//!
//! Two kernel paths, chosen at run time from the client's features ([`KernelPath`]):
//! - **tensor core** (`cmma` 16x16x16, f16/bf16 inputs, f32 accumulation; CUDA): 64 query
//!   rows per cube (4 planes of 16 rows), 64-key K/V tiles in shared memory;
//! - **portable** (no `cmma`, no plane operations; shared-memory reductions only): runs on
//!   any wgpu adapter including Mesa lavapipe (32 KiB shared memory), in f32/f16/bf16
//!   wherever the device stores that type.
//!
//! The [`fused`] module holds the element-wise / normalisation chains of the denoiser
//! blocks (modulated LayerNorm, gated residual, q/k norm + RoPE) as single launches.
//!
//! Entry points: [`DeviceLayer::upload`], [`SparseAttention`], [`launch`], and the f64 CPU
//! oracle [`reference::sparse_attention_reference`].
//!
//! Performance (H100, bf16, `results/kernels/`): the tensor-core path reaches ~86-88
//! TFLOP/s dense at d128 (0.14x cuDNN SDPA) and a sparse head costs 0.95-1.08x its
//! computed-block share of that dense time at densities >= 10%. The tile engine is the
//! limit (cubecl 0.10 `cmma` = opaque wmma fragments, so scores go through shared memory);
//! see `results/kernels/README.md` for the analysis and the next step.
#![warn(missing_docs)]

mod error;
pub mod fused;
mod kernel;
mod launch;
mod layer;
mod path;
mod problem;
pub mod reference;
mod validate;

pub use error::KernelError;
pub use launch::{AttentionBuffers, LaunchInfo, launch, launch_count};
pub use layer::DeviceLayer;
pub use path::select_path;
pub use problem::{AttnDtype, KernelPath, MaskDtype, SparseAttention, TcEngine, TcOptions};

/// Re-export of the CubeCL version this crate is built against.
pub use cubecl;

/// Whether libcuda can be loaded on this machine. CUDA tests call it to skip gracefully
/// on machines without a driver (`CudaRuntime::client` panics there).
#[cfg(feature = "cuda")]
pub fn cuda_available() -> bool {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}
