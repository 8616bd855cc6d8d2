//! Cost model: what a layer's attention costs under a set of per-head patterns.
//!
//! Two models, both pure functions of the problem (pattern kind, block density, token
//! count, head dimension, block size):
//!
//! - [`CostTable`]: *measured* kernel latencies on one named GPU, a RON file written by
//!   `cargo xtask bench --calibrate` (format below). Per-block time is interpolated in
//!   density between measured points of the same pattern kind and head dimension, at the
//!   measured sequence length nearest (in log scale) to the one asked for, and scaled to
//!   the asked block count. This captures what FLOP counts miss: sparse kernels keep only
//!   part of dense throughput per computed block, and less at very low density
//!   (reference/peers.md §4: 0.83–1.0 of dense per block depending on pattern and
//!   density), and multi-diagonal heads pay a gather.
//! - [`AnalyticCost`]: computed blocks x per-block cost + one launch per layer, for
//!   devices without a table.
//!
//! Both are group-aware: all heads of a layer run in one launch (heads sharing a block
//! table form a group, skipped heads cost nothing), so a layer costs one launch overhead
//! plus the sum of its heads' block work, not one launch per head.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vdit_patterns::{CostTableRef, PatternKind, write_atomic};

use crate::SearchError;

/// The cost table format version this build reads and writes.
pub const COST_TABLE_VERSION: u32 = 1;

/// One measurement: a single kernel launch running `heads` heads that all use one
/// block table of `kind` with block density `density`, at a sequence of `tokens` tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostEntry {
    /// Pattern kind of the measured table (`dense`, `diagonal`, `multi_diagonal`,
    /// `vertical_stripe`; `skip` is free and need not be measured).
    pub kind: PatternKind,
    /// Head dimension.
    pub head_dim: usize,
    /// Sequence length (video + text tokens) of the measured layout.
    pub tokens: usize,
    /// Heads in the launch.
    pub heads: usize,
    /// Block density of the measured table (`BlockTable::density`, in `(0, 1]`).
    pub density: f64,
    /// Median latency of the launch, in microseconds, launch overhead included.
    pub latency_us: f64,
}

/// Measured latencies of the sparse attention kernels on one GPU.
///
/// `cargo xtask bench --calibrate` writes it (RON, atomically); the search reads it
/// with [`CostTable::load`]. Example:
///
/// ```ron
/// CostTable(
///     version: 1,
///     device: "NVIDIA H100 80GB HBM3",
///     dtype: "bf16",
///     block_size: 128,
///     launch_overhead_us: 12.0,
///     date: "2026-11-24",
///     tool_version: "xtask 0.1.0",
///     notes: "",
///     entries: [
///         CostEntry(kind: dense, head_dim: 128, tokens: 32760, heads: 12, density: 1.0, latency_us: 9100.0),
///         CostEntry(kind: diagonal, head_dim: 128, tokens: 32760, heads: 12, density: 0.1, latency_us: 1000.0),
///     ],
/// )
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostTable {
    /// Format version; must equal [`COST_TABLE_VERSION`].
    pub version: u32,
    /// GPU name as the driver reports it.
    pub device: String,
    /// Element type of q/k/v in the measurements (e.g. `bf16`).
    pub dtype: String,
    /// Block size of the measured kernels (64 or 128).
    pub block_size: usize,
    /// Fixed cost of one layer launch (microseconds), measured with an almost empty
    /// table; it is part of every `latency_us` and subtracted before per-block times are
    /// derived.
    pub launch_overhead_us: f64,
    /// Date of the measurement (ISO 8601).
    pub date: String,
    /// Tool and version that measured it.
    pub tool_version: String,
    /// Free-form notes (driver, clocks, ...).
    #[serde(default)]
    pub notes: String,
    /// The measurements.
    pub entries: Vec<CostEntry>,
}

impl CostTable {
    /// Parses and validates a table from RON text; `source` names it in errors.
    pub fn from_ron_str(text: &str, source: &str) -> Result<Self, SearchError> {
        let table: CostTable = ron::from_str(text).map_err(|e| SearchError::CostTable {
            source_name: source.to_string(),
            reason: format!("not a valid RON cost table: {e}"),
        })?;
        table.validate(source)?;
        Ok(table)
    }

    /// Reads (at most [`vdit_patterns::MAX_TEXT_BYTES`]) and validates a table file.
    pub fn load(path: &Path) -> Result<Self, SearchError> {
        let text = vdit_patterns::read_text_capped(path, vdit_patterns::MAX_TEXT_BYTES).map_err(
            |source| SearchError::Io {
                path: path.to_owned(),
                source,
            },
        )?;
        Self::from_ron_str(&text, &path.display().to_string())
    }

    /// Validates and writes the table atomically (for `bench --calibrate`).
    pub fn save(&self, path: &Path) -> Result<(), SearchError> {
        let name = path.display().to_string();
        self.validate(&name)?;
        let config = ron::ser::PrettyConfig::new()
            .depth_limit(2)
            .struct_names(true);
        let text =
            ron::ser::to_string_pretty(self, config).map_err(|e| SearchError::CostTable {
                source_name: name.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(path, text.as_bytes()).map_err(|source| SearchError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks version, block size and every entry; errors name the entry.
    pub fn validate(&self, source: &str) -> Result<(), SearchError> {
        let bad = |reason: String| SearchError::CostTable {
            source_name: source.to_string(),
            reason,
        };
        if self.version != COST_TABLE_VERSION {
            return Err(bad(format!(
                "version {} is not supported (this build reads {COST_TABLE_VERSION})",
                self.version
            )));
        }
        if ![64, 128].contains(&self.block_size) {
            return Err(bad(format!(
                "block_size {} is not 64 or 128",
                self.block_size
            )));
        }
        if !(self.launch_overhead_us.is_finite() && self.launch_overhead_us >= 0.0) {
            return Err(bad(format!(
                "launch_overhead_us {} is not >= 0",
                self.launch_overhead_us
            )));
        }
        if self.entries.is_empty() {
            return Err(bad("has no entries".into()));
        }
        for (i, e) in self.entries.iter().enumerate() {
            let what = format!("entries[{i}]");
            if e.kind == PatternKind::Skip {
                return Err(bad(format!(
                    "{what}: skip heads cost nothing and must not be measured"
                )));
            }
            if e.head_dim == 0 || e.tokens == 0 || e.heads == 0 {
                return Err(bad(format!(
                    "{what}: head_dim, tokens and heads must be >= 1"
                )));
            }
            if !(e.density > 0.0 && e.density <= 1.0) {
                return Err(bad(format!(
                    "{what}: density {} is not in (0, 1]",
                    e.density
                )));
            }
            if e.kind == PatternKind::Dense && (e.density - 1.0).abs() > 1e-9 {
                return Err(bad(format!(
                    "{what}: a dense entry has density {}, not 1",
                    e.density
                )));
            }
            if !(e.latency_us.is_finite() && e.latency_us > self.launch_overhead_us) {
                return Err(bad(format!(
                    "{what}: latency_us {} must exceed launch_overhead_us {}",
                    e.latency_us, self.launch_overhead_us
                )));
            }
        }
        Ok(())
    }
}

/// Per-computed-block time (microseconds, one head, one `block_size` x `block_size`
/// block at this table's block size) of `kind` at `head_dim`, `tokens`, `density`.
///
/// Rule (pure, pinned by unit tests):
/// 1. keep the entries of this kind and head dimension (none: error, the table cannot
///    price this pattern; calibrate it);
/// 2. among their sequence lengths take the one nearest to `tokens` in log scale
///    (kernel efficiency depends on length mostly through occupancy, which saturates);
/// 3. per entry, `t = (latency - launch) / (heads * density * blocks^2)`;
/// 4. interpolate `t` linearly in density between the two nearest measured densities,
///    clamping outside the measured range (extrapolating the low-density efficiency
///    drop was tried on paper and rejected: it can go negative).
pub fn table_block_time_us(
    table: &CostTable,
    kind: PatternKind,
    head_dim: usize,
    tokens: usize,
    density: f64,
) -> Result<f64, SearchError> {
    let candidates: Vec<&CostEntry> = table
        .entries
        .iter()
        .filter(|e| e.kind == kind && e.head_dim == head_dim)
        .collect();
    if candidates.is_empty() {
        return Err(SearchError::CostTable {
            source_name: table.device.clone(),
            reason: format!(
                "has no entry for {kind} at head_dim {head_dim}; calibrate this pattern"
            ),
        });
    }
    let ln = (tokens as f64).ln();
    let nearest = candidates
        .iter()
        .map(|e| e.tokens)
        .min_by(|a, b| {
            let (da, db) = (((*a as f64).ln() - ln).abs(), ((*b as f64).ln() - ln).abs());
            da.total_cmp(&db).then(b.cmp(a))
        })
        .expect("non-empty");
    let mut points: Vec<(f64, f64)> = candidates
        .iter()
        .filter(|e| e.tokens == nearest)
        .map(|e| {
            let nb = e.tokens.div_ceil(table.block_size) as f64;
            let blocks = e.heads as f64 * e.density * nb * nb;
            (
                e.density,
                (e.latency_us - table.launch_overhead_us) / blocks,
            )
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(interpolate(&points, density))
}

/// Piecewise-linear interpolation through `points` (sorted by x), clamped at the ends;
/// equal x values are averaged by taking the first.
fn interpolate(points: &[(f64, f64)], x: f64) -> f64 {
    let first = points[0];
    let last = points[points.len() - 1];
    if x <= first.0 {
        return first.1;
    }
    if x >= last.0 {
        return last.1;
    }
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x >= x0 && x <= x1 {
            if x1 - x0 < 1e-12 {
                return y0;
            }
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
    }
    last.1
}

/// The analytic fallback: computed blocks x per-block time + one launch per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticCost {
    /// Nominal dense attention throughput in TFLOP/s (4 * head_dim flops per computed
    /// query-key pair). Only ratios matter for the search; the default is an H100-class
    /// block-sparse kernel in bf16.
    pub tflops: f64,
    /// Fixed cost of one layer launch, in microseconds.
    pub launch_us: f64,
    /// Per-block throughput kept by each sparse kind relative to dense, from
    /// reference/peers.md §4.3 (FlexAttention on H100: 0.93–1.0 for bands, 0.91–0.97 for
    /// multi-diagonal and stripes; the multi-diagonal gather costs a little more).
    pub efficiency: KindEfficiency,
}

/// Fraction of dense per-block throughput each pattern kind keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KindEfficiency {
    /// Diagonal (band) heads.
    pub diagonal: f64,
    /// Multi-diagonal heads (gathered through the spatial-major permutation).
    pub multi_diagonal: f64,
    /// Vertical-stripe heads.
    pub vertical_stripe: f64,
}

impl Default for AnalyticCost {
    fn default() -> Self {
        AnalyticCost {
            tflops: 400.0,
            launch_us: 10.0,
            efficiency: KindEfficiency {
                diagonal: 0.95,
                multi_diagonal: 0.9,
                vertical_stripe: 0.93,
            },
        }
    }
}

impl AnalyticCost {
    /// Time of one computed `block_size` x `block_size` block of `kind` (microseconds).
    pub fn block_time_us(&self, kind: PatternKind, head_dim: usize, block_size: usize) -> f64 {
        let flops = 4.0 * head_dim as f64 * (block_size * block_size) as f64;
        let eff = match kind {
            PatternKind::Dense | PatternKind::Skip => 1.0,
            PatternKind::Diagonal => self.efficiency.diagonal,
            PatternKind::MultiDiagonal => self.efficiency.multi_diagonal,
            PatternKind::VerticalStripe => self.efficiency.vertical_stripe,
        };
        flops / (self.tflops * 1e6 * eff)
    }
}

/// The problem a cost is asked for: one head's pattern in a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadCostQuery {
    /// Pattern kind.
    pub kind: PatternKind,
    /// Block density of the head's table at `block_size`.
    pub density: f64,
}

/// A cost model: a measured table or the analytic fallback.
#[derive(Debug, Clone, PartialEq)]
pub enum CostModel {
    /// Measured latencies; `source` is the file it was read from.
    Table {
        /// The table.
        table: CostTable,
        /// Where it came from.
        source: String,
    },
    /// The analytic fallback.
    Analytic(AnalyticCost),
}

impl CostModel {
    /// Latency (microseconds) of one head's share of a layer launch: its computed blocks
    /// times the per-block time of its kind; 0 for skipped heads.
    pub fn head_us(
        &self,
        q: HeadCostQuery,
        tokens: usize,
        head_dim: usize,
        block_size: usize,
    ) -> Result<f64, SearchError> {
        if q.kind == PatternKind::Skip || q.density <= 0.0 {
            return Ok(0.0);
        }
        let nb = tokens.div_ceil(block_size) as f64;
        let blocks = q.density * nb * nb;
        let per_block = match self {
            CostModel::Analytic(a) => a.block_time_us(q.kind, head_dim, block_size),
            CostModel::Table { table, .. } => {
                // Scale the table's per-block time to this block size by block area.
                let r = block_size as f64 / table.block_size as f64;
                table_block_time_us(table, q.kind, head_dim, tokens, q.density)? * r * r
            }
        };
        Ok(blocks * per_block)
    }

    /// Fixed cost of one layer launch (microseconds).
    pub fn launch_us(&self) -> f64 {
        match self {
            CostModel::Analytic(a) => a.launch_us,
            CostModel::Table { table, .. } => table.launch_overhead_us,
        }
    }

    /// Group-aware latency of one layer: one launch (if any head is computed) plus
    /// every head's block work.
    pub fn layer_us(
        &self,
        heads: &[HeadCostQuery],
        tokens: usize,
        head_dim: usize,
        block_size: usize,
    ) -> Result<f64, SearchError> {
        let mut total = 0.0;
        let mut any = false;
        for q in heads {
            let t = self.head_us(*q, tokens, head_dim, block_size)?;
            any |= q.kind != PatternKind::Skip && q.density > 0.0;
            total += t;
        }
        Ok(if any { total + self.launch_us() } else { 0.0 })
    }

    /// The reference stored in a plan.
    pub fn reference(&self) -> CostTableRef {
        match self {
            CostModel::Table { table, source } => CostTableRef {
                device: table.device.clone(),
                source: source.clone(),
            },
            CostModel::Analytic(a) => CostTableRef {
                device: "analytic".into(),
                source: format!(
                    "analytic: computed blocks x 4*head_dim*B^2 flops at {} TFLOP/s (x kind efficiency) + {} us per layer launch",
                    a.tflops, a.launch_us
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CostTable {
        let e = |kind, density: f64, latency_us| CostEntry {
            kind,
            head_dim: 128,
            tokens: 32_768,
            heads: 4,
            density,
            latency_us,
        };
        CostTable {
            version: COST_TABLE_VERSION,
            device: "test-gpu".into(),
            dtype: "bf16".into(),
            block_size: 128,
            launch_overhead_us: 10.0,
            date: "2026-11-24".into(),
            tool_version: "test".into(),
            notes: String::new(),
            // 256 x 256 blocks per head; 4 heads.
            entries: vec![
                e(PatternKind::Dense, 1.0, 10.0 + 4.0 * 65_536.0 * 0.01),
                e(PatternKind::Diagonal, 0.1, 10.0 + 4.0 * 6_553.6 * 0.012),
                e(PatternKind::Diagonal, 0.3, 10.0 + 4.0 * 19_660.8 * 0.011),
            ],
        }
    }

    #[test]
    fn table_per_block_time_is_interpolated_in_density_and_clamped() {
        let t = table();
        let at = |d| table_block_time_us(&t, PatternKind::Diagonal, 128, 32_768, d).unwrap();
        assert!((at(0.1) - 0.012).abs() < 1e-12);
        assert!((at(0.3) - 0.011).abs() < 1e-12);
        assert!((at(0.2) - 0.0115).abs() < 1e-12);
        assert!((at(0.01) - 0.012).abs() < 1e-12, "clamped below");
        assert!((at(0.9) - 0.011).abs() < 1e-12, "clamped above");
        let dense = table_block_time_us(&t, PatternKind::Dense, 128, 32_768, 1.0).unwrap();
        assert!((dense - 0.01).abs() < 1e-12);
    }

    #[test]
    fn missing_kind_or_head_dim_is_a_clear_error() {
        let t = table();
        let e = table_block_time_us(&t, PatternKind::MultiDiagonal, 128, 32_768, 0.1).unwrap_err();
        assert!(
            e.to_string().contains("multi_diagonal at head_dim 128"),
            "{e}"
        );
        assert!(table_block_time_us(&t, PatternKind::Dense, 64, 32_768, 1.0).is_err());
    }

    #[test]
    fn layer_cost_counts_one_launch_and_skips_are_free() {
        let m = CostModel::Table {
            table: table(),
            source: "t".into(),
        };
        let dense = HeadCostQuery {
            kind: PatternKind::Dense,
            density: 1.0,
        };
        let skip = HeadCostQuery {
            kind: PatternKind::Skip,
            density: 0.0,
        };
        let one = m.layer_us(&[dense], 32_768, 128, 128).unwrap();
        let two = m.layer_us(&[dense, dense], 32_768, 128, 128).unwrap();
        assert!((one - (10.0 + 655.36)).abs() < 1e-6, "{one}");
        assert!(
            (two - (10.0 + 2.0 * 655.36)).abs() < 1e-6,
            "one launch for both heads: {two}"
        );
        assert_eq!(m.layer_us(&[skip, skip], 32_768, 128, 128).unwrap(), 0.0);
        // Block size 64 has 4x the blocks, each a quarter of the work.
        let d64 = m.head_us(dense, 32_768, 128, 64).unwrap();
        assert!((d64 - 655.36).abs() < 1e-6, "{d64}");
    }

    #[test]
    fn analytic_cost_is_blocks_times_block_time_plus_launch() {
        let a = AnalyticCost::default();
        let m = CostModel::Analytic(a.clone());
        let h = HeadCostQuery {
            kind: PatternKind::Diagonal,
            density: 0.25,
        };
        let nb = 1000usize.div_ceil(64) as f64;
        let expect = 0.25 * nb * nb * 4.0 * 64.0 * 4096.0 / (400e6 * 0.95);
        assert!((m.head_us(h, 1000, 64, 64).unwrap() - expect).abs() < 1e-9);
        assert!((m.layer_us(&[h], 1000, 64, 64).unwrap() - expect - 10.0).abs() < 1e-9);
    }

    #[test]
    fn table_round_trips_through_ron_and_rejects_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cost.ron");
        let t = table();
        t.save(&path).unwrap();
        assert_eq!(CostTable::load(&path).unwrap(), t);
        let mut bad = t.clone();
        bad.entries[1].density = 0.0;
        let e = bad.save(&path).unwrap_err().to_string();
        assert!(e.contains("entries[1]") && e.contains("density"), "{e}");
        assert!(CostTable::from_ron_str("CostTable(version: 1", "x").is_err());
    }
}
