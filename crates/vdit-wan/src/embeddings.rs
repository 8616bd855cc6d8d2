//! Patch embedding and the time/text condition embedder.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use vdit_models::nn::{Linear, TimestepEmbedding, silu, timestep_embedding, to_dtype};
use vdit_models::{Init, Result, Weights};
use vdit_ops::Epilogue;

use crate::WanConfig;
use vdit_models::ModelBackend;

/// `patch_embedding`: a Conv3d with kernel = stride = patch size, computed as a Linear
/// over each patch's features in (c, pt, ph, pw) order (the Conv3d weight
/// `[D, C, pt, ph, pw]` flattened).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// `[C*pt*ph*pw] -> [D]`.
    pub proj: Linear<B>,
    /// Patch size.
    pub patch: [usize; 3],
}

impl<B: ModelBackend> PatchEmbed<B> {
    /// Loads `weight` `[D, C, pt, ph, pw]` and `bias` `[D]`.
    pub fn load(w: &Weights<B>, c: &WanConfig) -> Result<Self> {
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
