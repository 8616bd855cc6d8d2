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

/// `out[64, 64] = a[64, k] * b[64, k]^T` (row-major bf16 in, f32 out) by one warpgroup of 128
/// threads: both tiles are staged in shared memory in the K-major interleaved layout
/// ([`crate::layout`]) and multiplied by [`wgmma_ss_m64n64_bf16`] in `k / 16` steps.
/// `swap_offsets` exchanges the two byte offsets of the descriptors (a diagnostic for the
/// layout convention; the test expects it to give a wrong product).
#[cube(launch)]
pub fn wgmma_gemm_kernel(
    a: &[bf16],
    b: &[bf16],
    out: &mut [f32],
    #[comptime] k: u32,
    #[comptime] swap_offsets: bool,
) {
    let tid = UNIT_POS;
    let mut sa = Shared::<[bf16]>::new_aligned_slice(comptime![(64 * k) as usize], 128usize);
    let mut sb = Shared::<[bf16]>::new_aligned_slice(comptime![(64 * k) as usize], 128usize);
    let mut idx = tid;
    while idx < 64 * k {
        let r = idx / k;
        let c = idx % k;
        let o = kmajor_offset_cube(r, c, 64u32) as usize;
        sa[o] = a[idx as usize];
        sb[o] = b[idx as usize];
        idx += 128;
    }
    fence_proxy_async_shared();
    sync_cube();

    let bits = if comptime![swap_offsets] {
        comptime![descriptor_bits(KMAJOR_SBO, KMAJOR_LBO)]
    } else {
        comptime![descriptor_bits(KMAJOR_LBO, KMAJOR_SBO)]
    };
    let addr_a = shared_address::<bf16>(unsafe { sa.as_ptr_unchecked() });
    let addr_b = shared_address::<bf16>(unsafe { sb.as_ptr_unchecked() });
    let step = comptime![(slab_bytes(64) / 16) as u64];
    let d = wgmma_ss_m64n64_bf16(
        make_descriptor(addr_a, bits),
        make_descriptor(addr_b, bits),
        comptime![k / 16],
        step,
        step,
        false,
    );
    #[unroll]
    for reg in 0..32u32 {
        let row = accumulator_row_cube(tid, reg);
        let col = accumulator_col_cube(tid, reg);
        out[(row * 64 + col) as usize] = d.extract(comptime![reg as usize]);
    }
}

/// `out[64, 64] = a[64, k] * b[k, 64]` with `b` row-major (N contiguous), staged MN-major
/// ([`crate::layout::mnmajor_offset`]) and multiplied with `wgmma`'s transposed-B flag.
/// `swap_offsets` exchanges LBO and SBO: exactly one of the two settings is right, and the
/// test pins [`MNMAJOR_LBO`] / [`MNMAJOR_SBO`] to it.
#[cube(launch)]
pub fn wgmma_gemm_mn_kernel(
    a: &[bf16],
    b: &[bf16],
    out: &mut [f32],
    #[comptime] k: u32,
    #[comptime] swap_offsets: bool,
) {
    let tid = UNIT_POS;
    let mut sa = Shared::<[bf16]>::new_aligned_slice(comptime![(64 * k) as usize], 128usize);
    let mut sb = Shared::<[bf16]>::new_aligned_slice(comptime![(64 * k) as usize], 128usize);
    let mut idx = tid;
    while idx < 64 * k {
        sa[kmajor_offset_cube(idx / k, idx % k, 64u32) as usize] = a[idx as usize];
        sb[mnmajor_offset_cube(idx / 64, idx % 64, 64u32) as usize] = b[idx as usize];
        idx += 128;
    }
    fence_proxy_async_shared();
    sync_cube();

    let a_bits = comptime![descriptor_bits(KMAJOR_LBO, KMAJOR_SBO)];
    let b_bits = if comptime![swap_offsets] {
        comptime![descriptor_bits(MNMAJOR_SBO, MNMAJOR_LBO)]
    } else {
        comptime![descriptor_bits(MNMAJOR_LBO, MNMAJOR_SBO)]
    };
    let addr_a = shared_address::<bf16>(unsafe { sa.as_ptr_unchecked() });
    let addr_b = shared_address::<bf16>(unsafe { sb.as_ptr_unchecked() });
    let step = comptime![(slab_bytes(64) / 16) as u64];
    let d = wgmma_ss_m64n64_bf16(
        make_descriptor(addr_a, a_bits),
        make_descriptor(addr_b, b_bits),
        comptime![k / 16],
        step,
        step,
        true,
    );
    #[unroll]
    for reg in 0..32u32 {
        let row = accumulator_row_cube(tid, reg);
        let col = accumulator_col_cube(tid, reg);
        out[(row * 64 + col) as usize] = d.extract(comptime![reg as usize]);
    }
}
