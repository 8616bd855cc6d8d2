//! `cargo xtask forward`: one denoiser call (Wan2.1, HunyuanVideo or CogVideoX1.5) from a
//! diffusers model directory or a preset with random weights, on inputs from a file or
//! random inputs at a given latent size; the output is written under `sample`.
//!
//! This module also holds what `generate` and `bench` share: the backend switch
//! ([`BackendKind`], [`with_backend!`]), the model arguments ([`ModelArgs`]), the model
//! configs ([`ModelConfig`], keyed by diffusers `_class_name` or a preset) and the
//! loaded denoisers ([`Denoiser`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use vdit_attention::AttentionContext;
use vdit_cogvideox::{CogVideoXConfig, CogVideoXConfigJson, CogVideoXTransformer3DModel};
use vdit_hunyuan::{
    HunyuanConfig, HunyuanConfigJson, HunyuanInputs, HunyuanVideoTransformer3DModel,
};
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_models::{DiffusersConfig, ModelClass, parse_dtype};
use vdit_patterns::{Plan, VideoLayout};
use vdit_wan::{WanConfig, WanConfigJson, WanTransformer3DModel};

/// Which Burn backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// burn-flex on the CPU.
    Cpu,
    /// `burn_cubecl::CubeBackend<WgpuRuntime>` (xtask feature `wgpu`).
    Wgpu,
    /// `burn_cubecl::CubeBackend<CudaRuntime>` (xtask feature `cuda`).
    Cuda,
}

/// Runs `$body` (an `anyhow::Result`) with `$B` bound to the backend type of `$kind` and
/// `$device` to its default device; backends not compiled in are an error naming the
/// feature. GPU bodies run under `checks::gpu_guarded` (a runtime panic, e.g. device out
/// of memory, becomes an error), CUDA only after `checks::check_cuda_driver`.
macro_rules! with_backend {
    ($kind:expr, |$B:ident, $device:ident| $body:expr) => {{
        use $crate::commands::forward::BackendKind;
        match $kind {
            BackendKind::Cpu => {
                type $B = burn::backend::Flex;
                let $device = <$B as burn::tensor::backend::BackendTypes>::Device::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => {
                type $B = burn::backend::wgpu::CubeBackend<
                    burn::backend::wgpu::WgpuRuntime,
                    f32,
                    i32,
                    u32,
                >;
                let $device = burn::backend::wgpu::WgpuDevice::default();
                $crate::commands::checks::gpu_guarded("wgpu", || $body)
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                $crate::commands::checks::check_cuda_driver()?;
                type $B = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
                let $device = cubecl::cuda::CudaDevice::default();
                $crate::commands::checks::gpu_guarded("cuda", || $body)
            }
            #[allow(unreachable_patterns)]
            other => anyhow::bail!(
                "backend {other:?} is not compiled in: run with `cargo xtask --features {}` \
                 (i.e. `cargo run -p xtask --features {} -- ...`)",
                format!("{other:?}").to_lowercase(),
                format!("{other:?}").to_lowercase()
            ),
        }
    }};
}
pub(crate) use with_backend;

/// The presets `--preset` accepts (aliases are listed by the model crates).
pub const PRESETS: &str = "wan2.1-t2v-1.3b, wan2.1-t2v-14b, hunyuan-video, cogvideox1.5-5b, \
                           and the tiny test models wan-tiny, hunyuan-tiny, cogvideox-tiny";

/// Where the model comes from and how it runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// diffusers model directory (`config.json` + `diffusion_pytorch_model*.safetensors`);
    /// the model class (Wan2.1, HunyuanVideo, CogVideoX1.5) comes from `_class_name`.
    #[arg(long, required_unless_present = "preset")]
    pub model_dir: Option<PathBuf>,
    /// Use a preset config instead of `--model-dir` (needs `--random-weights`):
    /// `wan2.1-t2v-1.3b`, `wan2.1-t2v-14b`, `hunyuan-video`, `cogvideox1.5-5b`, or the tiny
    /// test models `wan-tiny`, `hunyuan-tiny`, `cogvideox-tiny`.
    #[arg(long, conflicts_with = "model_dir", requires = "random_weights")]
    pub preset: Option<String>,
    /// Random weights (seeded) instead of the checkpoint: for benchmarks at real sizes.
    #[arg(long)]
    pub random_weights: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub weights_seed: u64,
    /// Backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Model float dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Sparse attention plan (RON); dense attention without it. Its model (layers, heads,
    /// head dim) must match: HunyuanVideo numbers the dual-stream blocks first, then the
    /// single-stream blocks.
    #[arg(long)]
    pub plan: Option<PathBuf>,
}

impl ModelArgs {
    /// The parsed dtype.
    pub fn dtype(&self) -> Result<DType> {
        Ok(parse_dtype(&self.dtype)?)
    }

    /// The plan, if any.
    pub fn plan(&self) -> Result<Option<Plan>> {
        self.plan
            .as_deref()
            .map(|p| Plan::load(p).with_context(|| format!("loading plan {}", p.display())))
            .transpose()
    }
}

/// The tiny Wan2.1-shaped model of the CPU benchmark and tests (preset `wan-tiny`):
/// 2 layers, 4 heads x 32, text width 64, FFN 256, 16 latent channels.
pub fn wan_tiny() -> Result<WanConfig> {
    Ok(WanConfigJson {
        num_attention_heads: 4,
        attention_head_dim: 32,
        text_dim: 64,
        ffn_dim: 256,
        num_layers: 2,
        ..Default::default()
    }
    .into_config()?)
}

fn wan_preset(name: &str) -> Result<WanConfig> {
    if name.eq_ignore_ascii_case("wan-tiny") {
        return wan_tiny();
    }
    Ok(WanConfig::preset(name)?)
}

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
    /// The config `args` select: `config.json` of `--model-dir` (class from
    /// `_class_name`) or `--preset`.
    pub fn resolve(args: &ModelArgs) -> Result<Self> {
        match (&args.model_dir, &args.preset) {
            (Some(dir), _) => {
                let cfg = DiffusersConfig::from_model_dir(dir)?;
                Ok(match cfg.model_class()? {
                    ModelClass::Wan => {
                        ModelConfig::Wan(WanConfigJson::from_diffusers(&cfg)?.into_config()?)
                    }
                    ModelClass::HunyuanVideo => ModelConfig::Hunyuan(
                        HunyuanConfigJson::from_diffusers(&cfg)?.into_config()?,
                    ),
                    ModelClass::CogVideoX => ModelConfig::CogVideoX(
                        CogVideoXConfigJson::from_diffusers(&cfg)?.into_config()?,
                    ),
                })
            }
            (None, Some(preset)) => Self::preset(preset),
            (None, None) => bail!("give --model-dir or --preset"),
        }
    }

    /// A preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        if let Ok(c) = wan_preset(name) {
            Ok(ModelConfig::Wan(c))
        } else if let Ok(c) = HunyuanConfig::preset(name) {
            Ok(ModelConfig::Hunyuan(c))
        } else if let Ok(c) = CogVideoXConfig::preset(name) {
            Ok(ModelConfig::CogVideoX(c))
        } else {
            bail!("unknown preset `{name}` (known: {PRESETS})")
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
    /// Latent sizes the patch does not divide are an error naming the patch.
    pub fn layout(&self, latent: [usize; 3], text_len: usize) -> Result<VideoLayout> {
        let [f, h, w] = latent;
        let class = self.class().class_name();
        let layout = match self {
            ModelConfig::Wan(c) => vdit_wan::layout_for(c, f, h, w),
            ModelConfig::Hunyuan(c) => vdit_hunyuan::layout_for(c, f, h, w, text_len),
            ModelConfig::CogVideoX(c) => vdit_cogvideox::layout_for(c, f, h, w, text_len),
        };
        layout.with_context(|| format!("latent {f}x{h}x{w} for {class}"))
    }

    /// Whether `plan` was made for this model (layers, heads, head dim).
    pub fn check_plan(&self, plan: &Plan) -> Result<()> {
        let (l, h, d) = self.plan_dims();
        plan.check_model(l, h, d).map_err(|e| {
            anyhow::anyhow!(
                "the plan ({} layers x {} heads x {}) does not fit {} ({l} x {h} x {d}): {e}",
                plan.model.layers,
                plan.model.heads,
                plan.model.head_dim,
                self.class().class_name()
            )
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
    /// Video `[frames, height, width]` in pixels (`generate`).
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

/// A loaded denoiser of any supported class (the dispatch table of `forward`,
/// `generate` and `bench`; the model-driven `search` takes the Wan2.1 variant).
pub enum Denoiser<B: Backend> {
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

/// Settings of random inputs ([`Denoiser::random_inputs`]).
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

impl<B: ModelBackend> Denoiser<B> {
    /// Loads the model `args` describe (class from `_class_name` or the preset).
    pub fn load(args: &ModelArgs, device: &B::Device) -> Result<Self> {
        let config = ModelConfig::resolve(args)?;
        let dtype = args.dtype()?;
        if args.random_weights {
            return Self::random(&config, args.weights_seed, dtype, device);
        }
        let dir = args
            .model_dir
            .as_deref()
            .context("--model-dir is required without --random-weights")?;
        let ctx = || format!("loading {}", dir.display());
        Ok(match config {
            ModelConfig::Wan(_) => Denoiser::Wan(Box::new(
                WanTransformer3DModel::load(dir, dtype, device).with_context(ctx)?,
            )),
            ModelConfig::Hunyuan(_) => Denoiser::Hunyuan(Box::new(
                HunyuanVideoTransformer3DModel::load(dir, dtype, device).with_context(ctx)?,
            )),
            ModelConfig::CogVideoX(_) => Denoiser::CogVideoX(Box::new(
                CogVideoXTransformer3DModel::load(dir, dtype, device).with_context(ctx)?,
            )),
        })
    }

    /// The model of `config` with seeded random weights.
    pub fn random(
        config: &ModelConfig,
        seed: u64,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(match config {
            ModelConfig::Wan(c) => Denoiser::Wan(Box::new(WanTransformer3DModel::random(
                c, seed, dtype, device,
            )?)),
            ModelConfig::Hunyuan(c) => Denoiser::Hunyuan(Box::new(
                HunyuanVideoTransformer3DModel::random(c, seed, dtype, device)?,
            )),
            ModelConfig::CogVideoX(c) => Denoiser::CogVideoX(Box::new(
                CogVideoXTransformer3DModel::random(c, seed, dtype, device)?,
            )),
        })
    }

    /// The model's config.
    pub fn config(&self) -> ModelConfig {
        match self {
            Denoiser::Wan(m) => ModelConfig::Wan(m.config.clone()),
            Denoiser::Hunyuan(m) => ModelConfig::Hunyuan(m.config.clone()),
            Denoiser::CogVideoX(m) => ModelConfig::CogVideoX(m.config.clone()),
        }
    }

    /// The model class.
    pub fn class(&self) -> ModelClass {
        match self {
            Denoiser::Wan(_) => ModelClass::Wan,
            Denoiser::Hunyuan(_) => ModelClass::HunyuanVideo,
            Denoiser::CogVideoX(_) => ModelClass::CogVideoX,
        }
    }

    /// The model's float dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Denoiser::Wan(m) => m.dtype,
            Denoiser::Hunyuan(m) => m.dtype,
            Denoiser::CogVideoX(m) => m.dtype,
        }
    }

    /// The attention context for latents `[frames, height, width]` and `text_len` text
    /// tokens, dense or following `plan`.
    pub fn attention_context(
        &self,
        latent: [usize; 3],
        text_len: usize,
        plan: Option<&Plan>,
    ) -> Result<AttentionContext> {
        self.config().layout(latent, text_len)?;
        let [f, h, w] = latent;
        Ok(match self {
            Denoiser::Wan(m) => m.attention_context(f, h, w, plan)?,
            Denoiser::Hunyuan(m) => m.attention_context(f, h, w, text_len, plan)?,
            Denoiser::CogVideoX(m) => m.attention_context(f, h, w, text_len, plan)?,
        })
    }

    /// Random inputs of one call (normal latents and text; HunyuanVideo: pooled text, a
    /// right-padded text mask with `valid_text` valid tokens, guidance 6.0 x 1000), the
    /// float tensors in the model dtype. The latent size is checked first.
    pub fn random_inputs(&self, r: &RandomInputs, device: &B::Device) -> Result<StepInputs<B>> {
        if r.text_len == 0 {
            bail!("the text length must be positive");
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
            Denoiser::Wan(_) => StepInputs::Wan {
                latents: Tensor::<B, 5>::random([b, c, f, h, w], normal, (device, DType::F32))
                    .cast(dtype),
                timestep,
                text: Tensor::<B, 3>::random([b, r.text_len, d], normal, (device, DType::F32))
                    .cast(dtype),
            },
            Denoiser::Hunyuan(m) => {
                if r.valid_text == 0 || r.valid_text > r.text_len {
                    bail!(
                        "--valid-text must be in 1..={} (the text length), got {}",
                        r.text_len,
                        r.valid_text
                    );
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
            Denoiser::CogVideoX(_) => StepInputs::CogVideoX {
                latents: Tensor::<B, 5>::random([b, f, c, h, w], normal, (device, DType::F32))
                    .cast(dtype),
                timestep,
                text: Tensor::<B, 3>::random([b, r.text_len, d], normal, (device, DType::F32))
                    .cast(dtype),
            },
        })
    }

    /// One call on device inputs through `ctx` (whose layout must fit them).
    pub fn step(&self, inputs: &StepInputs<B>, ctx: &AttentionContext) -> Result<Tensor<B, 5>> {
        Ok(match (self, inputs) {
            (
                Denoiser::Wan(m),
                StepInputs::Wan {
                    latents,
                    timestep,
                    text,
                },
            ) => m.forward(latents.clone(), timestep.clone(), text.clone(), ctx)?,
            (Denoiser::Hunyuan(m), StepInputs::Hunyuan(inputs)) => {
                m.forward(inputs.clone(), ctx)?
            }
            (
                Denoiser::CogVideoX(m),
                StepInputs::CogVideoX {
                    latents,
                    timestep,
                    text,
                },
            ) => m.forward(latents.clone(), timestep.clone(), text.clone(), ctx)?,
            _ => bail!(
                "the inputs are not for {} (internal error)",
                self.class().class_name()
            ),
        })
    }

    /// One call with diffusers-named inputs (`hidden_states`, `timestep`,
    /// `encoder_hidden_states`; HunyuanVideo also `encoder_attention_mask`,
    /// `pooled_projections`, `guidance`).
    pub fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>> {
        Ok(match self {
            Denoiser::Wan(m) => m.forward_inputs(inputs, plan, device)?,
            Denoiser::Hunyuan(m) => m.forward_inputs(inputs, plan, device)?,
            Denoiser::CogVideoX(m) => m.forward_inputs(inputs, plan, device)?,
        })
    }
}

/// Arguments of `cargo xtask forward`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Inputs (safetensors) under diffusers' argument names (`hidden_states`,
    /// `timestep`, `encoder_hidden_states`; HunyuanVideo also `encoder_attention_mask`,
    /// `pooled_projections`, `guidance`), any int/float dtype.
    #[arg(long, required_unless_present = "random_inputs")]
    pub inputs: Option<PathBuf>,
    /// Random inputs instead of `--inputs` (see `--latent`, `--text-len`, `--valid-text`,
    /// `--batch`, `--timestep`); HunyuanVideo gets random pooled text and guidance 6.0.
    #[arg(long, conflicts_with = "inputs")]
    pub random_inputs: bool,
    /// Latent size `FxHxW` for `--random-inputs`. Default: the model's real size, Wan
    /// 21x60x104 (480p x 81 frames), HunyuanVideo 33x90x160 (720p x 129 frames),
    /// CogVideoX 22x96x170 (1360x768 x 81 frames: 21 latent frames padded to 22; its
    /// latents are `[B, F, C, H, W]` and F must be even).
    #[arg(long)]
    pub latent: Option<String>,
    /// Text tokens for `--random-inputs`. Default: Wan 512, HunyuanVideo 256 (padded),
    /// CogVideoX 226.
    #[arg(long)]
    pub text_len: Option<usize>,
    /// Valid (unpadded) text tokens of HunyuanVideo's random text mask; default half the
    /// text length.
    #[arg(long)]
    pub valid_text: Option<usize>,
    /// Batch for `--random-inputs`.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timestep for `--random-inputs`.
    #[arg(long, default_value_t = 500.0)]
    pub timestep: f32,
    /// Write the inputs used (e.g. the random ones) to this file (safetensors).
    #[arg(long)]
    pub save_inputs: Option<PathBuf>,
    /// Output file (safetensors, key `sample`), written atomically.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run the forward this many times and print the wall time of each (after a
    /// device sync).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Compare the output with `sample` in this file and print the relative L2 error.
    #[arg(long)]
    pub expect: Option<PathBuf>,
}

impl ModelArgs {
    /// The input files of the model: `config.json`, the weights index or single file
    /// under `--model-dir`, and `--plan`; for the output checks.
    pub fn input_files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut v = Vec::new();
        if let Some(d) = &self.model_dir {
            v.push(("--model-dir config.json", d.join("config.json")));
            for name in [
                vdit_models::safetensors_file::WEIGHTS_INDEX_NAME,
                vdit_models::safetensors_file::WEIGHTS_NAME,
            ] {
                v.push(("--model-dir weights", d.join(name)));
            }
        }
        if let Some(p) = &self.plan {
            v.push(("--plan", p.clone()));
        }
        v
    }
}

impl Args {
    /// Checks, before any work, that `--out` and `--save-inputs` can be written and
    /// overwrite no input (`--inputs`, `--expect`, the model's files, `--plan`) nor each
    /// other.
    pub fn check_paths(&self) -> Result<()> {
        let mut outputs: Vec<(&str, &Path)> = Vec::new();
        if let Some(p) = &self.out {
            outputs.push(("--out", p));
        }
        if let Some(p) = &self.save_inputs {
            outputs.push(("--save-inputs", p));
        }
        let model_files = self.model.input_files();
        let mut inputs: Vec<(&str, &Path)> =
            model_files.iter().map(|(w, p)| (*w, p.as_path())).collect();
        if let Some(p) = &self.inputs {
            inputs.push(("--inputs", p));
        }
        if let Some(p) = &self.expect {
            inputs.push(("--expect", p));
        }
        super::checks::check_outputs(&outputs, &inputs)
    }
}

/// Parses `FxHxW`.
pub fn parse_latent(s: &str) -> Result<[usize; 3]> {
    let v: Vec<usize> = s
        .split(['x', 'X'])
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("latent size `{s}` must be FxHxW"))?;
    match v.as_slice() {
        &[f, h, w] if f > 0 && h > 0 && w > 0 => Ok([f, h, w]),
        _ => bail!("latent size `{s}` must be FxHxW with positive sizes"),
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    with_backend!(args.model.backend, |B, device| run_on::<B>(&args, &device)
        .map(|_| ()))
}

/// Runs `forward` on backend `B`; returns the output written (as host data).
pub fn run_on<B: ModelBackend>(args: &Args, device: &B::Device) -> Result<TensorMap> {
    // Text encoders and the Wan VAE (not denoisers): see `t2v_parts`.
    if let Some(map) = super::t2v_parts::run_part::<B>(args, device)? {
        return Ok(map);
    }
    let t0 = Instant::now();
    super::checks::check_repeats("--repeat", args.repeat)?;
    args.check_paths()?;
    let config = ModelConfig::resolve(&args.model)?;
    let class = config.class();
    let plan = args.model.plan()?;
    if let Some(p) = &plan {
        config.check_plan(p)?;
    }
    // Check the random-input sizes before loading (real models take a while).
    let random = if args.random_inputs || args.inputs.is_none() {
        let d = class_defaults(class);
        let latent = match &args.latent {
            Some(s) => parse_latent(s)?,
            None => d.latent,
        };
        let text_len = args.text_len.unwrap_or(d.text_len);
        if text_len == 0 {
            bail!("--text-len must be positive");
        }
        config.layout(latent, text_len)?;
        let batch = args.batch.max(1);
        super::checks::check_host_elements(
            "--latent",
            &[batch, config.in_channels(), latent[0], latent[1], latent[2]],
        )?;
        super::checks::check_host_elements("--text-len", &[batch, text_len, config.text_dim()])?;
        let valid_text = args
            .valid_text
            .unwrap_or_else(|| default_valid_text(text_len));
        if class == ModelClass::HunyuanVideo && (valid_text == 0 || valid_text > text_len) {
            bail!("--valid-text must be in 1..={text_len} (--text-len), got {valid_text}");
        }
        Some(RandomInputs {
            batch: args.batch.max(1),
            latent,
            text_len,
            valid_text,
            timestep: args.timestep,
            seed: 1,
        })
    } else {
        None
    };
    let model = Denoiser::<B>::load(&args.model, device)?;
    eprintln!(
        "loaded {} in {:.2}s",
        class.class_name(),
        t0.elapsed().as_secs_f64()
    );
    let inputs = match (&args.inputs, &random) {
        (Some(p), _) => {
            TensorMap::read(p).with_context(|| format!("reading inputs {}", p.display()))?
        }
        (None, Some(r)) => model.random_inputs(r, device)?.into_tensor_map(),
        (None, None) => unreachable!("random settings exist without --inputs"),
    };
    // Serialised now (the inputs are consumed below), written with `--out` at the end.
    let saved_inputs = match &args.save_inputs {
        Some(p) => Some((p.as_path(), inputs.to_bytes(p)?)),
        None => None,
    };
    timed_runs::<B>(args, device, saved_inputs, || {
        model.forward_inputs(&inputs, plan.as_ref(), device)
    })
}

/// Runs `call` `--repeat` times with a device sync and wall time each, then writes /
/// checks the output.
fn timed_runs<B: ModelBackend>(
    args: &Args,
    device: &B::Device,
    saved_inputs: Option<(&Path, Vec<u8>)>,
    call: impl Fn() -> Result<Tensor<B, 5>>,
) -> Result<TensorMap> {
    let mut output = None;
    for i in 0..args.repeat.max(1) {
        let t = Instant::now();
        let out = call()?;
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
        if args.repeat > 1 {
            eprintln!("forward {i}: {:.3}s", t.elapsed().as_secs_f64());
        } else {
            eprintln!("forward: {:.3}s", t.elapsed().as_secs_f64());
        }
        output = Some(out);
    }
    let out = output.expect("at least one run");
    let mut map = TensorMap::default();
    map.insert("sample", out.into_data());
    if let Some(expect) = &args.expect {
        let err = rel_l2_vs_file(&map, expect)?;
        println!("relative L2 error vs {}: {err:.3e}", expect.display());
    }
    // Both outputs are staged and renamed together, only after the run succeeded.
    let mut outputs = vdit_patterns::OutputSet::new();
    if let Some((path, bytes)) = &saved_inputs {
        outputs
            .stage(path, bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.out {
        outputs
            .stage(path, &map.to_bytes(path)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    outputs
        .commit()
        .context("renaming the outputs into place")?;
    if let Some((path, _)) = &saved_inputs {
        eprintln!("wrote inputs to {}", path.display());
    }
    if let Some(path) = &args.out {
        eprintln!("wrote {}", path.display());
    }
    Ok(map)
}

/// `||out - expected|| / ||expected||` over `sample`.
pub fn rel_l2_vs_file(out: &TensorMap, expected: &Path) -> Result<f64> {
    let want = TensorMap::read(expected)?.values_f32("sample")?;
    let got = out.values_f32("sample")?;
    if want.len() != got.len() {
        bail!(
            "output has {} values, {} has {}",
            got.len(),
            expected.display(),
            want.len()
        );
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(&want) {
        num += ((g - w) as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    Ok((num / den.max(f64::MIN_POSITIVE)).sqrt())
}
