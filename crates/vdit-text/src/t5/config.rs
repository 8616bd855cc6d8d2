//! T5 / UMT5 encoder configuration: the transformers `config.json` mirror and the
//! runtime config.

use serde::{Deserialize, Serialize};
use vdit_models::{DiffusersConfig, ModelError, Result};

/// The `architectures` entries this crate loads as an encoder.
pub const ENCODER_ARCHITECTURES: [&str; 2] = ["UMT5EncoderModel", "T5EncoderModel"];

/// A transformers `T5Config` / `UMT5Config` (`config.json`), the keys the encoder uses,
/// with transformers' defaults (`configuration_umt5.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct T5ConfigJson {
    /// `["UMT5EncoderModel"]` for Wan's `text_encoder/`.
    pub architectures: Option<Vec<String>>,
    /// `"umt5"` or `"t5"`; UMT5 has a relative position bias in every layer, T5 only in
    /// the first.
    pub model_type: Option<String>,
    /// Rows of the token embedding; default 250112.
    pub vocab_size: usize,
    /// Hidden size; default 512.
    pub d_model: usize,
    /// Per-head size; default 64.
    pub d_kv: usize,
    /// FFN inner size; default 1024.
    pub d_ff: usize,
    /// Encoder layers; default 8.
    pub num_layers: usize,
    /// Heads; default 6.
    pub num_heads: usize,
    /// Relative position buckets; default 32.
    pub relative_attention_num_buckets: usize,
    /// Largest distance with its own bucket range; default 128.
    pub relative_attention_max_distance: usize,
    /// RMS norm epsilon; default 1e-6.
    pub layer_norm_epsilon: f64,
    /// `"gated-gelu"` (default), `"gated-silu"`, `"relu"`, `"gelu"`, ...
    pub feed_forward_proj: String,
}

impl Default for T5ConfigJson {
    fn default() -> Self {
        T5ConfigJson {
            architectures: None,
            model_type: None,
            vocab_size: 250112,
            d_model: 512,
            d_kv: 64,
            d_ff: 1024,
            num_layers: 8,
            num_heads: 6,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "gated-gelu".into(),
        }
    }
}

/// The FFN activation (transformers `ACT2FN` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: GELU with the tanh approximation.
    GeluTanh,
    /// `gelu`: exact (erf) GELU.
    Gelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

/// The runtime encoder config.
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    /// Embedding rows.
    pub vocab_size: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Per-head size.
    pub d_kv: usize,
    /// FFN inner size.
    pub d_ff: usize,
    /// Layers.
    pub layers: usize,
    /// Heads.
    pub heads: usize,
    /// Relative position buckets.
    pub num_buckets: usize,
    /// Relative position max distance.
    pub max_distance: usize,
    /// RMS norm epsilon.
    pub eps: f64,
    /// Gated FFN (`wi_0`, `wi_1`) or plain (`wi`).
    pub gated: bool,
    /// FFN activation.
    pub activation: T5Activation,
    /// Every layer has its own relative position bias (UMT5) or only the first (T5).
    pub bias_per_layer: bool,
}

impl T5ConfigJson {
    /// Parses a transformers config whose `architectures` is one of
    /// [`ENCODER_ARCHITECTURES`] (or, without `architectures`, whose `model_type` is `t5`
    /// or `umt5`).
    pub fn from_config(config: &DiffusersConfig) -> Result<Self> {
        let parsed: Self = config.parse()?;
        let arch_ok = parsed.architectures.as_ref().map(|archs| {
            archs
                .iter()
                .any(|a| ENCODER_ARCHITECTURES.contains(&a.as_str()))
        });
        let type_ok = matches!(parsed.model_type.as_deref(), Some("t5" | "umt5"));
        match (arch_ok, type_ok) {
            (Some(true), _) | (None, true) => Ok(parsed),
            _ => Err(ModelError::Config(format!(
                "{}: not a T5/UMT5 encoder config (architectures {:?}, model_type {:?}; \
                 expected one of {:?})",
                config.path().display(),
                parsed.architectures.as_deref().unwrap_or_default(),
                parsed.model_type,
                ENCODER_ARCHITECTURES
            ))),
        }
    }

    /// Whether this is UMT5 (`model_type: "umt5"` or a `UMT5*` architecture).
    pub fn is_umt5(&self) -> bool {
        self.model_type.as_deref() == Some("umt5")
            || self
                .architectures
                .as_ref()
                .is_some_and(|a| a.iter().any(|a| a.starts_with("UMT5")))
    }

    /// The runtime config, after checking every value is supported.
    pub fn into_config(self) -> Result<T5Config> {
        let bad = |m: String| Err(ModelError::Config(m));
        // transformers T5Config: "gated-gelu" maps to `gelu_new`, otherwise the part after
        // the last '-' is the ACT2FN name and a "gated-" prefix selects the gated FFN.
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, act) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => {
                return bad(format!(
                    "feed_forward_proj `{}` must be `ACT` or `gated-ACT`",
                    self.feed_forward_proj
                ));
            }
        };
        let activation = match (self.feed_forward_proj.as_str(), act) {
            ("gated-gelu", _) | (_, "gelu_new" | "gelu_pytorch_tanh") => T5Activation::GeluTanh,
            (_, "gelu") => T5Activation::Gelu,
            (_, "relu") => T5Activation::Relu,
            (_, "silu" | "swish") => T5Activation::Silu,
            _ => {
                return bad(format!(
                    "feed_forward_proj `{}`: activation `{act}` is not supported \
                     (gelu, gelu_new, relu, silu)",
                    self.feed_forward_proj
                ));
            }
        };
        if self.d_model == 0
            || self.d_kv == 0
            || self.num_heads == 0
            || self.d_ff == 0
            || self.vocab_size == 0
        {
            return bad("d_model, d_kv, num_heads, d_ff and vocab_size must be positive".into());
        }
        if self.relative_attention_num_buckets < 4 || self.relative_attention_max_distance < 2 {
            return bad(format!(
                "relative_attention_num_buckets must be >= 4 and relative_attention_max_distance \
                 >= 2, got {} and {}",
                self.relative_attention_num_buckets, self.relative_attention_max_distance
            ));
        }
        Ok(T5Config {
            bias_per_layer: self.is_umt5(),
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            d_kv: self.d_kv,
            d_ff: self.d_ff,
            layers: self.num_layers,
            heads: self.num_heads,
            num_buckets: self.relative_attention_num_buckets,
            max_distance: self.relative_attention_max_distance,
            eps: self.layer_norm_epsilon,
            gated,
            activation,
        })
    }
}

impl T5Config {
    /// umT5-XXL, Wan2.1's text encoder (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`,
    /// `text_encoder/config.json`).
    pub fn umt5_xxl() -> Self {
        T5ConfigJson {
            architectures: Some(vec!["UMT5EncoderModel".into()]),
            model_type: Some("umt5".into()),
            vocab_size: 256384,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            ..Default::default()
        }
        .into_config()
        .expect("valid preset")
    }

    /// A tiny UMT5 encoder for tests and the `wan-tiny` pipeline: 2 layers, 4 heads x 8,
    /// width 32, FFN 64, vocabulary `vocab_size`.
    pub fn umt5_tiny(vocab_size: usize) -> Self {
        T5ConfigJson {
            architectures: Some(vec!["UMT5EncoderModel".into()]),
            model_type: Some("umt5".into()),
            vocab_size,
            d_model: 32,
            d_kv: 8,
            d_ff: 64,
            num_layers: 2,
            num_heads: 4,
            relative_attention_num_buckets: 8,
            relative_attention_max_distance: 16,
            ..Default::default()
        }
        .into_config()
        .expect("valid preset")
    }

    /// Inner attention width `heads * d_kv`.
    pub fn inner_dim(&self) -> usize {
        self.heads * self.d_kv
    }
}
