//! Block tables against the token-level rule, on random layouts and parameters.

use proptest::prelude::*;
use vdit_patterns::{
    BlockTable, Pattern, PatternKind, TextPosition, TokenOrder, TokenSpan, VideoLayout,
};

fn layouts() -> impl Strategy<Value = VideoLayout> {
    (1usize..5, 1usize..7, 1usize..9, 0usize..3, 1usize..20).prop_map(|(t, h, w, tp, n)| {
        let base = VideoLayout::new(t, h, w).unwrap();
        match tp {
            0 => base,
            1 => base.with_text(n, TextPosition::Prefix).unwrap(),
            _ => base.with_text(n, TextPosition::Suffix).unwrap(),
        }
    })
}

fn patterns() -> impl Strategy<Value = Pattern> {
    let span = (0.0f64..0.95, 0.01f64..0.5).prop_map(|(s, l)| TokenSpan {
        start: s,
        end: (s + l).min(1.0),
    });
    prop_oneof![
        Just(Pattern::Dense),
        Just(Pattern::Skip),
        (0.0f64..1.5).prop_map(|band| Pattern::Diagonal { band }),
        (0.0f64..1.0, 0u32..4).prop_map(|(spatial_band, frame_reach)| Pattern::MultiDiagonal {
            spatial_band,
            frame_reach
        }),
        (
            prop::collection::vec(span, 1..3),
            prop::option::of(0.0f64..0.5)
        )
            .prop_map(|(columns, band)| Pattern::VerticalStripe { columns, band }),
    ]
}

/// Brute force: the set of (query block, key block) pairs, in the table's order, that
/// contain at least one allowed token pair.
fn brute_force(pattern: &Pattern, layout: &VideoLayout, bs: usize) -> Vec<Vec<u32>> {
    let n = layout.total_tokens();
    let nb = n.div_ceil(bs);
    let perm = pattern.order().permutation(layout);
    let mut rows = vec![Vec::new(); nb];
    for (qb, row) in rows.iter_mut().enumerate() {
        for kb in 0..nb {
            let any = (qb * bs..((qb + 1) * bs).min(n)).any(|p| {
                (kb * bs..((kb + 1) * bs).min(n))
                    .any(|pk| pattern.allows(layout, perm[p] as usize, perm[pk] as usize))
            });
            if any {
                row.push(kb as u32);
            }
        }
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn table_covers_exactly_the_blocks_with_an_allowed_pair(
        layout in layouts(),
        pattern in patterns(),
        bs in prop::sample::select(vec![8usize, 16, 32]),
    ) {
        let table = BlockTable::compile(&pattern, &layout, bs).unwrap();
        let expected = brute_force(&pattern, &layout, bs);
        prop_assert_eq!(table.num_blocks(), expected.len());
        for (q, row) in expected.iter().enumerate() {
            prop_assert_eq!(table.row(q), &row[..], "query block {}", q);
        }
        let d = table.density();
        prop_assert!((0.0..=1.0).contains(&d));
        match pattern.kind() {
            PatternKind::Dense => prop_assert_eq!(d, 1.0),
            PatternKind::Skip => prop_assert_eq!(d, 0.0),
            _ => {}
        }
        // FLOPs count exactly the token pairs inside computed blocks.
        let mask = table.token_mask();
        let pairs = mask.iter().filter(|m| **m).count() as u64;
        prop_assert_eq!(table.computed_pairs(), pairs);
        prop_assert_eq!(table.flops(64), 4 * 64 * pairs);
    }

    #[test]
    fn token_mask_contains_every_allowed_pair(layout in layouts(), pattern in patterns()) {
        let table = BlockTable::compile(&pattern, &layout, 8).unwrap();
        let mask = table.token_mask();
        let n = layout.total_tokens();
        for q in 0..n {
            for k in 0..n {
                if pattern.allows(&layout, q, k) {
                    prop_assert!(mask[q * n + k], "allowed pair ({}, {}) not computed", q, k);
                }
            }
        }
    }

    #[test]
    fn spatial_major_permutation_is_a_bijection(layout in layouts()) {
        let perm = TokenOrder::SpatialMajor.permutation(&layout);
        let inv = TokenOrder::SpatialMajor.inverse(&layout);
        let n = layout.total_tokens();
        let mut seen = vec![false; n];
        for (p, &i) in perm.iter().enumerate() {
            prop_assert!(!seen[i as usize]);
            seen[i as usize] = true;
            prop_assert_eq!(inv[i as usize] as usize, p);
        }
        // Restoring order: applying perm to the permuted sequence gives the original.
        let permuted: Vec<u32> = perm.clone();
        let restored: Vec<u32> = (0..n).map(|i| permuted[inv[i] as usize]).collect();
        prop_assert_eq!(restored, (0..n as u32).collect::<Vec<_>>());
        // Text keeps its place.
        for i in layout.text_range() {
            prop_assert_eq!(perm[i] as usize, i);
        }
    }
}

#[test]
fn real_layouts_compile_for_every_pattern() {
    let layouts = [
        VideoLayout::new(11, 48, 85)
            .unwrap()
            .with_text(226, TextPosition::Prefix)
            .unwrap(),
        VideoLayout::new(33, 45, 80)
            .unwrap()
            .with_text(256, TextPosition::Suffix)
            .unwrap(),
        VideoLayout::new(21, 30, 52).unwrap(),
        VideoLayout::new(21, 45, 80).unwrap(),
    ];
    let expected_tokens = [45_106, 119_056, 32_760, 75_600];
    for (layout, tokens) in layouts.iter().zip(expected_tokens) {
        assert_eq!(layout.total_tokens(), tokens);
        for p in [
            Pattern::Diagonal { band: 0.5 },
            Pattern::MultiDiagonal {
                spatial_band: 0.05,
                frame_reach: 100,
            },
            Pattern::VerticalStripe {
                columns: vec![TokenSpan {
                    start: 0.0,
                    end: 0.05,
                }],
                band: None,
            },
        ] {
            let t = BlockTable::compile(&p, layout, 128).unwrap();
            assert!(
                t.density() > 0.0 && t.density() < 0.5,
                "{p:?}: {}",
                t.density()
            );
        }
    }
}
