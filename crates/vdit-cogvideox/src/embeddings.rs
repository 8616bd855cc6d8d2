//! Patch + text embedding (`patch_embed`, diffusers `CogVideoXPatchEmbed`, 1.5 branch),
//! the time embedding and the pipeline's 3D RoPE tables.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use vdit_models::nn::rope::{FreqPrecision, rope_3d};
use vdit_models::nn::{Linear, TimestepEmbedding, timestep_embedding, to_dtype};
use vdit_models::{Result, Weights};

use crate::CogVideoXConfig;
use vdit_models::ModelBackend;

/// `patch_embed`: `text_proj` (Linear `text_embed_dim -> D`) and, for CogVideoX1.5, `proj`
/// (Linear `C*pt*p*p -> D` over each patch's features in (c, pt, ph, pw) order).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// `patch_embed.proj`.
    pub proj: Linear<B>,
    /// `patch_embed.text_proj`.
    pub text_proj: Linear<B>,
    /// Spatial patch.
    pub patch: usize,
    /// Temporal patch.
    pub patch_t: usize,
}

impl<B: ModelBackend> PatchEmbed<B> {
    /// Loads `proj.{weight,bias}` `[D, C*pt*p*p]` and `text_proj.{weight,bias}`
    /// `[D, text_embed_dim]` (the 1.5 Linear always has a bias, whatever `patch_bias`).
    pub fn load(w: &Weights<B>, c: &CogVideoXConfig) -> Result<Self> {
        let (p, pt) = (c.patch_size, c.patch_size_t);
        Ok(PatchEmbed {
            proj: Linear::load(&w.pp("proj"), c.in_channels * pt * p * p, c.dim, true)?,
            text_proj: Linear::load(&w.pp("text_proj"), c.text_embed_dim, c.dim, true)?,
            patch: p,
            patch_t: pt,
        })
    }

    /// Video tokens of latents `[B, F, C, H, W]` (`F`, `H`, `W` multiples of the patch):
    /// `[B, F/pt * H/p * W/p, D]`, frame-major.
    pub fn video(&self, x: Tensor<B, 5>) -> Tensor<B, 3> {
        let [b, f, c, h, w] = x.dims();
        let (p, pt) = (self.patch, self.patch_t);
        let (tf, th, tw) = (f / pt, h / p, w / p);
        // permute(0,1,3,4,2) -> [B, F, H, W, C] -> [B, T', pt, H', p, W', p, C]
        // -> permute(0,1,3,5,7,2,4,6) = [B, T', H', W', C, pt, p, p].
        let x: Tensor<B, 8> = x
            .permute([0, 1, 3, 4, 2])
            .reshape([b, tf, pt, th, p, tw, p, c]);
        let x = x
            .permute([0, 1, 3, 5, 7, 2, 4, 6])
            .reshape([b, tf * th * tw, c * pt * p * p]);
        self.proj.forward(x)
    }

    /// Text tokens `[B, L, text_embed_dim] -> [B, L, D]`.
    pub fn text(&self, text: Tensor<B, 3>) -> Tensor<B, 3> {
        self.text_proj.forward(text)
    }
}

/// `time_embedding` on the `[cos | sin]` sinusoid of width `D`: `[B] -> [B, time_embed_dim]`.
#[derive(Module, Debug)]
pub struct TimeEmbed<B: Backend> {
    /// `time_embedding` (`linear_1: D -> E`, SiLU, `linear_2: E -> E`).
    pub mlp: TimestepEmbedding<B>,
    /// Sinusoid width (`D`).
    pub dim: usize,
    /// `flip_sin_to_cos`.
    pub flip_sin_to_cos: bool,
    /// `freq_shift`.
    pub freq_shift: f64,
}

impl<B: ModelBackend> TimeEmbed<B> {
    /// Loads `time_embedding.linear_{1,2}` (pass `w.pp("time_embedding")`).
    pub fn load(w: &Weights<B>, c: &CogVideoXConfig) -> Result<Self> {
        Ok(TimeEmbed {
            mlp: TimestepEmbedding::load(w, c.dim, c.time_embed_dim, c.time_embed_dim, w.dtype())?,
            dim: c.dim,
            flip_sin_to_cos: c.flip_sin_to_cos,
            freq_shift: c.freq_shift,
        })
    }

    /// `emb` `[B, time_embed_dim]` in the model dtype (the f32 sinusoid is cast to the
    /// model dtype first, as diffusers does).
    pub fn forward(&self, timesteps: &[f32], device: &B::Device) -> Tensor<B, 2> {
        let sinus = timestep_embedding::<B>(
            timesteps,
            self.dim,
            self.flip_sin_to_cos,
            self.freq_shift,
            device,
        );
        let dtype = self.mlp.linear_1.weight.val().dtype();
        self.mlp.forward(to_dtype(sinus, dtype))
    }
}

/// The pipeline's RoPE tables for a post-patch grid `[T', H', W']` (diffusers
/// `get_3d_rotary_pos_embed(grid_type="slice")` as `_prepare_rotary_positional_embeddings`
/// calls it for 1.5): integer positions, f32 frequencies, axes `[d/4, 3d/8, 3d/8]`.
/// Returns `(cos, sin)` per pair, f32 `[T'*H'*W', d/2]`.
pub fn rope_tables<B: Backend>(
    c: &CogVideoXConfig,
    grid: [usize; 3],
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    rope_3d(c.rope_axes, grid, c.rope_theta, FreqPrecision::F32, device)
}
