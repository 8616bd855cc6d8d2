//! The CogVideoX denoising loop (diffusers `CogVideoXPipeline.__call__` from prepared
//! latents and prompt embeddings): odd-latent-frame padding, batched classifier-free
//! guidance (static or the dynamic cosine schedule), any [`Sampler`].

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::nn::to_dtype;
use vdit_models::samplers::{CogVideoXDdim, CogVideoXDpm, Sampler, cfg};
use vdit_models::{ModelError, Result};

use crate::CogVideoXTransformer3DModel;

/// Latent frame counts for a video of `num_frames` frames (pipeline step 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentFrames {
    /// `(num_frames - 1) / temporal_compression + 1`.
    pub latent: usize,
    /// `latent` rounded up to a multiple of `patch_size_t`: what the transformer sees
    /// (81 frames: 21 -> 22).
    pub padded: usize,
    /// `padded - latent`: the frames the pipeline drops from the *front* of the
    /// denoised latents before decoding.
    pub additional: usize,
}

impl LatentFrames {
    /// The counts for `num_frames` video frames, VAE `temporal_compression` (4) and
    /// `patch_size_t` (2).
    ///
    /// # Errors
    /// [`ModelError::Input`] when `num_frames` is 0 or a factor is 0.
    pub fn new(
        num_frames: usize,
        temporal_compression: usize,
        patch_size_t: usize,
    ) -> Result<Self> {
        if num_frames == 0 || temporal_compression == 0 || patch_size_t == 0 {
            return Err(ModelError::Input(format!(
                "num_frames {num_frames}, temporal compression {temporal_compression} and patch_size_t {patch_size_t} must be positive"
            )));
        }
        let latent = (num_frames - 1) / temporal_compression + 1;
        let additional = (patch_size_t - latent % patch_size_t) % patch_size_t;
        Ok(LatentFrames {
            latent,
            padded: latent + additional,
            additional,
        })
    }

    /// Drops the padding frames from the front of latents `[B, F, C, H, W]`, as the
    /// pipeline does before decoding.
    pub fn drop_padding<B: burn::tensor::backend::Backend>(
        &self,
        latents: Tensor<B, 5>,
    ) -> Result<Tensor<B, 5>> {
        let f = latents.dims()[1];
        if f != self.padded {
            return Err(ModelError::Input(format!(
                "latents have {f} frames, expected the padded count {}",
                self.padded
            )));
        }
        Ok(latents.narrow(1, self.additional, self.latent))
    }
}

/// Classifier-free guidance settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// `guidance_scale` (6.0 for CogVideoX1.5); guidance is on when > 1.
    pub scale: f64,
    /// `use_dynamic_cfg` (the official inference script enables it).
    pub dynamic: bool,
}

impl Guidance {
    /// The scale used at timestep `t` of an `steps`-step run: `scale`, or with the
    /// dynamic schedule `1 + scale (1 - cos(π ((N - t)/N)^5)) / 2` where `t` is the
    /// timestep *value* (as diffusers' pipeline computes it; the schedule oscillates).
    pub fn scale_at(&self, t: f32, steps: usize) -> f64 {
        if self.dynamic {
            let n = steps as f64;
            let x = (n - t as f64) / n;
            1.0 + self.scale * (1.0 - (std::f64::consts::PI * x.powf(5.0)).cos()) / 2.0
        } else {
            self.scale
        }
    }

    /// Whether the unconditional branch runs (`scale > 1`).
    pub fn enabled(&self) -> bool {
        self.scale > 1.0
    }
}

/// Runs the denoising loop from `latents` `[B, F, C, H, W]` (already noise, `F` the
/// padded latent frame count), `prompt_embeds` `[B, L, text_dim]` and, when guidance is
/// on, `negative_prompt_embeds` (same shape), through `ctx` (its layout must be the
/// latents' with `L` text tokens; step `i` runs at `ctx.at_step(i)`). As the pipeline:
/// the conditional and unconditional branches run as one batch `[neg; pos]`, the
/// guided prediction and the sampler step are computed in f32, and the latents are
/// stored in the model dtype after each step. `on_step(i, &latents)` sees the latents
/// after step `i`. Returns the final latents with the padding frames kept (drop them
/// with [`LatentFrames::drop_padding`]).
///
/// # Errors
/// Missing negative embeddings with guidance on, shape errors, model and sampler errors.
#[allow(clippy::too_many_arguments)]
pub fn denoise<B: ModelBackend>(
    model: &CogVideoXTransformer3DModel<B>,
    sampler: &mut dyn Sampler<B>,
    latents: Tensor<B, 5>,
    prompt_embeds: Tensor<B, 3>,
    negative_prompt_embeds: Option<Tensor<B, 3>>,
    guidance: Guidance,
    ctx: &AttentionContext,
    on_step: &mut dyn FnMut(usize, &Tensor<B, 5>),
) -> Result<Tensor<B, 5>> {
    let dtype = model.dtype;
    let text = match (guidance.enabled(), negative_prompt_embeds) {
        (true, Some(neg)) => {
            if neg.dims() != prompt_embeds.dims() {
                return Err(ModelError::Input(format!(
                    "negative_prompt_embeds {:?} and prompt_embeds {:?} differ in shape",
                    neg.dims(),
                    prompt_embeds.dims()
                )));
            }
            Tensor::cat(vec![neg, prompt_embeds], 0)
        }
        (true, None) => {
            return Err(ModelError::Input(
                "guidance_scale > 1 needs negative_prompt_embeds".into(),
            ));
        }
        (false, _) => prompt_embeds,
    };
    let text = to_dtype(text, dtype);
    let mut latents = to_dtype(latents, dtype);
    let b = latents.dims()[0];
    let steps: Vec<f32> = sampler.timesteps().to_vec();
    let n = steps.len();
    let device = latents.device();
    for (i, &t) in steps.iter().enumerate() {
        let input = if guidance.enabled() {
            Tensor::cat(vec![latents.clone(), latents.clone()], 0)
        } else {
            latents.clone()
        };
        let bb = input.dims()[0];
        let ts = Tensor::<B, 1>::full([bb], t, (&device, DType::F32));
        let pred = model
            .forward(input, ts, text.clone(), &ctx.at_step(i))?
            .cast(DType::F32);
        let pred = if guidance.enabled() {
            let uncond = pred.clone().narrow(0, 0, b);
            let cond = pred.narrow(0, b, b);
            cfg(uncond, cond, guidance.scale_at(t, n))
        } else {
            pred
        };
        let next = sampler.step(pred, i, latents.cast(DType::F32))?;
        latents = to_dtype(next, dtype);
        on_step(i, &latents);
    }
    Ok(latents)
}

/// The two CogVideoX schedulers, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// `CogVideoXDPMScheduler` (the official inference script's choice), `"dpm"`.
    Dpm,
    /// `CogVideoXDDIMScheduler` (the scheduler shipped in the diffusers repo), `"ddim"`.
    Ddim,
}

impl SamplerKind {
    /// Parses `dpm` or `ddim`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "dpm" | "cogvideox-dpm" | "dpm++2m" => Ok(SamplerKind::Dpm),
            "ddim" | "cogvideox-ddim" => Ok(SamplerKind::Ddim),
            other => Err(ModelError::Config(format!(
                "unknown CogVideoX sampler `{other}` (use dpm or ddim)"
            ))),
        }
    }

    /// The sampler for `steps` steps with the CogVideoX1.5-5B schedule (v-prediction,
    /// zero terminal SNR, trailing spacing, `snr_shift_scale` 1.0). The DPM sampler
    /// draws its noise from the backend RNG (seed it with `B::seed`).
    pub fn build<B: Backend>(self, steps: usize) -> Result<Box<dyn Sampler<B>>> {
        Ok(match self {
            SamplerKind::Dpm => Box::new(CogVideoXDpm::<B>::new(steps)?),
            SamplerKind::Ddim => Box::new(CogVideoXDdim::new(steps)?),
        })
    }
}

/// Initial noise `[batch, frames.padded, channels, height, width]` (f32, standard
/// normal from the backend RNG seeded with `seed`; `init_noise_sigma` is 1). Latent
/// `height`/`width` are the pixel sizes divided by 8 (768x1360 -> 96x170).
pub fn initial_latents<B: Backend>(
    batch: usize,
    frames: LatentFrames,
    channels: usize,
    height: usize,
    width: usize,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 5> {
    B::seed(device, seed);
    Tensor::random(
        [batch, frames.padded, channels, height, width],
        Distribution::Normal(0.0, 1.0),
        (device, DType::F32),
    )
}
