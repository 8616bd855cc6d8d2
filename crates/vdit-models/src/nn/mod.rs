//! Layers whose numerics must match diffusers exactly.
//!
//! - [`Linear`]: PyTorch-layout weights (`[out, in]` in the checkpoint), loaded through
//!   [`crate::Weights`].
//! - [`LayerNorm32`], [`RmsNorm32`]: computed in f32 whatever the model dtype (diffusers'
//!   `FP32LayerNorm`, `torch.nn.RMSNorm`), with or without affine parameters.
//! - [`timestep_embedding`] / [`TimestepEmbedding`]: diffusers `get_timestep_embedding`
//!   (`flip_sin_to_cos`, `downscale_freq_shift`) and the `linear_1 -> SiLU -> linear_2` MLP.
//! - [`FeedForward`]: diffusers `FeedForward` (`net.0.proj`, `net.2`).
//! - [`gelu_tanh`], [`silu`]: activations.
//! - [`rope`]: 3D rotary position embedding tables and the interleaved (GPT-J) rotation.

mod embeddings;
mod feed_forward;
mod linear;
mod norm;
pub mod rope;

pub use embeddings::{
    PatchEmbed3d, TimestepEmbedding, timestep_embedding, timestep_embedding_host,
};
pub use feed_forward::{FeedForward, FfActivation};
pub use linear::Linear;
pub use norm::{LayerNorm32, RmsNorm32};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// GELU with the tanh approximation (`torch.nn.functional.gelu(x, approximate="tanh")`),
/// computed in the input dtype.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::gelu_approximate(x)
}

/// SiLU (`x * sigmoid(x)`).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::silu(x)
}

/// Casts to f32 (no-op when already f32).
pub fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    to_dtype(x, DType::F32)
}

/// Casts to `dtype` (no-op when already there).
pub fn to_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}
