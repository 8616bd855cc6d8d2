//! Tensor-core kernel (`cmma` 16x16x16, f16/bf16 in, f32 accumulate). Needs plane
//! operations and 32-lane planes (CUDA); head dims that are multiples of 64.
//!
//! One cube = 16 query rows per plane (4 planes by default: 64 rows, `CubeDim = (32, 4)`;
//! 8 planes as a variant) of one (batch, head).
//! The plane's Q rows live in registers as cmma A fragments for the whole key loop. Per
//! 64-key tile: K and V are staged in shared memory (16-byte global loads and shared
//! stores, rows gathered through the permutation, rows padded by 16 bytes against bank
//! conflicts); each plane computes `S = Q K^T` (16 x 64) with cmma into f32, runs the
//! online softmax on shared memory with two lanes per row, casts `P` to the input type and accumulates `O += P V` in cmma
//! f32 fragments held across the key loop.
//!
//! Rescaling is lazy (as in FlashAttention-4): the running max used for the exponentials
//! only moves when the tile max exceeds it by more than [`RESCALE_THRESHOLD`], so
//! `P <= e^8` and the accumulator round trip through shared memory (cmma fragments are
//! opaque) is rare; the final normalisation uses the same max, so the result is exact up
//! to rounding. Launched unchecked (`crate::launch` validates every buffer length first)
//! with fast `exp`/`ln` (every argument is finite: masked scores use a finite sentinel).

use super::{MASKED, MASKED_THRESHOLD};
use cubecl::prelude::*;

/// Query rows per plane (one cmma M tile).
pub(crate) const ROWS_PER_PLANE: usize = 16;
/// Keys per shared-memory tile.
pub(crate) const BK: usize = 64;
/// Default planes per cube (64 query rows); 8 planes (128 rows) is a variant.
pub(crate) const WARPS: usize = 4;
/// Lanes per plane this kernel assumes.
pub(crate) const LANES: usize = 32;
/// Growth (natural log units) of the running max tolerated before the accumulators are rescaled.
pub(crate) const RESCALE_THRESHOLD: f32 = 8.0;
/// Row padding (elements) of the f16/bf16 tiles: 16 bytes, so that the 8 rows read by one
/// `ldmatrix` phase start in different banks.
pub(crate) const PAD_H: usize = 8;
/// Row stride (f32) of a plane's 16 x 64 staging area: 64 + 4, which with the per-lane
/// rotated column order makes the softmax loops bank-conflict free.
pub(crate) const STAGE: usize = BK + 4;

/// Shared memory bytes for a head dim and element size.
pub(crate) fn shared_bytes(head_dim: usize, elem: usize, warps: usize) -> usize {
    let ds = head_dim + PAD_H;
    let k_rows = BK.max(warps * ROWS_PER_PLANE);
    ((k_rows + BK) * ds + warps * 16 * (BK + PAD_H)) * elem + warps * 16 * STAGE * 4
}

#[cube]
fn natural_tc(p: u32, permuted: bool, perm: &Array<u32>) -> u32 {
    let mut n = p;
    if permuted {
        n = perm[p as usize];
    }
    n
}

/// Loads `rows` rows (starting at table position `p0`) of a `[tokens, D]` slab into
/// shared memory `dst` (`rows x stride`), zero-filling rows past `tokens`.
///
/// Fully unrolled and branch-free (rows past the end are clamped, then replaced by zeros
/// with a select), so every thread issues all of its 16-byte global loads before the
/// first shared-memory store instead of paying one memory latency per vector.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_rows<F: Float, N: Size>(
    src: &Array<Vector<F, N>>,
    dst: &mut SharedMemory<F>,
    base_v: usize,
    p0: u32,
    tokens: u32,
    permuted: bool,
    perm: &Array<u32>,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
) {
    let vn = N::value();
    let dv = comptime!(head_dim / vn);
    let sv = comptime!(stride / vn);
    let per_thread = comptime!(rows * dv / threads);
    let zero = Vector::<F, N>::new(F::new(0.0));
    let mut view = dst
        .slice_mut(0, rows * stride)
        .into_vectorized()
        .with_vector_size::<N>();
    #[unroll]
    for j in 0..per_thread {
        let i = UNIT_POS + (j * threads) as u32;
        let rr = i / dv as u32;
        let c = i % dv as u32;
        let pp = p0 + rr;
        let inside = pp < tokens;
        let pc = select(inside, pp, tokens - 1);
        let pn = perm[select(permuted, pc, 0u32) as usize];
        let n = select(permuted, pn, pc);
        let val = src[base_v + n as usize * dv + c as usize];
        view[rr as usize * sv + c as usize] = select(inside, val, zero);
    }
}

/// Issues the global loads of [`load_rows`] into registers (one vector per slot) without
/// storing them, so their latency overlaps the following computation.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch_rows<F: Float, N: Size>(
    src: &Array<Vector<F, N>>,
    base_v: usize,
    p0: u32,
    tokens: u32,
    permuted: bool,
    perm: &Array<u32>,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] threads: usize,
) -> Sequence<Vector<F, N>> {
    let vn = N::value();
    let dv = comptime!(head_dim / vn);
    let per_thread = comptime!(rows * dv / threads);
    let zero = Vector::<F, N>::new(F::new(0.0));
    let mut regs = Sequence::<Vector<F, N>>::new();
    #[unroll]
    for j in 0..per_thread {
        let i = UNIT_POS + (j * threads) as u32;
        let rr = i / dv as u32;
        let c = i % dv as u32;
        let pp = p0 + rr;
        let inside = pp < tokens;
        let pc = select(inside, pp, tokens - 1);
        let pn = perm[select(permuted, pc, 0u32) as usize];
        let n = select(permuted, pn, pc);
        let val = src[base_v + n as usize * dv + c as usize];
        regs.push(select(inside, val, zero));
    }
    regs
}

/// Stores what [`fetch_rows`] loaded into shared memory (`rows x stride`).
#[cube]
fn store_rows<F: Float, N: Size>(
    regs: &Sequence<Vector<F, N>>,
    dst: &mut SharedMemory<F>,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
) {
    let vn = N::value();
    let dv = comptime!(head_dim / vn);
    let sv = comptime!(stride / vn);
    let per_thread = comptime!(rows * dv / threads);
    let mut view = dst
        .slice_mut(0, rows * stride)
        .into_vectorized()
        .with_vector_size::<N>();
    #[unroll]
    for j in 0..per_thread {
        let i = UNIT_POS + (j * threads) as u32;
        let rr = i / dv as u32;
        let c = i % dv as u32;
        view[rr as usize * sv + c as usize] = *regs.index(j);
    }
}

#[cube(
    launch_unchecked,
    fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf
)]
// The lse store nests a runtime condition inside a comptime one.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
pub(crate) fn sparse_attn_tc<F: Float, M: Int, N: Size>(
    q: &Array<Vector<F, N>>,
    k: &Array<Vector<F, N>>,
    v: &Array<Vector<F, N>>,
    key_mask: &Array<M>,
    out: &mut Array<F>,
    lse: &mut Array<f32>,
    head_info: &Array<u32>,
    row_ptr: &Array<u32>,
    col_idx: &Array<u32>,
    perm: &Array<u32>,
    tokens: u32,
    kv_tokens: u32,
    heads: u32,
    scale: f32,
    neg_inf: f32,
    #[comptime] head_dim: usize,
    #[comptime] block_size: usize,
    #[comptime] has_mask: bool,
    #[comptime] want_lse: bool,
    #[comptime] prefetch_v: bool,
    #[comptime] warps: usize,
    #[define(F, M)] _dtypes: [StorageType; 2],
) {
    let masked = f32::new(MASKED);
    let masked_threshold = f32::new(MASKED_THRESHOLD);
    let rescale_threshold = f32::new(RESCALE_THRESHOLD);
    let vn = N::value();
    let ds = comptime!(head_dim + PAD_H);
    let ps = comptime!(BK + PAD_H);
    let dtiles = comptime!(head_dim / 16);
    let ktiles = comptime!(BK / 16);
    let chunks = comptime!(head_dim / BK);
    let half_k = comptime!(BK / 2);
    let nthreads = comptime!(warps * LANES);
    let threads = nthreads as u32;
    let bq = comptime!(warps * ROWS_PER_PLANE);
    let k_rows = comptime!(if bq > BK { bq } else { BK });

    let lane = UNIT_POS_X;
    let warp = UNIT_POS_Y;
    let h = CUBE_POS_Y;
    let b = CUBE_POS_Z;
    let row0 = CUBE_POS_X * bq as u32;
    let qb = row0 / block_size as u32;

    let info = h as usize * 4;
    let kind = head_info[info];
    let rp = head_info[info + 1] as usize;
    let permuted = head_info[info + 2] == 1;

    let bh = b * heads + h;
    let base = bh as usize * tokens as usize * head_dim;
    let base_v = base / vn;
    let base_kv_v = bh as usize * kv_tokens as usize * head_dim / vn;

    if kind == 0 {
        for i in range_stepped(UNIT_POS, (bq * head_dim) as u32, threads) {
            let pp = row0 + i / head_dim as u32;
            if pp < tokens {
                let n = natural_tc(pp, permuted, perm);
                out[base + n as usize * head_dim + (i % head_dim as u32) as usize] =
                    F::cast_from(0.0f32);
            }
        }
        if comptime!(want_lse) {
            let pp = row0 + UNIT_POS;
            if UNIT_POS < bq as u32 && pp < tokens {
                let n = natural_tc(pp, permuted, perm);
                lse[bh as usize * tokens as usize + n as usize] = neg_inf;
            }
        }
    } else {
        let mut sk = SharedMemory::<F>::new_aligned(k_rows * ds, 16usize);
        let mut sv = SharedMemory::<F>::new_aligned(BK * ds, 16usize);
        let mut sp = SharedMemory::<F>::new_aligned(warps * 16 * ps, 16usize);
        let mut st = SharedMemory::<f32>::new_aligned(warps * 16 * STAGE, 16usize);

        // Q tile through the K buffer into per-plane A fragments (registers).
        load_rows::<F, N>(
            q, &mut sk, base_v, row0, tokens, permuted, perm, bq, head_dim, ds, nthreads,
        );
        sync_cube();
        let q_off = warp as usize * 16 * ds;
        let mut qf = Sequence::<cmma::Matrix<F>>::new();
        #[unroll]
        for kk in 0..dtiles {
            qf.push(cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::A,
                16usize,
                16usize,
                16usize,
                cmma::MatrixLayout::RowMajor,
                &sk.slice(q_off + kk * 16, q_off + kk * 16 + 15 * ds + 16),
                ds as u32,
            ));
        }

        let mut acc = Sequence::<cmma::Matrix<f32>>::new();
        #[unroll]
        for _j in 0..dtiles {
            acc.push(cmma::Matrix::<f32>::from_value(
                cmma::MatrixIdent::Accumulator,
                16usize,
                16usize,
                16usize,
                cmma::MatrixLayout::Undefined,
                0.0f32,
            ));
        }
        let sfr = cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::Undefined,
            0.0f32,
        );

        // Two lanes per row: row `lr` of this plane, half `hf`.
        let lr = lane / 2;
        let hf = lane % 2;
        let p_off = warp as usize * 16 * ps;
        let s_off = warp as usize * 16 * STAGE;
        let srow = s_off + lr as usize * STAGE;
        let prow = p_off + lr as usize * ps;
        let mut m = masked;
        let mut l = 0.0f32;

        let start = row_ptr[rp + qb as usize];
        let end = row_ptr[rp + qb as usize + 1];
        for e in start..end {
            let kb = col_idx[e as usize];
            for c in 0..comptime!(block_size / BK) as u32 {
                let k0 = kb * block_size as u32 + c * BK as u32;
                if k0 < kv_tokens {
                    sync_cube();
                    load_rows::<F, N>(
                        k, &mut sk, base_kv_v, k0, kv_tokens, permuted, perm, BK, head_dim, ds,
                        nthreads,
                    );
                    // With `prefetch_v`, V's loads stay in flight during S and the softmax.
                    let vrows = comptime!(if prefetch_v { BK } else { 0 });
                    let vregs = fetch_rows::<F, N>(
                        v, base_kv_v, k0, kv_tokens, permuted, perm, vrows, head_dim, nthreads,
                    );
                    if comptime!(!prefetch_v) {
                        load_rows::<F, N>(
                            v, &mut sv, base_kv_v, k0, kv_tokens, permuted, perm, BK, head_dim, ds,
                            nthreads,
                        );
                    }
                    sync_cube();

                    // S = Q K^T (16 x BK per plane), one 16-key tile at a time so that
                    // a single accumulator is live.
                    #[unroll]
                    for n in 0..ktiles {
                        cmma::fill(&sfr, 0.0f32);
                        #[unroll]
                        for kk in 0..dtiles {
                            let kt = n * 16 * ds + kk * 16;
                            let bm = cmma::Matrix::<F>::from_slice(
                                cmma::MatrixIdent::B,
                                16usize,
                                16usize,
                                16usize,
                                cmma::MatrixLayout::ColMajor,
                                &sk.slice(kt, kt + 15 * ds + 16),
                                ds as u32,
                            );
                            cmma::execute::<F, F, f32, f32>(qf.index(kk), &bm, &sfr, &sfr);
                        }
                        let so = s_off + n * 16;
                        cmma::store(
                            &mut st.slice_mut(so, so + 15 * STAGE + 16),
                            &sfr,
                            STAGE as u32,
                            cmma::MatrixLayout::RowMajor,
                        );
                    }
                    sync_plane();

                    // Online softmax on shared memory.
                    let mut mt = masked;
                    #[unroll]
                    for cc in 0..half_k {
                        let col = hf as usize * half_k + (cc + lane as usize) % half_k;
                        let kp = k0 + col as u32;
                        let mut s = st[srow + col] * scale;
                        if kp >= kv_tokens {
                            s = masked;
                        } else if comptime!(has_mask) {
                            let n = natural_tc(kp, permuted, perm);
                            if key_mask[b as usize * kv_tokens as usize + n as usize]
                                == M::from_int(0)
                            {
                                s = masked;
                            }
                        }
                        st[srow + col] = s;
                        mt = f32::max(mt, s);
                    }
                    mt = f32::max(mt, plane_shuffle_xor(mt, 1));
                    let m_new = f32::max(m, mt);
                    let mut alpha = 1.0f32;
                    if m_new > m + rescale_threshold {
                        alpha = f32::exp(m - m_new);
                        m = m_new;
                    }
                    let mut rs = 0.0f32;
                    #[unroll]
                    for cc in 0..half_k {
                        let col = hf as usize * half_k + (cc + lane as usize) % half_k;
                        let s = st[srow + col];
                        let mut pr = 0.0f32;
                        if s > masked_threshold {
                            pr = f32::exp(s - m);
                        }
                        rs += pr;
                        sp[prow + col] = F::cast_from(pr);
                    }
                    rs += plane_shuffle_xor(rs, 1);
                    l = l * alpha + rs;

                    if plane_any(alpha != 1.0f32) {
                        // Rescale O through the staging area, 64 columns at a time.
                        #[unroll]
                        for ch in 0..chunks {
                            sync_plane();
                            #[unroll]
                            for t in 0..ktiles {
                                let so = s_off + t * 16;
                                cmma::store(
                                    &mut st.slice_mut(so, so + 15 * STAGE + 16),
                                    acc.index(ch * ktiles + t),
                                    STAGE as u32,
                                    cmma::MatrixLayout::RowMajor,
                                );
                            }
                            sync_plane();
                            #[unroll]
                            for cc in 0..half_k {
                                let col = hf as usize * half_k + (cc + lane as usize) % half_k;
                                st[srow + col] *= alpha;
                            }
                            sync_plane();
                            #[unroll]
                            for t in 0..ktiles {
                                let so = s_off + t * 16;
                                cmma::load_with_layout(
                                    acc.index(ch * ktiles + t),
                                    &st.slice(so, so + 15 * STAGE + 16),
                                    STAGE as u32,
                                    cmma::MatrixLayout::RowMajor,
                                );
                            }
                        }
                    }
                    if comptime!(prefetch_v) {
                        store_rows::<F, N>(&vregs, &mut sv, BK, head_dim, ds, nthreads);
                        sync_cube();
                    }
                    sync_plane();

                    // O += P V.
                    #[unroll]
                    for kk in 0..ktiles {
                        let a = cmma::Matrix::<F>::from_slice(
                            cmma::MatrixIdent::A,
                            16usize,
                            16usize,
                            16usize,
                            cmma::MatrixLayout::RowMajor,
                            &sp.slice(p_off + kk * 16, p_off + kk * 16 + 15 * ps + 16),
                            ps as u32,
                        );
                        #[unroll]
                        for j in 0..dtiles {
                            let vt = kk * 16 * ds + j * 16;
                            let bm = cmma::Matrix::<F>::from_slice(
                                cmma::MatrixIdent::B,
                                16usize,
                                16usize,
                                16usize,
                                cmma::MatrixLayout::RowMajor,
                                &sv.slice(vt, vt + 15 * ds + 16),
                                ds as u32,
                            );
                            let o = acc.index(j);
                            cmma::execute::<F, F, f32, f32>(&a, &bm, o, o);
                        }
                    }
                }
            }
        }

        // Epilogue: stage O 64 columns at a time, normalise, scatter rows to their
        // natural positions.
        let pp = row0 + warp * 16 + lr;
        let valid = pp < tokens;
        let mut n = 0u32;
        if valid {
            n = natural_tc(pp, permuted, perm);
        }
        let has = l > 0.0f32;
        let mut inv = 0.0f32;
        if has {
            inv = 1.0f32 / l;
        }
        let obase = base + n as usize * head_dim;
        #[unroll]
        for ch in 0..chunks {
            sync_plane();
            #[unroll]
            for t in 0..ktiles {
                let so = s_off + t * 16;
                cmma::store(
                    &mut st.slice_mut(so, so + 15 * STAGE + 16),
                    acc.index(ch * ktiles + t),
                    STAGE as u32,
                    cmma::MatrixLayout::RowMajor,
                );
            }
            sync_plane();
            if valid {
                #[unroll]
                for cc in 0..half_k {
                    let col = hf as usize * half_k + cc;
                    out[obase + ch * BK + col] = F::cast_from(st[srow + col] * inv);
                }
            }
        }
        if comptime!(want_lse) {
            if valid && hf == 0 {
                let mut val = neg_inf;
                if has {
                    val = m + f32::ln(l);
                }
                lse[bh as usize * tokens as usize + n as usize] = val;
            }
        }
    }
}
