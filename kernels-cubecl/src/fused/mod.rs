//! Fused element-wise and normalisation chains of the denoiser blocks.
//!
//! Each chain that Burn runs as a handful of kernels with f32 intermediates round-tripping
//! through memory is one launch here:
//!
//! - [`launch_layer_norm`]: `cast(LN_f32(x) [* w] [+ b], modulated by (1 + scale), shift)`
//!   — Wan's `norm1`/`norm3` with the scale-shift table, `norm2`, HunyuanVideo's and
//!   CogVideoX's adaLN (see [`ModMath`] for the two modulation arithmetics);
//! - [`launch_gated_residual`]: `cast(x + y * gate)`;
//! - [`launch_qk_norm_rope`]: RMSNorm/LayerNorm of q or k (over the hidden size or per
//!   head), rounded to the model dtype, then interleaved-pair RoPE on a token range, written
//!   straight into `[batch, heads, tokens, head_dim]` (no separate head permute).
//!
//! Reductions are f32 two-pass (mean, then centred sum of squares, like PyTorch's f32
//! LayerNorm) through shared memory with cube barriers only: no plane operations, so the
//! kernels run on lavapipe and CUDA alike. All buffers are contiguous row-major; bad shapes
//! or buffers are a [`KernelError`](crate::KernelError) and launch nothing. [`mod@reference`] is the f64 CPU oracle.

mod kernels;
mod launch;
pub mod reference;

pub use launch::{
    GatedResidual, GatedResidualBuffers, LayerNormBuffers, ModLayerNorm, Modulation, QkNormBuffers,
    QkNormKind, QkNormRope, RopeSpan, launch_gated_residual, launch_layer_norm,
    launch_qk_norm_rope,
};

/// How a modulation (`* (1 + scale) + shift`, or a gate) is computed after the f32 norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModMath {
    /// Everything in f32, one cast at the end (Wan: its modulation is f32).
    F32,
    /// In the output dtype: the normalised value is rounded to it, then `1 + scale`, the
    /// product and the sum are each rounded (HunyuanVideo, CogVideoX: diffusers modulates
    /// model-dtype tensors). For gates: the product `y * gate` is rounded, then the sum.
    /// Identical to [`ModMath::F32`] when the output dtype is f32.
    OutDtype,
}
