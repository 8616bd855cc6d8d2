//! `cargo xtask forward` on the text-to-video parts that are not denoisers: a
//! transformers UMT5 / T5 encoder folder (`architectures: ["UMT5EncoderModel"]`;
//! inputs `input_ids`, `attention_mask` i64 -> `last_hidden_state`) and a diffusers Wan
//! VAE folder (`_class_name: "AutoencoderKLWan"`; `latents` `[B, C, F, H, W]` ->
//! `sample` = `vae.decode(latents).sample`, no de-normalisation).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use vdit_models::io::TensorMap;
use vdit_models::{DiffusersConfig, ModelBackend};
use vdit_text::t5::{ENCODER_ARCHITECTURES, T5Encoder};
use vdit_wan::vae::{VAE_CLASS_NAME, WanVaeDecoder};

use super::forward::Args;

/// A model folder `forward` runs that is not a denoiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// transformers `UMT5EncoderModel` / `T5EncoderModel`.
    TextEncoder,
    /// diffusers `AutoencoderKLWan` (decoder).
    WanVae,
}

impl PartKind {
    /// The part in `dir/config.json`, if it is one (a missing or unreadable config is
    /// left to the denoiser path, which reports it).
    pub fn detect(dir: &Path) -> Option<Self> {
        let cfg = DiffusersConfig::from_model_dir(dir).ok()?;
        if cfg.class_name() == Some(VAE_CLASS_NAME) {
            return Some(PartKind::WanVae);
        }
        let archs = cfg.raw().get("architectures")?.as_array()?;
        archs
            .iter()
            .filter_map(|a| a.as_str())
            .any(|a| ENCODER_ARCHITECTURES.contains(&a))
            .then_some(PartKind::TextEncoder)
    }

    /// The output tensor's name.
    pub fn output_name(self) -> &'static str {
        match self {
            PartKind::TextEncoder => "last_hidden_state",
            PartKind::WanVae => "sample",
        }
    }
}

/// Runs `forward` when `--model-dir` is a text encoder or a Wan VAE; `None` otherwise.
pub fn run_part<B: ModelBackend>(args: &Args, device: &B::Device) -> Result<Option<TensorMap>> {
    let Some(dir) = args.model.model_dir.as_deref() else {
        return Ok(None);
    };
    let Some(kind) = PartKind::detect(dir) else {
        return Ok(None);
    };
    if args.model.plan.is_some() {
        bail!(
            "--plan applies to denoisers only, not to {kind:?} ({})",
            dir.display()
        );
    }
    if args.model.random_weights {
        bail!(
            "--random-weights is not supported for {kind:?}; it loads {}",
            dir.display()
        );
    }
    let Some(inputs_path) = args.inputs.as_deref() else {
        bail!(
            "{kind:?} needs --inputs ({})",
            match kind {
                PartKind::TextEncoder => "`input_ids` and `attention_mask`, i64 [B, L]",
                PartKind::WanVae => "`latents` [B, C, F, H, W]",
            }
        );
    };
    let dtype = args.model.dtype()?;
    let inputs = TensorMap::read(inputs_path)
        .with_context(|| format!("reading inputs {}", inputs_path.display()))?;
    let t0 = Instant::now();
    let ctx = || format!("loading {}", dir.display());
    let data = match kind {
        PartKind::TextEncoder => {
            let m = T5Encoder::<B>::load(dir, dtype, device).with_context(ctx)?;
            eprintln!("loaded {kind:?} in {:.2}s", t0.elapsed().as_secs_f64());
            let t = Instant::now();
            let out = m.forward_inputs(&inputs, device)?.into_data();
            eprintln!("forward: {:.3}s", t.elapsed().as_secs_f64());
            out
        }
        PartKind::WanVae => {
            let m = WanVaeDecoder::<B>::load(dir, dtype, device).with_context(ctx)?;
            eprintln!("loaded {kind:?} in {:.2}s", t0.elapsed().as_secs_f64());
            let t = Instant::now();
            let out = m.forward_inputs(&inputs, device)?.into_data();
            eprintln!("decode: {:.3}s", t.elapsed().as_secs_f64());
            out
        }
    };
    let name = kind.output_name();
    let mut map = TensorMap::default();
    map.insert(name, data);
    if let Some(expect) = &args.expect {
        let err = rel_l2(&map, expect, name)?;
        println!("relative L2 error vs {}: {err:.3e}", expect.display());
    }
    if let Some(path) = &args.out {
        map.write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} to {}", name, path.display());
    }
    Ok(Some(map))
}

fn rel_l2(out: &TensorMap, expected: &Path, name: &str) -> Result<f64> {
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
