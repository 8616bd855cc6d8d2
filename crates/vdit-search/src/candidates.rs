//! Candidate patterns per head, and the attention-mass estimate that picks stripe columns.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vdit_patterns::{Pattern, TokenSpan, VideoLayout};

use crate::{LayerQkv, SearchError};

/// Which candidate patterns the search tries for every head (besides dense, the fallback).
///
/// Band parameters are layout-relative, as in [`Pattern`]: diagonal bands and
/// multi-diagonal spatial bands are fractions of one frame's tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateConfig {
    /// Try skipping the head (output zero).
    pub skip: bool,
    /// Diagonal half-widths, as fractions of a frame.
    pub diagonal_bands: Vec<f64>,
    /// Multi-diagonal spatial half-widths, as fractions of a frame.
    pub multi_spatial_bands: Vec<f64>,
    /// Multi-diagonal frame reaches; `None` is every frame of the layout.
    pub multi_frame_reaches: Vec<Option<u32>>,
    /// Vertical-stripe candidates: the fewest key blocks (by measured attention mass)
    /// whose mass, with the always-computed text columns, reaches each of these fractions.
    pub stripe_coverages: Vec<f64>,
    /// Also try the widest stripe set plus this diagonal band (fraction of a frame).
    pub stripe_band: Option<f64>,
    /// A stripe set may use at most this fraction of the key blocks (at least 2 blocks);
    /// heads whose mass is not concentrated get no stripe candidate.
    pub stripe_max_blocks: f64,
    /// Query rows sampled (evenly over the video rows) to estimate attention mass per key
    /// block, so no L x L matrix is formed.
    pub mass_rows: usize,
}

impl Default for CandidateConfig {
    fn default() -> Self {
        CandidateConfig {
            skip: true,
            diagonal_bands: vec![0.0625, 0.125, 0.25, 0.5, 1.0],
            multi_spatial_bands: vec![0.01, 0.05, 0.15],
            multi_frame_reaches: vec![Some(2), None],
            stripe_coverages: vec![0.5, 0.8, 0.95],
            stripe_band: Some(0.0625),
            stripe_max_blocks: 0.3,
            mass_rows: 64,
        }
    }
}

impl CandidateConfig {
    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), SearchError> {
        let frac = |name: &'static str, v: f64, max: f64| {
            if v.is_finite() && v >= 0.0 && v <= max {
                Ok(())
            } else {
                Err(SearchError::option(
                    name,
                    format!("{v} is not in [0, {max}]"),
                ))
            }
        };
        for &b in &self.diagonal_bands {
            frac("diagonal-bands", b, 1e6)?;
        }
        for &b in &self.multi_spatial_bands {
            frac("multi-spatial-bands", b, 1.0)?;
        }
        for &c in &self.stripe_coverages {
            if !(c > 0.0 && c <= 1.0) {
                return Err(SearchError::option(
                    "stripe-coverages",
                    format!("{c} is not in (0, 1]"),
                ));
            }
        }
        if let Some(b) = self.stripe_band {
            frac("stripe-band", b, 1e6)?;
        }
        frac("stripe-max-blocks", self.stripe_max_blocks, 1.0)?;
        if !self.stripe_coverages.is_empty() && self.mass_rows == 0 {
            return Err(SearchError::option(
                "mass-rows",
                "must be >= 1 when stripes are searched",
            ));
        }
        let multi = !self.multi_spatial_bands.is_empty() && !self.multi_frame_reaches.is_empty();
        if !self.skip
            && self.diagonal_bands.is_empty()
            && !multi
            && self.stripe_coverages.is_empty()
        {
            return Err(SearchError::option(
                "candidates",
                "no candidate pattern is enabled",
            ));
        }
        Ok(())
    }

    /// The candidates every head gets (skip, diagonal and multi-diagonal), deduplicated.
    pub fn uniform(&self, layout: &VideoLayout) -> Vec<Pattern> {
        let mut out = Vec::new();
        if self.skip {
            out.push(Pattern::Skip);
        }
        for &band in &self.diagonal_bands {
            out.push(Pattern::Diagonal { band });
        }
        let all = layout.frames.saturating_sub(1) as u32;
        for &spatial_band in &self.multi_spatial_bands {
            for reach in &self.multi_frame_reaches {
                let frame_reach = reach.unwrap_or(all).min(all);
                out.push(Pattern::MultiDiagonal {
                    spatial_band,
                    frame_reach,
                });
            }
        }
        let mut dedup: Vec<Pattern> = Vec::with_capacity(out.len());
        for p in out {
            if !dedup.contains(&p) {
                dedup.push(p);
            }
        }
        dedup
    }

    /// Stripe candidates for one head from its attention mass per key block
    /// (natural order, blocks of `block_size`, summing to about 1).
    pub fn stripes(&self, mass: &[f64], layout: &VideoLayout, block_size: usize) -> Vec<Pattern> {
        let nb = mass.len();
        let text = layout.text_range();
        let video = layout.video_range();
        let block = |b: usize| b * block_size..((b + 1) * block_size).min(layout.total_tokens());
        // Mass on text keys is always computed; blocks without video keys are not stripes.
        let text_mass: f64 = (0..nb)
            .filter(|&b| {
                let r = block(b);
                r.start >= text.start && r.end <= text.end && !text.is_empty()
            })
            .map(|b| mass[b])
            .sum();
        let mut order: Vec<usize> = (0..nb)
            .filter(|&b| {
                let r = block(b);
                r.start < video.end && video.start < r.end
            })
            .collect();
        order.sort_by(|a, b| mass[*b].total_cmp(&mass[*a]).then(a.cmp(b)));
        let cap = ((self.stripe_max_blocks * nb as f64).floor() as usize).max(2);
        let mut out: Vec<Pattern> = Vec::new();
        let mut widest: Option<Vec<TokenSpan>> = None;
        for &cov in &self.stripe_coverages {
            let mut acc = text_mass;
            let mut chosen = Vec::new();
            for &b in &order {
                if acc >= cov || chosen.len() >= cap {
                    break;
                }
                acc += mass[b];
                chosen.push(b);
            }
            if acc < cov || chosen.is_empty() {
                continue;
            }
            chosen.sort_unstable();
            let spans = spans_of(&chosen, layout, block_size);
            let p = Pattern::VerticalStripe {
                columns: spans.clone(),
                band: None,
            };
            if !out.contains(&p) {
                out.push(p);
            }
            widest = Some(spans);
        }
        if let (Some(columns), Some(band)) = (widest, self.stripe_band) {
            out.push(Pattern::VerticalStripe {
                columns,
                band: Some(band),
            });
        }
        out
    }
}

/// Merged video-token spans (layout-relative) of the key blocks `blocks` (ascending).
fn spans_of(blocks: &[usize], layout: &VideoLayout, block_size: usize) -> Vec<TokenSpan> {
    let video = layout.video_range();
    let vt = layout.video_tokens();
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for &b in blocks {
        let start = (b * block_size).max(video.start) - video.start;
        let end = ((b + 1) * block_size).min(video.end) - video.start;
        match ranges.last_mut() {
            Some(r) if r.end == start => r.end = end,
            _ => ranges.push(start..end),
        }
    }
    ranges
        .into_iter()
        .map(|r| TokenSpan::from_tokens(r, vt))
        .collect()
}

/// Mean attention mass per key block (natural order) of each head, estimated from
/// `rows` query rows spread evenly over the video rows: for each sampled row the exact
/// softmax over all keys is formed (one row of L scores at a time), so the cost is
/// `rows x L x head_dim` per head and no L x L matrix exists. Returns `[heads][blocks]`.
pub fn key_block_mass(
    qkv: &LayerQkv,
    layout: &VideoLayout,
    block_size: usize,
    rows: usize,
) -> Vec<Vec<f64>> {
    let (n, d) = (qkv.tokens, qkv.head_dim);
    let nb = n.div_ceil(block_size);
    let video = layout.video_range();
    let vn = video.len();
    let rows = rows.min(vn).max(1);
    let sampled: Vec<usize> = (0..rows)
        .map(|i| video.start + (2 * i + 1) * vn / (2 * rows))
        .collect();
    let scale = 1.0 / (d as f32).sqrt();
    (0..qkv.heads)
        .into_par_iter()
        .map(|h| {
            let base = h * n * d;
            let q = &qkv.q[base..base + n * d];
            let k = &qkv.k[base..base + n * d];
            let mut mass = vec![0f64; nb];
            let mut scores = vec![0f32; n];
            for &r in &sampled {
                let qr = &q[r * d..(r + 1) * d];
                let mut max = f32::NEG_INFINITY;
                for (j, kr) in k.chunks_exact(d).enumerate() {
                    let s = qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale;
                    scores[j] = s;
                    max = max.max(s);
                }
                let mut sum = 0f64;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s as f64;
                }
                for (j, s) in scores.iter().enumerate() {
                    mass[j / block_size] += *s as f64 / sum;
                }
            }
            mass.iter_mut().for_each(|m| *m /= sampled.len() as f64);
            mass
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdit_patterns::TextPosition;

    #[test]
    fn stripes_cover_the_heaviest_blocks_and_merge_neighbours() {
        let layout = VideoLayout::new(4, 16, 20).unwrap(); // 1280 tokens, 20 blocks of 64
        let mut mass = vec![0.02 / 17.0; 20];
        mass[2] = 0.5;
        mass[3] = 0.32;
        mass[9] = 0.16;
        let cfg = CandidateConfig::default();
        let s = cfg.stripes(&mass, &layout, 64);
        // 0.5 -> block 2; 0.8 -> blocks 2,3 (one span); 0.95 -> 2,3,9; plus banded copy.
        assert_eq!(s.len(), 4, "{s:?}");
        let Pattern::VerticalStripe {
            columns,
            band: None,
        } = &s[0]
        else {
            panic!()
        };
        assert_eq!(columns[0].resolve(1280), 128..192);
        let Pattern::VerticalStripe {
            columns,
            band: None,
        } = &s[1]
        else {
            panic!()
        };
        assert_eq!(columns.len(), 1);
        assert_eq!(columns[0].resolve(1280), 128..256);
        let Pattern::VerticalStripe {
            columns,
            band: Some(b),
        } = &s[3]
        else {
            panic!()
        };
        assert_eq!(*b, 0.0625);
        assert_eq!(columns.len(), 2);
        assert_eq!(columns[1].resolve(1280), 576..640);
        // A cap of 2 blocks (30% of 8) rules out the 95% set when it needs more.
        let small = VideoLayout::new(4, 8, 16).unwrap();
        let mut mass = vec![0.01; 8];
        mass[2] = 0.5;
        mass[3] = 0.3;
        mass[6] = 0.14;
        assert_eq!(cfg.stripes(&mass, &small, 64).len(), 3);
    }

    #[test]
    fn spread_mass_gives_no_stripe_and_text_mass_counts_as_covered() {
        let layout = VideoLayout::new(4, 8, 16).unwrap();
        let cfg = CandidateConfig::default();
        assert!(cfg.stripes(&[0.125; 8], &layout, 64).is_empty());
        // 64 text tokens first: block 0 is text; 60% of the mass is on text.
        let layout = layout.with_text(64, TextPosition::Prefix).unwrap();
        let mut mass = vec![0.0; 9];
        mass[0] = 0.6;
        mass[5] = 0.4;
        let s = cfg.stripes(&mass, &layout, 64);
        let Pattern::VerticalStripe { columns, .. } = &s[0] else {
            panic!()
        };
        assert_eq!(
            columns[0].resolve(512),
            256..320,
            "block 5 = video tokens 256..320"
        );
    }

    #[test]
    fn uniform_candidates_clamp_frame_reach_and_dedup() {
        let layout = VideoLayout::new(2, 4, 4).unwrap();
        let c = CandidateConfig::default().uniform(&layout);
        let multis = c
            .iter()
            .filter(|p| matches!(p, Pattern::MultiDiagonal { .. }))
            .count();
        assert_eq!(multis, 3, "reach 2 and `all` both clamp to 1 frame: {c:?}");
    }
}
