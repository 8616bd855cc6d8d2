//! The Wan2.1 VAE decoder (diffusers `AutoencoderKLWan`, decode path) in Burn.
//!
//! - Checkpoint: `vae/` of `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` (`config.json` +
//!   `diffusion_pytorch_model.safetensors`); encoder weights are skipped.
//! - Upstream: diffusers `models/autoencoders/autoencoder_kl_wan.py`; original
//!   `Wan-Video/Wan2.1` `wan/modules/vae.py`.
//! - Memory: one latent frame is decoded at a time with the causal-convolution frame
//!   cache (see [`layers`]), so activations are bounded by one chunk (4 output frames)
//!   whatever the frame count; large convolutions also run one output frame at a time.
//! - Run: `cargo xtask forward --model-dir VAE_DIR --inputs IN.safetensors` (`latents`).

mod config;
mod decoder;
pub mod layers;

pub use config::{VAE_CLASS_NAME, WanVaeConfig, WanVaeConfigJson};
pub use decoder::{UpBlock, VAE_IGNORED_KEYS, WanVaeDecoder, to_unit_frames};
