//! Wan self- and cross-attention (`attn1`, `attn2`; diffusers `WanAttention` with
//! `WanAttnProcessor`).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor};
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::nn::{Linear, RmsNorm32, rope, to_dtype};
use vdit_models::{Result, Weights};

/// Projections shared by both attentions: `to_q/k/v`, `to_out.0` and RMSNorm across
/// all heads on q and k (`norm_q`, `norm_k` over the whole hidden size).
#[derive(Module, Debug)]
pub struct WanAttention<B: Backend> {
    /// `to_q`.
    pub to_q: Linear<B>,
    /// `to_k`.
    pub to_k: Linear<B>,
    /// `to_v`.
    pub to_v: Linear<B>,
    /// `to_out.0`.
    pub to_out: Linear<B>,
    /// `norm_q` (over `D`, before the head split).
    pub norm_q: RmsNorm32<B>,
    /// `norm_k`.
    pub norm_k: RmsNorm32<B>,
    /// Heads.
    pub heads: usize,
}

/// Cached RoPE tables for one token grid: `(cos, sin)` `[tokens, head_dim/2]`, f32.
pub type RopeTables<B> = (Tensor<B, 2>, Tensor<B, 2>);

impl<B: ModelBackend> WanAttention<B> {
    /// Loads one attention under `w` (`attn1` or `attn2`).
    pub fn load(w: &Weights<B>, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(WanAttention {
            to_q: Linear::load(&w.pp("to_q"), dim, dim, true)?,
            to_k: Linear::load(&w.pp("to_k"), dim, dim, true)?,
            to_v: Linear::load(&w.pp("to_v"), dim, dim, true)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), dim, dim, true)?,
            norm_q: RmsNorm32::load(&w.pp("norm_q"), dim, eps)?,
            norm_k: RmsNorm32::load(&w.pp("norm_k"), dim, eps)?,
            heads,
        })
    }

    /// `[B, N, D] -> [B, heads, N, d]`.
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, d] = x.dims();
        x.reshape([b, n, self.heads, d / self.heads])
            .swap_dims(1, 2)
    }

    /// `[B, heads, N, d] -> [B, N, D]`, then `to_out.0`.
    fn merge_heads(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, h, n, d] = x.dims();
        self.to_out
            .forward(x.swap_dims(1, 2).reshape([b, n, h * d]))
    }

    /// Self-attention over the video tokens through the plan in `ctx`.
    ///
    /// # Shapes
    /// `x`: `[B, N, D]`, RoPE tables `[N, d/2]`; returns `[B, N, D]`.
    pub fn self_attention(
        &self,
        x: Tensor<B, 3>,
        rope_tables: &RopeTables<B>,
        ctx: &AttentionContext,
        layer: usize,
    ) -> Result<Tensor<B, 3>>
    where
        B: ModelBackend,
    {
        let q = self.norm_q.forward(self.to_q.forward(x.clone()));
        let k = self.norm_k.forward(self.to_k.forward(x.clone()));
        let v = self.to_v.forward(x);
        let q = rope::apply_interleaved(self.split_heads(q), &rope_tables.0, &rope_tables.1);
        let k = rope::apply_interleaved(self.split_heads(k), &rope_tables.0, &rope_tables.1);
        let v = self.split_heads(v);
        let out = ctx.self_attention::<B>(layer, q, k, v, None)?;
        Ok(self.merge_heads(out))
    }

    /// Dense cross-attention from video tokens `x` `[B, N, D]` to text `[B, L, D]`.
    pub fn cross_attention(&self, x: Tensor<B, 3>, text: Tensor<B, 3>) -> Tensor<B, 3> {
        let q = self.norm_q.forward(self.to_q.forward(x));
        let k = self.norm_k.forward(self.to_k.forward(text.clone()));
        let v = self.to_v.forward(text);
        let out = burn::tensor::module::attention(
            self.split_heads(q),
            self.split_heads(k),
            self.split_heads(v),
            None,
            None,
            AttentionModuleOptions::default(),
        );
        self.merge_heads(out)
    }
}

/// Casts a possibly-f32 tensor to `dtype` (helper for the block's mixed precision).
pub(crate) fn cast<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    to_dtype(x, dtype)
}
