//! Attention through plans with the text-prefix layout: an all-dense plan equals the
//! dense model, a sparse plan runs and changes the output, a plan for another model is
//! rejected.

mod common;

use burn::tensor::DType;
use common::*;
use vdit_cogvideox::CogVideoXTransformer3DModel;
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance, TextPosition, VideoLayout};

const CASE: &str = "b2_f6_6x10_t3odd_nonsquare";

fn plan(layers: usize, heads: usize, head_dim: usize) -> Plan {
    let model = ModelInfo {
        id: "cogvideox-test".into(),
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
    let layout = VideoLayout::new(3, 3, 5)
        .unwrap()
        .with_text(5, TextPosition::Prefix)
        .unwrap();
    Plan::dense(model, layout, 1, provenance)
}

fn load() -> CogVideoXTransformer3DModel<B> {
    CogVideoXTransformer3DModel::load(&fixture(CASE), DType::F32, &Default::default()).unwrap()
}

#[test]
fn layout_is_text_prefix_of_post_patch_grid() {
    let model = load();
    let l = model.layout(6, 6, 10, 5).unwrap();
    assert_eq!((l.frames, l.height, l.width, l.text), (3, 3, 5, 5));
    assert_eq!(l.text_position, TextPosition::Prefix);
    assert_eq!(l.total_tokens(), 5 + 45);
    let real = vdit_cogvideox::layout_for(
        &vdit_cogvideox::CogVideoXConfig::cogvideox1_5_5b(),
        22,
        96,
        170,
        226,
    )
    .unwrap();
    assert_eq!(real.total_tokens(), 45_106);
}

#[test]
fn all_dense_plan_equals_dense_model_and_diffusers() {
    let device = Default::default();
    let model = load();
    let dense = model.forward_inputs(&inputs(CASE), None, &device).unwrap();
    let planned = model
        .forward_inputs(&inputs(CASE), Some(&plan(2, 3, 16)), &device)
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
    let mut p = plan(2, 3, 16);
    p.ranges[0].layers[0] = vec![
        Pattern::Diagonal { band: 0.1 },
        Pattern::Skip,
        Pattern::Dense,
    ];
    p.ranges[0].layers[1] = vec![
        Pattern::MultiDiagonal {
            spatial_band: 0.05,
            frame_reach: 0,
        },
        Pattern::Dense,
        Pattern::Diagonal { band: 0.2 },
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
    let err = model
        .forward_inputs(&inputs(CASE), Some(&plan(3, 3, 16)), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers"), "{err}");
}
