//! `cargo xtask bench`: attention operator (dense vs each pattern) and denoiser step time
//! (dense vs a plan) of Wan2.1, HunyuanVideo and CogVideoX1.5, on the CPU by default
//! (tiny sizes) or on a GPU backend (`--backend cuda`, real sizes).
//!
//! Writes `report.json`, `report.md` and `attention.svg` (time vs density per pattern)
//! to `--out` (default `results/bench/<backend>-<date>`), and with `--calibrate` the
//! cost table the search reads (`vdit_search::CostTable`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use serde::Serialize;
use vdit_attention::{AttentionOptions, PreparedLayer};
use vdit_cogvideox::CogVideoXConfig;
use vdit_hunyuan::HunyuanConfig;
use vdit_models::ModelBackend;
use vdit_patterns::{
    ModelInfo, Pattern, Plan, Provenance, StepRange, TextPosition, TokenSpan, VideoLayout,
    write_atomic,
};
use vdit_search::{COST_TABLE_VERSION, CostEntry, CostTable, iso_date_utc};
use vdit_wan::WanConfig;

use super::forward::{BackendKind, Denoiser, ModelConfig, RandomInputs, with_backend};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backend: `cpu` (quick suite, default), `wgpu` or `cuda` (real sizes).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Output folder (default `results/bench/<backend>-<date>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Float dtype of q/k/v and the model: f32, bf16, f16 (default: f32 on cpu, bf16 on GPUs).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Timed repetitions per row (median reported), after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Write the cost table the search uses (`--cost-table`, default
    /// `<out>/cost_table.ron`) from the attention measurements.
    #[arg(long)]
    pub calibrate: bool,
    /// Where `--calibrate` writes the cost table.
    #[arg(long)]
    pub cost_table: Option<PathBuf>,
    /// Skip the denoiser-step suite.
    #[arg(long)]
    pub skip_model: bool,
    /// Skip the attention suite.
    #[arg(long)]
    pub skip_attention: bool,
    /// Attention suite: time only the dense layer of each case (what the step report
    /// subtracts to get the non-attention time), not every pattern.
    #[arg(long)]
    pub attention_dense_only: bool,
    /// Denoisers whose step is timed, comma-separated: `wan` (Wan2.1-1.3B, 480p x 81
    /// frames), `hunyuan` (HunyuanVideo, 720p x 129 frames), `cogvideox`
    /// (CogVideoX1.5-5B, 1360x768 x 81 frames). Default: all three on GPU backends, `wan`
    /// on the CPU; with `--plan` and no `--models`, the model the plan fits. Each model's
    /// weights are freed before the next one is built; to sample memory per model, run
    /// one model per process.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub models: Vec<StepModel>,
    /// Which steps to time per model, comma-separated: `dense`, `plan` (default both; one
    /// of them alone keeps a long step, e.g. HunyuanVideo at 720p, within a process time
    /// limit; the plan row's speedup is then left empty).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dense,plan")]
    pub modes: Vec<StepMode>,
    /// Size of the denoiser steps: `real` (the sizes above, default on GPU backends) or
    /// `tiny` (2-layer models of the same shape at a small latent, default on the CPU).
    #[arg(long, value_enum)]
    pub size: Option<StepSize>,
    /// Use this plan for the denoiser step instead of the synthetic mixed plan (it must
    /// fit every model of `--models`: layers, heads, head dim).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Device name recorded in the report (e.g. from nvidia-smi).
    #[arg(long, default_value = "")]
    pub device_name: String,
}

/// One attention measurement.
#[derive(Debug, Clone, Serialize)]
pub struct AttnRow {
    /// Case (model and resolution).
    pub case: String,
    /// Sequence length.
    pub tokens: usize,
    /// Heads.
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// `dense`, a pattern kind, or `burn_builtin` (Burn's own attention).
    pub pattern: String,
    /// Pattern parameters.
    pub params: String,
    /// Block density.
    pub density: f64,
    /// Median time (ms).
    pub ms: f64,
    /// Computed FLOP per second (4 * computed pairs * head_dim * heads / time), TFLOP/s.
    pub tflops: f64,
    /// Time / our dense time of the same case.
    pub time_vs_dense: f64,
    /// (Time / dense time) / density: 1.0 = a computed block costs as much as in dense.
    pub cost_per_block_vs_dense: f64,
}

/// A denoiser of the step suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StepModel {
    /// Wan2.1-T2V-1.3B.
    Wan,
    /// HunyuanVideo T2V (13B).
    Hunyuan,
    /// CogVideoX1.5-5B T2V.
    Cogvideox,
}

impl StepModel {
    fn key(self) -> &'static str {
        match self {
            StepModel::Wan => "wan",
            StepModel::Hunyuan => "hunyuan",
            StepModel::Cogvideox => "cogvideox",
        }
    }
}

/// A timed step: dense attention or the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StepMode {
    /// Dense attention in every layer.
    Dense,
    /// The plan (`--plan` or the fixed mixed plan).
    Plan,
}

/// Size of the denoiser steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StepSize {
    /// The real configs at the papers' video sizes.
    Real,
    /// 2-layer models of each architecture at a small latent (CPU checks).
    Tiny,
}

/// One denoiser-step measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    /// Model and size.
    pub model: String,
    /// Self-attention tokens (HunyuanVideo and CogVideoX: video + text).
    pub tokens: usize,
    /// `dense` or `plan`.
    pub mode: String,
    /// Mean block density of the plan's attention (1 for dense).
    pub attention_density: f64,
    /// Median step time (ms).
    pub ms: f64,
    /// Dense time / this time (`null` when the dense step was not timed in the same run,
    /// see `--modes`).
    pub speedup: Option<f64>,
    /// Latent size, text tokens and what the plan is.
    pub notes: String,
    /// Memory the device allocator had reserved after the timed steps, in GiB: the
    /// high-water mark of its pools since the model was built (weights included; the
    /// pools return memory only on cleanup), the same accounting as PyTorch's
    /// `torch.cuda.max_memory_reserved`. `null` on backends without a device allocator.
    pub peak_reserved_gib: Option<f64>,
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    device: String,
    dtype: String,
    date: String,
    commit: String,
    command: String,
    block_size: usize,
    attention: Vec<AttnRow>,
    model: Vec<ModelRow>,
}

struct Case {
    name: &'static str,
    layout: VideoLayout,
    heads: usize,
    head_dim: usize,
}

fn cases(gpu: bool) -> Result<Vec<Case>> {
    let v = |t, h, w| VideoLayout::new(t, h, w);
    Ok(if gpu {
        vec![
            Case {
                name: "wan2.1-480p",
                layout: v(21, 30, 52)?,
                heads: 12,
                head_dim: 128,
            },
            Case {
                name: "wan2.1-720p",
                layout: v(21, 45, 80)?,
                heads: 12,
                head_dim: 128,
            },
            Case {
                name: "cogvideox1.5",
                layout: v(11, 48, 85)?.with_text(226, TextPosition::Prefix)?,
                heads: 48,
                head_dim: 64,
            },
            Case {
                name: "hunyuanvideo-720p",
                layout: v(33, 45, 80)?.with_text(256, TextPosition::Suffix)?,
                heads: 24,
                head_dim: 128,
            },
        ]
    } else {
        vec![Case {
            name: "cpu-4x32x32",
            layout: v(4, 32, 32)?,
            heads: 2,
            head_dim: 64,
        }]
    })
}

/// Patterns measured per case: several densities per kind.
fn patterns(layout: &VideoLayout) -> Vec<Pattern> {
    let first_frame = TokenSpan {
        start: 0.0,
        end: 1.0 / layout.frames as f64,
    };
    let all = layout.frames as u32;
    vec![
        Pattern::Diagonal { band: 0.0 },
        Pattern::Diagonal { band: 0.5 },
        Pattern::Diagonal { band: 1.0 },
        Pattern::Diagonal { band: 3.0 },
        Pattern::MultiDiagonal {
            spatial_band: 0.02,
            frame_reach: all,
        },
        Pattern::MultiDiagonal {
            spatial_band: 0.1,
            frame_reach: all,
        },
        Pattern::VerticalStripe {
            columns: vec![first_frame],
            band: None,
        },
        Pattern::VerticalStripe {
            columns: vec![first_frame],
            band: Some(1.0),
        },
    ]
}

fn params(p: &Pattern) -> String {
    match p {
        Pattern::Dense | Pattern::Skip => String::new(),
        Pattern::Diagonal { band } => format!("band={band}"),
        Pattern::MultiDiagonal {
            spatial_band,
            frame_reach,
        } => {
            format!("spatial={spatial_band},reach={frame_reach}")
        }
        Pattern::VerticalStripe { columns, band } => {
            format!("columns={},band={band:?}", columns.len())
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median wall time (ms) of `f` over `repeats` runs after one warm-up, with device syncs.
pub(crate) fn time_ms<B: Backend>(
    device: &B::Device,
    repeats: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"));
    f()?;
    sync()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        f()?;
        sync()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

fn attention_suite<B: ModelBackend>(
    device: &B::Device,
    gpu: bool,
    dtype: DType,
    block_size: usize,
    repeats: usize,
    dense_only: bool,
) -> Result<Vec<AttnRow>> {
    let mut rows = Vec::new();
    for case in cases(gpu)? {
        let n = case.layout.total_tokens();
        let shape = [1, case.heads, n, case.head_dim];
        let make =
            || Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device).cast(dtype);
        let (q, k, v) = (make(), make(), make());
        let opts = AttentionOptions::<B>::default();
        let run = |layer: &PreparedLayer| -> Result<()> {
            let out = B::sparse_attention(q.clone(), k.clone(), v.clone(), layer, &opts)?;
            drop(out);
            Ok(())
        };
        let dense_layer = PreparedLayer::dense(case.heads, &case.layout, block_size)?;
        let dense_ms = time_ms::<B>(device, repeats, || run(&dense_layer))?;
        let pairs = |layer: &PreparedLayer| -> f64 {
            layer
                .compiled()
                .tables()
                .iter()
                .map(|t| t.computed_pairs() as f64)
                .sum::<f64>()
        };
        let flop =
            |pairs_per_head: f64| 4.0 * pairs_per_head * case.head_dim as f64 * case.heads as f64;
        let dense_flop = flop(pairs(&dense_layer));
        let mut push = |pattern: String, params: String, density: f64, ms: f64, flops: f64| {
            let row = AttnRow {
                case: case.name.to_string(),
                tokens: n,
                heads: case.heads,
                head_dim: case.head_dim,
                pattern,
                params,
                density,
                ms,
                tflops: flops / (ms * 1e-3) / 1e12,
                time_vs_dense: ms / dense_ms,
                cost_per_block_vs_dense: if density > 0.0 {
                    ms / dense_ms / density
                } else {
                    0.0
                },
            };
            eprintln!(
                "  {:<18} {:<16} {:<28} density {:.3}  {:>9.2} ms  {:>7.3} TFLOP/s  x{:.2} of dense/block",
                row.case,
                row.pattern,
                row.params,
                row.density,
                row.ms,
                row.tflops,
                row.cost_per_block_vs_dense
            );
            rows.push(row);
        };
        push("dense".into(), String::new(), 1.0, dense_ms, dense_flop);
        if dense_only {
            continue;
        }
        for p in patterns(&case.layout) {
            let layer = PreparedLayer::new(&vec![p.clone(); case.heads], &case.layout, block_size)?;
            let density = layer.compiled().density();
            let ms = time_ms::<B>(device, repeats, || run(&layer))?;
            push(
                p.kind().name().into(),
                params(&p),
                density,
                ms,
                flop(pairs(&layer) / 1.0),
            );
        }
        // Burn's own (dense) attention on the same tensors, for reference. Skipped on
        // CubeCL backends: burn-cubecl 0.21's autotune tries an unfused fallback that
        // allocates the L x L scores and fails at these sizes (see
        // `ModelBackend::BUILTIN_DENSE`).
        if !B::BUILTIN_DENSE {
            continue;
        }
        let burn_ms = time_ms::<B>(device, repeats, || {
            let out = burn::tensor::module::attention(
                q.clone(),
                k.clone(),
                v.clone(),
                None,
                None,
                Default::default(),
            );
            drop(out);
            Ok(())
        })?;
        push(
            "burn_builtin".into(),
            "dense".into(),
            1.0,
            burn_ms,
            dense_flop,
        );
    }
    Ok(rows)
}

/// A plan whose heads cycle through dense, diagonal, multi-diagonal and vertical-stripe
/// patterns (one in eight heads skipped): a stand-in of stated density for timing when
/// no searched plan is given. `(layers, heads, head_dim)` are the model's plan layers
/// (HunyuanVideo: dual-stream then single-stream blocks).
fn mixed_plan(
    id: &str,
    (layers, heads, head_dim): (usize, usize, usize),
    layout: VideoLayout,
    block_size: usize,
) -> Plan {
    let first_frame = TokenSpan {
        start: 0.0,
        end: 1.0 / layout.frames as f64,
    };
    let cycle = [
        Pattern::Dense,
        Pattern::Diagonal { band: 1.0 },
        Pattern::MultiDiagonal {
            spatial_band: 0.05,
            frame_reach: layout.frames as u32,
        },
        Pattern::VerticalStripe {
            columns: vec![first_frame],
            band: Some(0.5),
        },
        Pattern::Diagonal { band: 2.0 },
        Pattern::Dense,
        Pattern::MultiDiagonal {
            spatial_band: 0.1,
            frame_reach: 4,
        },
        Pattern::Skip,
    ];
    let plan_layers = (0..layers)
        .map(|l| {
            (0..heads)
                .map(|h| cycle[(l + h) % cycle.len()].clone())
                .collect()
        })
        .collect();
    let mut plan = Plan::dense(
        ModelInfo {
            id: id.into(),
            config_hash: "none".into(),
            layers,
            heads,
            head_dim,
        },
        layout,
        1,
        Provenance {
            weights: "synthetic".into(),
            weights_hash: None,
            synthetic: true,
            date: iso_date_utc(std::time::SystemTime::now()),
            tool_version: format!("xtask bench {}", env!("CARGO_PKG_VERSION")),
            notes: "fixed mixed pattern cycle for timing, not a searched plan".into(),
        },
    );
    plan.block_size = block_size;
    plan.ranges = vec![StepRange {
        start: 0,
        end: 1,
        layers: plan_layers,
    }];
    plan
}

/// One denoiser step to time: the model, its latent and text.
struct StepCase {
    name: String,
    id: &'static str,
    config: ModelConfig,
    latent: [usize; 3],
    text_len: usize,
    valid_text: usize,
    notes: String,
}

/// HunyuanVideo's text: the pipeline pads every prompt to `max_sequence_length` 256 and
/// masks the padding; the bench uses 128 valid tokens (a longish prompt).
const HUNYUAN_VALID_TEXT: usize = 128;

fn step_case(model: StepModel, size: StepSize) -> Result<StepCase> {
    let tiny = [8, 32, 32];
    Ok(match (model, size) {
        (StepModel::Wan, StepSize::Real) => StepCase {
            name: "wan2.1-t2v-1.3b 480p x 81f".into(),
            id: "wan2.1-t2v",
            config: ModelConfig::Wan(WanConfig::wan2_1_t2v_1_3b()),
            latent: [21, 60, 104],
            text_len: 512,
            valid_text: 512,
            notes: "latent 21x60x104; self-attention over video only; 512 text tokens in cross-attention".into(),
        },
        (StepModel::Wan, StepSize::Tiny) => StepCase {
            name: "wan tiny (2 layers, 4x32) 8x32x32".into(),
            id: "wan2.1-t2v",
            config: ModelConfig::Wan(WanConfig::tiny()),
            latent: tiny,
            text_len: 16,
            valid_text: 16,
            notes: "latent 8x32x32; 16 text tokens in cross-attention".into(),
        },
        (StepModel::Hunyuan, StepSize::Real) => StepCase {
            name: "hunyuan-video 720p x 129f".into(),
            id: "hunyuan-video",
            config: ModelConfig::Hunyuan(HunyuanConfig::hunyuan_video_t2v()),
            latent: [33, 90, 160],
            text_len: 256,
            valid_text: HUNYUAN_VALID_TEXT,
            notes: format!(
                "latent 33x90x160; joint attention over video + 256 text tokens (text last; \
                 the pipeline's max length): {HUNYUAN_VALID_TEXT} valid, {} padding hidden as keys; \
                 20 dual + 40 single blocks; embedded guidance 6",
                256 - HUNYUAN_VALID_TEXT
            ),
        },
        (StepModel::Hunyuan, StepSize::Tiny) => StepCase {
            name: "hunyuan tiny (2+2 blocks, 4x16) 8x32x32".into(),
            id: "hunyuan-video",
            config: ModelConfig::Hunyuan(HunyuanConfig::tiny()),
            latent: tiny,
            text_len: 16,
            valid_text: 12,
            notes: "latent 8x32x32; joint attention over video + 16 text tokens (text last), 12 valid".into(),
        },
        (StepModel::Cogvideox, StepSize::Real) => StepCase {
            name: "cogvideox1.5-5b 1360x768 x 81f".into(),
            id: "cogvideox1.5-5b",
            config: ModelConfig::CogVideoX(CogVideoXConfig::cogvideox1_5_5b()),
            latent: [22, 96, 170],
            text_len: 226,
            valid_text: 226,
            notes: "latent [F, C, H, W] 22x16x96x170 (21 latent frames padded to 22); joint attention over 226 text tokens (first) + video".into(),
        },
        (StepModel::Cogvideox, StepSize::Tiny) => StepCase {
            name: "cogvideox tiny (2 layers, 4x16) 8x32x32".into(),
            id: "cogvideox1.5-5b",
            config: ModelConfig::CogVideoX(CogVideoXConfig::tiny()),
            latent: tiny,
            text_len: 16,
            valid_text: 16,
            notes: "latent 8x32x32; joint attention over 16 text tokens (first) + video".into(),
        },
    })
}

/// The models `args` ask for (see `--models`), each with the plan it runs.
fn step_models(
    args: &Args,
    gpu: bool,
    size: StepSize,
    plan: Option<&Plan>,
) -> Result<Vec<StepModel>> {
    let all = [StepModel::Wan, StepModel::Hunyuan, StepModel::Cogvideox];
    let models = match (args.models.is_empty(), plan) {
        (false, _) => {
            let mut m = args.models.clone();
            m.dedup();
            m
        }
        (true, Some(p)) => {
            let fitting: Vec<StepModel> = all
                .into_iter()
                .filter(|m| step_case(*m, size).is_ok_and(|c| c.config.check_plan(p).is_ok()))
                .collect();
            if fitting.is_empty() {
                anyhow::bail!(
                    "the plan ({} layers x {} heads x {}) fits none of wan, hunyuan, cogvideox at size {size:?}",
                    p.model.layers,
                    p.model.heads,
                    p.model.head_dim
                );
            }
            fitting
        }
        (true, None) if gpu => all.to_vec(),
        (true, None) => vec![StepModel::Wan],
    };
    if let Some(p) = plan {
        for m in &models {
            step_case(*m, size)?
                .config
                .check_plan(p)
                .with_context(|| format!("--plan with --models {}", m.key()))?;
        }
    }
    Ok(models)
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Times one denoiser step of each model, dense and with a plan. Each model (random
/// weights) is built, timed and dropped before the next, with
/// `[bench-model] begin|end <key> <unix ms>` markers on stderr for memory samplers.
#[allow(clippy::too_many_arguments)]
fn model_suite<B: ModelBackend + ReservedMemory>(
    device: &B::Device,
    models: &[StepModel],
    modes: &[StepMode],
    size: StepSize,
    dtype: DType,
    block_size: usize,
    repeats: usize,
    plan: Option<&Plan>,
) -> Result<Vec<ModelRow>> {
    let mut rows = Vec::new();
    for &m in models {
        eprintln!("[bench-model] begin {} {}", m.key(), unix_ms());
        let case = step_case(m, size)?;
        rows.extend(model_rows::<B>(
            device, &case, modes, dtype, block_size, repeats, plan,
        )?);
        // The model is dropped; give its memory back before the next one is built.
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
        B::memory_cleanup(device);
        eprintln!("[bench-model] end {} {}", m.key(), unix_ms());
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn model_rows<B: ModelBackend + ReservedMemory>(
    device: &B::Device,
    case: &StepCase,
    modes: &[StepMode],
    dtype: DType,
    block_size: usize,
    repeats: usize,
    plan_override: Option<&Plan>,
) -> Result<Vec<ModelRow>> {
    let name = &case.name;
    let layout = case.config.layout(case.latent, case.text_len)?;
    let plan = match plan_override {
        Some(p) => p.clone(),
        None => mixed_plan(case.id, case.config.plan_dims(), layout, block_size),
    };
    let plan_note = match plan_override {
        Some(_) => "given plan",
        None => "fixed mixed pattern plan",
    };
    // Start from empty pools so the reserved memory after the steps is this model's peak.
    B::memory_cleanup(device);
    eprintln!("building {name} with random weights ({dtype:?}) ...");
    let t0 = Instant::now();
    let model = Denoiser::<B>::random(&case.config, 0, dtype, device)?;
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
    eprintln!("  built in {:.1}s", t0.elapsed().as_secs_f64());
    let inputs = model.random_inputs(
        &RandomInputs {
            batch: 1,
            latent: case.latent,
            text_len: case.text_len,
            valid_text: case.valid_text,
            timestep: 500.0,
            seed: 1,
        },
        device,
    )?;
    let (layers, _, _) = case.config.plan_dims();
    let mut rows = Vec::new();
    let mut dense_ms = None;
    for mode in ["dense", "plan"] {
        let wanted = match mode {
            "dense" => modes.contains(&StepMode::Dense),
            _ => modes.contains(&StepMode::Plan),
        };
        if !wanted {
            continue;
        }
        let ctx = model.attention_context(
            case.latent,
            case.text_len,
            (mode == "plan").then_some(&plan),
        )?;
        let density = match ctx.plan() {
            None => 1.0,
            Some(p) => {
                let per_layer: Vec<f64> = (0..layers)
                    .map(|l| p.layer(0, l).map(|x| x.compiled().density()))
                    .collect::<Result<_, _>>()?;
                per_layer.iter().sum::<f64>() / per_layer.len() as f64
            }
        };
        let ms = time_ms::<B>(device, repeats, || {
            let out = model.step(&inputs, &ctx)?;
            drop(out);
            Ok(())
        })?;
        if mode == "dense" {
            dense_ms = Some(ms);
        }
        eprintln!("  {name} {mode}: {ms:.1} ms (attention density {density:.3})");
        let engine = match vdit_ops::last_linear_engine() {
            Some(e) => format!("{e:?}"),
            None => "none".into(),
        };
        let notes = if mode == "plan" {
            format!("{}; {plan_note}; Linear: {engine}", case.notes)
        } else {
            format!("{}; Linear: {engine}", case.notes)
        };
        rows.push(ModelRow {
            model: name.to_string(),
            tokens: layout.total_tokens(),
            mode: mode.into(),
            attention_density: density,
            ms,
            speedup: dense_ms.map(|d| d / ms),
            notes,
            peak_reserved_gib: B::reserved_bytes(device).map(|b| b as f64 / (1u64 << 30) as f64),
        });
    }
    Ok(rows)
}

/// The device allocator's reserved bytes, for the memory column of the step report.
pub(crate) trait ReservedMemory: burn::tensor::backend::Backend {
    /// Bytes reserved by the device allocator's pools (`None`: no device allocator).
    fn reserved_bytes(_device: &Self::Device) -> Option<u64> {
        None
    }
}

impl ReservedMemory for burn::backend::Flex {}

#[cfg(feature = "wgpu")]
impl ReservedMemory
    for burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>
{
}

#[cfg(feature = "cuda")]
impl ReservedMemory for burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8> {
    fn reserved_bytes(device: &Self::Device) -> Option<u64> {
        use cubecl::Runtime;
        cubecl::cuda::CudaRuntime::client(device)
            .memory_usage()
            .ok()
            .map(|u| u.bytes_reserved)
    }
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark: {} ({})\n", r.backend, r.device);
    let _ = writeln!(
        s,
        "- date {}, commit {}, dtype {}, block size {}\n- command: `{}`\n",
        r.date, r.commit, r.dtype, r.block_size, r.command
    );
    if !r.attention.is_empty() {
        let _ = writeln!(s, "## Attention (one layer, batch 1)\n");
        let _ = writeln!(
            s,
            "| case | pattern | params | density | ms | TFLOP/s (computed) | time / dense | per-block cost vs dense |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for a in &r.attention {
            let _ = writeln!(
                s,
                "| {} ({}x{}x{}) | {} | {} | {:.3} | {:.2} | {:.3} | {:.3} | {:.2} |",
                a.case,
                a.heads,
                a.tokens,
                a.head_dim,
                a.pattern,
                a.params,
                a.density,
                a.ms,
                a.tflops,
                a.time_vs_dense,
                a.cost_per_block_vs_dense
            );
        }
    }
    if !r.model.is_empty() {
        let _ = writeln!(s, "\n## Denoiser step (random weights, batch 1)\n");
        let _ = writeln!(
            s,
            "| model | tokens | attention | density | ms | speedup | peak reserved GiB | notes |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for m in &r.model {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.1} | {} | {} | {} |",
                m.model,
                m.tokens,
                m.mode,
                m.attention_density,
                m.ms,
                m.speedup
                    .map(|x| format!("{x:.2}x"))
                    .unwrap_or_else(|| "-".into()),
                m.peak_reserved_gib
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "-".into()),
                m.notes.replace('|', "\\|")
            );
        }
    }
    s
}

/// A small SVG scatter chart: time / dense against density, one colour per pattern kind.
fn svg_chart(rows: &[AttnRow]) -> String {
    let (w, h, pad) = (640.0, 420.0, 50.0);
    let kinds = [
        "diagonal",
        "multi_diagonal",
        "vertical_stripe",
        "dense",
        "burn_builtin",
    ];
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#000000", "#9467bd"];
    let x = |d: f64| pad + d.clamp(0.0, 1.0) * (w - 2.0 * pad);
    let ymax = rows.iter().map(|r| r.time_vs_dense).fold(1.2f64, f64::max);
    let y = |t: f64| h - pad - (t / ymax) * (h - 2.0 * pad);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#aaa\" stroke-dasharray=\"4\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">block density</text>\n\
         <text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">time / dense time</text>\n",
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        x(0.0),
        y(0.0),
        x(1.0),
        y(1.0),
        w / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    for (i, (k, c)) in kinds.iter().zip(colors).enumerate() {
        let _ = writeln!(
            s,
            "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{k}</text>",
            w - 170.0,
            pad + 16.0 * i as f64,
            w - 160.0,
            pad + 4.0 + 16.0 * i as f64
        );
    }
    for r in rows {
        let Some(i) = kinds.iter().position(|k| *k == r.pattern) else {
            continue;
        };
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\" fill-opacity=\"0.75\"><title>{} {} {} {:.2} ms</title></circle>",
            x(r.density),
            y(r.time_vs_dense),
            colors[i],
            r.case,
            r.pattern,
            r.params,
            r.ms
        );
    }
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t}</text>",
            x(t),
            h - pad + 16.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn calibrate(rows: &[AttnRow], device: &str, dtype: &str, block_size: usize) -> Result<CostTable> {
    let entries: Vec<CostEntry> = rows
        .iter()
        .filter(|r| r.pattern != "burn_builtin" && r.density > 0.0)
        .map(|r| -> Result<CostEntry> {
            let kind = match r.pattern.as_str() {
                "dense" => vdit_patterns::PatternKind::Dense,
                "diagonal" => vdit_patterns::PatternKind::Diagonal,
                "multi_diagonal" => vdit_patterns::PatternKind::MultiDiagonal,
                "vertical_stripe" => vdit_patterns::PatternKind::VerticalStripe,
                other => anyhow::bail!("unexpected pattern {other}"),
            };
            Ok(CostEntry {
                kind,
                head_dim: r.head_dim,
                tokens: r.tokens,
                heads: r.heads,
                density: r.density,
                latency_us: r.ms * 1e3,
            })
        })
        .collect::<Result<_>>()?;
    // Launch overhead: a share of the sparsest launch (band-0 diagonal), bounded so that it
    // never exceeds the smallest measured latency.
    let min_us = entries
        .iter()
        .map(|e| e.latency_us)
        .fold(f64::INFINITY, f64::min);
    Ok(CostTable {
        version: COST_TABLE_VERSION,
        device: device.to_string(),
        dtype: dtype.to_string(),
        block_size,
        launch_overhead_us: (0.5 * min_us).min(20.0),
        date: iso_date_utc(std::time::SystemTime::now()),
        tool_version: format!("xtask bench {}", env!("CARGO_PKG_VERSION")),
        notes: "measured by `cargo xtask bench --calibrate`; launch overhead estimated".into(),
        entries,
    })
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if args.calibrate && args.attention_dense_only {
        anyhow::bail!("--calibrate needs every pattern: drop --attention-dense-only");
    }
    super::checks::check_repeats("--repeats", args.repeats)?;
    let gpu = args.backend != BackendKind::Cpu;
    let dtype_name = args
        .dtype
        .clone()
        .unwrap_or_else(|| if gpu { "bf16" } else { "f32" }.into());
    let dtype = vdit_models::parse_dtype(&dtype_name)?;
    let block_size = if gpu { 128 } else { 64 };
    let date = iso_date_utc(std::time::SystemTime::now());
    let backend_name = format!("{:?}", args.backend).to_lowercase();
    let out = args.out.clone().unwrap_or_else(|| {
        super::project_root()
            .join("results/bench")
            .join(format!("{backend_name}-{date}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let device_name = if args.device_name.is_empty() {
        if gpu {
            "gpu (name not given)".into()
        } else {
            "cpu".to_string()
        }
    } else {
        args.device_name.clone()
    };
    let size = args
        .size
        .unwrap_or(if gpu { StepSize::Real } else { StepSize::Tiny });
    let plan = args
        .plan
        .as_deref()
        .map(|p| Plan::load(p).with_context(|| format!("loading plan {}", p.display())))
        .transpose()?;
    let models = if args.skip_model {
        Vec::new()
    } else {
        step_models(&args, gpu, size, plan.as_ref())?
    };
    let (attention, model) = with_backend!(args.backend, |B, device| {
        let attention = if args.skip_attention {
            Vec::new()
        } else {
            eprintln!("attention suite ({backend_name}, {dtype_name}, block {block_size}) ...");
            attention_suite::<B>(
                &device,
                gpu,
                dtype,
                block_size,
                args.repeats,
                args.attention_dense_only,
            )?
        };
        let model = if args.skip_model {
            Vec::new()
        } else {
            eprintln!("denoiser step suite ({size:?}) ...");
            model_suite::<B>(
                &device,
                &models,
                &args.modes,
                size,
                dtype,
                block_size,
                args.repeats,
                plan.as_ref(),
            )?
        };
        anyhow::Ok((attention, model))
    })?;
    let report = Report {
        backend: backend_name,
        device: device_name.clone(),
        dtype: dtype_name.clone(),
        date,
        commit: git_commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        block_size,
        attention,
        model,
    };
    let md = markdown(&report);
    write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    write_atomic(
        &out.join("attention.svg"),
        svg_chart(&report.attention).as_bytes(),
    )?;
    if args.calibrate {
        let table = calibrate(&report.attention, &device_name, &dtype_name, block_size)?;
        let path = args
            .cost_table
            .clone()
            .unwrap_or_else(|| out.join("cost_table.ron"));
        table.save(&path)?;
        eprintln!("cost table written to {}", path.display());
    }
    println!("{md}");
    eprintln!("report written to {}", out.display());
    Ok(())
}
