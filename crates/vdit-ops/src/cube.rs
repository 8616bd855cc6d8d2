//! [`LinearBackend`] for the unfused CubeCL backends.
//!
//! wgpu keeps Burn's composition. CUDA runs cuBLASLt (see [`crate::cublaslt`]) for bf16
//! and f16 and falls back to Burn's matmul, with the reason logged once, for f32 or when
//! cuBLASLt cannot run.

use crate::LinearBackend;

#[cfg(feature = "wgpu")]
impl<F, I, BT> LinearBackend
    for burn_cubecl::CubeBackend<burn::backend::wgpu::WgpuRuntime, F, I, BT>
where
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
    const MAX_TENSOR_ELEMS: usize = u32::MAX as usize;
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Once;

    use burn::tensor::{Tensor, TensorPrimitive};
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{BoolElement, CubeBackend, FloatElement, IntElement};
    use cubecl::cuda::CudaRuntime;

    use crate::cublaslt::{self, GemmError};
    use crate::linear::note_engine;
    use crate::{Epilogue, LinearBackend, LinearEngine, burn_linear};

    impl<F, I, BT> LinearBackend for CubeBackend<CudaRuntime, F, I, BT>
    where
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        const MAX_TENSOR_ELEMS: usize = u32::MAX as usize;

        fn linear(
            x: Tensor<Self, 2>,
            weight: Tensor<Self, 2>,
            bias: Option<Tensor<Self, 1>>,
            epilogue: Epilogue,
        ) -> Tensor<Self, 2> {
            let prim = |t: Tensor<Self, 2>| t.into_primitive().tensor();
            let (xp, wp) = (prim(x.clone()), prim(weight.clone()));
            let bp: Option<CubeTensor<CudaRuntime>> = bias
                .clone()
                .map(|b| into_contiguous(b.into_primitive().tensor()));
            match cublaslt::linear(into_contiguous(xp), wp, bp, epilogue) {
                Ok(out) => {
                    note_engine(LinearEngine::CublasLt);
                    Tensor::from_primitive(TensorPrimitive::Float(out))
                }
                Err(GemmError::NotHandled(_)) => {
                    note_engine(LinearEngine::Burn);
                    burn_linear(x, weight, bias, epilogue)
                }
                Err(e) => {
                    static WARN: Once = Once::new();
                    WARN.call_once(|| {
                        tracing::warn!("cuBLASLt Linear unavailable, using Burn's matmul: {e}")
                    });
                    note_engine(LinearEngine::CublasLtFallback);
                    burn_linear(x, weight, bias, epilogue)
                }
            }
        }
    }
}
