//! The single launch per layer.

use crate::kernel::{mma, portable, tensor_core};
use crate::path::{engine_for, select_path, tc_warps};
use crate::validate::validate;
use crate::{DeviceLayer, KernelError, KernelPath, SparseAttention, TcEngine};
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
    /// The tensor-core engine that ran (`None` on the portable path).
    pub engine: Option<TcEngine>,
    /// Grid `(query tiles, heads, batch)`.
    pub cube_count: (u32, u32, u32),
    /// Kernel launches issued (always 1).
    pub launches: u32,
}

/// Runs sparse attention for every head of one layer in a single kernel launch.
///
/// Grid: `(ceil(tokens / rows_per_cube), heads, batch)` with 16 rows per cube on the
/// portable path and 64 (128 with [`crate::TcOptions::warps`] 8) on the tensor-core path; under
/// [`KernelPath::Auto`] a tensor-core choice falls back to the portable kernel when q/k/v
/// do not start 16-byte aligned. The launch is asynchronous (errors from
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
    let mut path = select_path(client, problem, block_size)?;
    // The tensor-core kernel reads q/k/v with 16-byte vector loads.
    let aligned = [bufs.q, bufs.k, bufs.v]
        .iter()
        .all(|h| h.offset_start.unwrap_or(0) % 16 == 0);
    if path == KernelPath::TensorCore && !aligned {
        if problem.path == KernelPath::TensorCore {
            return Err(KernelError::Option(
                "the tensor-core path needs q/k/v handles that start 16-byte aligned".into(),
            ));
        }
        path = select_path(
            client,
            &problem.clone().with_path(KernelPath::Portable),
            block_size,
        )?;
    }
    let rows = match path {
        KernelPath::TensorCore => tc_warps(block_size, &problem.tc) * tensor_core::ROWS_PER_PLANE,
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
    let nkv = problem.kv_elems();
    let mask_dtype = problem.key_padding.unwrap_or(crate::MaskDtype::U32);
    let mask = match bufs.key_padding {
        Some(h) => (h.clone(), problem.batch * problem.kv_tokens),
        None => (layer.dummy_mask.clone(), 1),
    };
    let lse = match bufs.lse {
        Some(h) => (h.clone(), problem.batch * problem.heads * problem.tokens),
        None => (layer.dummy_lse.clone(), 1),
    };
    let m = &layer.meta;
    let tc = &problem.tc;
    let warps = tc_warps(block_size, tc);
    let engine = (path == KernelPath::TensorCore).then(|| engine_for(client, problem));
    let count = CubeCount::Static(grid.0, grid.1, grid.2);
    let dtypes = [problem.dtype.storage(), mask_dtype.storage()];
    let (scale, tokens, kv_tokens, heads) = (
        problem.scale_value(),
        problem.tokens as u32,
        problem.kv_tokens as u32,
        problem.heads as u32,
    );
    // SAFETY: every buffer length was validated against the problem above; the kernels
    // index q/out only below `batch*heads*tokens*head_dim`, k/v below
    // `batch*heads*kv_tokens*head_dim`, the mask below `batch*kv_tokens`, lse below
    // `batch*heads*tokens`, and the layer arrays through offsets built by `HostLayer` for
    // this layer (key blocks below `ceil(kv_tokens / block_size)`).
    unsafe {
        let arr = |h: &Handle, len: usize| ArrayArg::from_raw_parts(h.clone(), len);
        match path {
            KernelPath::TensorCore if engine == Some(TcEngine::Mma) => {
                mma::sparse_attn_mma::launch_unchecked::<R>(
                    client,
                    count,
                    CubeDim::new_2d(32, warps as u32),
                    8,
                    arr(bufs.q, n),
                    arr(bufs.k, nkv),
                    arr(bufs.v, nkv),
                    arr(&mask.0, mask.1),
                    arr(bufs.out, n),
                    arr(&lse.0, lse.1),
                    arr(&layer.head_info, m.heads * 4),
                    arr(&layer.row_ptr, layer.rp_len),
                    arr(&layer.col_idx, layer.col_len),
                    arr(&layer.perm, layer.perm_len),
                    tokens,
                    kv_tokens,
                    heads,
                    scale,
                    f32::NEG_INFINITY,
                    problem.head_dim,
                    block_size,
                    problem.key_padding.is_some(),
                    problem.want_lse,
                    warps,
                    tc.async_kv,
                    tc.fast,
                    dtypes,
                )
            }
            KernelPath::TensorCore => tensor_core::sparse_attn_tc::launch_unchecked::<R>(
                client,
                count,
                CubeDim::new_2d(tensor_core::LANES as u32, warps as u32),
                8,
                arr(bufs.q, n),
                arr(bufs.k, nkv),
                arr(bufs.v, nkv),
                arr(&mask.0, mask.1),
                arr(bufs.out, n),
                arr(&lse.0, lse.1),
                arr(&layer.head_info, m.heads * 4),
                arr(&layer.row_ptr, layer.rp_len),
                arr(&layer.col_idx, layer.col_len),
                arr(&layer.perm, layer.perm_len),
                tokens,
                kv_tokens,
                heads,
                scale,
                f32::NEG_INFINITY,
                problem.head_dim,
                block_size,
                problem.key_padding.is_some(),
                problem.want_lse,
                tc.prefetch_v,
                warps,
                dtypes,
            ),
            _ => portable::sparse_attn_portable::launch::<R>(
                client,
                count,
                CubeDim::new_1d(portable::UNITS as u32),
                arr(bufs.q, n),
                arr(bufs.k, nkv),
                arr(bufs.v, nkv),
                arr(&mask.0, mask.1),
                arr(bufs.out, n),
                arr(&lse.0, lse.1),
                arr(&layer.head_info, m.heads * 4),
                arr(&layer.row_ptr, layer.rp_len),
                arr(&layer.col_idx, layer.col_len),
                arr(&layer.perm, layer.perm_len),
                tokens,
                kv_tokens,
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
        engine,
        cube_count: grid,
        launches: 1,
    })
}
