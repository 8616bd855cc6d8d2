//! Wan2.1 text-to-video denoiser (`WanTransformer3DModel`) in Burn.
//!
//! - Model: Wan2.1-T2V 1.3B / 14B, diffusers format (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`,
//!   `Wan-AI/Wan2.1-T2V-14B-Diffusers`, `transformer/`).
//! - Upstream: diffusers `models/transformers/transformer_wan.py`;
//!   original `Wan-Video/Wan2.1` `wan/modules/model.py`.
//! - Self-attention (video tokens only, no text) runs through
//!   [`vdit_attention::AttentionContext`] (dense, or sparse following a plan);
//!   cross-attention to the text stays dense.
//! - Run: `cargo xtask forward --model-dir DIR --inputs IN.safetensors --out OUT.safetensors`.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use vdit_attention::AttentionContext;
//! use vdit_wan::WanTransformer3DModel;
//!
//! let device = Default::default();
//! let model = WanTransformer3DModel::<Flex>::load("transformer".as_ref(), DType::F32, &device)?;
//! let ctx = AttentionContext::dense(model.layout(21, 60, 104)?);
//! # Ok::<(), vdit_models::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod attention;
pub mod block;
mod config;
pub mod embeddings;
pub mod pipeline;
mod transformer;
pub mod vae;

pub use config::{WanConfig, WanConfigJson};
pub use transformer::{IGNORED_KEYS, WanTransformer3DModel, layout_for};
