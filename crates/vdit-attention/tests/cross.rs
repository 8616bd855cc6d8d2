//! Dense cross-attention (`kv_tokens != tokens`) on the CPU backend (Burn composition) and,
//! with the `wgpu` feature, on the CubeCL kernel (lavapipe), against an f64 reference.

mod common;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use common::random;
use vdit_attention::{
    AttentionContext, AttentionError, AttentionOptions, PreparedCross, SparseAttentionBackend,
    cross_attention,
};
use vdit_patterns::VideoLayout;

/// f64 dense cross-attention with key padding: (out, lse); rows without a valid key give
/// zeros and `-inf`.
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, h, n, m, d]: [usize; 5],
    scale: f64,
    pad: Option<&[bool]>,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; b * h * n * d];
    let mut lse = vec![f64::NEG_INFINITY; b * h * n];
    for bi in 0..b {
        let keys: Vec<usize> = (0..m)
            .filter(|&j| pad.is_none_or(|p| p[bi * m + j]))
            .collect();
        for hi in 0..h {
            let (qo, ko) = ((bi * h + hi) * n * d, (bi * h + hi) * m * d);
            for i in 0..n {
                if keys.is_empty() {
                    continue;
                }
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        (0..d)
                            .map(|c| q[qo + i * d + c] as f64 * k[ko + j * d + c] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                for c in 0..d {
                    out[qo + i * d + c] = keys
                        .iter()
                        .zip(&s)
                        .map(|(&j, x)| (x - mx).exp() / z * v[ko + j * d + c] as f64)
                        .sum();
                }
                lse[(bi * h + hi) * n + i] = mx + z.ln();
            }
        }
    }
    (out, lse)
}

fn tensor<B: Backend>(data: &[f32], shape: [usize; 4], dev: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), dev)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Runs one case on backend `B` and checks output (and lse when asked) against the
/// reference with relative tolerance `tol` (of the largest reference value).
fn check<B: SparseAttentionBackend>(
    dev: &B::Device,
    [b, h, n, m, d]: [usize; 5],
    pad: bool,
    lse: bool,
    tol: f64,
) {
    let (q, k, v) = (
        random(b * h * n * d, 1, 2.0),
        random(b * h * m * d, 2, 2.0),
        random(b * h * m * d, 3, 1.0),
    );
    // Batch 0: every fifth key padded; the last batch (when b > 1): every key padded.
    let padding: Option<Vec<bool>> = pad.then(|| {
        (0..b * m)
            .map(|i| i % 5 != 1 && (b == 1 || i < (b - 1) * m))
            .collect()
    });
    let prepared = PreparedCross::new(h, n, m).unwrap();
    let opts = AttentionOptions::<B> {
        key_padding: padding
            .clone()
            .map(|p| Tensor::<B, 2, Bool>::from_data(TensorData::new(p, [b, m]), dev)),
        want_lse: lse,
        scale: Some(0.3),
    };
    let got = cross_attention(
        tensor::<B>(&q, [b, h, n, d], dev),
        tensor::<B>(&k, [b, h, m, d], dev),
        tensor::<B>(&v, [b, h, m, d], dev),
        &prepared,
        &opts,
    )
    .unwrap();
    assert_eq!(got.output.dims(), [b, h, n, d]);
    let (want, want_lse) = reference(&q, &k, &v, [b, h, n, m, d], 0.3, padding.as_deref());
    let max_ref = want.iter().fold(1e-9f64, |a, x| a.max(x.abs()));
    for (i, (g, w)) in host(got.output).iter().zip(&want).enumerate() {
        let e = (*g as f64 - w).abs() / max_ref;
        assert!(e <= tol, "out[{i}] = {g}, want {w} (rel {e})");
    }
    match (got.lse, lse) {
        (Some(l), true) => {
            for (i, (g, w)) in host(l).iter().zip(&want_lse).enumerate() {
                if *w == f64::NEG_INFINITY {
                    assert_eq!(*g, f32::NEG_INFINITY, "lse[{i}]");
                } else {
                    assert!(
                        (*g as f64 - w).abs() <= tol * w.abs().max(1.0),
                        "lse[{i}] = {g}, want {w}"
                    );
                }
            }
        }
        (None, false) => {}
        (l, _) => panic!("lse {:?} but asked {lse}", l.is_some()),
    }
}

#[test]
fn cpu_cross_attention_matches_reference() {
    let dev = Default::default();
    check::<Flex>(&dev, [2, 3, 37, 11, 16], false, false, 1e-5);
    check::<Flex>(&dev, [2, 3, 37, 11, 16], true, true, 1e-5);
    check::<Flex>(&dev, [1, 2, 5, 70, 32], true, false, 1e-5);
}

#[test]
fn cross_attention_shape_mismatches_are_errors() {
    let dev = Default::default();
    let t = |s: [usize; 4]| Tensor::<Flex, 4>::zeros(s, &dev);
    let prepared = PreparedCross::new(2, 8, 4).unwrap();
    let opts = AttentionOptions::default();
    let shape_err = |r: Result<_, AttentionError>| matches!(r, Err(AttentionError::Shape(_)));
    // k and v of different lengths, head dims that differ, a prepared shape that differs.
    assert!(shape_err(cross_attention(
        t([1, 2, 8, 16]),
        t([1, 2, 4, 16]),
        t([1, 2, 5, 16]),
        &prepared,
        &opts
    )));
    assert!(shape_err(cross_attention(
        t([1, 2, 8, 16]),
        t([1, 2, 4, 32]),
        t([1, 2, 4, 32]),
        &prepared,
        &opts
    )));
    assert!(shape_err(cross_attention(
        t([1, 2, 8, 16]),
        t([1, 2, 6, 16]),
        t([1, 2, 6, 16]),
        &prepared,
        &opts
    )));
    let bad_pad = AttentionOptions::<Flex> {
        key_padding: Some(Tensor::<Flex, 2, Bool>::from_data(
            TensorData::new(vec![true; 8], [1, 8]),
            &dev,
        )),
        ..Default::default()
    };
    assert!(shape_err(cross_attention(
        t([1, 2, 8, 16]),
        t([1, 2, 4, 16]),
        t([1, 2, 4, 16]),
        &prepared,
        &bad_pad
    )));
    assert!(PreparedCross::new(2, 8, 0).is_err());
    // Through the context: two key lengths in a row both work (one prepared shape each).
    let ctx = AttentionContext::dense(VideoLayout::new(2, 2, 2).unwrap());
    for m in [4, 9, 4] {
        let out = ctx
            .cross_attention(t([1, 2, 8, 16]), t([1, 2, m, 16]), t([1, 2, m, 16]), None)
            .unwrap();
        assert_eq!(out.dims(), [1, 2, 8, 16]);
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_cross_attention_matches_reference() {
    use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
    type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;
    let dev = WgpuDevice::Cpu;
    check::<Gpu>(&dev, [2, 3, 150, 13, 64], false, false, 1e-5);
    check::<Gpu>(&dev, [2, 3, 70, 130, 64], true, true, 1e-5);
}
