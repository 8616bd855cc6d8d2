//! A Linear layer loaded from PyTorch layout.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use vdit_ops::{Epilogue, LinearBackend};

use crate::{Init, Result, Weights};

/// `y = x W + b` with `W` stored as Burn expects (`[in, out]`); the checkpoint holds
/// PyTorch's `[out, in]` under `<prefix>.weight` and `[out]` under `<prefix>.bias`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// Loads `weight` (and `bias` when `bias`) under `w`'s prefix, in the model dtype.
    pub fn load(w: &Weights<B>, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Self::load_dtype(w, d_in, d_out, bias, w.dtype())
    }

    /// As [`Linear::load`] but in `dtype` (e.g. f32 for diffusers' fp32-kept modules).
    pub fn load_dtype(
        w: &Weights<B>,
        d_in: usize,
        d_out: usize,
        bias: bool,
        dtype: DType,
    ) -> Result<Self> {
        let init = Init::fan_in(d_in);
        let weight = w
            .get_dtype("weight", [d_out, d_in], init, dtype)?
            .transpose();
        let bias = if bias {
            Some(Param::from_tensor(w.get_dtype(
                "bias",
                [d_out],
                init,
                dtype,
            )?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
        })
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Applies the layer over the last dimension. The input is cast to the weight's
    /// dtype first (like PyTorch modules kept in another precision).
    ///
    /// # Shapes
    /// `[..., in] -> [..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>
    where
        B: LinearBackend,
    {
        self.forward_with(x, Epilogue::None)
    }

    /// [`Linear::forward`] followed by `epilogue` (fused into the GEMM on CUDA).
    pub fn forward_with<const D: usize>(&self, x: Tensor<B, D>, epilogue: Epilogue) -> Tensor<B, D>
    where
        B: LinearBackend,
    {
        let w = self.weight.val();
        let x = super::to_dtype(x, w.dtype());
        // One 2-D GEMM over all leading dims (a broadcast batched matmul is ~4x slower
        // on burn-flex; cuBLASLt takes 2-D operands).
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let [_, d_out] = w.dims();
        let y = <B as LinearBackend>::linear(
            x.reshape([rows, dims[D - 1]]),
            w,
            self.bias.as_ref().map(|b| b.val()),
            epilogue,
        );
        let mut out_dims = dims;
        out_dims[D - 1] = d_out;
        y.reshape(out_dims)
    }
}
