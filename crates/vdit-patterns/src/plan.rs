//! The versioned RON plan file: per timestep range x layer x head pattern decisions.

use crate::{
    BlockTable, MAX_STEPS, MAX_TEXT_BYTES, Pattern, PatternError, PlanError, VideoLayout,
    read_text_capped, write_atomic,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The plan format version this build reads and writes.
pub const PLAN_VERSION: u32 = 1;

/// Block sizes a plan may declare (the GPU kernels' choices).
const PLAN_BLOCK_SIZES: [usize; 2] = [64, 128];

/// The model a plan was searched for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Model identifier, e.g. `wan2.1-t2v-1.3b` or the diffusers `_class_name`.
    pub id: String,
    /// Hash of the model's `config.json` (hex), or `"none"`.
    pub config_hash: String,
    /// Number of attention layers with a plan entry.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// Parameters of the search that produced a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Weight of the cost term in the loss (`error + lambda * cost`).
    pub lambda: f64,
    /// Error threshold: a head whose every sparse candidate exceeds it stays dense.
    pub epsilon: f64,
    /// Number of samples (prompts/seeds) aggregated.
    pub samples: usize,
    /// Denoising steps searched.
    pub steps: usize,
    /// Leading steps kept dense.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Target speedup when epsilon was found by bisection.
    #[serde(default)]
    pub target_speedup: Option<f64>,
}

/// Where a plan came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Weights file name, or `"synthetic"` / `"random"` for weights made in code.
    pub weights: String,
    /// Hash of the weights (hex), if known.
    #[serde(default)]
    pub weights_hash: Option<String>,
    /// Whether the weights were synthetic or random (not a real checkpoint).
    pub synthetic: bool,
    /// Date the plan was made (ISO 8601).
    pub date: String,
    /// Tool and version that wrote the plan.
    pub tool_version: String,
    /// Free-form notes.
    #[serde(default)]
    pub notes: String,
}

/// The cost table a search used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostTableRef {
    /// Device the table was measured on, or `"analytic"`.
    pub device: String,
    /// File the table was read from, or a description of the analytic model.
    pub source: String,
}

/// The decisions for a half-open range of denoising steps `start..end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRange {
    /// First step (zero-based, inclusive).
    pub start: usize,
    /// End step (exclusive).
    pub end: usize,
    /// `layers[layer][head]`: the pattern of each head.
    pub layers: Vec<Vec<Pattern>>,
}

/// A sparse attention plan for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Format version; must equal [`PLAN_VERSION`].
    pub version: u32,
    /// Model the plan was searched for.
    pub model: ModelInfo,
    /// Layout the plan was searched at (patterns are layout-relative and carry over).
    pub layout: VideoLayout,
    /// Block size of the block masks (64 or 128).
    pub block_size: usize,
    /// Search parameters.
    pub search: SearchParams,
    /// Provenance.
    pub provenance: Provenance,
    /// Cost table used by the search, if any.
    #[serde(default)]
    pub cost_table: Option<CostTableRef>,
    /// Number of denoising steps the ranges cover (`0..total_steps`).
    pub total_steps: usize,
    /// Contiguous, non-overlapping step ranges covering `0..total_steps`.
    pub ranges: Vec<StepRange>,
}

#[derive(Deserialize)]
#[serde(rename = "Plan")]
struct VersionProbe {
    version: u32,
}

impl Plan {
    /// A plan with every head dense for every step.
    pub fn dense(
        model: ModelInfo,
        layout: VideoLayout,
        total_steps: usize,
        provenance: Provenance,
    ) -> Self {
        let layers = vec![vec![Pattern::Dense; model.heads]; model.layers];
        Plan {
            version: PLAN_VERSION,
            layout,
            block_size: 64,
            search: SearchParams {
                lambda: 0.0,
                epsilon: 0.0,
                samples: 0,
                steps: total_steps,
                warmup_steps: 0,
                target_speedup: None,
            },
            provenance,
            cost_table: None,
            total_steps,
            ranges: vec![StepRange {
                start: 0,
                end: total_steps,
                layers,
            }],
            model,
        }
    }

    /// Parses and validates a plan from RON text.
    pub fn from_ron_str(text: &str) -> Result<Self, PlanError> {
        let probe: VersionProbe =
            ron::from_str(text).map_err(|e| PlanError::Parse(e.to_string()))?;
        if probe.version != PLAN_VERSION {
            return Err(PlanError::UnsupportedVersion {
                found: probe.version,
                expected: PLAN_VERSION,
            });
        }
        let plan: Plan = ron::from_str(text).map_err(|e| PlanError::Parse(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Reads and validates a plan file.
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        let text = read_text_capped(path, MAX_TEXT_BYTES).map_err(|source| PlanError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_ron_str(&text)
    }

    /// The plan as pretty RON text (after validation).
    pub fn to_ron_string(&self) -> Result<String, PlanError> {
        self.validate()?;
        let config = ron::ser::PrettyConfig::new()
            .depth_limit(3)
            .struct_names(true);
        ron::ser::to_string_pretty(self, config).map_err(|e| PlanError::Parse(e.to_string()))
    }

    /// Validates the plan and writes it atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), PlanError> {
        let text = self.to_ron_string()?;
        write_atomic(path, text.as_bytes()).map_err(|source| PlanError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks every invariant; errors name the offending field.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.version != PLAN_VERSION {
            return Err(PlanError::UnsupportedVersion {
                found: self.version,
                expected: PLAN_VERSION,
            });
        }
        let m = &self.model;
        if m.id.trim().is_empty() {
            return Err(PlanError::invalid("model.id", "must not be empty"));
        }
        for (field, v) in [
            ("model.layers", m.layers),
            ("model.heads", m.heads),
            ("model.head_dim", m.head_dim),
        ] {
            if v == 0 {
                return Err(PlanError::invalid(field, "must be at least 1"));
            }
        }
        self.layout
            .validate()
            .map_err(|e| PlanError::invalid("layout", e.to_string()))?;
        if !PLAN_BLOCK_SIZES.contains(&self.block_size) {
            return Err(PlanError::invalid(
                "block_size",
                format!("{} is not one of 64, 128", self.block_size),
            ));
        }
        let s = &self.search;
        for (field, v) in [("search.lambda", s.lambda), ("search.epsilon", s.epsilon)] {
            if !v.is_finite() || v < 0.0 {
                return Err(PlanError::invalid(
                    field,
                    format!("{v} is not a finite number >= 0"),
                ));
            }
        }
        if let Some(t) = s.target_speedup
            && !(t.is_finite() && t >= 1.0)
        {
            return Err(PlanError::invalid(
                "search.target_speedup",
                format!("{t} is not a finite number >= 1"),
            ));
        }
        if self.total_steps == 0 || self.total_steps > MAX_STEPS {
            return Err(PlanError::invalid(
                "total_steps",
                format!("{} is not in 1..={MAX_STEPS}", self.total_steps),
            ));
        }
        if self.ranges.is_empty() {
            return Err(PlanError::invalid(
                "ranges",
                "must hold at least one step range",
            ));
        }
        let mut expected_start = 0;
        for (i, r) in self.ranges.iter().enumerate() {
            if r.start != expected_start {
                let what = if r.start < expected_start {
                    "overlaps"
                } else {
                    "leaves a gap after"
                };
                return Err(PlanError::invalid(
                    format!("ranges[{i}].start"),
                    format!(
                        "range {}..{} {what} the previous range (expected start {expected_start})",
                        r.start, r.end
                    ),
                ));
            }
            if r.end <= r.start {
                return Err(PlanError::invalid(
                    format!("ranges[{i}].end"),
                    format!("end {} is not after start {}", r.end, r.start),
                ));
            }
            expected_start = r.end;
            if r.layers.len() != m.layers {
                return Err(PlanError::invalid(
                    format!("ranges[{i}].layers"),
                    format!(
                        "has {} layers, model.layers is {}",
                        r.layers.len(),
                        m.layers
                    ),
                ));
            }
            for (l, heads) in r.layers.iter().enumerate() {
                if heads.len() != m.heads {
                    return Err(PlanError::invalid(
                        format!("ranges[{i}].layers[{l}]"),
                        format!("has {} heads, model.heads is {}", heads.len(), m.heads),
                    ));
                }
                for (h, p) in heads.iter().enumerate() {
                    p.validate().map_err(|e| {
                        PlanError::invalid(format!("ranges[{i}].layers[{l}][{h}]"), e.to_string())
                    })?;
                }
            }
        }
        if expected_start != self.total_steps {
            return Err(PlanError::invalid(
                "ranges",
                format!(
                    "cover steps 0..{expected_start} but total_steps is {}",
                    self.total_steps
                ),
            ));
        }
        Ok(())
    }

    /// Checks the plan against a model's shape; errors name the mismatching field.
    pub fn check_model(
        &self,
        layers: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<(), PlanError> {
        for (field, plan, model) in [
            ("model.layers", self.model.layers, layers),
            ("model.heads", self.model.heads, heads),
            ("model.head_dim", self.model.head_dim, head_dim),
        ] {
            if plan != model {
                return Err(PlanError::invalid(
                    field,
                    format!("plan has {plan}, the model has {model}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the plan was searched for a schedule of `steps` denoising steps: its
    /// step ranges are indices into that schedule, so a plan for 4 steps applied to 50
    /// would use its last range for steps it never saw.
    pub fn check_steps(&self, steps: usize) -> Result<(), PlanError> {
        if steps != self.total_steps {
            return Err(PlanError::invalid(
                "total_steps",
                format!(
                    "the plan covers a {}-step schedule, the run has {steps} steps (search a plan for {steps} steps)",
                    self.total_steps
                ),
            ));
        }
        Ok(())
    }

    /// The step range holding `step`; steps past the end use the last range.
    pub fn range_for_step(&self, step: usize) -> &StepRange {
        self.ranges
            .iter()
            .find(|r| r.start <= step && step < r.end)
            .unwrap_or_else(|| self.ranges.last().expect("validated plan has ranges"))
    }

    /// The per-head patterns of `layer` at `step`.
    ///
    /// # Panics
    /// If `layer >= self.model.layers`.
    pub fn layer(&self, step: usize, layer: usize) -> &[Pattern] {
        &self.range_for_step(step).layers[layer]
    }
}

/// Where a head's output comes from in a [`CompiledLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadSlot {
    /// The head is skipped: its output is zero.
    Skip,
    /// The head uses `tables[i]`.
    Table(usize),
}

/// One layer's patterns compiled for a layout: heads with the same pattern share one
/// block table (the paper's head fusion); skipped heads have none.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledLayer {
    patterns: Vec<Pattern>,
    tables: Vec<Arc<BlockTable>>,
    slots: Vec<HeadSlot>,
}

/// Block tables already compiled for one layout and block size, shared between layers
/// (a dense table at 119k tokens is 14 MB; every layer that uses it shares one copy).
#[derive(Debug, Default, Clone)]
pub struct TableCache {
    entries: Vec<(Pattern, Arc<BlockTable>)>,
}

impl TableCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table of `pattern`, compiled on first request.
    pub fn get(
        &mut self,
        pattern: &Pattern,
        layout: &VideoLayout,
        block_size: usize,
    ) -> Result<Arc<BlockTable>, PatternError> {
        if let Some((_, t)) = self
            .entries
            .iter()
            .find(|(p, t)| p == pattern && t.layout() == layout && t.block_size() == block_size)
        {
            return Ok(t.clone());
        }
        let t = Arc::new(BlockTable::compile(pattern, layout, block_size)?);
        self.entries.push((pattern.clone(), t.clone()));
        Ok(t)
    }

    /// Number of distinct tables held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl CompiledLayer {
    /// Compiles the per-head `patterns` of one layer.
    pub fn compile(
        patterns: &[Pattern],
        layout: &VideoLayout,
        block_size: usize,
    ) -> Result<Self, PatternError> {
        Self::compile_cached(patterns, layout, block_size, &mut TableCache::new())
    }

    /// Like [`CompiledLayer::compile`], reusing (and filling) `cache`.
    pub fn compile_cached(
        patterns: &[Pattern],
        layout: &VideoLayout,
        block_size: usize,
        cache: &mut TableCache,
    ) -> Result<Self, PatternError> {
        let mut unique: Vec<&Pattern> = Vec::new();
        let mut slots = Vec::with_capacity(patterns.len());
        for p in patterns {
            if matches!(p, Pattern::Skip) {
                slots.push(HeadSlot::Skip);
                continue;
            }
            let idx = match unique.iter().position(|u| *u == p) {
                Some(i) => i,
                None => {
                    unique.push(p);
                    unique.len() - 1
                }
            };
            slots.push(HeadSlot::Table(idx));
        }
        let tables = unique
            .iter()
            .map(|p| cache.get(p, layout, block_size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledLayer {
            patterns: patterns.to_vec(),
            tables,
            slots,
        })
    }

    /// The patterns this layer was compiled from, one per head.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Distinct block tables of the layer.
    pub fn tables(&self) -> &[Arc<BlockTable>] {
        &self.tables
    }

    /// Per-head slot.
    pub fn slots(&self) -> &[HeadSlot] {
        &self.slots
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.slots.len()
    }

    /// Heads using each table, in table order.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.tables.len()];
        for (h, s) in self.slots.iter().enumerate() {
            if let HeadSlot::Table(t) = s {
                groups[*t].push(h);
            }
        }
        groups
    }

    /// Mean block density over all heads (skipped heads count as 0).
    pub fn density(&self) -> f64 {
        let sum: f64 = self
            .slots
            .iter()
            .map(|s| match s {
                HeadSlot::Skip => 0.0,
                HeadSlot::Table(t) => self.tables[*t].density(),
            })
            .sum();
        sum / self.slots.len().max(1) as f64
    }
}
