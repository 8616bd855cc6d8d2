//! Patch embedding (`x_embedder`) and the time/guidance/pooled-text conditioning
//! (`time_text_embed`).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use vdit_models::nn::{Linear, TimestepEmbedding, timestep_embedding, to_dtype};
use vdit_models::{Init, Result, Weights};

use crate::HunyuanConfig;
use vdit_models::ModelBackend;

/// `x_embedder.proj`: a Conv3d with kernel = stride = patch size, computed as a Linear
/// over each patch's features in (c, pt, ph, pw) order (the Conv3d weight
/// `[D, C, pt, ph, pw]` flattened).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// `[C*pt*ph*pw] -> [D]`.
    pub proj: Linear<B>,
    /// `(t, h, w)` patch size.
    #[module(skip)]
    pub patch: [usize; 3],
}

impl<B: ModelBackend> PatchEmbed<B> {
    /// Loads `weight` `[D, C, pt, ph, pw]` and `bias` `[D]` (pass `w.pp("x_embedder")
    /// .pp("proj")`).
    pub fn load(w: &Weights<B>, c: &HunyuanConfig) -> Result<Self> {
        let [pt, ph, pw] = c.patch_size;
        let k = c.in_channels * pt * ph * pw;
        let init = Init::fan_in(k);
        let weight: Tensor<B, 5> = w.get("weight", [c.dim, c.in_channels, pt, ph, pw], init)?;
        let weight = weight.reshape([c.dim, k]).transpose();
        let bias = w.get("bias", [c.dim], init)?;
        Ok(PatchEmbed {
            proj: Linear {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
            },
            patch: c.patch_size,
        })
    }

    /// # Shapes
    /// `[B, C, F, H, W] -> [B, F/pt * H/ph * W/pw, D]`, tokens frame-major.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 3> {
        let [b, c, f, h, w] = x.dims();
        let [pt, ph, pw] = self.patch;
        let (tf, th, tw) = (f / pt, h / ph, w / pw);
        let x: Tensor<B, 8> = x.reshape([b, c, tf, pt, th, ph, tw, pw]);
        let x = x
            .permute([0, 2, 4, 6, 1, 3, 5, 7])
            .reshape([b, tf * th * tw, c * pt * ph * pw]);
        self.proj.forward(x)
    }
}

/// `time_text_embed` (diffusers `HunyuanVideoConditionEmbedding`, T2V):
/// `temb = timestep_embedder(sin(t)) + guidance_embedder(sin(g)) + text_embedder(pooled)`.
#[derive(Module, Debug)]
pub struct ConditionEmbedding<B: Backend> {
    /// `timestep_embedder`: `256 -> D -> D` (SiLU between).
    pub timestep_embedder: TimestepEmbedding<B>,
    /// `guidance_embedder` (when `guidance_embeds`): `256 -> D -> D`.
    pub guidance_embedder: Option<TimestepEmbedding<B>>,
    /// `text_embedder` (diffusers `PixArtAlphaTextProjection` with SiLU, same
    /// `linear_1 -> SiLU -> linear_2` structure): `pooled_dim -> D -> D`.
    pub text_embedder: TimestepEmbedding<B>,
    /// Sinusoid width.
    #[module(skip)]
    pub freq_dim: usize,
}

impl<B: ModelBackend> ConditionEmbedding<B> {
    /// Loads `time_text_embed.*` (pass `w.pp("time_text_embed")`).
    pub fn load(w: &Weights<B>, c: &HunyuanConfig) -> Result<Self> {
        let (d, dt) = (c.dim, w.dtype());
        Ok(ConditionEmbedding {
            timestep_embedder: TimestepEmbedding::load(
                &w.pp("timestep_embedder"),
                c.freq_dim,
                d,
                d,
                dt,
            )?,
            guidance_embedder: if c.guidance_embeds {
                Some(TimestepEmbedding::load(
                    &w.pp("guidance_embedder"),
                    c.freq_dim,
                    d,
                    d,
                    dt,
                )?)
            } else {
                None
            },
            text_embedder: TimestepEmbedding::load(&w.pp("text_embedder"), c.pooled_dim, d, d, dt)?,
            freq_dim: c.freq_dim,
        })
    }

    /// `temb` `[B, D]` in the model dtype. `timesteps` (and `guidance`, used only when
    /// the guidance embedder exists) hold one value per batch element; `pooled` is
    /// `[B, pooled_dim]`.
    pub fn forward(
        &self,
        timesteps: &[f32],
        guidance: Option<&[f32]>,
        pooled: Tensor<B, 2>,
        dtype: DType,
    ) -> Tensor<B, 2> {
        let device = pooled.device();
        let embed = |values: &[f32], mlp: &TimestepEmbedding<B>| {
            let sinus = timestep_embedding::<B>(values, self.freq_dim, true, 0.0, &device);
            mlp.forward(to_dtype(sinus, dtype))
        };
        let mut temb = embed(timesteps, &self.timestep_embedder);
        if let (Some(g), Some(mlp)) = (guidance, &self.guidance_embedder) {
            temb = temb + embed(g, mlp);
        }
        temb + self.text_embedder.forward(pooled)
    }
}
