//! Hand-computed block tables for every pattern on small layouts.

use vdit_patterns::{
    BlockTable, Pattern, PatternError, TextPosition, TokenOrder, TokenSpan, VideoLayout,
};

fn rows(t: &BlockTable) -> Vec<Vec<u32>> {
    (0..t.num_blocks()).map(|q| t.row(q).to_vec()).collect()
}

#[test]
fn dense_and_skip() {
    // 2 frames of 3x5 = 30 tokens, blocks of 8: 4 blocks, the last one ragged (6 tokens).
    let l = VideoLayout::new(2, 3, 5).unwrap();
    let d = BlockTable::compile(&Pattern::Dense, &l, 8).unwrap();
    assert_eq!(rows(&d), vec![vec![0, 1, 2, 3]; 4]);
    assert_eq!(d.computed_pairs(), 30 * 30);
    let s = BlockTable::compile(&Pattern::Skip, &l, 8).unwrap();
    assert_eq!(s.row_ptr(), &[0, 0, 0, 0, 0]);
    assert_eq!(s.density(), 0.0);
}

#[test]
fn diagonal_band_of_half_a_frame() {
    // 2 frames of 4x4 = 16 tokens; band 0.5 frame = 8 tokens; blocks of 8 -> 4 blocks.
    // Query block q covers 8q..8q+7; keys within 8 tokens reach the neighbouring blocks.
    let l = VideoLayout::new(2, 4, 4).unwrap();
    let t = BlockTable::compile(&Pattern::Diagonal { band: 0.5 }, &l, 8).unwrap();
    assert_eq!(
        rows(&t),
        vec![vec![0, 1], vec![0, 1, 2], vec![1, 2, 3], vec![2, 3]]
    );
    // band 0 keeps only the main diagonal blocks.
    let t0 = BlockTable::compile(&Pattern::Diagonal { band: 0.0 }, &l, 8).unwrap();
    assert_eq!(rows(&t0), vec![vec![0], vec![1], vec![2], vec![3]]);
    assert_eq!(t0.computed_pairs(), 4 * 64);
    assert_eq!(t0.density(), 0.25);
}

#[test]
fn diagonal_with_text_prefix_keeps_text_rows_and_columns() {
    // 3 text tokens then 2 frames of 2x4 = 16 video tokens: 19 tokens, blocks of 8:
    // block 0 = text 0..3 + video 0..5, block 1 = video 5..13, block 2 = video 13..16.
    let l = VideoLayout::new(2, 2, 4)
        .unwrap()
        .with_text(3, TextPosition::Prefix)
        .unwrap();
    let t = BlockTable::compile(&Pattern::Diagonal { band: 0.0 }, &l, 8).unwrap();
    // Block 0 holds text rows -> all keys. Blocks 1 and 2 see block 0 (text columns)
    // and themselves.
    assert_eq!(rows(&t), vec![vec![0, 1, 2], vec![0, 1], vec![0, 2]]);
}

#[test]
fn diagonal_with_text_suffix() {
    // 16 video tokens then 4 text: 20 tokens, blocks of 8: block 2 = video 16? no:
    // video 0..16 -> blocks 0,1; text 16..20 -> block 2 (ragged).
    let l = VideoLayout::new(2, 2, 4)
        .unwrap()
        .with_text(4, TextPosition::Suffix)
        .unwrap();
    let t = BlockTable::compile(&Pattern::Diagonal { band: 0.0 }, &l, 8).unwrap();
    assert_eq!(rows(&t), vec![vec![0, 2], vec![1, 2], vec![0, 1, 2]]);
}

#[test]
fn multi_diagonal_is_a_band_in_spatial_major_order() {
    // 4 frames of 2x2 = 4 spatial positions: 16 tokens, spatial-major p = s*4 + t.
    // spatial_band 0 (same position), frame_reach 3 (all frames): query s attends
    // exactly keys s*4..s*4+3, so blocks of 4 give a block-diagonal table.
    let l = VideoLayout::new(4, 2, 2).unwrap();
    let p = Pattern::MultiDiagonal {
        spatial_band: 0.0,
        frame_reach: 3,
    };
    let t = BlockTable::compile(&p, &l, 8).unwrap();
    assert_eq!(t.order(), TokenOrder::SpatialMajor);
    // With blocks of 8 (two spatial positions each): block-diagonal.
    assert_eq!(rows(&t), vec![vec![0], vec![1]]);
    assert_eq!(t.computed_pairs(), 2 * 64);
    // The same head in frame-major order would need every block: positions 0 and 4
    // (frames 0 and 1 of s = 0) sit in different 8-blocks... 16 tokens, 2 blocks, and
    // each block holds all four spatial positions of two frames.
    let perm = t.permutation();
    assert_eq!(&perm[..8], &[0, 4, 8, 12, 1, 5, 9, 13]);
    // Token mask in natural order: (t=0,s=0) attends (t=3,s=0) = natural 12, not s=1.
    let mask = t.token_mask();
    assert!(mask[12]);
    assert!(mask[1]); // s=1 is in the same computed block (block-level semantics)
    assert!(!mask[2]); // s=2 lives in the other block
}

#[test]
fn multi_diagonal_frame_reach_limits_the_band() {
    // 4 frames x 4 positions, spatial_band 0, frame_reach 0: query (s,t) attends only
    // itself, so with blocks of 8 every block is diagonal.
    let l = VideoLayout::new(4, 2, 2).unwrap();
    let p = Pattern::MultiDiagonal {
        spatial_band: 0.0,
        frame_reach: 0,
    };
    let t = BlockTable::compile(&p, &l, 8).unwrap();
    assert_eq!(rows(&t), vec![vec![0], vec![1]]);
    // spatial_band 0.25 = 1 position: block 0 (s = 0,1) reaches s = 2 in block 1.
    let p = Pattern::MultiDiagonal {
        spatial_band: 0.25,
        frame_reach: 0,
    };
    let t = BlockTable::compile(&p, &l, 8).unwrap();
    assert_eq!(rows(&t), vec![vec![0, 1], vec![0, 1]]);
}

#[test]
fn vertical_stripe_first_frame() {
    // 4 frames of 2x4 = 8 tokens: 32 tokens, blocks of 8 = one frame per block.
    // Columns = first frame: every query block computes key block 0 (+ its own with a
    // band of 0).
    let l = VideoLayout::new(4, 2, 4).unwrap();
    let first = TokenSpan::from_tokens(0..8, 32);
    let t = BlockTable::compile(
        &Pattern::VerticalStripe {
            columns: vec![first],
            band: None,
        },
        &l,
        8,
    )
    .unwrap();
    assert_eq!(rows(&t), vec![vec![0]; 4]);
    let t = BlockTable::compile(
        &Pattern::VerticalStripe {
            columns: vec![first],
            band: Some(0.0),
        },
        &l,
        8,
    )
    .unwrap();
    assert_eq!(rows(&t), vec![vec![0], vec![0, 1], vec![0, 2], vec![0, 3]]);
}

#[test]
fn token_span_round_trips_token_ranges() {
    for n in [7usize, 100, 32_760, 119_056] {
        for (a, b) in [(0, 1), (3, 5), (n / 3, n / 2), (n - 1, n)] {
            assert_eq!(TokenSpan::from_tokens(a..b, n).resolve(n), a..b, "n={n}");
        }
    }
}

#[test]
fn invalid_parameters_and_block_sizes_are_errors() {
    let l = VideoLayout::new(2, 2, 2).unwrap();
    for p in [
        Pattern::Diagonal { band: -1.0 },
        Pattern::Diagonal { band: f64::NAN },
        Pattern::MultiDiagonal {
            spatial_band: 1.5,
            frame_reach: 1,
        },
        Pattern::VerticalStripe {
            columns: vec![],
            band: None,
        },
        Pattern::VerticalStripe {
            columns: vec![TokenSpan {
                start: 0.5,
                end: 0.2,
            }],
            band: None,
        },
    ] {
        assert!(
            matches!(
                BlockTable::compile(&p, &l, 64),
                Err(PatternError::Parameter { .. })
            ),
            "{p:?}"
        );
    }
    assert_eq!(
        BlockTable::compile(&Pattern::Dense, &l, 48),
        Err(PatternError::BlockSize(48))
    );
    assert!(VideoLayout::new(0, 2, 2).is_err());
    assert!(
        VideoLayout::new(1, 2, 2)
            .unwrap()
            .with_text(0, TextPosition::Prefix)
            .is_err()
    );
    assert!(
        VideoLayout::new(1, 2, 2)
            .unwrap()
            .with_text(5, TextPosition::None)
            .is_err()
    );
}
