//! Sparse-vDiT pipelines: what a Burn user calls to go from a diffusers folder (or tiny
//! random weights) to a video, dense or with a sparse-attention plan.
//!
//! | item | what |
//! |---|---|
//! | [`Pipeline::load`] | any supported diffusers folder: a Wan2.1 pipeline (`model_index.json` `WanPipeline`) or a denoiser folder (`config.json` `_class_name`: Wan2.1, HunyuanVideo, CogVideoX1.5) |
//! | [`WanT2vPipeline`] | Wan2.1 text to video: prompt → UMT5 → denoising loop (UniPC + CFG) → VAE → frames / MP4 |
//! | [`AnyDenoiser`], [`ModelConfig`] | the dispatch over the three denoiser classes (configs, presets, random inputs, one call, [`AnyDenoiser::generate_latents`]: each class's loop from text embeddings) |
//! | [`PartKind`] | the parts `forward` runs that are not denoisers: a UMT5 / T5 encoder folder, a Wan VAE folder |
//! | [`DenoiserRunner`] | the model-driven search's runner (`vdit_search::ModelRunner`) over any class |
//! | [`quality`] | dense and planned videos with the same seeds, PSNR / SSIM per prompt and mean, JSON + Markdown + PNG chart |
//!
//! The class-specific denoising loops live in the model crates
//! (`vdit_wan::pipeline::denoise`, `vdit_hunyuan::denoise`,
//! `vdit_cogvideox::pipeline::denoise`); [`AnyDenoiser::generate_latents`] runs the
//! right one. HunyuanVideo and CogVideoX generate from precomputed text embeddings
//! (their text encoders are not ported yet).
//!
//! A video in about 20 lines (CPU, tiny random weights; with a real folder use
//! `Pipeline::load(dir, DType::F32, &device)?` and `request.config` at its defaults):
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use vdit_pipelines::{T2vFiles, T2vRequest, WanT2vPipeline, latent_size, read_mp4};
//!
//! let device = Default::default();
//! let pipe = WanT2vPipeline::<Flex>::tiny_random(0, DType::F32, 32, &device)?;
//! // 5 frames of 32 x 32 pixels; 3 UniPC steps with classifier-free guidance 5.
//! let mut request = T2vRequest::new("a red fox runs through fresh snow", latent_size(5, 32, 32)?);
//! request.config.steps = 3;
//! let plan = None; // or Some(&vdit_patterns::Plan::load(path)?) for sparse attention
//! let video = pipe.generate(&request, plan, &device, |_progress| {})?;
//!
//! let dir = tempfile::tempdir().expect("a temporary folder");
//! let mp4 = dir.path().join("fox.mp4");
//! video.write(&T2vFiles { mp4: Some(mp4.clone()), fps: 16, ..Default::default() })?;
//! let back = read_mp4(&mp4)?;
//! assert_eq!((back.frames.len(), back.width, back.height), (5, 32, 32));
//! # Ok::<(), vdit_pipelines::PipelineError>(())
//! ```
#![warn(missing_docs)]

mod denoisers;
mod error;
mod latents;
mod parts;
pub mod quality;
mod search_runner;
mod wan_t2v;

use std::path::Path;

use burn::tensor::{DType, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use vdit_models::ModelBackend;

pub use denoisers::{
    AnyDenoiser, ClassDefaults, ModelConfig, PRESETS, RandomInputs, StepInputs, class_defaults,
    default_valid_text,
};
pub use error::{PipelineError, Result};
pub use latents::{LatentOutput, LatentRequest, SamplerChoice, cog_frames, initial_latents};
pub use parts::PartKind;
pub use search_runner::DenoiserRunner;
pub use vdit_video::{Video, read_mp4};
pub use wan_t2v::{
    T2vFiles, T2vOutput, T2vProgress, T2vRequest, WAN_PIPELINE_CLASS, WanT2vPipeline, latent_size,
};

/// Largest `model_index.json` read (a pipeline index is a few hundred bytes).
const MAX_INDEX_BYTES: u64 = 1 << 20;

/// Standard normal host values of `shape` from a seeded `StdRng` (the same on every
/// backend): the initial noise of the generate commands and random embeddings.
pub fn seeded_normal(seed: u64, shape: &[usize]) -> TensorData {
    let mut rng = StdRng::seed_from_u64(seed);
    normal_from(&mut rng, shape)
}

/// Standard normal host values of `shape` drawn from `rng`.
pub fn normal_from(rng: &mut StdRng, shape: &[usize]) -> TensorData {
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| StandardNormal.sample(rng))
        .collect();
    TensorData::new(v, shape.to_vec())
}

/// The `_class_name` of `dir/model_index.json` (a diffusers pipeline folder).
///
/// # Errors
/// A missing or unreadable index, invalid JSON, no string `_class_name` (naming the file).
pub fn pipeline_class(dir: &Path) -> Result<String> {
    let index = dir.join("model_index.json");
    let text = vdit_patterns::read_text_capped(&index, MAX_INDEX_BYTES).map_err(|e| {
        PipelineError::Folder {
            path: index.clone(),
            message: format!("not a diffusers pipeline folder: {e}"),
        }
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PipelineError::Folder {
            path: index.clone(),
            message: format!("invalid JSON: {e}"),
        })?;
    match json.get("_class_name").and_then(|v| v.as_str()) {
        Some(c) => Ok(c.to_owned()),
        None => Err(PipelineError::Folder {
            path: index,
            message: "no string `_class_name`".into(),
        }),
    }
}

/// A loaded diffusers folder.
pub enum Pipeline<B: ModelBackend> {
    /// A Wan2.1 text-to-video pipeline (prompt to video).
    WanT2v(Box<WanT2vPipeline<B>>),
    /// A denoiser (from a denoiser folder, or the `transformer/` of a HunyuanVideo or
    /// CogVideoX pipeline, whose text encoders and VAEs are not ported): generates
    /// latents from text embeddings through the class's loop.
    Denoiser(AnyDenoiser<B>),
}

impl<B: ModelBackend> Pipeline<B> {
    /// Loads `dir`, dispatching on its `model_index.json` `_class_name` (`WanPipeline`;
    /// `HunyuanVideoPipeline` and `CogVideoXPipeline` load their `transformer/`) or, without
    /// an index, on `config.json`'s `_class_name` (a denoiser folder). Wan prompts are
    /// padded to 512 tokens as in diffusers.
    ///
    /// # Errors
    /// An unsupported class, a missing part or file (naming it), invalid weights.
    pub fn load(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        if !dir.join("model_index.json").exists() {
            return Ok(Pipeline::Denoiser(AnyDenoiser::load(dir, dtype, device)?));
        }
        match pipeline_class(dir)?.as_str() {
            WAN_PIPELINE_CLASS => Ok(Pipeline::WanT2v(Box::new(WanT2vPipeline::load(
                dir, dtype, 512, device,
            )?))),
            "HunyuanVideoPipeline" | "CogVideoXPipeline" => {
                let tr = dir.join("transformer");
                Ok(Pipeline::Denoiser(AnyDenoiser::load(&tr, dtype, device)?))
            }
            other => Err(PipelineError::Folder {
                path: dir.join("model_index.json"),
                message: format!(
                    "pipeline class `{other}` is not supported (WanPipeline, \
                     HunyuanVideoPipeline, CogVideoXPipeline)"
                ),
            }),
        }
    }
}
