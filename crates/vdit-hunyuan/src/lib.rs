//! HunyuanVideo text-to-video denoiser (`HunyuanVideoTransformer3DModel`) in Burn.
//!
//! - Model: HunyuanVideo T2V ("13B": 20 dual-stream + 40 single-stream blocks, 2 token
//!   refiner blocks, 24 heads x 128), diffusers format
//!   (`hunyuanvideo-community/HunyuanVideo`, `transformer/`).
//! - Upstream: diffusers `models/transformers/transformer_hunyuan_video.py` (0.42.1);
//!   original `Tencent/HunyuanVideo` `hyvideo/modules/models.py`.
//! - Joint self-attention over `[video | text]` (text **last**, padded text hidden as
//!   keys) runs through [`vdit_attention::AttentionContext`] with a
//!   `VideoLayout::with_text(L, TextPosition::Suffix)` layout: dense, or sparse on the
//!   video part following a plan whose layers are the 20 dual blocks then the 40 single
//!   blocks. The token refiner's text-only attention stays dense.
//! - Exact diffusers numerics, checked by golden fixtures (`tools/fixtures_hunyuan.py`).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use vdit_hunyuan::{HunyuanInputs, HunyuanVideoTransformer3DModel};
//!
//! let device = Default::default();
//! let model =
//!     HunyuanVideoTransformer3DModel::<Flex>::load("transformer".as_ref(), DType::BF16, &device)?;
//! // 720p x 129 frames: latents 33x90x160, 256 text tokens of which 40 are valid.
//! let inputs = HunyuanInputs::random(&model.config, 1, [33, 90, 160], 256, Some(40), &device)?;
//! let ctx = model.attention_context(33, 90, 160, 256, None)?;
//! let velocity = model.forward(inputs, &ctx)?;
//! # Ok::<(), vdit_models::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod attention;
pub mod block;
mod config;
pub mod embeddings;
mod mask;
pub mod pipeline;
pub mod refiner;
pub mod single_block;
mod transformer;

pub use config::{HunyuanConfig, HunyuanConfigJson};
pub use mask::TextMask;
pub use pipeline::{GenerateConfig, HunyuanFlowEuler, PromptEmbeds, denoise};
pub use transformer::{HunyuanInputs, HunyuanVideoTransformer3DModel, IGNORED_KEYS, layout_for};
