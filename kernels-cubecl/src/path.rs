//! Run-time choice between the tensor-core and the portable kernel.

use crate::kernel::{mma, portable, tensor_core};
use crate::{AttnDtype, KernelError, KernelPath, SparseAttention};
use cubecl::features::{MmaConfig, Plane};
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;

fn tc_unavailable<R: Runtime>(
    client: &ComputeClient<R>,
    p: &SparseAttention,
    block_size: usize,
) -> Option<String> {
    let kind = match p.dtype {
        AttnDtype::F16 => FloatKind::F16,
        AttnDtype::BF16 => FloatKind::BF16,
        AttnDtype::F32 => return Some("tensor cores need f16 or bf16 inputs".into()),
    };
    let ab = ElemType::Float(kind).into();
    let cfg = MmaConfig {
        a_type: ab,
        b_type: ab,
        cd_type: ElemType::Float(FloatKind::F32).into(),
        m: 16,
        n: 16,
        k: 16,
    };
    let f = client.features();
    let engine = engine_for(client, p);
    if engine == TcEngine::Wmma && !f.matmul.cmma.contains(&cfg) {
        return Some(format!("no cmma 16x16x16 {} -> f32", p.dtype.name()));
    }
    if !f.plane.contains(Plane::Ops) {
        return Some("no plane operations".into());
    }
    let hw = &client.properties().hardware;
    if hw.plane_size_min != 32 || hw.plane_size_max != 32 {
        return Some(format!(
            "plane size {}..{} is not 32",
            hw.plane_size_min, hw.plane_size_max
        ));
    }
    if !p.head_dim.is_multiple_of(tensor_core::BK) {
        return Some(format!("head_dim {} is not a multiple of 64", p.head_dim));
    }
    let warps = tc_warps(block_size);
    if !block_size.is_multiple_of(warps * tensor_core::ROWS_PER_PLANE) {
        return Some(format!("block size {block_size} is not a multiple of 64"));
    }
    let smem = match engine {
        TcEngine::Mma => mma::shared_bytes(p.head_dim, p.dtype.size(), warps, tc_async()),
        TcEngine::Wmma => tensor_core::shared_bytes(p.head_dim, p.dtype.size(), warps),
    };
    if p.head_dim > 256 || smem > hw.max_shared_memory_size {
        return Some(format!(
            "head_dim {} needs {smem} bytes of shared memory",
            p.head_dim
        ));
    }
    None
}

fn portable_unavailable<R: Runtime>(
    client: &ComputeClient<R>,
    p: &SparseAttention,
    block_size: usize,
) -> Option<String> {
    let tk = portable::tile_k(block_size);
    let smem = 4 * (portable::TQ * p.head_dim + tk * p.head_dim + portable::TQ * tk);
    let max = client.properties().hardware.max_shared_memory_size;
    if smem > max {
        return Some(format!(
            "head_dim {} needs {smem} bytes of shared memory, device has {max}",
            p.head_dim
        ));
    }
    None
}

/// The path [`crate::launch`] would take for this problem on this client.
pub fn select_path<R: Runtime>(
    client: &ComputeClient<R>,
    problem: &SparseAttention,
    block_size: usize,
) -> Result<KernelPath, KernelError> {
    match problem.path {
        KernelPath::TensorCore => match tc_unavailable(client, problem, block_size) {
            None => Ok(KernelPath::TensorCore),
            Some(reason) => Err(KernelError::Path {
                path: "tensor_core",
                reason,
            }),
        },
        KernelPath::Portable => match portable_unavailable(client, problem, block_size) {
            None => Ok(KernelPath::Portable),
            Some(reason) => Err(KernelError::HeadDim {
                head_dim: problem.head_dim,
                reason,
            }),
        },
        KernelPath::Auto => {
            if tc_unavailable(client, problem, block_size).is_none() {
                Ok(KernelPath::TensorCore)
            } else {
                select_path(
                    client,
                    &problem.clone().with_path(KernelPath::Portable),
                    block_size,
                )
            }
        }
    }
}

/// Tensor-core variant knob: `VDIT_TC_PREFETCH_V=1` keeps V's global loads in flight
/// during `S = Q K^T` and the softmax (one more cube barrier per tile, more registers).
/// Read once per process; meant for benchmarking the two variants.
pub(crate) fn prefetch_v() -> bool {
    static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FLAG.get_or_init(|| std::env::var("VDIT_TC_PREFETCH_V").is_ok_and(|v| v == "1"))
}

/// Tensor-core variant knob: `VDIT_TC_WARPS=8` runs 128 query rows per cube (8 planes)
/// when the block size allows it; the default is 4 planes (64 rows).
pub(crate) fn tc_warps(block_size: usize) -> usize {
    static FLAG: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let w = *FLAG.get_or_init(|| match std::env::var("VDIT_TC_WARPS").as_deref() {
        Ok("8") => 8,
        _ => tensor_core::WARPS,
    });
    if block_size.is_multiple_of(w * tensor_core::ROWS_PER_PLANE) {
        w
    } else {
        tensor_core::WARPS
    }
}

/// The tensor-core engine: `Mma` (FlashAttention-2-style, manual `mma.sync.m16n8k16`,
/// softmax in registers; [`crate::kernel::mma`]) or `Wmma` (the first kernel: `cmma`
/// 16x16x16 fragments, S and P through shared memory; [`crate::kernel::tensor_core`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcEngine {
    Mma,
    Wmma,
}

/// The tensor-core engine [`crate::launch`] uses for this problem on this client: the mma
/// kernel where the device has `mma.sync m16n8k16 (dtype, dtype) -> f32` (sm_80+) and the
/// knob does not ask for wmma, else the wmma kernel.
pub(crate) fn engine_for<R: Runtime>(client: &ComputeClient<R>, p: &SparseAttention) -> TcEngine {
    let kind = match p.dtype {
        AttnDtype::F16 => FloatKind::F16,
        AttnDtype::BF16 => FloatKind::BF16,
        AttnDtype::F32 => return TcEngine::Wmma,
    };
    let ab = ElemType::Float(kind).into();
    let cfg = MmaConfig {
        a_type: ab,
        b_type: ab,
        cd_type: ElemType::Float(FloatKind::F32).into(),
        m: 16,
        n: 8,
        k: 16,
    };
    if tc_engine() == TcEngine::Mma && client.features().matmul.mma.contains(&cfg) {
        TcEngine::Mma
    } else {
        TcEngine::Wmma
    }
}

/// Tensor-core engine knob: `VDIT_TC_ENGINE=wmma` selects the first (wmma) kernel,
/// anything else the mma kernel where available. Read once per process.
pub(crate) fn tc_engine() -> TcEngine {
    static FLAG: std::sync::OnceLock<TcEngine> = std::sync::OnceLock::new();
    *FLAG.get_or_init(|| match std::env::var("VDIT_TC_ENGINE").as_deref() {
        Ok("wmma") => TcEngine::Wmma,
        _ => TcEngine::Mma,
    })
}

/// mma-engine knob: by default K/V are double-buffered with `cp.async` (tile i+1 in flight
/// while tile i is computed; 31.3 ms vs 44.8 ms on Wan2.1-480p dense, H100);
/// `VDIT_TC_ASYNC=0` loads them synchronously (one buffer, two cube barriers per tile).
/// Read once per process.
pub(crate) fn tc_async() -> bool {
    static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FLAG.get_or_init(|| std::env::var("VDIT_TC_ASYNC").map_or(true, |v| v != "0"))
}

/// mma-engine knob `VDIT_TC_FAST` (read once per process): `1` runs tiles whose 64 keys
/// are all valid (inside the sequence, no key padding, `scale > 0`) through an unmasked
/// softmax (one FMA and one `exp` per score, no selects), skips the `O` rescale when no row
/// maximum of a plane changed, and skips the permutation load of unpermuted heads; `2` is
/// `1` with `2^x` through `powf` instead of `exp`; `3` (the default) is `2` with tree
/// max/sum reductions and contiguous K/V row copies for unpermuted heads; `0` is the
/// previous kernel (every score scaled, masked and selected). Wan2.1-480p dense on the
/// H100 (results/kernels run 6): 31.3 / 28.4 / 27.1 / 26.6 ms for 0 / 1 / 2 / 3.
pub(crate) fn tc_fast() -> u32 {
    static FLAG: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *FLAG.get_or_init(|| match std::env::var("VDIT_TC_FAST").as_deref() {
        Ok("0") => 0,
        Ok("1") => 1,
        Ok("2") => 2,
        _ => 3,
    })
}
