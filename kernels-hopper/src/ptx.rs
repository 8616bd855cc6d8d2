//! Hopper instructions CubeCL has no operation for, issued through inline PTX (`gpu_asm!`).
//!
//! Every function is `#[cube]` and lowers to one `asm` statement in the generated CUDA C++
//! (cubecl-cpp), compiled by NVRTC for `sm_90a`. They only compile on the CUDA runtime.
//!
//! The warpgroup MMAs here are *synchronous*: each issues `wgmma.fence`, its MMAs, a commit
//! and `wait_group 0` in a single asm statement, so the compiler never sees the accumulator
//! registers while the tensor cores own them. CubeCL's asm has no read-write (`+f`)
//! operands, so every MMA starts from zero (`scale-d = 0` on its first k-step) and callers
//! add the result to their running accumulators in ordinary code.

use cubecl::prelude::*;

/// `2^x` by the special-function unit: `ex2.approx.ftz.f32` (relative error ~2^-22,
/// subnormal results flushed to zero).
#[cube]
pub fn ex2_approx(x: f32) -> f32 {
    let out: f32;
    gpu_asm!(
        "ex2.approx.ftz.f32 {out}, {x};",
        out = out(_) out,
        x = in(_) x,
        options(pure, nomem),
    );
    out
}

/// Two f32 values rounded to bf16 and packed into one 32-bit register, `lo` in the low half
/// (the order `mma`/`wgmma` register fragments expect).
#[cube]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let out: u32;
    gpu_asm!(
        "cvt.rn.bf16x2.f32 {out}, {hi}, {lo};",
        out = out(_) out,
        hi = in(_) hi,
        lo = in(_) lo,
        options(pure, nomem),
    );
    out
}

/// The 32-bit address in the shared state space of a generic pointer into shared memory
/// (what `wgmma` descriptors and `.shared` instructions take).
#[cube]
pub fn shared_address<T: CubePrimitive>(ptr: *const T) -> u32 {
    let out: u32;
    gpu_asm!(
        "{{ .reg .u64 t; cvta.to.shared.u64 t, {p}; cvt.u32.u64 {out}, t; }}",
        out = out(_) out,
        p = in(_) ptr,
        options(pure, nomem),
    );
    out
}

/// `fence.proxy.async.shared::cta`: makes this thread's ordinary shared-memory stores
/// visible to the async proxy (the tensor cores' `wgmma` operand reads). Each writing thread
/// issues it before the barrier that precedes the MMA.
#[cube]
pub fn fence_proxy_async_shared() {
    gpu_asm!("fence.proxy.async.shared::cta;");
}

/// A descriptor whose address-independent bits are `bits` (see
/// [`crate::layout::descriptor_bits`]) for the matrix starting at shared address `addr`.
#[cube]
pub fn make_descriptor(addr: u32, bits: u64) -> u64 {
    bits | (u64::cast_from(addr & 0x3FFFF) >> 4)
}

/// `D[64, N] = A[64, 16 * steps] * B[N, 16 * steps]^T` by one warpgroup, A K-major and B
/// K-major (`trans_b = false`) or MN-major (`trans_b = true`) in shared memory (descriptors `desc_a`, `desc_b` of the first k16 slab, slabs
/// `a_step` / `b_step` descriptor units = 16 bytes apart), bf16 inputs, f32 accumulators in
/// the `wgmma` fragment layout ([`crate::layout::accumulator_coords`]). `N` is 64 here:
/// `D` is 32 registers per thread. Synchronous (fence, MMAs, commit, wait 0 in one asm).
#[cube]
pub fn wgmma_ss_m64n64_bf16(
    desc_a: u64,
    desc_b: u64,
    #[comptime] steps: u32,
    #[comptime] a_step: u64,
    #[comptime] b_step: u64,
    #[comptime] trans_b: bool,
) -> Vector<f32, Const<32>> {
    let trans = comptime![trans_b as u32];
    let rest = comptime![later_steps(64, steps, a_step, b_step, trans_b as u32)];
    let d: Vector<f32, Const<32>>;
    gpu_asm!(
        "{{",
        ".reg .pred p0, p1;",
        ".reg .b64 ta, tb;",
        ".reg .u32 z;",
        "mov.u32 z, 0;",
        "setp.ne.u32 p0, z, 0;",
        "setp.eq.u32 p1, z, 0;",
        "wgmma.fence.sync.aligned;",
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {d}, {a}, {b}, p0, 1, 1, 0, {trans};",
        "{rest}",
        "wgmma.commit_group.sync.aligned;",
        "wgmma.wait_group.sync.aligned 0;",
        "}}",
        d = out(_) d,
        a = in(_) desc_a,
        b = in(_) desc_b,
    );
    d
}

/// The PTX of k-steps `1..steps` of a shared x shared `m64n{n}k16` bf16 MMA whose first
/// step the caller's template issues. Operand `$0` is the accumulator list, `$1` / `$2`
/// the descriptors of the first slab; `ta`, `tb` and the true predicate `p1` are declared by
/// the caller.
fn later_steps(n: u32, steps: u32, a_step: u64, b_step: u64, trans_b: u32) -> String {
    let mut out = String::new();
    for s in 1..steps as u64 {
        out.push_str(&format!(
            "add.s64 ta, $1, {};\nadd.s64 tb, $2, {};\n\
             wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 $0, ta, tb, p1, 1, 1, 0, {trans_b};\n",
            s * a_step,
            s * b_step
        ));
    }
    out
}

/// `D[64, 128] = A[64, 64] * B[128, 64]^T` by one warpgroup with `A` in registers and `B`
/// K-major (`trans_b = false`) or MN-major (`trans_b = true`) in shared memory (descriptor
/// `desc_b` of the first slab, slabs `b_step` descriptor units apart). `a` holds the four k16
/// fragments of A, 4 x bf16x2 each in the `mma.sync` A layout per warp (see [`a_fragments`]).
/// f32 accumulators, 64 registers per thread. Synchronous.
///
/// The fragments go in as 16 scalar operands: cubecl-cpp 0.11.3 prints a `u32` vector operand
/// as its first register only (an f32 vector prints as the whole list).
#[cube]
pub fn wgmma_rs_m64n128_bf16_k64(
    a: Vector<u32, Const<16>>,
    desc_b: u64,
    #[comptime] b_step: u64,
    #[comptime] trans_b: bool,
) -> Vector<f32, Const<64>> {
    let trans = comptime![trans_b as u32];
    let s1 = comptime![b_step];
    let s2 = comptime![2 * b_step];
    let s3 = comptime![3 * b_step];
    let (x0, x1, x2, x3) = (
        a.extract(0usize),
        a.extract(1usize),
        a.extract(2usize),
        a.extract(3usize),
    );
    let (x4, x5, x6, x7) = (
        a.extract(4usize),
        a.extract(5usize),
        a.extract(6usize),
        a.extract(7usize),
    );
    let (x8, x9, x10, x11) = (
        a.extract(8usize),
        a.extract(9usize),
        a.extract(10usize),
        a.extract(11usize),
    );
    let (x12, x13, x14, x15) = (
        a.extract(12usize),
        a.extract(13usize),
        a.extract(14usize),
        a.extract(15usize),
    );
    let d: Vector<f32, Const<64>>;
    gpu_asm!(
        "{{",
        ".reg .pred p0, p1;",
        ".reg .b64 tb;",
        ".reg .u32 z;",
        "mov.u32 z, 0;",
        "setp.ne.u32 p0, z, 0;",
        "setp.eq.u32 p1, z, 0;",
        "wgmma.fence.sync.aligned;",
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {d}, {{{x0}, {x1}, {x2}, {x3}}}, {b}, p0, 1, 1, {trans};",
        "add.s64 tb, {b}, {s1};",
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {d}, {{{x4}, {x5}, {x6}, {x7}}}, tb, p1, 1, 1, {trans};",
        "add.s64 tb, {b}, {s2};",
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {d}, {{{x8}, {x9}, {x10}, {x11}}}, tb, p1, 1, 1, {trans};",
        "add.s64 tb, {b}, {s3};",
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {d}, {{{x12}, {x13}, {x14}, {x15}}}, tb, p1, 1, 1, {trans};",
        "wgmma.commit_group.sync.aligned;",
        "wgmma.wait_group.sync.aligned 0;",
        "}}",
        d = out(_) d,
        x0 = in(_) x0,
        x1 = in(_) x1,
        x2 = in(_) x2,
        x3 = in(_) x3,
        x4 = in(_) x4,
        x5 = in(_) x5,
        x6 = in(_) x6,
        x7 = in(_) x7,
        x8 = in(_) x8,
        x9 = in(_) x9,
        x10 = in(_) x10,
        x11 = in(_) x11,
        x12 = in(_) x12,
        x13 = in(_) x13,
        x14 = in(_) x14,
        x15 = in(_) x15,
        b = in(_) desc_b,
    );
    d
}

/// The register-A fragments of `P V` (four k16 steps) from probabilities `p` in the `S`
/// accumulator layout of an `m64n64` MMA: step `s` takes `p[8s..8s+8]` as bf16 pairs.
#[cube]
pub fn a_fragments(p: Vector<f32, Const<32>>) -> Vector<u32, Const<16>> {
    let mut a = Vector::<u32, Const<16>>::new(0);
    #[unroll]
    for i in 0..16u32 {
        a.insert(
            comptime![i as usize],
            pack_bf16x2(
                p.extract(comptime![(2 * i) as usize]),
                p.extract(comptime![(2 * i + 1) as usize]),
            ),
        );
    }
    a
}

/// `cp.async.commit_group`: closes the group of this thread's `cp.async` copies issued so far
/// (cubecl's `copy_async` issues them).
#[cube]
pub fn cp_async_commit() {
    gpu_asm!("cp.async.commit_group;");
}

/// `cp.async.wait_group pending`: waits until at most `pending` of this thread's groups are
/// still in flight.
#[cube]
pub fn cp_async_wait(#[comptime] pending: u32) {
    gpu_asm!("cp.async.wait_group {pending};");
}
