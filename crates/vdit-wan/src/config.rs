//! Wan configuration: the diffusers `config.json` mirror and the runtime config.

use serde::{Deserialize, Serialize};
use vdit_models::{DiffusersConfig, ModelClass, ModelError, Result};

/// `WanTransformer3DModel`'s `config.json`, key for key, with diffusers' defaults
/// (`transformer_wan.py`, `WanTransformer3DModel.__init__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WanConfigJson {
    /// `(t, h, w)` patch size; default `(1, 2, 2)`.
    pub patch_size: Vec<usize>,
    /// Attention heads; default 40.
    pub num_attention_heads: usize,
    /// Head dim; default 128.
    pub attention_head_dim: usize,
    /// Latent channels in; default 16.
    pub in_channels: usize,
    /// Latent channels out (`null` = `in_channels`); default 16.
    pub out_channels: Option<usize>,
    /// Text embedding width; default 4096.
    pub text_dim: usize,
    /// Timestep sinusoid width; default 256.
    pub freq_dim: usize,
    /// FFN inner width; default 13824.
    pub ffn_dim: usize,
    /// Blocks; default 40.
    pub num_layers: usize,
    /// Affine LayerNorm before cross-attention; default true.
    pub cross_attn_norm: bool,
    /// QK norm kind (diffusers always builds RMSNorm across heads); default
    /// `"rms_norm_across_heads"`.
    pub qk_norm: Option<String>,
    /// Norm epsilon; default 1e-6.
    pub eps: f64,
    /// I2V image embedding width (unsupported; must be null).
    pub image_dim: Option<usize>,
    /// I2V added K/V projection width (unsupported; must be null).
    pub added_kv_proj_dim: Option<usize>,
    /// RoPE table length per axis; default 1024.
    pub rope_max_seq_len: usize,
    /// I2V position embedding length (unsupported; must be null).
    pub pos_embed_seq_len: Option<usize>,
}

impl Default for WanConfigJson {
    fn default() -> Self {
        WanConfigJson {
            patch_size: vec![1, 2, 2],
            num_attention_heads: 40,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: Some(16),
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 13824,
            num_layers: 40,
            cross_attn_norm: true,
            qk_norm: Some("rms_norm_across_heads".into()),
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
            pos_embed_seq_len: None,
        }
    }
}

impl WanConfigJson {
    /// Parses a diffusers config (its `_class_name` must be `WanTransformer3DModel` or
    /// absent).
    pub fn from_diffusers(config: &DiffusersConfig) -> Result<Self> {
        config.expect_class(ModelClass::Wan)?;
        config.parse()
    }

    /// The runtime config, after checking every value is supported.
    pub fn into_config(self) -> Result<WanConfig> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.image_dim.is_some()
            || self.added_kv_proj_dim.is_some()
            || self.pos_embed_seq_len.is_some()
        {
            return bad(
                "Wan I2V (image_dim / added_kv_proj_dim / pos_embed_seq_len) is not supported"
                    .into(),
            );
        }
        let [pt, ph, pw] = match self.patch_size.as_slice() {
            &[a, b, c] if a > 0 && b > 0 && c > 0 => [a, b, c],
            other => {
                return bad(format!(
                    "patch_size must be 3 positive integers, got {other:?}"
                ));
            }
        };
        vdit_models::config::check_config_sizes(
            &[
                ("patch_size", pt.max(ph).max(pw)),
                ("num_attention_heads", self.num_attention_heads),
                ("attention_head_dim", self.attention_head_dim),
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels.unwrap_or(0)),
                ("text_dim", self.text_dim),
                ("freq_dim", self.freq_dim),
                ("ffn_dim", self.ffn_dim),
                ("rope_max_seq_len", self.rope_max_seq_len),
            ],
            &[("num_layers", self.num_layers)],
        )?;
        let d = self.attention_head_dim;
        if self.num_attention_heads == 0 {
            return bad("num_attention_heads must be at least 1, got 0".into());
        }
        if d < 6 || !d.is_multiple_of(2) {
            return bad(format!(
                "attention_head_dim must be even and >= 6 (3D RoPE), got {d}"
            ));
        }
        if self
            .num_attention_heads
            .checked_mul(d)
            .is_none_or(|x| x > 1 << 20)
        {
            return bad(format!(
                "num_attention_heads x attention_head_dim = {} x {d} is beyond any model (at most 2^20)",
                self.num_attention_heads
            ));
        }
        if self.num_layers == 0 || self.ffn_dim == 0 || self.freq_dim < 2 || self.in_channels == 0 {
            return bad(
                "num_layers, ffn_dim, in_channels must be positive and freq_dim >= 2".into(),
            );
        }
        let h_dim = 2 * (d / 6);
        let t_dim = d - 2 * h_dim;
        Ok(WanConfig {
            patch_size: [pt, ph, pw],
            heads: self.num_attention_heads,
            head_dim: d,
            dim: self.num_attention_heads * d,
            in_channels: self.in_channels,
            out_channels: self.out_channels.unwrap_or(self.in_channels),
            text_dim: self.text_dim,
            freq_dim: self.freq_dim,
            ffn_dim: self.ffn_dim,
            layers: self.num_layers,
            cross_attn_norm: self.cross_attn_norm,
            eps: self.eps,
            rope_axes: [t_dim, h_dim, h_dim],
            rope_theta: 10000.0,
        })
    }
}

/// The runtime Wan config.
#[derive(Debug, Clone, PartialEq)]
pub struct WanConfig {
    /// `(t, h, w)` patch size.
    pub patch_size: [usize; 3],
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
    /// Text embedding width.
    pub text_dim: usize,
    /// Timestep sinusoid width.
    pub freq_dim: usize,
    /// FFN inner width.
    pub ffn_dim: usize,
    /// Blocks.
    pub layers: usize,
    /// Affine LayerNorm (`norm2`) before cross-attention.
    pub cross_attn_norm: bool,
    /// Norm epsilon.
    pub eps: f64,
    /// RoPE split of the head dim over (t, h, w): `[d - 2*2*(d/6), 2*(d/6), 2*(d/6)]`
    /// (44/42/42 for d = 128).
    pub rope_axes: [usize; 3],
    /// RoPE base.
    pub rope_theta: f64,
}

impl WanConfig {
    /// Wan2.1-T2V-1.3B (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, `transformer/config.json`;
    /// diffusers `scripts/convert_wan_to_diffusers.py` "Wan-T2V-1.3B").
    pub fn wan2_1_t2v_1_3b() -> Self {
        Self::preset_json_1_3b()
            .into_config()
            .expect("valid preset")
    }

    /// Wan2.1-T2V-14B (`Wan-AI/Wan2.1-T2V-14B-Diffusers`).
    pub fn wan2_1_t2v_14b() -> Self {
        Self::preset_json_14b().into_config().expect("valid preset")
    }

    /// The 1.3B `config.json` values.
    pub fn preset_json_1_3b() -> WanConfigJson {
        WanConfigJson {
            num_attention_heads: 12,
            ffn_dim: 8960,
            num_layers: 30,
            ..Default::default()
        }
    }

    /// The 14B `config.json` values.
    pub fn preset_json_14b() -> WanConfigJson {
        WanConfigJson {
            num_attention_heads: 40,
            ffn_dim: 13824,
            num_layers: 40,
            ..Default::default()
        }
    }

    /// A tiny Wan2.1-shaped config for CPU tests, examples and smoke runs (preset
    /// `wan-tiny`): 2 layers, 4 heads x 32, text width 64, FFN 256, 16 latent channels,
    /// patch 1x2x2.
    pub fn tiny() -> Self {
        WanConfigJson {
            num_attention_heads: 4,
            attention_head_dim: 32,
            text_dim: 64,
            ffn_dim: 256,
            num_layers: 2,
            ..Default::default()
        }
        .into_config()
        .expect("the tiny config is valid")
    }

    /// A preset by name: `wan2.1-t2v-1.3b`, `wan2.1-t2v-14b` or `wan-tiny`.
    pub fn preset(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "wan2.1-t2v-1.3b" | "wan-1.3b" | "1.3b" => Ok(Self::wan2_1_t2v_1_3b()),
            "wan2.1-t2v-14b" | "wan-14b" | "14b" => Ok(Self::wan2_1_t2v_14b()),
            "wan-tiny" => Ok(Self::tiny()),
            other => Err(ModelError::Config(format!(
                "unknown Wan preset `{other}` (use wan2.1-t2v-1.3b, wan2.1-t2v-14b or wan-tiny)"
            ))),
        }
    }
}
