//! `AutoencoderKLWan` configuration: the diffusers `config.json` mirror and the runtime
//! decoder config.

use serde::{Deserialize, Serialize};
use vdit_models::{DiffusersConfig, ModelError, Result};

/// The diffusers `_class_name` of the Wan VAE.
pub const VAE_CLASS_NAME: &str = "AutoencoderKLWan";

/// `AutoencoderKLWan`'s `config.json`, key for key, with diffusers' defaults
/// (`autoencoder_kl_wan.py`, `AutoencoderKLWan.__init__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WanVaeConfigJson {
    /// Encoder base channels; default 96.
    pub base_dim: usize,
    /// Decoder base channels (`null` = `base_dim`).
    pub decoder_base_dim: Option<usize>,
    /// Latent channels; default 16.
    pub z_dim: usize,
    /// Channel multipliers per level; default `[1, 2, 4, 4]`.
    pub dim_mult: Vec<usize>,
    /// Residual blocks per level (the decoder has one more); default 2.
    pub num_res_blocks: usize,
    /// Encoder attention scales (unused by the decoder).
    pub attn_scales: Vec<f64>,
    /// Temporal downsampling per encoder level; the decoder upsamples in reverse order.
    /// Default `[false, true, true]`.
    pub temperal_downsample: Vec<bool>,
    /// Dropout (inference ignores it).
    pub dropout: f64,
    /// Per-channel latent mean (pipeline de-normalisation).
    pub latents_mean: Vec<f64>,
    /// Per-channel latent std (pipeline de-normalisation).
    pub latents_std: Vec<f64>,
    /// Wan2.2 residual up/down blocks (unsupported; must be false).
    pub is_residual: bool,
    /// Image channels in; default 3.
    pub in_channels: usize,
    /// Image channels out; default 3.
    pub out_channels: usize,
    /// Wan2.2 patchification (unsupported; must be null).
    pub patch_size: Option<usize>,
}

impl Default for WanVaeConfigJson {
    fn default() -> Self {
        WanVaeConfigJson {
            base_dim: 96,
            decoder_base_dim: None,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: vec![],
            temperal_downsample: vec![false, true, true],
            dropout: 0.0,
            latents_mean: vec![
                -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134,
                -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
            ],
            latents_std: vec![
                2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526,
                2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
            ],
            is_residual: false,
            in_channels: 3,
            out_channels: 3,
            patch_size: None,
        }
    }
}

/// The runtime decoder config.
#[derive(Debug, Clone, PartialEq)]
pub struct WanVaeConfig {
    /// Latent channels.
    pub z_dim: usize,
    /// Decoder base channels.
    pub base_dim: usize,
    /// Channel multipliers per level (encoder order).
    pub dim_mult: Vec<usize>,
    /// Residual blocks per level (the decoder builds `num_res_blocks + 1`).
    pub num_res_blocks: usize,
    /// Temporal upsampling per decoder level (the reversed `temperal_downsample`).
    pub temporal_upsample: Vec<bool>,
    /// Image channels out.
    pub out_channels: usize,
    /// Per-channel latent mean.
    pub latents_mean: Vec<f64>,
    /// Per-channel latent std.
    pub latents_std: Vec<f64>,
}

impl WanVaeConfigJson {
    /// Parses a diffusers config whose `_class_name` is `AutoencoderKLWan` (or absent).
    pub fn from_diffusers(config: &DiffusersConfig) -> Result<Self> {
        match config.class_name() {
            None | Some(VAE_CLASS_NAME) => config.parse(),
            Some(other) => Err(ModelError::Config(format!(
                "{}: _class_name is `{other}`, expected `{VAE_CLASS_NAME}`",
                config.path().display()
            ))),
        }
    }

    /// The runtime config, after checking every value is supported.
    pub fn into_config(self) -> Result<WanVaeConfig> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.is_residual || self.patch_size.is_some() {
            return bad("the Wan2.2 VAE (is_residual / patch_size) is not supported".into());
        }
        let base_dim = self.decoder_base_dim.unwrap_or(self.base_dim);
        if self.dim_mult.is_empty() || self.dim_mult.contains(&0) || base_dim == 0 {
            return bad(format!(
                "dim_mult must be non-empty and positive and the base dim positive, got {:?} x {base_dim}",
                self.dim_mult
            ));
        }
        if self.temperal_downsample.len() + 1 != self.dim_mult.len() {
            return bad(format!(
                "temperal_downsample needs {} entries (one per level but the last), got {}",
                self.dim_mult.len() - 1,
                self.temperal_downsample.len()
            ));
        }
        // Each level but the first gets half its input channels from the previous
        // upsampler (`dim // 2`), so the multiplied dims must stay even.
        if self
            .dim_mult
            .iter()
            .any(|m| !(m * base_dim).is_multiple_of(2))
        {
            return bad(format!(
                "base dim {base_dim} x dim_mult {:?} must give even channel counts",
                self.dim_mult
            ));
        }
        if self.z_dim == 0 || self.out_channels == 0 {
            return bad("z_dim and out_channels must be positive".into());
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return bad(format!(
                "latents_mean / latents_std need z_dim = {} entries, got {} / {}",
                self.z_dim,
                self.latents_mean.len(),
                self.latents_std.len()
            ));
        }
        if self.latents_std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return bad("latents_std entries must be finite and non-zero".into());
        }
        Ok(WanVaeConfig {
            z_dim: self.z_dim,
            base_dim,
            dim_mult: self.dim_mult,
            num_res_blocks: self.num_res_blocks,
            temporal_upsample: self.temperal_downsample.into_iter().rev().collect(),
            out_channels: self.out_channels,
            latents_mean: self.latents_mean,
            latents_std: self.latents_std,
        })
    }
}

impl WanVaeConfig {
    /// Wan2.1's VAE (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, `vae/config.json`): the
    /// diffusers defaults.
    pub fn wan2_1() -> Self {
        WanVaeConfigJson::default()
            .into_config()
            .expect("valid preset")
    }

    /// A tiny VAE for tests and the `wan-tiny` pipeline: base 8 channels, the Wan2.1
    /// level structure (x8 spatial, x4 temporal), 16 latent channels.
    pub fn tiny() -> Self {
        WanVaeConfigJson {
            base_dim: 8,
            dim_mult: vec![1, 2, 2, 2],
            num_res_blocks: 1,
            ..Default::default()
        }
        .into_config()
        .expect("valid preset")
    }

    /// Decoder channels per level: `[top, level 0 out, level 1 out, ...]`
    /// (diffusers `dims = [dim * u for u in [dim_mult[-1]] + dim_mult[::-1]]`).
    pub fn decoder_dims(&self) -> Vec<usize> {
        let mut mult = vec![*self.dim_mult.last().expect("non-empty")];
        mult.extend(self.dim_mult.iter().rev());
        mult.into_iter().map(|m| m * self.base_dim).collect()
    }

    /// Spatial upsampling factor of the decoder (`2^(levels - 1)`).
    pub fn spatial_factor(&self) -> usize {
        1 << (self.dim_mult.len() - 1)
    }

    /// Output frames for `latent_frames` latent frames: the first latent frame gives one
    /// frame, each further one `2^(temporal upsamples)`.
    pub fn output_frames(&self, latent_frames: usize) -> usize {
        let t = 1usize << self.temporal_upsample.iter().filter(|u| **u).count();
        if latent_frames == 0 {
            0
        } else {
            1 + t * (latent_frames - 1)
        }
    }
}
