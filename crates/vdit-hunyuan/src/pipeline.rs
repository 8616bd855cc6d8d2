//! The HunyuanVideo denoising loop (diffusers `HunyuanVideoPipeline.__call__` from
//! precomputed embeddings to latents: no text encoders, no VAE).
//!
//! - Schedule ([`HunyuanFlowEuler`]): the pipeline passes custom sigmas
//!   `linspace(1, 0, N+1)[:-1]` to `FlowMatchEulerDiscreteScheduler(shift=7)`, which
//!   shifts them in f32 (`s·σ/(1+(s−1)σ)`), uses `timesteps = σ·1000` and appends σ = 0.
//!   (This differs from the scheduler's default `set_timesteps(N)` schedule that
//!   [`vdit_models::samplers::FlowMatchEuler`] reproduces.)
//! - One forward per step with the embedded guidance `guidance_scale·1000` (computed in
//!   the model dtype, as diffusers does); a second forward with the negative prompt only
//!   when `true_cfg_scale > 1` and a negative prompt is given, then
//!   `neg + true_cfg·(cond − neg)`.
//! - Latents start in f32; after each Euler step they take the model output's dtype and
//!   the next timestep is rounded to it (diffusers `t.expand(B).to(latents.dtype)`).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor};
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_models::nn::{to_dtype, to_f32};
use vdit_models::samplers::{Sampler, cfg};
use vdit_models::{ModelError, Result};

use crate::transformer::read_mask;
use crate::{HunyuanInputs, HunyuanVideoTransformer3DModel};

/// The flow-matching Euler schedule HunyuanVideo's pipeline uses (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct HunyuanFlowEuler {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
}

impl HunyuanFlowEuler {
    /// `steps` steps with timestep shift `shift` (7.0 for HunyuanVideo).
    pub fn new(steps: usize, shift: f64) -> Self {
        let s = shift as f32;
        let mut sigmas: Vec<f32> = (0..steps)
            .map(|i| {
                // numpy linspace(1, 0, N+1) in f64, then astype(float32).
                let sigma = (1.0 + i as f64 * (-1.0 / steps as f64)) as f32;
                s * sigma / (1.0 + (s - 1.0) * sigma)
            })
            .collect();
        let timesteps = sigmas.iter().map(|x| x * 1000.0).collect();
        sigmas.push(0.0);
        HunyuanFlowEuler { timesteps, sigmas }
    }

    /// `steps + 1` sigmas (the last is 0).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}

impl<B: ModelBackend> Sampler<B> for HunyuanFlowEuler {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// `x + (σ_{i+1} − σ_i)·v`: the product in the model output's dtype (a 0-d f32 tensor
    /// times it keeps its dtype in PyTorch), the sum in f32, cast to the model output's
    /// dtype.
    fn step(
        &mut self,
        model_output: Tensor<B, 5>,
        step: usize,
        sample: Tensor<B, 5>,
    ) -> Result<Tensor<B, 5>> {
        if step + 1 >= self.sigmas.len() {
            return Err(ModelError::Input(format!(
                "step {step} out of range for {} steps",
                self.timesteps.len()
            )));
        }
        let dtype = model_output.dtype();
        let dt = self.sigmas[step + 1] - self.sigmas[step];
        let prev = to_f32(sample) + to_f32(model_output * dt);
        Ok(to_dtype(prev, dtype))
    }
}

/// One prompt's precomputed conditioning, under the pipeline's argument names.
#[derive(Debug, Clone)]
pub struct PromptEmbeds<B: Backend> {
    /// LLaVA/Llama hidden states `[B, L, text_dim]` (`prompt_embeds`).
    pub prompt_embeds: Tensor<B, 3>,
    /// `[B, L]`, `true` = valid (`prompt_attention_mask`).
    pub prompt_attention_mask: Tensor<B, 2, Bool>,
    /// CLIP pooled output `[B, pooled_dim]` (`pooled_prompt_embeds`).
    pub pooled_prompt_embeds: Tensor<B, 2>,
}

impl<B: ModelBackend> PromptEmbeds<B> {
    /// Reads `prompt_embeds`, `prompt_attention_mask` (optional: all valid; any
    /// int/float/bool dtype, 0/1) and `pooled_prompt_embeds` — or, with `negative`, the
    /// `negative_*` versions, returning `None` when `negative_prompt_embeds` is absent.
    /// Floats are converted to `dtype`.
    ///
    /// # Errors
    /// Missing or wrongly shaped tensors, mask values other than 0/1.
    pub fn from_tensor_map(
        map: &TensorMap,
        negative: bool,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Option<Self>> {
        let p = if negative { "negative_" } else { "" };
        let embeds = format!("{p}prompt_embeds");
        if negative && map.get(&embeds).is_none() {
            return Ok(None);
        }
        let prompt_embeds: Tensor<B, 3> = map.float(&embeds, dtype, device)?;
        let [b, l, _] = prompt_embeds.dims();
        let pooled_prompt_embeds = map.float(&format!("{p}pooled_prompt_embeds"), dtype, device)?;
        let prompt_attention_mask =
            read_mask(map, &format!("{p}prompt_attention_mask"), [b, l], device)?;
        Ok(Some(PromptEmbeds {
            prompt_embeds,
            prompt_attention_mask,
            pooled_prompt_embeds,
        }))
    }
}

/// Denoising settings (diffusers' defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// `num_inference_steps`; default 50.
    pub steps: usize,
    /// Scheduler shift; default 7.0.
    pub shift: f64,
    /// Embedded guidance scale (the model input is ×1000); default 6.0.
    pub guidance_scale: f64,
    /// True CFG scale (a second forward with the negative prompt when > 1 and a
    /// negative prompt is given); default 1.0.
    pub true_cfg_scale: f64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            steps: 50,
            shift: 7.0,
            guidance_scale: 6.0,
            true_cfg_scale: 1.0,
        }
    }
}

/// Runs the denoising loop from initial noise `latents` `[B, C, F, H, W]` (f32) and
/// returns the final latents (the model dtype after the first step, like diffusers).
///
/// `ctx` carries the layout (its text length must equal the prompts'); step `i` uses
/// `ctx.at_step(i)`, so a plan with step ranges applies per step. `on_step(i, n)` is
/// called after each step.
///
/// # Errors
/// Shape mismatches (a negative prompt must have the prompt's shapes), model errors.
pub fn denoise<B: ModelBackend>(
    model: &HunyuanVideoTransformer3DModel<B>,
    latents: Tensor<B, 5>,
    prompt: &PromptEmbeds<B>,
    negative: Option<&PromptEmbeds<B>>,
    config: &GenerateConfig,
    ctx: &AttentionContext,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Tensor<B, 5>> {
    if let Some(n) = negative
        && (n.prompt_embeds.dims() != prompt.prompt_embeds.dims()
            || n.pooled_prompt_embeds.dims() != prompt.pooled_prompt_embeds.dims())
    {
        return Err(ModelError::Input(format!(
            "negative prompt embeds {:?} / pooled {:?} must match the prompt's {:?} / {:?}",
            n.prompt_embeds.dims(),
            n.pooled_prompt_embeds.dims(),
            prompt.prompt_embeds.dims(),
            prompt.pooled_prompt_embeds.dims()
        )));
    }
    let dtype = model.dtype;
    let device = latents.device();
    let b = latents.dims()[0];
    let mut sampler = HunyuanFlowEuler::new(config.steps, config.shift);
    let timesteps = <HunyuanFlowEuler as Sampler<B>>::timesteps(&sampler).to_vec();
    // torch.tensor([g] * B, dtype=transformer_dtype) * 1000.0
    let guidance = model
        .config
        .guidance_embeds
        .then(|| Tensor::<B, 1>::full([b], config.guidance_scale, (&device, dtype)) * 1000.0);
    let do_true_cfg = config.true_cfg_scale > 1.0 && negative.is_some();
    let mut latents = to_f32(latents);
    let n = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        let step_ctx = ctx.at_step(i);
        let timestep = Tensor::<B, 1>::full([b], t, (&device, latents.dtype()));
        let call = |p: &PromptEmbeds<B>| {
            model.forward(
                HunyuanInputs {
                    hidden_states: to_dtype(latents.clone(), dtype),
                    timestep: timestep.clone(),
                    encoder_hidden_states: to_dtype(p.prompt_embeds.clone(), dtype),
                    encoder_attention_mask: p.prompt_attention_mask.clone(),
                    pooled_projections: to_dtype(p.pooled_prompt_embeds.clone(), dtype),
                    guidance: guidance.clone(),
                },
                &step_ctx,
            )
        };
        let mut v = call(prompt)?;
        if let (true, Some(neg)) = (do_true_cfg, negative) {
            let v_neg = call(neg)?;
            v = cfg(v_neg, v, config.true_cfg_scale);
        }
        latents = sampler.step(v, i, latents)?;
        on_step(i, n);
    }
    Ok(latents)
}
