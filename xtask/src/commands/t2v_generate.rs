//! `cargo xtask generate --prompt ...`: Wan2.1 text to video. Prompt (and negative
//! prompt) through the tokenizer and the UMT5 encoder, the denoising loop of
//! `generate` (UniPC + CFG, dense or with `--plan`), the VAE decoder, then an MP4
//! (H.264) and optionally PNG frames and the float frames.
//!
//! The model is a diffusers Wan pipeline folder (`model_index.json` with `tokenizer/`,
//! `text_encoder/`, `transformer/`, `vae/`) or `--preset wan-tiny --random-weights`
//! (random UMT5 / VAE, a byte-level tokenizer, 9 frames at 64x64 unless sizes are given).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_text::t5::{T5Config, T5Encoder};
use vdit_text::{PromptEncoder, PromptTokenizer};
use vdit_video::{Video, write_mp4, write_png_frames};
use vdit_wan::WanTransformer3DModel;
use vdit_wan::vae::{WanVaeConfig, WanVaeDecoder, to_unit_frames};

use super::forward::{ModelConfig, wan_tiny, with_backend};
use super::generate::{Args, Settings, generate_wan};

/// The parts of a Wan pipeline.
struct WanParts<B: ModelBackend> {
    text: PromptEncoder<B>,
    transformer: WanTransformer3DModel<B>,
    vae: WanVaeDecoder<B>,
}

/// `dir/name`, or an error naming what is missing.
fn part(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.join("config.json").is_file() && name != "tokenizer" {
        bail!(
            "{}: the Wan pipeline has no `{name}/config.json` (model_index.json lists tokenizer, \
             text_encoder, transformer, vae)",
            dir.display()
        );
    }
    if name == "tokenizer" && !p.join("tokenizer.json").is_file() {
        bail!("{}: no `tokenizer/tokenizer.json`", dir.display());
    }
    Ok(p)
}

fn load_parts<B: ModelBackend>(
    args: &Args,
    max_len: usize,
    device: &B::Device,
) -> Result<WanParts<B>> {
    let dtype = args.model.dtype()?;
    if args.model.random_weights {
        let preset = args.model.preset.as_deref().unwrap_or("wan-tiny");
        if !preset.eq_ignore_ascii_case("wan-tiny") {
            bail!("--prompt with --random-weights supports --preset wan-tiny only, got `{preset}`");
        }
        let c = wan_tiny()?;
        let seed = args.model.weights_seed;
        let mut t5 = T5Config::umt5_tiny(259);
        t5.d_model = c.text_dim;
        return Ok(WanParts {
            text: PromptEncoder::new(
                PromptTokenizer::bytes(),
                T5Encoder::random(&t5, seed + 1, dtype, device)?,
                max_len,
            )?,
            transformer: WanTransformer3DModel::random(&c, seed, dtype, device)?,
            vae: WanVaeDecoder::random(&WanVaeConfig::tiny(), seed + 2, dtype, device)?,
        });
    }
    let dir = args.model.model_dir.as_deref().context(
        "--prompt needs --model-dir WAN_PIPELINE_DIR or --preset wan-tiny --random-weights",
    )?;
    let index = dir.join("model_index.json");
    let text = std::fs::read_to_string(&index)
        .with_context(|| format!("{}: not a diffusers pipeline folder", index.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    match json.get("_class_name").and_then(|v| v.as_str()) {
        Some("WanPipeline") => {}
        other => bail!(
            "{}: _class_name {other:?}, expected WanPipeline",
            index.display()
        ),
    }
    let ctx = |p: &Path| format!("loading {}", p.display());
    let (tok, enc, tr, vae) = (
        part(dir, "tokenizer")?,
        part(dir, "text_encoder")?,
        part(dir, "transformer")?,
        part(dir, "vae")?,
    );
    let transformer = WanTransformer3DModel::load(&tr, dtype, device).with_context(|| ctx(&tr))?;
    let encoder = T5Encoder::load(&enc, dtype, device).with_context(|| ctx(&enc))?;
    if encoder.config.d_model != transformer.config.text_dim {
        bail!(
            "text_encoder width {} != transformer text_dim {} in {}",
            encoder.config.d_model,
            transformer.config.text_dim,
            dir.display()
        );
    }
    let vae = WanVaeDecoder::load(&vae, DType::F32, device).with_context(|| ctx(&vae))?;
    if vae.config.z_dim != transformer.config.out_channels {
        bail!(
            "vae z_dim {} != transformer out_channels {} in {}",
            vae.config.z_dim,
            transformer.config.out_channels,
            dir.display()
        );
    }
    let tokenizer = PromptTokenizer::from_dir(&tok).with_context(|| ctx(&tok))?;
    Ok(WanParts {
        text: PromptEncoder::new(tokenizer, encoder, max_len)?,
        transformer,
        vae,
    })
}

fn bar(quiet: bool, len: usize, what: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .expect("valid template"),
    );
    bar
}

/// Runs `generate --prompt`.
pub fn run(args: Args) -> Result<()> {
    let mut args = args;
    let tiny_default = args.model.random_weights
        && args.latent.is_none()
        && args.height.is_none()
        && args.width.is_none()
        && args.frames.is_none();
    if tiny_default {
        (args.frames, args.height, args.width) = (Some(9), Some(64), Some(64));
    }
    let ext = args.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !ext.eq_ignore_ascii_case("mp4") {
        bail!(
            "--out must be an .mp4 file with --prompt, got {}",
            args.out.display()
        );
    }
    if args.fps == 0 {
        bail!("--fps must be positive");
    }
    args.check_paths()?;
    with_backend!(args.model.backend, |B, device| generate_video::<B>(
        &args, &device
    ))
}

fn generate_video<B: ModelBackend>(args: &Args, device: &B::Device) -> Result<()> {
    let max_len = args.text_len.unwrap_or(512);
    let t0 = Instant::now();
    let parts = load_parts::<B>(args, max_len, device)?;
    let config = ModelConfig::Wan(parts.transformer.config.clone());
    let settings = Settings::new(args, &config)?;
    let plan = args.model.plan()?;
    if let Some(p) = &plan {
        config.check_plan(p)?;
    }
    eprintln!("loaded the pipeline in {:.2}s", t0.elapsed().as_secs_f64());

    let t = Instant::now();
    let prompt = args.prompt.clone().unwrap_or_default();
    let mut emb = TensorMap::default();
    let dtype = parts.transformer.dtype;
    let embed = |p: &str| -> Result<TensorData> {
        Ok(parts
            .text
            .encode(&[p.to_owned()], device)?
            .cast(dtype)
            .into_data())
    };
    emb.insert("prompt_embeds", embed(&prompt)?);
    if settings.guidance > 1.0 {
        // diffusers' default negative prompt is "".
        emb.insert(
            "negative_prompt_embeds",
            embed(args.negative_prompt.as_deref().unwrap_or(""))?,
        );
    }
    eprintln!("encoded the prompt(s) in {:.2}s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let (latents, forwards) = generate_wan(
        &parts.transformer,
        args,
        &settings,
        &emb,
        plan.as_ref(),
        device,
    )?;
    eprintln!(
        "{} steps in {:.2}s ({forwards} per step)",
        args.steps,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let latents: Tensor<B, 5> = latents.float("latents", DType::F32, device)?;
    let vae = &parts.vae;
    let z = vae.denormalize(latents)?;
    let progress = bar(args.quiet, z.dims()[2], "decode latent frame");
    let sample = vae.decode_with_progress(z, |_, _| progress.inc(1))?;
    progress.finish_and_clear();
    let frames = to_unit_frames(sample); // [B, F, C, H, W]
    let [b, f, c, h, w] = frames.dims();
    eprintln!(
        "decoded {f} frames of {w}x{h} in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    if c != 3 || b != 1 {
        bail!("expected one RGB video, got [{b}, {f}, {c}, {h}, {w}]");
    }
    let data = frames.into_data();
    if let Some(path) = &args.save_frames {
        let mut map = TensorMap::default();
        map.insert("frames", data.clone());
        map.metadata.insert("prompt".into(), prompt.clone());
        map.write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let values: Vec<f32> = data
        .convert_dtype(DType::F32)
        .into_vec()
        .map_err(|e| anyhow::anyhow!("frames: {e:?}"))?;
    let video = Video::from_unit_chw(&values, f, h, w)?;
    if let Some(dir) = &args.png_frames {
        write_png_frames(dir, &video)?;
        eprintln!("wrote {f} PNG frames to {}", dir.display());
    }
    write_mp4(&args.out, &video, args.fps)?;
    eprintln!(
        "wrote {} ({f} frames, {w}x{h}, {} fps) in {:.2}s total",
        args.out.display(),
        args.fps,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
