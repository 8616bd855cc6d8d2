//! Model-driven search input: q/k/v observed through `vdit_attention::CaptureHook` while
//! a model runs with the decisions made so far (the paper's mixed output propagated
//! forward to later layers and steps).
//!
//! The crate stays model-agnostic: a model crate (or the xtask) implements
//! [`ModelRunner`] for its denoiser and sampler; [`ModelSource`] turns it into a
//! propagating [`QkvSource`].
//!
//! # One forward pass per sample
//!
//! A greedy search decides layer after layer, and each decision changes what the next
//! layer sees. Re-running the trajectory for every layer costs `layers x steps` forward
//! passes; instead, each sample's trajectory runs once on its own worker thread and
//! *pauses* inside every self-attention call (through
//! [`CaptureHook::layer_override`]) until the search says which patterns that layer
//! runs with. The search reads the paused layer's q/k/v, decides, and lets the run go on
//! to the next layer. A run is restarted from its noise only when the search asks for
//! something the paused run cannot give any more (an earlier layer, or decisions that
//! differ from those it already ran with, as in target-speedup bisection).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vdit_attention::{AttentionError, CaptureHook, CapturedAttention, PreparedLayer};
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance, StepRange};

use crate::{Decided, LayerQkv, QkvSource, SearchError, SourceInfo};

/// Runs a model so that a search can observe its self-attention inputs.
///
/// [`ModelSource`] clones the runner once per sample and calls [`ModelRunner::run_to`]
/// on a worker thread, so it must be `Clone + Send + 'static` (Burn modules and tensors
/// are; clones share the weights).
pub trait ModelRunner {
    /// Shapes, samples and the steps the search may observe.
    fn info(&self) -> SourceInfo;

    /// Runs `sample` from its initial noise through denoising steps `0..=step` with
    /// self-attention following `plan` and `hook` attached to the attention context of
    /// every step (`AttentionContext::with_capture`): the hook captures what the search
    /// asks for and may override each layer's patterns. Must be deterministic: the same
    /// arguments give the same q/k/v. Must stop with an error as soon as a forward pass
    /// returns one (the search aborts runs it no longer needs that way).
    fn run_to(
        &mut self,
        sample: usize,
        step: usize,
        plan: &Plan,
        hook: Arc<dyn CaptureHook>,
    ) -> Result<(), SearchError>;
}

/// What a worker reports to the search.
enum Report {
    /// Paused before running `layer` at `step`, with its q/k/v when the search observes
    /// that step.
    At {
        step: usize,
        layer: usize,
        captured: Option<Box<CapturedAttention>>,
    },
    /// The run ended (it never pauses again).
    Done(Result<(), SearchError>),
}

/// The hook a worker's run carries: captures at the observed steps, and pauses every
/// layer until the search sends the layer to run (`None` aborts the run).
struct PausingHook {
    capture_steps: Vec<usize>,
    captured: Mutex<Option<CapturedAttention>>,
    reports: Mutex<Sender<Report>>,
    replies: Mutex<Receiver<Option<Arc<PreparedLayer>>>>,
}

impl CaptureHook for PausingHook {
    fn wants(&self, step: usize, _layer: usize) -> bool {
        self.capture_steps.contains(&step)
    }

    fn capture(&self, captured: CapturedAttention) {
        *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(captured);
    }

    fn layer_override(
        &self,
        step: usize,
        layer: usize,
    ) -> Result<Option<Arc<PreparedLayer>>, AttentionError> {
        let captured = self
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|c| c.step == step && c.layer == layer)
            .map(Box::new);
        let aborted = || AttentionError::Aborted("the search no longer needs this run".into());
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Report::At {
                step,
                layer,
                captured,
            })
            .map_err(|_| aborted())?;
        match self
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv()
        {
            Ok(Some(layer)) => Ok(Some(layer)),
            _ => Err(aborted()),
        }
    }
}

/// `(step, layer)` and patterns of every layer a run has gone through, in order.
type RunHistory = Vec<((usize, usize), Vec<Pattern>)>;

/// One sample's paused run, seen from the search.
struct Worker {
    replies: Option<Sender<Option<Arc<PreparedLayer>>>>,
    reports: Receiver<Report>,
    handle: Option<JoinHandle<()>>,
    ran: RunHistory,
    /// Where it is paused now, with that layer's capture.
    paused: Option<(usize, usize, Option<Box<CapturedAttention>>)>,
    ended: bool,
}

impl Worker {
    /// Aborts the run (if still going) and waits for its thread.
    fn stop(&mut self) {
        if let Some(tx) = self.replies.take() {
            let _ = tx.send(None);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A captured input kept for re-reads, valid while the decisions the run took before it
/// still hold.
struct Kept {
    key: (usize, usize, usize),
    ran: RunHistory,
    qkv: LayerQkv,
}

/// A [`ModelRunner`] as a propagating search source: one paused run per sample (see the
/// module docs), so a greedy search costs about one trajectory per sample.
pub struct ModelSource<R: ModelRunner> {
    runner: R,
    info: SourceInfo,
    block_size: usize,
    workers: Vec<Option<Worker>>,
    prepared: Vec<(Vec<Pattern>, Arc<PreparedLayer>)>,
    kept: Vec<Kept>,
    restarts: usize,
}

impl<R: ModelRunner> ModelSource<R> {
    /// Wraps `runner`.
    pub fn new(runner: R) -> Self {
        let info = runner.info();
        let workers = (0..info.samples).map(|_| None).collect();
        ModelSource {
            runner,
            info,
            block_size: 64,
            workers,
            prepared: Vec::new(),
            kept: Vec::new(),
            restarts: 0,
        }
    }

    /// How many times a run was started from its noise (one per sample at least; more
    /// when the search went back to earlier layers or changed earlier decisions).
    pub fn runs_started(&self) -> usize {
        self.restarts
    }

    /// The plan the model runs with while `decided` holds (steps `0..=step`): decided
    /// layers with their patterns, the others dense.
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
        plan.block_size = self.block_size;
        plan.ranges = (0..=step)
            .map(|s| StepRange {
                start: s,
                end: s + 1,
                layers: (0..i.layers)
                    .map(|l| self.required(decided, s, l))
                    .collect(),
            })
            .collect();
        plan.validate()?;
        Ok(plan)
    }

    /// Patterns layer `layer` runs with at `step` under `decided`.
    fn required(&self, decided: &Decided, step: usize, layer: usize) -> Vec<Pattern> {
        decided
            .layer(step, layer)
            .map(<[Pattern]>::to_vec)
            .unwrap_or_else(|| vec![Pattern::Dense; self.info.heads])
    }

    fn consistent(&self, ran: &RunHistory, decided: &Decided) -> bool {
        ran.iter()
            .all(|((s, l), p)| *p == self.required(decided, *s, *l))
    }

    fn prepared(&mut self, patterns: &[Pattern]) -> Result<Arc<PreparedLayer>, SearchError> {
        if let Some((_, p)) = self.prepared.iter().find(|(k, _)| k == patterns) {
            return Ok(p.clone());
        }
        let layer = Arc::new(
            PreparedLayer::new(patterns, &self.info.layout, self.block_size)
                .map_err(|e| SearchError::Source(e.to_string()))?,
        );
        self.prepared.push((patterns.to_vec(), layer.clone()));
        Ok(layer)
    }
}

impl<R: ModelRunner + Clone + Send + 'static> ModelSource<R> {
    /// Starts `sample`'s run from its noise, stopping the previous one.
    fn start(&mut self, sample: usize) -> Result<(), SearchError> {
        if let Some(mut old) = self.workers[sample].take() {
            old.stop();
        }
        let last = *self
            .info
            .steps
            .last()
            .ok_or_else(|| SearchError::Source("the model runner observes no steps".into()))?;
        let plan = self.partial_plan(&Decided::new(), last)?;
        let (report_tx, reports) = channel();
        let (replies, reply_rx) = channel();
        let hook = Arc::new(PausingHook {
            capture_steps: self.info.steps.clone(),
            captured: Mutex::new(None),
            reports: Mutex::new(report_tx.clone()),
            replies: Mutex::new(reply_rx),
        });
        let mut runner = self.runner.clone();
        let handle = std::thread::Builder::new()
            .name(format!("search-sample-{sample}"))
            .spawn(move || {
                let result = runner.run_to(sample, last, &plan, hook);
                let _ = report_tx.send(Report::Done(result));
            })
            .map_err(|e| SearchError::Source(format!("starting the model run: {e}")))?;
        self.restarts += 1;
        self.workers[sample] = Some(Worker {
            replies: Some(replies),
            reports,
            handle: Some(handle),
            ran: Vec::new(),
            paused: None,
            ended: false,
        });
        Ok(())
    }

    /// Drives `sample`'s run to the pause before `(step, layer)` and returns its capture.
    fn advance_to(
        &mut self,
        sample: usize,
        step: usize,
        layer: usize,
        decided: &Decided,
    ) -> Result<(CapturedAttention, RunHistory), SearchError> {
        let target = (step, layer);
        let reusable = self.workers[sample].as_ref().is_some_and(|w| {
            !w.ended
                && w.paused.as_ref().is_none_or(|(s, l, _)| (*s, *l) <= target)
                && self.consistent(&w.ran, decided)
        });
        if !reusable {
            self.start(sample)?;
        }
        loop {
            let worker = self.workers[sample].as_mut().expect("started above");
            if worker.paused.is_none() {
                match worker.reports.recv() {
                    Ok(Report::At {
                        step,
                        layer,
                        captured,
                    }) => worker.paused = Some((step, layer, captured)),
                    Ok(Report::Done(result)) => {
                        worker.ended = true;
                        result?;
                        return Err(SearchError::Source(format!(
                            "the model run for sample {sample} ended before step {step}, layer {layer}"
                        )));
                    }
                    Err(_) => {
                        worker.ended = true;
                        return Err(SearchError::Source(format!(
                            "the model run for sample {sample} stopped unexpectedly (its thread panicked?)"
                        )));
                    }
                }
            }
            let (s, l) = worker
                .paused
                .as_ref()
                .map(|(s, l, _)| (*s, *l))
                .expect("set above");
            if (s, l) == target {
                let captured = worker
                    .paused
                    .as_mut()
                    .and_then(|(_, _, c)| c.take())
                    .ok_or_else(|| {
                        SearchError::Source(format!(
                            "step {step} of sample {sample} was not captured (the runner's hook saw no q/k/v for layer {layer})"
                        ))
                    })?;
                return Ok((*captured, worker.ran.clone()));
            }
            if (s, l) > target {
                return Err(SearchError::Source(format!(
                    "the model run for sample {sample} went past step {step}, layer {layer} (at step {s}, layer {l}): does the model have that many layers?"
                )));
            }
            let patterns = self.required(decided, s, l);
            let layer_run = self.prepared(&patterns)?;
            let worker = self.workers[sample].as_mut().expect("started above");
            let sent = worker
                .replies
                .as_ref()
                .is_some_and(|tx| tx.send(Some(layer_run)).is_ok());
            if !sent {
                worker.ended = true;
                return Err(SearchError::Source(format!(
                    "the model run for sample {sample} stopped at step {s}, layer {l}"
                )));
            }
            worker.ran.push(((s, l), patterns));
            worker.paused = None;
        }
    }
}

impl<R: ModelRunner + Clone + Send + 'static> QkvSource for ModelSource<R> {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn propagates(&self) -> bool {
        true
    }

    fn use_block_size(&mut self, block_size: usize) {
        if block_size != self.block_size {
            self.block_size = block_size;
            self.prepared.clear();
            self.kept.clear();
            for w in self.workers.iter_mut() {
                *w = None;
            }
        }
    }

    fn qkv(
        &mut self,
        sample: usize,
        step: usize,
        layer: usize,
        decided: &Decided,
    ) -> Result<LayerQkv, SearchError> {
        if sample >= self.info.samples {
            return Err(SearchError::Source(format!(
                "sample {sample} asked for, the runner has {}",
                self.info.samples
            )));
        }
        // The search reads each input twice (attention mass, then errors) and, with
        // several samples or captured steps, alternates between runs.
        let key = (sample, step, layer);
        if let Some(k) = self
            .kept
            .iter()
            .find(|k| k.key == key && self.consistent(&k.ran, decided))
        {
            return Ok(k.qkv.clone());
        }
        let (captured, ran) = self.advance_to(sample, step, layer, decided)?;
        let qkv = to_qkv(&captured)?;
        // Keep only the inputs of the layer being decided.
        self.kept.retain(|k| k.key.2 == layer && k.key != key);
        self.kept.push(Kept {
            key,
            ran,
            qkv: qkv.clone(),
        });
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
