//! `cargo xtask generate --prompt ...`: Wan2.1 text to video through
//! `vdit_pipelines::WanT2vPipeline` (tokenizer + UMT5, the Wan loop with UniPC + CFG,
//! dense or with `--plan`, the VAE decoder), then an MP4 (H.264) and optionally PNG
//! frames and the float frames, all written together after the run. This file parses the
//! arguments and shows progress.
//!
//! The model is a diffusers Wan pipeline folder (`model_index.json` with `tokenizer/`,
//! `text_encoder/`, `transformer/`, `vae/`) or `--preset wan-tiny --random-weights`
//! (random UMT5 / VAE, a byte-level tokenizer, 9 frames at 64x64 unless sizes are given).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::TensorData;
use indicatif::{ProgressBar, ProgressStyle};
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_pipelines::{T2vFiles, T2vProgress, T2vRequest, WanT2vPipeline};

use super::forward::{ModelConfig, with_backend};
use super::generate::{Args, Settings};

/// Loads the pipeline `args` select: `--model-dir` or `--preset wan-tiny --random-weights`.
pub(crate) fn load_pipeline<B: ModelBackend>(
    model: &super::forward::ModelArgs,
    max_len: usize,
    device: &B::Device,
) -> Result<WanT2vPipeline<B>> {
    let dtype = model.dtype()?;
    if model.random_weights {
        let preset = model.preset.as_deref().unwrap_or("wan-tiny");
        if !preset.eq_ignore_ascii_case("wan-tiny") {
            bail!("--prompt with --random-weights supports --preset wan-tiny only, got `{preset}`");
        }
        return Ok(WanT2vPipeline::tiny_random(
            model.weights_seed,
            dtype,
            max_len,
            device,
        )?);
    }
    let dir = model.model_dir.as_deref().context(
        "--prompt needs --model-dir WAN_PIPELINE_DIR or --preset wan-tiny --random-weights",
    )?;
    Ok(WanT2vPipeline::load(dir, dtype, max_len, device)?)
}

/// A progress bar for `len` items of `what`.
pub(crate) fn bar(quiet: bool, len: usize, what: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .expect("valid template"),
    );
    bar
}

/// Shows a text-to-video run's progress on `steps` / `decode` bars.
pub(crate) struct T2vBars {
    quiet: bool,
    start: Instant,
    steps: Option<ProgressBar>,
    decode: Option<ProgressBar>,
}

impl T2vBars {
    /// No bar yet.
    pub(crate) fn new(quiet: bool) -> Self {
        T2vBars {
            quiet,
            start: Instant::now(),
            steps: None,
            decode: None,
        }
    }

    /// Shows `p`.
    pub(crate) fn update(&mut self, p: T2vProgress) {
        match p {
            T2vProgress::Encoded => {
                if !self.quiet {
                    eprintln!(
                        "encoded the prompt(s) in {:.2}s",
                        self.start.elapsed().as_secs_f64()
                    );
                }
                self.start = Instant::now();
            }
            T2vProgress::Step { done, total } => {
                let b = self
                    .steps
                    .get_or_insert_with(|| bar(self.quiet, total, "step"));
                b.set_position(done as u64);
                if done == total {
                    b.finish_and_clear();
                    if !self.quiet {
                        eprintln!(
                            "{total} steps in {:.2}s",
                            self.start.elapsed().as_secs_f64()
                        );
                    }
                    self.start = Instant::now();
                }
            }
            T2vProgress::Decoded { done, total } => {
                let b = self
                    .decode
                    .get_or_insert_with(|| bar(self.quiet, total, "decode latent frame"));
                b.set_position(done as u64);
                if done == total {
                    b.finish_and_clear();
                    if !self.quiet {
                        eprintln!("decoded in {:.2}s", self.start.elapsed().as_secs_f64());
                    }
                }
            }
        }
    }
}

/// Runs `generate --prompt`.
pub fn run(args: Args) -> Result<()> {
    let mut args = args;
    let tiny_default = args.model.random_weights
        && args.latent.is_none()
        && args.height.is_none()
        && args.width.is_none()
        && args.frames.is_none();
    if tiny_default {
        (args.frames, args.height, args.width) = (Some(9), Some(64), Some(64));
    }
    let ext = args.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !ext.eq_ignore_ascii_case("mp4") {
        bail!(
            "--out must be an .mp4 file with --prompt, got {}",
            args.out.display()
        );
    }
    if args.fps == 0 {
        bail!("--fps must be positive");
    }
    args.check_paths()?;
    with_backend!(args.model.backend, |B, device| generate_video::<B>(
        &args, &device
    ))
}

fn generate_video<B: ModelBackend>(args: &Args, device: &B::Device) -> Result<()> {
    let max_len = args.text_len.unwrap_or(512);
    let t0 = Instant::now();
    let pipe = load_pipeline::<B>(&args.model, max_len, device)?;
    let config = ModelConfig::Wan(pipe.transformer.config.clone());
    let settings = Settings::new(args, &config)?;
    let plan = args.model.plan()?;
    eprintln!("loaded the pipeline in {:.2}s", t0.elapsed().as_secs_f64());

    let prompt = args.prompt.clone().unwrap_or_default();
    let initial_latents: Option<TensorData> = match &args.initial_latents {
        Some(path) => Some(
            TensorMap::read(path)
                .with_context(|| format!("reading {}", path.display()))?
                .get("latents")
                .cloned()
                .with_context(|| format!("{}: no tensor `latents`", path.display()))?,
        ),
        None => None,
    };
    let request = T2vRequest {
        prompt: prompt.clone(),
        negative_prompt: args.negative_prompt.clone().unwrap_or_default(),
        latent: settings.latent(),
        config: settings.wan_config(args.steps),
        seed: args.seed,
        initial_latents,
    };
    let mut bars = T2vBars::new(args.quiet);
    let out = pipe.generate(&request, plan.as_ref(), device, |p| bars.update(p))?;
    let (f, w, h) = (out.video.frames.len(), out.video.width, out.video.height);
    out.write(&T2vFiles {
        mp4: Some(args.out.clone()),
        fps: args.fps,
        png_dir: args.png_frames.clone(),
        frames: args.save_frames.clone(),
        frames_metadata: vec![("prompt".into(), prompt)],
    })?;
    if let Some(path) = &args.save_frames {
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.png_frames {
        eprintln!("wrote {f} PNG frames to {}", dir.display());
    }
    eprintln!(
        "wrote {} ({f} frames, {w}x{h}, {} fps) in {:.2}s total",
        args.out.display(),
        args.fps,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
