//! Sinusoidal timestep embeddings (diffusers `get_timestep_embedding`, `Timesteps`,
//! `TimestepEmbedding`).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use super::{Linear, silu};
use crate::{Init, ModelBackend, Result, Weights};

/// A 3D patch embedding: diffusers' `Conv3d` with kernel = stride = patch size (Wan2.1's
/// `patch_embedding`, HunyuanVideo's `x_embedder.proj`), computed as one Linear (a GEMM)
/// over each patch's features in `(c, pt, ph, pw)` order: the Conv3d weight
/// `[D, C, pt, ph, pw]` flattened.
#[derive(Module, Debug)]
pub struct PatchEmbed3d<B: Backend> {
    /// `[C*pt*ph*pw] -> [D]`.
    pub proj: Linear<B>,
    /// `(t, h, w)` patch size.
    #[module(skip)]
    pub patch: [usize; 3],
}

impl<B: ModelBackend> PatchEmbed3d<B> {
    /// Loads `weight` `[dim, in_channels, pt, ph, pw]` and `bias` `[dim]` under `w`.
    ///
    /// # Errors
    /// Missing or wrongly shaped weights (the error names the key).
    pub fn load(w: &Weights<B>, in_channels: usize, dim: usize, patch: [usize; 3]) -> Result<Self> {
        let [pt, ph, pw] = patch;
        let k = in_channels * pt * ph * pw;
        let init = Init::fan_in(k);
        let weight: Tensor<B, 5> = w.get("weight", [dim, in_channels, pt, ph, pw], init)?;
        let weight = weight.reshape([dim, k]).transpose();
        let bias = w.get("bias", [dim], init)?;
        Ok(PatchEmbed3d {
            proj: Linear {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
            },
            patch,
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

/// diffusers `get_timestep_embedding` on the host, reproducing PyTorch's f32 arithmetic
/// step by step (`exponent = -ln(max_period) * k / (half - shift)`, `exp`, `t * freq`,
/// `[sin | cos]`, swapped to `[cos | sin]` when `flip_sin_to_cos`, zero-padded to an odd
/// `dim`). Returns `[timesteps.len(), dim]` row-major, f32.
pub fn timestep_embedding_host(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    scale: f64,
    max_period: f64,
) -> Vec<f32> {
    let half = dim / 2;
    let neg_log = (-(max_period.ln())) as f32;
    let denom = (half as f64 - downscale_freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|k| {
            let exponent = (k as f32 * neg_log) / denom;
            (exponent as f64).exp() as f32
        })
        .collect();
    let mut out = vec![0f32; timesteps.len() * dim];
    for (row, &t) in timesteps.iter().enumerate() {
        let o = &mut out[row * dim..(row + 1) * dim];
        for (k, &f) in freqs.iter().enumerate() {
            let arg = (t * f) * scale as f32;
            let (s, c) = ((arg as f64).sin() as f32, (arg as f64).cos() as f32);
            if flip_sin_to_cos {
                o[k] = c;
                o[half + k] = s;
            } else {
                o[k] = s;
                o[half + k] = c;
            }
        }
    }
    out
}

/// [`timestep_embedding_host`] as an f32 tensor `[n, dim]` on `device`.
pub fn timestep_embedding<B: Backend>(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let data = timestep_embedding_host(
        timesteps,
        dim,
        flip_sin_to_cos,
        downscale_freq_shift,
        1.0,
        10000.0,
    );
    Tensor::from_data(
        TensorData::new(data, [timesteps.len(), dim]),
        (device, DType::F32),
    )
}

/// diffusers `TimestepEmbedding`: `linear_2(SiLU(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    /// `in -> dim`.
    pub linear_1: Linear<B>,
    /// `dim -> out`.
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    /// Loads `linear_1` `[dim, d_in]` and `linear_2` `[d_out, dim]` in `dtype`.
    pub fn load(
        w: &Weights<B>,
        d_in: usize,
        dim: usize,
        d_out: usize,
        dtype: DType,
    ) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: Linear::load_dtype(&w.pp("linear_1"), d_in, dim, true, dtype)?,
            linear_2: Linear::load_dtype(&w.pp("linear_2"), dim, d_out, true, dtype)?,
        })
    }

    /// # Shapes
    /// `[n, d_in] -> [n, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2>
    where
        B: vdit_ops::LinearBackend,
    {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}
