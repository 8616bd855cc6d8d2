//! CPU block-sparse attention: dense vs each pattern at 4 heads x 8,192 tokens x 64.
//! Time should follow the number of computed blocks. Run:
//! `cargo bench -p vdit-benches --bench cpu_attention`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vdit_attention::cpu::{Dims, sparse_attention};
use vdit_patterns::{CompiledLayer, Pattern, TokenSpan, VideoLayout};

fn bench(c: &mut Criterion) {
    // 8 frames of 32 x 32 = 8,192 tokens.
    let layout = VideoLayout::new(8, 32, 32).unwrap();
    let (heads, n, d) = (4, layout.total_tokens(), 64);
    let len = heads * n * d;
    let x: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let cases = [
        ("dense", Pattern::Dense),
        ("diagonal_1frame", Pattern::Diagonal { band: 1.0 }),
        ("diagonal_quarter", Pattern::Diagonal { band: 0.25 }),
        (
            "multi_diagonal",
            Pattern::MultiDiagonal {
                spatial_band: 0.1,
                frame_reach: 7,
            },
        ),
        (
            "vertical_stripe",
            Pattern::VerticalStripe {
                columns: vec![TokenSpan {
                    start: 0.0,
                    end: 0.125,
                }],
                band: Some(0.1),
            },
        ),
        ("skip", Pattern::Skip),
    ];
    let mut group = c.benchmark_group("cpu_attention_4x8192x64");
    group.sample_size(10);
    for (name, p) in cases {
        let layer = CompiledLayer::compile(&vec![p; heads], &layout, 64).unwrap();
        let density = layer.density();
        group.bench_function(format!("{name}_density_{density:.3}"), |b| {
            b.iter(|| {
                sparse_attention(
                    black_box(&x),
                    &x,
                    &x,
                    Dims {
                        batch: 1,
                        heads,
                        tokens: n,
                        head_dim: d,
                    },
                    &layer,
                    0.125,
                    None,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
