//! Shared test helpers: random inputs and an independent f64 reference (masked dense
//! softmax over the token-level mask of the block tables).
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vdit_patterns::{CompiledLayer, HeadSlot};

pub fn random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

/// f64 masked dense attention. Returns (out, lse).
pub fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, h, n, d]: [usize; 4],
    layer: &CompiledLayer,
    scale: f64,
    pad: Option<&[bool]>,
) -> (Vec<f64>, Vec<f64>) {
    let masks: Vec<Vec<bool>> = layer.tables().iter().map(|t| t.token_mask()).collect();
    let mut out = vec![0f64; b * h * n * d];
    let mut lse = vec![f64::NEG_INFINITY; b * h * n];
    for bi in 0..b {
        for hi in 0..h {
            let HeadSlot::Table(t) = layer.slots()[hi] else {
                continue;
            };
            let mask = &masks[t];
            let base = (bi * h + hi) * n * d;
            for i in 0..n {
                let mut s = vec![f64::NEG_INFINITY; n];
                for j in 0..n {
                    if mask[i * n + j] && pad.is_none_or(|p| p[bi * n + j]) {
                        s[j] = (0..d)
                            .map(|c| q[base + i * d + c] as f64 * k[base + j * d + c] as f64)
                            .sum::<f64>()
                            * scale;
                    }
                }
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let l: f64 = w.iter().sum();
                lse[(bi * h + hi) * n + i] = m + l.ln();
                for (j, wj) in w.iter().enumerate() {
                    if *wj > 0.0 {
                        for c in 0..d {
                            out[base + i * d + c] += wj / l * v[base + j * d + c] as f64;
                        }
                    }
                }
            }
        }
    }
    (out, lse)
}

/// max |a - b| / max |b| (with a floor on the denominator).
pub fn max_rel_err(a: &[f32], b: &[f64]) -> f64 {
    let denom = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0f64, f64::max)
        / denom
}
