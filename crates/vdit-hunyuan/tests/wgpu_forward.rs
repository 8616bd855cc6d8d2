//! A tiny HunyuanVideo forward on the CubeCL wgpu backend (Mesa lavapipe in CI: our
//! attention and fused kernels) against the same weights on burn-flex (Burn
//! compositions).

mod common;

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::module::Module;
use burn::record::{FullPrecisionSettings, Record};
use burn::tensor::{DType, Tensor, TensorData};
use common::*;
use vdit_hunyuan::{HunyuanConfig, HunyuanVideoTransformer3DModel};
use vdit_models::io::TensorMap;
use vdit_ops::fused_launch_count;

type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;
type Model<Bk> = HunyuanVideoTransformer3DModel<Bk>;
type Item<Bk> = <<Model<Bk> as Module<Bk>>::Record as Record<Bk>>::Item<FullPrecisionSettings>;

/// Deterministic values in `[-1, 1)`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn tiny_forward_on_wgpu_matches_burn_flex() {
    // The fixtures' head dims (8-12) are below the attention kernels' multiple of 16:
    // the tiny config (4 heads of 16) with random weights, copied to the GPU model.
    let c = HunyuanConfig::tiny();
    let cpu_dev = Default::default();
    let cpu = Model::<B>::random(&c, 7, DType::F32, &cpu_dev).unwrap();
    let gpu_dev = WgpuDevice::Cpu;
    let json = serde_json::to_string(
        &cpu.clone()
            .into_record()
            .into_item::<FullPrecisionSettings>(),
    );
    let json = json.unwrap();
    let item: Item<Gpu> = serde_json::from_str(&json).unwrap();
    let gpu = Model::<Gpu>::random(&c, 0, DType::F32, &gpu_dev)
        .unwrap()
        .load_record(Record::from_item(item, &gpu_dev));

    // Batch 2 (the second prompt padded), one frame of 4x4 latents, 6 text tokens.
    let (b, l, (f, h, w)) = (2, 6, (1, 4, 4));
    let mut map = TensorMap::default();
    let mut put = |name: &str, shape: Vec<usize>, seed: u64, scale: f32| {
        let n = shape.iter().product();
        let v: Vec<f32> = values(n, seed).iter().map(|x| x * scale).collect();
        map.insert(name, TensorData::new(v, shape));
    };
    put("hidden_states", vec![b, c.in_channels, f, h, w], 1, 1.0);
    put("encoder_hidden_states", vec![b, l, c.text_dim], 2, 1.0);
    put("pooled_projections", vec![b, c.pooled_dim], 3, 1.0);
    map.insert("timestep", TensorData::new(vec![500.0f32, 900.0], [b]));
    map.insert("guidance", TensorData::new(vec![6000.0f32; b], [b]));
    let mask: Vec<f32> = [[1.0; 6], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]].concat();
    map.insert("encoder_attention_mask", TensorData::new(mask, [b, l]));

    let want = cpu.forward_inputs(&map, None, &cpu_dev).unwrap();
    let before = fused_launch_count();
    let out = gpu.forward_inputs(&map, None, &gpu_dev).unwrap();
    // Refiner blocks: two LayerNorms, two gated residuals. Dual-stream blocks: four
    // adaLNs, four gated residuals, q and k of both streams. Single-stream blocks: one
    // adaLN, one gated residual, q and k (one call each over the joint sequence). Then
    // norm_out.
    let launches = 4 * c.refiner_layers + 12 * c.layers + 4 * c.single_layers + 1;
    assert_eq!(
        fused_launch_count() - before,
        launches as u64,
        "fused launches"
    );

    let got = Tensor::<B, 5>::from_data(out.into_data(), &cpu_dev);
    let err = rel_l2(got, want);
    println!("wgpu vs burn-flex: relative L2 error {err:.3e}");
    // f32 throughout; the kernels only change summation orders.
    assert!(err <= 1e-5, "relative L2 error {err:.3e} > 1e-5");
}
