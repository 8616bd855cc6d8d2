//! The text token refiner (`context_embedder`, diffusers `HunyuanVideoTokenRefiner`):
//! its own timestep + pooled-text conditioning, `proj_in`, and N refiner blocks with
//! dense, masked self-attention over the text tokens only.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};
use vdit_models::nn::{
    FeedForward, FfActivation, LayerNorm32, Linear, TimestepEmbedding, silu, timestep_embedding,
    to_dtype, to_f32,
};
use vdit_models::{Result, Weights};

use crate::HunyuanConfig;
use crate::attention::merge_heads;
use crate::block::gated;
use crate::mask::TextMask;
use vdit_models::ModelBackend;

/// A refiner block's `attn`: plain attention with biased `to_{q,k,v}` and `to_out.0`,
/// no QK norm, no RoPE.
#[derive(Module, Debug)]
pub struct RefinerAttention<B: Backend> {
    /// `to_q`.
    pub to_q: Linear<B>,
    /// `to_k`.
    pub to_k: Linear<B>,
    /// `to_v`.
    pub to_v: Linear<B>,
    /// `to_out.0`.
    pub to_out: Linear<B>,
    /// Heads.
    #[module(skip)]
    pub heads: usize,
}

impl<B: ModelBackend> RefinerAttention<B> {
    /// Loads `attn` (pass `w.pp("attn")`).
    pub fn load(w: &Weights<B>, dim: usize, heads: usize) -> Result<Self> {
        Ok(RefinerAttention {
            to_q: Linear::load(&w.pp("to_q"), dim, dim, true)?,
            to_k: Linear::load(&w.pp("to_k"), dim, dim, true)?,
            to_v: Linear::load(&w.pp("to_v"), dim, dim, true)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), dim, dim, true)?,
            heads,
        })
    }

    /// # Shapes
    /// `x`: `[B, L, D]`; `mask`: `[B, heads, L, L]` (`true` = masked out); returns
    /// `[B, L, D]`.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let [b, n, dim] = x.dims();
        let h = self.heads;
        let split =
            |t: Tensor<B, 3>| -> Tensor<B, 4> { t.reshape([b, n, h, dim / h]).swap_dims(1, 2) };
        let q = split(self.to_q.forward(x.clone()));
        let k = split(self.to_k.forward(x.clone()));
        let v = split(self.to_v.forward(x));
        let out =
            burn::tensor::module::attention(q, k, v, mask, None, AttentionModuleOptions::default());
        self.to_out.forward(merge_heads(out))
    }
}

/// One refiner block (`context_embedder.token_refiner.refiner_blocks.{r}`).
#[derive(Module, Debug)]
pub struct RefinerBlock<B: Backend> {
    /// `norm1`: affine LayerNorm (eps 1e-6).
    pub norm1: LayerNorm32<B>,
    /// `attn`.
    pub attn: RefinerAttention<B>,
    /// `norm2`: affine LayerNorm.
    pub norm2: LayerNorm32<B>,
    /// `ff`: SiLU (`linear-silu`), inner `4*D`.
    pub ff: FeedForward<B>,
    /// `norm_out.linear`: `D -> 2D` (gate_msa, gate_mlp).
    pub norm_out: Linear<B>,
}

impl<B: ModelBackend> RefinerBlock<B> {
    /// Loads one refiner block.
    pub fn load(w: &Weights<B>, c: &HunyuanConfig) -> Result<Self> {
        let d = c.dim;
        Ok(RefinerBlock {
            norm1: LayerNorm32::load(&w.pp("norm1"), d, c.eps, true)?,
            attn: RefinerAttention::load(&w.pp("attn"), d, c.heads)?,
            norm2: LayerNorm32::load(&w.pp("norm2"), d, c.eps, true)?,
            ff: FeedForward::load(&w.pp("ff"), d, c.refiner_mlp_dim, d, FfActivation::Silu)?,
            norm_out: Linear::load(&w.pp("norm_out").pp("linear"), d, 2 * d, true)?,
        })
    }

    /// # Shapes
    /// `x`: `[B, L, D]`, `temb`: `[B, D]`, `mask`: `[B, heads, L, L]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        temb: Tensor<B, 2>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let [b, d] = temb.dims();
        let g = self.norm_out.forward(silu(temb));
        let gate_msa = g.clone().narrow(1, 0, d).reshape([b, 1, d]);
        let gate_mlp = g.narrow(1, d, d).reshape([b, 1, d]);
        // Affine LayerNorms and gated adds: one fused launch each on CubeCL backends.
        let dtype = x.dtype();
        let xn = self.norm1.forward_modulated(x.clone(), None, dtype);
        let x = gated(x, self.attn.forward(xn, mask), &gate_msa);
        let xn = self.norm2.forward_modulated(x.clone(), None, dtype);
        gated(x, self.ff.forward(xn), &gate_mlp)
    }
}

/// `context_embedder`: refines the text-encoder states into the model width.
#[derive(Module, Debug)]
pub struct TokenRefiner<B: Backend> {
    /// `time_text_embed.timestep_embedder`: `256 -> D -> D`.
    pub timestep_embedder: TimestepEmbedding<B>,
    /// `time_text_embed.text_embedder` (`linear_1 -> SiLU -> linear_2`):
    /// `text_dim -> D -> D`, applied to the mask-weighted mean of the raw text.
    pub text_embedder: TimestepEmbedding<B>,
    /// `proj_in`: `text_dim -> D`.
    pub proj_in: Linear<B>,
    /// `token_refiner.refiner_blocks.{r}`.
    pub blocks: Vec<RefinerBlock<B>>,
    /// Heads.
    #[module(skip)]
    pub heads: usize,
    /// Sinusoid width.
    #[module(skip)]
    pub freq_dim: usize,
}

impl<B: ModelBackend> TokenRefiner<B> {
    /// Loads `context_embedder.*` (pass `w.pp("context_embedder")`).
    pub fn load(w: &Weights<B>, c: &HunyuanConfig) -> Result<Self> {
        let (d, dt) = (c.dim, w.dtype());
        let tte = w.pp("time_text_embed");
        let blocks = (0..c.refiner_layers)
            .map(|r| RefinerBlock::load(&w.pp("token_refiner").pp("refiner_blocks").pp(r), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenRefiner {
            timestep_embedder: TimestepEmbedding::load(
                &tte.pp("timestep_embedder"),
                c.freq_dim,
                d,
                d,
                dt,
            )?,
            text_embedder: TimestepEmbedding::load(&tte.pp("text_embedder"), c.text_dim, d, d, dt)?,
            proj_in: Linear::load(&w.pp("proj_in"), c.text_dim, d, true)?,
            blocks,
            heads: c.heads,
            freq_dim: c.freq_dim,
        })
    }

    /// # Shapes
    /// `text`: `[B, L, text_dim]` (model dtype), `mask` for `[B, L]`; returns
    /// `[B, L, D]`. `timesteps` has one value per batch element.
    pub fn forward(&self, text: Tensor<B, 3>, timesteps: &[f32], mask: &TextMask) -> Tensor<B, 3> {
        let device = text.device();
        let dtype = text.dtype();
        // Mask-weighted mean in f32 (diffusers multiplies by a float mask), cast back.
        let w = mask.weights::<B>(&device);
        let pooled = (to_f32(text.clone()) * w.clone()).sum_dim(1) / w.sum_dim(1);
        let [b, _, td] = text.dims();
        let pooled = to_dtype(pooled.reshape([b, td]), dtype);

        let sinus = timestep_embedding::<B>(timesteps, self.freq_dim, true, 0.0, &device);
        let temb = self.timestep_embedder.forward(to_dtype(sinus, dtype))
            + self.text_embedder.forward(pooled);

        let attn_mask = (!mask.is_all_valid()).then(|| mask.refiner_mask::<B>(self.heads, &device));
        let mut x = self.proj_in.forward(text);
        for block in &self.blocks {
            x = block.forward(x, temb.clone(), attn_mask.clone());
        }
        x
    }
}
