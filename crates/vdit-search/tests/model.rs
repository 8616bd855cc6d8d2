//! Model-driven search: a tiny random Wan2.1 run through `CaptureHook`, with the mixed
//! output propagated to later layers and steps (Algorithm 1).

mod common;

use std::sync::{Arc, Mutex};

use burn::backend::Flex;
use burn::tensor::{DType, Distribution, Tensor};
use vdit_attention::{CaptureHook, CapturedAttention};
use vdit_models::samplers::{FlowMatchEuler, Sampler};
use vdit_patterns::{Pattern, Plan, VideoLayout};
use vdit_search::{
    Decided, ModelRunner, ModelSource, NoProgress, QkvSource, SearchError, SearchOptions,
    SourceInfo, search,
};
use vdit_wan::{WanConfigJson, WanTransformer3DModel};

type B = Flex;

/// Latents `[1, 4, 4, 16, 16]`: 4 x 8 x 8 = 256 tokens after 1x2x2 patching.
const LATENT: [usize; 5] = [1, 4, 4, 16, 16];

#[derive(Clone)]
struct WanRunner {
    model: WanTransformer3DModel<B>,
    noise: Vec<Tensor<B, 5>>,
    text: Tensor<B, 3>,
    steps: usize,
    layout: VideoLayout,
}

impl WanRunner {
    fn new(samples: usize, steps: usize) -> Self {
        let device = Default::default();
        let config = WanConfigJson {
            num_attention_heads: 2,
            attention_head_dim: 12,
            in_channels: 4,
            out_channels: Some(4),
            text_dim: 16,
            ffn_dim: 32,
            num_layers: 2,
            ..Default::default()
        }
        .into_config()
        .unwrap();
        let model = WanTransformer3DModel::<B>::random(&config, 11, DType::F32, &device).unwrap();
        let noise = (0..samples)
            .map(|_| Tensor::random(LATENT, Distribution::Normal(0.0, 1.0), &device))
            .collect();
        let text = Tensor::random([1, 8, 16], Distribution::Normal(0.0, 1.0), &device);
        let layout = model.layout(LATENT[2], LATENT[3], LATENT[4]).unwrap();
        WanRunner {
            model,
            noise,
            text,
            steps,
            layout,
        }
    }
}

impl WanRunner {
    fn info(&self) -> SourceInfo {
        let c = &self.model.config;
        SourceInfo {
            model: "wan-tiny-random".into(),
            layout: self.layout,
            layers: c.layers,
            heads: c.heads,
            head_dim: c.head_dim,
            samples: self.noise.len(),
            steps: (0..self.steps).collect(),
        }
    }

    /// A search source whose workers run clones of this runner.
    fn source(self) -> ModelSource<WanRunner> {
        ModelSource::new(self.info(), move |_| Ok(self.clone()))
    }
}

impl ModelRunner for WanRunner {
    fn run_to(
        &mut self,
        sample: usize,
        step: usize,
        plan: &Plan,
        hook: Arc<dyn CaptureHook>,
    ) -> Result<(), SearchError> {
        let err = |e: vdit_models::ModelError| SearchError::Source(e.to_string());
        let [_, _, f, h, w] = LATENT;
        let ctx = self
            .model
            .attention_context(f, h, w, Some(plan))
            .map_err(err)?
            .with_capture(hook);
        let mut sampler = FlowMatchEuler::new(self.steps, 3.0).unwrap();
        let device = Default::default();
        let mut x = self.noise[sample].clone();
        for i in 0..=step {
            let t = Tensor::<B, 1>::from_floats([Sampler::<B>::timesteps(&sampler)[i]], &device);
            let v = self
                .model
                .forward(x.clone(), t, self.text.clone(), &ctx.at_step(i))
                .map_err(err)?;
            if i < step {
                x = sampler.step(v, i, x).map_err(err)?;
            }
        }
        Ok(())
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn model_source_propagates_decisions_to_later_layers_and_steps() {
    let mut source = WanRunner::new(1, 2).source();
    assert!(source.propagates());
    let dense = Decided::new();
    let l1_dense = source.qkv(0, 0, 1, &dense).unwrap();
    let l0_dense = source.qkv(0, 0, 0, &dense).unwrap();
    assert_eq!(
        (l1_dense.heads, l1_dense.tokens, l1_dense.head_dim),
        (2, 256, 12)
    );
    // Deterministic: the same call gives the same q/k/v.
    assert_eq!(source.qkv(0, 0, 1, &dense).unwrap(), l1_dense);

    // Skipping both heads of layer 0 at step 0 changes what layer 1 sees at step 0 (the
    // mixed output goes forward), but not layer 0 itself.
    let probe = |source: &mut ModelSource<WanRunner>| {
        let mut d = Decided::new();
        let steps = vdit_search::plan_ranges(&[0, 1], 2, 0, 2).unwrap();
        d = with_layer(
            d,
            steps[0].steps.clone(),
            vec![Pattern::Skip, Pattern::Skip],
        );
        (
            source.qkv(0, 0, 0, &d).unwrap(),
            source.qkv(0, 0, 1, &d).unwrap(),
            source.qkv(0, 1, 0, &d).unwrap(),
        )
    };
    let (l0_mixed, l1_mixed, s1_l0_mixed) = probe(&mut source);
    assert_eq!(l0_mixed, l0_dense);
    assert!(max_abs_diff(&l1_mixed.q, &l1_dense.q) > 1e-4);
    // ... and what layer 0 sees at the next step (through the sampler).
    let s1_l0_dense = source.qkv(0, 1, 0, &Decided::new()).unwrap();
    assert!(max_abs_diff(&s1_l0_mixed.v, &s1_l0_dense.v) > 1e-5);
}

/// `Decided` is built by the search; tests reach it through a one-layer greedy run.
fn with_layer(_d: Decided, steps: std::ops::Range<usize>, patterns: Vec<Pattern>) -> Decided {
    Decided::from_layers(vec![(steps, vec![patterns])])
}

#[test]
fn greedy_search_through_the_model_writes_a_valid_plan() {
    let mut source = WanRunner::new(1, 2).source();
    let opts = SearchOptions {
        ranges: 2,
        epsilon: 0.5,
        ..common::opts()
    };
    let out = search(
        &mut source,
        &opts,
        &common::cost(),
        common::meta(),
        &NoProgress,
    )
    .unwrap();
    assert!(out.propagated);
    out.plan.validate().unwrap();
    out.plan.check_model(2, 2, 12).unwrap();
    assert_eq!(out.plan.ranges.len(), 2);
    // Errors are reported for every non-dense head and stay under epsilon.
    for d in out.decisions.iter().flatten().flatten() {
        if d.pattern != Pattern::Dense {
            assert!(d.loss <= 0.5 && d.error.is_finite(), "{d:?}");
        }
    }
}

/// The straightforward propagating source the paused runs must agree with: every query
/// re-runs the trajectory from the noise with the plan of the decisions so far.
struct Replay {
    runner: WanRunner,
    source: ModelSource<WanRunner>,
    block_size: usize,
}

struct OneShot {
    at: (usize, usize),
    slot: Mutex<Option<CapturedAttention>>,
}

impl CaptureHook for OneShot {
    fn wants(&self, step: usize, layer: usize) -> bool {
        (step, layer) == self.at
    }
    fn capture(&self, c: CapturedAttention) {
        *self.slot.lock().unwrap() = Some(c);
    }
}

impl QkvSource for Replay {
    fn info(&self) -> SourceInfo {
        self.runner.info()
    }
    fn propagates(&self) -> bool {
        true
    }
    fn use_block_size(&mut self, block_size: usize) {
        self.block_size = block_size;
        self.source.use_block_size(block_size);
    }
    fn qkv(
        &mut self,
        sample: usize,
        step: usize,
        layer: usize,
        decided: &Decided,
    ) -> Result<vdit_search::LayerQkv, SearchError> {
        let plan = self.source.partial_plan(decided, step)?;
        assert_eq!(plan.block_size, self.block_size);
        let hook = Arc::new(OneShot {
            at: (step, layer),
            slot: Mutex::new(None),
        });
        self.runner.run_to(sample, step, &plan, hook.clone())?;
        let c = hook.slot.lock().unwrap().take().unwrap();
        let f =
            |t: &burn::tensor::TensorData| t.clone().convert::<f32>().into_vec::<f32>().unwrap();
        let (h, n, d) = (c.q.shape[1], c.q.shape[2], c.q.shape[3]);
        vdit_search::LayerQkv::new(h, n, d, f(&c.q), f(&c.k), f(&c.v))
    }
}

#[test]
fn paused_runs_match_replaying_the_trajectory_for_every_layer() {
    // Two samples, three steps, one step range each, a loose epsilon so that layers go
    // sparse and the propagation matters; block 128 so that tables differ from the
    // default 64.
    let opts = SearchOptions {
        ranges: 3,
        epsilon: 0.6,
        block_size: 128,
        ..common::opts()
    };
    let runner = WanRunner::new(2, 3);
    let mut replay = Replay {
        runner: runner.clone(),
        source: runner.clone().source(),
        block_size: 0,
    };
    let mut paused = runner.source();
    let a = search(
        &mut replay,
        &opts,
        &common::cost(),
        common::meta(),
        &NoProgress,
    )
    .unwrap();
    let b = search(
        &mut paused,
        &opts,
        &common::cost(),
        common::meta(),
        &NoProgress,
    )
    .unwrap();
    assert!(
        a.decisions
            .iter()
            .flatten()
            .flatten()
            .any(|d| d.pattern != Pattern::Dense),
        "the test needs sparse decisions to exercise propagation"
    );
    assert_eq!(a.plan.ranges, b.plan.ranges);
    for (x, y) in a
        .decisions
        .iter()
        .flatten()
        .flatten()
        .zip(b.decisions.iter().flatten().flatten())
    {
        assert_eq!(x.pattern, y.pattern);
        assert!(
            (x.error - y.error).abs() <= 1e-9 * x.error.abs().max(1e-12),
            "{x:?} vs {y:?}"
        );
    }
    // One run per sample: the search never went back.
    assert_eq!(paused.runs_started(), 2);
    // Ranges of several captured steps run their later steps with the range's undecided
    // layers dense, so those runs restart for every layer; the result is still the same.
    let opts = SearchOptions { ranges: 2, ..opts };
    let runner = WanRunner::new(1, 3);
    let mut paused = runner.clone().source();
    let c = search(
        &mut paused,
        &opts,
        &common::cost(),
        common::meta(),
        &NoProgress,
    )
    .unwrap();
    let mut replay = Replay {
        runner: runner.clone(),
        source: runner.source(),
        block_size: 0,
    };
    let d = search(
        &mut replay,
        &opts,
        &common::cost(),
        common::meta(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(c.plan.ranges, d.plan.ranges);
    assert!(paused.runs_started() > 1);
}

#[test]
fn paused_runs_restart_when_asked_for_an_earlier_layer_or_other_decisions() {
    let mut source = WanRunner::new(1, 2).source();
    let dense = Decided::new();
    let l1 = source.qkv(0, 0, 1, &dense).unwrap();
    assert_eq!(source.runs_started(), 1);
    // Layer 0 is behind the paused run: restart, same inputs as a fresh run.
    let l0 = source.qkv(0, 0, 0, &dense).unwrap();
    assert_eq!(source.runs_started(), 2);
    assert_eq!(source.qkv(0, 0, 1, &dense).unwrap(), l1);
    assert_eq!(source.runs_started(), 2);
    assert_eq!(source.qkv(0, 0, 0, &dense).unwrap(), l0);
    // A layer index past the model is an error, not a hang.
    let err = source.qkv(0, 1, 5, &dense).unwrap_err();
    assert!(err.to_string().contains("layer 5"), "{err}");
    // And the source still works afterwards.
    assert_eq!(source.qkv(0, 0, 1, &dense).unwrap(), l1);
}

/// A layer runner passed explicitly to the source (no process-wide state): it is the one
/// that evaluates the candidates, and one that agrees with the CPU path gives the same
/// plan as the CPU path.
#[test]
fn an_explicit_layer_runner_evaluates_the_candidates() {
    struct Counting(std::sync::atomic::AtomicUsize);
    impl vdit_search::eval::LayerRunner for Counting {
        fn run(
            &self,
            qkv: &vdit_search::LayerQkv,
            layer: &vdit_patterns::CompiledLayer,
        ) -> Result<Vec<f32>, SearchError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            vdit_search::eval::run(qkv, layer)
        }
        fn name(&self) -> String {
            "counting cpu".into()
        }
    }
    let opts = SearchOptions {
        ranges: 2,
        epsilon: 0.5,
        ..common::opts()
    };
    let run = |source: &mut ModelSource<WanRunner>| {
        search(source, &opts, &common::cost(), common::meta(), &NoProgress).unwrap()
    };
    let runner = WanRunner::new(1, 2);
    let plain = run(&mut runner.clone().source());
    let counting = Arc::new(Counting(Default::default()));
    let mut source = runner.clone().source().with_layer_runner(counting.clone());
    let with_runner = run(&mut source);
    assert!(counting.0.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(with_runner.plan.ranges, plain.plan.ranges);
    // A fresh source without it does not see the other's runner.
    let before = counting.0.load(std::sync::atomic::Ordering::Relaxed);
    run(&mut runner.source());
    assert_eq!(
        counting.0.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
}

/// `BurnLayerRunner` (what the xtask search passes for GPU backends) agrees with the CPU
/// path on burn-flex, and re-uploads when the q/k/v change.
#[test]
fn the_burn_layer_runner_matches_the_cpu_path_and_follows_new_inputs() {
    use vdit_search::eval::{BurnLayerRunner, LayerRunner};
    let layout = VideoLayout::new(2, 4, 4).unwrap();
    let layer = vdit_patterns::CompiledLayer::compile(
        &[
            Pattern::Diagonal { band: 0.25 },
            Pattern::Skip,
            Pattern::Dense,
        ],
        &layout,
        64,
    )
    .unwrap();
    let qkv = |seed: u32| {
        let n = 3 * 32 * 8;
        let val = |i: usize, s: u32| {
            (((i as u32).wrapping_mul(2654435761) ^ s) % 1000) as f32 / 500.0 - 1.0
        };
        vdit_search::LayerQkv {
            heads: 3,
            tokens: 32,
            head_dim: 8,
            q: (0..n).map(|i| val(i, seed)).collect(),
            k: (0..n).map(|i| val(i, seed + 1)).collect(),
            v: (0..n).map(|i| val(i, seed + 2)).collect(),
        }
    };
    let runner = BurnLayerRunner::<B>::new(Default::default(), DType::F32);
    assert!(runner.name().contains("F32"), "{}", runner.name());
    for seed in [1, 7, 1] {
        let x = qkv(seed);
        let got = runner.run(&x, &layer).unwrap();
        let want = vdit_search::eval::run(&x, &layer).unwrap();
        assert!(max_abs_diff(&got, &want) <= 1e-5, "seed {seed}");
        // The skipped head is zero.
        assert!(got[32 * 8..2 * 32 * 8].iter().all(|v| *v == 0.0));
    }
}
