//! T5 self-attention with the relative position bias (transformers `UMT5Attention`,
//! `T5Attention`; encoder only, so the buckets are bidirectional).

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use vdit_models::ModelBackend;
use vdit_models::nn::{Linear, to_dtype, to_f32};
use vdit_models::{Init, Result, Weights};

use super::config::T5Config;

/// The bucket of relative position `rel = key - query` (transformers
/// `_relative_position_bucket`, bidirectional): half the buckets for each sign; within a
/// half, exact buckets for distances below `num_buckets / 4` and log-spaced buckets up
/// to `max_distance`. The log is evaluated in f32 like PyTorch.
pub fn relative_position_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if rel > 0 { half } else { 0 };
    let n = rel.abs();
    let max_exact = half / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let ratio = (n as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket as usize
}

/// The relative position buckets of a `len x len` self-attention, row-major
/// `[query, key]`.
pub fn bucket_table(len: usize, num_buckets: usize, max_distance: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(len * len);
    for q in 0..len as i64 {
        for k in 0..len as i64 {
            out.push(relative_position_bucket(k - q, num_buckets, max_distance) as i64);
        }
    }
    out
}

/// One self-attention layer (`layer.0.SelfAttention`): `q`, `k`, `v`, `o` without bias
/// and, in UMT5 (or the first T5 layer), `relative_attention_bias` `[buckets, heads]`.
/// No `1/sqrt(d)` scaling (T5 folds it into the initialisation).
#[derive(Module, Debug)]
pub struct T5Attention<B: Backend> {
    /// Query projection `d_model -> heads * d_kv`.
    pub q: Linear<B>,
    /// Key projection.
    pub k: Linear<B>,
    /// Value projection.
    pub v: Linear<B>,
    /// Output projection `heads * d_kv -> d_model`.
    pub o: Linear<B>,
    /// `[num_buckets, heads]`, if this layer has its own bias.
    pub relative_attention_bias: Option<Param<Tensor<B, 2>>>,
    /// Heads.
    pub heads: usize,
    /// Per-head size.
    pub d_kv: usize,
    /// Relative position buckets.
    pub num_buckets: usize,
    /// Relative position max distance.
    pub max_distance: usize,
}

impl<B: ModelBackend> T5Attention<B> {
    /// Loads `q`, `k`, `v`, `o` (and `relative_attention_bias` when `has_bias`) under `w`.
    pub fn load(w: &Weights<B>, c: &T5Config, has_bias: bool) -> Result<Self> {
        let inner = c.inner_dim();
        let bias = if has_bias {
            let t = w.pp("relative_attention_bias").get(
                "weight",
                [c.num_buckets, c.heads],
                Init::Normal(1.0),
            )?;
            Some(Param::from_tensor(t))
        } else {
            None
        };
        Ok(T5Attention {
            q: Linear::load(&w.pp("q"), c.d_model, inner, false)?,
            k: Linear::load(&w.pp("k"), c.d_model, inner, false)?,
            v: Linear::load(&w.pp("v"), c.d_model, inner, false)?,
            o: Linear::load(&w.pp("o"), inner, c.d_model, false)?,
            relative_attention_bias: bias,
            heads: c.heads,
            d_kv: c.d_kv,
            num_buckets: c.num_buckets,
            max_distance: c.max_distance,
        })
    }

    /// The position bias `[1, heads, len, len]` in f32, if this layer has a bias table.
    pub fn position_bias(&self, len: usize) -> Option<Tensor<B, 4>> {
        let table = self.relative_attention_bias.as_ref()?.val();
        let device = table.device();
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                bucket_table(len, self.num_buckets, self.max_distance),
                [len * len],
            ),
            &device,
        );
        let bias = to_f32(table).select(0, idx); // [len*len, heads]
        Some(
            bias.reshape([len, len, self.heads])
                .permute([2, 0, 1])
                .unsqueeze_dim::<4>(0),
        )
    }

    /// Attention of `x` `[B, L, d_model]` with `bias` `[B or 1, heads, L, L]` (position
    /// bias plus key mask, f32) added to the scores; softmax in f32 like transformers.
    ///
    /// # Shapes
    /// `[B, L, d_model] -> [B, L, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, l, _] = x.dims();
        let split = |t: Tensor<B, 3>| t.reshape([b, l, self.heads, self.d_kv]).swap_dims(1, 2);
        let q = split(self.q.forward(x.clone()));
        let k = split(self.k.forward(x.clone()));
        let v = split(self.v.forward(x));
        let dtype = q.dtype();
        let scores = to_f32(q.matmul(k.swap_dims(2, 3))) + bias;
        let weights = to_dtype(softmax(scores, 3), dtype);
        let out = weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, l, self.heads * self.d_kv]);
        self.o.forward(out)
    }
}

/// The additive key mask `[B, 1, 1, L]` in f32 from a 0/1 `mask` `[B, L]`: 0 where
/// attended, `f32::MIN` where masked (transformers' extended attention mask).
pub fn additive_key_mask<B: Backend>(mask: Tensor<B, 2, Int>) -> Tensor<B, 4> {
    let [b, l] = mask.dims();
    let keep = mask.float().cast(DType::F32);
    ((keep.neg() + 1.0) * f32::MIN as f64).reshape([b, 1, 1, l])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_transformers_values() {
        // transformers T5Attention._relative_position_bucket(torch.arange(-40, 41),
        // bidirectional=True, num_buckets=32, max_distance=128), sampled.
        let f = |r| relative_position_bucket(r, 32, 128);
        assert_eq!(f(0), 0);
        assert_eq!(f(-1), 1);
        assert_eq!(f(1), 17);
        assert_eq!(f(-7), 7);
        assert_eq!(f(7), 23);
        assert_eq!(f(-8), 8);
        assert_eq!(f(-12), 9);
        assert_eq!(f(-16), 10);
        assert_eq!(f(-40), 12);
        assert_eq!(f(40), 28);
        assert_eq!(f(-1000), 15);
        assert_eq!(f(1000), 31);
    }
}
