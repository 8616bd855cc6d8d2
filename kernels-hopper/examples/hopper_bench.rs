//! Times the wgmma dense attention at Wan2.1-480p and HunyuanVideo-720p (head dim 128).
//! `cargo run --release --features cuda --example hopper_bench [-- --iters N] [--variant W:A]`
//! (`W` warpgroups per cube, 1-3; `A` = `true` for cp.async copies, `false` for register
//! copies; default: every variant). Prints one JSON line per shape and variant: {shape,
//! warpgroups, cp_async, heads, tokens, ms, tflops, check_rel_l2}. Bad arguments are an
//! error (exit 2) before the GPU is touched.

use std::time::Instant;

use half::bf16;
use vdit_kernels_hopper::host::{bf16_bytes, bf16_from_bytes, dense_attention_with};

/// `--iters` (at least 1, default 10) and the variants to time.
fn parse_args() -> Result<(usize, Vec<(u32, bool)>), String> {
    let value = |flag: &str| -> Result<Option<String>, String> {
        let mut args = std::env::args().skip_while(|a| a != flag);
        match (args.next(), args.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(v)) => Ok(Some(v)),
            (Some(_), None) => Err(format!("{flag} needs a value")),
        }
    };
    let iters = match value("--iters")? {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100_000).contains(&n) => n,
            _ => return Err(format!("--iters {v}: expected a number from 1 to 100000")),
        },
    };
    let variants = match value("--variant")? {
        None => vec![(2, false), (1, true), (2, true), (3, true)],
        Some(v) => {
            let bad = || format!("--variant {v}: expected WARPGROUPS:CP_ASYNC, e.g. 3:true");
            let (w, a) = v.split_once(':').ok_or_else(bad)?;
            let w: u32 = w.parse().map_err(|_| bad())?;
            let a: bool = a.parse().map_err(|_| bad())?;
            if !(1..=3).contains(&w) {
                return Err(format!("--variant {v}: 1 to 3 warpgroups"));
            }
            vec![(w, a)]
        }
    };
    Ok((iters, variants))
}

fn main() -> std::process::ExitCode {
    let (iters, variants) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(iters, &variants) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(iters: usize, variants: &[(u32, bool)]) -> Result<(), String> {
    let client = cubecl::Device::Cuda(Default::default()).client();
    for (name, heads, tokens) in [
        ("wan2.1-480p", 12usize, 32_760usize),
        ("hunyuan-720p", 24, 119_056),
    ] {
        let n = heads * tokens * 128;
        let data: Vec<bf16> = (0..n)
            .map(|i| bf16::from_f32(((i * 7919) % 2001) as f32 / 1000.0 - 1.0))
            .collect();
        let bytes = bf16_bytes(&data);
        let q = client.create_from_slice(&bytes);
        let k = client.create_from_slice(&bytes);
        let v = client.create_from_slice(&bytes);
        let o = client.empty(n * 2);
        // Three rows of head 0 in f64, once per shape: every variant is checked against them.
        let x: Vec<f32> = data[..tokens * 128].iter().map(|v| v.to_f32()).collect();
        let reference: Vec<(usize, Vec<f64>)> = [0, tokens / 2, tokens - 1]
            .into_iter()
            .map(|row| (row, reference_row(&x, &x, &x, tokens, row)))
            .collect();
        for &(wgs, async_copy) in variants {
            let launch = || {
                dense_attention_with(
                    &client, &q, &k, &v, &o, heads, tokens, None, wgs, async_copy,
                )
                .map_err(|e| e.to_string())
            };
            let sync = || cubecl::future::block_on(client.sync()).map_err(|e| format!("{e:?}"));
            launch()?;
            sync()?;
            let t = Instant::now();
            for _ in 0..iters {
                launch()?;
            }
            sync()?;
            let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
            // A timing of a kernel that failed or computed garbage is worthless: check three rows
            // of head 0 against the f64 reference (launch errors surface on this read).
            let got = bf16_from_bytes(
                &client
                    .read_one(o.clone())
                    .map_err(|e| format!("{name}: the kernel failed: {e:?}"))?,
            );
            let mut worst = 0f64;
            for (row, want) in &reference {
                let (mut e, mut n) = (0f64, 0f64);
                for c in 0..128 {
                    e += (got[row * 128 + c].to_f64() - want[c]).powi(2);
                    n += want[c] * want[c];
                }
                let rel = (e / n).sqrt();
                // NaN fails too (`max` would drop it).
                if !rel.is_finite() || rel >= 1e-2 {
                    return Err(format!(
                        "{name}: row {row} off the reference by rel L2 {rel}"
                    ));
                }
                worst = worst.max(rel);
            }
            let flops = 4.0 * heads as f64 * (tokens as f64).powi(2) * 128.0;
            println!(
                "{{\"shape\": \"{name}\", \"warpgroups\": {wgs}, \"cp_async\": {async_copy}, \"heads\": {heads}, \"tokens\": {tokens}, \"ms\": {ms:.3}, \"tflops\": {:.1}, \"check_rel_l2\": {worst:.2e}}}",
                flops / ms / 1e9
            );
        }
    }
    Ok(())
}

/// Row `row` of softmax(q k^T / sqrt(128)) v for one head, in f64.
fn reference_row(q: &[f32], k: &[f32], v: &[f32], tokens: usize, row: usize) -> Vec<f64> {
    let qi = &q[row * 128..(row + 1) * 128];
    let s: Vec<f64> = (0..tokens)
        .map(|j| {
            let kj = &k[j * 128..(j + 1) * 128];
            qi.iter()
                .zip(kj)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                / (128f64).sqrt()
        })
        .collect();
    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let p: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
    let sum: f64 = p.iter().sum();
    let mut out = vec![0f64; 128];
    for (j, pj) in p.iter().enumerate() {
        for c in 0..128 {
            out[c] += pj / sum * v[j * 128 + c] as f64;
        }
    }
    out
}
