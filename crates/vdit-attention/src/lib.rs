//! Plan-driven sparse 3D self-attention for Burn.
//!
//! Give it `q`, `k`, `v` of shape `[batch, heads, tokens, head_dim]`, the
//! [`VideoLayout`](vdit_patterns::VideoLayout) of the sequence and one layer's decisions from a plan, and it returns
//! the attention output; with no plan it is dense attention. Each head follows its own
//! block table ([`vdit_patterns::BlockTable`]): blocks outside the table are never
//! computed, skipped heads output zeros.
//!
//! - [`SparseAttentionBackend`] is implemented for CPU backends (burn-flex; a rayon
//!   block-sparse flash-attention path that follows the same block tables, O(tokens x
//!   head_dim) memory per head) and, with the `wgpu`/`cuda` features, for the unfused
//!   CubeCL backends (`burn_cubecl::CubeBackend`), which run one kernel launch per layer.
//!   Other backends do not implement the trait, so using them is a compile-time error.
//! - [`PreparedLayer`] is one layer's compiled, grouped patterns (built once, cached).
//! - [`cross_attention`] is dense attention from the video tokens to a short key side
//!   (text), on the same kernels ([`PreparedCross`] caches its device table).
//! - [`AttentionPlan`] compiles every layer of a [`vdit_patterns::Plan`] for one layout.
//! - [`AttentionContext`] is what a model's forward pass carries: layout, plan, step and
//!   an optional [`CaptureHook`] that observes q/k/v (and the dense output) of chosen
//!   layers without changing the model code.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
//! use burn::tensor::backend::Backend;
//! use burn::tensor::{Distribution, Tensor};
//! use vdit_attention::{attention, AttentionOptions, PreparedLayer, SparseAttentionBackend};
//! use vdit_patterns::{Pattern, VideoLayout};
//!
//! fn run<B: SparseAttentionBackend>(device: &B::Device) -> Result<Tensor<B, 4>, Box<dyn std::error::Error>> {
//!     let layout = VideoLayout::new(3, 4, 6)?; // 3 frames of 4 x 6 tokens
//!     let q = Tensor::<B, 4>::random([1, 2, 72, 16], Distribution::Default, device);
//!     // Head 0 attends within a band of half a frame, head 1 is skipped.
//!     let layer = PreparedLayer::new(&[Pattern::Diagonal { band: 0.5 }, Pattern::Skip], &layout, 64)?;
//!     let out = attention(q.clone(), q.clone(), q, Some(&layer), &layout, &AttentionOptions::default())?;
//!     Ok(out.output)
//! }
//!
//! // CPU (burn-flex, rayon block-sparse path).
//! let cpu = run::<Flex>(&Default::default())?;
//! assert_eq!(cpu.dims(), [1, 2, 72, 16]);
//! // GPU (CubeCL kernels; WgpuDevice::Cpu is Mesa's CPU Vulkan driver, as in CI — use
//! // `WgpuDevice::default()` or `burn_cubecl::CubeBackend<CudaRuntime, ..>` on a GPU).
//! let gpu = run::<CubeBackend<WgpuRuntime, f32, i32, u32>>(&WgpuDevice::Cpu)?;
//! assert_eq!(gpu.dims(), [1, 2, 72, 16]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod backend;
mod context;
pub mod cpu;
#[cfg(feature = "cube")]
mod cube;
mod error;
mod layer;

pub use backend::{
    AttentionOptions, AttentionOutput, SparseAttentionBackend, attention, burn_cross_attention,
    cross_attention,
};
pub use context::{AttentionContext, AttentionPlan, CaptureHook, CapturedAttention};
pub use error::AttentionError;
pub use layer::{PreparedCross, PreparedLayer};
pub use vdit_patterns;
