//! Patch embedding and the time/text condition embedder.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use vdit_models::nn::{
    Linear, PatchEmbed3d, TimestepEmbedding, silu, timestep_embedding, to_dtype,
};
use vdit_models::{Result, Weights};
use vdit_ops::Epilogue;

use crate::WanConfig;
use vdit_models::ModelBackend;

/// The patch embedding (vdit-models' shared [`PatchEmbed3d`]); load it with
/// `PatchEmbed::load(w, c.in_channels, c.dim, c.patch_size)`.
pub type PatchEmbed<B> = PatchEmbed3d<B>;

/// `condition_embedder` (diffusers `WanTimeTextImageEmbedding`, T2V part).
#[derive(Module, Debug)]
pub struct ConditionEmbedder<B: Backend> {
    /// `time_embedder` (kept in f32 like diffusers' `_keep_in_fp32_modules`).
    pub time_embedder: TimestepEmbedding<B>,
    /// `time_proj`: `D -> 6D`.
    pub time_proj: Linear<B>,
    /// `text_embedder.linear_1`: `text_dim -> D`.
    pub text_1: Linear<B>,
    /// `text_embedder.linear_2`: `D -> D`.
    pub text_2: Linear<B>,
    /// Sinusoid width.
    pub freq_dim: usize,
}

/// What the condition embedder produces.
#[derive(Debug, Clone)]
pub struct Conditioning<B: Backend> {
    /// `temb` `[B, D]` (model dtype).
    pub temb: Tensor<B, 2>,
    /// `timestep_proj` `[B, 6, D]` (model dtype).
    pub timestep_proj: Tensor<B, 3>,
    /// Projected text `[B, L, D]` (model dtype).
    pub text: Tensor<B, 3>,
}

impl<B: ModelBackend> ConditionEmbedder<B> {
    /// Loads `time_embedder.linear_{1,2}`, `time_proj`, `text_embedder.linear_{1,2}`.
    pub fn load(w: &Weights<B>, c: &WanConfig) -> Result<Self> {
        let d = c.dim;
        Ok(ConditionEmbedder {
            time_embedder: TimestepEmbedding::load(
                &w.pp("time_embedder"),
                c.freq_dim,
                d,
                d,
                DType::F32,
            )?,
            time_proj: Linear::load(&w.pp("time_proj"), d, 6 * d, true)?,
            text_1: Linear::load(&w.pp("text_embedder").pp("linear_1"), c.text_dim, d, true)?,
            text_2: Linear::load(&w.pp("text_embedder").pp("linear_2"), d, d, true)?,
            freq_dim: c.freq_dim,
        })
    }

    /// `timesteps` has one value per batch element; `text` is `[B, L, text_dim]` in
    /// the model dtype.
    pub fn forward(&self, timesteps: &[f32], text: Tensor<B, 3>, dtype: DType) -> Conditioning<B> {
        let device = text.device();
        let b = timesteps.len();
        let sinus = timestep_embedding::<B>(timesteps, self.freq_dim, true, 0.0, &device);
        let temb = to_dtype(self.time_embedder.forward(sinus), dtype);
        let d = temb.dims()[1];
        let timestep_proj = self
            .time_proj
            .forward(silu(temb.clone()))
            .reshape([b, 6, d]);
        let text = self
            .text_2
            .forward(self.text_1.forward_with(text, Epilogue::GeluTanh));
        Conditioning {
            temb,
            timestep_proj,
            text,
        }
    }
}
