//! `cargo xtask forward`: one denoiser call from a diffusers model directory (or a preset
//! with random weights) and an inputs file, written to an outputs file under `sample`.
//!
//! This module also holds what `generate` shares: the backend switch ([`BackendKind`],
//! [`with_backend!`]), the model arguments ([`ModelArgs`]) and the model dispatch table
//! ([`Denoiser`], keyed by diffusers `_class_name`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use vdit_attention::{AttentionContext, SparseAttentionBackend};
use vdit_cogvideox::{CogVideoXConfig, CogVideoXConfigJson, CogVideoXTransformer3DModel};
use vdit_hunyuan::{HunyuanConfig, HunyuanConfigJson, HunyuanVideoTransformer3DModel};
use vdit_models::io::TensorMap;
use vdit_models::{DiffusersConfig, ModelClass, parse_dtype};
use vdit_patterns::Plan;
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

/// Runs `$body` with `$B` bound to the backend type of `$kind` and `$device` to its
/// default device; backends not compiled in are an error naming the feature.
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
                $body
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                type $B = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
                let $device = cubecl::cuda::CudaDevice::default();
                $body
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

/// Where the model comes from and how it runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// diffusers model directory (`config.json` + `diffusion_pytorch_model*.safetensors`).
    #[arg(long, required_unless_present = "preset")]
    pub model_dir: Option<PathBuf>,
    /// Use a preset config instead of `--model-dir` (needs `--random-weights`):
    /// `wan2.1-t2v-1.3b`, `wan2.1-t2v-14b`, `hunyuan-video`, `cogvideox1.5-5b`
    /// (HunyuanVideo and CogVideoX need `--inputs`).
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
    /// Sparse attention plan (RON); dense attention without it.
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

/// A loaded denoiser of any supported class (the dispatch table).
pub enum Denoiser<B: Backend> {
    /// Wan2.1 T2V.
    Wan(Box<WanTransformer3DModel<B>>),
}

impl<B: SparseAttentionBackend> Denoiser<B> {
    /// Loads the model `args` describe; the class comes from `config.json`'s
    /// `_class_name` (or the preset).
    pub fn load(args: &ModelArgs, device: &B::Device) -> Result<Self> {
        let dtype = args.dtype()?;
        let (class, config) = match (&args.model_dir, &args.preset) {
            (Some(dir), _) => {
                let cfg = DiffusersConfig::from_model_dir(dir)?;
                (cfg.model_class()?, Some(cfg))
            }
            (None, Some(preset)) => (preset_class(preset)?, None),
            (None, None) => bail!("give --model-dir or --preset"),
        };
        match class {
            ModelClass::Wan => {
                let wan_config = match (&config, &args.preset) {
                    (Some(c), _) => WanConfigJson::from_diffusers(c)?.into_config()?,
                    (None, Some(p)) => WanConfig::preset(p)?,
                    _ => unreachable!("checked above"),
                };
                let model = if args.random_weights {
                    WanTransformer3DModel::random(&wan_config, args.weights_seed, dtype, device)?
                } else {
                    let dir = args
                        .model_dir
                        .as_deref()
                        .expect("model dir when not random");
                    WanTransformer3DModel::load(dir, dtype, device)
                        .with_context(|| format!("loading {}", dir.display()))?
                };
                Ok(Denoiser::Wan(Box::new(model)))
            }
            ModelClass::HunyuanVideo | ModelClass::CogVideoX => bail!(
                "{} runs in `cargo xtask forward` (from --inputs) but not in this loop: \
                 use the vdit-{} crate's own pipeline",
                class.class_name(),
                class.short_name()
            ),
        }
    }

    /// One call with diffusers-named inputs.
    pub fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>> {
        match self {
            Denoiser::Wan(m) => Ok(m.forward_inputs(inputs, plan, device)?),
        }
    }

    /// The model class.
    pub fn class(&self) -> ModelClass {
        match self {
            Denoiser::Wan(_) => ModelClass::Wan,
        }
    }

    /// Input channels, text width and the model's float dtype.
    pub fn io_dims(&self) -> (usize, usize, DType) {
        match self {
            Denoiser::Wan(m) => (m.config.in_channels, m.config.text_dim, m.dtype),
        }
    }

    /// The attention context for latents `frames x height x width`.
    pub fn attention_context(
        &self,
        latent: [usize; 3],
        plan: Option<&Plan>,
    ) -> Result<AttentionContext> {
        match self {
            Denoiser::Wan(m) => Ok(m.attention_context(latent[0], latent[1], latent[2], plan)?),
        }
    }

    /// One call on tensors: latents `[B, C, F, H, W]`, timestep `[B]`, text `[B, L, D]`.
    pub fn forward(
        &self,
        latents: Tensor<B, 5>,
        timestep: Tensor<B, 1>,
        text: Tensor<B, 3>,
        ctx: &AttentionContext,
    ) -> Result<Tensor<B, 5>> {
        match self {
            Denoiser::Wan(m) => Ok(m.forward(latents, timestep, text, ctx)?),
        }
    }
}

fn preset_class(preset: &str) -> Result<ModelClass> {
    if WanConfig::preset(preset).is_ok() {
        Ok(ModelClass::Wan)
    } else if HunyuanConfig::preset(preset).is_ok() {
        Ok(ModelClass::HunyuanVideo)
    } else if CogVideoXConfig::preset(preset).is_ok() {
        Ok(ModelClass::CogVideoX)
    } else {
        bail!(
            "unknown preset `{preset}` (known: wan2.1-t2v-1.3b, wan2.1-t2v-14b, hunyuan-video, cogvideox1.5-5b)"
        )
    }
}

/// Arguments of `cargo xtask forward`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Inputs (safetensors) under diffusers' argument names (`hidden_states`,
    /// `timestep`, `encoder_hidden_states`, ...), any int/float dtype.
    #[arg(long, required_unless_present = "random_inputs")]
    pub inputs: Option<PathBuf>,
    /// Random inputs instead of `--inputs` (see `--latent`, `--text-len`, `--batch`).
    #[arg(long, conflicts_with = "inputs")]
    pub random_inputs: bool,
    /// Latent size `FxHxW` for `--random-inputs` (Wan 480p x 81 frames: 21x60x104).
    #[arg(long, default_value = "21x60x104")]
    pub latent: String,
    /// Text tokens for `--random-inputs`.
    #[arg(long, default_value_t = 512)]
    pub text_len: usize,
    /// Batch for `--random-inputs`.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timestep for `--random-inputs`.
    #[arg(long, default_value_t = 500.0)]
    pub timestep: f32,
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

/// The class `args` selects (`_class_name` of `config.json`, or the preset's).
pub fn model_class(args: &ModelArgs) -> Result<ModelClass> {
    match (&args.model_dir, &args.preset) {
        (Some(dir), _) => Ok(DiffusersConfig::from_model_dir(dir)?.model_class()?),
        (None, Some(preset)) => preset_class(preset),
        (None, None) => bail!("give --model-dir or --preset"),
    }
}

/// Loads a model whose `forward_inputs` xtask calls directly (HunyuanVideo,
/// CogVideoX): their calls need more than latents, timestep and text (or another
/// latent layout), so they are not [`Denoiser`]s.
macro_rules! load_file_only {
    ($Model:ty, $Json:ty, $Config:ty, $args:expr, $device:expr) => {{
        let args: &ModelArgs = $args;
        let dtype = args.dtype()?;
        if args.random_weights {
            let config = match (&args.model_dir, &args.preset) {
                (Some(dir), _) => <$Json>::from_diffusers(&DiffusersConfig::from_model_dir(dir)?)?
                    .into_config()?,
                (None, Some(p)) => <$Config>::preset(p)?,
                (None, None) => bail!("give --model-dir or --preset"),
            };
            <$Model>::random(&config, args.weights_seed, dtype, $device)?
        } else {
            let dir = args
                .model_dir
                .as_deref()
                .context("--model-dir is required without --random-weights")?;
            <$Model>::load(dir, dtype, $device)
                .with_context(|| format!("loading {}", dir.display()))?
        }
    }};
}

/// Runs `forward` on backend `B`; returns the output written (as host data).
pub fn run_on<B: SparseAttentionBackend>(args: &Args, device: &B::Device) -> Result<TensorMap> {
    let t0 = Instant::now();
    let class = model_class(&args.model)?;
    let plan = args.model.plan()?;
    let read_inputs = || -> Result<TensorMap> {
        match &args.inputs {
            Some(p) => {
                TensorMap::read(p).with_context(|| format!("reading inputs {}", p.display()))
            }
            None => bail!(
                "--random-inputs is only implemented for Wan; give --inputs for {}",
                class.class_name()
            ),
        }
    };
    let loaded = |class: ModelClass| {
        eprintln!(
            "loaded {} in {:.2}s",
            class.class_name(),
            t0.elapsed().as_secs_f64()
        )
    };
    match class {
        ModelClass::Wan => {
            let model = Denoiser::<B>::load(&args.model, device)?;
            loaded(class);
            let inputs = match &args.inputs {
                Some(_) => read_inputs()?,
                None => random_inputs::<B>(&model, args, device)?,
            };
            timed_runs::<B>(args, device, || {
                model.forward_inputs(&inputs, plan.as_ref(), device)
            })
        }
        ModelClass::HunyuanVideo => {
            let model = load_file_only!(
                HunyuanVideoTransformer3DModel<B>,
                HunyuanConfigJson,
                HunyuanConfig,
                &args.model,
                device
            );
            loaded(class);
            let inputs = read_inputs()?;
            timed_runs::<B>(args, device, || {
                Ok(model.forward_inputs(&inputs, plan.as_ref(), device)?)
            })
        }
        ModelClass::CogVideoX => {
            let model = load_file_only!(
                CogVideoXTransformer3DModel<B>,
                CogVideoXConfigJson,
                CogVideoXConfig,
                &args.model,
                device
            );
            loaded(class);
            let inputs = read_inputs()?;
            timed_runs::<B>(args, device, || {
                Ok(model.forward_inputs(&inputs, plan.as_ref(), device)?)
            })
        }
    }
}

/// Runs `call` `--repeat` times with a device sync and wall time each, then writes /
/// checks the output.
fn timed_runs<B: SparseAttentionBackend>(
    args: &Args,
    device: &B::Device,
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
    if let Some(path) = &args.out {
        map.write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(map)
}

fn random_inputs<B: SparseAttentionBackend>(
    model: &Denoiser<B>,
    args: &Args,
    device: &B::Device,
) -> Result<TensorMap> {
    let [f, h, w] = parse_latent(&args.latent)?;
    let (c, text_dim, _) = model.io_dims();
    let b = args.batch.max(1);
    B::seed(device, 1);
    let hidden = Tensor::<B, 5>::random(
        [b, c, f, h, w],
        Distribution::Normal(0.0, 1.0),
        (device, DType::F32),
    );
    let text = Tensor::<B, 3>::random(
        [b, args.text_len, text_dim],
        Distribution::Normal(0.0, 1.0),
        (device, DType::F32),
    );
    let mut map = TensorMap::default();
    map.insert("hidden_states", hidden.into_data());
    map.insert("encoder_hidden_states", text.into_data());
    map.insert(
        "timestep",
        burn::tensor::TensorData::new(vec![args.timestep; b], [b]),
    );
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
