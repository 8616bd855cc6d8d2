//! Offline sparse attention search for Sparse-vDiT: per (step range, layer, head), the
//! cheapest pattern whose error against dense attention is acceptable.
//!
//! The algorithm is the paper's (arXiv 2506.03065, Algorithm 1): for every layer, each
//! head's candidate patterns are run, the loss `error + lambda * cost` is formed, and a
//! head keeps dense attention when every loss exceeds `epsilon`, else it takes the
//! candidate with the smallest loss. What this crate adds (SPEC "Search"):
//!
//! - a scale-free error: MSE against the dense output normalised by the mean energy of the
//!   layer's dense output over all heads ([`eval::normalised`]);
//! - a cost from measured kernel latency ([`CostTable`], written by
//!   `cargo xtask bench --calibrate`) or an analytic fallback ([`AnalyticCost`]), one
//!   launch per layer (group-aware);
//! - stripe columns chosen from attention mass estimated on sampled query rows
//!   ([`candidates::key_block_mass`]), never an L x L matrix;
//! - several samples aggregated by the worst case per head, dense warm-up steps, step
//!   ranges, and a target speedup ([`SearchOptions::target_speedup`], epsilon found by
//!   bisection);
//! - inputs from capture files ([`CaptureFile`], written by any framework, e.g.
//!   `tools/write_captures.py`; fixed inputs, so the mixed output is *not* propagated)
//!   or a model run through `vdit_attention::CaptureHook` ([`ModelRunner`] +
//!   [`ModelSource`]: every layer is measured on the inputs the model produces with the
//!   decisions already made, earlier layers and steps, as in the paper's Algorithm 1);
//! - planted heads with known structure ([`PlantedModel`]) for tests and the embedded
//!   default of `cargo xtask search`.
//!
//! Candidates are evaluated with `vdit_attention::cpu::sparse_attention`, which follows
//! the same block tables as the GPU kernels, so the error measured is the error the
//! kernels will make.
//!
//! ```no_run
//! use vdit_search::*;
//! let mut source = CaptureSource::open(&["captures.safetensors".into()])?;
//! let opts = SearchOptions::default();
//! let cost = CostModel::Analytic(AnalyticCost::default());
//! let meta = PlanMeta {
//!     model_id: String::new(),
//!     config_hash: "none".into(),
//!     provenance: vdit_patterns::Provenance {
//!         weights: "my-model.safetensors".into(),
//!         weights_hash: None,
//!         synthetic: false,
//!         date: "2026-11-24".into(),
//!         tool_version: "example".into(),
//!         notes: String::new(),
//!     },
//! };
//! let outcome = search(&mut source, &opts, &cost, meta, &NoProgress)?;
//! outcome.plan.save("plan.ron".as_ref())?;
//! SearchReport::new(&outcome, vec!["captures.safetensors".into()]).save("report.json".as_ref())?;
//! # Ok::<(), SearchError>(())
//! ```
#![warn(missing_docs)]

pub mod candidates;
mod capture;
pub mod cost;
mod error;
pub mod eval;
mod model;
mod planted;
mod report;
mod search;
mod source;

pub use candidates::CandidateConfig;
pub use capture::{CaptureDtype, CaptureFile, CaptureMeta, write_capture_file};
pub use cost::{AnalyticCost, COST_TABLE_VERSION, CostEntry, CostModel, CostTable, KindEfficiency};
pub use error::SearchError;
pub use model::{ModelRunner, ModelSource};
pub use planted::{Mismatch, PlantedKind, PlantedModel, Recovery};
pub use report::{DecisionRecord, SearchReport, Totals, format_speedup, iso_date_utc};
pub use search::{
    Candidate, Decision, HeadMeasure, Measured, NoProgress, PhaseTimes, PlanEvaluation, PlanMeta,
    Progress, RangeSpec, SearchOptions, SearchOutcome, decide_head, evaluate_plan, plan_ranges,
    predict_speedup, search,
};
pub use source::{CaptureSource, Decided, LayerQkv, QkvSource, SourceInfo};
