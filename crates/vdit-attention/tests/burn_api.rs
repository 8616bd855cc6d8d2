//! The Burn-level entry points on the CPU backend (burn-flex).

mod common;

use std::sync::{Arc, Mutex};

use burn::backend::Flex;
use burn::tensor::{Bool, Distribution, Tensor, TensorData};
use common::{max_rel_err, reference};
use vdit_attention::{
    AttentionContext, AttentionError, AttentionOptions, AttentionPlan, CaptureHook,
    CapturedAttention, PreparedLayer, attention,
};
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance, TextPosition, VideoLayout};

type B = Flex;

fn rand4(shape: [usize; 4], seed: u64) -> Tensor<B, 4> {
    let data = common::random(shape.iter().product(), seed, 1.5);
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

fn host(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

#[test]
fn dense_path_equals_burn_attention() {
    let layout = VideoLayout::new(3, 5, 7)
        .unwrap()
        .with_text(6, TextPosition::Prefix)
        .unwrap();
    let shape = [2, 3, layout.total_tokens(), 32];
    let (q, k, v) = (rand4(shape, 1), rand4(shape, 2), rand4(shape, 3));
    let burn_out = burn::tensor::module::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        None,
        None,
        Default::default(),
    );
    // Through a dense plan layer with lse requested: our block-sparse path, all blocks.
    let layer = PreparedLayer::dense(3, &layout, 64).unwrap();
    let opts = AttentionOptions {
        want_lse: true,
        ..Default::default()
    };
    let ours = attention(
        q.clone(),
        k.clone(),
        v.clone(),
        Some(&layer),
        &layout,
        &opts,
    )
    .unwrap();
    let (a, b) = (host(ours.output), host(burn_out));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-5, "max abs diff {err}");
    assert_eq!(ours.lse.unwrap().dims(), [2, 3, layout.total_tokens()]);
    // No plan: Burn's own fused attention.
    let none = attention(q, k, v, None, &layout, &AttentionOptions::default()).unwrap();
    assert_eq!(host(none.output), b);
}

#[test]
fn sparse_layer_matches_the_reference_with_key_padding() {
    let layout = VideoLayout::new(4, 3, 6)
        .unwrap()
        .with_text(9, TextPosition::Suffix)
        .unwrap();
    let n = layout.total_tokens();
    let patterns = [
        Pattern::MultiDiagonal {
            spatial_band: 0.2,
            frame_reach: 1,
        },
        Pattern::Skip,
        Pattern::Diagonal { band: 0.5 },
    ];
    let layer = PreparedLayer::new(&patterns, &layout, 64).unwrap();
    let shape = [2, 3, n, 16];
    let (q, k, v) = (rand4(shape, 4), rand4(shape, 5), rand4(shape, 6));
    // Batch 1 pads its last 4 text tokens.
    let pad: Vec<bool> = (0..2 * n).map(|i| i < n || i - n < n - 4).collect();
    let pad_t =
        Tensor::<B, 2, Bool>::from_data(TensorData::new(pad.clone(), [2, n]), &Default::default());
    let opts = AttentionOptions {
        key_padding: Some(pad_t),
        ..Default::default()
    };
    let out = attention(
        q.clone(),
        k.clone(),
        v.clone(),
        Some(&layer),
        &layout,
        &opts,
    )
    .unwrap();
    let (want, _) = reference(
        &host(q),
        &host(k),
        &host(v),
        shape,
        layer.compiled(),
        0.25,
        Some(&pad),
    );
    assert!(max_rel_err(&host(out.output), &want) <= 1e-5);
}

#[test]
fn mismatches_are_errors_not_panics() {
    let layout = VideoLayout::new(2, 2, 4).unwrap();
    let q = rand4([1, 2, 16, 8], 1);
    let opts = AttentionOptions::default();
    let bad_k = rand4([1, 2, 15, 8], 2);
    assert!(matches!(
        attention(q.clone(), bad_k, q.clone(), None, &layout, &opts),
        Err(AttentionError::Shape(_))
    ));
    let other_layout = VideoLayout::new(2, 2, 5).unwrap();
    assert!(matches!(
        attention(q.clone(), q.clone(), q.clone(), None, &other_layout, &opts),
        Err(AttentionError::Shape(_))
    ));
    let three_heads = PreparedLayer::dense(3, &layout, 64).unwrap();
    assert!(matches!(
        attention(
            q.clone(),
            q.clone(),
            q.clone(),
            Some(&three_heads),
            &layout,
            &opts
        ),
        Err(AttentionError::Plan(_))
    ));
    let pad = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(vec![true; 15], [1, 15]),
        &Default::default(),
    );
    let opts = AttentionOptions {
        key_padding: Some(pad),
        ..Default::default()
    };
    assert!(matches!(
        attention(q.clone(), q.clone(), q, None, &layout, &opts),
        Err(AttentionError::Shape(_))
    ));
}

struct Recorder(Mutex<Vec<CapturedAttention>>);

impl CaptureHook for Recorder {
    fn wants(&self, step: usize, layer: usize) -> bool {
        step == 3 && layer == 1
    }
    fn wants_dense_output(&self) -> bool {
        true
    }
    fn capture(&self, c: CapturedAttention) {
        self.0.lock().unwrap().push(c);
    }
}

#[test]
fn context_follows_the_plan_per_step_and_captures() {
    let layout = VideoLayout::new(2, 4, 4).unwrap();
    let model = ModelInfo {
        id: "t".into(),
        config_hash: "none".into(),
        layers: 2,
        heads: 2,
        head_dim: 8,
    };
    let prov = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-11-24".into(),
        tool_version: "test".into(),
        notes: String::new(),
    };
    let mut plan = Plan::dense(model, layout, 4, prov);
    let mut sparse = plan.ranges[0].clone();
    plan.ranges[0].end = 2;
    sparse.start = 2;
    sparse.layers[1] = vec![Pattern::Skip, Pattern::Skip];
    plan.ranges.push(sparse);
    let compiled = Arc::new(AttentionPlan::new(plan, layout).unwrap());
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    let ctx = AttentionContext::with_plan(layout, compiled)
        .unwrap()
        .with_capture(recorder.clone());
    let x = Tensor::<B, 4>::random([1, 2, 32, 8], Distribution::Default, &Default::default());
    let dense = ctx
        .at_step(0)
        .self_attention(1, x.clone(), x.clone(), x.clone(), None)
        .unwrap();
    let skipped = ctx
        .at_step(3)
        .self_attention(1, x.clone(), x.clone(), x.clone(), None)
        .unwrap();
    assert!(host(dense.clone()).iter().any(|v| *v != 0.0));
    assert!(host(skipped).iter().all(|v| *v == 0.0));
    let caps = recorder.0.lock().unwrap();
    assert_eq!(caps.len(), 1);
    let dense_out = caps[0]
        .dense_output
        .clone()
        .unwrap()
        .into_vec::<f32>()
        .unwrap();
    assert_eq!(dense_out, host(dense));
    assert!(
        ctx.at_step(0)
            .self_attention(2, x.clone(), x.clone(), x, None)
            .is_err()
    );
    let other = VideoLayout::new(2, 4, 5).unwrap();
    let plan2 = Arc::new(AttentionPlan::new(ctx.plan().unwrap().plan().clone(), other).unwrap());
    assert!(AttentionContext::with_plan(layout, plan2).is_err());
}

#[test]
fn layer_density_counts_skipped_heads_as_zero() {
    let layout = VideoLayout::new(3, 4, 4).unwrap();
    let l = PreparedLayer::new(&[Pattern::Dense, Pattern::Skip], &layout, 64).unwrap();
    assert!(!l.is_dense());
    assert!((l.compiled().density() - 0.5).abs() < 1e-12);
    assert_eq!(max_rel_err(&[0.0], &[0.0]), 0.0);
}
