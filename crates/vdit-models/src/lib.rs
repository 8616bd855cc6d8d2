//! Shared model infrastructure for the Sparse-vDiT denoisers (Wan2.1, HunyuanVideo,
//! CogVideoX1.5), generic over any Burn backend.
//!
//! # What is here
//!
//! | module | what |
//! |---|---|
//! | [`config`] | read a diffusers `config.json`, detect the class from `_class_name` ([`ModelClass`]), parse into a model's serde struct ([`DiffusersConfig::parse`]) |
//! | [`safetensors_file`] | memory-mapped safetensors, single file or sharded (`*.safetensors.index.json`), one tensor decoded at a time |
//! | [`Weights`] | build a model from a checkpoint key by key (`w.pp("blocks").pp(3).pp("attn1")`), any of f32/bf16/f16 files into the model dtype, typed errors naming missing / unexpected / wrongly shaped keys; or random weights ([`Weights::random`]) |
//! | [`nn`] | layers with diffusers numerics: [`nn::Linear`] (PyTorch layout), [`nn::LayerNorm32`] / [`nn::RmsNorm32`] in f32, timestep sinusoids, GELU-tanh, 3D RoPE |
//! | [`samplers`] | [`samplers::FlowMatchEuler`], [`samplers::UniPcFlow`], [`samplers::cfg`]; trait [`samplers::Sampler`] |
//! | [`io`] | [`io::TensorMap`]: read any-dtype safetensors inputs, write outputs atomically |
//! | [`Denoiser`] | the trait every denoiser implements: class, plan dimensions, layout / attention context for a latent size, one call on diffusers-named inputs |
//!
//! # Conventions for model crates (vdit-wan, vdit-hunyuan, vdit-cogvideox)
//!
//! - **Layout**: `src/{lib,config,embeddings,attention,block,transformer}.rs`, one block
//!   family per file. `config.rs` has the serde mirror of diffusers' `config.json`
//!   (every key, diffusers defaults; parsed with [`DiffusersConfig::parse`]) and an
//!   `into_config()` to the runtime config, plus presets for the real checkpoints.
//! - **Construction is the weight map**: each layer has
//!   `fn load(w: &Weights<B>, ...) -> Result<Self>` and names its children with the
//!   diffusers keys (`w.pp("to_out").pp(0)`). The top-level `load` calls
//!   [`Weights::finish`] so unexpected keys are errors. With [`Weights::random`] the same
//!   code gives a random-weight model for benchmarks.
//! - **Dtypes**: the model dtype is a runtime [`burn::tensor::DType`] (f32, bf16, f16).
//!   Parameters diffusers keeps in fp32 (`_keep_in_fp32_modules`) are loaded with
//!   [`Weights::get_f32`] / [`nn::Linear::load_dtype`]; norms always compute in f32.
//! - **Backends**: model code is generic over [`ModelBackend`]; Linear layers go
//!   through [`vdit_ops::LinearBackend::linear`] (cuBLASLt on CUDA).
//! - **Attention**: self-attention goes through `vdit_attention::AttentionContext::
//!   self_attention` with `[batch, heads, tokens, head_dim]`; cross-attention and
//!   anything outside the video sequence uses `burn::tensor::module::attention`.
//! - **Errors**: [`ModelError`] (thiserror). Never panic on bad input.
//! - **Fixtures**: `tools/fixtures_<model>.py` writes `crates/vdit-<model>/tests/fixtures/
//!   <case>/{config.json, weights, inputs.safetensors, outputs.safetensors}`; see
//!   `tools/README.md`.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use vdit_models::{Init, Weights, nn::Linear};
//!
//! let device = Default::default();
//! let w = Weights::<Flex>::random(0, DType::F32, &device)?;
//! let proj = Linear::load(&w.pp("proj"), 8, 4, true)?;
//! let y = proj.forward(burn::tensor::Tensor::<Flex, 2>::ones([3, 8], &device));
//! assert_eq!(y.dims(), [3, 4]);
//! # let _ = Init::Zeros;
//! # Ok::<(), vdit_models::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod config;
mod context;
mod denoiser;
mod error;
pub mod io;
pub mod nn;
pub mod safetensors_file;
pub mod samplers;
mod weights;

pub use config::{DiffusersConfig, ModelClass};
pub use context::attention_context;
pub use denoiser::Denoiser;
pub use error::{ModelError, Result};
pub use weights::{Init, Weights};

/// A Burn backend that runs the denoisers: plan-driven sparse attention
/// ([`vdit_attention::SparseAttentionBackend`]) and the Linear operation
/// ([`vdit_ops::LinearBackend`], cuBLASLt on CUDA) and the fused normalisation /
/// element-wise chains ([`vdit_ops::FusedBackend`], CubeCL kernels on CubeCL backends).
/// Implemented for every backend that implements all three: burn-flex, and the unfused
/// CubeCL wgpu and CUDA backends.
pub trait ModelBackend:
    vdit_attention::SparseAttentionBackend + vdit_ops::LinearBackend + vdit_ops::FusedBackend
{
}

/// Checks that an activation of `dims` (e.g. `[batch, tokens, ffn width]`, the widest
/// tensor of a forward) fits the backend's tensor indexing
/// ([`vdit_ops::LinearBackend::MAX_TENSOR_ELEMS`]: `2^32 - 1` elements on the CubeCL
/// backends). Models call it before any work so that a too-large batch or resolution is a
/// clear [`ModelError::Input`] instead of a failure deep inside a GPU kernel.
pub fn check_tensor_elems<B: ModelBackend>(what: &str, dims: &[usize]) -> Result<()> {
    let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match elems {
        Some(n) if n <= B::MAX_TENSOR_ELEMS => Ok(()),
        _ => Err(ModelError::Input(format!(
            "{what} would be a tensor of {dims:?} = {} elements, more than this backend \
             indexes ({}); lower the batch size, the frame count or the resolution",
            elems.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string()),
            B::MAX_TENSOR_ELEMS
        ))),
    }
}

impl<B> ModelBackend for B where
    B: vdit_attention::SparseAttentionBackend + vdit_ops::LinearBackend + vdit_ops::FusedBackend
{
}

/// Parses a model dtype name: `f32`, `bf16` or `f16`.
pub fn parse_dtype(name: &str) -> Result<burn::tensor::DType> {
    use burn::tensor::DType;
    match name.to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "fp16" => Ok(DType::F16),
        other => Err(ModelError::Config(format!(
            "unknown dtype `{other}` (use f32, bf16 or f16)"
        ))),
    }
}
