//! A tiny CogVideoX forward on the CubeCL wgpu backend (Mesa lavapipe in CI: our attention
//! and fused kernels) against the same model on burn-flex (Burn compositions).

mod common;

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::tensor::{DType, Tensor};
use common::*;
use vdit_cogvideox::CogVideoXTransformer3DModel;
use vdit_ops::fused_launch_count;

type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

#[test]
fn tiny_forward_on_wgpu_matches_burn_flex() {
    // head_dim 16 (the attention kernels need a multiple of 16), 8 text tokens first.
    let name = "b2_f4_8x8_t2even";
    let cpu_dev = Default::default();
    let cpu = CogVideoXTransformer3DModel::<B>::load(&fixture(name), DType::F32, &cpu_dev).unwrap();
    let want = cpu.forward_inputs(&inputs(name), None, &cpu_dev).unwrap();

    let gpu_dev = WgpuDevice::Cpu;
    let gpu =
        CogVideoXTransformer3DModel::<Gpu>::load(&fixture(name), DType::F32, &gpu_dev).unwrap();
    let before = fused_launch_count();
    let out = gpu.forward_inputs(&inputs(name), None, &gpu_dev).unwrap();
    // Per block: four adaLNs, four gated residuals, q and k; then norm_final, norm_out.
    let launches = 10 * gpu.transformer_blocks.len() as u64 + 2;
    assert_eq!(fused_launch_count() - before, launches, "fused launches");

    let got = Tensor::<B, 5>::from_data(out.into_data(), &cpu_dev);
    let err = rel_l2(got, want);
    println!("wgpu vs burn-flex: relative L2 error {err:.3e}");
    // f32 throughout; the kernels only change summation orders.
    assert!(err <= 1e-5, "relative L2 error {err:.3e} > 1e-5");
}
