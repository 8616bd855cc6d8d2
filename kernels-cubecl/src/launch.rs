//! Validation, path selection and the single launch per layer.

use crate::kernel::{portable, tensor_core};
use crate::{AttnDtype, DeviceLayer, KernelError, KernelPath, SparseAttention};
use cubecl::features::{MmaConfig, Plane};
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;
use cubecl::server::Handle;
use std::cell::Cell;

thread_local! {
    static LAUNCHES: Cell<u64> = const { Cell::new(0) };
}

/// Kernel launches issued by this crate from the calling thread (every successful
/// [`launch`] call issues exactly one). Per thread so that tests running in parallel can
/// pin "one launch per layer" exactly.
pub fn launch_count() -> u64 {
    LAUNCHES.with(|c| c.get())
}

/// Device buffers of one call. All are plain contiguous buffers (row-major, no strides):
/// `q`, `k`, `v`, `out`: `[batch, heads, tokens, head_dim]` of the problem's dtype;
/// `key_padding`: `[batch, tokens]` of the problem's mask dtype (nonzero = valid key);
/// `lse`: `[batch, heads, tokens]` f32. Handles may carry offsets (sub-allocations); for
/// the tensor-core path the start of q/k/v must be 16-byte aligned.
#[derive(Debug, Clone, Copy)]
pub struct AttentionBuffers<'a> {
    /// Queries.
    pub q: &'a Handle,
    /// Keys.
    pub k: &'a Handle,
    /// Values.
    pub v: &'a Handle,
    /// Output (fully overwritten).
    pub out: &'a Handle,
    /// Optional key-padding mask (must be given iff the problem declares one).
    pub key_padding: Option<&'a Handle>,
    /// Optional lse output (must be given iff the problem wants it).
    pub lse: Option<&'a Handle>,
}

/// What [`launch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchInfo {
    /// The path that ran (never [`KernelPath::Auto`]).
    pub path: KernelPath,
    /// Grid `(query tiles, heads, batch)`.
    pub cube_count: (u32, u32, u32),
    /// Kernel launches issued (always 1).
    pub launches: u32,
}

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
    if !f.matmul.cmma.contains(&cfg) {
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
    let smem = tensor_core::shared_bytes(p.head_dim, p.dtype.size(), warps);
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

/// The path [`launch`] would take for this problem on this client.
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

fn check_buffer(name: &'static str, h: &Handle, needed: usize) -> Result<(), KernelError> {
    let got = h.size_in_used();
    if got < needed as u64 {
        return Err(KernelError::Buffer {
            name,
            needed: needed as u64,
            got,
        });
    }
    Ok(())
}

fn validate<R: Runtime>(
    client: &ComputeClient<R>,
    layer: &DeviceLayer<R>,
    p: &SparseAttention,
    bufs: &AttentionBuffers<'_>,
) -> Result<(), KernelError> {
    p.validate()?;
    if p.heads != layer.meta.heads {
        return Err(KernelError::Shape {
            field: "heads",
            expected: layer.meta.heads,
            got: p.heads,
        });
    }
    if layer.meta.tokens != 0 && p.tokens != layer.meta.tokens {
        return Err(KernelError::Shape {
            field: "tokens",
            expected: layer.meta.tokens,
            got: p.tokens,
        });
    }
    let f = client.features();
    if !f.supports_type(p.dtype.storage()) {
        return Err(KernelError::Dtype {
            dtype: p.dtype.name(),
            reason: "the device cannot store it".into(),
        });
    }
    let bytes = p.qkv_elems() * p.dtype.size();
    for (name, h) in [
        ("q", bufs.q),
        ("k", bufs.k),
        ("v", bufs.v),
        ("out", bufs.out),
    ] {
        check_buffer(name, h, bytes)?;
    }
    match (p.key_padding, bufs.key_padding) {
        (Some(dt), Some(h)) => {
            if !f.supports_type(dt.storage()) {
                return Err(KernelError::Dtype {
                    dtype: "mask",
                    reason: format!("{dt:?} masks are not supported here"),
                });
            }
            check_buffer("key_padding", h, p.batch * p.tokens * dt.size())?;
        }
        (None, None) => {}
        _ => {
            return Err(KernelError::Option(
                "key_padding buffer and problem.key_padding disagree".into(),
            ));
        }
    }
    match (p.want_lse, bufs.lse) {
        (true, Some(h)) => check_buffer("lse", h, p.batch * p.heads * p.tokens * 4)?,
        (false, None) => {}
        _ => {
            return Err(KernelError::Option(
                "lse buffer and problem.want_lse disagree".into(),
            ));
        }
    }
    Ok(())
}

/// Tensor-core variant knob: `VDIT_TC_PREFETCH_V=1` keeps V's global loads in flight
/// during `S = Q K^T` and the softmax (one more cube barrier per tile, more registers).
/// Read once per process; meant for benchmarking the two variants.
fn prefetch_v() -> bool {
    static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FLAG.get_or_init(|| std::env::var("VDIT_TC_PREFETCH_V").is_ok_and(|v| v == "1"))
}

/// Tensor-core variant knob: `VDIT_TC_WARPS=8` runs 128 query rows per cube (8 planes)
/// when the block size allows it; the default is 4 planes (64 rows).
fn tc_warps(block_size: usize) -> usize {
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

/// Runs sparse attention for every head of one layer in a single kernel launch.
///
/// Grid: `(ceil(tokens / rows_per_cube), heads, batch)` with 16 rows per cube on the
/// portable path and 64 on the tensor-core path. The launch is asynchronous (errors from
/// the device surface at the next sync/read). Bad input returns a [`KernelError`] and
/// launches nothing.
pub fn launch<R: Runtime>(
    client: &ComputeClient<R>,
    layer: &DeviceLayer<R>,
    problem: &SparseAttention,
    bufs: AttentionBuffers<'_>,
) -> Result<LaunchInfo, KernelError> {
    validate(client, layer, problem, &bufs)?;
    // An all-skip layer has no tables; any block size works since no table is read.
    let block_size = if layer.meta.block_size == 0 {
        64
    } else {
        layer.meta.block_size
    };
    let path = select_path(client, problem, block_size)?;
    let rows = match path {
        KernelPath::TensorCore => tc_warps(block_size) * tensor_core::ROWS_PER_PLANE,
        _ => portable::TQ,
    };
    let tiles = problem.tokens.div_ceil(rows);
    let grid = (tiles as u32, problem.heads as u32, problem.batch as u32);
    let max = client.properties().hardware.max_cube_count;
    if grid.0 > max.0 || grid.1 > max.1 || grid.2 > max.2 {
        return Err(KernelError::Grid(format!(
            "{grid:?} exceeds the device limit {max:?}"
        )));
    }
    let n = problem.qkv_elems();
    let mask_dtype = problem.key_padding.unwrap_or(crate::MaskDtype::U32);
    let mask = match bufs.key_padding {
        Some(h) => (h.clone(), problem.batch * problem.tokens),
        None => (layer.dummy_mask.clone(), 1),
    };
    let lse = match bufs.lse {
        Some(h) => (h.clone(), problem.batch * problem.heads * problem.tokens),
        None => (layer.dummy_lse.clone(), 1),
    };
    let m = &layer.meta;
    let count = CubeCount::Static(grid.0, grid.1, grid.2);
    let dtypes = [problem.dtype.storage(), mask_dtype.storage()];
    let (scale, tokens, heads) = (
        problem.scale_value(),
        problem.tokens as u32,
        problem.heads as u32,
    );
    // SAFETY: every buffer length was validated against the problem above; the kernels
    // index q/k/v/out only below `batch*heads*tokens*head_dim`, the mask below
    // `batch*tokens`, lse below `batch*heads*tokens`, and the layer arrays through offsets
    // built by `HostLayer::build` for this layer.
    unsafe {
        let arr = |h: &Handle, len: usize| ArrayArg::from_raw_parts(h.clone(), len);
        match path {
            KernelPath::TensorCore => tensor_core::sparse_attn_tc::launch_unchecked::<R>(
                client,
                count,
                CubeDim::new_2d(tensor_core::LANES as u32, tc_warps(block_size) as u32),
                8,
                arr(bufs.q, n),
                arr(bufs.k, n),
                arr(bufs.v, n),
                arr(&mask.0, mask.1),
                arr(bufs.out, n),
                arr(&lse.0, lse.1),
                arr(&layer.head_info, m.heads * 4),
                arr(&layer.row_ptr, layer.rp_len),
                arr(&layer.col_idx, layer.col_len),
                arr(&layer.perm, layer.perm_len),
                tokens,
                heads,
                scale,
                f32::NEG_INFINITY,
                problem.head_dim,
                block_size,
                problem.key_padding.is_some(),
                problem.want_lse,
                prefetch_v(),
                tc_warps(block_size),
                dtypes,
            ),
            _ => portable::sparse_attn_portable::launch::<R>(
                client,
                count,
                CubeDim::new_1d(portable::UNITS as u32),
                arr(bufs.q, n),
                arr(bufs.k, n),
                arr(bufs.v, n),
                arr(&mask.0, mask.1),
                arr(bufs.out, n),
                arr(&lse.0, lse.1),
                arr(&layer.head_info, m.heads * 4),
                arr(&layer.row_ptr, layer.rp_len),
                arr(&layer.col_idx, layer.col_len),
                arr(&layer.perm, layer.perm_len),
                tokens,
                heads,
                scale,
                f32::NEG_INFINITY,
                problem.head_dim,
                block_size,
                problem.key_padding.is_some(),
                problem.want_lse,
                dtypes,
            ),
        }
    }
    LAUNCHES.with(|c| c.set(c.get() + 1));
    Ok(LaunchInfo {
        path,
        cube_count: grid,
        launches: 1,
    })
}
