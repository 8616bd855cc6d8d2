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
use vdit_patterns::{CompiledLayer, ModelInfo, Pattern, Plan, Provenance, StepRange};

use crate::eval::LayerRunner;
use crate::{Decided, LayerQkv, QkvSource, SearchError, SourceInfo};

/// Runs a model so that a search can observe its self-attention inputs.
///
/// [`ModelSource`] builds one runner per sample *on that sample's worker thread* (through
/// the factory given to [`ModelSource::new`]) and keeps all of the runner's device work
/// on that thread: GPU runtimes such as CubeCL keep per-thread streams and memory pools,
/// and tensors shared across threads are not safe there.
pub trait ModelRunner {
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

/// What the search asks of a worker.
enum Command {
    /// Start a run from the noise (worker idle).
    Start(Box<Plan>),
    /// Run the paused layer with these patterns.
    Run(Arc<PreparedLayer>),
    /// Abort the paused run.
    Abort,
    /// Evaluate one layer of candidates on the worker's device (paused or idle).
    Eval(Arc<LayerQkv>, Arc<CompiledLayer>),
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
    /// The run ended (it never pauses again until the next start).
    Done(Result<(), SearchError>),
    /// Result of an [`Command::Eval`].
    Evaluated(Result<Vec<f32>, SearchError>),
}

/// The hook a worker's runs carry: captures at the observed steps, and pauses every
/// layer until the search sends the layer to run, serving evaluations meanwhile.
struct PausingHook {
    capture_steps: Vec<usize>,
    captured: Mutex<Option<CapturedAttention>>,
    reports: Mutex<Sender<Report>>,
    commands: Mutex<Receiver<Command>>,
    /// Evaluates candidates on the worker thread (`None`: the CPU path).
    layer_runner: Option<Arc<dyn LayerRunner>>,
}

impl PausingHook {
    fn report(&self, r: Report) -> bool {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(r)
            .is_ok()
    }
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
        if !self.report(Report::At {
            step,
            layer,
            captured,
        }) {
            return Err(aborted());
        }
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match commands.recv() {
                Ok(Command::Run(layer)) => return Ok(Some(layer)),
                Ok(Command::Eval(qkv, layer)) => {
                    if !self.report(Report::Evaluated(crate::eval::run_on(
                        self.layer_runner.as_deref(),
                        &qkv,
                        &layer,
                    ))) {
                        return Err(aborted());
                    }
                }
                Ok(Command::Abort | Command::Start(_)) | Err(_) => return Err(aborted()),
            }
        }
    }
}

/// `(step, layer)` and patterns of every layer a run has gone through, in order.
type RunHistory = Vec<((usize, usize), Vec<Pattern>)>;

/// One sample's worker thread, seen from the search.
struct Worker {
    commands: Option<Sender<Command>>,
    reports: Receiver<Report>,
    handle: Option<JoinHandle<()>>,
    /// Whether a run is going (paused or between pauses).
    running: bool,
    ran: RunHistory,
    /// Where the run is paused now, with that layer's capture.
    paused: Option<(usize, usize, Option<Box<CapturedAttention>>)>,
    /// Layers compiled for this worker (their device uploads belong to its thread).
    prepared: Vec<(Vec<Pattern>, Arc<PreparedLayer>)>,
}

impl Worker {
    fn send(&self, c: Command) -> Result<(), SearchError> {
        self.commands
            .as_ref()
            .and_then(|tx| tx.send(c).ok())
            .ok_or_else(|| SearchError::Source("the model worker thread has stopped".into()))
    }

    /// Next report; a closed channel means the thread died.
    fn recv(&mut self) -> Result<Report, SearchError> {
        self.reports.recv().map_err(|_| {
            self.running = false;
            SearchError::Source(
                "the model worker thread stopped unexpectedly (did it panic? see above)".into(),
            )
        })
    }

    /// Aborts the current run, if any, and waits until it has ended.
    fn abort(&mut self) -> Result<(), SearchError> {
        if !self.running {
            return Ok(());
        }
        self.send(Command::Abort)?;
        loop {
            match self.recv()? {
                Report::Done(_) => break,
                Report::At { .. } | Report::Evaluated(_) => {}
            }
        }
        self.running = false;
        self.paused = None;
        self.ran.clear();
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.abort();
        self.commands = None; // ends the worker's command loop
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A captured input kept for re-reads, valid while the decisions the run took before it
/// still hold.
struct Kept {
    key: (usize, usize, usize),
    ran: RunHistory,
    qkv: LayerQkv,
}

type Factory<R> = Arc<dyn Fn(usize) -> Result<R, SearchError> + Send + Sync>;

/// A [`ModelRunner`] as a propagating search source: one paused run per sample (see the
/// module docs), so a greedy search costs about one trajectory per sample.
pub struct ModelSource<R: ModelRunner> {
    make: Factory<R>,
    info: SourceInfo,
    block_size: usize,
    workers: Vec<Option<Worker>>,
    kept: Vec<Kept>,
    restarts: usize,
    eval_input: Option<(Vec<u64>, Arc<LayerQkv>)>,
    layer_runner: Option<Arc<dyn LayerRunner>>,
}

impl<R: ModelRunner + 'static> ModelSource<R> {
    /// A source for the model described by `info`; `make(sample)` builds the runner of
    /// one sample on that sample's worker thread (load or build the model there).
    pub fn new(
        info: SourceInfo,
        make: impl Fn(usize) -> Result<R, SearchError> + Send + Sync + 'static,
    ) -> Self {
        let workers = (0..info.samples).map(|_| None).collect();
        ModelSource {
            make: Arc::new(make),
            info,
            block_size: 64,
            workers,
            kept: Vec::new(),
            restarts: 0,
            eval_input: None,
            layer_runner: None,
        }
    }

    /// Evaluates candidates with `runner` (e.g. the GPU kernels in the model's dtype) on
    /// each sample's worker thread instead of the CPU path.
    pub fn with_layer_runner(mut self, runner: Arc<dyn LayerRunner>) -> Self {
        self.layer_runner = Some(runner);
        self
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

    /// The worker of `sample`, spawning its thread (which builds the runner) if needed.
    fn worker(&mut self, sample: usize) -> Result<&mut Worker, SearchError> {
        if self.workers[sample].is_none() {
            let (command_tx, command_rx) = channel();
            let (report_tx, reports) = channel();
            let hook = Arc::new(PausingHook {
                capture_steps: self.info.steps.clone(),
                captured: Mutex::new(None),
                reports: Mutex::new(report_tx.clone()),
                commands: Mutex::new(command_rx),
                layer_runner: self.layer_runner.clone(),
            });
            let make = self.make.clone();
            let last =
                *self.info.steps.last().ok_or_else(|| {
                    SearchError::Source("the model runner observes no steps".into())
                })?;
            let handle = std::thread::Builder::new()
                .name(format!("search-sample-{sample}"))
                .spawn(move || worker_loop(sample, last, make, hook, report_tx))
                .map_err(|e| SearchError::Source(format!("starting the model thread: {e}")))?;
            self.workers[sample] = Some(Worker {
                commands: Some(command_tx),
                reports,
                handle: Some(handle),
                running: false,
                ran: Vec::new(),
                paused: None,
                prepared: Vec::new(),
            });
        }
        Ok(self.workers[sample].as_mut().expect("set above"))
    }

    /// Starts `sample`'s run from its noise, aborting the previous one.
    fn start(&mut self, sample: usize) -> Result<(), SearchError> {
        let last = *self
            .info
            .steps
            .last()
            .expect("checked when the worker started");
        let plan = self.partial_plan(&Decided::new(), last)?;
        let worker = self.worker(sample)?;
        worker.abort()?;
        worker.send(Command::Start(Box::new(plan)))?;
        worker.running = true;
        self.restarts += 1;
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
            w.running
                && w.paused.as_ref().is_none_or(|(s, l, _)| (*s, *l) <= target)
                && self.consistent(&w.ran, decided)
        });
        if !reusable {
            self.start(sample)?;
        }
        loop {
            let worker = self.workers[sample].as_mut().expect("started above");
            if worker.paused.is_none() {
                match worker.recv()? {
                    Report::At {
                        step,
                        layer,
                        captured,
                    } => worker.paused = Some((step, layer, captured)),
                    Report::Done(result) => {
                        worker.running = false;
                        result?;
                        return Err(SearchError::Source(format!(
                            "the model run for sample {sample} ended before step {step}, layer {layer}: does the model have that many layers and steps?"
                        )));
                    }
                    Report::Evaluated(_) => {}
                }
                continue;
            }
            let (s, l) = worker
                .paused
                .as_ref()
                .map(|(s, l, _)| (*s, *l))
                .expect("checked above");
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
                    "the model run for sample {sample} went past step {step}, layer {layer} (at step {s}, layer {l})"
                )));
            }
            let patterns = self.required(decided, s, l);
            let (layout, bs) = (self.info.layout, self.block_size);
            let worker = self.workers[sample].as_mut().expect("started above");
            let layer_run = match worker.prepared.iter().find(|(k, _)| *k == patterns) {
                Some((_, p)) => p.clone(),
                None => {
                    let p = Arc::new(
                        PreparedLayer::new(&patterns, &layout, bs)
                            .map_err(|e| SearchError::Source(e.to_string()))?,
                    );
                    worker.prepared.push((patterns.clone(), p.clone()));
                    p
                }
            };
            worker.send(Command::Run(layer_run))?;
            worker.ran.push(((s, l), patterns));
            worker.paused = None;
        }
    }

    /// Evaluates one layer on worker 0's thread (where the model's device work is).
    fn eval_on_worker(
        &mut self,
        qkv: &LayerQkv,
        layer: &CompiledLayer,
    ) -> Result<Vec<f32>, SearchError> {
        let key = qkv.fingerprint();
        let input = match &self.eval_input {
            Some((k, q)) if *k == key => q.clone(),
            _ => {
                self.eval_input = None; // free the previous copy first
                let q = Arc::new(qkv.clone());
                self.eval_input = Some((key, q.clone()));
                q
            }
        };
        let worker = self.worker(0)?;
        worker.send(Command::Eval(input, Arc::new(layer.clone())))?;
        loop {
            match worker.recv()? {
                Report::Evaluated(out) => return out,
                Report::At {
                    step,
                    layer,
                    captured,
                } => worker.paused = Some((step, layer, captured)),
                Report::Done(r) => {
                    worker.running = false;
                    worker.paused = None;
                    r?;
                }
            }
        }
    }
}

/// A worker thread: builds the runner, then runs and evaluates on command.
fn worker_loop<R: ModelRunner>(
    sample: usize,
    last: usize,
    make: Factory<R>,
    hook: Arc<PausingHook>,
    reports: Sender<Report>,
) {
    let mut runner = match make(sample) {
        Ok(r) => Some(r),
        Err(e) => {
            let _ = reports.send(Report::Done(Err(e)));
            None
        }
    };
    loop {
        let command = hook
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv();
        match command {
            Ok(Command::Start(plan)) => {
                let result = match runner.as_mut() {
                    Some(r) => {
                        *hook.captured.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        r.run_to(sample, last, &plan, hook.clone())
                    }
                    None => Err(SearchError::Source(
                        "building the model runner failed (reported earlier)".into(),
                    )),
                };
                let _ = reports.send(Report::Done(result));
            }
            Ok(Command::Eval(qkv, layer)) => {
                let _ = reports.send(Report::Evaluated(crate::eval::run_on(
                    hook.layer_runner.as_deref(),
                    &qkv,
                    &layer,
                )));
            }
            // Leftovers of a run that already ended.
            Ok(Command::Run(_) | Command::Abort) => {}
            Err(_) => return,
        }
    }
}

impl<R: ModelRunner + 'static> QkvSource for ModelSource<R> {
    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn propagates(&self) -> bool {
        true
    }

    fn use_block_size(&mut self, block_size: usize) {
        if block_size != self.block_size {
            self.block_size = block_size;
            self.kept.clear();
            for w in self.workers.iter_mut().flatten() {
                let _ = w.abort();
                w.prepared.clear();
            }
        }
    }

    fn run_layer(
        &mut self,
        qkv: &LayerQkv,
        layer: &CompiledLayer,
    ) -> Option<Result<Vec<f32>, SearchError>> {
        Some(self.eval_on_worker(qkv, layer))
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
