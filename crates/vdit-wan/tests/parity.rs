//! Golden parity against diffusers (fixtures from `tools/fixtures_wan.py`), loading
//! through the same public code a user calls.

mod common;

use burn::tensor::DType;
use common::*;
use vdit_models::nn::rope::assert_cached_per_layout;
use vdit_wan::WanTransformer3DModel;

fn check(name: &str) {
    let device = Default::default();
    let model = WanTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let out = model.forward_inputs(&inputs(name), None, &device).unwrap();
    let err = rel_l2(out, expected(name));
    println!("{name}: relative L2 error {err:.3e}");
    assert!(err <= 1e-4, "{name}: relative L2 error {err:.3e} > 1e-4");
}

#[test]
fn unit_config_batch1_two_frames_matches_diffusers() {
    check("unit_b1_f2_16x16");
}

#[test]
fn batch2_nonsquare_three_frames_float_timesteps_matches_diffusers() {
    check("b2_f3_12x20_nonsquare");
}

#[test]
fn sharded_weights_five_frames_head_dim16_matches_diffusers() {
    check("b1_f5_8x12_h3d16_sharded");
}

#[test]
fn bf16_checkpoint_loaded_into_f32_matches_diffusers() {
    check("b2_f1_10x6_bf16_weights");
}

/// bf16 / f16 models (fp32 norms, modulation and residual adds, like diffusers) stay
/// close to the f32 reference; this checks the mixed-precision path runs end to end.
#[test]
fn half_precision_models_stay_close_to_the_f32_reference() {
    let device = Default::default();
    let name = "b2_f3_12x20_nonsquare";
    for (dtype, tol) in [(DType::BF16, 2e-2), (DType::F16, 3e-3)] {
        let model = WanTransformer3DModel::<B>::load(&fixture(name), dtype, &device).unwrap();
        let out = model.forward_inputs(&inputs(name), None, &device).unwrap();
        assert_eq!(out.dtype(), dtype);
        let err = rel_l2(out, expected(name));
        println!("{dtype:?}: relative L2 error {err:.3e}");
        assert!(err <= tol, "{dtype:?}: relative L2 error {err:.3e} > {tol}");
    }
}

/// A second forward with the same latent shape reuses the RoPE tables (and gives the
/// same bits); another shape builds new ones.
#[test]
fn rope_tables_are_cached_per_layout() {
    let name = "unit_b1_f2_16x16";
    let device = Default::default();
    let model = WanTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device).unwrap();
    assert_cached_per_layout(&model.rope_cache, &inputs(name), |map| {
        model.forward_inputs(map, None, &device)
    });
}
