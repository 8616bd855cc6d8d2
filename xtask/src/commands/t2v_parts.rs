//! `cargo xtask forward` on the text-to-video parts that are not denoisers: a
//! transformers UMT5 / T5 encoder folder (`architectures: ["UMT5EncoderModel"]`;
//! inputs `input_ids`, `attention_mask` i64 -> `last_hidden_state`) and a diffusers Wan
//! VAE folder (`_class_name: "AutoencoderKLWan"`; `latents` `[B, C, F, H, W]` ->
//! `sample` = `vae.decode(latents).sample`, no de-normalisation). The parts and their
//! dispatch are `vdit_pipelines::PartKind`; this file checks the arguments and reads and
//! writes the files.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_pipelines::PartKind;

use super::forward::Args;

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
        bail!("{kind:?} needs --inputs ({})", kind.inputs());
    };
    // `--out` (and `--save-inputs`) must overwrite no input, before any work.
    args.check_paths()?;
    let dtype = args.model.dtype()?;
    let inputs = TensorMap::read(inputs_path)
        .with_context(|| format!("reading inputs {}", inputs_path.display()))?;
    let t0 = Instant::now();
    let mut t = Instant::now();
    let data = kind.run::<B>(dir, &inputs, dtype, device, || {
        eprintln!("loaded {kind:?} in {:.2}s", t0.elapsed().as_secs_f64());
        t = Instant::now();
    })?;
    let what = match kind {
        PartKind::TextEncoder => "forward",
        PartKind::WanVae => "decode",
    };
    eprintln!("{what}: {:.3}s", t.elapsed().as_secs_f64());
    let name = kind.output_name();
    let mut map = TensorMap::default();
    map.insert(name, data);
    if let Some(expect) = &args.expect {
        let err = super::forward::rel_l2_vs_file(&map, expect, name)?;
        println!("relative L2 error vs {}: {err:.3e}", expect.display());
    }
    if let Some(path) = &args.out {
        map.write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} to {}", name, path.display());
    }
    Ok(Some(map))
}
