//! `cargo xtask forward`: one denoiser call (Wan2.1, HunyuanVideo or CogVideoX1.5) from a
//! diffusers model directory or a preset with random weights, on inputs from a file or
//! random inputs at a given latent size; the output is written under `sample`.
//!
//! This module also holds what `generate` and `bench` share: the backend switch
//! ([`BackendKind`], [`with_backend!`]) and the model arguments ([`ModelArgs`],
//! [`resolve_config`], [`load_denoiser`]); the configs and loaded denoisers of every
//! class are `vdit_pipelines::{ModelConfig, AnyDenoiser}`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Tensor};
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_models::{ModelClass, parse_dtype};
use vdit_patterns::Plan;
/// The dispatch over the denoiser classes lives in `vdit-pipelines`; these names are
/// what `forward`, `generate`, `bench` and `search` use.
pub use vdit_pipelines::{
    AnyDenoiser as Denoiser, ModelConfig, RandomInputs, StepInputs, class_defaults,
    default_valid_text,
};

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

/// The config `args` select: `config.json` of `--model-dir` (class from
/// `_class_name`) or `--preset`.
pub fn resolve_config(args: &ModelArgs) -> Result<ModelConfig> {
    match (&args.model_dir, &args.preset) {
        (Some(dir), _) => Ok(ModelConfig::from_model_dir(dir)?),
        (None, Some(preset)) => Ok(ModelConfig::preset(preset)?),
        (None, None) => bail!("give --model-dir or --preset"),
    }
}

/// Loads the model `args` describe (class from `_class_name` or the preset; random
/// weights with `--random-weights`).
pub fn load_denoiser<B: ModelBackend>(args: &ModelArgs, device: &B::Device) -> Result<Denoiser<B>> {
    let config = resolve_config(args)?;
    let dtype = args.dtype()?;
    if args.random_weights {
        return Ok(Denoiser::random(&config, args.weights_seed, dtype, device)?);
    }
    let dir = args
        .model_dir
        .as_deref()
        .context("--model-dir is required without --random-weights")?;
    Ok(Denoiser::load(dir, dtype, device)?)
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
    let config = resolve_config(&args.model)?;
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
    let model = load_denoiser::<B>(&args.model, device)?;
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
        Ok(model.forward_inputs(&inputs, plan.as_ref(), device)?)
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
        let err = rel_l2_vs_file(&map, expect, "sample")?;
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

/// `||out - expected|| / ||expected||` over tensor `name` of both.
pub fn rel_l2_vs_file(out: &TensorMap, expected: &Path, name: &str) -> Result<f64> {
    let want = TensorMap::read(expected)?.values_f32(name)?;
    let got = out.values_f32(name)?;
    if want.len() != got.len() {
        bail!(
            "`{name}` has {} values, {} has {}",
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
