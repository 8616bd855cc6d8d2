//! Planted q/k/v: heads with known attention structure, built in code, so that a search
//! can be checked against ground truth and `cargo xtask search` runs with no download.
//!
//! This is *not* a Wan2.1 forward pass: the q/k/v are constructed directly (the layer
//! inputs of a tiny Wan-shaped model, no text in self-attention), with one of five
//! structures per head. Logits are designed through explicit feature maps (q and k are
//! scaled by `head_dim^(1/4)` so that `q.k / sqrt(head_dim)` is the designed logit):
//!
//! | kind | structure | expected pattern |
//! |---|---|---|
//! | [`PlantedKind::Local`] | spatial neighbours (Gaussian in h and w) in the same frame | diagonal |
//! | [`PlantedKind::SamePlace`] | the same (h, w) in every frame | multi_diagonal |
//! | [`PlantedKind::GlobalTokens`] | two short spans of global key tokens | vertical_stripe |
//! | [`PlantedKind::Mixing`] | scattered content clusters of 8 tokens across the video | dense |
//! | [`PlantedKind::Negligible`] | random attention, values 1e-3 | skip |
//!
//! Structure (which tokens a head attends) is fixed per (layer, head); values and small
//! q/k perturbations change with the sample and step, as prompts and timesteps would.

use std::ops::Range;

use vdit_patterns::{PatternKind, Plan, VideoLayout};

use crate::{Decided, LayerQkv, QkvSource, SearchError, SourceInfo};

/// The structure planted in one head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlantedKind {
    /// Attends its spatial neighbourhood within its own frame.
    Local,
    /// Attends the same spatial position in every frame.
    SamePlace,
    /// Every query attends a few global key tokens.
    GlobalTokens,
    /// Attends a scattered set of tokens across the whole video (no sparse structure).
    Mixing,
    /// Contributes almost nothing (values 1e-3).
    Negligible,
}

impl PlantedKind {
    /// All kinds, in the order heads are assigned.
    pub const ALL: [PlantedKind; 5] = [
        PlantedKind::Local,
        PlantedKind::SamePlace,
        PlantedKind::GlobalTokens,
        PlantedKind::Mixing,
        PlantedKind::Negligible,
    ];

    /// The pattern kind a correct search assigns to such a head.
    pub fn expected(self) -> PatternKind {
        match self {
            PlantedKind::Local => PatternKind::Diagonal,
            PlantedKind::SamePlace => PatternKind::MultiDiagonal,
            PlantedKind::GlobalTokens => PatternKind::VerticalStripe,
            PlantedKind::Mixing => PatternKind::Dense,
            PlantedKind::Negligible => PatternKind::Skip,
        }
    }
}

/// A planted "model": shapes, samples and steps, and the rule assigning kinds to heads.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantedModel {
    /// Model name stored in plans and reports.
    pub name: String,
    /// Sequence layout.
    pub layout: VideoLayout,
    /// Layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Head dimension (at least 32, and at least 4x the frame count).
    pub head_dim: usize,
    /// Samples (seeds).
    pub samples: usize,
    /// Steps with q/k/v.
    pub steps: Vec<usize>,
    /// Base seed.
    pub seed: u64,
}

impl PlantedModel {
    /// The embedded default of `cargo xtask search`: a tiny Wan2.1-shaped setting (no
    /// text in self-attention) of 4 layers x 10 heads x head_dim 64 on a 5 x 12 x 16
    /// latent grid (960 tokens), 2 samples, steps 20 and 40 of a 50-step schedule.
    pub fn tiny_wan() -> Self {
        PlantedModel {
            name: "planted-tiny-wan2.1".into(),
            layout: VideoLayout::new(5, 12, 16).expect("valid layout"),
            layers: 4,
            heads: 10,
            head_dim: 64,
            samples: 2,
            steps: vec![20, 40],
            seed: 2025,
        }
    }

    /// Search options of the embedded default: a 50-step schedule, 10 dense warm-up
    /// steps, two step ranges (steps 10..30 and 30..50, informed by the captured steps
    /// 20 and 40), defaults otherwise.
    pub fn default_search_options() -> crate::SearchOptions {
        crate::SearchOptions {
            warmup_steps: 10,
            ranges: 2,
            total_steps: Some(50),
            ..crate::SearchOptions::default()
        }
    }

    /// Checks that the feature maps fit in `head_dim`.
    pub fn validate(&self) -> Result<(), SearchError> {
        self.layout
            .validate()
            .map_err(|e| SearchError::Inconsistent(e.to_string()))?;
        if self.head_dim < 32 || self.head_dim < 4 * self.layout.frames {
            return Err(SearchError::Inconsistent(format!(
                "planted heads need head_dim >= 32 and >= 4 x frames (got {} with {} frames)",
                self.head_dim, self.layout.frames
            )));
        }
        if self.layers == 0 || self.heads == 0 || self.samples == 0 || self.steps.is_empty() {
            return Err(SearchError::Inconsistent(
                "planted model has an empty dimension".into(),
            ));
        }
        Ok(())
    }

    /// The kind planted in `head` of `layer` (kinds rotate so every layer differs).
    pub fn kind(&self, layer: usize, head: usize) -> PlantedKind {
        PlantedKind::ALL[(head + 2 * layer) % PlantedKind::ALL.len()]
    }

    /// Video-token ranges (frame-major video indices) of the global tokens of a
    /// [`PlantedKind::GlobalTokens`] head in `layer`.
    #[allow(clippy::single_range_in_vec_init)] // a list of spans that may hold one
    pub fn global_tokens(&self, layer: usize) -> Vec<Range<usize>> {
        let l = &self.layout;
        let hw = l.tokens_per_frame();
        let g = (hw / 16).clamp(4, 16);
        let shift = (layer * 7) % (hw / 4).max(1);
        let f1 = 1.min(l.frames - 1);
        let a = f1 * hw + (hw / 3 + shift).min(hw - g);
        let b = (l.frames - 1) * hw + (2 * hw / 3 + shift).min(hw - g);
        if a + g > b {
            vec![a..a + g]
        } else {
            vec![a..a + g, b..b + g]
        }
    }

    /// Generates q/k/v of `layer` at `step` for `sample`.
    pub fn generate(&self, sample: usize, step: usize, layer: usize) -> LayerQkv {
        let l = self.layout;
        let (n, d) = (l.total_tokens(), self.head_dim);
        let mut q = vec![0f32; self.heads * n * d];
        let mut k = q.clone();
        let mut v = q.clone();
        let s = (d as f32).powf(0.25);
        for h in 0..self.heads {
            let kind = self.kind(layer, h);
            let mut structure = Rng::new(hash(&[self.seed, layer as u64, h as u64, 1]));
            let mut noise = Rng::new(hash(&[
                self.seed,
                layer as u64,
                h as u64,
                2 + sample as u64,
                step as u64,
            ]));
            let base = h * n * d;
            let (qh, kh, vh) = (
                &mut q[base..base + n * d],
                &mut k[base..base + n * d],
                &mut v[base..base + n * d],
            );
            plant_head(self, layer, kind, &mut structure, &mut noise, qh, kh, vh);
            // Scale so that q.k / sqrt(d) is the designed logit.
            qh.iter_mut().chain(kh.iter_mut()).for_each(|x| *x *= s);
        }
        LayerQkv::new(self.heads, n, d, q, k, v).expect("planted buffers have the right length")
    }

    /// Compares a plan's decisions with the planted kinds (every searched range, layer
    /// and head; dense warm-up ranges are not counted).
    pub fn recovery(&self, plan: &Plan) -> Recovery {
        let mut r = Recovery::default();
        for range in &plan.ranges {
            if range.start < plan.search.warmup_steps {
                continue;
            }
            for (layer, heads) in range.layers.iter().enumerate() {
                for (head, p) in heads.iter().enumerate() {
                    let planted = self.kind(layer, head);
                    r.total += 1;
                    if p.kind() == planted.expected() {
                        r.recovered += 1;
                    } else {
                        r.mismatches.push(Mismatch {
                            step_start: range.start,
                            layer,
                            head,
                            planted: planted.expected(),
                            chosen: p.kind(),
                        });
                    }
                }
            }
        }
        r
    }
}

/// How many planted heads a plan recovered.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Recovery {
    /// Heads compared.
    pub total: usize,
    /// Heads whose chosen pattern kind is the planted one.
    pub recovered: usize,
    /// The others.
    pub mismatches: Vec<Mismatch>,
}

/// A head whose chosen pattern kind differs from the planted one.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mismatch {
    /// First step of the plan range.
    pub step_start: usize,
    /// Layer.
    pub layer: usize,
    /// Head.
    pub head: usize,
    /// Expected kind.
    pub planted: PatternKind,
    /// Chosen kind.
    pub chosen: PatternKind,
}

impl QkvSource for PlantedModel {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            model: self.name.clone(),
            layout: self.layout,
            layers: self.layers,
            heads: self.heads,
            head_dim: self.head_dim,
            samples: self.samples,
            steps: self.steps.clone(),
        }
    }

    fn qkv(
        &mut self,
        sample: usize,
        step: usize,
        layer: usize,
        _: &Decided,
    ) -> Result<LayerQkv, SearchError> {
        Ok(self.generate(sample, step, layer))
    }
}

#[allow(clippy::too_many_arguments)]
fn plant_head(
    m: &PlantedModel,
    layer: usize,
    kind: PlantedKind,
    structure: &mut Rng,
    noise: &mut Rng,
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
) {
    let l = m.layout;
    let d = m.head_dim;
    let n = l.total_tokens();
    let video = l.video_range();
    // Values: iid N(0, 1) unless the kind says otherwise.
    v.iter_mut().for_each(|x| *x = noise.normal());
    // Text tokens (joint-attention layouts): weak random q/k.
    for i in (0..n).filter(|i| !video.contains(i)) {
        for c in 0..d {
            q[i * d + c] = 0.5 * noise.normal();
            k[i * d + c] = 0.5 * noise.normal();
        }
    }
    let pos = |i: usize| {
        let vi = i - video.start;
        let hw = l.tokens_per_frame();
        (vi / hw, (vi % hw) / l.width, vi % l.width)
    };
    match kind {
        PlantedKind::Local | PlantedKind::SamePlace => {
            // Logit = A/2 * (k_h(dh) + k_w(dw)) [+ B * same_frame], with Gaussian
            // bump features (k(0) = 1) in h and w and one-hot frames.
            let (a, b, r) = match kind {
                PlantedKind::Local => (30.0f32, 15.0f32, 1.0f32),
                _ => (40.0, 0.0, 0.35),
            };
            let frame_dims = if b > 0.0 { l.frames } else { 0 };
            let budget = d - frame_dims;
            let mh = l.height.min(budget / 2);
            let mw = l.width.min(budget - mh);
            for i in video.clone() {
                let (t, hh, ww) = pos(i);
                let mut f = vec![0f32; d];
                bumps(&mut f[..mh], hh, l.height, r, (a / 2.0).sqrt());
                bumps(&mut f[mh..mh + mw], ww, l.width, r, (a / 2.0).sqrt());
                if b > 0.0 {
                    f[mh + mw + t] = b.sqrt();
                }
                for c in 0..d {
                    q[i * d + c] = f[c] + 0.05 * noise.normal();
                    k[i * d + c] = f[c] + 0.05 * noise.normal();
                }
            }
        }
        PlantedKind::GlobalTokens => {
            let a = 20.0f32;
            let globals = m.global_tokens(layer);
            let mean: Vec<f32> = (0..d).map(|_| structure.normal()).collect();
            for i in video.clone() {
                let vi = i - video.start;
                let is_global = globals.iter().any(|g| g.contains(&vi));
                q[i * d] = a.sqrt();
                for c in 1..d {
                    q[i * d + c] = 0.3 * noise.normal();
                    k[i * d + c] = 0.3 * noise.normal();
                }
                k[i * d] = if is_global { a.sqrt() } else { 0.0 };
                if is_global {
                    for c in 0..d {
                        v[i * d + c] = mean[c] + 0.3 * noise.normal();
                    }
                }
            }
        }
        PlantedKind::Mixing => {
            // Clusters of 8 tokens scattered by a fixed random permutation; the
            // cluster code is a random unit vector scaled to logit A.
            let a = 30.0f32;
            let vn = video.len();
            let mut perm: Vec<usize> = (0..vn).collect();
            for i in (1..vn).rev() {
                perm.swap(i, structure.below(i + 1));
            }
            let clusters = vn.div_ceil(8);
            let codes: Vec<Vec<f32>> = (0..clusters)
                .map(|_| {
                    let c: Vec<f32> = (0..d).map(|_| structure.normal()).collect();
                    let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt();
                    c.iter().map(|x| x / norm * a.sqrt()).collect()
                })
                .collect();
            for i in video.clone() {
                let code = &codes[perm[i - video.start] / 8];
                for c in 0..d {
                    q[i * d + c] = code[c] + 0.05 * noise.normal();
                    k[i * d + c] = code[c] + 0.05 * noise.normal();
                }
            }
        }
        PlantedKind::Negligible => {
            for i in video.clone() {
                for c in 0..d {
                    q[i * d + c] = noise.normal();
                    k[i * d + c] = noise.normal();
                }
            }
            for x in v.iter_mut() {
                *x *= 1e-3;
            }
        }
    }
    // Scale-free features: the caller multiplies q and k by d^(1/4); undo the effect of
    // that on the random heads, whose logits are meant to be O(1) before scaling.
    if kind == PlantedKind::Negligible {
        let inv = 1.0 / (d as f32).powf(0.25);
        q.iter_mut().chain(k.iter_mut()).for_each(|x| *x *= inv);
    }
}

/// Writes unit-norm Gaussian bump features of position `x` in `0..len` into `out`
/// (`out.len()` centres spread evenly), scaled by `scale`: the dot product of two such
/// vectors is about `scale^2 * exp(-dx^2 / (4 r^2))`.
fn bumps(out: &mut [f32], x: usize, len: usize, r: f32, scale: f32) {
    let m = out.len();
    if m == 0 {
        return;
    }
    let spacing = if m > 1 {
        (len - 1) as f32 / (m - 1) as f32
    } else {
        1.0
    };
    let r = r.max(0.5 * spacing);
    for (c, o) in out.iter_mut().enumerate() {
        let mu = c as f32 * spacing;
        let dx = x as f32 - mu;
        *o = (-dx * dx / (2.0 * r * r)).exp();
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    out.iter_mut().for_each(|v| *v = *v / norm * scale);
}

fn hash(parts: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        h ^= p
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(h << 6)
            .wrapping_add(h >> 2);
        h = splitmix(h);
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic generator (SplitMix64 + Box-Muller): planted data must be
/// identical on every machine and independent of `rand` version changes.
struct Rng {
    state: u64,
    spare: Option<f32>,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Rng {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.state)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }

    fn normal(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some((r * th.sin()) as f32);
        (r * th.cos()) as f32
    }
}
