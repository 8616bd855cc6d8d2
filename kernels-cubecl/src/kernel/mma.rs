//! FlashAttention-2-style tensor-core kernel on manual `mma.sync.m16n8k16`
//! (`cmma::MmaDefinition`), f16/bf16 in, f32 accumulate. CUDA only (ldmatrix, plane
//! shuffles, 32-lane planes).
//!
//! One cube = `warps` planes x 16 query rows of one (batch, head), the same grid as
//! [`super::tensor_core`]. Per plane, for the whole key loop:
//! - Q: `head_dim / 16` A fragments (4 x 32-bit registers each) loaded once with `ldmatrix`;
//! - O: `head_dim / 8` accumulator fragments (4 f32 each), register resident.
//!
//! Per 64-key tile, K and V are staged in shared memory (same gathered, zero-filled,
//! 16-byte-padded loads as the wmma kernel); `S = Q K^T` goes to 8 f32 accumulator
//! fragments (K read with `ldmatrix.x4`, two B fragments per instruction), the online
//! softmax runs on those registers (lane `l` owns rows `l/4` and `l/4 + 8`, columns
//! `2(l%4), 2(l%4)+1` of every 8-key group; row max / sum across the 4 lanes of a row
//! with `plane_shuffle_xor` 1 and 2), `P` is packed to f16/bf16 pairs and used directly
//! as the A operand of `O += P V` (the m16n8k16 accumulator layout of two adjacent
//! 8-key tiles is the A layout of one 16-key step), V read with `ldmatrix.x4.trans`.
//! No S/P shared-memory round trip, no rescale round trip (the rescale is 2 multiplies
//! per accumulator register, done every tile).
//!
//! K/V loading (`pipelined`, the default): two K and two V buffers; tile `i + 1` is copied
//! with 16-byte `cp.async` (rows gathered through the permutation, rows past the end
//! clamped to the last token and masked) while tile `i` is computed; completion is tracked
//! by one mbarrier per buffer (`commit_copy_async` + `arrive_and_wait`, which also orders
//! the reuse of a buffer after every plane finished reading it). Without `pipelined`, one
//! buffer pair is loaded synchronously between two cube barriers per tile.
//!
//! Fast path (`fast > 0`, [`crate::TcOptions::fast`], default 3): a tile whose 64 keys are all valid
//! (inside the sequence, no key-padding mask) with `scale > 0` skips every per-score select:
//! the row max is taken on the raw scores (`max(scale s) = scale max(s)`), each probability
//! is one FMA and one exponential (mode >= 2: `2^(s scale log2 e - m log2 e)` through `powf`,
//! which NVRTC folds to FFMA + `ex2`, one multiply less than `__expf`), max and sums use
//! short trees (mode 3). Tiles with any masked key (ragged tail, key padding) keep the
//! masked softmax. Both skip the `O` rescale when no row maximum of the plane changed
//! (`alpha == 1` exactly), and unpermuted heads copy K/V rows from one base address.

use super::{MASKED, MASKED_THRESHOLD};
use cubecl::cmma::MmaDefinition;
use cubecl::ir::MatrixIdent;
use cubecl::prelude::barrier::{Barrier, copy_async};
use cubecl::prelude::*;

/// Query rows per plane (one m16 tile).
pub(crate) const ROWS_PER_PLANE: usize = 16;
/// Keys per shared-memory tile.
pub(crate) const BK: usize = 64;
/// Row padding (elements) of the shared tiles (16 bytes: conflict-free `ldmatrix`).
pub(crate) const PAD_H: usize = 8;

type V2 = Const<2>;

/// Shared memory bytes for a head dim, element size and plane count.
pub(crate) fn shared_bytes(head_dim: usize, elem: usize, warps: usize, pipelined: bool) -> usize {
    let ds = head_dim + PAD_H;
    let nbuf = if pipelined { 2 } else { 1 };
    let k_rows = (nbuf * BK).max(warps * ROWS_PER_PLANE);
    (k_rows + nbuf * BK) * ds * elem + 64
}

#[cube]
fn natural_mma(p: u32, permuted: bool, perm: &Array<u32>) -> u32 {
    let mut n = p;
    if permuted {
        n = perm[p as usize];
    }
    n
}

/// Same as the wmma kernel's loader: `rows` rows from table position `p0` into `dst`
/// (`rows x stride`), rows past `tokens` zero-filled, unrolled and branch-free.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_rows_mma<F: Float, N: Size>(
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

/// Issues `cp.async` 16-byte copies of `rows` K and V rows (table positions from `p0`) into
/// `sk`/`sv` at element offset `off`. Rows past `tokens` are clamped to the last row (finite
/// data; their scores are masked, so they contribute nothing). Completion is tracked by the
/// caller's barrier (`commit_copy_async` + `arrive_and_wait`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn issue_kv<F: Float, N: Size>(
    k: &Array<Vector<F, N>>,
    v: &Array<Vector<F, N>>,
    sk: &mut SharedMemory<F>,
    sv: &mut SharedMemory<F>,
    off: usize,
    base_v: usize,
    p0: u32,
    tokens: u32,
    permuted: bool,
    perm: &Array<u32>,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
    #[comptime] skip_perm: bool,
    #[comptime] contiguous: bool,
) {
    let vn = N::value();
    let dv = comptime!(head_dim / vn);
    let per_thread = comptime!(rows * dv / threads);
    let mut contig = false;
    if comptime!(contiguous && threads.is_multiple_of(dv)) {
        contig = !permuted && p0 + rows as u32 <= tokens;
    }
    if contig {
        // Unpermuted, all rows inside: rows p0.. are contiguous, one base address per thread.
        let step_rows = comptime!(threads / dv);
        let rr = UNIT_POS as usize / dv;
        let c = UNIT_POS as usize % dv;
        let src0 = base_v + (p0 as usize + rr) * dv + c;
        let dst0 = off + rr * stride + c * vn;
        #[unroll]
        for j in 0..per_thread {
            let src = src0 + j * threads;
            let dst = dst0 + j * step_rows * stride;
            let mut kd = unsafe {
                sk.slice_mut(dst, dst + vn)
                    .downcast_unchecked::<Vector<F, N>>()
            };
            let mut vd = unsafe {
                sv.slice_mut(dst, dst + vn)
                    .downcast_unchecked::<Vector<F, N>>()
            };
            copy_async(&k.slice(src, src + 1), &mut kd, comptime!(vn as u32));
            copy_async(&v.slice(src, src + 1), &mut vd, comptime!(vn as u32));
        }
    } else {
        #[unroll]
        for j in 0..per_thread {
            let i = UNIT_POS + (j * threads) as u32;
            let rr = i / dv as u32;
            let c = i % dv as u32;
            let pp = p0 + rr;
            let pc = select(pp < tokens, pp, tokens - 1);
            let mut n = pc;
            if comptime!(skip_perm) {
                if permuted {
                    n = perm[pc as usize];
                }
            } else {
                let pn = perm[select(permuted, pc, 0u32) as usize];
                n = select(permuted, pn, pc);
            }
            let src = base_v + n as usize * dv + c as usize;
            // Scalar offset into the scalar shared array: the emitted copy adds the slice's raw
            // offset to the array's scalar pointer, so the destination must not be vectorized.
            let dst = off + rr as usize * stride + c as usize * vn;
            let mut kd = unsafe {
                sk.slice_mut(dst, dst + vn)
                    .downcast_unchecked::<Vector<F, N>>()
            };
            let mut vd = unsafe {
                sv.slice_mut(dst, dst + vn)
                    .downcast_unchecked::<Vector<F, N>>()
            };
            copy_async(&k.slice(src, src + 1), &mut kd, comptime!(vn as u32));
            copy_async(&v.slice(src, src + 1), &mut vd, comptime!(vn as u32));
        }
    }
}

#[cube]
fn tile_k0(col_idx: &Array<u32>, start: u32, i: u32, #[comptime] block_size: usize) -> u32 {
    let sub = comptime!(block_size / BK) as u32;
    let kb = col_idx[(start + i / sub) as usize];
    kb * block_size as u32 + (i % sub) * BK as u32
}

#[cube]
fn zero_acc() -> Array<Vector<f32, V2>> {
    let mut a = Array::<Vector<f32, V2>>::new(2usize);
    a[0] = Vector::new(0.0f32);
    a[1] = Vector::new(0.0f32);
    a
}

#[cube]
fn pair<F: Float>(r: &Array<Vector<F, V2>>, #[comptime] first: usize) -> Array<Vector<F, V2>> {
    let mut a = Array::<Vector<F, V2>>::new(2usize);
    a[0] = r[first];
    a[1] = r[first + 1];
    a
}

/// `acc *= alpha` (rows `g` and `g + 8`).
#[cube]
fn rescale_acc(
    acc: &mut Sequence<Array<Vector<f32, V2>>>,
    alpha0: f32,
    alpha1: f32,
    #[comptime] head_dim: usize,
) {
    let dn = comptime!(head_dim / 8);
    let va0 = Vector::<f32, V2>::new(alpha0);
    let va1 = Vector::<f32, V2>::new(alpha1);
    #[unroll]
    for j in 0..dn {
        let aj = acc.index_mut(j);
        aj[0] = aj[0] * va0;
        aj[1] = aj[1] * va1;
    }
}

/// Online softmax of one tile whose keys may be masked (ragged tail, key padding): scale,
/// mask (columns `k0 + j*8 + 2t + x`), row max, `P = exp(S - m)` in place, running sums,
/// `O *= alpha`. With `lazy`, the rescale is skipped when no row maximum of the plane
/// changed (`alpha == 1` exactly for every lane).
#[cube]
#[allow(clippy::too_many_arguments)]
fn softmax_masked<M: Int>(
    s: &mut Sequence<Array<Vector<f32, V2>>>,
    acc: &mut Sequence<Array<Vector<f32, V2>>>,
    st: &mut Array<f32>,
    key_mask: &Array<M>,
    perm: &Array<u32>,
    permuted: bool,
    b: u32,
    t: u32,
    k0: u32,
    tokens: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[comptime] has_mask: bool,
    #[comptime] lazy: bool,
) {
    let masked = f32::new(MASKED);
    let masked_threshold = f32::new(MASKED_THRESHOLD);
    let kn = comptime!(BK / 8);
    // Scale and mask (columns k0 + j*8 + 2t + x), row max.
    let mut mt0 = masked;
    let mut mt1 = masked;
    #[unroll]
    for j in 0..kn {
        let sj = s.index_mut(j);
        let r0 = sj[0];
        let r1 = sj[1];
        let mut n0 = Vector::<f32, V2>::new(0.0f32);
        let mut n1 = Vector::<f32, V2>::new(0.0f32);
        #[unroll]
        for x in 0..2usize {
            let kp = k0 + (j * 8 + x) as u32 + 2 * t;
            let mut ok = kp < tokens;
            if comptime!(has_mask) {
                let kc = select(ok, kp, 0u32);
                let n = natural_mma(kc, permuted, perm);
                ok = ok && key_mask[b as usize * tokens as usize + n as usize] != M::from_int(0);
            }
            let a0 = select(ok, r0[x] * scale, masked);
            let a1 = select(ok, r1[x] * scale, masked);
            n0[x] = a0;
            n1[x] = a1;
            mt0 = f32::max(mt0, a0);
            mt1 = f32::max(mt1, a1);
        }
        sj[0] = n0;
        sj[1] = n1;
    }
    mt0 = f32::max(mt0, plane_shuffle_xor(mt0, 1));
    mt0 = f32::max(mt0, plane_shuffle_xor(mt0, 2));
    mt1 = f32::max(mt1, plane_shuffle_xor(mt1, 1));
    mt1 = f32::max(mt1, plane_shuffle_xor(mt1, 2));
    let m0 = st[0];
    let m1 = st[1];
    let mn0 = f32::max(m0, mt0);
    let mn1 = f32::max(m1, mt1);
    let alpha0 = f32::exp(m0 - mn0);
    let alpha1 = f32::exp(m1 - mn1);
    st[0] = mn0;
    st[1] = mn1;

    // P = exp(S - m) in place, partial row sums (reduced at the end).
    let mut rs0 = 0.0f32;
    let mut rs1 = 0.0f32;
    #[unroll]
    for j in 0..kn {
        let sj = s.index_mut(j);
        let r0 = sj[0];
        let r1 = sj[1];
        let mut p0 = Vector::<f32, V2>::new(0.0f32);
        let mut p1 = Vector::<f32, V2>::new(0.0f32);
        #[unroll]
        for x in 0..2usize {
            let e0 = select(r0[x] > masked_threshold, f32::exp(r0[x] - mn0), 0.0f32);
            let e1 = select(r1[x] > masked_threshold, f32::exp(r1[x] - mn1), 0.0f32);
            p0[x] = e0;
            p1[x] = e1;
            rs0 += e0;
            rs1 += e1;
        }
        sj[0] = p0;
        sj[1] = p1;
    }
    st[2] = st[2] * alpha0 + rs0;
    st[3] = st[3] * alpha1 + rs1;

    // Rescale O.
    if comptime!(lazy) {
        if plane_any(mn0 != m0 || mn1 != m1) {
            rescale_acc(acc, alpha0, alpha1, head_dim);
        }
    } else {
        rescale_acc(acc, alpha0, alpha1, head_dim);
    }
}

/// Online softmax of a tile whose 64 keys are all valid (no key padding, inside the
/// sequence) with `scale > 0`: no per-score select; the row max is taken on the raw scores
/// (`max(scale * s) = scale * max(s)` for `scale > 0`), and each probability costs one FMA
/// and one exponential (`exp(s * scale - m)`; `mode == 2`: `2^(s * scale * log2(e) - m *
/// log2(e))` through `powf`). The rescale of `O` is skipped when no row maximum of the
/// plane changed.
#[cube]
#[allow(unused_assignments)]
fn softmax_full(
    s: &mut Sequence<Array<Vector<f32, V2>>>,
    acc: &mut Sequence<Array<Vector<f32, V2>>>,
    st: &mut Array<f32>,
    scale: f32,
    #[comptime] head_dim: usize,
    #[comptime] mode: u32,
) {
    let kn = comptime!(BK / 8);
    let mut mt0 = 0.0f32;
    let mut mt1 = 0.0f32;
    if comptime!(mode >= 3) {
        // Balanced trees (short dependency chains).
        mt0 = f32::max(rowmax4(s, 0usize, 0usize), rowmax4(s, 4usize, 0usize));
        mt1 = f32::max(rowmax4(s, 0usize, 1usize), rowmax4(s, 4usize, 1usize));
    } else {
        let s00 = s.index(0usize)[0];
        let s01 = s.index(0usize)[1];
        mt0 = f32::max(s00[0], s00[1]);
        mt1 = f32::max(s01[0], s01[1]);
        #[unroll]
        for j in 1..kn {
            let sj = s.index(j);
            let r0 = sj[0];
            let r1 = sj[1];
            mt0 = f32::max(mt0, f32::max(r0[0], r0[1]));
            mt1 = f32::max(mt1, f32::max(r1[0], r1[1]));
        }
    }
    mt0 = f32::max(mt0, plane_shuffle_xor(mt0, 1));
    mt0 = f32::max(mt0, plane_shuffle_xor(mt0, 2));
    mt1 = f32::max(mt1, plane_shuffle_xor(mt1, 1));
    mt1 = f32::max(mt1, plane_shuffle_xor(mt1, 2));
    let m0 = st[0];
    let m1 = st[1];
    let mn0 = f32::max(m0, mt0 * scale);
    let mn1 = f32::max(m1, mt1 * scale);
    let alpha0 = f32::exp(m0 - mn0);
    let alpha1 = f32::exp(m1 - mn1);
    st[0] = mn0;
    st[1] = mn1;

    let mut rs0 = 0.0f32;
    let mut rs1 = 0.0f32;
    let mut rq0 = 0.0f32;
    let mut rq1 = 0.0f32;
    if comptime!(mode >= 2) {
        let l2e = f32::new(core::f32::consts::LOG2_E);
        let two = f32::new(2.0);
        let sl = scale * l2e;
        let ml0 = mn0 * l2e;
        let ml1 = mn1 * l2e;
        #[unroll]
        for j in 0..kn {
            let sj = s.index_mut(j);
            let r0 = sj[0];
            let r1 = sj[1];
            let mut p0 = Vector::<f32, V2>::new(0.0f32);
            let mut p1 = Vector::<f32, V2>::new(0.0f32);
            #[unroll]
            for x in 0..2usize {
                p0[x] = f32::powf(two, r0[x] * sl - ml0);
                p1[x] = f32::powf(two, r1[x] * sl - ml1);
            }
            if comptime!(mode >= 3) {
                // Two partial sums per row (even / odd n tiles): shorter add chains.
                if comptime!(j % 2 == 0) {
                    rs0 += p0[0] + p0[1];
                    rs1 += p1[0] + p1[1];
                } else {
                    rq0 += p0[0] + p0[1];
                    rq1 += p1[0] + p1[1];
                }
            } else {
                rs0 += p0[0];
                rs1 += p1[0];
                rs0 += p0[1];
                rs1 += p1[1];
            }
            sj[0] = p0;
            sj[1] = p1;
        }
        rs0 += rq0;
        rs1 += rq1;
    } else {
        #[unroll]
        for j in 0..kn {
            let sj = s.index_mut(j);
            let r0 = sj[0];
            let r1 = sj[1];
            let mut p0 = Vector::<f32, V2>::new(0.0f32);
            let mut p1 = Vector::<f32, V2>::new(0.0f32);
            #[unroll]
            for x in 0..2usize {
                let e0 = f32::exp(r0[x] * scale - mn0);
                let e1 = f32::exp(r1[x] * scale - mn1);
                p0[x] = e0;
                p1[x] = e1;
                rs0 += e0;
                rs1 += e1;
            }
            sj[0] = p0;
            sj[1] = p1;
        }
    }
    st[2] = st[2] * alpha0 + rs0;
    st[3] = st[3] * alpha1 + rs1;
    if plane_any(mn0 != m0 || mn1 != m1) {
        rescale_acc(acc, alpha0, alpha1, head_dim);
    }
}

/// Max of the 8 scores of `row` (0: `g`, 1: `g + 8`) in n tiles `j0..j0 + 4`, as a tree.
#[cube]
fn rowmax4(
    s: &Sequence<Array<Vector<f32, V2>>>,
    #[comptime] j0: usize,
    #[comptime] row: usize,
) -> f32 {
    let a = s.index(j0)[row];
    let b = s.index(j0 + 1)[row];
    let c = s.index(j0 + 2)[row];
    let d = s.index(j0 + 3)[row];
    f32::max(
        f32::max(f32::max(a[0], a[1]), f32::max(b[0], b[1])),
        f32::max(f32::max(c[0], c[1]), f32::max(d[0], d[1])),
    )
}

/// One 64-key tile: `S = Q K^T`, online softmax in registers, `O += P V`. `st` holds
/// `[m_g, m_g8, l_g, l_g8]` (running maxima of rows `g`, `g + 8` and this lane's partial sums).
#[cube]
#[allow(clippy::too_many_arguments)]
fn attend_tile<F: Float, M: Int>(
    def: &MmaDefinition<F, F, f32>,
    sk: &SharedMemory<F>,
    sv: &SharedMemory<F>,
    koff: usize,
    voff: usize,
    k_addr: usize,
    v_addr: usize,
    qf: &Sequence<Array<Vector<F, V2>>>,
    acc: &mut Sequence<Array<Vector<f32, V2>>>,
    st: &mut Array<f32>,
    key_mask: &Array<M>,
    perm: &Array<u32>,
    permuted: bool,
    b: u32,
    t: u32,
    k0: u32,
    tokens: u32,
    scale: f32,
    full: bool,
    #[comptime] head_dim: usize,
    #[comptime] has_mask: bool,
    #[comptime] fast: u32,
) {
    let ds = comptime!(head_dim + PAD_H);
    let dk = comptime!(head_dim / 16);
    let dn = comptime!(head_dim / 8);
    let kn = comptime!(BK / 8);
    let kk16 = comptime!(BK / 16);
    // S = Q K^T: 8 n tiles of 8 keys.
    let mut s = Sequence::<Array<Vector<f32, V2>>>::new();
    #[unroll]
    for j in 0..kn {
        let mut sj = zero_acc();
        #[unroll]
        for k2 in 0..comptime!(dk / 2) {
            let o = koff + k_addr + j * 8 * ds + k2 * 32;
            let r = def.load_matrix::<F, V2>(&sk.slice(o, o + 8), MatrixIdent::B, 4usize, false);
            let b0 = pair::<F>(&r, 0usize);
            let b1 = pair::<F>(&r, 2usize);
            def.execute_inplace(qf.index(2 * k2), &b0, &mut sj);
            def.execute_inplace(qf.index(2 * k2 + 1), &b1, &mut sj);
        }
        s.push(sj);
    }

    if comptime!(fast == 0) {
        softmax_masked::<M>(
            &mut s, acc, st, key_mask, perm, permuted, b, t, k0, tokens, scale, head_dim, has_mask,
            false,
        );
    } else {
        if full {
            softmax_full(&mut s, acc, st, scale, head_dim, fast);
        } else {
            softmax_masked::<M>(
                &mut s, acc, st, key_mask, perm, permuted, b, t, k0, tokens, scale, head_dim,
                has_mask, true,
            );
        }
    }

    // O += P V, P straight from the S registers.
    #[unroll]
    for kk in 0..kk16 {
        let sa = s.index(2 * kk);
        let sb = s.index(2 * kk + 1);
        let mut pa = Array::<Vector<F, V2>>::new(4usize);
        pa[0] = Vector::cast_from(sa[0]);
        pa[1] = Vector::cast_from(sa[1]);
        pa[2] = Vector::cast_from(sb[0]);
        pa[3] = Vector::cast_from(sb[1]);
        #[unroll]
        for jd in 0..comptime!(dn / 2) {
            let o = voff + v_addr + kk * 16 * ds + jd * 16;
            let r = def.load_matrix::<F, V2>(&sv.slice(o, o + 8), MatrixIdent::B, 4usize, true);
            let b0 = pair::<F>(&r, 0usize);
            let b1 = pair::<F>(&r, 2usize);
            def.execute_inplace(&pa, &b0, acc.index_mut(2 * jd));
            def.execute_inplace(&pa, &b1, acc.index_mut(2 * jd + 1));
        }
    }
}

#[cube(
    launch_unchecked,
    fast_math = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf
)]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
pub(crate) fn sparse_attn_mma<F: Float, M: Int, N: Size>(
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
    #[comptime] warps: usize,
    #[comptime] pipelined: bool,
    #[comptime] fast: u32,
    #[define(F, M)] _dtypes: [StorageType; 2],
) {
    let masked = f32::new(MASKED);
    let vn = N::value();
    let ds = comptime!(head_dim + PAD_H);
    let dk = comptime!(head_dim / 16); // k steps of Q K^T, A fragments of Q
    let dn = comptime!(head_dim / 8); // n tiles of O
    let nthreads = comptime!(warps * 32);
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
                let n = natural_mma(pp, permuted, perm);
                out[base + n as usize * head_dim + (i % head_dim as u32) as usize] =
                    F::cast_from(0.0f32);
            }
        }
        if comptime!(want_lse) {
            let pp = row0 + UNIT_POS;
            if UNIT_POS < bq as u32 && pp < tokens {
                let n = natural_mma(pp, permuted, perm);
                lse[bh as usize * tokens as usize + n as usize] = neg_inf;
            }
        }
    } else {
        let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
        let nbuf = comptime!(if pipelined { 2usize } else { 1usize });
        let sk_rows = comptime!(if k_rows > nbuf * BK {
            k_rows
        } else {
            nbuf * BK
        });
        let mut sk = SharedMemory::<F>::new_aligned(sk_rows * ds, 16usize);
        let mut sv = SharedMemory::<F>::new_aligned(nbuf * BK * ds, 16usize);

        // Q tile through the K buffer into per-plane A fragments.
        load_rows_mma::<F, N>(
            q, &mut sk, base_v, row0, tokens, permuted, perm, bq, head_dim, ds, nthreads,
        );
        sync_cube();
        let g = lane / 4;
        let t = lane % 4;
        let l8 = lane % 8;
        let mi = lane / 8;
        let q_addr = (warp * 16 + lane % 16) as usize * ds + (lane / 16) as usize * 8;
        let mut qf = Sequence::<Array<Vector<F, V2>>>::new();
        #[unroll]
        for kk in 0..dk {
            let o = q_addr + kk * 16;
            qf.push(def.load_matrix::<F, V2>(&sk.slice(o, o + 8), MatrixIdent::A, 4usize, false));
        }

        let mut acc = Sequence::<Array<Vector<f32, V2>>>::new();
        #[unroll]
        for _j in 0..dn {
            acc.push(zero_acc());
        }

        // ldmatrix row addresses (lane `l` gives row `l % 8` of matrix `l / 8`).
        // K (non-transposed): matrix mi = keys j*8.., dims kk*16 + mi*8 (two k steps per x4).
        let k_addr = l8 as usize * ds + mi as usize * 8;
        // V (transposed): matrix mi = keys kk*16 + (mi%2)*8, dims jd*16 + (mi/2)*8.
        let v_addr = ((mi % 2) * 8 + l8) as usize * ds + (mi / 2) as usize * 8;

        let mut st = Array::<f32>::new(4usize);
        st[0] = masked;
        st[1] = masked;
        st[2] = 0.0f32;
        st[3] = 0.0f32;

        // Tiles that take the unmasked softmax (`fast > 0`): every key valid, no key padding.
        let mut scale_pos = scale > 0.0f32;
        if comptime!(has_mask) {
            scale_pos = false;
        }
        let start = row_ptr[rp + qb as usize];
        let end = row_ptr[rp + qb as usize + 1];
        if comptime!(pipelined) {
            // Double-buffered K/V: tile i+1 is copied with cp.async while tile i is computed.
            let buf = comptime!(BK * ds);
            let bar0 = Barrier::shared(threads, UNIT_POS == 0);
            let bar1 = Barrier::shared(threads, UNIT_POS == 0);
            let ntiles = (end - start) * comptime!(block_size / BK) as u32;
            // Every plane has read its Q fragments out of buffer 0 (the barrier inits sync too).
            sync_cube();
            if ntiles > 0 {
                let p0 = tile_k0(col_idx, start, 0u32, block_size);
                issue_kv::<F, N>(
                    k,
                    v,
                    &mut sk,
                    &mut sv,
                    0usize,
                    base_kv_v,
                    p0,
                    kv_tokens,
                    permuted,
                    perm,
                    BK,
                    head_dim,
                    ds,
                    nthreads,
                    comptime!(fast > 0),
                    comptime!(fast >= 3),
                );
                bar0.commit_copy_async();
            }
            for i in 0..ntiles {
                let par = i % 2;
                if par == 0 {
                    bar0.arrive_and_wait();
                } else {
                    bar1.arrive_and_wait();
                }
                if i + 1 < ntiles {
                    let p1 = tile_k0(col_idx, start, i + 1, block_size);
                    if par == 0 {
                        issue_kv::<F, N>(
                            k,
                            v,
                            &mut sk,
                            &mut sv,
                            buf,
                            base_kv_v,
                            p1,
                            kv_tokens,
                            permuted,
                            perm,
                            BK,
                            head_dim,
                            ds,
                            nthreads,
                            comptime!(fast > 0),
                            comptime!(fast >= 3),
                        );
                        bar1.commit_copy_async();
                    } else {
                        issue_kv::<F, N>(
                            k,
                            v,
                            &mut sk,
                            &mut sv,
                            0usize,
                            base_kv_v,
                            p1,
                            kv_tokens,
                            permuted,
                            perm,
                            BK,
                            head_dim,
                            ds,
                            nthreads,
                            comptime!(fast > 0),
                            comptime!(fast >= 3),
                        );
                        bar0.commit_copy_async();
                    }
                }
                let k0 = tile_k0(col_idx, start, i, block_size);
                if k0 < kv_tokens {
                    let off = par as usize * buf;
                    let full = scale_pos && k0 + BK as u32 <= kv_tokens;
                    attend_tile::<F, M>(
                        &def, &sk, &sv, off, off, k_addr, v_addr, &qf, &mut acc, &mut st, key_mask,
                        perm, permuted, b, t, k0, kv_tokens, scale, full, head_dim, has_mask, fast,
                    );
                }
            }
        } else {
            for e in start..end {
                let kb = col_idx[e as usize];
                for c in 0..comptime!(block_size / BK) as u32 {
                    let k0 = kb * block_size as u32 + c * BK as u32;
                    if k0 < kv_tokens {
                        sync_cube();
                        load_rows_mma::<F, N>(
                            k, &mut sk, base_kv_v, k0, kv_tokens, permuted, perm, BK, head_dim, ds,
                            nthreads,
                        );
                        load_rows_mma::<F, N>(
                            v, &mut sv, base_kv_v, k0, kv_tokens, permuted, perm, BK, head_dim, ds,
                            nthreads,
                        );
                        sync_cube();

                        let full = scale_pos && k0 + BK as u32 <= kv_tokens;
                        attend_tile::<F, M>(
                            &def, &sk, &sv, 0usize, 0usize, k_addr, v_addr, &qf, &mut acc, &mut st,
                            key_mask, perm, permuted, b, t, k0, kv_tokens, scale, full, head_dim,
                            has_mask, fast,
                        );
                    }
                }
            }
        }

        // Epilogue: full row sums, normalise, write rows g and g+8 to natural positions.
        let m0 = st[0];
        let m1 = st[1];
        let mut l0 = st[2];
        let mut l1 = st[3];
        l0 += plane_shuffle_xor(l0, 1);
        l0 += plane_shuffle_xor(l0, 2);
        l1 += plane_shuffle_xor(l1, 1);
        l1 += plane_shuffle_xor(l1, 2);
        let pa = row0 + warp * 16 + g;
        let pb = pa + 8;
        let va = pa < tokens;
        let vb = pb < tokens;
        let na = natural_mma(select(va, pa, 0u32), permuted, perm);
        let nb = natural_mma(select(vb, pb, 0u32), permuted, perm);
        let inv0 = select(l0 > 0.0f32, 1.0f32 / l0, 0.0f32);
        let inv1 = select(l1 > 0.0f32, 1.0f32 / l1, 0.0f32);
        let oa = base + na as usize * head_dim + 2 * t as usize;
        let ob = base + nb as usize * head_dim + 2 * t as usize;
        #[unroll]
        for j in 0..dn {
            let aj = acc.index(j);
            let r0 = aj[0];
            let r1 = aj[1];
            if va {
                out[oa + j * 8] = F::cast_from(r0[0] * inv0);
                out[oa + j * 8 + 1] = F::cast_from(r0[1] * inv0);
            }
            if vb {
                out[ob + j * 8] = F::cast_from(r1[0] * inv1);
                out[ob + j * 8 + 1] = F::cast_from(r1[1] * inv1);
            }
        }
        if comptime!(want_lse) {
            if t == 0 {
                let lb = bh as usize * tokens as usize;
                if va {
                    let mut val = neg_inf;
                    if l0 > 0.0f32 {
                        val = m0 + f32::ln(l0);
                    }
                    lse[lb + na as usize] = val;
                }
                if vb {
                    let mut val = neg_inf;
                    if l1 > 0.0f32 {
                        val = m1 + f32::ln(l1);
                    }
                    lse[lb + nb as usize] = val;
                }
            }
        }
    }
}
