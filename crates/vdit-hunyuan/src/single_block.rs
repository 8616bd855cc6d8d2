//! `HunyuanVideoSingleTransformerBlock`: the single-stream block (shared weights over
//! the joint `[video | text]` sequence, attention and MLP in parallel).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use vdit_models::ModelBackend;
use vdit_models::nn::Linear;
use vdit_models::{Result, Weights};
use vdit_ops::Epilogue;

use crate::HunyuanConfig;
use crate::attention::{JointInputs, SingleAttention};
use crate::block::{AdaNormZero, gated, modulate};

/// One single-stream block (`single_transformer_blocks.{j}`):
/// `h += gate * proj_out(cat[attn(ĥ), GELU(proj_mlp(ĥ))])` with
/// `ĥ = LN(h)(1 + scale) + shift`.
#[derive(Module, Debug)]
pub struct SingleStreamBlock<B: Backend> {
    /// `norm` (`AdaLayerNormZeroSingle`): shift, scale, gate.
    pub norm: AdaNormZero<B>,
    /// `attn` (no output projection).
    pub attn: SingleAttention<B>,
    /// `proj_mlp`: `D -> mlp_dim`.
    pub proj_mlp: Linear<B>,
    /// `proj_out`: `D + mlp_dim -> D`.
    pub proj_out: Linear<B>,
}

impl<B: ModelBackend> SingleStreamBlock<B> {
    /// Loads `single_transformer_blocks.{j}` (pass
    /// `w.pp("single_transformer_blocks").pp(j)`).
    pub fn load(w: &Weights<B>, c: &HunyuanConfig) -> Result<Self> {
        let d = c.dim;
        Ok(SingleStreamBlock {
            norm: AdaNormZero::load(&w.pp("norm"), d, 3, c.eps)?,
            attn: SingleAttention::load(&w.pp("attn"), d, c.heads, c.eps)?,
            proj_mlp: Linear::load(&w.pp("proj_mlp"), d, c.mlp_dim, true)?,
            proj_out: Linear::load(&w.pp("proj_out"), d + c.mlp_dim, d, true)?,
        })
    }

    /// # Shapes
    /// `h`: `[B, Nv + Nt, D]` (video first) with `video_tokens = Nv`, `temb`: `[B, D]`;
    /// returns the updated joint sequence. `layer` is this block's index in the plan.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        video_tokens: usize,
        temb: Tensor<B, 2>,
        inputs: &JointInputs<'_, B>,
        layer: usize,
    ) -> Result<Tensor<B, 3>>
    where
        B: ModelBackend,
    {
        let m = self.norm.modulation(temb);
        let hn = modulate(&self.norm.norm, h.clone(), &m[0], &m[1]);
        let mlp = self.proj_mlp.forward_with(hn.clone(), Epilogue::GeluTanh);
        let attn = self.attn.forward(hn, video_tokens, inputs, layer)?;
        let out = self.proj_out.forward(Tensor::cat(vec![attn, mlp], 2));
        Ok(gated(h, out, &m[2]))
    }
}
