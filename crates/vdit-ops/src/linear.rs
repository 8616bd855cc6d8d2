//! The Linear operation: `y = act(x W + b)`.

use std::cell::Cell;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// What is applied after `x W + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// Nothing.
    None,
    /// GELU with the tanh approximation (`gelu(x, approximate="tanh")`).
    GeluTanh,
}

/// Which implementation ran the last [`LinearBackend::linear`] call on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearEngine {
    /// Burn's `matmul` (+ bias, + activation) in the backend's own kernels.
    Burn,
    /// cuBLASLt with the bias (and GELU) in its epilogue.
    CublasLt,
    /// cuBLASLt was chosen but failed (library missing, unsupported shape...): Burn's
    /// matmul ran instead. The reason is logged once through `tracing`.
    CublasLtFallback,
}

thread_local! {
    static LAST_ENGINE: Cell<Option<LinearEngine>> = const { Cell::new(None) };
}

/// The engine of the last [`LinearBackend::linear`] call made from this thread (`None`
/// before the first). Benchmarks and tests use it to report and pin the engine.
pub fn last_linear_engine() -> Option<LinearEngine> {
    LAST_ENGINE.with(|c| c.get())
}

pub(crate) fn note_engine(engine: LinearEngine) {
    LAST_ENGINE.with(|c| c.set(Some(engine)));
}

/// A Burn backend with a Linear operation.
///
/// The provided method is Burn's composition (`matmul`, broadcast bias add, activation),
/// which every backend runs; the CUDA CubeCL backend overrides it with cuBLASLt.
pub trait LinearBackend: Backend {
    /// The most elements one tensor may have on this backend. CubeCL 0.10 indexes
    /// tensors with 32-bit scalars (`u32::MAX` on the CubeCL backends): past it an
    /// elementwise kernel fails inside CubeCL without saying why, so the models check
    /// their widest activation against this before running (`vdit_models::check_tensor_elems`).
    const MAX_TENSOR_ELEMS: usize = usize::MAX;

    /// `act(x · weight + bias)`.
    ///
    /// # Shapes
    /// `x: [rows, in]`, `weight: [in, out]` (any strides; the transposed view of a PyTorch
    /// `[out, in]` weight is used as is), `bias: [out]` -> `[rows, out]`. All in one dtype.
    fn linear(
        x: Tensor<Self, 2>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
        epilogue: Epilogue,
    ) -> Tensor<Self, 2> {
        note_engine(LinearEngine::Burn);
        burn_linear(x, weight, bias, epilogue)
    }
}

/// The reference composition of [`LinearBackend::linear`] in Burn operations.
pub fn burn_linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    epilogue: Epilogue,
) -> Tensor<B, 2> {
    let y = x.matmul(weight);
    let y = match bias {
        Some(b) => y + b.unsqueeze(),
        None => y,
    };
    match epilogue {
        Epilogue::None => y,
        Epilogue::GeluTanh => burn::tensor::activation::gelu_approximate(y),
    }
}

#[cfg(feature = "flex")]
impl LinearBackend for burn::backend::Flex {}
