//! Golden parity against diffusers (fixtures from `tools/fixtures_hunyuan.py`), loading
//! through the same public code a user calls.

mod common;

use burn::tensor::DType;
use common::*;
use vdit_hunyuan::{HunyuanInputs, HunyuanVideoTransformer3DModel, TextMask};
use vdit_models::nn::rope::assert_cached_per_layout;

fn check(name: &str) {
    let device = Default::default();
    let model = HunyuanVideoTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let out = model.forward_inputs(&inputs(name), None, &device).unwrap();
    let err = rel_l2(out, expected(name));
    println!("{name}: relative L2 error {err:.3e}");
    assert!(err <= 1e-4, "{name}: relative L2 error {err:.3e} > 1e-4");
}

#[test]
fn unit_config_all_ones_mask_matches_diffusers() {
    check("unit_b1_f1_16x16");
}

#[test]
fn batch2_padded_text_mask_patch2_matches_diffusers() {
    check("b2_f3_8x12_padded_mask");
}

#[test]
fn no_guidance_sharded_mlp_ratio_matches_diffusers() {
    check("b1_f2_6x10_noguidance_sharded");
}

#[test]
fn bf16_checkpoint_temporal_patch_matches_diffusers() {
    check("b2_f2_4x6_bf16_weights");
}

/// The conditioning vector and the refined text (with a padded mask) match diffusers'
/// intermediates, so a failure above can be localised.
#[test]
fn conditioning_and_token_refiner_match_diffusers() {
    let name = "b2_f3_8x12_padded_mask";
    let device = Default::default();
    let model =
        HunyuanVideoTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device).unwrap();
    let inp = HunyuanInputs::<B>::from_tensor_map(&inputs(name), DType::F32, &device).unwrap();
    let t: Vec<f32> = inp.timestep.clone().into_data().into_vec().unwrap();
    let g: Vec<f32> = inp
        .guidance
        .clone()
        .unwrap()
        .into_data()
        .into_vec()
        .unwrap();
    let temb =
        model
            .time_text_embed
            .forward(&t, Some(&g), inp.pooled_projections.clone(), DType::F32);
    let err = rel_l2(temb, intermediate::<2>(name, "temb"));
    assert!(err <= 1e-5, "temb: {err:.3e}");
    let mask = TextMask::from_tensor(inp.encoder_attention_mask.clone()).unwrap();
    assert_eq!(mask.counts(), vec![7, 3]);
    let ctx = model
        .context_embedder
        .forward(inp.encoder_hidden_states.clone(), &t, &mask);
    let err = rel_l2(ctx, intermediate::<3>(name, "context"));
    assert!(err <= 1e-5, "refined text: {err:.3e}");
}

/// The padding matters: the same inputs with an all-valid mask give another output, so
/// the padded fixture really exercises the masks.
#[test]
fn padding_changes_the_output() {
    let name = "b2_f3_8x12_padded_mask";
    let device = Default::default();
    let model =
        HunyuanVideoTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device).unwrap();
    let mut map = inputs(name);
    map.tensors.remove("encoder_attention_mask");
    let out = model.forward_inputs(&map, None, &device).unwrap();
    let diff = rel_l2(out, expected(name));
    assert!(
        diff > 1e-3,
        "an all-valid mask should change the output ({diff:.3e})"
    );
}

/// An f32 checkpoint loaded into a bf16 model stays close to diffusers' f32 output
/// (bf16 rounding only; the padded-mask case, batch 2).
#[test]
fn bf16_model_stays_close_to_the_f32_reference() {
    let name = "b2_f3_8x12_padded_mask";
    let device = Default::default();
    let model =
        HunyuanVideoTransformer3DModel::<B>::load(&fixture(name), DType::BF16, &device).unwrap();
    let out = model.forward_inputs(&inputs(name), None, &device).unwrap();
    assert_eq!(out.dtype(), DType::BF16);
    let err = rel_l2(out, expected(name));
    println!("{name} in bf16: relative L2 error {err:.3e}");
    assert!(err <= 5e-2, "bf16: relative L2 error {err:.3e}");
}

/// A second forward with the same latent shape reuses the RoPE tables (and gives the
/// same bits); another shape builds new ones.
#[test]
fn rope_tables_are_cached_per_layout() {
    let name = "unit_b1_f1_16x16";
    let device = Default::default();
    let model =
        HunyuanVideoTransformer3DModel::<B>::load(&fixture(name), DType::F32, &device).unwrap();
    assert_cached_per_layout(&model.rope_cache, &inputs(name), |map| {
        model.forward_inputs(map, None, &device)
    });
}
