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
/// that attend nothing, whose output is zero). A NaN score (from a NaN in q or k) makes
/// its whole row NaN, in `out` and `lse`, as PyTorch's attention does; a NaN in v
/// reaches the output through the `P V` product.
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
        let (rows, cols) = (q.len() / d, k.len() / d);
        self.scores.resize(rows * cols, 0.0);
        // S = scale * Q K^T (rows x cols, row-major).
        // SAFETY: the pointers and strides describe in-bounds row-major matrices
        // (q: rows x d, k: cols x d read transposed, scores: rows x cols).
        unsafe {
            gemm::gemm(
                rows,
                cols,
                d,
                self.scores.as_mut_ptr(),
                1,
                cols as isize,
                false,
                q.as_ptr(),
                1,
                d as isize,
                k.as_ptr(),
                d as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        if let Some(pad) = pad {
            for row in self.scores.chunks_exact_mut(cols) {
                for (s, ok) in row.iter_mut().zip(pad) {
                    if !ok {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
        }
        // Online softmax: rescale the running sums and outputs, turn S into P in place.
        for r in 0..rows {
            let row = &mut self.scores[r * cols..(r + 1) * cols];
            // NaN-propagating maximum (`f32::max` would drop a NaN score): a NaN in q, k
            // or the scale makes the row NaN, as in PyTorch, instead of vanishing.
            let block_max = row.iter().copied().fold(f32::NEG_INFINITY, |m, s| {
                if m.is_nan() || s.is_nan() {
                    f32::NAN
                } else {
                    m.max(s)
                }
            });
            if block_max.is_nan() {
                self.max[r] = f32::NAN;
                self.sum[r] = f32::NAN;
                self.acc[r * d..(r + 1) * d].fill(f32::NAN);
                row.fill(f32::NAN);
                continue;
            }
            if block_max == f32::NEG_INFINITY {
                // Every key of this block is padded for this row: no weight at all.
                row.iter_mut().for_each(|s| *s = 0.0);
                continue;
            }
            if self.max[r].is_nan() {
                // A NaN earlier in the row stays: the row's output is NaN.
                row.fill(f32::NAN);
                continue;
            }
            let new_max = self.max[r].max(block_max);
            let correction = (self.max[r] - new_max).exp();
            if correction != 1.0 {
                self.acc[r * d..(r + 1) * d]
                    .iter_mut()
                    .for_each(|a| *a *= correction);
            }
            let mut sum = 0.0;
            for s in row.iter_mut() {
                *s = (*s - new_max).exp();
                sum += *s;
            }
            self.sum[r] = self.sum[r] * correction + sum;
            self.max[r] = new_max;
        }
        // O += P V.
        // SAFETY: as above (scores: rows x cols, v: cols x d, acc: rows x d).
        unsafe {
            gemm::gemm(
                rows,
                d,
                cols,
                self.acc.as_mut_ptr(),
                1,
                d as isize,
                true,
                self.scores.as_ptr(),
                1,
                cols as isize,
                v.as_ptr(),
                1,
                d as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    fn finish(mut self) -> (Vec<f32>, Vec<f32>) {
        let d = self.d;
        let mut lse = Vec::with_capacity(self.max.len());
        for r in 0..self.max.len() {
            let l = self.sum[r];
            if l.is_nan() {
                self.acc[r * d..(r + 1) * d].fill(f32::NAN);
                lse.push(f32::NAN);
            } else if l > 0.0 {
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
