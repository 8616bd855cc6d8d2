//! A tiny Wan forward on the CubeCL wgpu backend (Mesa lavapipe in CI: our attention and
//! fused kernels) against the same model on burn-flex (Burn compositions).

mod common;

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::tensor::DType;
use common::*;
use vdit_ops::fused_launch_count;
use vdit_wan::WanTransformer3DModel;

type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

#[test]
fn tiny_forward_on_wgpu_matches_burn_flex() {
    // head_dim 16: the attention kernels need a multiple of 16.
    let name = "b1_f5_8x12_h3d16_sharded";
    let cpu_dev = Default::default();
    let cpu = WanTransformer3DModel::<B>::load(&fixture(name), DType::F32, &cpu_dev).unwrap();
    let want: Vec<f32> = cpu
        .forward_inputs(&inputs(name), None, &cpu_dev)
        .unwrap()
        .into_data()
        .into_vec()
        .unwrap();

    let gpu_dev = WgpuDevice::Cpu;
    let gpu = WanTransformer3DModel::<Gpu>::load(&fixture(name), DType::F32, &gpu_dev).unwrap();
    let before = fused_launch_count();
    let attn_before = vdit_kernels::launch_count();
    let out = gpu.forward_inputs(&inputs(name), None, &gpu_dev).unwrap();
    // Per block: norm1, norm3 (+ norm2), two gated residuals, self q and k, cross q and k;
    // then norm_out.
    let per_block: u64 = gpu
        .blocks
        .iter()
        .map(|b| 8 + u64::from(b.norm2.is_some()))
        .sum();
    assert_eq!(
        fused_launch_count() - before,
        per_block + 1,
        "fused launches"
    );
    // Self- and cross-attention: one flash-kernel launch each per block.
    assert_eq!(
        vdit_kernels::launch_count() - attn_before,
        2 * gpu.blocks.len() as u64,
        "attention launches"
    );
    let got: Vec<f32> = out.into_data().into_vec().unwrap();

    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(&want) {
        assert!(g.is_finite());
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    // A batch whose FFN activation passes 2^32 elements: a clear input error on the
    // CubeCL backend before any work (CubeCL 0.10 indexes with u32), fine on burn-flex.
    let tokens = 5 * 8 * 12 / 4; // latents 5x8x12 of this fixture, patch 1x2x2
    let batch = u32::MAX as usize / (tokens * gpu.config.ffn_dim) + 1;
    let msg = gpu.check_size(batch, tokens).unwrap_err().to_string();
    assert!(msg.contains("lower the batch size"), "{msg}");
    cpu.check_size(batch, tokens).unwrap();
    assert!(
        cpu.check_size(usize::MAX, tokens).is_err(),
        "usize overflow"
    );
    let err = (num / den).sqrt();
    println!("wgpu vs burn-flex: relative L2 error {err:.3e}");
    // f32 throughout; the kernels only change summation orders.
    assert!(err <= 1e-5, "relative L2 error {err:.3e} > 1e-5");
}
