//! `cargo xtask search` (issue #8): search a per-layer, per-head sparse attention plan.
//!
//! With no arguments it runs the embedded default on the CPU: planted q/k/v of a tiny
//! Wan2.1-shaped setting (see `vdit_search::PlantedModel::tiny_wan`), and reports how
//! many planted heads the plan recovered. With `--captures` it searches capture files
//! (one per sample) written by any framework (`tools/write_captures.py` for PyTorch).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use vdit_search::{
    AnalyticCost, CandidateConfig, CaptureSource, CostModel, CostTable, PlanMeta, PlantedModel,
    Progress, QkvSource, SearchOptions, SearchReport, format_speedup, iso_date_utc,
    predict_speedup, search,
};

/// Arguments of `cargo xtask search`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Capture files (safetensors with q/k/v.{step}.{layer}); several files are several
    /// samples, aggregated by the worst case per head. Without it, the embedded planted
    /// default runs.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    captures: Vec<PathBuf>,
    /// Plan file to write (RON); default `results/search/<model>.plan.ron`.
    #[arg(long, value_name = "PLAN.ron")]
    out: Option<PathBuf>,
    /// JSON report to write [default: next to the plan, .report.json].
    #[arg(long, value_name = "R.json")]
    report: Option<PathBuf>,
    /// Error threshold: heads whose every candidate loss exceeds it stay dense.
    #[arg(long, allow_negative_numbers = true, default_value_t = SearchOptions::default().epsilon)]
    epsilon: f64,
    /// Weight of the cost term (loss = error + lambda * cost / dense cost).
    #[arg(long, allow_negative_numbers = true, default_value_t = SearchOptions::default().lambda)]
    lambda: f64,
    /// Find epsilon by bisection so that the predicted attention speedup is this.
    #[arg(long, value_name = "X")]
    target_speedup: Option<f64>,
    /// Allowed relative deviation from --target-speedup.
    #[arg(long, default_value_t = 0.05)]
    target_tolerance: f64,
    /// Block size of the block masks (64 or 128).
    #[arg(long, default_value_t = 64)]
    block_size: usize,
    /// Leading steps kept dense [default: 0; embedded default: 10].
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Number of equal step ranges after the warm-up, each with its own decisions
    /// [default: 1; embedded default: 2].
    #[arg(long)]
    ranges: Option<usize>,
    /// Steps in the schedule [default: last captured step + 1; embedded default: 50].
    #[arg(long)]
    total_steps: Option<usize>,
    /// Cost model and candidate options.
    #[command(flatten)]
    tuning: Box<Tuning>,
    /// Model id stored in the plan [default: the capture metadata's `model`].
    #[arg(long)]
    model_id: Option<String>,
    /// Weights the captures came from (provenance) [default: the capture file names].
    #[arg(long)]
    weights: Option<String>,
    /// Hash of those weights (provenance).
    #[arg(long)]
    weights_hash: Option<String>,
    /// The captures come from synthetic or random weights (provenance).
    #[arg(long)]
    synthetic: bool,
    /// Also price the plan at this layout, FRAMESxHEIGHTxWIDTH in latent tokens
    /// (patterns are layout-relative) [embedded default: 21x30x52, Wan2.1 480p].
    #[arg(long, value_name = "TxHxW")]
    predict_layout: Option<String>,
    /// Model-driven search options.
    #[command(flatten)]
    model: Box<ModelRun>,
    /// Instead of searching, measure the error of this plan on the captures (worst case
    /// per head) and its predicted speedup.
    #[arg(long, value_name = "PLAN.ron", requires = "captures")]
    evaluate: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Model-driven search: the model, its run and the observed steps.
#[derive(Debug, clap::Args)]
struct ModelRun {
    /// Model-driven search (greedy, mixed output propagated through the model): a
    /// diffusers model directory (Wan2.1, HunyuanVideo or CogVideoX1.5).
    #[arg(long, conflicts_with = "captures", value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Model-driven search on a preset config with random weights (`wan2.1-t2v-1.3b`,
    /// `wan2.1-t2v-14b`, `hunyuan-video`, `cogvideox1.5-5b`, tiny ones for tests): for
    /// testing the pipeline, the plan is marked synthetic.
    #[arg(long, conflicts_with_all = ["captures", "model_dir"])]
    preset: Option<String>,
    /// Seed of the random weights (with --preset).
    #[arg(long, default_value_t = 0)]
    weights_seed: u64,
    /// Backend of the model run (cpu, wgpu, cuda; GPU ones need the xtask feature).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: super::forward::BackendKind,
    /// Model float dtype (f32, bf16, f16).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Latent size FRAMESxHEIGHTxWIDTH before patching (e.g. 21x60x104 for Wan 480p).
    #[arg(long, value_name = "FxHxW")]
    latent: Option<String>,
    /// Text embeddings (safetensors with `encoder_hidden_states` [1, L, text_dim]) for
    /// Wan2.1 and CogVideoX; without it, every sample gets seeded random embeddings (and,
    /// for HunyuanVideo, a padded text mask with half the tokens valid, pooled text and
    /// guidance 6).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Text tokens of random embeddings [default: the model's pipeline length: Wan2.1
    /// 512, HunyuanVideo 256, CogVideoX 226].
    #[arg(long)]
    text_len: Option<usize>,
    /// Model-driven search: steps of the schedule (flow-matching Euler for Wan2.1 and
    /// HunyuanVideo, the CogVideoX DDIM scheduler for CogVideoX).
    #[arg(long, default_value_t = 50)]
    schedule_steps: usize,
    /// Model-driven search: flow shift of the schedule [default: Wan2.1 3, HunyuanVideo 7].
    #[arg(long)]
    flow_shift: Option<f64>,
    /// Model-driven search: steps whose attention is observed (comma separated)
    /// [default: one per range, in its middle].
    #[arg(long, value_delimiter = ',')]
    capture_steps: Option<Vec<usize>>,
    /// Model-driven search: noise seeds, one sample each (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Model-driven search: after the search, time the plan's attention (every layer of
    /// every step range, on random q/k/v of the model's shape and dtype) against dense
    /// attention on the same backend, and add the measured speedup to the report.
    #[arg(long)]
    measure_attention: bool,
    /// Timed repetitions of `--measure-attention` (median).
    #[arg(long, default_value_t = 3)]
    measure_repeats: usize,
}

/// Cost model and candidate options.
#[derive(Debug, clap::Args)]
struct Tuning {
    /// Cost table (RON) from `cargo xtask bench --calibrate`; without it the analytic
    /// model prices patterns.
    #[arg(long, value_name = "FILE")]
    cost_table: Option<PathBuf>,
    /// Analytic model: dense throughput in TFLOP/s.
    #[arg(long, default_value_t = AnalyticCost::default().tflops)]
    analytic_tflops: f64,
    /// Analytic model: launch overhead per layer in microseconds.
    #[arg(long, default_value_t = AnalyticCost::default().launch_us)]
    launch_us: f64,
    /// Diagonal band candidates (fractions of a frame), comma separated.
    #[arg(long, value_delimiter = ',')]
    diagonal_bands: Option<Vec<f64>>,
    /// Multi-diagonal spatial band candidates (fractions of a frame), comma separated.
    #[arg(long, value_delimiter = ',')]
    multi_spatial_bands: Option<Vec<f64>>,
    /// Vertical-stripe attention-mass coverages, comma separated (empty disables stripes).
    #[arg(long, value_delimiter = ',')]
    stripe_coverages: Option<Vec<f64>>,
    /// Never skip heads.
    #[arg(long)]
    no_skip: bool,
    /// Query rows sampled per head to estimate attention mass per key block.
    #[arg(long, default_value_t = CandidateConfig::default().mass_rows)]
    mass_rows: usize,
}

/// The progress bar, and whether to print progress lines instead (stderr is not a
/// terminal — logs, the GPU machine — so the bar is invisible, and not `--quiet`).
struct Bar(ProgressBar, bool);

impl Bar {
    fn new(bar: ProgressBar, quiet: bool) -> Self {
        use std::io::IsTerminal;
        Bar(bar, !quiet && !std::io::stderr().is_terminal())
    }

    fn log_line(&self) {
        if !self.1 {
            return;
        }
        eprintln!(
            "[search] {}: {}/{} layer-inputs after {:.1} s",
            self.0.message(),
            self.0.position(),
            self.0.length().unwrap_or(0),
            self.0.elapsed().as_secs_f64()
        );
    }
}

impl Progress for Bar {
    fn begin(&self, total: u64, what: &str) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(what.to_string());
        self.0.reset_eta();
        self.log_line();
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
        self.log_line();
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    super::checks::configure_threads(args.threads)?;
    if let Some(t) = args.total_steps {
        super::checks::check_steps("--total-steps", t)?;
    }
    if args.model.model_dir.is_some() || args.model.preset.is_some() {
        return super::forward::with_backend!(args.model.backend, |B, device| run_model::<B>(
            args, device
        ));
    }
    if let Some(plan_path) = &args.evaluate {
        return evaluate(&args, plan_path);
    }
    let embedded = args.captures.is_empty();
    let planted = PlantedModel::tiny_wan();
    let base = if embedded {
        PlantedModel::default_search_options()
    } else {
        SearchOptions::default()
    };
    let mut opts = SearchOptions {
        lambda: args.lambda,
        epsilon: args.epsilon,
        block_size: args.block_size,
        warmup_steps: args.warmup_steps.unwrap_or(base.warmup_steps),
        ranges: args.ranges.unwrap_or(base.ranges),
        total_steps: args.total_steps.or(base.total_steps),
        target_speedup: args.target_speedup,
        target_tolerance: args.target_tolerance,
        candidates: CandidateConfig::default(),
    };
    let c = &mut opts.candidates;
    if let Some(b) = args.tuning.diagonal_bands.clone() {
        c.diagonal_bands = b;
    }
    if let Some(b) = args.tuning.multi_spatial_bands.clone() {
        c.multi_spatial_bands = b;
    }
    if let Some(s) = args.tuning.stripe_coverages.clone() {
        c.stripe_coverages = s;
    }
    c.skip = !args.tuning.no_skip;
    c.mass_rows = args.tuning.mass_rows;

    let cost = match &args.tuning.cost_table {
        Some(path) => CostModel::Table {
            table: CostTable::load(path)?,
            source: path.display().to_string(),
        },
        None => CostModel::Analytic(AnalyticCost {
            tflops: args.tuning.analytic_tflops,
            launch_us: args.tuning.launch_us,
            ..AnalyticCost::default()
        }),
    };
    if let CostModel::Analytic(a) = &cost
        && !(a.tflops.is_finite()
            && a.tflops > 0.0
            && a.launch_us.is_finite()
            && a.launch_us >= 0.0)
    {
        bail!("--analytic-tflops must be > 0 and --launch-us >= 0");
    }

    let (out, report_path) = output_paths(&args, &embedded_or_capture_name(&args, &planted))?;
    let mut inputs_checked: Vec<(&str, &std::path::Path)> = args
        .captures
        .iter()
        .map(|p| ("--captures", p.as_path()))
        .collect();
    if let Some(t) = &args.tuning.cost_table {
        inputs_checked.push(("--cost-table", t.as_path()));
    }
    super::checks::check_outputs(
        &[
            ("--out", out.as_path()),
            ("--report", report_path.as_path()),
        ],
        &inputs_checked,
    )?;

    let mut captures;
    let mut planted_source;
    let (source, inputs): (&mut dyn QkvSource, Vec<String>) = if embedded {
        planted_source = planted.clone();
        (
            &mut planted_source,
            vec!["embedded planted q/k/v (vdit_search::PlantedModel::tiny_wan)".into()],
        )
    } else {
        captures = CaptureSource::open(&args.captures)?;
        let names = args
            .captures
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        (&mut captures, names)
    };
    let info = source.info();
    let model_id = args.model_id.clone().unwrap_or_else(|| info.model.clone());
    let provenance = vdit_patterns::Provenance {
        weights: match (&args.weights, embedded) {
            (Some(w), _) => w.clone(),
            (None, true) => "synthetic".into(),
            (None, false) => format!("captures: {}", inputs.join(", ")),
        },
        weights_hash: args.weights_hash.clone(),
        synthetic: embedded || args.synthetic,
        date: iso_date_utc(std::time::SystemTime::now()),
        tool_version: format!("cargo xtask search {}", env!("CARGO_PKG_VERSION")),
        notes: if embedded {
            "planted q/k/v constructed in code (no model weights): a test of the search, not a plan for a real model".into()
        } else {
            "searched on fixed captured q/k/v (mixed output not propagated)".into()
        },
    };

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} layer-inputs ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    eprintln!(
        "searching {} ({} layers x {} heads, head_dim {}, layout {}x{}x{} + {} text, {} sample(s), steps {:?}) with {}",
        model_id,
        info.layers,
        info.heads,
        info.head_dim,
        info.layout.frames,
        info.layout.height,
        info.layout.width,
        info.layout.text,
        info.samples,
        info.steps,
        cost.reference().device,
    );
    let outcome = search(
        source,
        &opts,
        &cost,
        PlanMeta {
            model_id: model_id.clone(),
            config_hash: "none".into(),
            provenance,
        },
        &Bar::new(bar, args.quiet),
    )?;

    let mut report = SearchReport::new(&outcome, inputs);
    let recovery = embedded.then(|| planted.recovery(&outcome.plan));
    if let Some(r) = &recovery {
        report
            .extra
            .insert("planted_recovery".into(), serde_json::to_value(r)?);
    }

    let predict = match (&args.predict_layout, embedded) {
        (Some(s), _) => Some(parse_layout(s, &info.layout)?),
        (None, true) => Some(vdit_patterns::VideoLayout::new(21, 30, 52)?),
        (None, false) => None,
    };
    let predicted_at = match predict {
        Some(layout) => {
            let s = predict_speedup(&outcome.plan, &layout, &cost)?;
            report.extra.insert(
                "predicted_speedup_at".into(),
                serde_json::json!({ "layout": layout, "predicted_speedup": s }),
            );
            Some((layout, s))
        }
        None => None,
    };

    write_outputs(&outcome.plan, &report, &out, &report_path)?;

    print_summary(&outcome, opts.lambda, &report, &out, &report_path);
    if let Some((l, s)) = predicted_at {
        println!(
            "the same plan at {}x{}x{} (+{} text): predicted attention speedup {}",
            l.frames,
            l.height,
            l.width,
            l.text,
            format_speedup(s)
        );
    }
    if let Some(r) = recovery {
        println!("planted heads recovered: {}/{}", r.recovered, r.total);
        for m in &r.mismatches {
            println!(
                "  step {} layer {} head {}: planted {}, chose {}",
                m.step_start, m.layer, m.head, m.planted, m.chosen
            );
        }
    }
    Ok(())
}

/// The model name the embedded or capture search will store (for the default output
/// name), read before the search so that the outputs can be checked first.
fn embedded_or_capture_name(args: &Args, planted: &PlantedModel) -> String {
    if let Some(id) = &args.model_id {
        return id.clone();
    }
    if args.captures.is_empty() {
        return planted.info().model;
    }
    // The search fails later with the capture's own error if this file is unreadable.
    vdit_search::CaptureFile::open(&args.captures[0])
        .map(|f| f.meta().model.clone())
        .unwrap_or_else(|_| "capture".into())
}

/// `--out` and `--report`, or their defaults: `results/search/<model>.plan.ron` in the
/// project (that folder is created; a folder given on the command line never is) and
/// the plan's name with `.report.json`.
fn output_paths(args: &Args, model: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let slug: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            let dir = super::project_root().join("results/search");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.join(format!("{slug}.plan.ron"))
        }
    };
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| out.with_extension("").with_extension("report.json"));
    Ok((out, report))
}

/// Writes the plan and its report together: both are staged as temporaries first and
/// renamed only when both were written, so a failure leaves any previous plan intact.
fn write_outputs(
    plan: &vdit_patterns::Plan,
    report: &SearchReport,
    out: &std::path::Path,
    report_path: &std::path::Path,
) -> anyhow::Result<()> {
    let plan_text = plan.to_ron_string()?;
    let report_text = report.to_json(report_path)?;
    let mut set = vdit_patterns::OutputSet::new();
    set.stage(out, plan_text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    set.stage(report_path, report_text.as_bytes())
        .with_context(|| format!("writing {}", report_path.display()))?;
    set.commit().with_context(|| {
        format!(
            "renaming {} and {} into place",
            out.display(),
            report_path.display()
        )
    })
}

/// Parses `TxHxW` into a layout with the text of `like` (same text count and position).
fn parse_layout(
    s: &str,
    like: &vdit_patterns::VideoLayout,
) -> anyhow::Result<vdit_patterns::VideoLayout> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--predict-layout {s:?} is not FRAMESxHEIGHTxWIDTH"))?;
    let &[t, h, w] = dims.as_slice() else {
        bail!("--predict-layout {s:?} is not FRAMESxHEIGHTxWIDTH");
    };
    Ok(vdit_patterns::VideoLayout::new(t, h, w)?.with_text(like.text, like.text_position)?)
}

/// `cargo xtask search --model-dir DIR | --preset P`: greedy search through the model.
fn run_model<B: vdit_models::ModelBackend>(args: Args, device: B::Device) -> anyhow::Result<()> {
    // Evaluate candidates with the GPU kernels too (same block tables as the CPU path),
    // on each sample's worker thread.
    let layer_runner: Option<std::sync::Arc<dyn vdit_search::eval::LayerRunner>> =
        if args.model.backend != super::forward::BackendKind::Cpu {
            let dtype = vdit_models::parse_dtype(&args.model.dtype)?;
            Some(std::sync::Arc::new(
                vdit_search::eval::BurnLayerRunner::<B>::new(device.clone(), dtype),
            ))
        } else {
            None
        };
    let model_args = super::forward::ModelArgs {
        model_dir: args.model.model_dir.clone(),
        preset: args.model.preset.clone(),
        random_weights: args.model.preset.is_some(),
        weights_seed: args.model.weights_seed,
        backend: args.model.backend,
        dtype: args.model.dtype.clone(),
        plan: None,
    };
    super::checks::check_steps("--schedule-steps", args.model.schedule_steps)?;
    super::checks::check_repeats("--measure-repeats", args.model.measure_repeats)?;
    let config = super::forward::resolve_config(&model_args)?;
    let class = config.class();
    let latent = super::forward::parse_latent(
        args.model
            .latent
            .as_deref()
            .context("--latent FxHxW is required for a model-driven search")?,
    )?;
    let text_file = match &args.model.text {
        Some(p) => {
            if class == vdit_models::ModelClass::HunyuanVideo {
                bail!(
                    "--text is not supported for HunyuanVideo (it needs a mask, pooled text and guidance): leave it out for random inputs"
                );
            }
            Some(
                vdit_models::io::TensorMap::read(p)
                    .with_context(|| format!("reading {}", p.display()))?,
            )
        }
        None => None,
    };
    let text_len = match &text_file {
        Some(t) => {
            let shape = t
                .get("encoder_hidden_states")
                .context("the --text file has no `encoder_hidden_states`")?
                .shape
                .clone();
            *shape
                .get(1)
                .context("`encoder_hidden_states` must be [1, tokens, text_dim]")?
        }
        None => args
            .model
            .text_len
            .unwrap_or(super::forward::class_defaults(class).text_len),
    };
    if text_len == 0 {
        bail!("--text-len must be positive (the text has no tokens)");
    }
    super::checks::check_host_elements(
        "--latent",
        &[config.in_channels(), latent[0], latent[1], latent[2]],
    )?;
    super::checks::check_host_elements("--text-len", &[text_len, config.text_dim()])?;
    let layout = config.layout(latent, text_len)?;
    let (layers, heads, head_dim) = config.plan_dims();
    let name_for_paths = args
        .model_id
        .clone()
        .or_else(|| args.model.preset.clone())
        .unwrap_or_else(|| class.class_name().to_string());
    let (out, report_path) = output_paths(&args, &name_for_paths)?;
    {
        let config_json = args.model.model_dir.as_ref().map(|d| d.join("config.json"));
        let mut inputs: Vec<(&str, &std::path::Path)> = Vec::new();
        if let Some(t) = &args.model.text {
            inputs.push(("--text", t));
        }
        if let Some(t) = &args.tuning.cost_table {
            inputs.push(("--cost-table", t));
        }
        if let Some(c) = &config_json {
            inputs.push(("--model-dir config.json", c));
        }
        super::checks::check_outputs(
            &[
                ("--out", out.as_path()),
                ("--report", report_path.as_path()),
            ],
            &inputs,
        )?;
    }
    if args.model.seeds.is_empty() {
        bail!("--seeds needs at least one seed");
    }
    let warmup = args.warmup_steps.unwrap_or(0);
    let ranges = args.ranges.unwrap_or(1);
    let total = args.model.schedule_steps;
    if warmup >= total || ranges == 0 || ranges > total - warmup {
        bail!("--warmup-steps {warmup} and --ranges {ranges} do not fit {total} schedule steps");
    }
    let capture_steps = args.model.capture_steps.clone().unwrap_or_else(|| {
        (0..ranges)
            .map(|r| warmup + (2 * r + 1) * (total - warmup) / (2 * ranges))
            .collect()
    });
    if let Some(s) = capture_steps.iter().find(|&&s| s >= total) {
        bail!("--capture-steps {s} is outside the {total}-step schedule");
    }
    let flow_shift = args.model.flow_shift.unwrap_or(match class {
        vdit_models::ModelClass::HunyuanVideo => 7.0,
        _ => 3.0,
    });
    if class == vdit_models::ModelClass::CogVideoX && args.model.flow_shift.is_some() {
        bail!("--flow-shift does not apply to CogVideoX (its DDIM scheduler has no shift)");
    }
    let name = args
        .model_id
        .clone()
        .or_else(|| args.model.preset.clone())
        .unwrap_or_else(|| class.class_name().to_string());
    let info = vdit_search::SourceInfo {
        model: name.clone(),
        layout,
        layers,
        heads,
        head_dim,
        samples: args.model.seeds.len(),
        steps: capture_steps,
    };
    // Each sample's runner is built on its worker thread, which then does all of that
    // sample's device work (CubeCL streams and memory pools are per thread).
    let seeds = args.model.seeds.clone();
    let worker_device = device.clone();
    let make = move |sample: usize| -> Result<vdit_pipelines::DenoiserRunner<B>, vdit_search::SearchError> {
        let err = |e: anyhow::Error| vdit_search::SearchError::Source(format!("{e:#}"));
        let device = worker_device.clone();
        let model = super::forward::load_denoiser::<B>(&model_args, &device).map_err(err)?;
        let mut inputs = model
            .random_inputs(
                &super::forward::RandomInputs {
                    batch: 1,
                    latent,
                    text_len,
                    valid_text: super::forward::default_valid_text(text_len),
                    timestep: 0.0,
                    seed: seeds[sample],
                },
                &device,
            )
            .map_err(|e| err(e.into()))?;
        if let Some(t) = &text_file {
            let given = t
                .float("encoder_hidden_states", model.dtype(), &device)
                .map_err(|e| err(e.into()))?;
            match &mut inputs {
                super::forward::StepInputs::Wan { text, .. }
                | super::forward::StepInputs::CogVideoX { text, .. } => *text = given,
                super::forward::StepInputs::Hunyuan(_) => unreachable!("refused above"),
            }
        }
        Ok(vdit_pipelines::DenoiserRunner {
            model,
            inputs,
            latent,
            text_len,
            schedule_steps: total,
            flow_shift,
            device,
        })
    };
    let measure_device = device;
    let mut source = vdit_search::ModelSource::new(info, make);
    if let Some(runner) = layer_runner {
        source = source.with_layer_runner(runner);
    }
    let opts = SearchOptions {
        lambda: args.lambda,
        epsilon: args.epsilon,
        block_size: args.block_size,
        warmup_steps: warmup,
        ranges,
        total_steps: Some(total),
        target_speedup: args.target_speedup,
        target_tolerance: args.target_tolerance,
        candidates: CandidateConfig::default(),
    };
    let cost = match &args.tuning.cost_table {
        Some(path) => CostModel::Table {
            table: CostTable::load(path)?,
            source: path.display().to_string(),
        },
        None => CostModel::Analytic(AnalyticCost {
            tflops: args.tuning.analytic_tflops,
            launch_us: args.tuning.launch_us,
            ..AnalyticCost::default()
        }),
    };
    let synthetic = args.model.preset.is_some() || args.synthetic;
    let provenance = vdit_patterns::Provenance {
        weights: match (&args.model.model_dir, &args.model.preset) {
            (Some(d), _) => d.display().to_string(),
            (None, Some(p)) => format!("random (preset {p}, seed {})", args.model.weights_seed),
            _ => unreachable!("checked by the caller"),
        },
        weights_hash: args.weights_hash.clone(),
        synthetic,
        date: iso_date_utc(std::time::SystemTime::now()),
        tool_version: format!("cargo xtask search {}", env!("CARGO_PKG_VERSION")),
        notes: format!(
            "model-driven greedy search (mixed output propagated), {} {} steps, seeds {:?}, {} text, conditional branch only",
            match class {
                vdit_models::ModelClass::CogVideoX => "CogVideoX DDIM".to_string(),
                _ => format!("flow Euler shift {flow_shift}"),
            },
            total,
            args.model.seeds,
            if args.model.text.is_some() {
                "given"
            } else {
                "random"
            }
        ),
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} layer-inputs ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let outcome = search(
        &mut source,
        &opts,
        &cost,
        PlanMeta {
            model_id: name.clone(),
            config_hash: "none".into(),
            provenance,
        },
        &Bar::new(bar, args.quiet),
    )?;
    let inputs = vec![format!("model run: {}", outcome.plan.provenance.weights)];
    let mut report = SearchReport::new(&outcome, inputs);
    drop(source); // ends the model threads and frees their device memory
    if args.model.measure_attention {
        let m = measure_attention::<B>(
            &outcome.plan,
            vdit_models::parse_dtype(&args.model.dtype)?,
            &measure_device,
            args.model.measure_repeats,
        )?;
        println!(
            "measured attention per step: dense {:.1} ms, plan {:.1} ms: {} (predicted {})",
            m.dense_ms,
            m.plan_ms,
            format_speedup(m.dense_ms / m.plan_ms),
            format_speedup(outcome.predicted_speedup)
        );
        report
            .extra
            .insert("measured_attention".into(), serde_json::to_value(&m)?);
    }
    write_outputs(&outcome.plan, &report, &out, &report_path)?;
    print_summary(&outcome, opts.lambda, &report, &out, &report_path);
    Ok(())
}

/// The lines every search prints after writing its plan and report.
fn print_summary(
    outcome: &vdit_search::SearchOutcome,
    lambda: f64,
    report: &SearchReport,
    out: &Path,
    report_path: &Path,
) {
    let t = &report.totals;
    println!(
        "plan: {} ({} ranges), report: {}",
        out.display(),
        outcome.plan.ranges.len(),
        report_path.display()
    );
    println!(
        "epsilon {:.4}, lambda {lambda}: attention density {:.3}, predicted attention speedup {} ({}), search {:.1} s",
        outcome.epsilon,
        t.attention_density,
        format_speedup(t.predicted_speedup),
        report.cost_model.device,
        t.search_wall_time_s
    );
    println!("search time by phase: {}", outcome.phase_times);
    let counts: Vec<String> = t
        .pattern_counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("decisions: {}", counts.join(", "));
}

/// `--evaluate PLAN --captures ...`: the plan's per-head error on the captures.
fn evaluate(args: &Args, plan_path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(r) = &args.report {
        let mut inputs: Vec<(&str, &std::path::Path)> = vec![("--evaluate", plan_path)];
        inputs.extend(args.captures.iter().map(|p| ("--captures", p.as_path())));
        if let Some(t) = &args.tuning.cost_table {
            inputs.push(("--cost-table", t.as_path()));
        }
        super::checks::check_outputs(&[("--report", r.as_path())], &inputs)?;
    }
    let plan = vdit_patterns::Plan::load(plan_path)
        .with_context(|| format!("loading plan {}", plan_path.display()))?;
    let mut source = CaptureSource::open(&args.captures)?;
    let cost = match &args.tuning.cost_table {
        Some(path) => CostModel::Table {
            table: CostTable::load(path)?,
            source: path.display().to_string(),
        },
        None => CostModel::Analytic(AnalyticCost::default()),
    };
    let eval = vdit_search::evaluate_plan(&mut source, &plan, &cost)?;
    let heads: Vec<serde_json::Value> = eval
        .heads
        .iter()
        .map(|(s, l, h, k, e)| {
            serde_json::json!({"step_start": s, "layer": l, "head": h, "pattern": k.name(), "error": e})
        })
        .collect();
    // NaN-propagating maximum: an error that is not a number must not read as 0.
    let worst = eval.heads.iter().map(|h| h.4).fold(0.0, |m: f64, e| {
        if m.is_nan() || e.is_nan() {
            f64::NAN
        } else {
            m.max(e)
        }
    });
    let over = eval
        .heads
        .iter()
        .filter(|h| h.4 > plan.search.epsilon)
        .count();
    println!(
        "plan {}: {} heads evaluated, worst error {worst:.3e}, {over} above the plan's epsilon {}, predicted speedup {} at {}x{}x{}",
        plan_path.display(),
        eval.heads.len(),
        plan.search.epsilon,
        format_speedup(eval.predicted_speedup),
        plan.layout.frames,
        plan.layout.height,
        plan.layout.width
    );
    if let Some(r) = &args.report {
        let doc = serde_json::json!({
            "plan": plan_path.display().to_string(),
            "captures": args.captures.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "heads": heads,
            "worst_error": worst,
            "predicted_speedup": eval.predicted_speedup,
        });
        vdit_patterns::write_atomic(r, serde_json::to_string_pretty(&doc)?.as_bytes())
            .with_context(|| format!("writing {}", r.display()))?;
    }
    Ok(())
}

/// Attention time of one denoising step, dense and with a plan (mean over the plan's
/// steps), measured on a backend.
#[derive(Debug, serde::Serialize)]
struct MeasuredAttention {
    /// Backend and dtype.
    backend: String,
    /// Dense attention of all layers, per step (ms).
    dense_ms: f64,
    /// The plan's attention of all layers, per step (ms, weighted by range length).
    plan_ms: f64,
    /// `dense_ms / plan_ms`.
    speedup: f64,
    /// Timed repetitions (median).
    repeats: usize,
    /// What was timed.
    method: String,
}

/// Times every layer of every step range of `plan` (one launch per layer) on random
/// q/k/v of the plan's shape, and the same number of dense layers.
fn measure_attention<B: vdit_attention::SparseAttentionBackend>(
    plan: &vdit_patterns::Plan,
    dtype: burn::tensor::DType,
    device: &B::Device,
    repeats: usize,
) -> anyhow::Result<MeasuredAttention> {
    use burn::tensor::{Distribution, Tensor};
    use vdit_attention::{AttentionPlan, PreparedLayer};
    let (heads, d) = (plan.model.heads, plan.model.head_dim);
    let n = plan.layout.total_tokens();
    let compiled = AttentionPlan::new(plan.clone(), plan.layout)?;
    let dense = PreparedLayer::dense(heads, &plan.layout, plan.block_size)?;
    B::seed(device, 7);
    let t = || {
        Tensor::<B, 4>::random([1, heads, n, d], Distribution::Uniform(-1.0, 1.0), device)
            .cast(dtype)
    };
    let (q, k, v) = (t(), t(), t());
    // One step's attention: every layer once, median over `repeats` after a warm-up.
    let run_layers = |layers: &[&PreparedLayer]| {
        super::bench::time_ms::<B>(device, repeats, || {
            for layer in layers {
                B::sparse_attention(q.clone(), k.clone(), v.clone(), layer, &Default::default())?;
            }
            Ok(())
        })
    };
    let layers = plan.model.layers;
    let dense_ms = run_layers(&vec![&dense; layers])?;
    let (mut plan_ms, mut steps) = (0.0, 0);
    for r in &plan.ranges {
        let len = r.end - r.start;
        let range_layers = (0..layers)
            .map(|l| compiled.layer(r.start, l))
            .collect::<Result<Vec<_>, _>>()?;
        let ms = run_layers(&range_layers)?;
        plan_ms += ms * len as f64;
        steps += len;
    }
    let plan_ms = plan_ms / steps.max(1) as f64;
    Ok(MeasuredAttention {
        backend: format!("{} {dtype:?}", B::name(device)),
        dense_ms,
        plan_ms,
        speedup: dense_ms / plan_ms,
        repeats,
        method: format!(
            "all {layers} layers of a step, one launch each, random uniform q/k/v [1, {heads}, {n}, {d}], median of {repeats} after a warm-up; plan time weighted by step-range length"
        ),
    })
}
