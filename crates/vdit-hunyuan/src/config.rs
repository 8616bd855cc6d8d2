//! HunyuanVideo configuration: the diffusers `config.json` mirror and the runtime config.

use serde::{Deserialize, Serialize};
use vdit_models::{DiffusersConfig, ModelClass, ModelError, Result};

/// `HunyuanVideoTransformer3DModel`'s `config.json`, key for key, with diffusers'
/// defaults (`transformer_hunyuan_video.py`, `HunyuanVideoTransformer3DModel.__init__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HunyuanConfigJson {
    /// Latent channels in; default 16.
    pub in_channels: usize,
    /// Latent channels out (`null` = `in_channels`); default 16.
    pub out_channels: Option<usize>,
    /// Attention heads; default 24.
    pub num_attention_heads: usize,
    /// Head dim; default 128.
    pub attention_head_dim: usize,
    /// Dual-stream blocks; default 20.
    pub num_layers: usize,
    /// Single-stream blocks; default 40.
    pub num_single_layers: usize,
    /// Token-refiner blocks; default 2.
    pub num_refiner_layers: usize,
    /// FFN width ratio of the dual/single blocks (the refiner always uses 4.0, as
    /// diffusers does not pass it on); default 4.0.
    pub mlp_ratio: f64,
    /// Spatial patch size; default 2.
    pub patch_size: usize,
    /// Temporal patch size; default 1.
    pub patch_size_t: usize,
    /// QK norm (only `"rms_norm"` is supported); default `"rms_norm"`.
    pub qk_norm: String,
    /// Guidance (CFG-distilled) embedding; default true.
    pub guidance_embeds: bool,
    /// Text-encoder hidden width; default 4096.
    pub text_embed_dim: usize,
    /// Pooled (CLIP) projection width; default 768.
    pub pooled_projection_dim: usize,
    /// RoPE base; default 256.
    pub rope_theta: f64,
    /// RoPE split of the head dim over (t, h, w); default `(16, 56, 56)`.
    pub rope_axes_dim: Vec<usize>,
    /// I2V conditioning (`latent_concat` / `token_replace`; unsupported, must be null).
    pub image_condition_type: Option<String>,
}

impl Default for HunyuanConfigJson {
    fn default() -> Self {
        HunyuanConfigJson {
            in_channels: 16,
            out_channels: Some(16),
            num_attention_heads: 24,
            attention_head_dim: 128,
            num_layers: 20,
            num_single_layers: 40,
            num_refiner_layers: 2,
            mlp_ratio: 4.0,
            patch_size: 2,
            patch_size_t: 1,
            qk_norm: "rms_norm".into(),
            guidance_embeds: true,
            text_embed_dim: 4096,
            pooled_projection_dim: 768,
            rope_theta: 256.0,
            rope_axes_dim: vec![16, 56, 56],
            image_condition_type: None,
        }
    }
}

impl HunyuanConfigJson {
    /// Parses a diffusers config (its `_class_name` must be
    /// `HunyuanVideoTransformer3DModel` or absent).
    pub fn from_diffusers(config: &DiffusersConfig) -> Result<Self> {
        config.expect_class(ModelClass::HunyuanVideo)?;
        config.parse()
    }

    /// The runtime config, after checking every value is supported.
    pub fn into_config(self) -> Result<HunyuanConfig> {
        let bad = |m: String| Err(ModelError::Config(m));
        if let Some(t) = &self.image_condition_type {
            return bad(format!(
                "image_condition_type `{t}` (HunyuanVideo I2V) is not supported; only text-to-video (null)"
            ));
        }
        if self.qk_norm != "rms_norm" {
            return bad(format!(
                "qk_norm `{}` is not supported (only \"rms_norm\")",
                self.qk_norm
            ));
        }
        vdit_models::config::check_config_sizes(
            &[
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels.unwrap_or(0)),
                ("num_attention_heads", self.num_attention_heads),
                ("attention_head_dim", self.attention_head_dim),
                ("patch_size", self.patch_size),
                ("patch_size_t", self.patch_size_t),
                ("text_embed_dim", self.text_embed_dim),
                ("pooled_projection_dim", self.pooled_projection_dim),
            ],
            &[
                ("num_layers", self.num_layers),
                ("num_single_layers", self.num_single_layers),
                ("num_refiner_layers", self.num_refiner_layers),
            ],
        )?;
        let (heads, d) = (self.num_attention_heads, self.attention_head_dim);
        if heads == 0 {
            return bad("num_attention_heads must be at least 1, got 0".into());
        }
        if d == 0 {
            return bad("attention_head_dim must be at least 1, got 0".into());
        }
        if heads
            .checked_mul(d)
            .is_none_or(|x| x > vdit_models::config::MAX_CONFIG_DIM)
        {
            return bad(format!(
                "num_attention_heads x attention_head_dim = {heads} x {d} is above the limit of {}",
                vdit_models::config::MAX_CONFIG_DIM
            ));
        }
        let axes = match self.rope_axes_dim.as_slice() {
            &[a, b, c] if [a, b, c].iter().all(|x| *x > 0 && x % 2 == 0) => [a, b, c],
            other => {
                return bad(format!(
                    "rope_axes_dim must be 3 positive even integers, got {other:?}"
                ));
            }
        };
        if axes.iter().sum::<usize>() != d {
            return bad(format!(
                "rope_axes_dim {axes:?} must sum to attention_head_dim {d}"
            ));
        }
        if self.patch_size == 0 || self.patch_size_t == 0 {
            return bad(format!(
                "patch_size ({}) and patch_size_t ({}) must be positive",
                self.patch_size, self.patch_size_t
            ));
        }
        if self.in_channels == 0
            || self.text_embed_dim == 0
            || self.pooled_projection_dim == 0
            || self.num_refiner_layers == 0 && self.num_layers + self.num_single_layers == 0
        {
            return bad(
                "in_channels, text_embed_dim, pooled_projection_dim must be positive and the model needs blocks"
                    .into(),
            );
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= 64.0) {
            return bad(format!(
                "mlp_ratio must be in (0, 64], got {}",
                self.mlp_ratio
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!(
                "rope_theta must be positive, got {}",
                self.rope_theta
            ));
        }
        let dim = heads * d;
        // Python `int(hidden_size * mlp_ratio)` truncates.
        let mlp_dim = (dim as f64 * self.mlp_ratio) as usize;
        if mlp_dim == 0 {
            return bad(format!("mlp_ratio {} gives an empty FFN", self.mlp_ratio));
        }
        Ok(HunyuanConfig {
            heads,
            head_dim: d,
            dim,
            in_channels: self.in_channels,
            out_channels: self.out_channels.unwrap_or(self.in_channels),
            layers: self.num_layers,
            single_layers: self.num_single_layers,
            refiner_layers: self.num_refiner_layers,
            mlp_dim,
            refiner_mlp_dim: dim * 4,
            patch_size: [self.patch_size_t, self.patch_size, self.patch_size],
            guidance_embeds: self.guidance_embeds,
            text_dim: self.text_embed_dim,
            pooled_dim: self.pooled_projection_dim,
            rope_theta: self.rope_theta,
            rope_axes: axes,
            eps: 1e-6,
            freq_dim: 256,
        })
    }
}

/// The runtime HunyuanVideo config.
#[derive(Debug, Clone, PartialEq)]
pub struct HunyuanConfig {
    /// Attention heads.
    pub heads: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Hidden size `heads * head_dim`.
    pub dim: usize,
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Dual-stream blocks (`transformer_blocks`).
    pub layers: usize,
    /// Single-stream blocks (`single_transformer_blocks`).
    pub single_layers: usize,
    /// Token-refiner blocks (`context_embedder.token_refiner.refiner_blocks`).
    pub refiner_layers: usize,
    /// FFN width of the dual/single blocks (`int(dim * mlp_ratio)`).
    pub mlp_dim: usize,
    /// FFN width of the refiner blocks (`4 * dim`).
    pub refiner_mlp_dim: usize,
    /// `(t, h, w)` patch size.
    pub patch_size: [usize; 3],
    /// Whether the guidance embedder exists (then `guidance` is a required input).
    pub guidance_embeds: bool,
    /// Text-encoder hidden width.
    pub text_dim: usize,
    /// Pooled projection width.
    pub pooled_dim: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE split of the head dim over (t, h, w).
    pub rope_axes: [usize; 3],
    /// Norm epsilon (fixed 1e-6 in diffusers).
    pub eps: f64,
    /// Timestep sinusoid width (fixed 256).
    pub freq_dim: usize,
}

impl HunyuanConfig {
    /// HunyuanVideo T2V (`hunyuanvideo-community/HunyuanVideo`, `transformer/config.json`;
    /// diffusers `scripts/convert_hunyuan_video_to_diffusers.py` "HYVideo-T/2-cfgdistill",
    /// which equals the class defaults).
    pub fn hunyuan_video_t2v() -> Self {
        HunyuanConfigJson::default()
            .into_config()
            .expect("the default config is valid")
    }

    /// A tiny HunyuanVideo-shaped config for CPU tests and smoke runs: 2 dual-stream + 2
    /// single-stream blocks, 1 refiner block, 4 heads x 16 (RoPE split 4/6/6), text width
    /// 32, pooled width 16, 16 latent channels, patch 1x2x2, guidance embedding on.
    pub fn tiny() -> Self {
        HunyuanConfigJson {
            num_attention_heads: 4,
            attention_head_dim: 16,
            num_layers: 2,
            num_single_layers: 2,
            num_refiner_layers: 1,
            text_embed_dim: 32,
            pooled_projection_dim: 16,
            rope_axes_dim: vec![4, 6, 6],
            ..Default::default()
        }
        .into_config()
        .expect("the tiny config is valid")
    }

    /// A preset by name: `hunyuan-video` (aliases `hunyuanvideo`, `hunyuan-video-t2v`,
    /// `hunyuan`), or `hunyuan-tiny` ([`Self::tiny`]).
    pub fn preset(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "hunyuan-video" | "hunyuanvideo" | "hunyuan-video-t2v" | "hunyuan" => {
                Ok(Self::hunyuan_video_t2v())
            }
            "hunyuan-tiny" => Ok(Self::tiny()),
            other => Err(ModelError::Config(format!(
                "unknown HunyuanVideo preset `{other}` (use hunyuan-video or hunyuan-tiny)"
            ))),
        }
    }

    /// Self-attention layers a plan covers: dual-stream blocks first (`0..layers`), then
    /// single-stream blocks (`layers..layers + single_layers`).
    pub fn attention_layers(&self) -> usize {
        self.layers + self.single_layers
    }
}
