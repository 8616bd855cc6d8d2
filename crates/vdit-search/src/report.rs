//! The JSON search report: every decision, totals and the search's own wall time.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use vdit_patterns::{CostTableRef, Pattern, VideoLayout, write_atomic};

use crate::{SearchError, SearchOutcome};

/// One (step range, layer, head) decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// First step of the range (inclusive).
    pub step_start: usize,
    /// End of the range (exclusive).
    pub step_end: usize,
    /// Layer.
    pub layer: usize,
    /// Head.
    pub head: usize,
    /// `dense`, `skip`, `diagonal`, `multi_diagonal` or `vertical_stripe`.
    pub pattern: String,
    /// Block density at the search layout (0 for skip).
    pub density: f64,
    /// Worst-case normalised error over samples and steps (0 for dense).
    pub error: f64,
    /// `error + lambda * cost` (0 for dense).
    pub loss: f64,
    /// Whether the range is a dense warm-up range (not searched).
    pub warmup: bool,
    /// The pattern with its parameters, as stored in the plan.
    pub params: Pattern,
}

/// Totals over the whole schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Mean block density over steps, layers and heads (skip = 0, dense = 1).
    pub attention_density: f64,
    /// Predicted attention speedup: dense latency / plan latency, from the cost model.
    pub predicted_speedup: f64,
    /// Predicted dense attention latency over all steps (microseconds).
    pub dense_latency_us: f64,
    /// Predicted plan attention latency over all steps (microseconds).
    pub plan_latency_us: f64,
    /// Wall time of the search itself (seconds).
    pub search_wall_time_s: f64,
    /// Seconds per phase of the candidate measurement, in the order they first ran
    /// (`[phase, seconds]` pairs; see `vdit_search::PhaseTimes`).
    pub phase_times_s: Vec<(String, f64)>,
    /// Decisions per pattern kind (searched ranges only).
    pub pattern_counts: BTreeMap<String, usize>,
}

/// The search report written next to the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchReport {
    /// Tool and version.
    pub tool_version: String,
    /// Date written (ISO 8601, UTC).
    pub date: String,
    /// Model id.
    pub model: String,
    /// Where the q/k/v came from (capture files, planted, model).
    pub inputs: Vec<String>,
    /// Search layout.
    pub layout: VideoLayout,
    /// Layers, heads, head_dim.
    pub shape: [usize; 3],
    /// Block size.
    pub block_size: usize,
    /// Samples aggregated (worst case per head).
    pub samples: usize,
    /// Captured steps used.
    pub captured_steps: Vec<usize>,
    /// Steps in the schedule.
    pub total_steps: usize,
    /// Dense warm-up steps.
    pub warmup_steps: usize,
    /// Lambda.
    pub lambda: f64,
    /// Epsilon used.
    pub epsilon: f64,
    /// Target speedup, if the epsilon was searched for.
    pub target_speedup: Option<f64>,
    /// Cost model used.
    pub cost_model: CostTableRef,
    /// Whether the mixed output was propagated (false: fixed inputs such as capture
    /// files, where every layer is judged on the dense model's inputs).
    pub propagated: bool,
    /// Every decision.
    pub decisions: Vec<DecisionRecord>,
    /// Totals.
    pub totals: Totals,
    /// Extra sections (e.g. planted-head recovery of the embedded default).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl SearchReport {
    /// Builds the report of a finished search.
    pub fn new(outcome: &SearchOutcome, inputs: Vec<String>) -> Self {
        let mut decisions = Vec::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (range, layers) in outcome.ranges.iter().zip(&outcome.decisions) {
            for (layer, heads) in layers.iter().enumerate() {
                for (head, d) in heads.iter().enumerate() {
                    let name = d.pattern.kind().name().to_string();
                    if !range.warmup {
                        *counts.entry(name.clone()).or_default() += 1;
                    }
                    decisions.push(DecisionRecord {
                        step_start: range.steps.start,
                        step_end: range.steps.end,
                        layer,
                        head,
                        pattern: name,
                        density: d.density,
                        error: d.error,
                        loss: d.loss,
                        warmup: range.warmup,
                        params: d.pattern.clone(),
                    });
                }
            }
        }
        let plan = &outcome.plan;
        SearchReport {
            tool_version: plan.provenance.tool_version.clone(),
            date: iso_date_utc(std::time::SystemTime::now()),
            model: plan.model.id.clone(),
            inputs,
            layout: plan.layout,
            shape: [plan.model.layers, plan.model.heads, plan.model.head_dim],
            block_size: plan.block_size,
            samples: outcome.info.samples,
            captured_steps: outcome
                .ranges
                .iter()
                .flat_map(|r| r.captured.clone())
                .collect(),
            total_steps: plan.total_steps,
            warmup_steps: plan.search.warmup_steps,
            lambda: plan.search.lambda,
            epsilon: outcome.epsilon,
            target_speedup: plan.search.target_speedup,
            cost_model: plan.cost_table.clone().unwrap_or(CostTableRef {
                device: "unknown".into(),
                source: "unknown".into(),
            }),
            propagated: outcome.propagated,
            decisions,
            totals: Totals {
                attention_density: outcome.attention_density,
                predicted_speedup: outcome.predicted_speedup,
                dense_latency_us: outcome.latency_us.0,
                plan_latency_us: outcome.latency_us.1,
                search_wall_time_s: outcome.wall_time_s,
                phase_times_s: outcome.phase_times.0.clone(),
                pattern_counts: counts,
            },
            extra: BTreeMap::new(),
        }
    }

    /// The report as pretty JSON (`path` only names the file in errors), e.g. to stage
    /// it with the plan in a [`vdit_patterns::OutputSet`].
    pub fn to_json(&self, path: &Path) -> Result<String, SearchError> {
        serde_json::to_string_pretty(self).map_err(|e| SearchError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), SearchError> {
        let text = self.to_json(path)?;
        write_atomic(path, text.as_bytes()).map_err(|source| SearchError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// A predicted speedup for people: `3.20x`, or, when the plan leaves no attention work at
/// all (every head skipped, so the ratio is infinite or undefined), a sentence saying
/// so instead of `infx`/`NaNx`.
pub fn format_speedup(speedup: f64) -> String {
    if speedup.is_finite() {
        format!("{speedup:.2}x")
    } else {
        "unbounded (every head is skipped: no attention work is left)".to_string()
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` for a system time (UTC), without a date library: days since
/// the epoch to a civil date (Howard Hinnant's algorithm).
pub fn iso_date_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speedups_are_formatted_without_inf() {
        assert_eq!(format_speedup(3.204), "3.20x");
        for s in [f64::INFINITY, f64::NAN] {
            let text = format_speedup(s);
            assert!(text.starts_with("unbounded"), "{text}");
        }
    }

    #[test]
    fn iso_date_matches_known_instants() {
        let at = |s| iso_date_utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
