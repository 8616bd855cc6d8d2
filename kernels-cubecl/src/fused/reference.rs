//! f64 CPU oracles of the fused kernels (independent of the kernels' f32 arithmetic).
//!
//! Inputs are the values as stored (already rounded to their dtype, as f32). `round`
//! rounds a value to the output dtype; pass the identity for an f32 output. Where the
//! models round an intermediate to their dtype (the q/k norm before RoPE, the model-dtype
//! modulation), the oracle rounds the f64 value at the same point.

use super::ModMath;
use crate::KernelError;

fn mean_var(row: &[f32]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// LayerNorm `x` `[batch, tokens, dim]` then the modulation of
/// [`crate::fused::ModLayerNorm`] with `scale`/`shift` `[batch, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    x: &[f32],
    batch: usize,
    dim: usize,
    eps: f64,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    modulation: Option<(&[f32], &[f32], ModMath)>,
    round: impl Fn(f64) -> f64,
) -> Result<Vec<f64>, KernelError> {
    if dim == 0 || batch == 0 || !x.len().is_multiple_of(batch * dim) {
        return Err(KernelError::Option(format!(
            "x has {} values, not a multiple of batch {batch} x dim {dim}",
            x.len()
        )));
    }
    let tokens = x.len() / (batch * dim);
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks_exact(dim).enumerate() {
        let b = r / tokens;
        let (mean, var) = mean_var(row);
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, &v) in row.iter().enumerate() {
            let mut y = (v as f64 - mean) * rstd;
            if let Some(w) = weight {
                y *= w[j] as f64;
            }
            if let Some(bi) = bias {
                y += bi[j] as f64;
            }
            if let Some((scale, shift, math)) = modulation {
                let (sc, sh) = (scale[b * dim + j] as f64, shift[b * dim + j] as f64);
                y = match math {
                    ModMath::F32 => y * (1.0 + sc) + sh,
                    ModMath::OutDtype => round(round(round(y) * round(1.0 + sc)) + sh),
                };
            }
            out.push(round(y));
        }
    }
    Ok(out)
}

/// `x + y * gate` over `[batch, tokens, dim]` with `gate` `[batch, dim]`.
pub fn gated_residual(
    x: &[f32],
    y: &[f32],
    gate: &[f32],
    batch: usize,
    dim: usize,
    math: ModMath,
    round: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let per_batch = x.len() / batch;
    (0..x.len())
        .map(|i| {
            let g = gate[(i / per_batch) * dim + i % dim] as f64;
            let p = y[i] as f64 * g;
            let p = match math {
                ModMath::F32 => p,
                ModMath::OutDtype => round(p),
            };
            round(x[i] as f64 + p)
        })
        .collect()
}

/// The q/k normalisation + RoPE of [`crate::fused::QkNormRope`] (no output offset):
/// `x` `[batch, tokens, heads * head_dim]` -> `[batch, heads, tokens, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    x: &[f32],
    batch: usize,
    heads: usize,
    head_dim: usize,
    per_head: bool,
    layer_norm: bool,
    eps: f64,
    weight: &[f32],
    bias: Option<&[f32]>,
    rope: Option<(usize, &[f32], &[f32])>,
    round: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let dim = heads * head_dim;
    let tokens = x.len() / (batch * dim);
    let half = head_dim / 2;
    let mut out = vec![0.0; x.len()];
    let glen = if per_head { head_dim } else { dim };
    for (r, row) in x.chunks_exact(dim).enumerate() {
        let (b, n) = (r / tokens, r % tokens);
        let mut y = vec![0.0f64; dim];
        for (gi, g) in row.chunks_exact(glen).enumerate() {
            let (mean, var) = if layer_norm {
                mean_var(g)
            } else {
                let ms = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / glen as f64;
                (0.0, ms)
            };
            let rstd = 1.0 / (var + eps).sqrt();
            for (j, &v) in g.iter().enumerate() {
                let mut t = (v as f64 - mean) * rstd * weight[j] as f64;
                if let Some(bi) = bias {
                    t += bi[j] as f64;
                }
                y[gi * glen + j] = round(t);
            }
        }
        for h in 0..heads {
            for k in 0..half {
                let (y0, y1) = (y[h * head_dim + 2 * k], y[h * head_dim + 2 * k + 1]);
                let (mut o0, mut o1) = (y0, y1);
                if let Some((start, cos, sin)) = rope
                    && n >= start
                    && (n - start) * half < cos.len()
                {
                    let t = (n - start) * half + k;
                    let (c, s) = (cos[t] as f64, sin[t] as f64);
                    o0 = y0 * c - y1 * s;
                    o1 = y1 * c + y0 * s;
                }
                let o = ((b * heads + h) * tokens + n) * head_dim + 2 * k;
                out[o] = round(o0);
                out[o + 1] = round(o1);
            }
        }
    }
    out
}
