//! Golden parity against diffusers (fixtures from `tools/fixtures_cogvideox.py`, RoPE
//! tables made as the pipeline makes them), loading through the public code.

mod common;

use burn::tensor::DType;
use common::*;
use vdit_cogvideox::CogVideoXTransformer3DModel;
use vdit_models::nn::rope::assert_cached_per_layout;

fn check(name: &str) {
    let device = Default::default();
    let model = CogVideoXTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let out = model.forward_inputs(&inputs(name), None, &device).unwrap();
    let err = rel_l2(out, expected(name));
    println!("{name}: relative L2 error {err:.3e}");
    assert!(err <= 1e-4, "{name}: relative L2 error {err:.3e} > 1e-4");
}

#[test]
fn batch2_two_token_frames_int_timesteps_matches_diffusers() {
    check("b2_f4_8x8_t2even");
}

#[test]
fn batch2_three_token_frames_nonsquare_three_heads_matches_diffusers() {
    check("b2_f6_6x10_t3odd_nonsquare");
}

#[test]
fn bf16_checkpoint_loaded_into_f32_matches_diffusers() {
    check("b2_f2_4x12_bf16_weights");
}

#[test]
fn real_head_dim_64_rope_split_16_24_24_matches_diffusers() {
    check("b1_f4_6x4_d64_rope16_24_24");
}

/// A second forward with the same latent shape reuses the RoPE tables (and gives the
/// same bits); another shape builds new ones.
#[test]
fn rope_tables_are_cached_per_layout() {
    let name = "b2_f4_8x8_t2even";
    let device = Default::default();
    let model =
        CogVideoXTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device).unwrap();
    assert_cached_per_layout(&model.rope_cache, &inputs(name), |map| {
        model.forward_inputs(map, None, &device)
    });
}
