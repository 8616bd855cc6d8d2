//! The CPU block-sparse path against an independent f64 masked-dense reference.

mod common;

use common::{max_rel_err, random, reference};
use proptest::prelude::*;
use vdit_attention::cpu::{Dims, sparse_attention};
use vdit_patterns::{CompiledLayer, Pattern, TextPosition, TokenSpan, VideoLayout};

fn pattern(choice: u8, x: f64) -> Pattern {
    match choice % 5 {
        0 => Pattern::Dense,
        1 => Pattern::Skip,
        2 => Pattern::Diagonal { band: x },
        3 => Pattern::MultiDiagonal {
            spatial_band: x.min(1.0) * 0.5,
            frame_reach: (x * 3.0) as u32,
        },
        _ => Pattern::VerticalStripe {
            columns: vec![TokenSpan {
                start: x * 0.5,
                end: x * 0.5 + 0.1,
            }],
            band: (x > 0.5).then_some(0.1),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn cpu_path_matches_f64_reference(
        (t, hh, ww) in (1usize..4, 1usize..6, 1usize..8),
        text in 0usize..3,
        b in 1usize..3,
        d in prop::sample::select(vec![8usize, 16, 20]),
        choices in prop::collection::vec((0u8..5, 0.0f64..1.0), 1..4),
        bs in prop::sample::select(vec![8usize, 16]),
        pad in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut layout = VideoLayout::new(t, hh, ww).unwrap();
        if text == 1 { layout = layout.with_text(5, TextPosition::Prefix).unwrap(); }
        if text == 2 { layout = layout.with_text(4, TextPosition::Suffix).unwrap(); }
        let patterns: Vec<Pattern> = choices.iter().map(|(c, x)| pattern(*c, *x)).collect();
        let h = patterns.len();
        let n = layout.total_tokens();
        let layer = CompiledLayer::compile(&patterns, &layout, bs).unwrap();
        let len = b * h * n * d;
        let (q, k, v) = (random(len, seed, 2.0), random(len, seed ^ 1, 2.0), random(len, seed ^ 2, 1.0));
        // Padding: the last two sequence positions of batch 0 are invalid keys.
        let padding: Option<Vec<bool>> = pad.then(|| (0..b * n).map(|i| !(i < n && i + 2 >= n)).collect());
        let scale = 1.0 / (d as f64).sqrt();
        let dims = Dims { batch: b, heads: h, tokens: n, head_dim: d };
        let got = sparse_attention(&q, &k, &v, dims, &layer, scale as f32, padding.as_deref());
        let (want, want_lse) = reference(&q, &k, &v, [b, h, n, d], &layer, scale, padding.as_deref());
        prop_assert!(max_rel_err(&got.out, &want) <= 1e-5, "out err {}", max_rel_err(&got.out, &want));
        for (g, w) in got.lse.iter().zip(&want_lse) {
            if w.is_finite() {
                prop_assert!((*g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0), "lse {} vs {}", g, w);
            } else {
                prop_assert_eq!(*g, f32::NEG_INFINITY);
            }
        }
    }
}

#[test]
fn large_logits_stay_finite_and_exact() {
    let layout = VideoLayout::new(2, 3, 7).unwrap();
    let patterns = [Pattern::Dense, Pattern::Diagonal { band: 0.3 }];
    let layer = CompiledLayer::compile(&patterns, &layout, 8).unwrap();
    let (b, h, n, d) = (1, 2, layout.total_tokens(), 16);
    let len = b * h * n * d;
    // Scores reach several hundred: exp() of them overflows f32 without the running max.
    // The f32 dot products themselves carry ~1e-7 relative error, i.e. ~1e-4 absolute on
    // such scores, which is what bounds the tolerance here.
    let (q, k, v) = (
        random(len, 7, 12.0),
        random(len, 8, 12.0),
        random(len, 9, 1.0),
    );
    let got = sparse_attention(
        &q,
        &k,
        &v,
        Dims {
            batch: b,
            heads: h,
            tokens: n,
            head_dim: d,
        },
        &layer,
        1.0,
        None,
    );
    assert!(got.out.iter().all(|x| x.is_finite()));
    assert!(got.lse.iter().any(|x| *x > 200.0), "logits are not large");
    let (want, _) = reference(&q, &k, &v, [b, h, n, d], &layer, 1.0, None);
    let err = max_rel_err(&got.out, &want);
    assert!(err <= 1e-3, "{err}");
}

#[test]
fn all_skip_layer_outputs_zeros() {
    let layout = VideoLayout::new(2, 2, 5).unwrap();
    let layer = CompiledLayer::compile(&[Pattern::Skip, Pattern::Skip], &layout, 8).unwrap();
    let (b, h, n, d) = (2, 2, 20, 8);
    let x = random(b * h * n * d, 1, 1.0);
    let got = sparse_attention(
        &x,
        &x,
        &x,
        Dims {
            batch: b,
            heads: h,
            tokens: n,
            head_dim: d,
        },
        &layer,
        0.3,
        None,
    );
    assert!(got.out.iter().all(|v| *v == 0.0));
    assert!(got.lse.iter().all(|v| *v == f32::NEG_INFINITY));
}
