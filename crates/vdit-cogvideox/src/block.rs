//! `CogVideoXBlock`: expert adaLN (`CogVideoXLayerNormZero`), joint attention, joint FFN.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::nn::{FeedForward, FfActivation, LayerNorm32, Linear, silu};
use vdit_models::{Result, Weights};
use vdit_ops::ModMath;

use crate::CogVideoXConfig;
use crate::attention::{CogVideoXAttention, RopeTables};

/// diffusers `CogVideoXLayerNormZero`: `linear(SiLU(emb))` gives six `[B, D]` chunks
/// (shift, scale, gate, enc_shift, enc_scale, enc_gate); one affine LayerNorm is applied
/// to both streams, each with its own ("expert") shift and scale.
#[derive(Module, Debug)]
pub struct LayerNormZero<B: Backend> {
    /// `linear`: `time_embed_dim -> 6D`.
    pub linear: Linear<B>,
    /// `norm`: affine LayerNorm over `D`.
    pub norm: LayerNorm32<B>,
}

/// The output of [`LayerNormZero::forward`].
#[derive(Debug, Clone)]
pub struct Modulated<B: Backend> {
    /// Normalised, modulated video `[B, N, D]`.
    pub video: Tensor<B, 3>,
    /// Normalised, modulated text `[B, L, D]`.
    pub text: Tensor<B, 3>,
    /// Video gate `[B, 1, D]`.
    pub gate: Tensor<B, 3>,
    /// Text gate `[B, 1, D]`.
    pub enc_gate: Tensor<B, 3>,
}

impl<B: ModelBackend> LayerNormZero<B> {
    /// Loads `norm1` or `norm2` (pass `w.pp("norm1")`).
    pub fn load(w: &Weights<B>, c: &CogVideoXConfig) -> Result<Self> {
        Ok(LayerNormZero {
            linear: Linear::load(&w.pp("linear"), c.time_embed_dim, 6 * c.dim, true)?,
            norm: LayerNorm32::load(&w.pp("norm"), c.dim, c.norm_eps, true)?,
        })
    }

    /// # Shapes
    /// `video` `[B, N, D]`, `text` `[B, L, D]`, `emb` `[B, E]`.
    pub fn forward(
        &self,
        video: Tensor<B, 3>,
        text: Tensor<B, 3>,
        emb: Tensor<B, 2>,
    ) -> Modulated<B> {
        let m = self.linear.forward(silu(emb));
        let [b, six_d] = m.dims();
        let d = six_d / 6;
        let m = m.reshape([b, 6, d]);
        let part = |i: usize| -> Tensor<B, 3> { m.clone().narrow(1, i, 1) };
        let (shift, scale, gate) = (part(0), part(1), part(2));
        let (e_shift, e_scale, e_gate) = (part(3), part(4), part(5));
        // One fused launch per stream on CubeCL backends; the modulation is in the model
        // dtype like diffusers.
        Modulated {
            video: self.norm.forward_adaln(video, &shift, &scale),
            text: self.norm.forward_adaln(text, &e_shift, &e_scale),
            gate,
            enc_gate: e_gate,
        }
    }
}

/// One `transformer_blocks.{i}`.
#[derive(Module, Debug)]
pub struct CogVideoXBlock<B: Backend> {
    /// `norm1`.
    pub norm1: LayerNormZero<B>,
    /// `attn1`.
    pub attn1: CogVideoXAttention<B>,
    /// `norm2`.
    pub norm2: LayerNormZero<B>,
    /// `ff` (GELU-tanh, inner `4D`), shared by text and video.
    pub ff: FeedForward<B>,
}

impl<B: ModelBackend> CogVideoXBlock<B> {
    /// Loads `transformer_blocks.{i}` (pass `w.pp("transformer_blocks").pp(i)`).
    pub fn load(w: &Weights<B>, c: &CogVideoXConfig) -> Result<Self> {
        Ok(CogVideoXBlock {
            norm1: LayerNormZero::load(&w.pp("norm1"), c)?,
            attn1: CogVideoXAttention::load(&w.pp("attn1"), c)?,
            norm2: LayerNormZero::load(&w.pp("norm2"), c)?,
            ff: FeedForward::load(&w.pp("ff"), c.dim, c.ffn_dim, c.dim, FfActivation::GeluTanh)?,
        })
    }

    /// Returns the updated `(video, text)`.
    ///
    /// # Shapes
    /// `video` `[B, N, D]`, `text` `[B, L, D]`, `emb` `[B, E]`.
    pub fn forward(
        &self,
        video: Tensor<B, 3>,
        text: Tensor<B, 3>,
        emb: Tensor<B, 2>,
        rope_tables: &RopeTables<B>,
        ctx: &AttentionContext,
        layer: usize,
    ) -> Result<(Tensor<B, 3>, Tensor<B, 3>)>
    where
        B: ModelBackend,
    {
        let m = self.norm1.forward(video.clone(), text.clone(), emb.clone());
        let (attn_t, attn_v) = self
            .attn1
            .forward(m.text, m.video, rope_tables, ctx, layer)?;
        // `x + y * gate` in the model dtype (diffusers' `hidden_states + gate *
        // attn_output`: the same products), fused on CubeCL backends.
        let video = B::gated_residual(video, attn_v, &m.gate, ModMath::OutDtype);
        let text = B::gated_residual(text, attn_t, &m.enc_gate, ModMath::OutDtype);

        let m = self.norm2.forward(video.clone(), text.clone(), emb);
        let l = text.dims()[1];
        let ff = self.ff.forward(Tensor::cat(vec![m.text, m.video], 1));
        let [b, n, d] = ff.dims();
        let ff_video = ff.clone().slice([0..b, l..n, 0..d]);
        let video = B::gated_residual(video, ff_video, &m.gate, ModMath::OutDtype);
        let ff_text = ff.slice([0..b, 0..l, 0..d]);
        let text = B::gated_residual(text, ff_text, &m.enc_gate, ModMath::OutDtype);
        Ok((video, text))
    }
}
