//! cuBLASLt GEMMs on CubeCL's CUDA buffers.
//!
//! # How it runs
//! `y[M, N] = x[M, K] · W + b` in row-major is computed as the column-major product
//! `yᵀ = Wᵀ·xᵀ` (no copies): the torch-layout weight `[N, K]` is the column-major `K x N`
//! matrix `A` taken transposed, `x` is the column-major `K x M` matrix `B`, and `y` the
//! column-major `N x M` matrix `D`. bf16/f16 operands, f32 accumulation and scaling; the
//! bias (and GELU-tanh) run in cuBLASLt's epilogue. The algorithm of each shape is chosen
//! once by cuBLASLt's heuristic and cached per thread.
//!
//! # Stream ordering and its cost
//! CubeCL 0.10 does not expose the CUDA stream its kernels run on, and its stream does
//! not synchronise with others. Each GEMM is therefore bracketed: `client.sync()` waits
//! for every queued CubeCL kernel (so `x`, `W` and `b` are written), cuBLASLt runs on our
//! own stream, and that stream is synchronised before returning (so later CubeCL kernels
//! see `y`). The device pointers come from `ComputeClient::get_resource`, whose guards pin
//! the allocations until the GEMM has finished: no buffer can be freed or reused while
//! cuBLASLt reads or writes it. The bracket costs two host round trips per GEMM (about
//! 30 µs measured on an H200 with CubeCL 0.11, similar here) and drains the launch queue;
//! at the denoisers' sizes (hundreds of GEMMs of 1-20 ms per step) that is under 2%.
//!
//! # Errors
//! [`GemmError::NotHandled`] marks inputs this path does not take (f32, mixed dtypes,
//! other layouts): the caller runs Burn's matmul without a warning. Other errors (library
//! not found, cuBLASLt status) make the caller fall back with a warning.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaContext, CudaStream};

use crate::Epilogue;

/// Why a cuBLASLt GEMM did not run.
#[derive(Debug, thiserror::Error)]
pub enum GemmError {
    /// Inputs this path does not take (the caller uses Burn's matmul).
    #[error("not handled by cuBLASLt: {0}")]
    NotHandled(String),
    /// The CUDA driver or cuBLASLt failed.
    #[error("cuBLASLt: {0}")]
    Cuda(String),
}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> GemmError {
    GemmError::Cuda(format!("{what}: {e:?}"))
}

/// `cublasOperation_t` values (cublas_api.h); cudarc's cuBLASLt bindings take the
/// attribute as a plain 32-bit integer.
const CUBLAS_OP_N: i32 = 0;
const CUBLAS_OP_T: i32 = 1;

/// Workspace handed to cuBLASLt (what its documentation recommends for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

/// What makes two GEMMs share descriptors and an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    m: usize,
    n: usize,
    k: usize,
    half: bool,
    /// The weight is the transposed view of a `[N, K]` buffer (torch layout).
    weight_nk: bool,
    bias: bool,
    epilogue: Epilogue,
}

/// Descriptors and the chosen algorithm of one [`Key`].
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created by this module, destroyed once.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.d);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// Per-thread cuBLASLt state for one device.
struct Engine {
    device: usize,
    _ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    handle: sys::cublasLtHandle_t,
    workspace: cudarc::driver::sys::CUdeviceptr,
    plans: HashMap<Key, Plan>,
}

impl Engine {
    fn new(device: usize) -> Result<Self, GemmError> {
        let ctx = CudaContext::new(device).map_err(|e| cuda_err("CUDA context", e))?;
        let stream = ctx.new_stream().map_err(|e| cuda_err("CUDA stream", e))?;
        let handle = lt::create_handle().map_err(|e| cuda_err("cublasLtCreate", e))?;
        ctx.bind_to_thread()
            .map_err(|e| cuda_err("bind context", e))?;
        // SAFETY: plain device allocation on the bound context, freed in Drop.
        let workspace = unsafe { cudarc::driver::result::malloc_sync(WORKSPACE_BYTES) }
            .map_err(|e| cuda_err("workspace allocation", e))?;
        Ok(Engine {
            device,
            _ctx: ctx,
            stream,
            handle,
            workspace,
            plans: HashMap::new(),
        })
    }

    fn plan(&mut self, key: Key) -> Result<&Plan, GemmError> {
        if !self.plans.contains_key(&key) {
            let plan = build_plan(self.handle, key)?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created in `new`, destroyed once; the stream is idle (every GEMM syncs).
        unsafe {
            let _ = cudarc::driver::result::free_sync(self.workspace);
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

thread_local! {
    static ENGINES: RefCell<Vec<Engine>> = const { RefCell::new(Vec::new()) };
}

fn set_attr<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> Result<(), GemmError> {
    // SAFETY: `value` is a live `T` of the size passed; the descriptor is live.
    unsafe {
        lt::set_matmul_desc_attribute(
            desc,
            attr,
            value as *const T as *const c_void,
            std::mem::size_of::<T>(),
        )
    }
    .map_err(|e| cuda_err("cublasLtMatmulDescSetAttribute", e))
}

fn build_plan(handle: sys::cublasLtHandle_t, key: Key) -> Result<Plan, GemmError> {
    use sys::cublasLtMatmulDescAttributes_t as A;
    let dt = if key.half {
        sys::cudaDataType::CUDA_R_16F
    } else {
        sys::cudaDataType::CUDA_R_16BF
    };
    let desc = lt::create_matmul_desc(
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        sys::cudaDataType::CUDA_R_32F,
    )
    .map_err(|e| cuda_err("cublasLtMatmulDescCreate", e))?;
    let (m, n, k) = (key.m as u64, key.n as u64, key.k as u64);
    // A: the weight. Torch layout [N, K] row-major = column-major K x N, used transposed;
    // [K, N] row-major = column-major N x K, used as is.
    let (trans_a, a_rows, a_cols, lda) = if key.weight_nk {
        (CUBLAS_OP_T, k, n, k)
    } else {
        (CUBLAS_OP_N, n, k, n)
    };
    let trans_b = CUBLAS_OP_N;
    set_attr(desc, A::CUBLASLT_MATMUL_DESC_TRANSA, &trans_a)?;
    set_attr(desc, A::CUBLASLT_MATMUL_DESC_TRANSB, &trans_b)?;
    let epilogue = match (key.bias, key.epilogue) {
        (false, Epilogue::None) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
        (true, Epilogue::None) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
        (false, Epilogue::GeluTanh) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU,
        (true, Epilogue::GeluTanh) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS,
    };
    set_attr(desc, A::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
    let layout = |rows: u64, cols: u64, ld: u64| {
        lt::create_matrix_layout(dt, rows, cols, ld as i64)
            .map_err(|e| cuda_err("cublasLtMatrixLayoutCreate", e))
    };
    let a = layout(a_rows, a_cols, lda)?;
    let b = layout(k, m, k)?;
    let d = layout(n, m, n)?;
    let pref = lt::create_matmul_pref().map_err(|e| cuda_err("preference", e))?;
    let ws = WORKSPACE_BYTES as u64;
    // SAFETY: live preference; the value is a u64 as the attribute requires.
    unsafe {
        lt::set_matmul_pref_attribute(
            pref,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &ws as *const u64 as *const c_void,
            std::mem::size_of::<u64>(),
        )
    }
    .map_err(|e| cuda_err("preference workspace", e))?;
    // SAFETY: every descriptor is live; C and D share a layout (beta = 0).
    let heuristic = unsafe { lt::get_matmul_algo_heuristic(handle, desc, a, b, d, d, pref) };
    // SAFETY: created above, destroyed once.
    unsafe {
        let _ = lt::destroy_matmul_pref(pref);
    }
    let heuristic = heuristic.map_err(|e| {
        cuda_err(
            &format!("no cuBLASLt algorithm for m={m} n={n} k={k} ({key:?})"),
            e,
        )
    })?;
    Ok(Plan {
        desc,
        a,
        b,
        d,
        algo: heuristic.algo,
    })
}

/// Whether the `[K, N]` weight is the transposed view of a contiguous `[N, K]` buffer
/// (`Some(true)`), contiguous itself (`Some(false)`), or neither (`None`).
fn weight_layout(shape: &[usize], strides: &[usize]) -> Option<bool> {
    let (k, n) = (shape[0], shape[1]);
    if strides == [1, k] || (n == 1 && strides[0] == 1) {
        Some(true)
    } else if strides == [n, 1] || (k == 1 && strides[1] == 1) {
        Some(false)
    } else {
        None
    }
}

/// `act(x · weight + bias)` on cuBLASLt. `x` must be contiguous `[M, K]`, `weight`
/// `[K, N]` (contiguous or the transposed view of `[N, K]`), `bias` contiguous `[N]`.
pub fn linear(
    x: CubeTensor<CudaRuntime>,
    weight: CubeTensor<CudaRuntime>,
    bias: Option<CubeTensor<CudaRuntime>>,
    epilogue: Epilogue,
) -> Result<CubeTensor<CudaRuntime>, GemmError> {
    let half = match x.dtype {
        DType::BF16 => false,
        DType::F16 => true,
        other => return Err(GemmError::NotHandled(format!("dtype {other:?}"))),
    };
    if weight.dtype != x.dtype || bias.as_ref().is_some_and(|b| b.dtype != x.dtype) {
        return Err(GemmError::NotHandled("mixed dtypes".into()));
    }
    let xs: Vec<usize> = x.meta.shape().to_vec();
    let ws: Vec<usize> = weight.meta.shape().to_vec();
    let wstrides: Vec<usize> = weight.meta.strides().to_vec();
    let (m, k) = (xs[0], xs[1]);
    let n = ws[1];
    if ws[0] != k
        || bias
            .as_ref()
            .is_some_and(|b| b.meta.shape().to_vec() != [n])
    {
        return Err(GemmError::NotHandled(format!(
            "shapes x {xs:?}, weight {ws:?}"
        )));
    }
    if m == 0 || n == 0 || k == 0 {
        return Err(GemmError::NotHandled("empty matrix".into()));
    }
    let Some(weight_nk) = weight_layout(&ws, &wstrides) else {
        return Err(GemmError::NotHandled(format!(
            "weight strides {wstrides:?}"
        )));
    };
    let device = x.device.index;
    let client = x.client.clone();
    let out = empty_device_contiguous_dtype(
        client.clone(),
        x.device.clone(),
        Shape::new([m, n]),
        x.dtype,
    );
    let key = Key {
        m,
        n,
        k,
        half,
        weight_nk,
        bias: bias.is_some(),
        epilogue,
    };
    // Every queued CubeCL kernel (writers of x, W, b) finishes first.
    cubecl::future::block_on(client.sync()).map_err(|e| cuda_err("CubeCL sync", e))?;
    // The guards pin the allocations until the GEMM below has completed.
    let res = |h: &cubecl::server::Handle| {
        client
            .get_resource(h.clone())
            .map_err(|e| cuda_err("CubeCL buffer", e))
    };
    let (rx, rw, ro) = (res(&x.handle)?, res(&weight.handle)?, res(&out.handle)?);
    let rb = match &bias {
        Some(b) => Some(res(&b.handle)?),
        None => None,
    };
    let (px, pw, po) = (rx.resource().ptr, rw.resource().ptr, ro.resource().ptr);
    let pb = rb.as_ref().map(|r| r.resource().ptr);
    ENGINES.with(|engines| -> Result<(), GemmError> {
        let mut engines = engines.borrow_mut();
        if !engines.iter().any(|e| e.device == device) {
            engines.push(Engine::new(device)?);
        }
        let engine = engines
            .iter_mut()
            .find(|e| e.device == device)
            .expect("just inserted");
        engine
            ._ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("bind context", e))?;
        let (handle, workspace) = (engine.handle, engine.workspace);
        let stream = engine.stream.clone();
        let plan = engine.plan(key)?;
        if let Some(pb) = pb {
            set_attr(
                plan.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &pb,
            )?;
        }
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the pointers are live device allocations of the sizes the layouts
        // describe (checked shapes, contiguous or checked strides), pinned by the guards;
        // descriptors and workspace are live; the stream belongs to the same context.
        unsafe {
            lt::matmul(
                handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                pw as *const c_void,
                plan.a,
                px as *const c_void,
                plan.b,
                po as *const c_void,
                plan.d,
                po as *mut c_void,
                plan.d,
                &plan.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| cuda_err(&format!("cublasLtMatmul m={m} n={n} k={k}"), e))?;
        stream
            .synchronize()
            .map_err(|e| cuda_err("stream synchronize", e))
    })?;
    drop((rx, rw, ro, rb));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::weight_layout;

    #[test]
    fn weight_layouts() {
        // [K=4, N=3] as the transposed view of a contiguous [3, 4].
        assert_eq!(weight_layout(&[4, 3], &[1, 4]), Some(true));
        assert_eq!(weight_layout(&[4, 3], &[3, 1]), Some(false));
        assert_eq!(weight_layout(&[4, 3], &[6, 2]), None);
        assert_eq!(weight_layout(&[4, 1], &[1, 4]), Some(true));
    }
}
