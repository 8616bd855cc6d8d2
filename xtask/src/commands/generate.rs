//! `cargo xtask generate`: the denoising loop from precomputed (or random) text
//! embeddings to latents (no text encoder or VAE), dense or with a sparse plan, for
//! Wan2.1, HunyuanVideo and CogVideoX1.5, each with its own pipeline's scheduler and
//! guidance (`vdit_pipelines::AnyDenoiser::generate_latents`; this file checks the
//! arguments, reads the files, shows progress and writes the latents).
//!
//! Inputs (safetensors, diffusers' pipeline argument names):
//! - Wan2.1: `prompt_embeds` `[B, L, 4096]` and, for `--guidance` > 1,
//!   `negative_prompt_embeds`. UniPC (default) or flow Euler, shift 3, CFG 5.
//! - HunyuanVideo: `prompt_embeds` `[B, L, 4096]`, `prompt_attention_mask` `[B, L]`
//!   (optional, 0/1), `pooled_prompt_embeds` `[B, 768]`; with `--true-cfg` > 1 the
//!   `negative_*` versions. The pipeline's flow Euler schedule, shift 7, embedded
//!   guidance 6 (`--guidance`; the model input is × 1000), one forward per step.
//! - CogVideoX1.5: `prompt_embeds` `[B, 226, 4096]` and, for `--guidance` > 1,
//!   `negative_prompt_embeds`. CogVideoX DPM (default) or DDIM, CFG 6 (batched),
//!   `--dynamic-cfg`; an odd latent frame count is padded by one frame at the front,
//!   as the pipeline does.
//!
//! Output (safetensors): `latents` f32 with the run's settings as metadata: Wan and
//! HunyuanVideo `[B, C, F, H, W]`; CogVideoX `[B, F, C, H, W]` with the padding frames
//! dropped (what the VAE decodes) and, when padded, `latents_padded` (the loop's final
//! state, diffusers' `output_type="latent"`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::TensorData;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use vdit_hunyuan::TextMask;
use vdit_models::ModelBackend;
use vdit_models::ModelClass;
use vdit_models::io::TensorMap;
use vdit_pipelines::{LatentOutput, LatentRequest, SamplerChoice};

use super::forward::{
    ModelArgs, ModelConfig, class_defaults, default_valid_text, load_denoiser, parse_latent,
    resolve_config, with_backend,
};

/// Which scheduler runs the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    /// UniPC multistep, flow prediction (Wan2.1's scheduler; Wan only).
    Unipc,
    /// Flow-matching Euler with shift (Wan: the scheduler's own schedule; HunyuanVideo:
    /// its pipeline's sigmas `linspace(1, 0, N+1)[:-1]`, shifted).
    Euler,
    /// CogVideoX's DPM-Solver++(2M) (stochastic; CogVideoX only).
    Dpm,
    /// CogVideoX's DDIM (CogVideoX only).
    Ddim,
}

impl SamplerKind {
    fn name(self) -> &'static str {
        match self {
            SamplerKind::Unipc => "unipc",
            SamplerKind::Euler => "euler",
            SamplerKind::Dpm => "dpm",
            SamplerKind::Ddim => "ddim",
        }
    }
}

/// Arguments of `cargo xtask generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text embeddings (safetensors) under the pipeline's names: `prompt_embeds`,
    /// `negative_prompt_embeds` (CFG); HunyuanVideo also `prompt_attention_mask`,
    /// `pooled_prompt_embeds` and their `negative_` versions (true CFG).
    #[arg(long, required_unless_present_any = ["random_embeddings", "prompt"])]
    pub embeddings: Option<PathBuf>,
    /// Wan2.1 text to video: the prompt (needs a Wan pipeline folder as `--model-dir`, or
    /// `--preset wan-tiny --random-weights`); runs the text encoder, the loop and the VAE
    /// and writes an MP4 to `--out`. `--text-len` is the token count (default 512).
    #[arg(long, conflicts_with_all = ["embeddings", "random_embeddings"])]
    pub prompt: Option<String>,
    /// Negative prompt for classifier-free guidance with `--prompt` (default "").
    #[arg(long, requires = "prompt")]
    pub negative_prompt: Option<String>,
    /// Frames per second of the MP4 (`--prompt`); Wan2.1 videos are 16 fps.
    #[arg(long, default_value_t = 16)]
    pub fps: u32,
    /// Also write every frame as PNG into this folder (`--prompt`).
    #[arg(long, requires = "prompt")]
    pub png_frames: Option<PathBuf>,
    /// Also write the decoded frames as safetensors (`frames`, `[B, F, C, H, W]` f32 in
    /// [0, 1], like diffusers' `output_type="pt"`) (`--prompt`).
    #[arg(long, requires = "prompt")]
    pub save_frames: Option<PathBuf>,
    /// Random text embeddings instead of `--embeddings` (seeded by `--seed`; see
    /// `--text-len`, `--valid-text`): for timing runs without a text encoder.
    #[arg(long, conflicts_with = "embeddings")]
    pub random_embeddings: bool,
    /// Text tokens of `--random-embeddings` (default: Wan 512, HunyuanVideo 256 padded,
    /// CogVideoX 226).
    #[arg(long)]
    pub text_len: Option<usize>,
    /// Valid tokens of HunyuanVideo's random text mask (default half the text length).
    #[arg(long)]
    pub valid_text: Option<usize>,
    /// Output latents (safetensors, key `latents`), written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Guidance scale. Wan2.1 and CogVideoX: classifier-free guidance (1 = none, one
    /// forward per step; default 5 and 6). HunyuanVideo: the embedded guidance scale
    /// (default 6; the model input is × 1000).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// HunyuanVideo only: true classifier-free guidance scale (> 1 runs a second forward
    /// with the negative prompt embeddings); default 1.
    #[arg(long)]
    pub true_cfg: Option<f64>,
    /// CogVideoX only: the dynamic CFG schedule (the official inference script's).
    #[arg(long)]
    pub dynamic_cfg: bool,
    /// Flow shift (Wan2.1: default 3.0 at 480p, use 5.0 at 720p; HunyuanVideo: default
    /// 7.0; not used by CogVideoX).
    #[arg(long)]
    pub shift: Option<f64>,
    /// Scheduler: Wan2.1 unipc (default) or euler; HunyuanVideo euler (default, the
    /// pipeline's schedule); CogVideoX dpm (default) or ddim.
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerKind>,
    /// CogVideoX DPM only: the per-step noise (`noise.0`, `noise.1`, ... with the latent
    /// shape) instead of the backend RNG, to reproduce a diffusers run.
    #[arg(long)]
    pub sampler_noise: Option<PathBuf>,
    /// Seed of the initial noise (and of the DPM noise and random embeddings).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Video height in pixels (latent = height / 8). Default: Wan 480, HunyuanVideo 720,
    /// CogVideoX 768.
    #[arg(long)]
    pub height: Option<usize>,
    /// Video width in pixels (latent = width / 8). Default: Wan 832, HunyuanVideo 1280,
    /// CogVideoX 1360.
    #[arg(long)]
    pub width: Option<usize>,
    /// Video frames (latent = (frames - 1) / 4 + 1). Default: Wan 81, HunyuanVideo 129,
    /// CogVideoX 81.
    #[arg(long)]
    pub frames: Option<usize>,
    /// Latent size `FxHxW`, overriding height/width/frames (CogVideoX: the latent frames
    /// before padding).
    #[arg(long)]
    pub latent: Option<String>,
    /// Start from these latents (safetensors key `latents`: `[B, C, F, H, W]`, CogVideoX
    /// `[B, F_padded, C, H, W]`) instead of seeded noise, e.g. to compare with a
    /// diffusers run given the same latents.
    #[arg(long)]
    pub initial_latents: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// Checks, before any work, that `--out` (and `--save-frames`) can be written and
    /// overwrite no input nor each other
    /// (`--embeddings`, `--initial-latents`, `--sampler-noise`, the model's files,
    /// `--plan`). Text-to-video runs (`--prompt`) check the same before loading anything.
    pub fn check_paths(&self) -> Result<()> {
        let model_files = self.model.input_files();
        let mut inputs: Vec<(&str, &std::path::Path)> =
            model_files.iter().map(|(w, p)| (*w, p.as_path())).collect();
        for (what, p) in [
            ("--embeddings", &self.embeddings),
            ("--initial-latents", &self.initial_latents),
            ("--sampler-noise", &self.sampler_noise),
        ] {
            if let Some(p) = p {
                inputs.push((what, p));
            }
        }
        let mut outputs = vec![("--out", self.out.as_path())];
        if let Some(p) = &self.save_frames {
            outputs.push(("--save-frames", p.as_path()));
        }
        super::checks::check_outputs(&outputs, &inputs)
    }

    /// Latent `[frames, height, width]` of model class `class` (VAE strides 4 / 8 / 8;
    /// CogVideoX: before padding).
    pub fn latent_size(&self, class: ModelClass) -> Result<[usize; 3]> {
        if let Some(s) = &self.latent {
            return parse_latent(s);
        }
        let [df, dh, dw] = class_defaults(class).video;
        Ok(vdit_pipelines::latent_size(
            self.frames.unwrap_or(df),
            self.height.unwrap_or(dh),
            self.width.unwrap_or(dw),
        )?)
    }
}

/// The settings of one run, with each model's defaults, checked before anything loads.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    class: ModelClass,
    /// Latent `[F, H, W]` (CogVideoX: before padding).
    latent: [usize; 3],
    sampler: SamplerKind,
    pub(crate) guidance: f64,
    shift: Option<f64>,
    true_cfg: f64,
    dynamic_cfg: bool,
}

impl Settings {
    pub(crate) fn new(args: &Args, config: &ModelConfig) -> Result<Self> {
        let class = config.class();
        let name = class.class_name();
        super::checks::check_steps("--steps", args.steps)?;
        let sampler = match (class, args.sampler) {
            (ModelClass::Wan, None) => SamplerKind::Unipc,
            (ModelClass::HunyuanVideo, None) => SamplerKind::Euler,
            (ModelClass::CogVideoX, None) => SamplerKind::Dpm,
            (ModelClass::Wan, Some(s @ (SamplerKind::Unipc | SamplerKind::Euler)))
            | (ModelClass::HunyuanVideo, Some(s @ SamplerKind::Euler))
            | (ModelClass::CogVideoX, Some(s @ (SamplerKind::Dpm | SamplerKind::Ddim))) => s,
            (_, Some(s)) => {
                let allowed = match class {
                    ModelClass::Wan => "unipc or euler",
                    ModelClass::HunyuanVideo => "euler",
                    ModelClass::CogVideoX => "dpm or ddim",
                };
                bail!(
                    "--sampler {} does not apply to {name} (use {allowed})",
                    s.name()
                )
            }
        };
        let shift = match (class, args.shift) {
            (ModelClass::CogVideoX, Some(_)) => bail!(
                "--shift does not apply to {name}: its DPM and DDIM schedules have no flow shift"
            ),
            (ModelClass::CogVideoX, None) => None,
            (ModelClass::Wan, s) => Some(s.unwrap_or(3.0)),
            (ModelClass::HunyuanVideo, s) => Some(s.unwrap_or(7.0)),
        };
        if let Some(s) = shift
            && !(s.is_finite() && s > 0.0)
        {
            bail!("--shift must be positive, got {s}");
        }
        let guidance = args.guidance.unwrap_or(match class {
            ModelClass::Wan => 5.0,
            ModelClass::HunyuanVideo | ModelClass::CogVideoX => 6.0,
        });
        if !guidance.is_finite() {
            bail!("--guidance must be finite, got {guidance}");
        }
        if args.true_cfg.is_some() && class != ModelClass::HunyuanVideo {
            bail!(
                "--true-cfg does not apply to {name} (its --guidance is classifier-free guidance)"
            );
        }
        let true_cfg = args.true_cfg.unwrap_or(1.0);
        if !true_cfg.is_finite() {
            bail!("--true-cfg must be finite, got {true_cfg}");
        }
        if args.dynamic_cfg && class != ModelClass::CogVideoX {
            bail!("--dynamic-cfg does not apply to {name} (CogVideoX only)");
        }
        if args.sampler_noise.is_some() && sampler != SamplerKind::Dpm {
            bail!("--sampler-noise is for CogVideoX's DPM sampler only");
        }
        let latent = args.latent_size(class)?;
        // Patch divisibility (the text length does not matter for it).
        let padded = match class {
            ModelClass::CogVideoX => vdit_pipelines::cog_frames(config, latent[0])?.padded,
            _ => latent[0],
        };
        config.layout([padded, latent[1], latent[2]], 1)?;
        super::checks::check_host_elements(
            "latents",
            &[config.in_channels(), padded, latent[1], latent[2]],
        )?;
        if let Some(len) = args.text_len {
            super::checks::check_host_elements("--text-len", &[len, config.text_dim()])?;
        }
        Ok(Settings {
            class,
            latent,
            sampler,
            guidance,
            shift,
            true_cfg,
            dynamic_cfg: args.dynamic_cfg,
        })
    }
}

impl Settings {
    /// The Wan loop's settings of this run.
    pub(crate) fn wan_config(&self, steps: usize) -> vdit_wan::pipeline::WanGenerateConfig {
        vdit_wan::pipeline::WanGenerateConfig {
            steps,
            shift: self.shift.unwrap_or(3.0),
            guidance_scale: self.guidance,
            sampler: match self.sampler {
                SamplerKind::Euler => vdit_wan::pipeline::WanSampler::Euler,
                _ => vdit_wan::pipeline::WanSampler::UniPc,
            },
        }
    }

    /// The latent size `[F, H, W]` (CogVideoX: before padding).
    pub(crate) fn latent(&self) -> [usize; 3] {
        self.latent
    }

    /// The library request of this run, with `--initial-latents` and `--sampler-noise`
    /// read.
    fn latent_request(&self, args: &Args) -> Result<LatentRequest> {
        let read = |p: &std::path::Path| {
            TensorMap::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let initial_latents = match &args.initial_latents {
            Some(p) => Some(
                read(p)?
                    .get("latents")
                    .cloned()
                    .with_context(|| format!("{}: no tensor `latents`", p.display()))?,
            ),
            None => None,
        };
        Ok(LatentRequest {
            latent: self.latent,
            steps: args.steps,
            sampler: match self.sampler {
                SamplerKind::Unipc => SamplerChoice::UniPc,
                SamplerKind::Euler => SamplerChoice::Euler,
                SamplerKind::Dpm => SamplerChoice::Dpm,
                SamplerKind::Ddim => SamplerChoice::Ddim,
            },
            guidance: self.guidance,
            shift: self.shift,
            true_cfg: self.true_cfg,
            dynamic_cfg: self.dynamic_cfg,
            seed: args.seed,
            initial_latents,
            sampler_noise: args.sampler_noise.as_deref().map(read).transpose()?,
        })
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if args.prompt.is_some() {
        return super::t2v_generate::run(args);
    }
    with_backend!(args.model.backend, |B, device| generate::<B>(
        &args, &device
    )
    .map(|_| ()))
}

/// Random embeddings under the pipeline's names, for `--random-embeddings`.
fn random_embeddings(args: &Args, config: &ModelConfig, s: &Settings) -> Result<TensorMap> {
    let class = config.class();
    let len = args.text_len.unwrap_or(class_defaults(class).text_len);
    if len == 0 {
        bail!("--text-len must be positive");
    }
    let d = config.text_dim();
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x7e47_7e47);
    let mut map = TensorMap::default();
    let negative = match class {
        ModelClass::HunyuanVideo => s.true_cfg > 1.0,
        _ => s.guidance > 1.0,
    };
    for prefix in ["", "negative_"] {
        if !prefix.is_empty() && !negative {
            continue;
        }
        map.insert(
            format!("{prefix}prompt_embeds"),
            vdit_pipelines::normal_from(&mut rng, &[1, len, d]),
        );
        if let ModelConfig::Hunyuan(c) = config {
            let valid = args.valid_text.unwrap_or_else(|| default_valid_text(len));
            if valid == 0 || valid > len {
                bail!("--valid-text must be in 1..={len} (--text-len), got {valid}");
            }
            let mask = TextMask::right_padded(&[valid], len)?;
            let values: Vec<i64> = mask.values().iter().map(|&v| i64::from(v)).collect();
            map.insert(
                format!("{prefix}prompt_attention_mask"),
                TensorData::new(values, [1, len]),
            );
            map.insert(
                format!("{prefix}pooled_prompt_embeds"),
                vdit_pipelines::normal_from(&mut rng, &[1, c.pooled_dim]),
            );
        }
    }
    Ok(map)
}

fn progress(quiet: bool, steps: usize) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// The denoising loop on backend `B`; returns the latents file written.
pub fn generate<B: ModelBackend>(args: &Args, device: &B::Device) -> Result<TensorMap> {
    args.check_paths()?;
    let config = resolve_config(&args.model)?;
    let settings = Settings::new(args, &config)?;
    let plan = args.model.plan()?;
    if let Some(p) = &plan {
        config.check_plan(p)?;
        p.check_steps(args.steps).with_context(|| {
            format!(
                "--plan {} with --steps {}",
                args.model
                    .plan
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                args.steps
            )
        })?;
    }
    let emb = match &args.embeddings {
        Some(p) => TensorMap::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => random_embeddings(args, &config, &settings)?,
    };
    let model = load_denoiser::<B>(&args.model, device)?;
    let request = settings.latent_request(args)?;
    let start = Instant::now();
    let bar = progress(args.quiet, args.steps);
    let LatentOutput {
        latents: mut out,
        forwards,
    } = model.generate_latents(&emb, &request, plan.as_ref(), device, |_| bar.inc(1))?;
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "{} steps in {elapsed:.2}s ({:.3}s/step, {forwards} per step)",
        args.steps,
        elapsed / args.steps.max(1) as f64,
    );
    for (k, v) in [
        ("model", settings.class.class_name().to_owned()),
        ("steps", args.steps.to_string()),
        ("sampler", settings.sampler.name().to_owned()),
        (
            "shift",
            settings
                .shift
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        ("guidance", settings.guidance.to_string()),
        ("seed", args.seed.to_string()),
        ("dtype", args.model.dtype.clone()),
        (
            "plan",
            args.model
                .plan
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "dense".into()),
        ),
    ] {
        out.metadata.insert(k.to_owned(), v);
    }
    out.write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(out)
}
