//! Denoiser building blocks as Burn backend extensions.
//!
//! The three denoisers spend most of their non-attention time in Linear layers and in
//! chains of elementwise/normalisation work. This crate gives each of those one
//! Burn-facing operation behind a backend extension trait, so model code calls one
//! function and every backend runs its best implementation:
//!
//! | trait | CPU (burn-flex) and wgpu | CUDA (`burn_cubecl::CubeBackend<CudaRuntime, ..>`) |
//! |---|---|---|
//! | [`LinearBackend`] | Burn's matmul + bias (+ GELU-tanh) | cuBLASLt, bf16/f16 in, f32 accumulate, bias and GELU-tanh fused in the epilogue |
//!
//! The default (trait-provided) bodies are the reference compositions: GPU overrides are
//! tested against them.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, Tensor};
//! use vdit_ops::{Epilogue, LinearBackend};
//!
//! let device = Default::default();
//! let x = Tensor::<Flex, 2>::random([4, 8], Distribution::Default, &device);
//! let w = Tensor::<Flex, 2>::random([8, 3], Distribution::Default, &device); // [in, out]
//! let b = Tensor::<Flex, 1>::random([3], Distribution::Default, &device);
//! let y = <Flex as LinearBackend>::linear(x, w, Some(b), Epilogue::GeluTanh);
//! assert_eq!(y.dims(), [4, 3]);
//! ```
#![warn(missing_docs)]

#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "cuda")]
pub mod cublaslt;
mod fused;
mod linear;

#[cfg(feature = "cube")]
pub use fused::fused_launch_count;
pub use fused::{
    FusedBackend, LayerNormParams, ModMath, Modulate, QkNorm, Rope, apply_interleaved,
    burn_gated_residual, burn_layer_norm_modulated, burn_qk_norm_rope,
};
pub use linear::{Epilogue, LinearBackend, LinearEngine, burn_linear, last_linear_engine};
