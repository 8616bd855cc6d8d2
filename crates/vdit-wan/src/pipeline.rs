//! The Wan2.1 denoising loop (diffusers `WanPipeline.__call__` from text embeddings to
//! latents: no text encoder, no VAE; those are in `vdit-text` and [`crate::vae`], and
//! `vdit-pipelines` puts them together).
//!
//! - Scheduler: `UniPCMultistepScheduler` in Wan2.1's flow configuration
//!   ([`vdit_models::samplers::UniPcFlow`], the default) or flow-matching Euler
//!   ([`vdit_models::samplers::FlowMatchEuler`]), shift 3.0 at 480p (5.0 at 720p).
//! - Classifier-free guidance as the pipeline does it: two separate forwards per step
//!   (conditional, then unconditional with the negative prompt embeddings), then
//!   `uncond + scale·(cond − uncond)`; one forward when `guidance_scale <= 1`.
//! - The latents stay in f32; each forward takes them cast to the model dtype.

use burn::tensor::{DType, Tensor, TensorData};
use vdit_attention::AttentionContext;
use vdit_models::samplers::{FlowMatchEuler, Sampler, UniPcFlow, cfg};
use vdit_models::{ModelBackend, ModelError, Result};

use crate::WanTransformer3DModel;

/// Which scheduler runs the Wan loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WanSampler {
    /// UniPC multistep, flow prediction (Wan2.1's scheduler).
    #[default]
    UniPc,
    /// Flow-matching Euler with shift.
    Euler,
}

impl WanSampler {
    /// `unipc` or `euler`.
    pub fn name(self) -> &'static str {
        match self {
            WanSampler::UniPc => "unipc",
            WanSampler::Euler => "euler",
        }
    }

    /// The sampler for `steps` steps with flow `shift`.
    ///
    /// # Errors
    /// Steps outside `1..=MAX_STEPS`, a shift that is not a finite positive number.
    pub fn build<B: ModelBackend>(self, steps: usize, shift: f64) -> Result<Box<dyn Sampler<B>>> {
        Ok(match self {
            WanSampler::UniPc => Box::new(UniPcFlow::<B>::new(steps, shift)?),
            WanSampler::Euler => Box::new(FlowMatchEuler::new(steps, shift)?),
        })
    }
}

/// Denoising settings (diffusers' defaults at 480p).
#[derive(Debug, Clone, PartialEq)]
pub struct WanGenerateConfig {
    /// `num_inference_steps`; default 50.
    pub steps: usize,
    /// Scheduler flow shift; default 3.0 (use 5.0 at 720p).
    pub shift: f64,
    /// Classifier-free guidance scale; default 5.0 (guidance is on when > 1).
    pub guidance_scale: f64,
    /// Scheduler; default UniPC.
    pub sampler: WanSampler,
}

impl Default for WanGenerateConfig {
    fn default() -> Self {
        WanGenerateConfig {
            steps: 50,
            shift: 3.0,
            guidance_scale: 5.0,
            sampler: WanSampler::UniPc,
        }
    }
}

impl WanGenerateConfig {
    /// Whether the unconditional branch runs (`guidance_scale > 1`).
    pub fn uses_cfg(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// Runs the denoising loop from `latents` `[B, C, F, H, W]` (the initial noise, f32 or
/// any float dtype), `prompt_embeds` `[B, L, text_dim]` and, when guidance is on,
/// `negative_prompt_embeds` (same batch), through `ctx` (its layout must be the
/// latents'; step `i` runs at `ctx.at_step(i)`). `on_step(i, t)` is called after step `i`
/// (timestep `t`). Returns the final latents in f32.
///
/// # Errors
/// Missing negative embeddings with guidance on, batch mismatches, model and sampler
/// errors, a non-finite guidance scale.
pub fn denoise<B: ModelBackend>(
    model: &WanTransformer3DModel<B>,
    latents: Tensor<B, 5>,
    prompt_embeds: Tensor<B, 3>,
    negative_prompt_embeds: Option<Tensor<B, 3>>,
    config: &WanGenerateConfig,
    ctx: &AttentionContext,
    mut on_step: impl FnMut(usize, f32),
) -> Result<Tensor<B, 5>> {
    if !config.guidance_scale.is_finite() {
        return Err(ModelError::Config(format!(
            "the guidance scale must be finite, got {}",
            config.guidance_scale
        )));
    }
    let dtype = model.dtype;
    let batch = prompt_embeds.dims()[0];
    if latents.dims()[0] != batch {
        return Err(ModelError::Input(format!(
            "latents batch {} != prompt_embeds batch {batch}",
            latents.dims()[0]
        )));
    }
    let prompt = prompt_embeds.cast(dtype);
    let negative = if config.uses_cfg() {
        let n = negative_prompt_embeds.ok_or_else(|| {
            ModelError::Input(
                "guidance > 1 needs `negative_prompt_embeds` (diffusers encodes the negative \
                 prompt, \"\" by default); pass them or use guidance 1"
                    .into(),
            )
        })?;
        if n.dims()[0] != batch {
            return Err(ModelError::Input(format!(
                "negative_prompt_embeds batch {} != prompt_embeds batch {batch}",
                n.dims()[0]
            )));
        }
        Some(n.cast(dtype))
    } else {
        None
    };
    let mut sampler = config.sampler.build::<B>(config.steps, config.shift)?;
    let timesteps = sampler.timesteps().to_vec();
    let device = latents.device();
    let mut latents = latents.cast(DType::F32);
    for (i, &t) in timesteps.iter().enumerate() {
        let step_ctx = ctx.at_step(i);
        let input = latents.clone().cast(dtype);
        let tt = Tensor::<B, 1>::from_data(
            TensorData::new(vec![t; batch], [batch]),
            (&device, DType::F32),
        );
        let cond = model.forward(input.clone(), tt.clone(), prompt.clone(), &step_ctx)?;
        let pred = match &negative {
            Some(neg) => {
                let uncond = model.forward(input, tt, neg.clone(), &step_ctx)?;
                cfg(uncond, cond, config.guidance_scale)
            }
            None => cond,
        };
        latents = sampler.step(pred, i, latents)?;
        on_step(i, t);
    }
    Ok(latents.cast(DType::F32))
}
