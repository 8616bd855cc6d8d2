//! Golden parity of the Wan VAE decoder against diffusers `AutoencoderKLWan.decode`
//! (fixtures from `tools/fixtures_wan_t2v.py`), loading through `WanVaeDecoder::load`.

mod common;

use burn::tensor::{DType, Tensor};
use common::*;
use vdit_models::io::TensorMap;
use vdit_wan::vae::{WanVaeConfig, WanVaeDecoder};

fn t2v(name: &str) -> std::path::PathBuf {
    fixture("t2v").join(name)
}

fn check(name: &str) {
    let device = Default::default();
    let dir = t2v(name);
    let vae = WanVaeDecoder::<B>::load(&dir, DType::F32, &device).unwrap_or_else(|e| panic!("{e}"));
    let inputs = TensorMap::read(&dir.join("inputs.safetensors")).unwrap();
    let out = vae.forward_inputs(&inputs, &device).unwrap();
    let want = TensorMap::read(&dir.join("outputs.safetensors"))
        .unwrap()
        .float::<B, 5>("sample", DType::F32, &device)
        .unwrap();
    let err = rel_l2(out, want);
    println!("{name}: relative L2 error {err:.3e}");
    assert!(err <= 1e-4, "{name}: relative L2 error {err:.3e} > 1e-4");
}

#[test]
fn vae_wan21_levels_three_latent_frames_matches_diffusers() {
    check("vae_b1_f3_4x6");
}

#[test]
fn vae_batch2_other_levels_and_temporal_order_matches_diffusers() {
    check("vae_b2_f2_3x5_mult112");
}

#[test]
fn latents_with_the_wrong_channel_count_are_an_error() {
    let device = Default::default();
    let vae = WanVaeDecoder::<B>::load(&t2v("vae_b1_f3_4x6"), DType::F32, &device).unwrap();
    let err = vae
        .decode(Tensor::<B, 5>::zeros([1, 5, 2, 4, 4], &device))
        .unwrap_err()
        .to_string();
    assert!(err.contains("z_dim"), "{err}");
}

#[test]
fn tiny_random_vae_gives_wan_strides() {
    let device = Default::default();
    let c = WanVaeConfig::tiny();
    assert_eq!(c.output_frames(21), 81);
    let vae = WanVaeDecoder::<B>::random(&c, 0, DType::F32, &device).unwrap();
    let out = vae
        .decode(Tensor::<B, 5>::zeros([1, 16, 2, 2, 3], &device))
        .unwrap();
    assert_eq!(out.dims(), [1, 3, 5, 16, 24]);
}

#[test]
fn latents_too_large_for_the_backend_are_an_error_before_any_work() {
    // CubeCL indexes tensors with 32 bits: latents whose decoded activations would pass
    // 2^32 elements are refused before the decode, naming the limit.
    type Gpu = burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;
    let device = burn::backend::wgpu::WgpuDevice::default();
    let c = WanVaeConfig::tiny();
    let vae = WanVaeDecoder::<Gpu>::random(&c, 0, DType::F32, &device).unwrap();
    let err = vae
        .decode(Tensor::<Gpu, 5>::zeros([1, 16, 1, 1024, 1024], &device))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than this backend indexes (4294967295)"),
        "{err}"
    );
    // A small size still decodes on the same backend.
    let ok = vae
        .decode(Tensor::<Gpu, 5>::zeros([1, 16, 2, 2, 3], &device))
        .unwrap();
    assert_eq!(ok.dims(), [1, 3, 5, 16, 24]);
}
