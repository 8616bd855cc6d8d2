//! Joint text + video self-attention (`attn1`; diffusers `Attention` with
//! `CogVideoXAttnProcessor2_0`): shared QKV over `[text; video]`, per-head LayerNorm on
//! q and k, RoPE on the video part only, no mask.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::nn::{LayerNorm32, Linear};
use vdit_models::{Result, Weights};
use vdit_ops::{QkNorm, Rope};

use crate::CogVideoXConfig;

/// RoPE tables of the video tokens: `(cos, sin)` `[video tokens, head_dim/2]`, f32.
pub use vdit_models::nn::rope::RopeTables;

/// `attn1` of a block.
#[derive(Module, Debug)]
pub struct CogVideoXAttention<B: Backend> {
    /// `to_q`.
    pub to_q: Linear<B>,
    /// `to_k`.
    pub to_k: Linear<B>,
    /// `to_v`.
    pub to_v: Linear<B>,
    /// `to_out.0`.
    pub to_out: Linear<B>,
    /// `norm_q`: LayerNorm over the head dim (affine, eps 1e-6).
    pub norm_q: LayerNorm32<B>,
    /// `norm_k`.
    pub norm_k: LayerNorm32<B>,
    /// Heads.
    pub heads: usize,
}

impl<B: ModelBackend> CogVideoXAttention<B> {
    /// Loads `attn1` (pass `w.pp("attn1")`).
    pub fn load(w: &Weights<B>, c: &CogVideoXConfig) -> Result<Self> {
        let d = c.dim;
        let bias = c.attention_bias;
        Ok(CogVideoXAttention {
            to_q: Linear::load(&w.pp("to_q"), d, d, bias)?,
            to_k: Linear::load(&w.pp("to_k"), d, d, bias)?,
            to_v: Linear::load(&w.pp("to_v"), d, d, bias)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), d, d, true)?,
            norm_q: LayerNorm32::load(&w.pp("norm_q"), c.head_dim, c.qk_norm_eps, true)?,
            norm_k: LayerNorm32::load(&w.pp("norm_k"), c.head_dim, c.qk_norm_eps, true)?,
            heads: c.heads,
        })
    }

    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, d] = x.dims();
        x.reshape([b, n, self.heads, d / self.heads])
            .swap_dims(1, 2)
    }

    /// Per-head affine LayerNorm (f32, cast back), head split and RoPE on the video
    /// tokens `text..`: one launch of [`vdit_ops::FusedBackend::qk_norm_rope`] on CubeCL
    /// backends ([`QkNorm::LayerHead`], [`Rope::start`] = the text length).
    ///
    /// # Shapes
    /// `x` `[B, text + video, D]` -> `[B, heads, text + video, d]`.
    fn norm_rope(
        &self,
        x: Tensor<B, 3>,
        norm: &LayerNorm32<B>,
        text: usize,
        tables: &RopeTables<B>,
    ) -> Tensor<B, 4> {
        let weight = norm.weight.as_ref().map(|p| p.val());
        let weight = weight.expect("CogVideoX's norm_q / norm_k are affine (loaded with a weight)");
        let bias = norm.bias.as_ref().map(|p| p.val());
        let qk_norm = QkNorm::LayerHead {
            weight: &weight,
            bias: bias.as_ref(),
            eps: norm.eps,
        };
        let rope = Rope {
            start: text,
            cos: &tables.0,
            sin: &tables.1,
        };
        B::qk_norm_rope(x, self.heads, qk_norm, Some(rope))
    }

    /// Attention over `[text; video]`. Returns `(text, video)` outputs after `to_out.0`.
    ///
    /// # Shapes
    /// `text`: `[B, L, D]`; `video`: `[B, N, D]`; RoPE tables `[N, d/2]`.
    pub fn forward(
        &self,
        text: Tensor<B, 3>,
        video: Tensor<B, 3>,
        rope_tables: &RopeTables<B>,
        ctx: &AttentionContext,
        layer: usize,
    ) -> Result<(Tensor<B, 3>, Tensor<B, 3>)>
    where
        B: ModelBackend,
    {
        let l = text.dims()[1];
        let h = Tensor::cat(vec![text, video], 1);
        let q = self.norm_rope(self.to_q.forward(h.clone()), &self.norm_q, l, rope_tables);
        let k = self.norm_rope(self.to_k.forward(h.clone()), &self.norm_k, l, rope_tables);
        let v = self.split_heads(self.to_v.forward(h));
        let out = ctx.self_attention::<B>(layer, q, k, v, None)?;
        let [b, hh, n, d] = out.dims();
        let out = self
            .to_out
            .forward(out.swap_dims(1, 2).reshape([b, n, hh * d]));
        let dm = hh * d;
        Ok((
            out.clone().slice([0..b, 0..l, 0..dm]),
            out.slice([0..b, l..n, 0..dm]),
        ))
    }
}
