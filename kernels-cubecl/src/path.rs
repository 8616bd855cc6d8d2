//! Run-time choice between the tensor-core and the portable kernel.

use crate::kernel::{mma, portable, tensor_core};
use crate::{AttnDtype, KernelError, KernelPath, SparseAttention, TcEngine, TcOptions};
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
    let warps = tc_warps(block_size, &p.tc);
    if !block_size.is_multiple_of(warps * tensor_core::ROWS_PER_PLANE) {
        return Some(format!("block size {block_size} is not a multiple of 64"));
    }
    let smem = match engine {
        TcEngine::Mma => mma::shared_bytes(p.head_dim, p.dtype.size(), warps, p.tc.async_kv),
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

/// Planes per cube for a block size: `options.warps` (4 or 8) when the block size is a
/// multiple of its rows, else the default 4 planes (64 rows).
pub(crate) fn tc_warps(block_size: usize, options: &TcOptions) -> usize {
    let w = options.warps;
    if block_size.is_multiple_of(w * tensor_core::ROWS_PER_PLANE) {
        w
    } else {
        tensor_core::WARPS
    }
}

/// The tensor-core engine [`crate::launch`] uses for this problem on this client: the mma
/// kernel where the device has `mma.sync m16n8k16 (dtype, dtype) -> f32` (sm_80+) and the
/// options ask for it, else the wmma kernel.
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
    if p.tc.engine == TcEngine::Mma && client.features().matmul.mma.contains(&cfg) {
        TcEngine::Mma
    } else {
        TcEngine::Wmma
    }
}
