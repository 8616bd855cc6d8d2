//! diffusers `FeedForward` (`net.0.proj -> activation -> net.2`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use vdit_ops::{Epilogue, LinearBackend};

use super::{Linear, silu};
use crate::{Result, Weights};

/// The activation of a [`FeedForward`] (diffusers `activation_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfActivation {
    /// `"gelu-approximate"`: GELU with tanh (Wan, CogVideoX, HunyuanVideo blocks).
    GeluTanh,
    /// `"linear-silu"`: SiLU (HunyuanVideo token refiner).
    Silu,
}

/// diffusers `FeedForward`: `net.2(act(net.0.proj(x)))` (dropout is identity at
/// inference). Keys: `net.0.proj.{weight,bias}` `[inner, dim]`, `net.2.{weight,bias}`
/// `[dim_out, inner]`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `dim -> inner` (`net.0.proj`).
    pub proj_in: Linear<B>,
    /// `inner -> dim_out` (`net.2`).
    pub proj_out: Linear<B>,
    /// Activation.
    #[module(skip)]
    pub activation: FfActivation,
}

impl<B: Backend> FeedForward<B> {
    /// Loads `net.0.proj` and `net.2` under `w`.
    pub fn load(
        w: &Weights<B>,
        dim: usize,
        inner: usize,
        dim_out: usize,
        activation: FfActivation,
    ) -> Result<Self> {
        Ok(FeedForward {
            proj_in: Linear::load(&w.pp("net.0.proj"), dim, inner, true)?,
            proj_out: Linear::load(&w.pp("net.2"), inner, dim_out, true)?,
            activation,
        })
    }

    /// # Shapes
    /// `[..., dim] -> [..., dim_out]`.
    /// GELU-tanh runs in the first GEMM's epilogue (fused on CUDA).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>
    where
        B: LinearBackend,
    {
        let h = match self.activation {
            FfActivation::GeluTanh => self.proj_in.forward_with(x, Epilogue::GeluTanh),
            FfActivation::Silu => silu(self.proj_in.forward(x)),
        };
        self.proj_out.forward(h)
    }
}
