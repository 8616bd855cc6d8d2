//! `cargo xtask quality`: a plan's effect on Wan2.1 videos. Every prompt is generated
//! dense and with `--plan` (same seed); `vdit_pipelines::quality` compares the frames
//! (PSNR, SSIM per prompt and mean; LPIPS absent) and writes the JSON report, a Markdown
//! report and a PNG chart beside it (`--out report.json` -> `report.md`, `report.png`),
//! all renamed into place together after the run. This file parses the arguments and
//! shows progress.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use vdit_models::ModelBackend;
use vdit_pipelines::T2vRequest;
use vdit_pipelines::quality::{
    BUILTIN_PROMPTS, QualityFiles, QualityProgress, QualityRequest, read_prompts, run_quality,
};

use super::forward::{ModelArgs, ModelConfig, with_backend};
use super::t2v_generate::{T2vBars, load_pipeline};

/// Arguments of `cargo xtask quality`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompts, one per line (`#` comments and blank lines skipped). Default: three
    /// built-in prompts.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Negative prompt of every run (default "").
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// The JSON report; the Markdown report and the PNG chart are written beside it
    /// (same name, `.md` and `.png`).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write every video's frames as PNG under `DIR/pNN/{dense,planned}/`.
    #[arg(long)]
    pub frames_dir: Option<PathBuf>,
    /// Denoising steps (the plan must cover them).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 = none).
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// Flow shift (3.0 at 480p, 5.0 at 720p).
    #[arg(long, default_value_t = 3.0)]
    pub shift: f64,
    /// Seed of the first prompt; prompt i uses seed + i (dense and planned alike).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Video frames (4k+1). Default 81 (`wan-tiny`: 9).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Video height in pixels (multiple of 8). Default 480 (`wan-tiny`: 64).
    #[arg(long)]
    pub height: Option<usize>,
    /// Video width in pixels (multiple of 8). Default 832 (`wan-tiny`: 64).
    #[arg(long)]
    pub width: Option<usize>,
    /// Text tokens per prompt (Wan: 512).
    #[arg(long, default_value_t = 512)]
    pub text_len: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if args.model.plan.is_none() {
        bail!("quality compares a plan with dense attention: give --plan");
    }
    super::checks::check_steps("--steps", args.steps)?;
    if !args.guidance.is_finite() {
        bail!("--guidance must be finite, got {}", args.guidance);
    }
    if !(args.shift.is_finite() && args.shift > 0.0) {
        bail!("--shift must be positive, got {}", args.shift);
    }
    let files = QualityFiles {
        json: args.out.clone(),
        frames_dir: args.frames_dir.clone(),
    };
    let ext = args.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !ext.eq_ignore_ascii_case("json") {
        bail!(
            "--out must be a .json file (the .md and .png go beside it), got {}",
            args.out.display()
        );
    }
    let report_paths = files.report_paths();
    let outputs: Vec<(&str, &std::path::Path)> = vec![
        ("--out", report_paths[0].as_path()),
        ("--out (.md)", report_paths[1].as_path()),
        ("--out (.png)", report_paths[2].as_path()),
    ];
    let model_files = args.model.input_files();
    let mut inputs: Vec<(&str, &std::path::Path)> =
        model_files.iter().map(|(w, p)| (*w, p.as_path())).collect();
    if let Some(p) = &args.prompts {
        inputs.push(("--prompts", p));
    }
    super::checks::check_outputs(&outputs, &inputs)?;
    let prompts = match &args.prompts {
        Some(p) => read_prompts(p)?,
        None => BUILTIN_PROMPTS.iter().map(|p| p.to_string()).collect(),
    };
    with_backend!(args.model.backend, |B, device| quality::<B>(
        &args, &files, prompts, &device
    ))
}

fn quality<B: ModelBackend>(
    args: &Args,
    files: &QualityFiles,
    prompts: Vec<String>,
    device: &B::Device,
) -> Result<()> {
    let t0 = Instant::now();
    let tiny = args.model.random_weights;
    let [df, dh, dw] = if tiny { [9, 64, 64] } else { [81, 480, 832] };
    let latent = vdit_pipelines::latent_size(
        args.frames.unwrap_or(df),
        args.height.unwrap_or(dh),
        args.width.unwrap_or(dw),
    )?;
    // The decoded frames of one video, f32 (VAE strides 4 / 8 / 8).
    let [f, h, w] = latent;
    super::checks::check_host_elements("--frames x --height x --width", &[3, 4, f, 8, h, 8, w])?;
    let pipe = load_pipeline::<B>(&args.model, args.text_len, device)?;
    let config = ModelConfig::Wan(pipe.transformer.config.clone());
    config.layout(latent, 1)?;
    super::checks::check_host_elements("latents", &[config.in_channels(), f, h, w])?;
    let plan = args.model.plan()?.context("--plan is required")?;
    config.check_plan(&plan)?;
    plan.check_steps(args.steps)
        .with_context(|| format!("--plan with --steps {}", args.steps))?;
    eprintln!("loaded the pipeline in {:.2}s", t0.elapsed().as_secs_f64());
    let mut template = T2vRequest::new("", latent);
    template.negative_prompt = args.negative_prompt.clone().unwrap_or_default();
    template.config.steps = args.steps;
    template.config.guidance_scale = args.guidance;
    template.config.shift = args.shift;
    let model = match (&args.model.model_dir, tiny) {
        (Some(d), false) => d.display().to_string(),
        _ => format!(
            "wan-tiny (random weights, seed {})",
            args.model.weights_seed
        ),
    };
    let plan_name = args
        .model
        .plan
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let request = QualityRequest {
        prompts,
        template,
        seed: args.seed,
        model,
        plan_name,
    };
    let mut bars = T2vBars::new(true);
    let mut current = usize::MAX;
    let (report, videos) = run_quality(&pipe, &plan, &request, device, |p| {
        let QualityProgress::Run { run, runs, stage } = p;
        if run != current {
            current = run;
            bars = T2vBars::new(args.quiet);
            if !args.quiet {
                eprintln!(
                    "run {}/{runs}: prompt {} {}",
                    run + 1,
                    run / 2,
                    if run % 2 == 0 { "dense" } else { "planned" }
                );
            }
        }
        bars.update(stage);
    })?;
    files.write(&report, &videos)?;
    for (i, p) in report.prompts.iter().enumerate() {
        println!(
            "prompt {i}: PSNR {:.2} dB, SSIM {:.4} ({})",
            p.psnr_db, p.ssim, p.prompt
        );
    }
    println!(
        "mean: PSNR {:.2} dB, SSIM {:.4}; LPIPS absent",
        report.mean_psnr_db(),
        report.mean_ssim()
    );
    eprintln!(
        "wrote {}, {}, {} in {:.2}s",
        files.json.display(),
        files.markdown().display(),
        files.chart().display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
