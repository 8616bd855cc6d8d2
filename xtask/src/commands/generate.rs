//! `cargo xtask generate`: the denoising loop from precomputed text embeddings to
//! latents (no text encoder or VAE), dense or with a sparse plan, with CFG.
//!
//! Inputs (safetensors): `prompt_embeds` `[B, L, text_dim]` and, for guidance > 1,
//! `negative_prompt_embeds` (diffusers' pipeline argument names). Output (safetensors):
//! `latents` `[B, C, F, H, W]` f32, with the run's settings as metadata.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use vdit_attention::SparseAttentionBackend;
use vdit_models::io::TensorMap;
use vdit_models::samplers::{FlowMatchEuler, Sampler, UniPcFlow, cfg};

use super::forward::{Denoiser, ModelArgs, parse_latent, with_backend};

/// Which scheduler runs the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    /// UniPC multistep, flow prediction (Wan2.1's scheduler).
    Unipc,
    /// Flow-matching Euler with shift.
    Euler,
}

/// Arguments of `cargo xtask generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text embeddings (safetensors): `prompt_embeds` and, when `--guidance` > 1,
    /// `negative_prompt_embeds`.
    #[arg(long)]
    pub embeddings: PathBuf,
    /// Output latents (safetensors, key `latents`), written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 = no CFG, one forward per step).
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// Flow shift (Wan: 3.0 at 480p, 5.0 at 720p).
    #[arg(long, default_value_t = 3.0)]
    pub shift: f64,
    /// Scheduler.
    #[arg(long, value_enum, default_value = "unipc")]
    pub sampler: SamplerKind,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Video height in pixels (latent = height / 8).
    #[arg(long, default_value_t = 480)]
    pub height: usize,
    /// Video width in pixels (latent = width / 8).
    #[arg(long, default_value_t = 832)]
    pub width: usize,
    /// Video frames (latent = (frames - 1) / 4 + 1).
    #[arg(long, default_value_t = 81)]
    pub frames: usize,
    /// Latent size `FxHxW`, overriding height/width/frames.
    #[arg(long)]
    pub latent: Option<String>,
    /// Start from these latents (safetensors key `latents`, `[B, C, F, H, W]`) instead
    /// of seeded noise, e.g. to compare with a diffusers run given the same latents.
    #[arg(long)]
    pub initial_latents: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// Latent `[frames, height, width]` (VAE strides 4 / 8 / 8).
    pub fn latent_size(&self) -> Result<[usize; 3]> {
        if let Some(s) = &self.latent {
            return parse_latent(s);
        }
        if self.frames == 0 || !(self.frames - 1).is_multiple_of(4) {
            bail!("--frames must be 4k+1 (got {})", self.frames);
        }
        if !self.height.is_multiple_of(8)
            || !self.width.is_multiple_of(8)
            || self.height == 0
            || self.width == 0
        {
            bail!(
                "--height and --width must be positive multiples of 8 (got {}x{})",
                self.height,
                self.width
            );
        }
        Ok([(self.frames - 1) / 4 + 1, self.height / 8, self.width / 8])
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    with_backend!(args.model.backend, |B, device| generate::<B>(
        &args, &device
    )
    .map(|_| ()))
}

/// The denoising loop on backend `B`; returns the latents file written.
pub fn generate<B: SparseAttentionBackend>(args: &Args, device: &B::Device) -> Result<TensorMap> {
    let [f, h, w] = args.latent_size()?;
    let model = Denoiser::<B>::load(&args.model, device)?;
    let (channels, _, dtype) = model.io_dims();
    let emb = TensorMap::read(&args.embeddings)
        .with_context(|| format!("reading {}", args.embeddings.display()))?;
    let prompt: Tensor<B, 3> = emb.float("prompt_embeds", dtype, device)?;
    let use_cfg = args.guidance > 1.0;
    let negative: Option<Tensor<B, 3>> = if use_cfg {
        let n: Tensor<B, 3> = emb.float("negative_prompt_embeds", dtype, device).context(
            "guidance > 1 needs `negative_prompt_embeds` (diffusers encodes the negative prompt, \
             \"\" by default); pass them or use --guidance 1",
        )?;
        if n.dims()[0] != prompt.dims()[0] {
            bail!(
                "negative_prompt_embeds batch {} != prompt_embeds batch {}",
                n.dims()[0],
                prompt.dims()[0]
            );
        }
        Some(n)
    } else {
        None
    };
    let batch = prompt.dims()[0];
    let plan = args.model.plan()?;
    let ctx = model.attention_context([f, h, w], plan.as_ref())?;

    let mut sampler: Box<dyn Sampler<B>> = match args.sampler {
        SamplerKind::Unipc => Box::new(UniPcFlow::<B>::new(args.steps, args.shift)),
        SamplerKind::Euler => Box::new(FlowMatchEuler::new(args.steps, args.shift)),
    };
    let timesteps = sampler.timesteps().to_vec();

    // Initial noise on the host (same values on every backend), f32 like diffusers.
    let shape = [batch, channels, f, h, w];
    let mut latents = match &args.initial_latents {
        Some(path) => {
            let map =
                TensorMap::read(path).with_context(|| format!("reading {}", path.display()))?;
            let t: Tensor<B, 5> = map.float("latents", DType::F32, device)?;
            if t.dims() != shape {
                bail!("initial latents are {:?}, expected {shape:?}", t.dims());
            }
            t
        }
        None => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
            let noise: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| StandardNormal.sample(&mut rng))
                .map(|x: f32| x * sampler.init_noise_sigma())
                .collect();
            Tensor::<B, 5>::from_data(TensorData::new(noise, shape), (device, DType::F32))
        }
    };

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(timesteps.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    let start = Instant::now();
    for (i, &t) in timesteps.iter().enumerate() {
        bar.set_message(format!("t={t:.1}"));
        let step_ctx = ctx.at_step(i);
        let input = latents.clone().cast(dtype);
        let tt = Tensor::<B, 1>::from_data(
            TensorData::new(vec![t; batch], [batch]),
            (device, DType::F32),
        );
        let cond = model.forward(input.clone(), tt.clone(), prompt.clone(), &step_ctx)?;
        let pred = match &negative {
            Some(neg) => {
                let uncond = model.forward(input, tt, neg.clone(), &step_ctx)?;
                cfg(uncond, cond, args.guidance)
            }
            None => cond,
        };
        latents = sampler.step(pred, i, latents)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "{} steps in {elapsed:.2}s ({:.3}s/step, {} forward(s) per step)",
        timesteps.len(),
        elapsed / timesteps.len().max(1) as f64,
        if use_cfg { 2 } else { 1 }
    );

    let mut out = TensorMap::default();
    out.insert("latents", latents.cast(DType::F32).into_data());
    for (k, v) in [
        ("model", model.class().class_name().to_owned()),
        ("steps", args.steps.to_string()),
        ("sampler", format!("{:?}", args.sampler).to_lowercase()),
        ("shift", args.shift.to_string()),
        ("guidance", args.guidance.to_string()),
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
