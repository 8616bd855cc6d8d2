//! f64 CPU reference: the oracle for the kernels, also used by other crates' tests.
//!
//! It applies exactly the block mask of each head's table, in the table's token order:
//! query row `p` (table position) attends every key position of every block listed in its
//! block row, and reads/writes natural tokens `perm[p]`. Rows with no computed key (skip
//! heads, empty block rows, or every listed key padded) give output 0 and lse `-inf`.

use crate::KernelError;
use vdit_patterns::{CompiledLayer, HeadSlot};

/// Reference sparse attention on `[batch, heads, tokens, head_dim]` f32 slices, computed
/// in f64. `key_padding` is `[batch, tokens]`, `true` = valid key. `scale` is the softmax
/// scale (`1/sqrt(head_dim)` by convention). Returns `(out, lse)` with `out` shaped like `q`
/// and `lse` `[batch, heads, tokens]` (natural order; `-inf` for rows without keys).
#[allow(clippy::too_many_arguments)]
pub fn sparse_attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    layer: &CompiledLayer,
    batch: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    key_padding: Option<&[bool]>,
) -> Result<(Vec<f32>, Vec<f32>), KernelError> {
    if heads != layer.heads() {
        return Err(KernelError::Shape {
            field: "heads",
            expected: layer.heads(),
            got: heads,
        });
    }
    let per_token = batch * heads * head_dim;
    if per_token == 0 || !q.len().is_multiple_of(per_token) {
        return Err(KernelError::Shape {
            field: "q.len",
            expected: per_token,
            got: q.len(),
        });
    }
    let tokens = q.len() / per_token;
    for (field, len) in [("k.len", k.len()), ("v.len", v.len())] {
        if len != q.len() {
            return Err(KernelError::Shape {
                field,
                expected: q.len(),
                got: len,
            });
        }
    }
    if let Some(t) = layer.tables().first()
        && t.tokens() != tokens
    {
        return Err(KernelError::Shape {
            field: "tokens",
            expected: t.tokens(),
            got: tokens,
        });
    }
    if let Some(m) = key_padding
        && m.len() != batch * tokens
    {
        return Err(KernelError::Shape {
            field: "key_padding.len",
            expected: batch * tokens,
            got: m.len(),
        });
    }
    let perms: Vec<Vec<u32>> = layer.tables().iter().map(|t| t.permutation()).collect();
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![f32::NEG_INFINITY; batch * heads * tokens];
    let d = head_dim;
    let mut scores: Vec<(usize, f64)> = Vec::new();
    for b in 0..batch {
        for (h, slot) in layer.slots().iter().enumerate() {
            let HeadSlot::Table(ti) = *slot else { continue };
            let table = &layer.tables()[ti];
            let perm = &perms[ti];
            let base = (b * heads + h) * tokens * d;
            for qb in 0..table.num_blocks() {
                for p in table.block_range(qb) {
                    let nq = perm[p] as usize;
                    let qrow = &q[base + nq * d..base + (nq + 1) * d];
                    scores.clear();
                    for &kb in table.row(qb) {
                        for pk in table.block_range(kb as usize) {
                            let nk = perm[pk] as usize;
                            if key_padding.is_some_and(|m| !m[b * tokens + nk]) {
                                continue;
                            }
                            let krow = &k[base + nk * d..base + (nk + 1) * d];
                            let dot: f64 = qrow
                                .iter()
                                .zip(krow)
                                .map(|(&a, &c)| a as f64 * c as f64)
                                .sum();
                            scores.push((nk, dot * scale as f64));
                        }
                    }
                    if scores.is_empty() {
                        continue;
                    }
                    let m = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
                    let mut acc = vec![0f64; d];
                    let mut sum = 0f64;
                    for &(nk, s) in &scores {
                        let p = (s - m).exp();
                        sum += p;
                        let vrow = &v[base + nk * d..base + (nk + 1) * d];
                        for (a, &x) in acc.iter_mut().zip(vrow) {
                            *a += p * x as f64;
                        }
                    }
                    for (o, a) in out[base + nq * d..base + (nq + 1) * d].iter_mut().zip(&acc) {
                        *o = (a / sum) as f32;
                    }
                    lse[(b * heads + h) * tokens + nq] = (m + sum.ln()) as f32;
                }
            }
        }
    }
    Ok((out, lse))
}

/// Reference dense cross-attention, computed in f64: `q` `[batch, heads, tokens, head_dim]`
/// attends to every key of `k`, `v` `[batch, heads, kv_tokens, head_dim]` except those
/// with `key_padding[b * kv_tokens + j] == false`. Returns `(out, lse)` like
/// [`sparse_attention_reference`] (rows whose every key is padded: output 0, lse `-inf`).
#[allow(clippy::too_many_arguments)]
pub fn cross_attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    key_padding: Option<&[bool]>,
) -> Result<(Vec<f32>, Vec<f32>), KernelError> {
    let per_token = batch * heads * head_dim;
    for (field, len) in [("q.len", q.len()), ("k.len", k.len())] {
        if per_token == 0 || len == 0 || !len.is_multiple_of(per_token) {
            return Err(KernelError::Shape {
                field,
                expected: per_token,
                got: len,
            });
        }
    }
    if v.len() != k.len() {
        return Err(KernelError::Shape {
            field: "v.len",
            expected: k.len(),
            got: v.len(),
        });
    }
    let (tokens, kv_tokens, d) = (q.len() / per_token, k.len() / per_token, head_dim);
    if let Some(m) = key_padding
        && m.len() != batch * kv_tokens
    {
        return Err(KernelError::Shape {
            field: "key_padding.len",
            expected: batch * kv_tokens,
            got: m.len(),
        });
    }
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![f32::NEG_INFINITY; batch * heads * tokens];
    for b in 0..batch {
        let keys: Vec<usize> = (0..kv_tokens)
            .filter(|&j| key_padding.is_none_or(|m| m[b * kv_tokens + j]))
            .collect();
        if keys.is_empty() {
            continue;
        }
        for h in 0..heads {
            let (qb, kb) = (
                (b * heads + h) * tokens * d,
                (b * heads + h) * kv_tokens * d,
            );
            for i in 0..tokens {
                let qrow = &q[qb + i * d..qb + (i + 1) * d];
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let krow = &k[kb + j * d..kb + (j + 1) * d];
                        let dot: f64 = qrow
                            .iter()
                            .zip(krow)
                            .map(|(&a, &c)| a as f64 * c as f64)
                            .sum();
                        dot * scale as f64
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = p.iter().sum();
                for c in 0..d {
                    let o: f64 = keys
                        .iter()
                        .zip(&p)
                        .map(|(&j, w)| w * v[kb + j * d + c] as f64)
                        .sum();
                    out[qb + i * d + c] = (o / z) as f32;
                }
                lse[(b * heads + h) * tokens + i] = (m + z.ln()) as f32;
            }
        }
    }
    Ok((out, lse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use vdit_patterns::{Pattern, TextPosition, VideoLayout};

    /// The reference agrees with naive masked softmax over the patterns crate's own
    /// token mask (`BlockTable::token_mask`, natural order), so the kernels are checked
    /// against the block semantics, not against a copy of their own indexing.
    #[test]
    fn matches_naive_token_mask_softmax() {
        let mut rng = StdRng::seed_from_u64(9);
        let layout = VideoLayout::new(3, 4, 5)
            .unwrap()
            .with_text(7, TextPosition::Prefix)
            .unwrap();
        let patterns = [
            Pattern::Dense,
            Pattern::Skip,
            Pattern::Diagonal { band: 0.4 },
            Pattern::MultiDiagonal {
                spatial_band: 0.1,
                frame_reach: 1,
            },
        ];
        let layer = CompiledLayer::compile(&patterns, &layout, 8).unwrap();
        let (n, d, heads) = (layout.total_tokens(), 16, patterns.len());
        let mut r =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (q, k, v) = (r(heads * n * d), r(heads * n * d), r(heads * n * d));
        let pad: Vec<bool> = (0..n).map(|i| i % 11 != 3).collect();
        let scale = 0.3;
        let (out, lse) =
            sparse_attention_reference(&q, &k, &v, &layer, 1, heads, d, scale, Some(&pad)).unwrap();
        for (h, slot) in layer.slots().iter().enumerate() {
            let mask = match slot {
                HeadSlot::Skip => vec![false; n * n],
                HeadSlot::Table(t) => layer.tables()[*t].token_mask(),
            };
            for i in 0..n {
                let row = |j: usize| (h * n + j) * d;
                let keys: Vec<usize> = (0..n).filter(|&j| mask[i * n + j] && pad[j]).collect();
                let o = &out[row(i)..row(i) + d];
                if keys.is_empty() {
                    assert!(o.iter().all(|&x| x == 0.0));
                    assert_eq!(lse[h * n + i], f32::NEG_INFINITY);
                    continue;
                }
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        (0..d)
                            .map(|c| q[row(i) + c] as f64 * k[row(j) + c] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for c in 0..d {
                    let want: f64 = keys
                        .iter()
                        .zip(&s)
                        .map(|(&j, x)| (x - m).exp() / z * v[row(j) + c] as f64)
                        .sum();
                    assert!(
                        (o[c] as f64 - want).abs() < 1e-6,
                        "head {h} row {i} col {c}"
                    );
                }
                assert!((lse[h * n + i] as f64 - (m + z.ln())).abs() < 1e-5);
            }
        }
        assert!(sparse_attention_reference(&q, &k, &v, &layer, 1, 3, d, scale, None).is_err());
    }

    /// With as many keys as queries, dense cross-attention is the dense layer of the
    /// block-table reference (two independent code paths agree).
    #[test]
    fn cross_reference_matches_dense_table_reference() {
        let mut rng = StdRng::seed_from_u64(4);
        let layout = VideoLayout::new(2, 3, 5).unwrap();
        let (n, d, heads, batch) = (layout.total_tokens(), 16, 2, 2);
        let layer = CompiledLayer::compile(&[Pattern::Dense, Pattern::Dense], &layout, 8).unwrap();
        let mut r =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let len = batch * heads * n * d;
        let (q, k, v) = (r(len), r(len), r(len));
        let mut pad: Vec<bool> = (0..batch * n).map(|i| i % 7 != 2).collect();
        pad[n..].iter_mut().for_each(|x| *x = false); // batch 1: every key padded
        let (a, la) =
            sparse_attention_reference(&q, &k, &v, &layer, batch, heads, d, 0.4, Some(&pad))
                .unwrap();
        let (b, lb) =
            cross_attention_reference(&q, &k, &v, batch, heads, d, 0.4, Some(&pad)).unwrap();
        for (x, y) in a.iter().zip(&b).chain(la.iter().zip(&lb)) {
            assert!(x == y || (x - y).abs() < 1e-6, "{x} vs {y}");
        }
        assert!(b[len / 2..].iter().all(|&x| x == 0.0));
        assert!(cross_attention_reference(&q, &k[1..], &v, batch, heads, d, 0.4, None).is_err());
    }
}
