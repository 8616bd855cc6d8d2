//! Wan2.1 text to video as a library call: prompt (and negative prompt) through the
//! tokenizer and the UMT5 encoder ([`vdit_text::PromptEncoder`]), the denoising loop
//! ([`vdit_wan::pipeline::denoise`], UniPC + CFG, dense or with a plan), the VAE decoder
//! ([`vdit_wan::vae::WanVaeDecoder`], with the pipeline's de-normalisation), and frames
//! in `[0, 1]` plus an RGB [`Video`] for MP4 / PNG output.
//!
//! The parts come from a diffusers Wan pipeline folder (`model_index.json` with
//! `tokenizer/`, `text_encoder/`, `transformer/`, `vae/`: [`WanT2vPipeline::load`]) or
//! are random and tiny ([`WanT2vPipeline::tiny_random`]: a byte-level tokenizer, UMT5,
//! [`vdit_wan::WanConfig::tiny`], [`vdit_wan::vae::WanVaeConfig::tiny`]).

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Tensor, TensorData};
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_patterns::Plan;
use vdit_text::t5::{T5Config, T5Encoder};
use vdit_text::{PromptEncoder, PromptTokenizer};
use vdit_video::Video;
use vdit_wan::WanTransformer3DModel;
use vdit_wan::pipeline::{WanGenerateConfig, denoise};
use vdit_wan::vae::{WanVaeConfig, WanVaeDecoder, to_unit_frames};

use crate::{PipelineError, Result};

/// `_class_name` of the diffusers Wan text-to-video pipeline (`model_index.json`).
pub const WAN_PIPELINE_CLASS: &str = "WanPipeline";

/// The parts of a Wan2.1 text-to-video pipeline.
#[derive(Debug)]
pub struct WanT2vPipeline<B: ModelBackend> {
    /// Tokenizer + UMT5 encoder with Wan's prompt handling.
    pub text: PromptEncoder<B>,
    /// The denoiser.
    pub transformer: WanTransformer3DModel<B>,
    /// The VAE decoder (f32).
    pub vae: WanVaeDecoder<B>,
}

/// Where a [`WanT2vPipeline::generate`] run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T2vProgress {
    /// The prompts are encoded.
    Encoded,
    /// Denoising step `done` of `total` finished.
    Step {
        /// Steps done.
        done: usize,
        /// Steps in all.
        total: usize,
    },
    /// Latent frame `done` of `total` is decoded.
    Decoded {
        /// Latent frames done.
        done: usize,
        /// Latent frames in all.
        total: usize,
    },
}

/// One text-to-video request.
#[derive(Debug, Clone)]
pub struct T2vRequest {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (used when guidance is on; diffusers' default is "").
    pub negative_prompt: String,
    /// Latent size `[frames, height, width]` (see [`latent_size`]).
    pub latent: [usize; 3],
    /// Steps, shift, guidance, sampler.
    pub config: WanGenerateConfig,
    /// Seed of the initial noise (host RNG: the same on every backend).
    pub seed: u64,
    /// Start from these latents `[1, C, F, H, W]` instead of seeded noise (e.g. a
    /// diffusers run's).
    pub initial_latents: Option<TensorData>,
}

impl T2vRequest {
    /// A request with diffusers' defaults (50 UniPC steps, shift 3, guidance 5, negative
    /// prompt "") for latents `latent`.
    pub fn new(prompt: impl Into<String>, latent: [usize; 3]) -> Self {
        T2vRequest {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            latent,
            config: WanGenerateConfig::default(),
            seed: 0,
            initial_latents: None,
        }
    }
}

/// The latent size of a `frames x height x width` video (VAE strides 4 / 8 / 8).
///
/// # Errors
/// Frames not `4k + 1`, sizes not positive multiples of 8.
pub fn latent_size(frames: usize, height: usize, width: usize) -> Result<[usize; 3]> {
    if frames == 0 || !(frames - 1).is_multiple_of(4) {
        return Err(PipelineError::Input(format!(
            "--frames must be 4k+1 (got {frames})"
        )));
    }
    if !height.is_multiple_of(8) || !width.is_multiple_of(8) || height == 0 || width == 0 {
        return Err(PipelineError::Input(format!(
            "--height and --width must be positive multiples of 8 (got {height}x{width})"
        )));
    }
    Ok([(frames - 1) / 4 + 1, height / 8, width / 8])
}

/// What [`WanT2vPipeline::generate`] made.
#[derive(Debug, Clone)]
pub struct T2vOutput {
    /// The denoised latents `[1, C, F, H, W]` (f32, before de-normalisation).
    pub latents: TensorData,
    /// The decoded frames `[1, F, 3, H, W]`, f32 in `[0, 1]` (diffusers'
    /// `output_type="pt"`).
    pub frames: TensorData,
    /// The frames as 8-bit RGB (rounded like PIL).
    pub video: Video,
}

/// The files a text-to-video run writes; every one is staged and all are renamed into
/// place together after the last was written ([`T2vOutput::write`]).
#[derive(Debug, Clone, Default)]
pub struct T2vFiles {
    /// The MP4 (H.264).
    pub mp4: Option<PathBuf>,
    /// Frames per second of the MP4.
    pub fps: u32,
    /// A folder for `frame_NNNN.png` (created if missing).
    pub png_dir: Option<PathBuf>,
    /// The float frames as safetensors (`frames`, `[1, F, 3, H, W]`).
    pub frames: Option<PathBuf>,
    /// Metadata of the frames file (e.g. the prompt).
    pub frames_metadata: Vec<(String, String)>,
}

impl T2vOutput {
    /// Writes `files`: all are encoded and staged first, then renamed together, so a
    /// failure leaves none of them behind (a PNG folder created here stays, empty).
    ///
    /// # Errors
    /// Encoding errors, unwritable paths (naming the file).
    pub fn write(&self, files: &T2vFiles) -> Result<()> {
        let mut set = vdit_patterns::OutputSet::new();
        let stage = |set: &mut vdit_patterns::OutputSet, path: &Path, bytes: &[u8]| {
            set.stage(path, bytes).map_err(|e| PipelineError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })
        };
        if let Some(path) = &files.frames {
            let mut map = TensorMap::default();
            map.insert("frames", self.frames.clone());
            for (k, v) in &files.frames_metadata {
                map.metadata.insert(k.clone(), v.clone());
            }
            let bytes = map
                .to_bytes(path)
                .map_err(|e| PipelineError::model(format!("writing {}", path.display()), e))?;
            stage(&mut set, path, &bytes)?;
        }
        if let Some(dir) = &files.png_dir {
            std::fs::create_dir_all(dir).map_err(|e| PipelineError::File {
                path: dir.clone(),
                message: e.to_string(),
            })?;
            for (i, frame) in self.video.frames.iter().enumerate() {
                let bytes = vdit_video::encode_png_rgb(self.video.width, self.video.height, frame)?;
                stage(&mut set, &dir.join(vdit_video::png_frame_name(i)), &bytes)?;
            }
        }
        if let Some(path) = &files.mp4 {
            let bytes = vdit_video::encode_mp4(&self.video, files.fps)?;
            stage(&mut set, path, &bytes)?;
        }
        set.commit().map_err(|e| PipelineError::File {
            path: files.mp4.clone().unwrap_or_default(),
            message: format!("renaming the outputs into place: {e}"),
        })
    }
}

/// `dir/name`, or an error naming what is missing.
fn part(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.join("config.json").is_file() && name != "tokenizer" {
        return Err(PipelineError::Folder {
            path: dir.to_owned(),
            message: format!(
                "the Wan pipeline has no `{name}/config.json` (model_index.json lists \
                 tokenizer, text_encoder, transformer, vae)"
            ),
        });
    }
    if name == "tokenizer" && !p.join("tokenizer.json").is_file() {
        return Err(PipelineError::Folder {
            path: dir.to_owned(),
            message: "no `tokenizer/tokenizer.json`".into(),
        });
    }
    Ok(p)
}

/// Checks that `dir/model_index.json` names [`WAN_PIPELINE_CLASS`].
fn check_index(dir: &Path) -> Result<()> {
    let index = dir.join("model_index.json");
    let class = crate::pipeline_class(dir)?;
    if class != WAN_PIPELINE_CLASS {
        return Err(PipelineError::Folder {
            path: index,
            message: format!("_class_name `{class}`, expected {WAN_PIPELINE_CLASS}"),
        });
    }
    Ok(())
}

impl<B: ModelBackend> WanT2vPipeline<B> {
    /// Loads a diffusers Wan pipeline folder: the transformer and the text encoder in
    /// `dtype`, the VAE in f32, prompts padded to `max_len` tokens (Wan: 512).
    ///
    /// # Errors
    /// A folder that is not a `WanPipeline`, a missing part (naming it), parts that do
    /// not fit each other (text width, latent channels, tokenizer vocabulary).
    pub fn load(dir: &Path, dtype: DType, max_len: usize, device: &B::Device) -> Result<Self> {
        check_index(dir)?;
        let (tok, enc, tr, vae) = (
            part(dir, "tokenizer")?,
            part(dir, "text_encoder")?,
            part(dir, "transformer")?,
            part(dir, "vae")?,
        );
        let ctx = |p: &Path| {
            let p = p.to_owned();
            move |e| PipelineError::model(format!("loading {}", p.display()), e)
        };
        let transformer = WanTransformer3DModel::load(&tr, dtype, device).map_err(ctx(&tr))?;
        let encoder = T5Encoder::load(&enc, dtype, device).map_err(ctx(&enc))?;
        if encoder.config.d_model != transformer.config.text_dim {
            return Err(PipelineError::Folder {
                path: dir.to_owned(),
                message: format!(
                    "text_encoder width {} != transformer text_dim {}",
                    encoder.config.d_model, transformer.config.text_dim
                ),
            });
        }
        let vae = WanVaeDecoder::load(&vae, DType::F32, device).map_err(ctx(&vae))?;
        if vae.config.z_dim != transformer.config.out_channels {
            return Err(PipelineError::Folder {
                path: dir.to_owned(),
                message: format!(
                    "vae z_dim {} != transformer out_channels {}",
                    vae.config.z_dim, transformer.config.out_channels
                ),
            });
        }
        let tokenizer = PromptTokenizer::from_dir(&tok).map_err(ctx(&tok))?;
        Ok(WanT2vPipeline {
            text: PromptEncoder::new(tokenizer, encoder, max_len).map_err(ctx(&tok))?,
            transformer,
            vae,
        })
    }

    /// A tiny pipeline with seeded random weights for tests and examples: a byte-level
    /// tokenizer, a 2-layer UMT5 of width 64, [`vdit_wan::WanConfig::tiny`] (seed
    /// `seed`) and [`WanVaeConfig::tiny`] (seeds `seed + 1`, `seed + 2`, wrapping).
    ///
    /// # Errors
    /// `max_len` 0.
    pub fn tiny_random(
        seed: u64,
        dtype: DType,
        max_len: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let c = vdit_wan::WanConfig::tiny();
        let mut t5 = T5Config::umt5_tiny(259);
        t5.d_model = c.text_dim;
        Ok(WanT2vPipeline {
            text: PromptEncoder::new(
                PromptTokenizer::bytes(),
                T5Encoder::random(&t5, seed.wrapping_add(1), dtype, device)?,
                max_len,
            )?,
            transformer: WanTransformer3DModel::random(&c, seed, dtype, device)?,
            vae: WanVaeDecoder::random(&WanVaeConfig::tiny(), seed.wrapping_add(2), dtype, device)?,
        })
    }

    /// Encodes `prompt` to `[1, max_len, text_dim]` embeddings in the transformer's dtype.
    ///
    /// # Errors
    /// Tokenizer or encoder errors.
    pub fn encode_prompt(&self, prompt: &str, device: &B::Device) -> Result<Tensor<B, 3>> {
        Ok(self
            .text
            .encode(&[prompt.to_owned()], device)?
            .cast(self.transformer.dtype))
    }

    /// Runs the request: encode, denoise (dense without `plan`), decode. `progress` sees
    /// each stage.
    ///
    /// # Errors
    /// A plan for another model or step count, a latent size the patch does not divide,
    /// initial latents of the wrong shape, model errors.
    pub fn generate(
        &self,
        request: &T2vRequest,
        plan: Option<&Plan>,
        device: &B::Device,
        mut progress: impl FnMut(T2vProgress),
    ) -> Result<T2vOutput> {
        let [f, h, w] = request.latent;
        let config = &request.config;
        if let Some(p) = plan {
            crate::ModelConfig::Wan(self.transformer.config.clone()).check_plan(p)?;
            p.check_steps(config.steps).map_err(|e| {
                PipelineError::Plan(format!("plan with {} steps: {e}", config.steps))
            })?;
        }
        let ctx = self
            .transformer
            .attention_context(f, h, w, plan)
            .map_err(|e| PipelineError::model(format!("latent {f}x{h}x{w}"), e))?;
        let shape = [1, self.transformer.config.in_channels, f, h, w];
        let latents = crate::initial_latents::<B>(
            request.initial_latents.as_ref(),
            request.seed,
            shape,
            device,
        )?;
        let prompt = self.encode_prompt(&request.prompt, device)?;
        let negative = if config.uses_cfg() {
            Some(self.encode_prompt(&request.negative_prompt, device)?)
        } else {
            None
        };
        progress(T2vProgress::Encoded);
        let total = config.steps;
        let latents = denoise(
            &self.transformer,
            latents,
            prompt,
            negative,
            config,
            &ctx,
            |i, _| progress(T2vProgress::Step { done: i + 1, total }),
        )?;
        let latents_data = latents.clone().into_data();
        let frames = self.decode(latents, |done, total| {
            progress(T2vProgress::Decoded { done, total })
        })?;
        let [b, nf, c, fh, fw] = frames.dims();
        if c != 3 || b != 1 {
            return Err(PipelineError::Input(format!(
                "expected one RGB video, got [{b}, {nf}, {c}, {fh}, {fw}]"
            )));
        }
        let data = frames.into_data();
        let values: Vec<f32> = data
            .clone()
            .convert_dtype(DType::F32)
            .into_vec()
            .map_err(|e| PipelineError::Input(format!("frames: {e:?}")))?;
        let video = Video::from_unit_chw(&values, nf, fh, fw)?;
        Ok(T2vOutput {
            latents: latents_data,
            frames: data,
            video,
        })
    }

    /// De-normalises denoised latents `[B, C, F, H, W]` and decodes them to frames
    /// `[B, F, 3, H, W]` in `[0, 1]`; `on_frame(done, total)` after each latent frame.
    ///
    /// # Errors
    /// Latents whose channel count is not the VAE's `z_dim` (the error names it).
    pub fn decode(
        &self,
        latents: Tensor<B, 5>,
        on_frame: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 5>> {
        let z = self.vae.denormalize(latents)?;
        let sample = self.vae.decode_with_progress(z, on_frame)?;
        Ok(to_unit_frames(sample))
    }
}
