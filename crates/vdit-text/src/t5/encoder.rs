//! The T5 / UMT5 encoder stack (transformers `UMT5EncoderModel`, `T5EncoderModel`).

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion, Int, Tensor};
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_models::nn::{Linear, RmsNorm32, to_dtype};
use vdit_models::safetensors_file::SafetensorsFiles;
use vdit_models::{DiffusersConfig, Init, ModelError, Result, Weights};

use super::attention::{T5Attention, additive_key_mask};
use super::config::{T5Activation, T5Config, T5ConfigJson};

/// Checkpoint keys the encoder does not use: the tied copy of the embedding
/// (`encoder.embed_tokens.weight` duplicates `shared.weight`) and decoder / LM-head
/// weights of full T5 checkpoints.
pub const IGNORED_KEYS: [&str; 3] = ["encoder.embed_tokens.weight", "decoder.", "lm_head."];

/// The FFN (`layer.1.DenseReluDense`): gated `wo(act(wi_0 x) * wi_1 x)` or plain
/// `wo(act(wi x))`, no biases.
#[derive(Module, Debug)]
pub struct T5FeedForward<B: Backend> {
    /// `wi_0` (gated) or `wi` (plain): `d_model -> d_ff`.
    pub wi_0: Linear<B>,
    /// `wi_1` (gated only).
    pub wi_1: Option<Linear<B>>,
    /// `d_ff -> d_model`.
    pub wo: Linear<B>,
    /// Activation.
    #[module(skip)]
    pub activation: T5Activation,
}

impl<B: ModelBackend> T5FeedForward<B> {
    fn load(w: &Weights<B>, c: &T5Config) -> Result<Self> {
        let (wi_0, wi_1) = if c.gated {
            (
                Linear::load(&w.pp("wi_0"), c.d_model, c.d_ff, false)?,
                Some(Linear::load(&w.pp("wi_1"), c.d_model, c.d_ff, false)?),
            )
        } else {
            (Linear::load(&w.pp("wi"), c.d_model, c.d_ff, false)?, None)
        };
        Ok(T5FeedForward {
            wi_0,
            wi_1,
            wo: Linear::load(&w.pp("wo"), c.d_ff, c.d_model, false)?,
            activation: c.activation,
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        use burn::tensor::activation;
        let h = self.wi_0.forward(x.clone());
        let h = match self.activation {
            T5Activation::GeluTanh => activation::gelu_approximate(h),
            T5Activation::Gelu => activation::gelu(h),
            T5Activation::Relu => activation::relu(h),
            T5Activation::Silu => activation::silu(h),
        };
        let h = match &self.wi_1 {
            Some(wi_1) => h * wi_1.forward(x),
            None => h,
        };
        self.wo.forward(h)
    }
}

/// One encoder block: `x + attn(norm(x))`, then `x + ffn(norm(x))` (pre-norm, T5 RMS
/// norms without mean subtraction, computed in f32).
#[derive(Module, Debug)]
pub struct T5Block<B: Backend> {
    /// `layer.0.SelfAttention`.
    pub attention: T5Attention<B>,
    /// `layer.0.layer_norm`.
    pub attention_norm: RmsNorm32<B>,
    /// `layer.1.DenseReluDense`.
    pub ffn: T5FeedForward<B>,
    /// `layer.1.layer_norm`.
    pub ffn_norm: RmsNorm32<B>,
}

impl<B: ModelBackend> T5Block<B> {
    fn load(w: &Weights<B>, c: &T5Config, has_bias: bool) -> Result<Self> {
        let l0 = w.pp("layer").pp(0);
        let l1 = w.pp("layer").pp(1);
        Ok(T5Block {
            attention: T5Attention::load(&l0.pp("SelfAttention"), c, has_bias)?,
            attention_norm: RmsNorm32::load(&l0.pp("layer_norm"), c.d_model, c.eps)?,
            ffn: T5FeedForward::load(&l1.pp("DenseReluDense"), c)?,
            ffn_norm: RmsNorm32::load(&l1.pp("layer_norm"), c.d_model, c.eps)?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = x.clone() + self.attention.forward(self.attention_norm.forward(x), bias);
        let x = clamp_half(x);
        let x = x.clone() + self.ffn.forward(self.ffn_norm.forward(x));
        clamp_half(x)
    }
}

/// transformers clamps f16 hidden states to +-(f16::MAX - 1000) after each sub-layer.
fn clamp_half<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    if x.dtype() == DType::F16 {
        let m = 65504.0 - 1000.0;
        x.clamp(-m, m)
    } else {
        x
    }
}

/// The T5 / UMT5 encoder: token embedding (`shared`), blocks (`encoder.block.N`),
/// final RMS norm (`encoder.final_layer_norm`).
#[derive(Module, Debug)]
pub struct T5Encoder<B: Backend> {
    /// Token embedding `[vocab, d_model]` (`shared.weight`).
    pub embedding: Param<Tensor<B, 2>>,
    /// Encoder blocks.
    pub blocks: Vec<T5Block<B>>,
    /// `encoder.final_layer_norm`.
    pub final_norm: RmsNorm32<B>,
    /// The runtime config.
    #[module(skip)]
    pub config: T5Config,
}

impl<B: ModelBackend> T5Encoder<B> {
    /// Loads a transformers encoder folder (`config.json` with `architectures`
    /// `["UMT5EncoderModel"]` or `["T5EncoderModel"]`, `model.safetensors` or shards with
    /// `model.safetensors.index.json`) in `dtype` on `device`.
    pub fn load(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        let config = T5ConfigJson::from_config(&DiffusersConfig::from_model_dir(dir)?)?;
        let config = config.into_config()?;
        let files = SafetensorsFiles::open_model_dir(dir)?;
        Self::from_weights(&config, &Weights::from_files(files, dtype, device)?)
    }

    /// The encoder of `config` with seeded random weights.
    pub fn random(config: &T5Config, seed: u64, dtype: DType, device: &B::Device) -> Result<Self> {
        Self::from_weights(config, &Weights::random(seed, dtype, device)?)
    }

    /// Builds the encoder from `weights` (root prefix) and checks that every checkpoint
    /// key was used (see [`IGNORED_KEYS`]).
    pub fn from_weights(config: &T5Config, weights: &Weights<B>) -> Result<Self> {
        let c = config;
        // `shared.weight` is the canonical name; some exports only keep the tied copy.
        let emb_key = if weights.is_random() || weights.contains("shared.weight") {
            weights.pp("shared")
        } else {
            weights.pp("encoder").pp("embed_tokens")
        };
        let embedding = emb_key.get("weight", [c.vocab_size, c.d_model], Init::Normal(1.0))?;
        let enc = weights.pp("encoder");
        let blocks = (0..c.layers)
            .map(|i| T5Block::load(&enc.pp("block").pp(i), c, c.bias_per_layer || i == 0))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = RmsNorm32::load(&enc.pp("final_layer_norm"), c.d_model, c.eps)?;
        weights.finish(&IGNORED_KEYS)?;
        Ok(T5Encoder {
            embedding: Param::from_tensor(embedding),
            blocks,
            final_norm,
            config: c.clone(),
        })
    }

    /// The model's float dtype.
    pub fn dtype(&self) -> DType {
        self.embedding.val().dtype()
    }

    /// `last_hidden_state` of `input_ids` `[B, L]` with the 0/1 `attention_mask` `[B, L]`
    /// (masked keys get no attention; masked positions still get an output, like
    /// transformers).
    ///
    /// # Errors
    /// [`ModelError::Input`] when the shapes differ, `L` is 0, or an id is outside the
    /// vocabulary.
    ///
    /// # Shapes
    /// `[B, L], [B, L] -> [B, L, d_model]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>> {
        let [b, l] = input_ids.dims();
        if attention_mask.dims() != [b, l] || l == 0 || b == 0 {
            return Err(ModelError::Input(format!(
                "input_ids {:?} and attention_mask {:?} must be the same non-empty [batch, tokens]",
                input_ids.dims(),
                attention_mask.dims()
            )));
        }
        let vocab = self.config.vocab_size as i64;
        let (lo, hi): (i64, i64) = (
            input_ids.clone().min().into_scalar().elem(),
            input_ids.clone().max().into_scalar().elem(),
        );
        if lo < 0 || hi >= vocab {
            return Err(ModelError::Input(format!(
                "input_ids range {lo}..={hi} is outside the vocabulary 0..{vocab} \
                 (tokenizer and encoder do not match?)"
            )));
        }
        let x = self
            .embedding
            .val()
            .select(0, input_ids.reshape([b * l]))
            .reshape([b, l, self.config.d_model]);
        let mask = additive_key_mask(attention_mask);
        let mut bias: Option<Tensor<B, 4>> = None;
        let mut x = x;
        for block in &self.blocks {
            // UMT5: each layer's own table; T5: the first layer's, reused.
            if let Some(pb) = block.attention.position_bias(l) {
                bias = Some(pb + mask.clone());
            }
            let layer_bias = bias
                .clone()
                .unwrap_or_else(|| mask.clone().expand([b, 1, l, l]));
            x = block.forward(x, layer_bias);
        }
        Ok(self.final_norm.forward(x))
    }

    /// `forward` on an inputs file's `input_ids` and `attention_mask` (all ones when
    /// absent), for `cargo xtask forward`.
    pub fn forward_inputs(&self, inputs: &TensorMap, device: &B::Device) -> Result<Tensor<B, 3>> {
        let ids = inputs.int::<B, 2>("input_ids", device)?;
        let mask = if inputs.get("attention_mask").is_some() {
            inputs.int::<B, 2>("attention_mask", device)?
        } else {
            Tensor::ones(ids.dims(), device)
        };
        let out = self.forward(ids, mask)?;
        Ok(to_dtype(out, self.dtype()))
    }
}
