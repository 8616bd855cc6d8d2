//! `HunyuanVideoTransformerBlock`: the dual-stream block (separate video and text
//! weights, joint attention).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use vdit_models::ModelBackend;
use vdit_models::nn::{FeedForward, FfActivation, LayerNorm32, Linear, silu};
use vdit_models::{Result, Weights};
use vdit_ops::{FusedBackend, ModMath};

use crate::HunyuanConfig;
use crate::attention::{DualAttention, JointInputs};

/// diffusers `AdaLayerNormZero` (`norm_type="layer_norm"`): `linear(SiLU(temb))` split
/// into `chunks` modulation vectors, and a LayerNorm without affine (eps 1e-6).
#[derive(Module, Debug)]
pub struct AdaNormZero<B: Backend> {
    /// `linear`: `D -> chunks*D`.
    pub linear: Linear<B>,
    /// `norm` (no parameters, computed in f32).
    pub norm: LayerNorm32<B>,
    /// Number of modulation vectors (6 for dual blocks, 3 for single blocks).
    #[module(skip)]
    pub chunks: usize,
}

impl<B: ModelBackend> AdaNormZero<B> {
    /// Loads `linear` under `w` (`norm1`, `norm1_context` or a single block's `norm`).
    pub fn load(w: &Weights<B>, dim: usize, chunks: usize, eps: f64) -> Result<Self> {
        Ok(AdaNormZero {
            linear: Linear::load(&w.pp("linear"), dim, chunks * dim, true)?,
            norm: LayerNorm32::plain(dim, eps),
            chunks,
        })
    }

    /// The modulation vectors, each `[B, 1, D]`, in diffusers' chunk order.
    pub fn modulation(&self, temb: Tensor<B, 2>) -> Vec<Tensor<B, 3>> {
        let [b, d] = temb.dims();
        let m = self.linear.forward(silu(temb));
        (0..self.chunks)
            .map(|i| m.clone().narrow(1, i * d, d).reshape([b, 1, d]))
            .collect()
    }
}

/// `LN(x) * (1 + scale) + shift` (LayerNorm in f32, cast back; modulation in the model
/// dtype like diffusers: [`ModMath::OutDtype`]); one fused launch on CubeCL backends
/// ([`vdit_ops::FusedBackend::layer_norm_modulated`]).
pub fn modulate<B: FusedBackend>(
    norm: &LayerNorm32<B>,
    x: Tensor<B, 3>,
    shift: &Tensor<B, 3>,
    scale: &Tensor<B, 3>,
) -> Tensor<B, 3> {
    norm.forward_adaln(x, shift, scale)
}

/// `x + y * gate` in the model dtype (diffusers' gated residual adds); one fused launch
/// on CubeCL backends ([`vdit_ops::FusedBackend::gated_residual`]).
pub fn gated<B: FusedBackend>(
    x: Tensor<B, 3>,
    y: Tensor<B, 3>,
    gate: &Tensor<B, 3>,
) -> Tensor<B, 3> {
    B::gated_residual(x, y, gate, ModMath::OutDtype)
}

/// One dual-stream block (`transformer_blocks.{i}`).
#[derive(Module, Debug)]
pub struct DualStreamBlock<B: Backend> {
    /// `norm1` (video): shift, scale, gate (attention), shift, scale, gate (FFN).
    pub norm1: AdaNormZero<B>,
    /// `norm1_context` (text), same order.
    pub norm1_context: AdaNormZero<B>,
    /// `attn`.
    pub attn: DualAttention<B>,
    /// `norm2` (no affine).
    pub norm2: LayerNorm32<B>,
    /// `ff`: GELU-tanh.
    pub ff: FeedForward<B>,
    /// `norm2_context` (no affine).
    pub norm2_context: LayerNorm32<B>,
    /// `ff_context`: GELU-tanh.
    pub ff_context: FeedForward<B>,
}

impl<B: ModelBackend> DualStreamBlock<B> {
    /// Loads `transformer_blocks.{i}` (pass `w.pp("transformer_blocks").pp(i)`).
    pub fn load(w: &Weights<B>, c: &HunyuanConfig) -> Result<Self> {
        let (d, eps) = (c.dim, c.eps);
        Ok(DualStreamBlock {
            norm1: AdaNormZero::load(&w.pp("norm1"), d, 6, eps)?,
            norm1_context: AdaNormZero::load(&w.pp("norm1_context"), d, 6, eps)?,
            attn: DualAttention::load(&w.pp("attn"), d, c.heads, eps)?,
            norm2: LayerNorm32::plain(d, eps),
            ff: FeedForward::load(&w.pp("ff"), d, c.mlp_dim, d, FfActivation::GeluTanh)?,
            norm2_context: LayerNorm32::plain(d, eps),
            ff_context: FeedForward::load(
                &w.pp("ff_context"),
                d,
                c.mlp_dim,
                d,
                FfActivation::GeluTanh,
            )?,
        })
    }

    /// # Shapes
    /// `x`: `[B, Nv, D]`, `c`: `[B, Nt, D]`, `temb`: `[B, D]`; returns the updated
    /// `(x, c)`. `layer` is this block's index in the plan.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        c: Tensor<B, 3>,
        temb: Tensor<B, 2>,
        inputs: &JointInputs<'_, B>,
        layer: usize,
    ) -> Result<(Tensor<B, 3>, Tensor<B, 3>)>
    where
        B: ModelBackend,
    {
        let m = self.norm1.modulation(temb.clone());
        let mc = self.norm1_context.modulation(temb);
        let xn = modulate(&self.norm1.norm, x.clone(), &m[0], &m[1]);
        let cn = modulate(&self.norm1_context.norm, c.clone(), &mc[0], &mc[1]);

        let (ax, ac) = self.attn.forward(xn, cn, inputs, layer)?;
        let x = gated(x, ax, &m[2]);
        let c = gated(c, ac, &mc[2]);

        let xn = modulate(&self.norm2, x.clone(), &m[3], &m[4]);
        let cn = modulate(&self.norm2_context, c.clone(), &mc[3], &mc[4]);
        let x = gated(x, self.ff.forward(xn), &m[5]);
        let c = gated(c, self.ff_context.forward(cn), &mc[5]);
        Ok((x, c))
    }
}
