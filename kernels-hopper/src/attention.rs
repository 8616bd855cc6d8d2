//! Dense flash-attention forward on warpgroup MMA (first Hopper engine, synchronous).
//!
//! Layout: `q`, `k`, `v`, `out` are `[batch * heads, tokens, 128]` bf16, contiguous. One cube
//! holds `WGS` warpgroups; each owns 64 query rows and keeps them in shared memory for the
//! whole key loop (the A operand of `S = Q K^T`). All threads of the cube stage each block of
//! 64 keys with `cp.async` into one of two buffers while the previous block is computed (one
//! barrier per block): K
//! as the B operand of `S` (K-major), V as it lies (MN-major) as the B operand of `O += P V`
//! (`wgmma`'s transpose flag). `P` never leaves registers: the `S` accumulator fragment of
//! `wgmma` is exactly the register-A fragment of the next MMA once packed to bf16 pairs.
//! Softmax in base 2 with `ex2.approx`, f32 statistics.
//!
//! What this version does not do yet (the FA3 design): producer warps with TMA/mbarrier
//! pipelines (here every thread copies, and a cube-wide barrier per block keeps the buffers
//! apart), overlapping the two MMAs with softmax across warpgroups, register
//! reallocation, swizzled layouts, head dim 64, sparse block tables.

use cubecl::frontend::barrier::copy_async;
use cubecl::prelude::*;
use half::bf16;

use crate::layout::{
    KMAJOR_LBO, KMAJOR_SBO, MNMAJOR_LBO, MNMAJOR_SBO, accumulator_col_cube, accumulator_row_cube,
    descriptor_bits, kmajor_offset_cube, mnmajor_offset_cube, slab_bytes,
};
use crate::ptx::{
    a_fragments, cp_async_commit, cp_async_wait, ex2_approx, fence_proxy_async_shared,
    make_descriptor, shared_address, wgmma_rs_m64n128_bf16_k64, wgmma_ss_m64n64_bf16,
};

/// Head dimension of this engine.
pub const HEAD_DIM: u32 = 128;
/// Keys per block of the key loop.
pub const KV_BLOCK: u32 = 64;
/// Query rows per warpgroup.
pub const ROWS_PER_WARPGROUP: u32 = 64;

/// Bytes of one staged K (or V) block.
pub const KV_TILE_BYTES: u32 = KV_BLOCK * HEAD_DIM * 2;

/// The dense forward kernel. Launch with `CubeDim::new_1d(128 * wgs)` and
/// `CubeCount::Static(ceil(tokens / (64 * wgs)), batch * heads, 1)`.
/// `scale_log2` is the softmax scale times `log2(e)`.
#[cube(launch)]
#[allow(clippy::manual_div_ceil)] // the kernel language has no `div_ceil`
pub fn flash_fwd_kernel(
    q: &[Vector<bf16, Const<8>>],
    k: &[Vector<bf16, Const<8>>],
    v: &[Vector<bf16, Const<8>>],
    out: &mut [bf16],
    tokens: u32,
    scale_log2: f32,
    #[comptime] wgs: u32,
    #[comptime] async_copy: bool,
) {
    let d = comptime![HEAD_DIM];
    let threads = comptime![128 * wgs];
    let tid = UNIT_POS;
    let wg = tid / 128;
    let t = tid % 128;
    let bh = CUBE_POS_Y;
    let first_row = CUBE_POS_X * comptime![64 * wgs];
    let base = bh * tokens * d;

    let mut sq = Shared::<[Vector<bf16, Const<8>>]>::new_aligned_slice(
        comptime![(wgs * 64 * HEAD_DIM / 8) as usize],
        128usize,
    );
    // Two stages of K, then two of V.
    let mut skv = Shared::<[Vector<bf16, Const<8>>]>::new_aligned_slice(
        comptime![(4 * KV_TILE_BYTES / 16) as usize],
        128usize,
    );
    let zero8 = Vector::<bf16, Const<8>>::new(bf16::from_int(0));

    // Q rows of every warpgroup, 8 columns per access, zero past the last token.
    let mut idx = tid;
    while idx < comptime![wgs * 64 * HEAD_DIM / 8] {
        let r = idx / comptime![HEAD_DIM / 8];
        let c = (idx % comptime![HEAD_DIM / 8]) * 8;
        let token = first_row + r;
        let mut val = zero8;
        if token < tokens {
            val = q[((base + token * d + c) / 8) as usize];
        }
        let o = (r / 64) * comptime![64 * HEAD_DIM] + kmajor_offset_cube(r % 64, c, 64u32);
        sq[(o / 8) as usize] = val;
        idx += threads;
    }

    let bits = comptime![descriptor_bits(KMAJOR_LBO, KMAJOR_SBO)];
    let v_bits = comptime![descriptor_bits(MNMAJOR_LBO, MNMAJOR_SBO)];
    let q_addr = shared_address::<Vector<bf16, Const<8>>>(unsafe { sq.as_ptr_unchecked() })
        + wg * comptime![64 * HEAD_DIM * 2];
    let kv_addr = shared_address::<Vector<bf16, Const<8>>>(unsafe { skv.as_ptr_unchecked() });
    let desc_q = make_descriptor(q_addr, bits);

    let blocks = (tokens + 63) / 64;
    issue_kv_block(
        k, v, &mut skv, 0u32, 0u32, base, tokens, tid, threads, async_copy,
    );
    cp_async_commit();

    let mut o_acc = Vector::<f32, Const<64>>::new(0.0);
    let mut m0 = f32::new(-1.0e30);
    let mut m1 = f32::new(-1.0e30);
    let mut l0 = f32::new(0.0);
    let mut l1 = f32::new(0.0);

    for blk in 0..blocks {
        let key0 = blk * 64;
        let stage = blk % 2;
        // This thread's copies of block `blk` have landed; after the barrier every thread's
        // have, and every thread is done with block `blk - 1`, whose buffer block `blk + 1`
        // goes into while `blk` is computed. One barrier per block.
        cp_async_wait(0u32);
        fence_proxy_async_shared();
        sync_cube();
        if blk + 1 < blocks {
            issue_kv_block(
                k,
                v,
                &mut skv,
                blk + 1,
                1 - stage,
                base,
                tokens,
                tid,
                threads,
                async_copy,
            );
        }
        cp_async_commit();

        let desc_k = make_descriptor(kv_addr + stage * comptime![KV_TILE_BYTES], bits);
        let desc_v = make_descriptor(
            kv_addr + comptime![2 * KV_TILE_BYTES] + stage * comptime![KV_TILE_BYTES],
            v_bits,
        );
        let s = wgmma_ss_m64n64_bf16(
            desc_q,
            desc_k,
            comptime![HEAD_DIM / 16],
            comptime![(slab_bytes(64) / 16) as u64],
            comptime![(slab_bytes(64) / 16) as u64],
            false,
        );

        // Row maxima of this thread's two rows (r: registers 0,1 of each chunk; r + 8: 2,3).
        let mut x = Vector::<f32, Const<32>>::new(0.0);
        let mut mx0 = f32::new(-1.0e30);
        let mut mx1 = f32::new(-1.0e30);
        #[unroll]
        for reg in 0..32u32 {
            let col = key0 + accumulator_col_cube(t, reg);
            let mut val = s.extract(comptime![reg as usize]) * scale_log2;
            if col >= tokens {
                val = f32::new(-1.0e30);
            }
            x.insert(comptime![reg as usize], val);
            if comptime![(reg % 4) < 2] {
                mx0 = max(mx0, val);
            } else {
                mx1 = max(mx1, val);
            }
        }
        mx0 = max(mx0, plane_shuffle_xor(mx0, 1));
        mx0 = max(mx0, plane_shuffle_xor(mx0, 2));
        mx1 = max(mx1, plane_shuffle_xor(mx1, 1));
        mx1 = max(mx1, plane_shuffle_xor(mx1, 2));
        let new0 = max(m0, mx0);
        let new1 = max(m1, mx1);
        let alpha0 = ex2_approx(m0 - new0);
        let alpha1 = ex2_approx(m1 - new1);
        m0 = new0;
        m1 = new1;

        let mut p = Vector::<f32, Const<32>>::new(0.0);
        let mut sum0 = f32::new(0.0);
        let mut sum1 = f32::new(0.0);
        #[unroll]
        for reg in 0..32u32 {
            if comptime![(reg % 4) < 2] {
                let e = ex2_approx(x.extract(comptime![reg as usize]) - new0);
                sum0 += e;
                p.insert(comptime![reg as usize], e);
            } else {
                let e = ex2_approx(x.extract(comptime![reg as usize]) - new1);
                sum1 += e;
                p.insert(comptime![reg as usize], e);
            }
        }
        l0 = l0 * alpha0 + sum0;
        l1 = l1 * alpha1 + sum1;

        let o_blk = wgmma_rs_m64n128_bf16_k64(
            a_fragments(p),
            desc_v,
            comptime![(slab_bytes(HEAD_DIM) / 16) as u64],
            true,
        );
        #[unroll]
        for reg in 0..64u32 {
            let prev = o_acc.extract(comptime![reg as usize]);
            let add = o_blk.extract(comptime![reg as usize]);
            if comptime![(reg % 4) < 2] {
                o_acc.insert(comptime![reg as usize], prev * alpha0 + add);
            } else {
                o_acc.insert(comptime![reg as usize], prev * alpha1 + add);
            }
        }
    }

    l0 += plane_shuffle_xor(l0, 1);
    l0 += plane_shuffle_xor(l0, 2);
    l1 += plane_shuffle_xor(l1, 1);
    l1 += plane_shuffle_xor(l1, 2);
    let inv0 = 1.0 / l0;
    let inv1 = 1.0 / l1;
    let row_base = first_row + wg * 64;
    #[unroll]
    for reg in 0..64u32 {
        let row = row_base + accumulator_row_cube(t, reg);
        let col = accumulator_col_cube(t, reg);
        if row < tokens {
            let mut val = o_acc.extract(comptime![reg as usize]);
            if comptime![(reg % 4) < 2] {
                val *= inv0;
            } else {
                val *= inv1;
            }
            out[(base + row * d + col) as usize] = bf16::cast_from(val);
        }
    }
}

/// Issues this thread's copies of key block `blk` into buffer `stage`: K rows K-major, V
/// rows MN-major, 16 bytes each, zero-filled past the last token. With `async_copy` through
/// `cp.async` (complete at the caller's wait), otherwise through registers (complete on
/// return).
#[cube]
#[allow(clippy::too_many_arguments)]
fn issue_kv_block(
    k: &[Vector<bf16, Const<8>>],
    v: &[Vector<bf16, Const<8>>],
    skv: &mut [Vector<bf16, Const<8>>],
    blk: u32,
    stage: u32,
    base: u32,
    tokens: u32,
    tid: u32,
    #[comptime] threads: u32,
    #[comptime] async_copy: bool,
) {
    let mut i = tid;
    while i < comptime![KV_BLOCK * HEAD_DIM / 8] {
        let j = i / comptime![HEAD_DIM / 8];
        let c = (i % comptime![HEAD_DIM / 8]) * 8;
        let key = blk * 64 + j;
        let k_off = kmajor_offset_cube(j, c, 64u32);
        let v_off = mnmajor_offset_cube(j, c, comptime![HEAD_DIM]);
        let k_slot = (stage * comptime![KV_TILE_BYTES / 16] + k_off / 8) as usize;
        let v_slot = (comptime![2 * KV_TILE_BYTES / 16]
            + stage * comptime![KV_TILE_BYTES / 16]
            + v_off / 8) as usize;
        if comptime![async_copy] {
            if key < tokens {
                let src = ((base + key * comptime![HEAD_DIM] + c) / 8) as usize;
                // cubecl's `copy_async` lowers to `cp.async.cg ... 16` (size in scalars).
                copy_async(&k[src..src + 1], &mut skv[k_slot..k_slot + 1], 8u32);
                copy_async(&v[src..src + 1], &mut skv[v_slot..v_slot + 1], 8u32);
            } else {
                let zero = Vector::<bf16, Const<8>>::new(bf16::from_int(0));
                skv[k_slot] = zero;
                skv[v_slot] = zero;
            }
        } else {
            let mut kv = Vector::<bf16, Const<8>>::new(bf16::from_int(0));
            let mut vv = Vector::<bf16, Const<8>>::new(bf16::from_int(0));
            if key < tokens {
                let src = ((base + key * comptime![HEAD_DIM] + c) / 8) as usize;
                kv = k[src];
                vv = v[src];
            }
            skv[k_slot] = kv;
            skv[v_slot] = vv;
        }
        i += threads;
    }
}
