//! The `#[cube]` kernels of the fused element-wise / normalisation chains.
//!
//! Row kernels (LayerNorm, q/k norm + RoPE) use a 2D cube: `UNIT_POS_X` is the lane inside
//! one normalisation group (a token row, or one head of a token row), `UNIT_POS_Y` the
//! group inside the cube. Reductions go through shared memory with a tree of `log2(gx)`
//! steps and cube barriers (no plane operations), so they run on lavapipe and CUDA alike.
//! Every unit reaches every barrier: out-of-range groups only skip their loads and stores.

use cubecl::prelude::*;

/// Rounds an f32 to the element type `O` and back (exact when `O` is f32). Models that
/// compute in their dtype round after every operation; doing the operation in f32 and
/// rounding once gives the same bits for f16/bf16 (f32 carries more than twice their
/// mantissa bits plus two, so the double rounding is innocuous).
#[cube]
fn round_to<O: Float>(v: f32) -> f32 {
    f32::cast_from(O::cast_from(v))
}

/// Sum of `v` over the `gx` lanes of group `gy_pos`; every unit of the cube must call it.
/// Leaves the shared buffer free for the next call.
#[cube]
fn group_sum(
    smem: &mut SharedMemory<f32>,
    v: f32,
    lane: u32,
    group: u32,
    #[comptime] gx: u32,
) -> f32 {
    let base = (group * gx) as usize;
    smem[base + lane as usize] = v;
    sync_cube();
    #[unroll]
    for k in 0..comptime!(gx.trailing_zeros()) {
        let stride = comptime!(gx >> (k + 1));
        if lane < stride {
            let a = smem[base + lane as usize];
            let b = smem[base + (lane + stride) as usize];
            smem[base + lane as usize] = a + b;
        }
        sync_cube();
    }
    let total = smem[base];
    sync_cube();
    total
}

/// Index of the group handled by this unit (cubes may be laid out on a 2D grid).
#[cube]
fn group_index(#[comptime] gy: u32) -> u32 {
    CUBE_POS as u32 * gy + UNIT_POS_Y
}

/// `out = cast(LN_f32(x) [* w] [+ b] then modulated, O)`, one group = one row of `dim`.
///
/// Modulation (`has_mod`): `mod_rounded = false`: `y * (1 + scale) + shift` in f32 (Wan);
/// `true`: `y` rounded to `O`, then `1 + scale`, the product and the sum each rounded to
/// `O` (the model-dtype arithmetic of HunyuanVideo and CogVideoX). `scale`/`shift` are
/// `[batch, 1, dim]` with row `b` at `b * mod_stride`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mod_layer_norm<X: Float, O: Float, S: Float, W: Float>(
    x: &Array<X>,
    weight: &Array<W>,
    bias: &Array<W>,
    shift: &Array<S>,
    scale: &Array<S>,
    out: &mut Array<O>,
    rows: u32,
    tokens: u32,
    dim: u32,
    mod_stride: u32,
    eps: f32,
    #[comptime] gx: u32,
    #[comptime] gy: u32,
    #[comptime] has_weight: bool,
    #[comptime] has_bias: bool,
    #[comptime] has_mod: bool,
    #[comptime] mod_rounded: bool,
    #[define(X, O, S, W)] _dtypes: [StorageType; 4],
) {
    let mut smem = SharedMemory::<f32>::new(comptime!((gx * gy) as usize));
    let lane = UNIT_POS_X;
    let group = UNIT_POS_Y;
    let row = group_index(gy);
    let valid = row < rows;
    let base = row as usize * dim as usize;
    let inv_dim = 1.0f32 / f32::cast_from(dim);

    let mut s = 0.0f32;
    if valid {
        for j in range_stepped(lane, dim, gx) {
            s += f32::cast_from(x[base + j as usize]);
        }
    }
    let mean = group_sum(&mut smem, s, lane, group, gx) * inv_dim;

    let mut v = 0.0f32;
    if valid {
        for j in range_stepped(lane, dim, gx) {
            let c = f32::cast_from(x[base + j as usize]) - mean;
            v += c * c;
        }
    }
    let var = group_sum(&mut smem, v, lane, group, gx) * inv_dim;
    let rstd = 1.0f32 / f32::sqrt(var + eps);

    if valid {
        let mbase = (row / tokens) as usize * mod_stride as usize;
        for j in range_stepped(lane, dim, gx) {
            let ju = j as usize;
            let mut y = (f32::cast_from(x[base + ju]) - mean) * rstd;
            if comptime!(has_weight) {
                y *= f32::cast_from(weight[ju]);
            }
            if comptime!(has_bias) {
                y += f32::cast_from(bias[ju]);
            }
            if comptime!(has_mod) {
                let sc = f32::cast_from(scale[mbase + ju]);
                let sh = f32::cast_from(shift[mbase + ju]);
                if comptime!(mod_rounded) {
                    let yr = round_to::<O>(y);
                    let one_plus = round_to::<O>(sc + 1.0);
                    y = round_to::<O>(yr * one_plus) + sh;
                } else {
                    y = y * (sc + 1.0) + sh;
                }
            }
            out[base + ju] = O::cast_from(y);
        }
    }
}

/// `out = cast(x + y * gate, X)` over `[batch, tokens, dim]` with `gate` `[batch, 1, dim]`
/// (row `b` at `b * gate_stride`); `rounded`: the product is rounded to `X` first (model
/// dtype arithmetic), else everything is f32 and rounded once.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gated_residual<X: Float, G: Float>(
    x: &Array<X>,
    y: &Array<X>,
    gate: &Array<G>,
    out: &mut Array<X>,
    len: u32,
    per_batch: u32,
    dim: u32,
    gate_stride: u32,
    #[comptime] units: u32,
    #[comptime] rounded: bool,
    #[define(X, G)] _dtypes: [StorageType; 2],
) {
    let i = CUBE_POS as u32 * units + UNIT_POS_X;
    if i < len {
        let b = i / per_batch;
        let j = i % dim;
        let g = f32::cast_from(gate[b as usize * gate_stride as usize + j as usize]);
        let iu = i as usize;
        let mut prod = f32::cast_from(y[iu]) * g;
        if comptime!(rounded) {
            prod = round_to::<X>(prod);
        }
        out[iu] = X::cast_from(f32::cast_from(x[iu]) + prod);
    }
}

/// q/k normalisation (RMSNorm or LayerNorm, over a whole token row or per head) with the
/// result rounded to `X`, then interleaved-pair RoPE for tokens in
/// `[rope_start, rope_start + rope_len)` (table row `n - rope_start`), written in
/// `[batch, heads, out_tokens, head_dim]` at token `out_offset + n`.
///
/// Input `x`: `[batch, tokens, heads * head_dim]`. A group is one token row
/// (`per_head = false`, weight `[heads * head_dim]`) or one head of a token row
/// (`per_head = true`, weight `[head_dim]`).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn qk_norm_rope<X: Float, W: Float>(
    x: &Array<X>,
    weight: &Array<W>,
    bias: &Array<W>,
    cos: &Array<f32>,
    sin: &Array<f32>,
    out: &mut Array<X>,
    groups: u32,
    tokens: u32,
    heads: u32,
    head_dim: u32,
    out_tokens: u32,
    out_offset: u32,
    rope_start: u32,
    rope_len: u32,
    eps: f32,
    #[comptime] gx: u32,
    #[comptime] gy: u32,
    #[comptime] per_head: bool,
    #[comptime] layer_norm: bool,
    #[comptime] has_bias: bool,
    #[define(X, W)] _dtypes: [StorageType; 2],
) {
    let mut smem = SharedMemory::<f32>::new(comptime!((gx * gy) as usize));
    let lane = UNIT_POS_X;
    let group = UNIT_POS_Y;
    let g = group_index(gy);
    let valid = g < groups;
    let dim = heads * head_dim;
    // Token row and first column of the group.
    let mut row = g;
    let mut col0 = 0u32;
    let mut len = dim;
    if comptime!(per_head) {
        row = g / heads;
        col0 = (g % heads) * head_dim;
        len = head_dim;
    }
    let base = row as usize * dim as usize + col0 as usize;
    let inv_len = 1.0f32 / f32::cast_from(len);

    let mut mean = 0.0f32;
    if comptime!(layer_norm) {
        let mut s = 0.0f32;
        if valid {
            for j in range_stepped(lane, len, gx) {
                s += f32::cast_from(x[base + j as usize]);
            }
        }
        mean = group_sum(&mut smem, s, lane, group, gx) * inv_len;
    }
    let mut v = 0.0f32;
    if valid {
        for j in range_stepped(lane, len, gx) {
            let c = f32::cast_from(x[base + j as usize]) - mean;
            v += c * c;
        }
    }
    let rstd = 1.0f32 / f32::sqrt(group_sum(&mut smem, v, lane, group, gx) * inv_len + eps);

    if valid {
        let b = row / tokens;
        let n = row % tokens;
        let rotate = n >= rope_start && n < rope_start + rope_len;
        let half = head_dim / 2;
        for p in range_stepped(lane, len / 2, gx) {
            let j = 2 * p;
            let ju = j as usize;
            let mut y0 = (f32::cast_from(x[base + ju]) - mean) * rstd * f32::cast_from(weight[ju]);
            let mut y1 =
                (f32::cast_from(x[base + ju + 1]) - mean) * rstd * f32::cast_from(weight[ju + 1]);
            if comptime!(has_bias) {
                y0 += f32::cast_from(bias[ju]);
                y1 += f32::cast_from(bias[ju + 1]);
            }
            y0 = round_to::<X>(y0);
            y1 = round_to::<X>(y1);
            let c = col0 + j;
            let h = c / head_dim;
            let d = c % head_dim;
            let mut o0 = y0;
            let mut o1 = y1;
            if rotate {
                let t = (n - rope_start) as usize * half as usize + (d / 2) as usize;
                let (cs, sn) = (cos[t], sin[t]);
                o0 = y0 * cs - y1 * sn;
                o1 = y1 * cs + y0 * sn;
            }
            let o = ((b * heads + h) as usize * out_tokens as usize + (out_offset + n) as usize)
                * head_dim as usize
                + d as usize;
            out[o] = X::cast_from(o0);
            out[o + 1] = X::cast_from(o1);
        }
    }
}
