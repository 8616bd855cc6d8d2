//! Attention through plans: an all-dense plan equals the dense model, a sparse plan runs
//! and changes the output, a plan for another model is rejected.

mod common;

use burn::tensor::DType;
use common::*;
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance};
use vdit_wan::WanTransformer3DModel;

const CASE: &str = "unit_b1_f2_16x16";

fn plan(layers: usize, heads: usize, head_dim: usize) -> Plan {
    let model = ModelInfo {
        id: "wan-test".into(),
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
    let layout = vdit_patterns::VideoLayout::new(2, 8, 8).unwrap();
    Plan::dense(model, layout, 1, provenance)
}

fn load() -> WanTransformer3DModel<B> {
    WanTransformer3DModel::load(&fixture(CASE), DType::F32, &Default::default()).unwrap()
}

#[test]
fn all_dense_plan_equals_dense_model_and_diffusers() {
    let device = Default::default();
    let model = load();
    let dense = model.forward_inputs(&inputs(CASE), None, &device).unwrap();
    let planned = model
        .forward_inputs(&inputs(CASE), Some(&plan(2, 2, 12)), &device)
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
    let mut p = plan(2, 2, 12);
    p.ranges[0].layers[0] = vec![Pattern::Diagonal { band: 0.1 }, Pattern::Skip];
    p.ranges[0].layers[1] = vec![
        Pattern::MultiDiagonal {
            spatial_band: 0.05,
            frame_reach: 0,
        },
        Pattern::Dense,
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
        .forward_inputs(&inputs(CASE), Some(&plan(3, 2, 12)), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers"), "{err}");
}
