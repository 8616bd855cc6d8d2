//! Latents from text embeddings for any denoiser class ([`AnyDenoiser::generate_latents`]):
//! each class's pipeline loop with its own scheduler and guidance, from precomputed
//! embeddings under the pipeline's argument names (what `cargo xtask generate
//! --embeddings` runs).
//!
//! - Wan2.1: `prompt_embeds` `[B, L, 4096]` and, for guidance > 1,
//!   `negative_prompt_embeds`; UniPC (default) or flow Euler, shift 3, CFG 5
//!   ([`vdit_wan::pipeline::denoise`]).
//! - HunyuanVideo: `prompt_embeds`, `prompt_attention_mask` (optional),
//!   `pooled_prompt_embeds`, and with true CFG > 1 the `negative_*` versions; the
//!   pipeline's flow Euler schedule, shift 7, embedded guidance 6 ([`vdit_hunyuan::denoise`]).
//! - CogVideoX1.5: `prompt_embeds` `[B, 226, 4096]` and, for guidance > 1,
//!   `negative_prompt_embeds`; DPM (default) or DDIM, CFG 6 (batched), optionally dynamic;
//!   an odd latent frame count padded by one frame at the front
//!   ([`vdit_cogvideox::pipeline::denoise`]).

use burn::tensor::{DType, Tensor, TensorData};
use vdit_cogvideox::CogVideoXTransformer3DModel;
use vdit_cogvideox::pipeline::{Guidance, LatentFrames};
use vdit_hunyuan::{GenerateConfig, HunyuanVideoTransformer3DModel, PromptEmbeds};
use vdit_models::io::TensorMap;
use vdit_models::samplers::{CogVideoXDdim, CogVideoXDpm, Sampler};
use vdit_models::{ModelBackend, ModelClass};
use vdit_patterns::Plan;
use vdit_wan::WanTransformer3DModel;
use vdit_wan::pipeline::{WanGenerateConfig, WanSampler};

use crate::{AnyDenoiser, ModelConfig, PipelineError, Result};

/// Which scheduler runs a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerChoice {
    /// UniPC multistep, flow prediction (Wan2.1's scheduler; Wan only).
    UniPc,
    /// Flow-matching Euler with shift (Wan: the scheduler's own schedule; HunyuanVideo:
    /// its pipeline's sigmas).
    Euler,
    /// CogVideoX's DPM-Solver++(2M) (stochastic; CogVideoX only).
    Dpm,
    /// CogVideoX's DDIM (CogVideoX only).
    Ddim,
}

impl SamplerChoice {
    /// `unipc`, `euler`, `dpm` or `ddim`.
    pub fn name(self) -> &'static str {
        match self {
            SamplerChoice::UniPc => "unipc",
            SamplerChoice::Euler => "euler",
            SamplerChoice::Dpm => "dpm",
            SamplerChoice::Ddim => "ddim",
        }
    }

    /// The class's default: Wan UniPC, HunyuanVideo Euler, CogVideoX DPM.
    pub fn default_for(class: ModelClass) -> Self {
        match class {
            ModelClass::Wan => SamplerChoice::UniPc,
            ModelClass::HunyuanVideo => SamplerChoice::Euler,
            ModelClass::CogVideoX => SamplerChoice::Dpm,
        }
    }
}

/// One latents run's settings.
#[derive(Debug, Clone)]
pub struct LatentRequest {
    /// Latent `[frames, height, width]` (CogVideoX: before padding).
    pub latent: [usize; 3],
    /// Denoising steps.
    pub steps: usize,
    /// The scheduler (it must be one the class has).
    pub sampler: SamplerChoice,
    /// Wan2.1 and CogVideoX: classifier-free guidance (on when > 1); HunyuanVideo: the
    /// embedded guidance scale (the model input is × 1000).
    pub guidance: f64,
    /// Flow shift (Wan: default 3, HunyuanVideo: default 7; CogVideoX has none).
    pub shift: Option<f64>,
    /// HunyuanVideo's true CFG scale (a second forward when > 1).
    pub true_cfg: f64,
    /// CogVideoX's dynamic CFG schedule.
    pub dynamic_cfg: bool,
    /// Seed of the initial noise (host RNG) and of CogVideoX's DPM noise (backend RNG).
    pub seed: u64,
    /// Start from these latents (`[B, C, F, H, W]`, CogVideoX `[B, F_padded, C, H, W]`)
    /// instead of seeded noise.
    pub initial_latents: Option<TensorData>,
    /// CogVideoX DPM: the per-step noise (`noise.0`, `noise.1`, ...) instead of the
    /// backend RNG, to reproduce a diffusers run.
    pub sampler_noise: Option<TensorMap>,
}

/// What [`AnyDenoiser::generate_latents`] made.
#[derive(Debug, Clone)]
pub struct LatentOutput {
    /// `latents` f32 (Wan, HunyuanVideo `[B, C, F, H, W]`; CogVideoX `[B, F, C, H, W]`
    /// with the padding frames dropped, and `latents_padded` when padded), with the
    /// loop's layout and guidance as metadata.
    pub latents: TensorMap,
    /// Forwards per step, in words (for reports).
    pub forwards: &'static str,
}

/// The initial latents of `shape`: `given` (checked, converted to f32) or seeded host
/// noise (the same on every backend).
///
/// # Errors
/// Given latents of another shape.
pub fn initial_latents<B: ModelBackend>(
    given: Option<&TensorData>,
    seed: u64,
    shape: [usize; 5],
    device: &B::Device,
) -> Result<Tensor<B, 5>> {
    match given {
        Some(data) => {
            let mut map = TensorMap::default();
            map.insert("latents", data.clone());
            let t: Tensor<B, 5> = map.float("latents", DType::F32, device)?;
            if t.dims() != shape {
                return Err(PipelineError::Input(format!(
                    "initial latents are {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Ok(t)
        }
        None => Ok(Tensor::from_data(
            crate::seeded_normal(seed, &shape),
            (device, DType::F32),
        )),
    }
}

/// CogVideoX latent frames: `latent` rounded up to the temporal patch.
///
/// # Errors
/// A config of another class.
pub fn cog_frames(config: &ModelConfig, latent: usize) -> Result<LatentFrames> {
    let ModelConfig::CogVideoX(c) = config else {
        return Err(PipelineError::Input("not a CogVideoX config".into()));
    };
    let pt = c.patch_size_t;
    let additional = (pt - latent % pt) % pt;
    Ok(LatentFrames {
        latent,
        padded: latent + additional,
        additional,
    })
}

impl<B: ModelBackend> AnyDenoiser<B> {
    /// Runs the class's loop from the embeddings in `emb` (see the module docs) with
    /// `plan` (dense without); `on_step(i)` after each step.
    ///
    /// # Errors
    /// Missing embeddings (naming them), a sampler the class does not have, shapes that
    /// do not fit, a plan for another model or step count, model errors.
    pub fn generate_latents(
        &self,
        emb: &TensorMap,
        r: &LatentRequest,
        plan: Option<&Plan>,
        device: &B::Device,
        on_step: impl FnMut(usize),
    ) -> Result<LatentOutput> {
        let ok = matches!(
            (self.class(), r.sampler),
            (ModelClass::Wan, SamplerChoice::UniPc | SamplerChoice::Euler)
                | (ModelClass::HunyuanVideo, SamplerChoice::Euler)
                | (
                    ModelClass::CogVideoX,
                    SamplerChoice::Dpm | SamplerChoice::Ddim
                )
        );
        if !ok {
            return Err(PipelineError::Input(format!(
                "sampler {} does not apply to {}",
                r.sampler.name(),
                self.class().class_name()
            )));
        }
        if let Some(p) = plan {
            self.config().check_plan(p)?;
        }
        match self {
            AnyDenoiser::Wan(m) => generate_wan(m, r, emb, plan, device, on_step),
            AnyDenoiser::Hunyuan(m) => generate_hunyuan(m, r, emb, plan, device, on_step),
            AnyDenoiser::CogVideoX(m) => generate_cogvideox(m, r, emb, plan, device, on_step),
        }
    }
}

/// `negative_prompt_embeds` when classifier-free guidance is `on`.
fn negative_embeds<B: ModelBackend>(
    emb: &TensorMap,
    on: bool,
    dtype: DType,
    device: &B::Device,
) -> Result<Option<Tensor<B, 3>>> {
    if !on {
        return Ok(None);
    }
    emb.float("negative_prompt_embeds", dtype, device)
        .map(Some)
        .map_err(|e| {
            PipelineError::model(
                "guidance > 1 needs `negative_prompt_embeds` (diffusers encodes the negative \
                 prompt, \"\" by default); pass them or use --guidance 1",
                e,
            )
        })
}

/// Wan2.1: `vdit_wan::pipeline::denoise` (UniPC or Euler, two separate forwards per
/// step with CFG, as diffusers' `WanPipeline`).
fn generate_wan<B: ModelBackend>(
    model: &WanTransformer3DModel<B>,
    r: &LatentRequest,
    emb: &TensorMap,
    plan: Option<&Plan>,
    device: &B::Device,
    mut on_step: impl FnMut(usize),
) -> Result<LatentOutput> {
    let [f, h, w] = r.latent;
    let dtype = model.dtype;
    let prompt: Tensor<B, 3> = emb.float("prompt_embeds", dtype, device)?;
    let config = WanGenerateConfig {
        steps: r.steps,
        shift: r.shift.unwrap_or(3.0),
        guidance_scale: r.guidance,
        sampler: match r.sampler {
            SamplerChoice::Euler => WanSampler::Euler,
            _ => WanSampler::UniPc,
        },
    };
    let negative = negative_embeds::<B>(emb, config.uses_cfg(), dtype, device)?;
    let batch = prompt.dims()[0];
    let ctx = model.attention_context(f, h, w, plan)?;
    let shape = [batch, model.config.in_channels, f, h, w];
    let latents = initial_latents::<B>(r.initial_latents.as_ref(), r.seed, shape, device)?;
    let latents =
        vdit_wan::pipeline::denoise(model, latents, prompt, negative, &config, &ctx, |i, _| {
            on_step(i)
        })?;
    let mut out = TensorMap::default();
    out.insert("latents", latents.into_data());
    out.metadata.insert("layout".into(), "BCFHW".into());
    Ok(LatentOutput {
        latents: out,
        forwards: if config.uses_cfg() {
            "2 forwards"
        } else {
            "1 forward"
        },
    })
}

/// HunyuanVideo: `vdit_hunyuan::denoise` (flow Euler with the pipeline's sigmas,
/// embedded guidance, optional true CFG).
fn generate_hunyuan<B: ModelBackend>(
    model: &HunyuanVideoTransformer3DModel<B>,
    r: &LatentRequest,
    emb: &TensorMap,
    plan: Option<&Plan>,
    device: &B::Device,
    mut on_step: impl FnMut(usize),
) -> Result<LatentOutput> {
    let [f, h, w] = r.latent;
    let dtype = model.dtype;
    let prompt = PromptEmbeds::<B>::from_tensor_map(emb, false, dtype, device)?
        .ok_or_else(|| PipelineError::Input("no prompt_embeds".into()))?;
    let use_true_cfg = r.true_cfg > 1.0;
    let negative = if use_true_cfg {
        Some(
            PromptEmbeds::<B>::from_tensor_map(emb, true, dtype, device)?.ok_or_else(|| {
                PipelineError::Input(
                    "--true-cfg > 1 needs `negative_prompt_embeds`, \
                     `negative_pooled_prompt_embeds` (and optionally \
                     `negative_prompt_attention_mask`)"
                        .into(),
                )
            })?,
        )
    } else {
        None
    };
    let [batch, text_len, _] = prompt.prompt_embeds.dims();
    ModelConfig::Hunyuan(model.config.clone()).layout([f, h, w], text_len)?;
    let ctx = model.attention_context(f, h, w, text_len, plan)?;
    let latents = initial_latents::<B>(
        r.initial_latents.as_ref(),
        r.seed,
        [batch, model.config.in_channels, f, h, w],
        device,
    )?;
    let config = GenerateConfig {
        steps: r.steps,
        shift: r.shift.unwrap_or(7.0),
        guidance_scale: r.guidance,
        true_cfg_scale: r.true_cfg,
    };
    let latents = vdit_hunyuan::denoise(
        model,
        latents,
        &prompt,
        negative.as_ref(),
        &config,
        &ctx,
        |i, _| on_step(i),
    )?;
    let mut out = TensorMap::default();
    out.insert("latents", latents.cast(DType::F32).into_data());
    out.metadata.insert("layout".into(), "BCFHW".into());
    out.metadata
        .insert("true_cfg".into(), r.true_cfg.to_string());
    out.metadata.insert(
        "guidance_kind".into(),
        "embedded (model input guidance x 1000)".into(),
    );
    Ok(LatentOutput {
        latents: out,
        forwards: if use_true_cfg {
            "2 forwards"
        } else {
            "1 forward"
        },
    })
}

/// CogVideoX1.5: `vdit_cogvideox::pipeline::denoise` (batched CFG, static or dynamic;
/// DPM or DDIM), odd latent frame counts padded at the front.
fn generate_cogvideox<B: ModelBackend>(
    model: &CogVideoXTransformer3DModel<B>,
    r: &LatentRequest,
    emb: &TensorMap,
    plan: Option<&Plan>,
    device: &B::Device,
    mut on_step: impl FnMut(usize),
) -> Result<LatentOutput> {
    let [f, h, w] = r.latent;
    let config = ModelConfig::CogVideoX(model.config.clone());
    let frames = cog_frames(&config, f)?;
    let dtype = model.dtype;
    let prompt: Tensor<B, 3> = emb.float("prompt_embeds", dtype, device)?;
    let guidance = Guidance {
        scale: r.guidance,
        dynamic: r.dynamic_cfg,
    };
    let negative = negative_embeds::<B>(emb, guidance.enabled(), dtype, device)?;
    let [batch, text_len, _] = prompt.dims();
    let ctx = model.attention_context(frames.padded, h, w, text_len, plan)?;
    let mut sampler: Box<dyn Sampler<B>> = match r.sampler {
        SamplerChoice::Ddim => Box::new(CogVideoXDdim::new(r.steps)?),
        _ => {
            let mut dpm = CogVideoXDpm::<B>::new(r.steps)?;
            if let Some(map) = &r.sampler_noise {
                for i in 0..r.steps {
                    dpm.push_noise(map.float(&format!("noise.{i}"), DType::F32, device)?);
                }
            }
            Box::new(dpm)
        }
    };
    let shape = [batch, frames.padded, model.config.in_channels, h, w];
    let latents = initial_latents::<B>(r.initial_latents.as_ref(), r.seed, shape, device)?;
    // The DPM sampler draws its per-step noise from the backend RNG.
    B::seed(device, r.seed ^ 0xd9a5_d9a5);
    let latents = vdit_cogvideox::pipeline::denoise(
        model,
        sampler.as_mut(),
        latents,
        prompt,
        negative,
        guidance,
        &ctx,
        &mut |i, _| on_step(i),
    )?;
    let latents = latents.cast(DType::F32);
    let mut out = TensorMap::default();
    out.insert("latents", frames.drop_padding(latents.clone())?.into_data());
    if frames.additional > 0 {
        out.insert("latents_padded", latents.into_data());
    }
    for (k, v) in [
        ("layout", "BFCHW".to_owned()),
        ("dynamic_cfg", r.dynamic_cfg.to_string()),
        ("latent_frames", frames.latent.to_string()),
        ("padded_latent_frames", frames.padded.to_string()),
    ] {
        out.metadata.insert(k.into(), v);
    }
    Ok(LatentOutput {
        latents: out,
        forwards: if guidance.enabled() {
            "1 forward (batched cond + uncond)"
        } else {
            "1 forward"
        },
    })
}
