//! Model-driven search input: q/k/v observed through `vdit_attention::CaptureHook` while
//! a model runs with the decisions made so far (the paper's mixed output propagated
//! forward to later layers and steps).
//!
//! The crate stays model-agnostic: a model crate (or the xtask) implements
//! [`ModelRunner`] for its denoiser and sampler; [`ModelSource`] turns it into a
//! propagating [`QkvSource`].

use std::sync::{Arc, Mutex};

use vdit_attention::{CaptureHook, CapturedAttention};
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance, StepRange};

use crate::{Decided, LayerQkv, QkvSource, SearchError, SourceInfo};

/// Runs a model so that a search can observe its self-attention inputs.
pub trait ModelRunner {
    /// Shapes, samples and the steps the search may observe.
    fn info(&self) -> SourceInfo;

    /// Runs `sample` from its initial noise through denoising steps `0..=step` with
    /// self-attention following `plan` (one range per step; undecided layers are dense)
    /// and `hook` attached to the attention context of every step
    /// (`AttentionContext::with_capture`). The hook captures only what the search asks
    /// for. Must be deterministic: the same arguments give the same q/k/v.
    fn run_to(
        &mut self,
        sample: usize,
        step: usize,
        plan: &Plan,
        hook: Arc<dyn CaptureHook>,
    ) -> Result<(), SearchError>;
}

/// A hook that keeps the q/k/v of one (step, layer).
struct OneShot {
    step: usize,
    layer: usize,
    slot: Mutex<Option<CapturedAttention>>,
}

impl CaptureHook for OneShot {
    fn wants(&self, step: usize, layer: usize) -> bool {
        step == self.step && layer == self.layer
    }

    fn capture(&self, captured: CapturedAttention) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(captured);
    }
}

/// A [`ModelRunner`] as a propagating search source.
pub struct ModelSource<R: ModelRunner> {
    runner: R,
    info: SourceInfo,
    last: Option<((usize, usize, usize), Decided, LayerQkv)>,
}

impl<R: ModelRunner> ModelSource<R> {
    /// Wraps `runner`.
    pub fn new(runner: R) -> Self {
        let info = runner.info();
        ModelSource {
            runner,
            info,
            last: None,
        }
    }

    /// The plan the model runs with while `decided` holds (steps `0..=step`).
    pub fn partial_plan(&self, decided: &Decided, step: usize) -> Result<Plan, SearchError> {
        let i = &self.info;
        let provenance = Provenance {
            weights: "search in progress".into(),
            weights_hash: None,
            synthetic: false,
            date: String::new(),
            tool_version: "vdit-search".into(),
            notes: String::new(),
        };
        let model = ModelInfo {
            id: i.model.clone(),
            config_hash: "none".into(),
            layers: i.layers,
            heads: i.heads,
            head_dim: i.head_dim,
        };
        let mut plan = Plan::dense(model, i.layout, step + 1, provenance);
        plan.ranges = (0..=step)
            .map(|s| StepRange {
                start: s,
                end: s + 1,
                layers: (0..i.layers)
                    .map(|l| {
                        decided
                            .layer(s, l)
                            .map(<[Pattern]>::to_vec)
                            .unwrap_or_else(|| vec![Pattern::Dense; i.heads])
                    })
                    .collect(),
            })
            .collect();
        plan.validate()?;
        Ok(plan)
    }
}

impl<R: ModelRunner> QkvSource for ModelSource<R> {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn propagates(&self) -> bool {
        true
    }

    fn qkv(
        &mut self,
        sample: usize,
        step: usize,
        layer: usize,
        decided: &Decided,
    ) -> Result<LayerQkv, SearchError> {
        // The search reads each input twice (attention mass, then errors).
        if let Some((key, d, qkv)) = &self.last
            && *key == (sample, step, layer)
            && d == decided
        {
            return Ok(qkv.clone());
        }
        let plan = self.partial_plan(decided, step)?;
        let hook = Arc::new(OneShot {
            step,
            layer,
            slot: Mutex::new(None),
        });
        self.runner.run_to(sample, step, &plan, hook.clone())?;
        let captured = hook
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                SearchError::Source(format!(
                    "the model run for sample {sample} did not reach step {step}, layer {layer}"
                ))
            })?;
        let qkv = to_qkv(&captured)?;
        self.last = Some(((sample, step, layer), decided.clone(), qkv.clone()));
        Ok(qkv)
    }
}

fn to_qkv(c: &CapturedAttention) -> Result<LayerQkv, SearchError> {
    let shape = c.q.shape.clone();
    let &[b, h, n, d] = shape.as_slice() else {
        return Err(SearchError::Source(format!(
            "captured q has shape {shape:?}, expected [batch, heads, tokens, head_dim]"
        )));
    };
    if b != 1 {
        return Err(SearchError::Source(format!(
            "captured batch {b}: run one sample per call (batch 1; CFG branches are separate samples)"
        )));
    }
    let vec = |name: &str, t: &burn::tensor::TensorData| -> Result<Vec<f32>, SearchError> {
        t.clone()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| SearchError::Source(format!("captured {name}: {e:?}")))
    };
    LayerQkv::new(h, n, d, vec("q", &c.q)?, vec("k", &c.k)?, vec("v", &c.v)?)
}
