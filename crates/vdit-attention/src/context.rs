//! What a model's forward pass carries: layout, compiled plan, step and capture hook.

use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::{Bool, Tensor, TensorData};
use vdit_patterns::{CompiledLayer, Plan, TableCache, VideoLayout};

use crate::{
    AttentionError, AttentionOptions, PreparedCross, PreparedLayer, SparseAttentionBackend,
    attention, cross_attention,
};

/// Every layer of a [`Plan`] compiled for one layout. Identical patterns share one block
/// table across layers and step ranges.
#[derive(Debug)]
pub struct AttentionPlan {
    plan: Plan,
    layout: VideoLayout,
    /// `layers[range][layer]`.
    layers: Vec<Vec<PreparedLayer>>,
}

impl AttentionPlan {
    /// Compiles `plan` for `layout` (which may differ from the layout the plan was
    /// searched at: patterns are layout-relative).
    pub fn new(plan: Plan, layout: VideoLayout) -> Result<Self, AttentionError> {
        plan.validate()
            .map_err(|e| AttentionError::Plan(e.to_string()))?;
        let mut cache = TableCache::new();
        let layers = plan
            .ranges
            .iter()
            .map(|r| {
                r.layers
                    .iter()
                    .map(|heads| {
                        CompiledLayer::compile_cached(heads, &layout, plan.block_size, &mut cache)
                            .map(PreparedLayer::from_compiled)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AttentionPlan {
            plan,
            layout,
            layers,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The layout it was compiled for.
    pub fn layout(&self) -> &VideoLayout {
        &self.layout
    }

    /// The compiled layer `layer` at denoising step `step` (steps past the plan's end use
    /// its last range).
    pub fn layer(&self, step: usize, layer: usize) -> Result<&PreparedLayer, AttentionError> {
        let range = self
            .plan
            .ranges
            .iter()
            .position(|r| r.start <= step && step < r.end)
            .unwrap_or(self.plan.ranges.len() - 1);
        self.layers[range].get(layer).ok_or_else(|| {
            AttentionError::Plan(format!(
                "layer {layer} requested but the plan has {} layers",
                self.plan.model.layers
            ))
        })
    }
}

/// Q/K/V of one self-attention call, as observed by a [`CaptureHook`].
#[derive(Debug, Clone)]
pub struct CapturedAttention {
    /// Denoising step.
    pub step: usize,
    /// Layer index.
    pub layer: usize,
    /// Sequence layout.
    pub layout: VideoLayout,
    /// `[batch, heads, tokens, head_dim]`.
    pub q: TensorData,
    /// As `q`.
    pub k: TensorData,
    /// As `q`.
    pub v: TensorData,
    /// Key padding `[batch, tokens]` (`true` = valid), if the model uses one.
    pub key_padding: Option<TensorData>,
    /// Dense attention output, when [`CaptureHook::wants_dense_output`] says so.
    pub dense_output: Option<TensorData>,
}

/// Observes the self-attention inputs of chosen layers and steps without changing the
/// model code (used by the search and for debugging).
pub trait CaptureHook: Send + Sync {
    /// Whether to capture layer `layer` at step `step`.
    fn wants(&self, step: usize, layer: usize) -> bool;
    /// Whether to also compute and hand over the dense attention output.
    fn wants_dense_output(&self) -> bool {
        false
    }
    /// Receives one capture.
    fn capture(&self, captured: CapturedAttention);
    /// Patterns to run layer `layer` at step `step` with instead of the context's (plan
    /// or dense), asked on every self-attention call after [`CaptureHook::capture`] (when
    /// wanted) and before the layer runs. A greedy search uses it to run each layer with
    /// the patterns it has just decided on that layer's own inputs, so one forward pass
    /// propagates the mixed output. `Ok(None)` keeps the context's layer; an error aborts
    /// the forward pass with that error. The default never overrides.
    fn layer_override(
        &self,
        _step: usize,
        _layer: usize,
    ) -> Result<Option<Arc<PreparedLayer>>, AttentionError> {
        Ok(None)
    }
}

/// The attention state a model's forward pass carries. Cheap to clone.
#[derive(Clone)]
pub struct AttentionContext {
    layout: VideoLayout,
    plan: Option<Arc<AttentionPlan>>,
    step: usize,
    capture: Option<Arc<dyn CaptureHook>>,
    dense: Arc<OnceLock<PreparedLayer>>,
    cross: Arc<Mutex<Vec<Arc<PreparedCross>>>>,
}

impl std::fmt::Debug for AttentionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttentionContext")
            .field("layout", &self.layout)
            .field("plan", &self.plan.as_ref().map(|p| &p.plan.model.id))
            .field("step", &self.step)
            .field("capture", &self.capture.is_some())
            .finish()
    }
}

impl AttentionContext {
    /// Dense attention for `layout`.
    pub fn dense(layout: VideoLayout) -> Self {
        AttentionContext {
            layout,
            plan: None,
            step: 0,
            capture: None,
            dense: Arc::new(OnceLock::new()),
            cross: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Sparse attention following `plan`, which must be compiled for `layout`.
    pub fn with_plan(
        layout: VideoLayout,
        plan: Arc<AttentionPlan>,
    ) -> Result<Self, AttentionError> {
        if plan.layout != layout {
            return Err(AttentionError::Plan(format!(
                "plan compiled for layout {:?}, the model runs at {layout:?}",
                plan.layout
            )));
        }
        Ok(AttentionContext {
            plan: Some(plan),
            ..Self::dense(layout)
        })
    }

    /// The same context with a capture hook.
    pub fn with_capture(mut self, hook: Arc<dyn CaptureHook>) -> Self {
        self.capture = Some(hook);
        self
    }

    /// The same context at denoising step `step`.
    pub fn at_step(&self, step: usize) -> Self {
        AttentionContext {
            step,
            ..self.clone()
        }
    }

    /// Sequence layout.
    pub fn layout(&self) -> &VideoLayout {
        &self.layout
    }

    /// Current denoising step.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The compiled plan, if any.
    pub fn plan(&self) -> Option<&AttentionPlan> {
        self.plan.as_deref()
    }

    /// Dense cross-attention (video queries to text keys) on the backend's kernel; the
    /// device table of each (heads, tokens, kv_tokens) shape is built once per context
    /// (shared by its clones and steps).
    ///
    /// # Shapes
    /// `q` `[batch, heads, tokens, head_dim]`, `k`, `v` `[batch, heads, kv_tokens,
    /// head_dim]`, `key_padding` `[batch, kv_tokens]` (`true` = valid key). Returns
    /// `[batch, heads, tokens, head_dim]`.
    pub fn cross_attention<B: SparseAttentionBackend>(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        key_padding: Option<Tensor<B, 2, Bool>>,
    ) -> Result<Tensor<B, 4>, AttentionError> {
        let [_, heads, tokens, _] = q.dims();
        let kv_tokens = k.dims()[2];
        let prepared = {
            let mut cache = self.cross.lock().unwrap_or_else(|e| e.into_inner());
            let found = cache
                .iter()
                .find(|p| (p.heads(), p.tokens(), p.kv_tokens()) == (heads, tokens, kv_tokens));
            match found {
                Some(p) => p.clone(),
                None => {
                    let p = Arc::new(PreparedCross::new(heads, tokens, kv_tokens)?);
                    cache.push(p.clone());
                    p
                }
            }
        };
        let opts = AttentionOptions {
            key_padding,
            ..Default::default()
        };
        Ok(cross_attention(q, k, v, &prepared, &opts)?.output)
    }

    /// Self-attention of layer `layer` through the plan (dense without one).
    ///
    /// # Shapes
    /// `q`, `k`, `v`: `[batch, heads, tokens, head_dim]`; `key_padding`: `[batch, tokens]`,
    /// `true` for valid keys. Returns `[batch, heads, tokens, head_dim]`.
    pub fn self_attention<B: SparseAttentionBackend>(
        &self,
        layer: usize,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        key_padding: Option<Tensor<B, 2, Bool>>,
    ) -> Result<Tensor<B, 4>, AttentionError> {
        let prepared = match &self.plan {
            Some(p) => Some(p.layer(self.step, layer)?),
            None if key_padding.is_some() || !B::BUILTIN_DENSE => {
                let heads = q.dims()[1];
                if self.dense.get().is_none() {
                    let layer = PreparedLayer::dense(heads, &self.layout, 64)?;
                    let _ = self.dense.set(layer);
                }
                self.dense.get().filter(|d| d.heads() == heads)
            }
            None => None,
        };
        if let Some(hook) = &self.capture
            && hook.wants(self.step, layer)
        {
            let dense_output = if hook.wants_dense_output() {
                let opts = AttentionOptions {
                    key_padding: key_padding.clone(),
                    ..Default::default()
                };
                let dense = attention(q.clone(), k.clone(), v.clone(), None, &self.layout, &opts)?;
                Some(dense.output.into_data())
            } else {
                None
            };
            hook.capture(CapturedAttention {
                step: self.step,
                layer,
                layout: self.layout,
                q: q.clone().into_data(),
                k: k.clone().into_data(),
                v: v.clone().into_data(),
                key_padding: key_padding.clone().map(|p| p.into_data()),
                dense_output,
            });
        }
        let overridden = match &self.capture {
            Some(hook) => hook.layer_override(self.step, layer)?,
            None => None,
        };
        let prepared = overridden.as_deref().or(prepared);
        let opts = AttentionOptions {
            key_padding,
            ..Default::default()
        };
        Ok(attention(q, k, v, prepared, &self.layout, &opts)?.output)
    }
}
