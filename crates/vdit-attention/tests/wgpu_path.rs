//! The GPU path on wgpu (Mesa lavapipe in CI) against the CPU path and the f64 reference.
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::Flex;
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::tensor::{Bool, Tensor, TensorData};
use common::{max_rel_err, random, reference};
use vdit_attention::{AttentionOptions, PreparedLayer, attention};
use vdit_patterns::{Pattern, TextPosition, TokenSpan, VideoLayout};

type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

fn tensor<B: burn::tensor::backend::Backend>(
    data: &[f32],
    shape: [usize; 4],
    dev: &B::Device,
) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), dev)
}

fn run_case(
    layout: VideoLayout,
    patterns: &[Pattern],
    batch: usize,
    head_dim: usize,
    pad: bool,
    seed: u64,
) {
    let gpu = WgpuDevice::Cpu;
    let cpu = Default::default();
    let (h, n) = (patterns.len(), layout.total_tokens());
    let shape = [batch, h, n, head_dim];
    let len = shape.iter().product();
    let (q, k, v) = (
        random(len, seed, 2.0),
        random(len, seed + 1, 2.0),
        random(len, seed + 2, 1.0),
    );
    let padding: Option<Vec<bool>> =
        pad.then(|| (0..batch * n).map(|i| i % n < n - 3 || i < n).collect());
    let layer = PreparedLayer::new(patterns, &layout, 64).unwrap();

    let opts_gpu = AttentionOptions::<Gpu> {
        key_padding: padding
            .clone()
            .map(|p| Tensor::<Gpu, 2, Bool>::from_data(TensorData::new(p, [batch, n]), &gpu)),
        want_lse: true,
        ..Default::default()
    };
    let g = attention(
        tensor::<Gpu>(&q, shape, &gpu),
        tensor::<Gpu>(&k, shape, &gpu),
        tensor::<Gpu>(&v, shape, &gpu),
        Some(&layer),
        &layout,
        &opts_gpu,
    )
    .unwrap();
    let opts_cpu = AttentionOptions::<Flex> {
        key_padding: padding
            .clone()
            .map(|p| Tensor::<Flex, 2, Bool>::from_data(TensorData::new(p, [batch, n]), &cpu)),
        ..Default::default()
    };
    let c = attention(
        tensor::<Flex>(&q, shape, &cpu),
        tensor::<Flex>(&k, shape, &cpu),
        tensor::<Flex>(&v, shape, &cpu),
        Some(&layer),
        &layout,
        &opts_cpu,
    )
    .unwrap();
    let g_out = g.output.into_data().into_vec::<f32>().unwrap();
    let c_out = c.output.into_data().into_vec::<f32>().unwrap();
    let scale = 1.0 / (head_dim as f64).sqrt();
    let (want, want_lse) = reference(
        &q,
        &k,
        &v,
        shape,
        layer.compiled(),
        scale,
        padding.as_deref(),
    );
    assert!(
        max_rel_err(&g_out, &want) <= 1e-5,
        "gpu vs reference {}",
        max_rel_err(&g_out, &want)
    );
    assert!(
        max_rel_err(&c_out, &want) <= 1e-5,
        "cpu vs reference {}",
        max_rel_err(&c_out, &want)
    );
    let g_lse = g.lse.unwrap().into_data().into_vec::<f32>().unwrap();
    for (a, b) in g_lse.iter().zip(&want_lse) {
        if b.is_finite() {
            assert!(
                (*a as f64 - b).abs() <= 1e-5 * b.abs().max(1.0),
                "lse {a} vs {b}"
            );
        } else {
            assert_eq!(*a, f32::NEG_INFINITY);
        }
    }
}

#[test]
fn mixed_patterns_with_text_prefix() {
    let layout = VideoLayout::new(3, 5, 9)
        .unwrap()
        .with_text(11, TextPosition::Prefix)
        .unwrap();
    let patterns = [
        Pattern::Dense,
        Pattern::Diagonal { band: 0.4 },
        Pattern::Skip,
        Pattern::MultiDiagonal {
            spatial_band: 0.1,
            frame_reach: 1,
        },
        Pattern::VerticalStripe {
            columns: vec![TokenSpan {
                start: 0.0,
                end: 0.2,
            }],
            band: Some(0.1),
        },
    ];
    run_case(layout, &patterns, 2, 32, false, 10);
}

#[test]
fn text_suffix_with_key_padding_head_dim_64() {
    let layout = VideoLayout::new(4, 4, 7)
        .unwrap()
        .with_text(13, TextPosition::Suffix)
        .unwrap();
    let patterns = [
        Pattern::MultiDiagonal {
            spatial_band: 0.0,
            frame_reach: 3,
        },
        Pattern::Dense,
    ];
    run_case(layout, &patterns, 2, 64, true, 20);
}

#[test]
fn video_only_ragged_last_block() {
    let layout = VideoLayout::new(5, 3, 11).unwrap(); // 165 tokens: last 64-block has 37
    let patterns = [
        Pattern::Diagonal { band: 0.2 },
        Pattern::Skip,
        Pattern::Diagonal { band: 0.2 },
    ];
    run_case(layout, &patterns, 1, 16, false, 30);
}
