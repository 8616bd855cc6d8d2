//! Times denoiser steps of HunyuanVideo with random weights on CUDA.
//!
//! `cargo run --release -p vdit-hunyuan --features cuda --example step_timing -- \
//!     [FxHxW latent, default 33x90x160] [text tokens, 256] [valid text, 256] [repeats, 3] \
//!     [dtype, bf16] [plan.ron]`
//!
//! Prints the load time and the wall time of each forward (after a device sync).

use std::time::Instant;

use burn::tensor::backend::Backend;
use vdit_hunyuan::{HunyuanConfig, HunyuanInputs, HunyuanVideoTransformer3DModel};
use vdit_models::parse_dtype;
use vdit_patterns::Plan;

type B = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_owned());
    let latent: Vec<usize> = arg(0, "33x90x160")
        .split('x')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [f, h, w] = <[usize; 3]>::try_from(latent).map_err(|_| "latent must be FxHxW")?;
    let text: usize = arg(1, "256").parse()?;
    let valid: usize = arg(2, "256").parse()?;
    let repeats: usize = arg(3, "3").parse()?;
    let dtype = parse_dtype(&arg(4, "bf16"))?;
    let plan = args.get(5).map(|p| Plan::load(p.as_ref())).transpose()?;

    let device = cubecl::cuda::CudaDevice::default();
    let config = HunyuanConfig::hunyuan_video_t2v();
    let t0 = Instant::now();
    let model = HunyuanVideoTransformer3DModel::<B>::random(&config, 0, dtype, &device)?;
    B::sync(&device)?;
    println!(
        "random weights ({dtype:?}) in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    let ctx = model.attention_context(f, h, w, text, plan.as_ref())?;
    println!(
        "layout {:?}: {} tokens, text {text} ({valid} valid), plan: {}",
        ctx.layout(),
        ctx.layout().total_tokens(),
        plan.is_some()
    );
    for i in 0..repeats {
        let inputs = HunyuanInputs::random(&config, 1, [f, h, w], text, Some(valid), &device)?;
        B::sync(&device)?;
        let t = Instant::now();
        let out = model.forward(inputs, &ctx)?;
        B::sync(&device)?;
        let secs = t.elapsed().as_secs_f64();
        let sample: Vec<f32> = out
            .slice([0..1, 0..1, 0..1, 0..1, 0..4])
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| format!("{e:?}"))?;
        println!("forward {i}: {secs:.3}s (out[..4] = {sample:?})");
    }
    Ok(())
}
