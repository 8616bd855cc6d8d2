//! Wan self- and cross-attention (`attn1`, `attn2`; diffusers `WanAttention` with
//! `WanAttnProcessor`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::nn::{Linear, RmsNorm32};
use vdit_models::{Result, Weights};
use vdit_ops::{QkNorm, Rope};

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

/// RoPE tables of the video tokens: `(cos, sin)` `[video tokens, head_dim/2]`, f32.
pub use vdit_models::nn::rope::RopeTables;

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
        // RMSNorm over the hidden size, head split and RoPE: one fused launch each on
        // CubeCL backends (vdit_ops::FusedBackend::qk_norm_rope).
        let rope = Some(Rope {
            start: 0,
            cos: &rope_tables.0,
            sin: &rope_tables.1,
        });
        let (wq, wk) = (self.norm_q.weight.val(), self.norm_k.weight.val());
        let q = B::qk_norm_rope(
            self.to_q.forward(x.clone()),
            self.heads,
            QkNorm::RmsHidden {
                weight: &wq,
                eps: self.norm_q.eps,
            },
            rope,
        );
        let k = B::qk_norm_rope(
            self.to_k.forward(x.clone()),
            self.heads,
            QkNorm::RmsHidden {
                weight: &wk,
                eps: self.norm_k.eps,
            },
            rope,
        );
        let v = self.split_heads(self.to_v.forward(x));
        let out = ctx.self_attention::<B>(layer, q, k, v, None)?;
        Ok(self.merge_heads(out))
    }

    /// Dense cross-attention from video tokens `x` `[B, N, D]` to text `[B, L, D]`, on the
    /// backend's cross-attention kernel ([`AttentionContext::cross_attention`]).
    pub fn cross_attention(
        &self,
        x: Tensor<B, 3>,
        text: Tensor<B, 3>,
        ctx: &AttentionContext,
    ) -> Result<Tensor<B, 3>>
    where
        B: ModelBackend,
    {
        let (wq, wk) = (self.norm_q.weight.val(), self.norm_k.weight.val());
        let q = B::qk_norm_rope(
            self.to_q.forward(x),
            self.heads,
            QkNorm::RmsHidden {
                weight: &wq,
                eps: self.norm_q.eps,
            },
            None,
        );
        let k = B::qk_norm_rope(
            self.to_k.forward(text.clone()),
            self.heads,
            QkNorm::RmsHidden {
                weight: &wk,
                eps: self.norm_k.eps,
            },
            None,
        );
        let v = self.split_heads(self.to_v.forward(text));
        let out = ctx.cross_attention::<B>(q, k, v, None)?;
        Ok(self.merge_heads(out))
    }
}
