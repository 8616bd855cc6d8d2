//! The dispatch over the supported denoiser classes: configs keyed by diffusers
//! `_class_name` or a preset ([`ModelConfig`]), loaded models ([`AnyDenoiser`]), and
//! the inputs of one call ([`StepInputs`]).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use vdit_attention::AttentionContext;
use vdit_cogvideox::{CogVideoXConfig, CogVideoXConfigJson, CogVideoXTransformer3DModel};
use vdit_hunyuan::{
    HunyuanConfig, HunyuanConfigJson, HunyuanInputs, HunyuanVideoTransformer3DModel,
};
use vdit_models::io::TensorMap;
use vdit_models::{DiffusersConfig, ModelBackend, ModelClass};
use vdit_patterns::{Plan, VideoLayout};
use vdit_wan::{WanConfig, WanConfigJson, WanTransformer3DModel};

use crate::{PipelineError, Result};

/// The presets [`ModelConfig::preset`] accepts (aliases are listed by the model crates).
pub const PRESETS: &str = "wan2.1-t2v-1.3b, wan2.1-t2v-14b, hunyuan-video, cogvideox1.5-5b, \
                           and the tiny test models wan-tiny, hunyuan-tiny, cogvideox-tiny";

/// The runtime config of a supported denoiser.
#[derive(Debug, Clone)]
pub enum ModelConfig {
    /// Wan2.1 T2V.
    Wan(WanConfig),
    /// HunyuanVideo T2V.
    Hunyuan(HunyuanConfig),
    /// CogVideoX1.5 T2V.
    CogVideoX(CogVideoXConfig),
}

impl ModelConfig {
    /// The config in `dir/config.json`, the class from its `_class_name`.
    ///
    /// # Errors
    /// A missing or invalid `config.json`, an unsupported class (the error names it).
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let cfg = DiffusersConfig::from_model_dir(dir)?;
        Ok(match cfg.model_class()? {
            ModelClass::Wan => {
                ModelConfig::Wan(WanConfigJson::from_diffusers(&cfg)?.into_config()?)
            }
            ModelClass::HunyuanVideo => {
                ModelConfig::Hunyuan(HunyuanConfigJson::from_diffusers(&cfg)?.into_config()?)
            }
            ModelClass::CogVideoX => {
                ModelConfig::CogVideoX(CogVideoXConfigJson::from_diffusers(&cfg)?.into_config()?)
            }
        })
    }

    /// A preset by name (see [`PRESETS`]).
    ///
    /// # Errors
    /// An unknown name (the error lists the known ones).
    pub fn preset(name: &str) -> Result<Self> {
        if let Ok(c) = WanConfig::preset(name) {
            Ok(ModelConfig::Wan(c))
        } else if let Ok(c) = HunyuanConfig::preset(name) {
            Ok(ModelConfig::Hunyuan(c))
        } else if let Ok(c) = CogVideoXConfig::preset(name) {
            Ok(ModelConfig::CogVideoX(c))
        } else {
            Err(PipelineError::Input(format!(
                "unknown preset `{name}` (known: {PRESETS})"
            )))
        }
    }

    /// The model class.
    pub fn class(&self) -> ModelClass {
        match self {
            ModelConfig::Wan(_) => ModelClass::Wan,
            ModelConfig::Hunyuan(_) => ModelClass::HunyuanVideo,
            ModelConfig::CogVideoX(_) => ModelClass::CogVideoX,
        }
    }

    /// Latent channels in.
    pub fn in_channels(&self) -> usize {
        match self {
            ModelConfig::Wan(c) => c.in_channels,
            ModelConfig::Hunyuan(c) => c.in_channels,
            ModelConfig::CogVideoX(c) => c.in_channels,
        }
    }

    /// Text-encoder width.
    pub fn text_dim(&self) -> usize {
        match self {
            ModelConfig::Wan(c) => c.text_dim,
            ModelConfig::Hunyuan(c) => c.text_dim,
            ModelConfig::CogVideoX(c) => c.text_embed_dim,
        }
    }

    /// What a plan for this model must have: attention layers (Hunyuan: dual + single
    /// blocks), heads, head dim.
    pub fn plan_dims(&self) -> (usize, usize, usize) {
        match self {
            ModelConfig::Wan(c) => (c.layers, c.heads, c.head_dim),
            ModelConfig::Hunyuan(c) => (c.attention_layers(), c.heads, c.head_dim),
            ModelConfig::CogVideoX(c) => (c.layers, c.heads, c.head_dim),
        }
    }

    /// The self-attention layout of latents `latent` = `[frames, height, width]` with
    /// `text_len` text tokens (ignored by Wan, whose self-attention is video only).
    ///
    /// # Errors
    /// Latent sizes the patch does not divide (the error names the latent and class).
    pub fn layout(&self, latent: [usize; 3], text_len: usize) -> Result<VideoLayout> {
        let [f, h, w] = latent;
        let class = self.class().class_name();
        let layout = match self {
            ModelConfig::Wan(c) => vdit_wan::layout_for(c, f, h, w),
            ModelConfig::Hunyuan(c) => vdit_hunyuan::layout_for(c, f, h, w, text_len),
            ModelConfig::CogVideoX(c) => vdit_cogvideox::layout_for(c, f, h, w, text_len),
        };
        layout.map_err(|e| PipelineError::model(format!("latent {f}x{h}x{w} for {class}"), e))
    }

    /// Whether `plan` was made for this model (layers, heads, head dim).
    ///
    /// # Errors
    /// [`PipelineError::Plan`] naming both shapes.
    pub fn check_plan(&self, plan: &Plan) -> Result<()> {
        let (l, h, d) = self.plan_dims();
        plan.check_model(l, h, d).map_err(|e| {
            PipelineError::Plan(format!(
                "the plan ({} layers x {} heads x {}) does not fit {} ({l} x {h} x {d}): {e}",
                plan.model.layers,
                plan.model.heads,
                plan.model.head_dim,
                self.class().class_name()
            ))
        })
    }
}

/// The defaults of one model class at its real pipeline settings.
#[derive(Debug, Clone, Copy)]
pub struct ClassDefaults {
    /// Latent `[frames, height, width]` (CogVideoX: padded frame count).
    pub latent: [usize; 3],
    /// Text tokens (Wan: cross-attention keys; Hunyuan: padded length; CogVideoX: 226).
    pub text_len: usize,
    /// Video `[frames, height, width]` in pixels.
    pub video: [usize; 3],
}

/// Real-size defaults: Wan2.1 480p x 81 frames, HunyuanVideo 720p x 129 frames,
/// CogVideoX1.5 1360x768 x 81 frames.
pub fn class_defaults(class: ModelClass) -> ClassDefaults {
    match class {
        ModelClass::Wan => ClassDefaults {
            latent: [21, 60, 104],
            text_len: 512,
            video: [81, 480, 832],
        },
        ModelClass::HunyuanVideo => ClassDefaults {
            latent: [33, 90, 160],
            text_len: 256,
            video: [129, 720, 1280],
        },
        ModelClass::CogVideoX => ClassDefaults {
            latent: [22, 96, 170],
            text_len: 226,
            video: [81, 768, 1360],
        },
    }
}

/// Valid text tokens of random HunyuanVideo text when not given: half of the padded
/// length (the pipeline pads every prompt to 256 tokens and masks the padding).
pub fn default_valid_text(text_len: usize) -> usize {
    text_len.div_ceil(2)
}

/// A loaded denoiser of any supported class. It implements [`vdit_models::Denoiser`];
/// the class-specific loops take the boxed model of its variant.
pub enum AnyDenoiser<B: Backend> {
    /// Wan2.1 T2V.
    Wan(Box<WanTransformer3DModel<B>>),
    /// HunyuanVideo T2V.
    Hunyuan(Box<HunyuanVideoTransformer3DModel<B>>),
    /// CogVideoX1.5 T2V.
    CogVideoX(Box<CogVideoXTransformer3DModel<B>>),
}

/// Inputs of one denoiser call, on the device.
pub enum StepInputs<B: Backend> {
    /// Wan: latents `[B, C, F, H, W]`, timestep `[B]`, text `[B, L, D]`.
    Wan {
        /// Latents.
        latents: Tensor<B, 5>,
        /// Timesteps.
        timestep: Tensor<B, 1>,
        /// Text embeddings.
        text: Tensor<B, 3>,
    },
    /// HunyuanVideo: latents `[B, C, F, H, W]`, text with mask, pooled text, guidance.
    Hunyuan(HunyuanInputs<B>),
    /// CogVideoX: latents `[B, F, C, H, W]`, timestep `[B]`, text `[B, L, D]`.
    CogVideoX {
        /// Latents.
        latents: Tensor<B, 5>,
        /// Timesteps.
        timestep: Tensor<B, 1>,
        /// Text embeddings.
        text: Tensor<B, 3>,
    },
}

impl<B: Backend> StepInputs<B> {
    /// The inputs as host tensors under diffusers' argument names (an inputs file for
    /// `forward --inputs`).
    pub fn into_tensor_map(self) -> TensorMap {
        match self {
            StepInputs::Wan {
                latents,
                timestep,
                text,
            }
            | StepInputs::CogVideoX {
                latents,
                timestep,
                text,
            } => {
                let mut map = TensorMap::default();
                map.insert("hidden_states", latents.into_data());
                map.insert("timestep", timestep.into_data());
                map.insert("encoder_hidden_states", text.into_data());
                map
            }
            StepInputs::Hunyuan(inputs) => inputs.into_tensor_map(),
        }
    }
}

/// Settings of random inputs ([`AnyDenoiser::random_inputs`]).
#[derive(Debug, Clone, Copy)]
pub struct RandomInputs {
    /// Batch.
    pub batch: usize,
    /// Latent `[frames, height, width]`.
    pub latent: [usize; 3],
    /// Text tokens.
    pub text_len: usize,
    /// Valid (unpadded) text tokens, HunyuanVideo only.
    pub valid_text: usize,
    /// Timestep of every batch element.
    pub timestep: f32,
    /// Seed of the backend RNG.
    pub seed: u64,
}

impl<B: ModelBackend> AnyDenoiser<B> {
    /// Loads the denoiser in `dir` (`config.json` + safetensors; class from
    /// `_class_name`) in `dtype`.
    ///
    /// # Errors
    /// An unsupported class, missing or wrongly shaped weights (naming the key).
    pub fn load(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        let config = ModelConfig::from_model_dir(dir)?;
        let ctx = |e| PipelineError::model(format!("loading {}", dir.display()), e);
        Ok(match config {
            ModelConfig::Wan(_) => AnyDenoiser::Wan(Box::new(
                WanTransformer3DModel::load(dir, dtype, device).map_err(ctx)?,
            )),
            ModelConfig::Hunyuan(_) => AnyDenoiser::Hunyuan(Box::new(
                HunyuanVideoTransformer3DModel::load(dir, dtype, device).map_err(ctx)?,
            )),
            ModelConfig::CogVideoX(_) => AnyDenoiser::CogVideoX(Box::new(
                CogVideoXTransformer3DModel::load(dir, dtype, device).map_err(ctx)?,
            )),
        })
    }

    /// The model of `config` with seeded random weights.
    ///
    /// # Errors
    /// A config the model refuses.
    pub fn random(
        config: &ModelConfig,
        seed: u64,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(match config {
            ModelConfig::Wan(c) => AnyDenoiser::Wan(Box::new(WanTransformer3DModel::random(
                c, seed, dtype, device,
            )?)),
            ModelConfig::Hunyuan(c) => AnyDenoiser::Hunyuan(Box::new(
                HunyuanVideoTransformer3DModel::random(c, seed, dtype, device)?,
            )),
            ModelConfig::CogVideoX(c) => AnyDenoiser::CogVideoX(Box::new(
                CogVideoXTransformer3DModel::random(c, seed, dtype, device)?,
            )),
        })
    }

    /// The model as the class-independent trait object.
    pub fn as_denoiser(&self) -> &dyn vdit_models::Denoiser<B> {
        match self {
            AnyDenoiser::Wan(m) => &**m,
            AnyDenoiser::Hunyuan(m) => &**m,
            AnyDenoiser::CogVideoX(m) => &**m,
        }
    }

    /// The model's config.
    pub fn config(&self) -> ModelConfig {
        match self {
            AnyDenoiser::Wan(m) => ModelConfig::Wan(m.config.clone()),
            AnyDenoiser::Hunyuan(m) => ModelConfig::Hunyuan(m.config.clone()),
            AnyDenoiser::CogVideoX(m) => ModelConfig::CogVideoX(m.config.clone()),
        }
    }

    /// The model class.
    pub fn class(&self) -> ModelClass {
        self.as_denoiser().class()
    }

    /// The model's float dtype.
    pub fn dtype(&self) -> DType {
        self.as_denoiser().dtype()
    }

    /// The attention context for latents `[frames, height, width]` and `text_len` text
    /// tokens, dense or following `plan`.
    ///
    /// # Errors
    /// A latent size the patch does not divide, a plan for another model.
    pub fn attention_context(
        &self,
        latent: [usize; 3],
        text_len: usize,
        plan: Option<&Plan>,
    ) -> Result<AttentionContext> {
        self.config().layout(latent, text_len)?;
        Ok(self.as_denoiser().video_context(latent, text_len, plan)?)
    }

    /// Random inputs of one call (normal latents and text; HunyuanVideo: pooled text, a
    /// right-padded text mask with `valid_text` valid tokens, guidance 6.0 x 1000), the
    /// float tensors in the model dtype. The latent size is checked first.
    ///
    /// # Errors
    /// A zero text length, a latent size the patch does not divide, an invalid
    /// `valid_text`.
    pub fn random_inputs(&self, r: &RandomInputs, device: &B::Device) -> Result<StepInputs<B>> {
        if r.text_len == 0 {
            return Err(PipelineError::Input(
                "the text length must be positive".into(),
            ));
        }
        let config = self.config();
        config.layout(r.latent, r.text_len)?;
        let b = r.batch.max(1);
        let [f, h, w] = r.latent;
        let (c, d, dtype) = (config.in_channels(), config.text_dim(), self.dtype());
        let normal = Distribution::Normal(0.0, 1.0);
        B::seed(device, r.seed);
        let timestep = Tensor::<B, 1>::from_data(
            TensorData::new(vec![r.timestep; b], [b]),
            (device, DType::F32),
        );
        Ok(match self {
            AnyDenoiser::Wan(_) => StepInputs::Wan {
                latents: Tensor::<B, 5>::random([b, c, f, h, w], normal, (device, DType::F32))
                    .cast(dtype),
                timestep,
                text: Tensor::<B, 3>::random([b, r.text_len, d], normal, (device, DType::F32))
                    .cast(dtype),
            },
            AnyDenoiser::Hunyuan(m) => {
                if r.valid_text == 0 || r.valid_text > r.text_len {
                    return Err(PipelineError::Input(format!(
                        "--valid-text must be in 1..={} (the text length), got {}",
                        r.text_len, r.valid_text
                    )));
                }
                let mut inputs = HunyuanInputs::random(
                    &m.config,
                    b,
                    r.latent,
                    r.text_len,
                    Some(r.valid_text),
                    device,
                )?;
                inputs.hidden_states = inputs.hidden_states.cast(dtype);
                inputs.encoder_hidden_states = inputs.encoder_hidden_states.cast(dtype);
                inputs.pooled_projections = inputs.pooled_projections.cast(dtype);
                inputs.timestep = timestep;
                StepInputs::Hunyuan(inputs)
            }
            AnyDenoiser::CogVideoX(_) => StepInputs::CogVideoX {
                latents: Tensor::<B, 5>::random([b, f, c, h, w], normal, (device, DType::F32))
                    .cast(dtype),
                timestep,
                text: Tensor::<B, 3>::random([b, r.text_len, d], normal, (device, DType::F32))
                    .cast(dtype),
            },
        })
    }

    /// One call on device inputs through `ctx` (whose layout must fit them).
    ///
    /// # Errors
    /// Inputs of another class, model errors.
    pub fn step(&self, inputs: &StepInputs<B>, ctx: &AttentionContext) -> Result<Tensor<B, 5>> {
        Ok(match (self, inputs) {
            (
                AnyDenoiser::Wan(m),
                StepInputs::Wan {
                    latents,
                    timestep,
                    text,
                },
            ) => m.forward(latents.clone(), timestep.clone(), text.clone(), ctx)?,
            (AnyDenoiser::Hunyuan(m), StepInputs::Hunyuan(inputs)) => {
                m.forward(inputs.clone(), ctx)?
            }
            (
                AnyDenoiser::CogVideoX(m),
                StepInputs::CogVideoX {
                    latents,
                    timestep,
                    text,
                },
            ) => m.forward(latents.clone(), timestep.clone(), text.clone(), ctx)?,
            _ => {
                return Err(PipelineError::Input(format!(
                    "the inputs are not for {}",
                    self.class().class_name()
                )));
            }
        })
    }

    /// One call with diffusers-named inputs (`hidden_states`, `timestep`,
    /// `encoder_hidden_states`; HunyuanVideo also `encoder_attention_mask`,
    /// `pooled_projections`, `guidance`).
    ///
    /// # Errors
    /// Missing, unknown or wrongly shaped inputs; a plan for another model.
    pub fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>> {
        Ok(self.as_denoiser().forward_inputs(inputs, plan, device)?)
    }
}
