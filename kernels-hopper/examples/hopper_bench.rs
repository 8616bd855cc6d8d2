//! Times the wgmma dense attention at the three models' real sizes (head dim 128 ones).
//! `cargo run --release --features cuda --example hopper_bench [-- --iters N]`
//! Prints one JSON line per shape: {shape, heads, tokens, ms, tflops}.

use std::time::Instant;

use half::bf16;
use vdit_kernels_hopper::host::{bf16_bytes, bf16_from_bytes, dense_attention_with};

fn main() {
    let iters: usize = std::env::args()
        .skip_while(|a| a != "--iters")
        .nth(1)
        .map(|s| s.parse().expect("--iters takes a number"))
        .unwrap_or(10);
    // `--variant W:A` times one cube shape (W warpgroups, A = cp.async true/false) only.
    let variants: Vec<(u32, bool)> = match std::env::args().skip_while(|a| a != "--variant").nth(1)
    {
        Some(v) => {
            let (w, a) = v
                .split_once(':')
                .expect("--variant takes WARPGROUPS:CP_ASYNC");
            vec![(
                w.parse().expect("warpgroups"),
                a.parse().expect("true or false"),
            )]
        }
        None => vec![(2, false), (1, true), (2, true), (3, true)],
    };
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
        for &(wgs, async_copy) in &variants {
            dense_attention_with(
                &client, &q, &k, &v, &o, heads, tokens, None, wgs, async_copy,
            )
            .unwrap();
            cubecl::future::block_on(client.sync()).unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                dense_attention_with(
                    &client, &q, &k, &v, &o, heads, tokens, None, wgs, async_copy,
                )
                .unwrap();
            }
            cubecl::future::block_on(client.sync()).unwrap();
            let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
            // A timing of a kernel that failed or computed garbage is worthless: check three rows
            // of head 0 against the f64 reference (launch errors surface on this read).
            let got = bf16_from_bytes(&client.read_one(o.clone()).expect("kernel failed"));
            let x: Vec<f32> = data[..tokens * 128].iter().map(|v| v.to_f32()).collect();
            let mut worst = 0f64;
            for row in [0, tokens / 2, tokens - 1] {
                let want = reference_row(&x, &x, &x, tokens, row);
                let (mut e, mut n) = (0f64, 0f64);
                for c in 0..128 {
                    e += (got[row * 128 + c].to_f64() - want[c]).powi(2);
                    n += want[c] * want[c];
                }
                worst = worst.max((e / n).sqrt());
            }
            assert!(
                worst < 1e-2,
                "{name}: rows off the reference by rel L2 {worst}"
            );
            let flops = 4.0 * heads as f64 * (tokens as f64).powi(2) * 128.0;
            println!(
                "{{\"shape\": \"{name}\", \"warpgroups\": {wgs}, \"cp_async\": {async_copy}, \"heads\": {heads}, \"tokens\": {tokens}, \"ms\": {ms:.3}, \"tflops\": {:.1}, \"check_rel_l2\": {worst:.2e}}}",
                flops / ms / 1e9
            );
        }
    }
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
