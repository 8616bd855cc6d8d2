//! Rotary position embeddings: per-axis frequency tables, 3D tables in (t, h, w) token
//! order, and the interleaved-pair rotation all three models use.
//!
//! Tables are per *pair*: `cos[n, k]` is the angle cosine for features `2k` and `2k+1`
//! (diffusers' repeat-interleaved tables keep each value twice; we keep it once).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

/// Which precision the frequencies are computed in before the table is stored as f32
/// (diffusers `get_1d_rotary_pos_embed(freqs_dtype=...)`: Wan uses f64, the default is
/// f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreqPrecision {
    /// `torch.float64` frequencies and angles.
    F64,
    /// `torch.float32` frequencies and angles.
    F32,
}

/// Angles of one axis: `angle[p][k] = pos_p / theta^(2k/dim)` for `k < dim/2`, as
/// `(cos, sin)` with `positions.len() * dim/2` entries each.
pub fn axis_table(
    dim: usize,
    positions: &[f64],
    theta: f64,
    precision: FreqPrecision,
) -> (Vec<f32>, Vec<f32>) {
    let half = dim / 2;
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for k in 0..half {
            let (c, s) = match precision {
                FreqPrecision::F64 => {
                    let f = 1.0 / theta.powf((2 * k) as f64 / dim as f64);
                    let a = p * f;
                    (a.cos() as f32, a.sin() as f32)
                }
                FreqPrecision::F32 => {
                    // torch: arange(0, dim, 2).float() / dim, theta ** that, 1 / ..., outer.
                    let e = (2 * k) as f32 / dim as f32;
                    let f = 1.0f32 / (theta as f32).powf(e);
                    let a = p as f32 * f;
                    ((a as f64).cos() as f32, (a as f64).sin() as f32)
                }
            };
            cos.push(c);
            sin.push(s);
        }
    }
    (cos, sin)
}

/// A 3D RoPE table for `frames x height x width` tokens in frame-major (t, h, w) order;
/// each token's pairs are `[t (axes[0]/2) | h (axes[1]/2) | w (axes[2]/2)]`, with integer
/// positions `0..n` on each axis. Returns `(cos, sin)` f32 tensors `[tokens, head_dim/2]`.
pub fn rope_3d<B: Backend>(
    axes_dim: [usize; 3],
    grid: [usize; 3],
    theta: f64,
    precision: FreqPrecision,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let tables: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
        .map(|a| {
            let pos: Vec<f64> = (0..grid[a]).map(|p| p as f64).collect();
            axis_table(axes_dim[a], &pos, theta, precision)
        })
        .collect();
    let halves = axes_dim.map(|d| d / 2);
    let pairs: usize = halves.iter().sum();
    let [tn, hn, wn] = grid;
    let tokens = tn * hn * wn;
    let mut cos = Vec::with_capacity(tokens * pairs);
    let mut sin = Vec::with_capacity(tokens * pairs);
    for t in 0..tn {
        for h in 0..hn {
            for w in 0..wn {
                for (a, idx) in [t, h, w].into_iter().enumerate() {
                    let r = idx * halves[a]..(idx + 1) * halves[a];
                    cos.extend_from_slice(&tables[a].0[r.clone()]);
                    sin.extend_from_slice(&tables[a].1[r]);
                }
            }
        }
    }
    let mk = |v: Vec<f32>| {
        Tensor::<B, 2>::from_data(TensorData::new(v, [tokens, pairs]), (device, DType::F32))
    };
    (mk(cos), mk(sin))
}

/// Rotates interleaved pairs: `out[2k] = x[2k] cos - x[2k+1] sin`,
/// `out[2k+1] = x[2k] sin + x[2k+1] cos` (diffusers `apply_rotary_emb` with
/// `use_real_unbind_dim=-1`, Wan's processor rotation), computed in f32 and cast back.
///
/// Computed as `x * cos2 + swap(x) * sin2` with per-feature tables (`cos2[2k] =
/// cos2[2k+1] = cos[k]`, `sin2 = (-sin[k], +sin[k])`) and `swap` exchanging the two
/// features of each pair: the same f32 products and sums as the formula above (negation
/// and the order of a sum's two terms are exact), so the same bits. One flip replaces
/// the strided half-tensors and the concatenation: 2.38 -> 2.03 ms for Wan2.1-1.3B's q
/// at 32,760 tokens on an H100 (`vdit-wan` example `block_profile`,
/// `results/bench/h100-2026-11-24/profile`).
///
/// # Shapes
/// `x`: `[batch, heads, tokens, head_dim]`; `cos`, `sin`: `[tokens, head_dim/2]`.
pub fn apply_interleaved<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    vdit_ops::apply_interleaved(x, cos, sin)
}
