//! Attention through plans: an all-dense plan equals the dense model (padded text mask,
//! batch 2), a sparse plan runs and changes the output, a plan for another model shape
//! is rejected; a tiny random-weight model runs end to end.

mod common;

use burn::tensor::DType;
use common::*;
use vdit_hunyuan::{HunyuanConfigJson, HunyuanInputs, HunyuanVideoTransformer3DModel};
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance};

const CASE: &str = "b2_f3_8x12_padded_mask";

/// 2 dual + 2 single blocks, 2 heads of 12.
fn plan(layers: usize, heads: usize, head_dim: usize) -> Plan {
    let model = ModelInfo {
        id: "hunyuan-test".into(),
        config_hash: "none".into(),
        layers,
        heads,
        head_dim,
    };
    let provenance = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-11-24".into(),
        tool_version: "test".into(),
        notes: String::new(),
    };
    let layout = vdit_patterns::VideoLayout::new(3, 4, 6)
        .unwrap()
        .with_text(10, vdit_patterns::TextPosition::Suffix)
        .unwrap();
    Plan::dense(model, layout, 1, provenance)
}

fn load() -> HunyuanVideoTransformer3DModel<B> {
    HunyuanVideoTransformer3DModel::load(&fixture(CASE), DType::F32, &Default::default()).unwrap()
}

#[test]
fn all_dense_plan_equals_dense_model_and_diffusers() {
    let device = Default::default();
    let model = load();
    let dense = model.forward_inputs(&inputs(CASE), None, &device).unwrap();
    let planned = model
        .forward_inputs(&inputs(CASE), Some(&plan(4, 2, 12)), &device)
        .unwrap();
    let diff = rel_l2(planned.clone(), dense);
    assert!(
        diff <= 1e-6,
        "dense plan differs from dense model: {diff:.3e}"
    );
    assert!(rel_l2(planned, expected(CASE)) <= 1e-4);
}

#[test]
fn sparse_plan_runs_and_changes_the_output() {
    let device = Default::default();
    let model = load();
    let mut p = plan(4, 2, 12);
    // A dual block and a single block get sparse heads.
    p.ranges[0].layers[1] = vec![Pattern::Diagonal { band: 0.2 }, Pattern::Skip];
    p.ranges[0].layers[2] = vec![
        Pattern::Dense,
        Pattern::MultiDiagonal {
            spatial_band: 0.1,
            frame_reach: 1,
        },
    ];
    let sparse = model
        .forward_inputs(&inputs(CASE), Some(&p), &device)
        .unwrap();
    let dense = expected(CASE);
    assert_eq!(sparse.dims(), dense.dims());
    let values: Vec<f32> = sparse.clone().into_data().into_vec().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    let diff = rel_l2(sparse, dense);
    assert!(
        diff > 1e-3,
        "sparse plan should change the output (rel diff {diff:.3e})"
    );
}

#[test]
fn plan_for_another_model_shape_is_rejected() {
    let model = load();
    // 20 layers would fit only the dual blocks of the real model; this model has 2 + 2.
    let err = model
        .forward_inputs(&inputs(CASE), Some(&plan(2, 2, 12)), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers"), "{err}");
    let err = model
        .forward_inputs(&inputs(CASE), Some(&plan(4, 3, 12)), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("heads"), "{err}");
}

/// `random` + `HunyuanInputs::random`: what a timing run at real size does, on a tiny
/// config, with padded text, in bf16.
#[test]
fn random_weights_and_inputs_run_in_bf16() {
    let device = Default::default();
    let json = HunyuanConfigJson {
        num_attention_heads: 2,
        attention_head_dim: 8,
        rope_axes_dim: vec![2, 2, 4],
        num_layers: 1,
        num_single_layers: 1,
        num_refiner_layers: 1,
        in_channels: 4,
        out_channels: Some(4),
        text_embed_dim: 8,
        pooled_projection_dim: 4,
        ..Default::default()
    };
    let config = json.into_config().unwrap();
    let model =
        HunyuanVideoTransformer3DModel::<B>::random(&config, 7, DType::BF16, &device).unwrap();
    let inputs = HunyuanInputs::random(&config, 1, [2, 4, 6], 5, Some(3), &device).unwrap();
    let ctx = model.attention_context(2, 4, 6, 5, None).unwrap();
    // The file form of the same inputs gives the same result.
    let via_file = model
        .forward_inputs(&inputs.clone().into_tensor_map(), None, &device)
        .unwrap();
    let out = model.forward(inputs, &ctx).unwrap();
    assert_eq!(
        out.clone()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap(),
        via_file
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap()
    );
    assert_eq!(out.dims(), [1, 4, 2, 4, 6]);
    assert_eq!(out.dtype(), DType::BF16);
    let v: Vec<f32> = out.into_data().convert::<f32>().into_vec().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}
