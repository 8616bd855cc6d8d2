//! Compiling block tables at the real layouts of the spec (issue #2 asks for well under a
//! second each). Run: `cargo bench -p vdit-benches --bench block_tables`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vdit_patterns::{BlockTable, Pattern, TextPosition, TokenSpan, VideoLayout};

fn real_layouts() -> Vec<(&'static str, VideoLayout)> {
    vec![
        (
            "cogvideox1.5_45106",
            VideoLayout::new(11, 48, 85)
                .unwrap()
                .with_text(226, TextPosition::Prefix)
                .unwrap(),
        ),
        (
            "hunyuan_119056",
            VideoLayout::new(33, 45, 80)
                .unwrap()
                .with_text(256, TextPosition::Suffix)
                .unwrap(),
        ),
        ("wan480p_32760", VideoLayout::new(21, 30, 52).unwrap()),
        ("wan720p_75600", VideoLayout::new(21, 45, 80).unwrap()),
    ]
}

fn patterns() -> Vec<(&'static str, Pattern)> {
    vec![
        ("dense", Pattern::Dense),
        ("diagonal", Pattern::Diagonal { band: 1.0 }),
        (
            "multi_diagonal",
            Pattern::MultiDiagonal {
                spatial_band: 0.05,
                frame_reach: 4,
            },
        ),
        (
            "vertical_stripe",
            Pattern::VerticalStripe {
                columns: vec![
                    TokenSpan {
                        start: 0.0,
                        end: 0.04,
                    },
                    TokenSpan {
                        start: 0.5,
                        end: 0.52,
                    },
                ],
                band: Some(0.1),
            },
        ),
    ]
}

fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("block_table_compile");
    group.sample_size(10);
    for (lname, layout) in real_layouts() {
        for (pname, pattern) in patterns() {
            for bs in [64, 128] {
                group.bench_function(format!("{lname}/{pname}/b{bs}"), |b| {
                    b.iter(|| {
                        BlockTable::compile(black_box(&pattern), black_box(&layout), bs).unwrap()
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
