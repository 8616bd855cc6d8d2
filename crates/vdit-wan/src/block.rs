//! `WanTransformerBlock`: modulated self-attention, cross-attention, modulated FFN.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::nn::{FeedForward, FfActivation, LayerNorm32, to_f32};
use vdit_models::{Init, Result, Weights};
use vdit_ops::{ModMath, Modulate};

use crate::WanConfig;
use crate::attention::{RopeTables, WanAttention};

/// One Wan block (`blocks.{i}`).
///
/// Mixed precision as diffusers: the modulation (`scale_shift_table + timestep_proj`),
/// the three LayerNorms and the gated residual adds are computed in f32; projections,
/// attention and the FFN run in the model dtype; the residual stream is stored in the
/// model dtype.
#[derive(Module, Debug)]
pub struct WanBlock<B: Backend> {
    /// `scale_shift_table` `[1, 6, D]` (f32): shift, scale, gate (attention), then
    /// shift, scale, gate (FFN).
    pub scale_shift_table: Param<Tensor<B, 3>>,
    /// `norm1`: LayerNorm without affine.
    pub norm1: LayerNorm32<B>,
    /// `attn1`: self-attention.
    pub attn1: WanAttention<B>,
    /// `norm2`: affine LayerNorm before cross-attention (absent when
    /// `cross_attn_norm=false`).
    pub norm2: Option<LayerNorm32<B>>,
    /// `attn2`: cross-attention.
    pub attn2: WanAttention<B>,
    /// `norm3`: LayerNorm without affine.
    pub norm3: LayerNorm32<B>,
    /// `ffn`.
    pub ffn: FeedForward<B>,
}

impl<B: ModelBackend> WanBlock<B> {
    /// Loads `blocks.{i}` (pass `w.pp("blocks").pp(i)`).
    pub fn load(w: &Weights<B>, c: &WanConfig) -> Result<Self> {
        let d = c.dim;
        let table = w.get_f32(
            "scale_shift_table",
            [1, 6, d],
            Init::Normal(1.0 / (d as f64).sqrt()),
        )?;
        Ok(WanBlock {
            scale_shift_table: Param::from_tensor(table),
            norm1: LayerNorm32::plain(d, c.eps),
            attn1: WanAttention::load(&w.pp("attn1"), d, c.heads, c.eps)?,
            norm2: if c.cross_attn_norm {
                Some(LayerNorm32::load(&w.pp("norm2"), d, c.eps, true)?)
            } else {
                None
            },
            attn2: WanAttention::load(&w.pp("attn2"), d, c.heads, c.eps)?,
            norm3: LayerNorm32::plain(d, c.eps),
            ffn: FeedForward::load(&w.pp("ffn"), d, c.ffn_dim, d, FfActivation::GeluTanh)?,
        })
    }

    /// # Shapes
    /// `x`: `[B, N, D]` (model dtype); `text`: `[B, L, D]`; `timestep_proj`: `[B, 6, D]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        text: Tensor<B, 3>,
        timestep_proj: Tensor<B, 3>,
        rope_tables: &RopeTables<B>,
        ctx: &AttentionContext,
        layer: usize,
    ) -> Result<Tensor<B, 3>>
    where
        B: ModelBackend,
    {
        let dtype = x.dtype();
        let m = self.scale_shift_table.val() + to_f32(timestep_proj);
        let [b, _, d] = m.dims();
        let part = |i: usize| -> Tensor<B, 3> { m.clone().narrow(1, i, 1).reshape([b, 1, d]) };
        let (shift, scale, gate) = (part(0), part(1), part(2));
        let (c_shift, c_scale, c_gate) = (part(3), part(4), part(5));

        // Fused on CubeCL backends (vdit_ops::FusedBackend); the provided bodies are the
        // f32 compositions `LN(x) * (1 + scale) + shift` and `x + y * gate`.
        let modulate = |shift, scale| {
            Some(Modulate {
                shift,
                scale,
                math: ModMath::F32,
            })
        };
        let h = self
            .norm1
            .forward_modulated(x.clone(), modulate(&shift, &scale), dtype);
        let attn = self.attn1.self_attention(h, rope_tables, ctx, layer)?;
        let x = B::gated_residual(x, attn, &gate, ModMath::F32);

        let h = match &self.norm2 {
            Some(n) => n.forward_modulated(x.clone(), None, dtype),
            None => x.clone(),
        };
        let x = x + self.attn2.cross_attention(h, text, ctx)?;

        let h = self
            .norm3
            .forward_modulated(x.clone(), modulate(&c_shift, &c_scale), dtype);
        let ff = self.ffn.forward(h);
        Ok(B::gated_residual(x, ff, &c_gate, ModMath::F32))
    }
}
