//! Where a search gets its q/k/v from: capture files (fixed inputs) or a model run
//! through a capture hook (inputs that depend on the decisions made so far).

use std::ops::Range;

use vdit_patterns::{Pattern, VideoLayout};

use crate::{CaptureFile, SearchError};

/// Q, K and V of one self-attention call (batch 1), row-major `[heads, tokens, head_dim]`
/// in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerQkv {
    /// Attention heads.
    pub heads: usize,
    /// Sequence length.
    pub tokens: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Queries.
    pub q: Vec<f32>,
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

impl LayerQkv {
    /// Checks that the three buffers hold `heads * tokens * head_dim` finite values each.
    pub fn new(
        heads: usize,
        tokens: usize,
        head_dim: usize,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
    ) -> Result<Self, SearchError> {
        let len = heads * tokens * head_dim;
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            if x.len() != len {
                return Err(SearchError::Inconsistent(format!(
                    "{name} holds {} values, expected {heads} heads x {tokens} tokens x {head_dim} = {len}",
                    x.len()
                )));
            }
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(SearchError::Inconsistent(format!(
                    "{name} holds a non-finite value at flat index {i} (head {}, token {})",
                    i / (tokens * head_dim),
                    (i / head_dim) % tokens
                )));
            }
        }
        Ok(LayerQkv {
            heads,
            tokens,
            head_dim,
            q,
            k,
            v,
        })
    }

    /// A cheap identity of these buffers (shape, buffer addresses and a strided sample of
    /// 1,024 values per tensor), for caches that keep a device copy of the same q/k/v
    /// across calls: equal fingerprints mean the same, unchanged buffers.
    pub fn fingerprint(&self) -> Vec<u64> {
        let mut v = vec![self.heads as u64, self.tokens as u64, self.head_dim as u64];
        for x in [&self.q, &self.k, &self.v] {
            v.push(x.as_ptr() as u64);
            let stride = (x.len() / 1024).max(1);
            v.extend(x.iter().step_by(stride).map(|f| u64::from(f.to_bits())));
        }
        v
    }
}

/// The shape of what a [`QkvSource`] provides.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Model name (free text or an id).
    pub model: String,
    /// Sequence layout of every call.
    pub layout: VideoLayout,
    /// Attention layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Number of samples (prompts / seeds).
    pub samples: usize,
    /// Denoising steps with q/k/v available, ascending.
    pub steps: Vec<usize>,
}

/// The decisions made so far during a greedy search, handed to sources whose inputs
/// depend on them (the paper's mixed output propagated forward).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decided {
    /// `(steps, layers)`: per searched step range, the decided layers in order (layers
    /// not yet decided are absent and run dense).
    ranges: Vec<(Range<usize>, Vec<Vec<Pattern>>)>,
}

impl Decided {
    /// Nothing decided: every layer runs dense.
    pub fn new() -> Self {
        Self::default()
    }

    /// The decided patterns of `layer` at `step`, or `None` when that layer still runs
    /// dense (undecided, or a dense warm-up step).
    pub fn layer(&self, step: usize, layer: usize) -> Option<&[Pattern]> {
        self.ranges
            .iter()
            .find(|(r, _)| r.contains(&step))
            .and_then(|(_, layers)| layers.get(layer))
            .map(|v| v.as_slice())
    }

    /// Decisions given explicitly: per step range, the patterns of layers `0..n` in
    /// order (for sources and tests that need to replay a partial search).
    pub fn from_layers(ranges: Vec<(Range<usize>, Vec<Vec<Pattern>>)>) -> Self {
        Decided { ranges }
    }

    pub(crate) fn push(&mut self, steps: Range<usize>, layer: usize, patterns: Vec<Pattern>) {
        if let Some((_, layers)) = self.ranges.iter_mut().find(|(r, _)| *r == steps) {
            debug_assert_eq!(layers.len(), layer, "layers are decided in order");
            layers.push(patterns);
        } else {
            debug_assert_eq!(layer, 0);
            self.ranges.push((steps, vec![patterns]));
        }
    }
}

/// A provider of per-layer q/k/v for a search.
///
/// Capture files give fixed inputs ([`QkvSource::propagates`] is false): what a layer
/// sees does not depend on the patterns chosen for earlier layers, so the search can
/// measure every layer once. A model run through `vdit_attention::CaptureHook` is a
/// propagating source: [`QkvSource::qkv`] must run the model with the patterns in
/// `decided` (earlier step ranges, and earlier layers of the current range; the rest
/// dense) so that later decisions see the error of earlier ones, as in the paper's
/// Algorithm 1.
pub trait QkvSource {
    /// What the source provides.
    fn info(&self) -> SourceInfo;

    /// Whether q/k/v depend on `decided` (mixed outputs propagated forward).
    fn propagates(&self) -> bool {
        false
    }

    /// The block size the search compiles patterns at (called once before it starts):
    /// a propagating source runs decided layers with tables of this block size, so the
    /// mixed output it propagates is the one the search measured.
    fn use_block_size(&mut self, _block_size: usize) {}

    /// Runs one layer's candidates on `qkv` where the source keeps its device work
    /// (e.g. the thread that owns the GPU model), as
    /// [`crate::eval::LayerRunner::run`]; `None` (the default) uses the CPU path.
    fn run_layer(
        &mut self,
        _qkv: &LayerQkv,
        _layer: &vdit_patterns::CompiledLayer,
    ) -> Option<Result<Vec<f32>, SearchError>> {
        None
    }

    /// Q/K/V of `layer` at `step` for `sample`, given the decisions made so far.
    fn qkv(
        &mut self,
        sample: usize,
        step: usize,
        layer: usize,
        decided: &Decided,
    ) -> Result<LayerQkv, SearchError>;
}

/// Capture files as a search source: one file per sample, all with the same model
/// shape, layout and steps. Inputs are fixed (captured once, densely), so the mixed
/// output is *not* propagated: every layer's decision is made on the dense model's
/// inputs.
#[derive(Debug)]
pub struct CaptureSource {
    files: Vec<CaptureFile>,
}

impl CaptureSource {
    /// Opens and cross-checks the capture files (one per sample).
    pub fn open(paths: &[std::path::PathBuf]) -> Result<Self, SearchError> {
        if paths.is_empty() {
            return Err(SearchError::option(
                "captures",
                "needs at least one capture file",
            ));
        }
        let files = paths
            .iter()
            .map(|p| CaptureFile::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_files(files)
    }

    /// Cross-checks already opened capture files.
    pub fn from_files(files: Vec<CaptureFile>) -> Result<Self, SearchError> {
        let Some(first) = files.first() else {
            return Err(SearchError::option(
                "captures",
                "needs at least one capture file",
            ));
        };
        for f in &files[1..] {
            let mismatch = |what: &str, a: String, b: String| {
                SearchError::Inconsistent(format!(
                    "{} has {what} {b} but {} has {a}; every sample must capture the same model, layout and steps",
                    f.path().display(),
                    first.path().display()
                ))
            };
            if f.meta().model != first.meta().model {
                return Err(mismatch(
                    "model",
                    format!("{:?}", first.meta().model),
                    format!("{:?}", f.meta().model),
                ));
            }
            if f.meta().layout != first.meta().layout {
                return Err(mismatch(
                    "layout",
                    format!("{:?}", first.meta().layout),
                    format!("{:?}", f.meta().layout),
                ));
            }
            for (what, a, b) in [
                ("layers", first.layers(), f.layers()),
                ("heads", first.heads(), f.heads()),
                ("head_dim", first.head_dim(), f.head_dim()),
            ] {
                if a != b {
                    return Err(mismatch(what, a.to_string(), b.to_string()));
                }
            }
            if f.steps() != first.steps() {
                return Err(mismatch(
                    "steps",
                    format!("{:?}", first.steps()),
                    format!("{:?}", f.steps()),
                ));
            }
        }
        Ok(CaptureSource { files })
    }

    /// The files, one per sample.
    pub fn files(&self) -> &[CaptureFile] {
        &self.files
    }
}

impl QkvSource for CaptureSource {
    fn info(&self) -> SourceInfo {
        let f = &self.files[0];
        SourceInfo {
            model: f.meta().model.clone(),
            layout: f.meta().layout,
            layers: f.layers(),
            heads: f.heads(),
            head_dim: f.head_dim(),
            samples: self.files.len(),
            steps: f.steps().to_vec(),
        }
    }

    fn qkv(
        &mut self,
        sample: usize,
        step: usize,
        layer: usize,
        _decided: &Decided,
    ) -> Result<LayerQkv, SearchError> {
        self.files[sample].read(step, layer)
    }
}
