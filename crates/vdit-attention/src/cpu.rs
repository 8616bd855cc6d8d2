//! Block-sparse flash attention on the CPU (rayon), following the same block tables as
//! the GPU kernels.
//!
//! Work is split into (batch, head) pairs and, inside each, query blocks. Each query
//! block streams over the key blocks listed in its table row with an online softmax, so
//! memory stays O(tokens x head_dim) per head: no L x L score matrix is ever allocated.
//! Heads whose table is in spatial-major order gather their rows through the table's
//! permutation once per head.

use rayon::prelude::*;
use vdit_patterns::{CompiledLayer, HeadSlot, TokenOrder};

/// Shape of a q/k/v tensor: `[batch, heads, tokens, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Batch size.
    pub batch: usize,
    /// Attention heads.
    pub heads: usize,
    /// Sequence length.
    pub tokens: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// Output of [`sparse_attention`]: `out` is `[batch, heads, tokens, head_dim]` and `lse`
/// is `[batch, heads, tokens]` (natural log-sum-exp of the scaled scores; `-inf` for rows
/// that attend nothing, whose output is zero).
#[derive(Debug, Clone)]
pub struct CpuOutput {
    /// Attention output.
    pub out: Vec<f32>,
    /// Per-row log-sum-exp.
    pub lse: Vec<f32>,
}

/// Runs block-sparse attention for one layer on row-major f32 buffers.
///
/// `key_padding`, if given, is `[batch, tokens]` with `true` for valid keys; padded keys
/// get no weight. The caller checks shapes (the Burn-level entry point does).
///
/// # Panics
/// If buffer lengths disagree with `dims` or the layer's head count/token count.
pub fn sparse_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: Dims,
    layer: &CompiledLayer,
    scale: f32,
    key_padding: Option<&[bool]>,
) -> CpuOutput {
    let Dims {
        batch,
        heads,
        tokens: n,
        head_dim: d,
    } = dims;
    let len = batch * heads * n * d;
    assert!(
        q.len() == len && k.len() == len && v.len() == len,
        "q/k/v length"
    );
    assert_eq!(layer.heads(), heads, "head count");
    if let Some(t) = layer.tables().first() {
        assert_eq!(t.tokens(), n, "token count");
    }
    if let Some(kp) = key_padding {
        assert_eq!(kp.len(), batch * n, "key padding length");
    }
    let perms: Vec<Option<Vec<u32>>> = layer
        .tables()
        .iter()
        .map(|t| (t.order() != TokenOrder::Natural).then(|| t.permutation()))
        .collect();

    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..batch * heads)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / heads, bh % heads);
            let base = bh * n * d;
            let mut out = vec![0f32; n * d];
            let mut lse = vec![f32::NEG_INFINITY; n];
            let HeadSlot::Table(ti) = layer.slots()[h] else {
                return (out, lse);
            };
            let table = &layer.tables()[ti];
            let pad = key_padding.map(|kp| &kp[b * n..(b + 1) * n]);
            let (qh, kh, vh) = (
                &q[base..base + n * d],
                &k[base..base + n * d],
                &v[base..base + n * d],
            );
            // Work in the table's order: gather rows once if it is a permutation.
            let gathered;
            let pad_gathered;
            let (qh, kh, vh, pad) = match &perms[ti] {
                None => (qh, kh, vh, pad),
                Some(perm) => {
                    gathered = [qh, kh, vh].map(|x| gather_rows(x, perm, d));
                    pad_gathered =
                        pad.map(|p| perm.iter().map(|&i| p[i as usize]).collect::<Vec<_>>());
                    (
                        &gathered[0][..],
                        &gathered[1][..],
                        &gathered[2][..],
                        pad_gathered.as_deref(),
                    )
                }
            };
            let bs = table.block_size();
            let blocks: Vec<(Vec<f32>, Vec<f32>)> = (0..table.num_blocks())
                .into_par_iter()
                .map(|qb| {
                    let rows = table.block_range(qb);
                    let mut acc = FlashRows::new(rows.len(), d);
                    for &kb in table.row(qb) {
                        let cols = table.block_range(kb as usize);
                        acc.update(
                            &qh[rows.start * d..rows.end * d],
                            &kh[cols.start * d..cols.end * d],
                            &vh[cols.start * d..cols.end * d],
                            pad.map(|p| &p[cols.clone()]),
                            scale,
                        );
                    }
                    acc.finish()
                })
                .collect();
            let perm = perms[ti].as_deref();
            for (qb, (o, l)) in blocks.into_iter().enumerate() {
                for (r, p) in (qb * bs..).take(l.len()).enumerate() {
                    let dst = perm.map_or(p, |perm| perm[p] as usize);
                    out[dst * d..(dst + 1) * d].copy_from_slice(&o[r * d..(r + 1) * d]);
                    lse[dst] = l[r];
                }
            }
            (out, lse)
        })
        .collect();

    let mut out = Vec::with_capacity(len);
    let mut lse = Vec::with_capacity(batch * heads * n);
    for (o, l) in per_head {
        out.extend_from_slice(&o);
        lse.extend_from_slice(&l);
    }
    CpuOutput { out, lse }
}

fn gather_rows(x: &[f32], perm: &[u32], d: usize) -> Vec<f32> {
    let mut g = Vec::with_capacity(x.len());
    for &i in perm {
        g.extend_from_slice(&x[i as usize * d..(i as usize + 1) * d]);
    }
    g
}

/// Online-softmax state of a block of query rows.
struct FlashRows {
    d: usize,
    max: Vec<f32>,
    sum: Vec<f32>,
    acc: Vec<f32>,
    scores: Vec<f32>,
}

impl FlashRows {
    fn new(rows: usize, d: usize) -> Self {
        FlashRows {
            d,
            max: vec![f32::NEG_INFINITY; rows],
            sum: vec![0.0; rows],
            acc: vec![0.0; rows * d],
            scores: Vec::new(),
        }
    }

    fn update(&mut self, q: &[f32], k: &[f32], v: &[f32], pad: Option<&[bool]>, scale: f32) {
        let d = self.d;
        let cols = k.len() / d;
        self.scores.resize(cols, 0.0);
        for (r, qr) in q.chunks_exact(d).enumerate() {
            let mut block_max = f32::NEG_INFINITY;
            for (j, kr) in k.chunks_exact(d).enumerate() {
                let s = if pad.is_some_and(|p| !p[j]) {
                    f32::NEG_INFINITY
                } else {
                    dot(qr, kr) * scale
                };
                self.scores[j] = s;
                block_max = block_max.max(s);
            }
            if block_max == f32::NEG_INFINITY {
                continue; // every key of this block is padded for this row
            }
            let new_max = self.max[r].max(block_max);
            let correction = (self.max[r] - new_max).exp();
            let acc = &mut self.acc[r * d..(r + 1) * d];
            if correction != 1.0 {
                acc.iter_mut().for_each(|a| *a *= correction);
            }
            let mut sum = self.sum[r] * correction;
            for (j, vr) in v.chunks_exact(d).enumerate() {
                let p = (self.scores[j] - new_max).exp();
                if p != 0.0 {
                    sum += p;
                    axpy(acc, p, vr);
                }
            }
            self.max[r] = new_max;
            self.sum[r] = sum;
        }
    }

    fn finish(mut self) -> (Vec<f32>, Vec<f32>) {
        let d = self.d;
        let mut lse = Vec::with_capacity(self.max.len());
        for r in 0..self.max.len() {
            let l = self.sum[r];
            if l > 0.0 {
                let inv = 1.0 / l;
                self.acc[r * d..(r + 1) * d]
                    .iter_mut()
                    .for_each(|a| *a *= inv);
                lse.push(self.max[r] + l.ln());
            } else {
                lse.push(f32::NEG_INFINITY);
            }
        }
        (self.acc, lse)
    }
}

/// Dot product with eight independent accumulators so that it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline]
fn axpy(acc: &mut [f32], p: f32, v: &[f32]) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a += p * x;
    }
}
