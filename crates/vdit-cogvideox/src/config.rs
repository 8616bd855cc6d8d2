//! CogVideoX configuration: the diffusers `config.json` mirror and the runtime config.

use serde::{Deserialize, Serialize};
use vdit_models::{DiffusersConfig, ModelClass, ModelError, Result};

/// `CogVideoXTransformer3DModel`'s `config.json`, key for key, with diffusers' defaults
/// (`cogvideox_transformer_3d.py`, `CogVideoXTransformer3DModel.__init__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CogVideoXConfigJson {
    /// Attention heads; default 30.
    pub num_attention_heads: usize,
    /// Head dim; default 64.
    pub attention_head_dim: usize,
    /// Latent channels in; default 16.
    pub in_channels: usize,
    /// Latent channels out (`null` = `in_channels`); default 16.
    pub out_channels: Option<usize>,
    /// Timestep sinusoid `[cos | sin]` order; default true.
    pub flip_sin_to_cos: bool,
    /// Timestep sinusoid `downscale_freq_shift`; default 0.
    pub freq_shift: f64,
    /// Width of the time embedding (`time_embedding` output); default 512.
    pub time_embed_dim: usize,
    /// I2V 1.5 `ofs` embedding width (unsupported; must be null).
    pub ofs_embed_dim: Option<usize>,
    /// Text embedding width (T5-XXL: 4096); default 4096.
    pub text_embed_dim: usize,
    /// Blocks; default 30.
    pub num_layers: usize,
    /// Dropout (ignored at inference); default 0.
    pub dropout: f64,
    /// Bias on `to_q/k/v` and `to_out.0`; default true.
    pub attention_bias: bool,
    /// Sample width in latent pixels (RoPE "slice" grid max = `sample_width / patch_size`);
    /// default 90.
    pub sample_width: usize,
    /// Sample height in latent pixels; default 60.
    pub sample_height: usize,
    /// Sample video frames (only sizes the unused sincos buffer); default 49.
    pub sample_frames: usize,
    /// Spatial patch; default 2.
    pub patch_size: usize,
    /// Temporal patch (`null` = CogVideoX 1.0, unsupported); default null.
    pub patch_size_t: Option<usize>,
    /// VAE temporal compression; default 4.
    pub temporal_compression_ratio: usize,
    /// Text length sizing the (unused with RoPE) sincos buffer; default 226.
    pub max_text_seq_length: usize,
    /// FFN activation (only `"gelu-approximate"`); default `"gelu-approximate"`.
    pub activation_fn: String,
    /// Timestep MLP activation (only `"silu"`); default `"silu"`.
    pub timestep_activation_fn: String,
    /// Affine LayerNorms (only true); default true.
    pub norm_elementwise_affine: bool,
    /// LayerNorm epsilon; default 1e-5.
    pub norm_eps: f64,
    /// Sincos spatial interpolation (1.0 models only); default 1.875.
    pub spatial_interpolation_scale: f64,
    /// Sincos temporal interpolation (1.0 models only); default 1.0.
    pub temporal_interpolation_scale: f64,
    /// 3D RoPE on video Q/K (must be true); default false.
    pub use_rotary_positional_embeddings: bool,
    /// Learned position embeddings (I2V 1.0, unsupported); default false.
    pub use_learned_positional_embeddings: bool,
    /// Patch-embed bias flag (no effect for 1.5: its Linear always has a bias); default true.
    pub patch_bias: bool,
}

impl Default for CogVideoXConfigJson {
    fn default() -> Self {
        CogVideoXConfigJson {
            num_attention_heads: 30,
            attention_head_dim: 64,
            in_channels: 16,
            out_channels: Some(16),
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            time_embed_dim: 512,
            ofs_embed_dim: None,
            text_embed_dim: 4096,
            num_layers: 30,
            dropout: 0.0,
            attention_bias: true,
            sample_width: 90,
            sample_height: 60,
            sample_frames: 49,
            patch_size: 2,
            patch_size_t: None,
            temporal_compression_ratio: 4,
            max_text_seq_length: 226,
            activation_fn: "gelu-approximate".into(),
            timestep_activation_fn: "silu".into(),
            norm_elementwise_affine: true,
            norm_eps: 1e-5,
            spatial_interpolation_scale: 1.875,
            temporal_interpolation_scale: 1.0,
            use_rotary_positional_embeddings: false,
            use_learned_positional_embeddings: false,
            patch_bias: true,
        }
    }
}

impl CogVideoXConfigJson {
    /// Parses a diffusers config (its `_class_name` must be `CogVideoXTransformer3DModel`
    /// or absent).
    pub fn from_diffusers(config: &DiffusersConfig) -> Result<Self> {
        config.expect_class(ModelClass::CogVideoX)?;
        config.parse()
    }

    /// The runtime config, after checking every value is supported.
    ///
    /// # Errors
    /// [`ModelError::Config`] for CogVideoX 1.0 (`patch_size_t = null`), no RoPE, I2V
    /// (`ofs_embed_dim`, learned position embeddings), other activations, non-affine
    /// norms, or a head dim whose RoPE split `d/4 | 3d/8 | 3d/8` is not in even parts.
    pub fn into_config(self) -> Result<CogVideoXConfig> {
        let bad = |m: String| Err(ModelError::Config(m));
        let Some(pt) = self.patch_size_t else {
            return bad(
                "CogVideoX 1.0 (patch_size_t = null, Conv2d patch embedding) is not supported; \
                 only CogVideoX1.5 checkpoints are"
                    .into(),
            );
        };
        if !self.use_rotary_positional_embeddings || self.use_learned_positional_embeddings {
            return bad("only 3D RoPE position embeddings are supported (use_rotary_positional_embeddings = true, no learned embeddings)".into());
        }
        if self.ofs_embed_dim.is_some() {
            return bad("CogVideoX1.5 I2V (ofs_embed_dim) is not supported".into());
        }
        if self.activation_fn != "gelu-approximate" || self.timestep_activation_fn != "silu" {
            return bad(format!(
                "unsupported activations `{}` / `{}` (expected gelu-approximate / silu)",
                self.activation_fn, self.timestep_activation_fn
            ));
        }
        if !self.norm_elementwise_affine {
            return bad("norm_elementwise_affine = false is not supported".into());
        }
        vdit_models::config::check_config_sizes(
            &[
                ("num_attention_heads", self.num_attention_heads),
                ("attention_head_dim", self.attention_head_dim),
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels.unwrap_or(0)),
                ("time_embed_dim", self.time_embed_dim),
                ("ofs_embed_dim", self.ofs_embed_dim.unwrap_or(0)),
                ("text_embed_dim", self.text_embed_dim),
                ("sample_width", self.sample_width),
                ("sample_height", self.sample_height),
                ("sample_frames", self.sample_frames),
                ("patch_size", self.patch_size),
                ("patch_size_t", self.patch_size_t.unwrap_or(0)),
                (
                    "temporal_compression_ratio",
                    self.temporal_compression_ratio,
                ),
                ("max_text_seq_length", self.max_text_seq_length),
            ],
            &[("num_layers", self.num_layers)],
        )?;
        let d = self.attention_head_dim;
        if self.num_attention_heads == 0 {
            return bad("num_attention_heads must be at least 1, got 0".into());
        }
        if self
            .num_attention_heads
            .checked_mul(d)
            .is_none_or(|x| x > vdit_models::config::MAX_CONFIG_DIM)
        {
            return bad(format!(
                "num_attention_heads x attention_head_dim = {} x {d} is above the limit of {}",
                self.num_attention_heads,
                vdit_models::config::MAX_CONFIG_DIM
            ));
        }
        if d == 0 || !d.is_multiple_of(16) {
            return bad(format!(
                "attention_head_dim must be a positive multiple of 16 (3D RoPE split d/4 | 3d/8 | 3d/8 in even parts), got {d}"
            ));
        }
        let p = self.patch_size;
        if p == 0 || pt == 0 || self.num_layers == 0 || self.in_channels == 0 {
            return bad("patch sizes, num_layers and in_channels must be positive".into());
        }
        if self.time_embed_dim == 0 || self.text_embed_dim == 0 {
            return bad("time_embed_dim and text_embed_dim must be positive".into());
        }
        let dim = self.num_attention_heads * d;
        Ok(CogVideoXConfig {
            heads: self.num_attention_heads,
            head_dim: d,
            dim,
            in_channels: self.in_channels,
            out_channels: self.out_channels.unwrap_or(self.in_channels),
            time_embed_dim: self.time_embed_dim,
            text_embed_dim: self.text_embed_dim,
            layers: self.num_layers,
            ffn_dim: 4 * dim,
            attention_bias: self.attention_bias,
            patch_size: p,
            patch_size_t: pt,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            norm_eps: self.norm_eps,
            qk_norm_eps: 1e-6,
            rope_axes: [d / 4, d / 8 * 3, d / 8 * 3],
            rope_theta: 10000.0,
            rope_max_grid: [self.sample_height / p, self.sample_width / p],
            temporal_compression_ratio: self.temporal_compression_ratio,
            max_text_seq_length: self.max_text_seq_length,
        })
    }
}

/// The runtime CogVideoX1.5 config.
#[derive(Debug, Clone, PartialEq)]
pub struct CogVideoXConfig {
    /// Attention heads.
    pub heads: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Hidden size `heads * head_dim` (also the timestep sinusoid width).
    pub dim: usize,
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Time embedding width.
    pub time_embed_dim: usize,
    /// Text embedding width.
    pub text_embed_dim: usize,
    /// Blocks.
    pub layers: usize,
    /// FFN inner width (`4 * dim`).
    pub ffn_dim: usize,
    /// Bias on the attention projections.
    pub attention_bias: bool,
    /// Spatial patch.
    pub patch_size: usize,
    /// Temporal patch.
    pub patch_size_t: usize,
    /// Timestep sinusoid order.
    pub flip_sin_to_cos: bool,
    /// Timestep sinusoid shift.
    pub freq_shift: f64,
    /// LayerNorm epsilon (adaLN norms, `norm_final`, `norm_out`).
    pub norm_eps: f64,
    /// Per-head q/k LayerNorm epsilon (1e-6 in diffusers).
    pub qk_norm_eps: f64,
    /// RoPE split of the head dim over (t, h, w): `[d/4, 3d/8, 3d/8]` (16/24/24 for d=64).
    pub rope_axes: [usize; 3],
    /// RoPE base.
    pub rope_theta: f64,
    /// The pipeline's RoPE "slice" grid maximum `(sample_height/p, sample_width/p)`
    /// (150 x 150 for 1.5-5B). Positions are integers, so this only bounds the grid.
    pub rope_max_grid: [usize; 2],
    /// VAE temporal compression (video frames per latent frame).
    pub temporal_compression_ratio: usize,
    /// Default text length (226 for the real pipeline).
    pub max_text_seq_length: usize,
}

impl CogVideoXConfig {
    /// CogVideoX1.5-5B (`THUDM/CogVideoX1.5-5B`, `transformer/config.json`; diffusers
    /// `scripts/convert_cogvideox_to_diffusers.py` for version "1.5").
    pub fn cogvideox1_5_5b() -> Self {
        Self::preset_json_1_5_5b()
            .into_config()
            .expect("valid preset")
    }

    /// The CogVideoX1.5-5B `config.json` values.
    pub fn preset_json_1_5_5b() -> CogVideoXConfigJson {
        CogVideoXConfigJson {
            num_attention_heads: 48,
            attention_head_dim: 64,
            in_channels: 16,
            out_channels: Some(16),
            time_embed_dim: 512,
            text_embed_dim: 4096,
            num_layers: 42,
            sample_width: 300,
            sample_height: 300,
            sample_frames: 81,
            patch_size: 2,
            patch_size_t: Some(2),
            max_text_seq_length: 226,
            use_rotary_positional_embeddings: true,
            patch_bias: false,
            ..Default::default()
        }
    }

    /// A tiny CogVideoX1.5-shaped config for CPU tests and smoke runs: 2 blocks, 4 heads
    /// x 16 (RoPE split 4/6/6), time embedding 32, text width 32, 16 latent channels,
    /// patch 2x2x2 (the 1.5 patching and frame padding).
    pub fn tiny() -> Self {
        CogVideoXConfigJson {
            num_attention_heads: 4,
            attention_head_dim: 16,
            time_embed_dim: 32,
            text_embed_dim: 32,
            num_layers: 2,
            ..Self::preset_json_1_5_5b()
        }
        .into_config()
        .expect("the tiny config is valid")
    }

    /// A preset by name: `cogvideox1.5-5b`, or `cogvideox-tiny` ([`Self::tiny`]).
    pub fn preset(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "cogvideox1.5-5b" | "cogvideox-1.5-5b" | "cogvideox1.5" | "cogvideox" => {
                Ok(Self::cogvideox1_5_5b())
            }
            "cogvideox-tiny" => Ok(Self::tiny()),
            other => Err(ModelError::Config(format!(
                "unknown CogVideoX preset `{other}` (use cogvideox1.5-5b or cogvideox-tiny)"
            ))),
        }
    }
}
