//! Small kernels that prove the inline-PTX route on the device: `ex2.approx` element-wise and
//! one warpgroup GEMM on `wgmma`. The CUDA tests compare them with CPU references; the
//! attention engine is built from the same pieces.

use cubecl::prelude::*;
use half::bf16;

use crate::layout::{
    KMAJOR_LBO, KMAJOR_SBO, MNMAJOR_LBO, MNMAJOR_SBO, accumulator_col_cube, accumulator_row_cube,
    descriptor_bits, kmajor_offset_cube, mnmajor_offset_cube, slab_bytes,
};
use crate::ptx::{
    ex2_approx, fence_proxy_async_shared, make_descriptor, shared_address, wgmma_ss_m64n64_bf16,
};

/// `out[i] = 2^input[i]` through [`ex2_approx`].
#[cube(launch)]
pub fn ex2_kernel(input: &[f32], out: &mut [f32]) {
    let i = ABSOLUTE_POS;
    if i < input.len() {
        out[i] = ex2_approx(input[i]);
    }
}

/// `out[64, 64] = a[64, k] * B` (bf16 in, f32 out) by one warpgroup of 128 threads, with
/// `B = b[64, k]^T` staged K-major, or (`b_mn_major`) `B = b[k, 64]` row-major staged
/// MN-major ([`crate::layout::mnmajor_offset`]) and read with `wgmma`'s transpose flag. A is
/// K-major; both go through shared memory in the interleaved layouts of [`crate::layout`]
/// and [`wgmma_ss_m64n64_bf16`] multiplies them in `k / 16` steps. `swap_offsets` exchanges
/// B's two descriptor offsets: the tests expect a wrong product then, which pins the
/// convention of [`KMAJOR_LBO`] / [`MNMAJOR_LBO`] down.
#[cube(launch)]
pub fn wgmma_gemm_kernel(
    a: &[bf16],
    b: &[bf16],
    out: &mut [f32],
    #[comptime] k: u32,
    #[comptime] b_mn_major: bool,
    #[comptime] swap_offsets: bool,
) {
    let tid = UNIT_POS;
    let mut sa = Shared::<[bf16]>::new_aligned_slice(comptime![(64 * k) as usize], 128usize);
    let mut sb = Shared::<[bf16]>::new_aligned_slice(comptime![(64 * k) as usize], 128usize);
    let mut idx = tid;
    while idx < 64 * k {
        sa[kmajor_offset_cube(idx / k, idx % k, 64u32) as usize] = a[idx as usize];
        if comptime![b_mn_major] {
            sb[mnmajor_offset_cube(idx / 64, idx % 64, 64u32) as usize] = b[idx as usize];
        } else {
            sb[kmajor_offset_cube(idx / k, idx % k, 64u32) as usize] = b[idx as usize];
        }
        idx += 128;
    }
    fence_proxy_async_shared();
    sync_cube();

    let (lbo, sbo) = comptime![if b_mn_major {
        (MNMAJOR_LBO, MNMAJOR_SBO)
    } else {
        (KMAJOR_LBO, KMAJOR_SBO)
    }];
    let b_bits = comptime![if swap_offsets {
        descriptor_bits(sbo, lbo)
    } else {
        descriptor_bits(lbo, sbo)
    }];
    let a_bits = comptime![descriptor_bits(KMAJOR_LBO, KMAJOR_SBO)];
    let addr_a = shared_address::<bf16>(unsafe { sa.as_ptr_unchecked() });
    let addr_b = shared_address::<bf16>(unsafe { sb.as_ptr_unchecked() });
    let step = comptime![(slab_bytes(64) / 16) as u64];
    let d = wgmma_ss_m64n64_bf16(
        make_descriptor(addr_a, a_bits),
        make_descriptor(addr_b, b_bits),
        comptime![k / 16],
        step,
        step,
        b_mn_major,
    );
    #[unroll]
    for reg in 0..32u32 {
        let row = accumulator_row_cube(tid, reg);
        let col = accumulator_col_cube(tid, reg);
        out[(row * 64 + col) as usize] = d.extract(comptime![reg as usize]);
    }
}
