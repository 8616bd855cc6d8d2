//! Patch embedding (`x_embedder`) and the time/guidance/pooled-text conditioning
//! (`time_text_embed`).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use vdit_models::nn::{PatchEmbed3d, TimestepEmbedding, timestep_embedding, to_dtype};
use vdit_models::{Result, Weights};

use crate::HunyuanConfig;
use vdit_models::ModelBackend;

/// The patch embedding (vdit-models' shared [`PatchEmbed3d`]); load it with
/// `PatchEmbed::load(w, c.in_channels, c.dim, c.patch_size)`.
pub type PatchEmbed<B> = PatchEmbed3d<B>;

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
