//! The search: Algorithm 1 of the paper (greedy, layer by layer, per head) with a
//! scale-free error, a measured or analytic cost, several samples aggregated by the
//! worst case, dense warm-up steps, timestep ranges and a target-speedup mode.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vdit_patterns::{
    BlockTable, ModelInfo, PLAN_VERSION, Pattern, PatternKind, Plan, Provenance, SearchParams,
    StepRange, TableCache, VideoLayout,
};

use crate::candidates::key_block_mass;
use crate::cost::HeadCostQuery;
use crate::eval::{candidate_errors_with, dense_output_with};
use crate::{CandidateConfig, CostModel, Decided, QkvSource, SearchError, SourceInfo};

/// Options of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Weight of the cost term: `loss = error + lambda * cost`, with `cost` the head's
    /// predicted latency under the candidate divided by its dense latency (in `[0, 1)`).
    pub lambda: f64,
    /// Threshold: a head whose every candidate loss exceeds it stays dense. Ignored
    /// (found by bisection) when `target_speedup` is set.
    pub epsilon: f64,
    /// Block size of the block masks (64 or 128, the kernels' choices).
    pub block_size: usize,
    /// Leading denoising steps kept dense.
    pub warmup_steps: usize,
    /// Number of equal step ranges after the warm-up, each with its own decisions; every
    /// range must hold at least one captured step.
    pub ranges: usize,
    /// Steps of the schedule; defaults to the last captured step + 1.
    pub total_steps: Option<usize>,
    /// Find epsilon so that the predicted attention speedup is this (within
    /// `target_tolerance`).
    pub target_speedup: Option<f64>,
    /// Allowed relative deviation from `target_speedup` (0.05 = 5%).
    pub target_tolerance: f64,
    /// Candidate patterns.
    pub candidates: CandidateConfig,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            lambda: 0.02,
            epsilon: 0.05,
            block_size: 64,
            warmup_steps: 0,
            ranges: 1,
            total_steps: None,
            target_speedup: None,
            target_tolerance: 0.05,
            candidates: CandidateConfig::default(),
        }
    }
}

impl SearchOptions {
    /// Rejects impossible values with a message naming the option.
    pub fn validate(&self) -> Result<(), SearchError> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(SearchError::option(
                "epsilon",
                format!("{} is not a finite number >= 0", self.epsilon),
            ));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(SearchError::option(
                "lambda",
                format!("{} is not a finite number >= 0", self.lambda),
            ));
        }
        if ![64, 128].contains(&self.block_size) {
            return Err(SearchError::option(
                "block-size",
                format!("{} is not 64 or 128", self.block_size),
            ));
        }
        if self.ranges == 0 {
            return Err(SearchError::option("ranges", "must be at least 1"));
        }
        let max = vdit_patterns::MAX_STEPS;
        for (option, v) in [
            ("total-steps", self.total_steps.unwrap_or(1)),
            ("warmup-steps", self.warmup_steps),
            ("ranges", self.ranges),
        ] {
            if v > max {
                return Err(SearchError::option(
                    option,
                    format!("{v} is above the limit of {max} steps"),
                ));
            }
        }
        if let Some(t) = self.target_speedup
            && !(t.is_finite() && t >= 1.0)
        {
            return Err(SearchError::option(
                "target-speedup",
                format!("{t} is not a finite number >= 1"),
            ));
        }
        if !(self.target_tolerance.is_finite()
            && self.target_tolerance > 0.0
            && self.target_tolerance < 1.0)
        {
            return Err(SearchError::option(
                "target-tolerance",
                format!("{} is not in (0, 1)", self.target_tolerance),
            ));
        }
        self.candidates.validate()
    }
}

/// Progress reporting (the xtask draws an indicatif bar; the library stays quiet).
pub trait Progress: Sync {
    /// A phase with `total` units of work starts.
    fn begin(&self, _total: u64, _what: &str) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// One candidate of one head, priced.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The pattern.
    pub pattern: Pattern,
    /// Block density at the search layout and block size.
    pub density: f64,
    /// Predicted latency of the head's share of its layer launch (microseconds).
    pub head_us: f64,
    /// `head_us` over the dense head's: the cost term of the loss.
    pub cost: f64,
}

/// Everything measured about one head in one step range: its candidates and their
/// worst-case errors over samples and steps.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadMeasure {
    /// Candidates (dense excluded: it is the fallback).
    pub candidates: Vec<Candidate>,
    /// Worst-case normalised error of each candidate.
    pub errors: Vec<f64>,
    /// Predicted latency of the dense head (microseconds).
    pub dense_us: f64,
}

/// One head's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Chosen pattern.
    pub pattern: Pattern,
    /// Block density (0 for skip, 1 for dense).
    pub density: f64,
    /// Worst-case normalised error (0 for dense).
    pub error: f64,
    /// Loss `error + lambda * cost` of the chosen candidate (0 for dense).
    pub loss: f64,
    /// Predicted latency of the head (microseconds).
    pub head_us: f64,
}

/// The paper's decision rule (Eq. 3) for one head: among the candidates, the one with
/// the smallest `error + lambda * cost`; dense if even that loss exceeds `epsilon`.
/// Ties go to the cheaper candidate, then to the earlier one.
pub fn decide_head(m: &HeadMeasure, lambda: f64, epsilon: f64) -> Decision {
    let dense = Decision {
        pattern: Pattern::Dense,
        density: 1.0,
        error: 0.0,
        loss: 0.0,
        head_us: m.dense_us,
    };
    match best_candidate(m, lambda) {
        Some((i, loss)) if loss <= epsilon => {
            let c = &m.candidates[i];
            Decision {
                pattern: c.pattern.clone(),
                density: c.density,
                error: m.errors[i],
                loss,
                head_us: c.head_us,
            }
        }
        _ => dense,
    }
}

/// Index and loss of the candidate with the smallest loss.
fn best_candidate(m: &HeadMeasure, lambda: f64) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for (i, (c, e)) in m.candidates.iter().zip(&m.errors).enumerate() {
        let loss = e + lambda * c.cost;
        if !loss.is_finite() {
            continue;
        }
        let better = match best {
            None => true,
            Some((b, bl)) => loss < bl || (loss == bl && c.head_us < m.candidates[b].head_us),
        };
        if better {
            best = Some((i, loss));
        }
    }
    best
}

/// A step range of the plan and the captured steps that inform it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSpec {
    /// Steps `start..end` of the plan.
    pub steps: Range<usize>,
    /// Captured steps inside (empty for the dense warm-up range).
    pub captured: Vec<usize>,
    /// Whether this is the dense warm-up range.
    pub warmup: bool,
}

/// Splits `0..total` into the warm-up range and `ranges` equal searched ranges, each
/// holding the captured steps that fall in it.
pub fn plan_ranges(
    captured: &[usize],
    total_steps: usize,
    warmup: usize,
    ranges: usize,
) -> Result<Vec<RangeSpec>, SearchError> {
    let max = vdit_patterns::MAX_STEPS;
    if total_steps > max {
        return Err(SearchError::option(
            "total-steps",
            format!("{total_steps} is above the limit of {max} steps"),
        ));
    }
    if warmup >= total_steps {
        return Err(SearchError::option(
            "warmup-steps",
            format!("{warmup} warm-up steps leave nothing to search in {total_steps} steps"),
        ));
    }
    let span = total_steps - warmup;
    if ranges > span {
        return Err(SearchError::option(
            "ranges",
            format!("{ranges} ranges do not fit in the {span} steps after the warm-up"),
        ));
    }
    let mut out = Vec::new();
    if warmup > 0 {
        out.push(RangeSpec {
            steps: 0..warmup,
            captured: Vec::new(),
            warmup: true,
        });
    }
    for r in 0..ranges {
        let start = warmup + r * span / ranges;
        let end = warmup + (r + 1) * span / ranges;
        let inside: Vec<usize> = captured
            .iter()
            .copied()
            .filter(|s| (start..end).contains(s))
            .collect();
        if inside.is_empty() {
            return Err(SearchError::option(
                "ranges",
                format!(
                    "step range {start}..{end} holds no captured step (captured: {captured:?}); capture more steps or use fewer ranges"
                ),
            ));
        }
        out.push(RangeSpec {
            steps: start..end,
            captured: inside,
            warmup: false,
        });
    }
    Ok(out)
}

/// Per range, per layer, per head measurements (fixed-input sources measure once).
type Measures = Vec<Vec<Vec<HeadMeasure>>>;

/// Per range, per layer, per head decisions.
type Decisions = Vec<Vec<Vec<Decision>>>;

/// The result of a search.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// The plan (validated).
    pub plan: Plan,
    /// Decisions per plan range, layer and head (`decisions[range][layer][head]`).
    pub decisions: Vec<Vec<Vec<Decision>>>,
    /// The ranges.
    pub ranges: Vec<RangeSpec>,
    /// The source's shape.
    pub info: SourceInfo,
    /// Epsilon used (the option, or the one found for the target speedup).
    pub epsilon: f64,
    /// Predicted attention speedup: dense latency / plan latency over all steps.
    pub predicted_speedup: f64,
    /// Mean block density over steps, layers and heads (skip = 0).
    pub attention_density: f64,
    /// Predicted dense and plan attention latency over all steps (microseconds).
    pub latency_us: (f64, f64),
    /// Whether mixed outputs were propagated (false for fixed inputs such as captures).
    pub propagated: bool,
    /// Wall time of the search (seconds).
    pub wall_time_s: f64,
    /// Where the candidate measurement spent its time ([`PhaseTimes`]).
    pub phase_times: PhaseTimes,
}

/// What the plan should say about the model and where the inputs came from.
#[derive(Debug, Clone)]
pub struct PlanMeta {
    /// Model id (defaults to the source's model name when empty).
    pub model_id: String,
    /// Hash of the model config, or `"none"`.
    pub config_hash: String,
    /// Provenance stored in the plan.
    pub provenance: Provenance,
}

/// Runs the search on `source` and returns the plan and its decisions.
///
/// Nothing is written; callers write the plan and report only once this returns `Ok`,
/// so a failed search never leaves a partial plan behind.
pub fn search(
    source: &mut dyn QkvSource,
    opts: &SearchOptions,
    cost: &CostModel,
    meta: PlanMeta,
    progress: &dyn Progress,
) -> Result<SearchOutcome, SearchError> {
    let t0 = Instant::now();
    let (engine, total_steps) = Engine::new(source, opts, cost)?;
    source.use_block_size(opts.block_size);
    let (info, ranges) = (engine.info.clone(), engine.ranges.clone());
    let propagated = source.propagates();
    let (epsilon, decisions) = if !propagated {
        let measures = engine.measure_all(source, progress)?;
        let epsilon = match opts.target_speedup {
            None => opts.epsilon,
            Some(target) => engine.epsilon_for_target(&measures, target)?,
        };
        (epsilon, engine.decide_all(&measures, epsilon))
    } else {
        match opts.target_speedup {
            None => (opts.epsilon, engine.greedy(source, opts.epsilon, progress)?),
            Some(target) => engine.bisect_propagating(source, target, progress)?,
        }
    };
    let (dense_us, plan_us, density) = engine.totals(&decisions);
    let plan = engine.plan(&decisions, epsilon, total_steps, meta)?;
    Ok(SearchOutcome {
        plan,
        decisions,
        ranges,
        info,
        epsilon,
        predicted_speedup: dense_us / plan_us.max(f64::MIN_POSITIVE),
        attention_density: density,
        latency_us: (dense_us, plan_us),
        propagated,
        wall_time_s: t0.elapsed().as_secs_f64(),
        phase_times: engine.phase_times(),
    })
}

/// Runs one layer where `source` keeps its device work ([`QkvSource::run_layer`]), else
/// on the CPU path.
fn run_layer_on(
    source: &mut dyn QkvSource,
    qkv: &crate::LayerQkv,
    layer: &vdit_patterns::CompiledLayer,
) -> Result<Vec<f32>, SearchError> {
    source
        .run_layer(qkv, layer)
        .unwrap_or_else(|| crate::eval::run(qkv, layer))
}

fn check_info(info: &SourceInfo) -> Result<(), SearchError> {
    info.layout
        .validate()
        .map_err(|e| SearchError::Inconsistent(format!("source layout: {e}")))?;
    for (what, v) in [
        ("layers", info.layers),
        ("heads", info.heads),
        ("head_dim", info.head_dim),
        ("samples", info.samples),
        ("steps", info.steps.len()),
    ] {
        if v == 0 {
            return Err(SearchError::Inconsistent(format!(
                "the source has 0 {what}"
            )));
        }
    }
    Ok(())
}

/// Wall time per phase of one layer's measurement (laps of a stopwatch).
struct Trace {
    last: Instant,
    phases: PhaseTimes,
}

impl Trace {
    fn new() -> Self {
        Trace {
            last: Instant::now(),
            phases: PhaseTimes::default(),
        }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = Instant::now();
        let dt = (now - self.last).as_secs_f64();
        self.last = now;
        self.phases.add(phase, dt);
    }
}

/// Seconds spent per phase of the candidate measurement, summed over layers, ranges,
/// samples and steps, in the order the phases first ran: `q/k/v` (fetching or computing
/// the inputs), `attention mass` (stripe columns), `candidates` (tables and prices),
/// `errors` (dense and candidate outputs and their errors), and `errors: layer runs`, the
/// part of `errors` spent running attention layers.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PhaseTimes(pub Vec<(String, f64)>);

impl PhaseTimes {
    /// Adds `seconds` to `phase`.
    pub fn add(&mut self, phase: &str, seconds: f64) {
        match self.0.iter_mut().find(|(p, _)| p == phase) {
            Some((_, t)) => *t += seconds,
            None => self.0.push((phase.to_owned(), seconds)),
        }
    }

    /// Adds every phase of `other`.
    pub fn merge(&mut self, other: &PhaseTimes) {
        for (p, t) in &other.0 {
            self.add(p, *t);
        }
    }

    /// Seconds of `phase` (0 when it never ran).
    pub fn get(&self, phase: &str) -> f64 {
        self.0
            .iter()
            .find(|(p, _)| p == phase)
            .map_or(0.0, |(_, t)| *t)
    }
}

impl std::fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (p, t)) in self.0.iter().enumerate() {
            write!(f, "{}{p} {t:.2} s", if i == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Engine {
    info: SourceInfo,
    opts: SearchOptions,
    cost: CostModel,
    ranges: Vec<RangeSpec>,
    /// Phase times of every layer measured so far.
    phases: std::sync::Mutex<PhaseTimes>,
}

impl Clone for Engine {
    fn clone(&self) -> Self {
        Engine {
            info: self.info.clone(),
            opts: self.opts.clone(),
            cost: self.cost.clone(),
            ranges: self.ranges.clone(),
            phases: std::sync::Mutex::new(self.phase_times()),
        }
    }
}

impl Engine {
    /// The phase times recorded so far.
    fn phase_times(&self) -> PhaseTimes {
        self.phases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn new(
        source: &dyn QkvSource,
        opts: &SearchOptions,
        cost: &CostModel,
    ) -> Result<(Self, usize), SearchError> {
        opts.validate()?;
        let info = source.info();
        check_info(&info)?;
        let last = *info.steps.last().expect("checked non-empty");
        let max = vdit_patterns::MAX_STEPS;
        if last >= max {
            return Err(SearchError::Inconsistent(format!(
                "the source captured step {last}, beyond the limit of {max} steps"
            )));
        }
        let total_steps = opts.total_steps.unwrap_or(last + 1);
        if total_steps <= last {
            return Err(SearchError::option(
                "total-steps",
                format!("{total_steps} steps but step {last} was captured"),
            ));
        }
        let ranges = plan_ranges(&info.steps, total_steps, opts.warmup_steps, opts.ranges)?;
        Ok((
            Engine {
                info,
                opts: opts.clone(),
                cost: cost.clone(),
                ranges,
                phases: Default::default(),
            },
            total_steps,
        ))
    }

    fn layout(&self) -> &VideoLayout {
        &self.info.layout
    }

    fn work_units(&self) -> u64 {
        let steps: usize = self.ranges.iter().map(|r| r.captured.len()).sum();
        (steps * self.info.layers * self.info.samples) as u64
    }

    fn head_us(&self, kind: PatternKind, density: f64) -> Result<f64, SearchError> {
        self.cost.head_us(
            HeadCostQuery { kind, density },
            self.layout().total_tokens(),
            self.info.head_dim,
            self.opts.block_size,
        )
    }

    /// Measures every searched range and layer on fixed inputs.
    fn measure_all(
        &self,
        source: &mut dyn QkvSource,
        progress: &dyn Progress,
    ) -> Result<Measures, SearchError> {
        progress.begin(self.work_units(), "measuring candidates");
        let decided = Decided::new();
        let mut all = Vec::new();
        for range in &self.ranges {
            if range.warmup {
                all.push(Vec::new());
                continue;
            }
            let mut layers = Vec::new();
            for layer in 0..self.info.layers {
                layers.push(self.measure_layer(source, range, layer, &decided, progress)?);
            }
            all.push(layers);
        }
        progress.finish();
        Ok(all)
    }

    /// Candidates and worst-case errors of every head of `layer` over the samples and
    /// captured steps of `range`.
    fn measure_layer(
        &self,
        source: &mut dyn QkvSource,
        range: &RangeSpec,
        layer: usize,
        decided: &Decided,
        progress: &dyn Progress,
    ) -> Result<Vec<HeadMeasure>, SearchError> {
        let (layout, bs) = (*self.layout(), self.opts.block_size);
        let heads = self.info.heads;
        let cfg = &self.opts.candidates;
        // Pass 1: attention mass per key block, summed over samples and steps, so that
        // every input of this range is judged on the same stripe candidates.
        let nb = layout.total_tokens().div_ceil(bs);
        let mut mass = vec![vec![0f64; nb]; heads];
        let mut trace = Trace::new();
        if !cfg.stripe_coverages.is_empty() {
            let mut count = 0.0;
            for sample in 0..self.info.samples {
                for &step in &range.captured {
                    let qkv = self.fetch(source, sample, step, layer, decided)?;
                    trace.lap("q/k/v");
                    for (acc, m) in
                        mass.iter_mut()
                            .zip(key_block_mass(&qkv, &layout, bs, cfg.mass_rows))
                    {
                        acc.iter_mut().zip(m).for_each(|(a, x)| *a += x);
                    }
                    count += 1.0;
                    trace.lap("attention mass");
                }
            }
            mass.iter_mut().flatten().for_each(|m| *m /= count);
        }
        // Candidates, priced; those not cheaper than dense are dropped.
        let mut cache = TableCache::new();
        let dense_us = self.head_us(PatternKind::Dense, 1.0)?;
        let uniform = cfg.uniform(&layout);
        let mut per_head: Vec<Vec<Candidate>> = Vec::with_capacity(heads);
        for m in &mass {
            let mut cands = Vec::new();
            let stripes = if cfg.stripe_coverages.is_empty() {
                Vec::new()
            } else {
                cfg.stripes(m, &layout, bs)
            };
            for p in uniform.iter().chain(&stripes) {
                let density = match p {
                    Pattern::Skip => 0.0,
                    _ => table(&mut cache, p, &layout, bs)?.density(),
                };
                let head_us = self.head_us(p.kind(), density)?;
                if head_us >= dense_us {
                    continue;
                }
                cands.push(Candidate {
                    pattern: p.clone(),
                    density,
                    head_us,
                    cost: head_us / dense_us,
                });
            }
            per_head.push(cands);
        }
        // Pass 2: errors, worst case over samples and steps.
        let patterns: Vec<Vec<Pattern>> = per_head
            .iter()
            .map(|c| c.iter().map(|c| c.pattern.clone()).collect())
            .collect();
        let mut worst: Vec<Vec<f64>> = per_head.iter().map(|c| vec![0.0; c.len()]).collect();
        trace.lap("candidates");
        let mut eval_s = 0.0;
        for sample in 0..self.info.samples {
            for &step in &range.captured {
                let qkv = self.fetch(source, sample, step, layer, decided)?;
                trace.lap("q/k/v");
                let mut run = |q: &crate::LayerQkv, l: &vdit_patterns::CompiledLayer| {
                    let t0 = Instant::now();
                    let out = run_layer_on(source, q, l);
                    eval_s += t0.elapsed().as_secs_f64();
                    out
                };
                let at =
                    |e: SearchError| e.at(format!("sample {sample}, step {step}, layer {layer}"));
                let dense = dense_output_with(&qkv, &layout, bs, &mut run).map_err(at)?;
                let errs = candidate_errors_with(
                    &qkv, &layout, bs, &dense, &patterns, &mut cache, &mut run,
                )
                .map_err(at)?;
                trace.lap("errors");
                for (w, e) in worst.iter_mut().zip(errs.errors) {
                    w.iter_mut().zip(e).for_each(|(a, b)| *a = a.max(b));
                }
                progress.advance(1);
            }
        }
        trace.phases.add("errors: layer runs", eval_s);
        tracing::debug!(
            target: "vdit_search::phases",
            "steps {:?} layer {layer}: {} candidate slots; {}",
            range.steps,
            patterns.iter().map(Vec::len).max().unwrap_or(0),
            trace.phases
        );
        self.phases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .merge(&trace.phases);
        Ok(per_head
            .into_iter()
            .zip(worst)
            .map(|(candidates, errors)| HeadMeasure {
                candidates,
                errors,
                dense_us,
            })
            .collect())
    }

    fn fetch(
        &self,
        source: &mut dyn QkvSource,
        sample: usize,
        step: usize,
        layer: usize,
        decided: &Decided,
    ) -> Result<crate::LayerQkv, SearchError> {
        let qkv = source.qkv(sample, step, layer, decided)?;
        let (h, n, d) = (
            self.info.heads,
            self.layout().total_tokens(),
            self.info.head_dim,
        );
        if (qkv.heads, qkv.tokens, qkv.head_dim) != (h, n, d) {
            return Err(SearchError::Inconsistent(format!(
                "sample {sample}, step {step}, layer {layer}: q/k/v is {} heads x {} tokens x {}, expected {h} x {n} x {d}",
                qkv.heads, qkv.tokens, qkv.head_dim
            )));
        }
        Ok(qkv)
    }

    fn dense_decisions(&self) -> Result<Vec<Vec<Decision>>, SearchError> {
        let dense_us = self.head_us(PatternKind::Dense, 1.0)?;
        let d = Decision {
            pattern: Pattern::Dense,
            density: 1.0,
            error: 0.0,
            loss: 0.0,
            head_us: dense_us,
        };
        Ok(vec![vec![d; self.info.heads]; self.info.layers])
    }

    fn decide_all(&self, measures: &Measures, epsilon: f64) -> Vec<Vec<Vec<Decision>>> {
        let dense = self
            .dense_decisions()
            .expect("dense was priced during measurement");
        self.ranges
            .iter()
            .zip(measures)
            .map(|(r, layers)| {
                if r.warmup {
                    dense.clone()
                } else {
                    layers
                        .iter()
                        .map(|heads| {
                            heads
                                .iter()
                                .map(|m| decide_head(m, self.opts.lambda, epsilon))
                                .collect()
                        })
                        .collect()
                }
            })
            .collect()
    }

    /// Greedy search with the mixed output propagated: layer by layer, each decided
    /// layer is handed to the source before the next one is measured.
    fn greedy(
        &self,
        source: &mut dyn QkvSource,
        epsilon: f64,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<Vec<Decision>>>, SearchError> {
        progress.begin(self.work_units(), "greedy search (propagated)");
        let mut decided = Decided::new();
        let mut out = Vec::new();
        for range in &self.ranges {
            if range.warmup {
                out.push(self.dense_decisions()?);
                continue;
            }
            let mut layers = Vec::new();
            for layer in 0..self.info.layers {
                let m = self.measure_layer(source, range, layer, &decided, progress)?;
                let d: Vec<Decision> = m
                    .iter()
                    .map(|m| decide_head(m, self.opts.lambda, epsilon))
                    .collect();
                decided.push(
                    range.steps.clone(),
                    layer,
                    d.iter().map(|d| d.pattern.clone()).collect(),
                );
                layers.push(d);
            }
            out.push(layers);
        }
        progress.finish();
        Ok(out)
    }

    /// (dense latency, plan latency, mean density) over all steps.
    fn totals(&self, decisions: &[Vec<Vec<Decision>>]) -> (f64, f64, f64) {
        let launch = self.cost.launch_us();
        let dense_head = self.dense_head_us_cached();
        let (mut dense, mut plan, mut density, mut weight) = (0.0, 0.0, 0.0, 0.0);
        for (range, layers) in self.ranges.iter().zip(decisions) {
            let w = range.steps.len() as f64;
            for heads in layers {
                let dense_layer = launch + heads.len() as f64 * dense_head;
                let computed = heads.iter().any(|d| !matches!(d.pattern, Pattern::Skip));
                let plan_layer: f64 = heads.iter().map(|d| d.head_us).sum::<f64>()
                    + if computed { launch } else { 0.0 };
                dense += w * dense_layer;
                plan += w * plan_layer;
                density += w * heads.iter().map(|d| d.density).sum::<f64>();
                weight += w * heads.len() as f64;
            }
        }
        (dense, plan, density / weight.max(1.0))
    }

    fn dense_head_us_cached(&self) -> f64 {
        self.head_us(PatternKind::Dense, 1.0).unwrap_or(f64::NAN)
    }

    fn speedup(&self, decisions: &[Vec<Vec<Decision>>]) -> f64 {
        let (d, p, _) = self.totals(decisions);
        d / p.max(f64::MIN_POSITIVE)
    }

    /// Target-speedup mode on fixed inputs: the predicted speedup is a monotone step
    /// function of epsilon that changes only where epsilon crosses a head's smallest
    /// loss, so bisection runs over those breakpoints (exact, no re-measurement). The
    /// epsilon returned lies strictly between two breakpoints, so the decisions it
    /// reproduces do not hinge on float equality.
    fn epsilon_for_target(&self, measures: &Measures, target: f64) -> Result<f64, SearchError> {
        let mut points: Vec<f64> = measures
            .iter()
            .flatten()
            .flatten()
            .filter_map(|m| best_candidate(m, self.opts.lambda).map(|(_, l)| l))
            .collect();
        points.sort_by(f64::total_cmp);
        points.dedup();
        // Epsilons to choose from: below every breakpoint (all dense), then between
        // consecutive breakpoints, then above the last.
        let mut eps: Vec<f64> = Vec::with_capacity(points.len() + 1);
        eps.push(points.first().map_or(0.0, |p| p * 0.5));
        for (i, p) in points.iter().enumerate() {
            eps.push(match points.get(i + 1) {
                Some(next) => 0.5 * (p + next),
                None => p * 1.5 + 1e-9,
            });
        }
        let speed = |e: f64| self.speedup(&self.decide_all(measures, e));
        self.pick_epsilon(&eps, target, speed)
    }

    /// Bisection over the sorted `eps` for the first reaching `target`, then the closer
    /// of it and its predecessor, if within tolerance.
    fn pick_epsilon(
        &self,
        eps: &[f64],
        target: f64,
        mut speed: impl FnMut(f64) -> f64,
    ) -> Result<f64, SearchError> {
        let tol = self.opts.target_tolerance;
        let (mut lo, mut hi) = (0usize, eps.len() - 1);
        let s_hi = speed(eps[hi]);
        if s_hi < target {
            if s_hi >= target * (1.0 - tol) {
                return Ok(eps[hi]);
            }
            return Err(SearchError::Unreachable {
                target,
                tolerance_pct: tol * 100.0,
                detail: format!(
                    "the candidates allow at most {s_hi:.3}x (epsilon {:.4}) on this input",
                    eps[hi]
                ),
            });
        }
        if speed(eps[0]) >= target {
            hi = 0;
        } else {
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if speed(eps[mid]) >= target {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
        }
        let s_hi = speed(eps[hi]);
        let mut best = (eps[hi], s_hi);
        if hi > 0 {
            let s_lo = speed(eps[hi - 1]);
            if (target - s_lo).abs() < (s_hi - target).abs() {
                best = (eps[hi - 1], s_lo);
            }
        }
        if (best.1 - target).abs() <= tol * target {
            Ok(best.0)
        } else {
            let below = if hi > 0 { speed(eps[hi - 1]) } else { f64::NAN };
            Err(SearchError::Unreachable {
                target,
                tolerance_pct: tol * 100.0,
                detail: format!(
                    "the achievable speedups around it are {below:.3}x and {s_hi:.3}x (pattern choices are discrete; try more ranges, layers or a different lambda)"
                ),
            })
        }
    }

    /// Target-speedup mode with propagation: decisions depend on earlier ones, so every
    /// probe re-runs the greedy search; bisection in log(epsilon).
    fn bisect_propagating(
        &self,
        source: &mut dyn QkvSource,
        target: f64,
        progress: &dyn Progress,
    ) -> Result<(f64, Decisions), SearchError> {
        let (mut lo, mut hi) = (-6.0f64, 2.0f64);
        let mut run = |e: f64| -> Result<(f64, Decisions), SearchError> {
            let d = self.greedy(source, e, progress)?;
            Ok((self.speedup(&d), d))
        };
        let top = run(10f64.powf(hi))?;
        if top.0 < target * (1.0 - self.opts.target_tolerance) {
            return Err(SearchError::Unreachable {
                target,
                tolerance_pct: self.opts.target_tolerance * 100.0,
                detail: format!("the candidates allow at most {:.3}x", top.0),
            });
        }
        let mut best = (10f64.powf(hi), top);
        for _ in 0..16 {
            let mid = 0.5 * (lo + hi);
            let e = 10f64.powf(mid);
            let r = run(e)?;
            if (r.0 - target).abs() < (best.1.0 - target).abs() {
                best = (e, r.clone());
            }
            if r.0 >= target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        if (best.1.0 - target).abs() > self.opts.target_tolerance * target {
            return Err(SearchError::Unreachable {
                target,
                tolerance_pct: self.opts.target_tolerance * 100.0,
                detail: format!("the closest found is {:.3}x", best.1.0),
            });
        }
        Ok((best.0, best.1.1))
    }

    fn plan(
        &self,
        decisions: &[Vec<Vec<Decision>>],
        epsilon: f64,
        total_steps: usize,
        meta: PlanMeta,
    ) -> Result<Plan, SearchError> {
        let ranges = self
            .ranges
            .iter()
            .zip(decisions)
            .map(|(r, layers)| StepRange {
                start: r.steps.start,
                end: r.steps.end,
                layers: layers
                    .iter()
                    .map(|heads| heads.iter().map(|d| d.pattern.clone()).collect())
                    .collect(),
            })
            .collect();
        let model_id = if meta.model_id.trim().is_empty() {
            self.info.model.clone()
        } else {
            meta.model_id
        };
        let plan = Plan {
            version: PLAN_VERSION,
            model: ModelInfo {
                id: model_id,
                config_hash: meta.config_hash,
                layers: self.info.layers,
                heads: self.info.heads,
                head_dim: self.info.head_dim,
            },
            layout: self.info.layout,
            block_size: self.opts.block_size,
            search: SearchParams {
                lambda: self.opts.lambda,
                epsilon,
                samples: self.info.samples,
                steps: self.ranges.iter().map(|r| r.captured.len()).sum(),
                warmup_steps: self.opts.warmup_steps,
                target_speedup: self.opts.target_speedup,
            },
            provenance: meta.provenance,
            cost_table: Some(self.cost.reference()),
            total_steps,
            ranges,
        };
        plan.validate()?;
        Ok(plan)
    }
}

fn table(
    cache: &mut TableCache,
    p: &Pattern,
    layout: &VideoLayout,
    bs: usize,
) -> Result<Arc<BlockTable>, SearchError> {
    Ok(cache.get(p, layout, bs)?)
}

/// Measurements of a fixed-input source, taken once: decisions, cost and speedup at any
/// epsilon follow without re-running attention (used for sweeps and by the
/// target-speedup mode).
#[derive(Debug, Clone)]
pub struct Measured {
    engine: Engine,
    measures: Measures,
}

impl Measured {
    /// Measures every searched range and layer of a fixed-input source.
    pub fn new(
        source: &mut dyn QkvSource,
        opts: &SearchOptions,
        cost: &CostModel,
        progress: &dyn Progress,
    ) -> Result<Self, SearchError> {
        if source.propagates() {
            return Err(SearchError::option(
                "source",
                "a propagating source cannot be measured once; use `search`",
            ));
        }
        let (engine, _) = Engine::new(source, opts, cost)?;
        let measures = engine.measure_all(source, progress)?;
        Ok(Measured { engine, measures })
    }

    /// Changes lambda for later decisions (measurements do not depend on it).
    pub fn set_lambda(&mut self, lambda: f64) -> Result<(), SearchError> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(SearchError::option(
                "lambda",
                format!("{lambda} is not a finite number >= 0"),
            ));
        }
        self.engine.opts.lambda = lambda;
        Ok(())
    }

    /// Step ranges of the plan.
    pub fn ranges(&self) -> &[RangeSpec] {
        &self.engine.ranges
    }

    /// `measures()[range][layer][head]` (empty for the warm-up range).
    pub fn measures(&self) -> &[Vec<Vec<HeadMeasure>>] {
        &self.measures
    }

    /// Decisions at `epsilon` (with the options' lambda).
    pub fn decisions(&self, epsilon: f64) -> Vec<Vec<Vec<Decision>>> {
        self.engine.decide_all(&self.measures, epsilon)
    }

    /// (dense latency, plan latency, mean density) over all steps at `epsilon`.
    pub fn totals(&self, epsilon: f64) -> (f64, f64, f64) {
        self.engine.totals(&self.decisions(epsilon))
    }

    /// Predicted attention speedup at `epsilon`.
    pub fn speedup(&self, epsilon: f64) -> f64 {
        self.engine.speedup(&self.decisions(epsilon))
    }

    /// The epsilon the target-speedup mode picks for `target`.
    pub fn epsilon_for_target(&self, target: f64) -> Result<f64, SearchError> {
        self.engine.epsilon_for_target(&self.measures, target)
    }
}

/// Predicted attention speedup of `plan` at another `layout` (patterns are
/// layout-relative): every step range's layers are compiled there and priced with
/// `cost`, dense latency over plan latency, weighted by the steps of each range.
///
/// A plan searched on a small input can thus be priced at the real resolution it is
/// meant for (block-level granularity makes small layouts look denser than they are).
pub fn predict_speedup(
    plan: &Plan,
    layout: &VideoLayout,
    cost: &CostModel,
) -> Result<f64, SearchError> {
    layout
        .validate()
        .map_err(|e| SearchError::option("predict-layout", e.to_string()))?;
    let (n, d, bs) = (layout.total_tokens(), plan.model.head_dim, plan.block_size);
    let mut cache = TableCache::new();
    let dense_head = cost.head_us(
        HeadCostQuery {
            kind: PatternKind::Dense,
            density: 1.0,
        },
        n,
        d,
        bs,
    )?;
    let (mut dense, mut sparse) = (0.0, 0.0);
    for range in &plan.ranges {
        let w = (range.end - range.start) as f64;
        for heads in &range.layers {
            let mut q = Vec::with_capacity(heads.len());
            for p in heads {
                let density = match p {
                    Pattern::Skip => 0.0,
                    _ => cache.get(p, layout, bs)?.density(),
                };
                q.push(HeadCostQuery {
                    kind: p.kind(),
                    density,
                });
            }
            sparse += w * cost.layer_us(&q, n, d, bs)?;
            dense += w * (cost.launch_us() + heads.len() as f64 * dense_head);
        }
    }
    Ok(dense / sparse.max(f64::MIN_POSITIVE))
}

/// The error of an existing plan on a source's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEvaluation {
    /// `(step range start, layer, head, pattern kind, worst-case normalised error)` for
    /// every searched (non-warm-up) head with a captured step in its range.
    pub heads: Vec<(usize, usize, usize, PatternKind, f64)>,
    /// Predicted attention speedup of the plan at the source's layout.
    pub predicted_speedup: f64,
}

/// Measures the error of `plan` on `source` (worst case over samples and the captured
/// steps inside each plan range), with the same normalisation as the search. The plan
/// must fit the source's model (layers, heads, head_dim); its patterns are compiled at
/// the source's layout. Ranges holding no captured step are not evaluated.
pub fn evaluate_plan(
    source: &mut dyn QkvSource,
    plan: &Plan,
    cost: &CostModel,
) -> Result<PlanEvaluation, SearchError> {
    plan.validate()?;
    let info = source.info();
    check_info(&info)?;
    plan.check_model(info.layers, info.heads, info.head_dim)
        .map_err(|e| SearchError::PlanMismatch(e.to_string()))?;
    if let Some(s) = info.steps.iter().find(|&&s| s >= plan.total_steps) {
        return Err(SearchError::PlanMismatch(format!(
            "the inputs hold step {s} but the plan covers a {}-step schedule",
            plan.total_steps
        )));
    }
    let (layout, bs) = (info.layout, plan.block_size);
    let mut cache = TableCache::new();
    let mut heads = Vec::new();
    let decided = Decided::new();
    for range in &plan.ranges {
        let steps: Vec<usize> = info
            .steps
            .iter()
            .copied()
            .filter(|s| (range.start..range.end).contains(s))
            .collect();
        if steps.is_empty() || range.layers.iter().flatten().all(|p| *p == Pattern::Dense) {
            continue;
        }
        for (layer, patterns) in range.layers.iter().enumerate() {
            let per_head: Vec<Vec<Pattern>> = patterns.iter().map(|p| vec![p.clone()]).collect();
            let mut worst = vec![0f64; patterns.len()];
            for sample in 0..info.samples {
                for &step in &steps {
                    let qkv = source.qkv(sample, step, layer, &decided)?;
                    if (qkv.heads, qkv.tokens, qkv.head_dim)
                        != (info.heads, layout.total_tokens(), info.head_dim)
                    {
                        return Err(SearchError::Inconsistent(format!(
                            "step {step}, layer {layer}: q/k/v shape differs from the source's"
                        )));
                    }
                    let mut run = |q: &crate::LayerQkv, l: &vdit_patterns::CompiledLayer| {
                        run_layer_on(source, q, l)
                    };
                    let at = |e: SearchError| {
                        e.at(format!("sample {sample}, step {step}, layer {layer}"))
                    };
                    let dense = dense_output_with(&qkv, &layout, bs, &mut run).map_err(at)?;
                    let e = candidate_errors_with(
                        &qkv, &layout, bs, &dense, &per_head, &mut cache, &mut run,
                    )
                    .map_err(at)?;
                    for (head, (w, e)) in worst.iter_mut().zip(e.errors).enumerate() {
                        if !e[0].is_finite() {
                            return Err(SearchError::NonFinite(format!(
                                "sample {sample}, step {step}, layer {layer}, head {head}: error {}",
                                e[0]
                            )));
                        }
                        *w = w.max(e[0]);
                    }
                }
            }
            for (head, (p, e)) in patterns.iter().zip(worst).enumerate() {
                let e = if *p == Pattern::Dense { 0.0 } else { e };
                heads.push((range.start, layer, head, p.kind(), e));
            }
        }
    }
    Ok(PlanEvaluation {
        heads,
        predicted_speedup: predict_speedup(plan, &layout, cost)?,
    })
}
