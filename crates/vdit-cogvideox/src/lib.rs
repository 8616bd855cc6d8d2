//! CogVideoX1.5 text-to-video denoiser (`CogVideoXTransformer3DModel`) in Burn.
//!
//! - Model: CogVideoX1.5-5B, diffusers format (`THUDM/CogVideoX1.5-5B`, `transformer/`);
//!   preset [`CogVideoXConfig::cogvideox1_5_5b`].
//! - Upstream: diffusers `models/transformers/cogvideox_transformer_3d.py`,
//!   `models/embeddings.py` (`CogVideoXPatchEmbed`, `get_3d_rotary_pos_embed`),
//!   `pipelines/cogvideo/pipeline_cogvideox.py`.
//! - One joint self-attention over `[text (226); video]` per block with shared QKV,
//!   through [`vdit_attention::AttentionContext`] with a text-prefix
//!   [`vdit_patterns::VideoLayout`] (dense, or sparse following a plan). RoPE is computed
//!   inside the model from the latent shape, as the pipeline does.
//! - [`pipeline`]: the denoising loop with CFG (static or dynamic), odd-latent-frame
//!   padding, and the samplers `vdit_models::samplers::{CogVideoXDdim, CogVideoXDpm}`.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use vdit_cogvideox::CogVideoXTransformer3DModel;
//!
//! let device = Default::default();
//! let model =
//!     CogVideoXTransformer3DModel::<Flex>::load("transformer".as_ref(), DType::F32, &device)?;
//! // 81 frames at 768x1360: 22 (padded) latent frames of 96x170, 226 text tokens.
//! let ctx = model.attention_context(22, 96, 170, 226, None)?;
//! # Ok::<(), vdit_models::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod attention;
pub mod block;
mod config;
pub mod embeddings;
pub mod pipeline;
mod transformer;

pub use config::{CogVideoXConfig, CogVideoXConfigJson};
pub use transformer::{CogVideoXTransformer3DModel, IGNORED_KEYS, layout_for};
