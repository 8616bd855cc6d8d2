//! Rotary position embeddings: per-axis frequency tables, 3D tables in (t, h, w) token
//! order, and the interleaved-pair rotation all three models use.
//!
//! Tables are per *pair*: `cos[n, k]` is the angle cosine for features `2k` and `2k+1`
//! (diffusers' repeat-interleaved tables keep each value twice; we keep it once).
//!
//! [`RopeCache`] keeps a model's tables per layout so that a denoising loop builds and
//! uploads them once.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::Result;
use crate::io::TensorMap;

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

/// RoPE tables `(cos, sin)`, each `[tokens, head_dim/2]` f32, as the models pass them to
/// their attention.
pub type RopeTables<B> = (Tensor<B, 2>, Tensor<B, 2>);

/// Layouts a [`RopeCache`] keeps (the oldest is dropped past this; a generation loop
/// uses one layout, a search or a benchmark a handful).
const ROPE_CACHE_ENTRIES: usize = 8;

/// One cached layout: the grid, and the device and tables of one backend, type-erased so
/// that the cache needs no backend parameter (a `#[module(skip)]` field whose type names
/// `B` would be treated as a sub-module by Burn's `Module` derive).
struct RopeCacheEntry {
    grid: [usize; 3],
    /// `(B::Device, RopeTables<B>)`.
    tables: Box<dyn Any + Send>,
}

/// A model's RoPE tables per `(grid, device)`, built once on the host and uploaded, then
/// reused by every forward with that layout (a denoising loop calls the model 50-100
/// times with one grid).
///
/// Meant as a `#[module(skip)]` field of a model: clones (and the modules Burn derives
/// from the model, e.g. [`burn::module::AutodiffModule::valid`]) share one cache, and it
/// may be used from several threads. The key is the grid and the device only: the
/// tables must be a function of the grid for one model (its config is fixed).
#[derive(Clone, Default)]
pub struct RopeCache {
    entries: Arc<Mutex<Vec<RopeCacheEntry>>>,
    builds: Arc<AtomicUsize>,
}

impl RopeCache {
    /// The tables for `grid` on `device`: the cached ones (cloned handles, no copy), or
    /// `build()`'s, stored for the next call.
    pub fn get_or_build<B: Backend>(
        &self,
        grid: [usize; 3],
        device: &B::Device,
        build: impl FnOnce() -> RopeTables<B>,
    ) -> RopeTables<B> {
        // A poisoned lock only means another thread panicked while building: the entries
        // themselves are always complete.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let hit = entries.iter().find_map(|e| {
            let (dev, tables) = e.tables.downcast_ref::<(B::Device, RopeTables<B>)>()?;
            (e.grid == grid && dev == device).then(|| tables.clone())
        });
        if let Some(tables) = hit {
            return tables;
        }
        let tables = build();
        self.builds.fetch_add(1, Ordering::Relaxed);
        if entries.len() == ROPE_CACHE_ENTRIES {
            entries.remove(0);
        }
        entries.push(RopeCacheEntry {
            grid,
            tables: Box::new((device.clone(), tables.clone())),
        });
        tables
    }

    /// How many tables this cache (and its clones) has built so far.
    pub fn builds(&self) -> usize {
        self.builds.load(Ordering::Relaxed)
    }

    /// Drops every cached table (their device memory is freed once no tensor uses it).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Test support for the models' `rope_cache`: runs `forward` (one denoiser call on a
/// tensor map) on `inputs` twice, then with `hidden_states` cut to half its width (the
/// last axis), and panics unless the first call built the tables, the second reused them
/// (and gave the same output) and the third built new ones.
pub fn assert_cached_per_layout<B: Backend>(
    cache: &RopeCache,
    inputs: &TensorMap,
    forward: impl Fn(&TensorMap) -> Result<Tensor<B, 5>>,
) {
    let builds = cache.builds();
    let first = forward(inputs).expect("first forward");
    assert_eq!(cache.builds(), builds + 1, "first layout: tables built");
    let second = forward(inputs).expect("second forward");
    assert_eq!(cache.builds(), builds + 1, "same layout: cached tables");
    assert_eq!(first.into_data(), second.into_data(), "same output");

    let mut narrow = inputs.clone();
    let x = inputs
        .float::<B, 5>("hidden_states", DType::F32, &Default::default())
        .expect("hidden_states [B, ., ., ., W]");
    let w = x.dims()[4];
    narrow.insert("hidden_states", x.narrow(4, 0, w / 2).into_data());
    forward(&narrow).expect("forward at half the width");
    assert_eq!(cache.builds(), builds + 2, "new layout: new tables");
}

impl fmt::Debug for RopeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grids: Vec<[usize; 3]> = self
            .entries
            .lock()
            .map(|e| e.iter().map(|e| e.grid).collect())
            .unwrap_or_default();
        f.debug_struct("RopeCache")
            .field("grids", &grids)
            .field("builds", &self.builds())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::Flex;

    fn build(grid: [usize; 3]) -> RopeTables<B> {
        rope_3d(
            [4, 6, 6],
            grid,
            10_000.0,
            FreqPrecision::F32,
            &Default::default(),
        )
    }

    #[test]
    fn cache_reuses_a_layout_and_builds_a_new_one() {
        let cache = RopeCache::default();
        let dev = Default::default();
        let a = cache.get_or_build::<B>([2, 3, 4], &dev, || build([2, 3, 4]));
        assert_eq!(cache.builds(), 1);
        let shared = cache.clone();
        let again = shared.get_or_build::<B>([2, 3, 4], &dev, || panic!("rebuilt"));
        assert_eq!(cache.builds(), 1, "same layout: reused");
        assert_eq!(a.0.to_data(), again.0.to_data());
        assert_eq!(a.1.to_data(), again.1.to_data());

        let other = cache.get_or_build::<B>([1, 3, 4], &dev, || build([1, 3, 4]));
        assert_eq!(cache.builds(), 2, "other layout: built");
        assert_eq!(other.0.dims(), [12, 8]);
        assert_eq!(
            format!("{cache:?}"),
            "RopeCache { grids: [[2, 3, 4], [1, 3, 4]], builds: 2 }"
        );

        for t in 0..ROPE_CACHE_ENTRIES {
            cache.get_or_build::<B>([t + 3, 1, 1], &dev, || build([t + 3, 1, 1]));
        }
        let builds = cache.builds();
        cache.get_or_build::<B>([2, 3, 4], &dev, || build([2, 3, 4]));
        assert_eq!(cache.builds(), builds + 1, "the oldest layout was dropped");
        cache.clear();
        cache.get_or_build::<B>([1, 3, 4], &dev, || build([1, 3, 4]));
        assert_eq!(cache.builds(), builds + 2, "cleared");
    }
}
