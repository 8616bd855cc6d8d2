//! LayerNorm and RMSNorm computed in f32.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use vdit_ops::{FusedBackend, LayerNormParams, ModMath, Modulate};

use super::to_f32;
use crate::{Init, Result, Weights};

/// LayerNorm over the last dimension, computed in f32 (diffusers `FP32LayerNorm`;
/// `nn.LayerNorm` with f32 inputs). Optional affine `weight`/`bias` are kept in f32.
#[derive(Module, Debug)]
pub struct LayerNorm32<B: Backend> {
    /// Scale `[dim]` (`<prefix>.weight`), if affine.
    pub weight: Option<Param<Tensor<B, 1>>>,
    /// Shift `[dim]` (`<prefix>.bias`), if affine with bias.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Epsilon added to the variance.
    pub eps: f64,
    /// Normalised size.
    pub dim: usize,
}

impl<B: Backend> LayerNorm32<B> {
    /// A LayerNorm without parameters (`elementwise_affine=False`).
    pub fn plain(dim: usize, eps: f64) -> Self {
        LayerNorm32 {
            weight: None,
            bias: None,
            eps,
            dim,
        }
    }

    /// Loads `weight` and, if `bias`, `bias` of an affine LayerNorm (kept in f32).
    pub fn load(w: &Weights<B>, dim: usize, eps: f64, bias: bool) -> Result<Self> {
        let weight = w.get_f32("weight", [dim], Init::Ones)?;
        let bias = if bias {
            Some(Param::from_tensor(w.get_f32("bias", [dim], Init::Zeros)?))
        } else {
            None
        };
        Ok(LayerNorm32 {
            weight: Some(Param::from_tensor(weight)),
            bias,
            eps,
            dim,
        })
    }

    /// Normalises in f32 and returns f32.
    ///
    /// # Shapes
    /// `[..., dim] -> [..., dim]`.
    pub fn forward_f32<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = to_f32(x);
        // Centred once and scaled by 1/sqrt(var + eps) (PyTorch's rstd): one full pass
        // less than `var_mean_bias` then `(x - mean) / std` (1.30 -> 1.09 ms at
        // 32,760 x 1536 on an H100; results/bench/h100-2026-11-24/profile).
        let mean = x.clone().mean_dim(D - 1);
        let centred = x - mean;
        let var = centred.clone().square().mean_dim(D - 1);
        let mut y = centred * (var + self.eps).sqrt().recip();
        if let Some(w) = &self.weight {
            y = y * to_f32(w.val()).unsqueeze();
        }
        if let Some(b) = &self.bias {
            y = y + to_f32(b.val()).unsqueeze();
        }
        y
    }

    /// Normalises in f32 and casts back to the input dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        super::to_dtype(self.forward_f32(x), dtype)
    }
}

impl<B: FusedBackend> LayerNorm32<B> {
    /// `LN(x)`, then `* (1 + scale) + shift` if `modulation` is given, in `out_dtype`:
    /// one launch of [`FusedBackend::layer_norm_modulated`] on CubeCL backends; elsewhere
    /// [`Self::forward_f32`], the modulation and the cast composed in Burn (without a
    /// modulation the same bits as [`Self::forward`] when `out_dtype` is the input's).
    ///
    /// # Shapes
    /// `x` `[batch, tokens, dim]`, modulation tensors `[batch, 1, dim]`.
    pub fn forward_modulated(
        &self,
        x: Tensor<B, 3>,
        modulation: Option<Modulate<'_, B>>,
        out_dtype: DType,
    ) -> Tensor<B, 3> {
        let weight = self.weight.as_ref().map(|p| p.val());
        let bias = self.bias.as_ref().map(|p| p.val());
        let params = LayerNormParams {
            weight: weight.as_ref(),
            bias: bias.as_ref(),
            eps: self.eps,
        };
        B::layer_norm_modulated(x, params, modulation, out_dtype)
    }

    /// HunyuanVideo's and CogVideoX's adaLN, diffusers' `norm(x) * (1 + scale) + shift`
    /// with the LayerNorm in f32 cast back to `x`'s dtype and the modulation in that
    /// dtype ([`ModMath::OutDtype`]): [`Self::forward_modulated`].
    ///
    /// # Shapes
    /// `x` `[batch, tokens, dim]`, `shift`, `scale` `[batch, 1, dim]` (`x`'s dtype).
    pub fn forward_adaln(
        &self,
        x: Tensor<B, 3>,
        shift: &Tensor<B, 3>,
        scale: &Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let modulation = Modulate {
            shift,
            scale,
            math: ModMath::OutDtype,
        };
        self.forward_modulated(x, Some(modulation), dtype)
    }
}

/// RMSNorm over the last dimension with a learned scale (`torch.nn.RMSNorm`, diffusers
/// `RMSNorm`): `x * rsqrt(mean(x^2) + eps) * weight`, computed in f32 and cast back.
#[derive(Module, Debug)]
pub struct RmsNorm32<B: Backend> {
    /// Scale `[dim]` (`<prefix>.weight`), kept in the model dtype like diffusers.
    pub weight: Param<Tensor<B, 1>>,
    /// Epsilon added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm32<B> {
    /// Loads `<prefix>.weight` `[dim]`.
    pub fn load(w: &Weights<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm32 {
            weight: Param::from_tensor(w.get("weight", [dim], Init::Ones)?),
            eps,
        })
    }

    /// Applies the norm; the result has the input's dtype.
    ///
    /// # Shapes
    /// `[..., dim] -> [..., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = to_f32(x);
        let ms = x.clone().square().mean_dim(D - 1);
        let y = x * (ms + self.eps).sqrt().recip() * to_f32(self.weight.val()).unsqueeze();
        if dtype == DType::F32 {
            y
        } else {
            y.cast(dtype)
        }
    }
}
