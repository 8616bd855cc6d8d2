//! The fused CubeCL operations on wgpu (Mesa lavapipe in CI) against the provided Burn
//! compositions on burn-flex.
#![cfg(feature = "wgpu")]

use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vdit_ops::{
    FusedBackend, LayerNormParams, ModMath, Modulate, QkNorm, Rope, fused_launch_count,
};

type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn tensor<B: Backend, const D: usize>(
    v: &[f32],
    shape: [usize; D],
    dtype: DType,
    dev: &B::Device,
) -> Tensor<B, D> {
    let t = Tensor::<B, D>::from_data(TensorData::new(v.to_vec(), shape), dev);
    if dtype == DType::F32 {
        t
    } else {
        t.cast(dtype)
    }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Max error relative to `max(1, |want|)`; f32: ~1e-5 (reduction order only); half
/// precision: a unit in the last place where a value sits next to a rounding boundary.
fn assert_close(what: &str, got: &[f32], want: &[f32], dtype: DType) {
    let tol = match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1.6e-2,
    };
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: [{i}] = {g}, want {w}");
        worst = worst.max((g - w).abs() / w.abs().max(1.0));
    }
    assert!(worst <= tol, "{what}: max rel error {worst} > {tol}");
}

/// Model dtypes to test: f32, plus f16 where the wgpu device stores it (lavapipe does).
fn dtypes() -> Vec<DType> {
    let mut v = vec![DType::F32];
    if Gpu::supports_dtype(&WgpuDevice::Cpu, DType::F16) {
        v.push(DType::F16);
    } else {
        eprintln!("skipping f16: not supported by the wgpu device");
    }
    v
}

/// Runs `f` on both backends and checks the GPU ran exactly `launches` fused kernels.
fn both<const D: usize>(
    what: &str,
    dtype: DType,
    launches: u64,
    f_gpu: impl FnOnce(&WgpuDevice) -> Tensor<Gpu, D>,
    f_cpu: impl FnOnce(&FlexDevice) -> Tensor<Flex, D>,
) {
    let before = fused_launch_count();
    let g = f_gpu(&WgpuDevice::Cpu);
    assert_eq!(
        fused_launch_count() - before,
        launches,
        "{what}: fused launches"
    );
    let c = f_cpu(&Default::default());
    assert_eq!(g.dims(), c.dims(), "{what}: shape");
    assert_eq!(g.dtype(), c.dtype(), "{what}: dtype");
    assert_close(what, &host(g), &host(c), dtype);
}

/// The modulation the way Wan builds it: a `[B, 6, D]` f32 tensor narrowed to `[B, 1, D]`
/// (a strided view with an offset).
fn modulation_parts<B: Backend>(
    batch: usize,
    dim: usize,
    dtype: DType,
    dev: &B::Device,
) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
    let m = tensor::<B, 3>(
        &values(batch * 6 * dim, 9, -0.5, 0.5),
        [batch, 6, dim],
        dtype,
        dev,
    );
    let part = |i: usize| m.clone().narrow(1, i, 1).reshape([batch, 1, dim]);
    (part(3), part(4), part(5))
}

#[allow(clippy::too_many_arguments)]
fn layer_norm_case<B: FusedBackend>(
    dev: &B::Device,
    batch: usize,
    tokens: usize,
    dim: usize,
    dtype: DType,
    affine: bool,
    modulation: Option<(ModMath, DType)>,
) -> Tensor<B, 3> {
    let x = tensor::<B, 3>(
        &values(batch * tokens * dim, 1, -3.0, 3.0),
        [batch, tokens, dim],
        dtype,
        dev,
    );
    let w = affine.then(|| tensor::<B, 1>(&values(dim, 2, 0.5, 1.5), [dim], DType::F32, dev));
    let b = affine.then(|| tensor::<B, 1>(&values(dim, 3, -1.0, 1.0), [dim], DType::F32, dev));
    let parts = modulation.map(|(_, mdt)| modulation_parts::<B>(batch, dim, mdt, dev));
    let norm = LayerNormParams {
        weight: w.as_ref(),
        bias: b.as_ref(),
        eps: 1e-6,
    };
    let m = parts
        .as_ref()
        .zip(modulation)
        .map(|((shift, scale, _), (math, _))| Modulate { shift, scale, math });
    B::layer_norm_modulated(x, norm, m, dtype)
}

#[test]
fn layer_norm_matches_the_composition() {
    for dtype in dtypes() {
        for &(batch, tokens, dim) in &[(1, 7, 64), (2, 33, 130), (1, 5, 1536)] {
            for (affine, modulation) in [
                (false, Some((ModMath::F32, DType::F32))), // Wan norm1 / norm3
                (true, None),                              // Wan norm2
                (false, Some((ModMath::OutDtype, dtype))), // HunyuanVideo adaLN
                (true, Some((ModMath::OutDtype, dtype))),  // CogVideoX adaLN
            ] {
                let what =
                    format!("{dtype:?} {batch}x{tokens}x{dim} affine {affine} {modulation:?}");
                both(
                    &what,
                    dtype,
                    1,
                    |d| layer_norm_case::<Gpu>(d, batch, tokens, dim, dtype, affine, modulation),
                    |d| layer_norm_case::<Flex>(d, batch, tokens, dim, dtype, affine, modulation),
                );
            }
        }
    }
}

fn gated_case<B: FusedBackend>(
    dev: &B::Device,
    dims: [usize; 3],
    dtype: DType,
    math: ModMath,
) -> Tensor<B, 3> {
    let [b, n, d] = dims;
    let x = tensor::<B, 3>(&values(b * n * d, 4, -3.0, 3.0), dims, dtype, dev);
    let y = tensor::<B, 3>(&values(b * n * d, 5, -3.0, 3.0), dims, dtype, dev);
    let gdt = if math == ModMath::F32 {
        DType::F32
    } else {
        dtype
    };
    let (_, _, gate) = modulation_parts::<B>(b, d, gdt, dev);
    B::gated_residual(x, y, &gate, math)
}

#[test]
fn gated_residual_matches_the_composition() {
    for dtype in dtypes() {
        for dims in [[1, 1, 3], [2, 17, 130], [1, 40, 1536]] {
            for math in [ModMath::F32, ModMath::OutDtype] {
                let what = format!("{dtype:?} {dims:?} {math:?}");
                both(
                    &what,
                    dtype,
                    1,
                    |d| gated_case::<Gpu>(d, dims, dtype, math),
                    |d| gated_case::<Flex>(d, dims, dtype, math),
                );
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Model {
    Wan,
    Hunyuan,
    HunyuanText,
    CogVideoX,
}

fn qk_case<B: FusedBackend>(
    dev: &B::Device,
    model: Model,
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    dtype: DType,
) -> Tensor<B, 4> {
    let dim = heads * head_dim;
    let x = tensor::<B, 3>(
        &values(batch * tokens * dim, 6, -3.0, 3.0),
        [batch, tokens, dim],
        dtype,
        dev,
    );
    let text = tokens / 4;
    let (start, len) = match model {
        Model::CogVideoX => (text, tokens - text),
        _ => (0, tokens),
    };
    let half = head_dim / 2;
    let ang = values(len * half, 7, -3.2, 3.2);
    let cos = tensor::<B, 2>(
        &ang.iter().map(|a| a.cos()).collect::<Vec<_>>(),
        [len, half],
        DType::F32,
        dev,
    );
    let sin = tensor::<B, 2>(
        &ang.iter().map(|a| a.sin()).collect::<Vec<_>>(),
        [len, half],
        DType::F32,
        dev,
    );
    let rope = Some(Rope {
        start,
        cos: &cos,
        sin: &sin,
    });
    match model {
        Model::Wan => {
            let w = tensor::<B, 1>(&values(dim, 8, 0.5, 1.5), [dim], dtype, dev);
            B::qk_norm_rope(
                x,
                heads,
                QkNorm::RmsHidden {
                    weight: &w,
                    eps: 1e-6,
                },
                rope,
            )
        }
        Model::Hunyuan | Model::HunyuanText => {
            let w = tensor::<B, 1>(&values(head_dim, 8, 0.5, 1.5), [head_dim], dtype, dev);
            let rope = if matches!(model, Model::Hunyuan) {
                rope
            } else {
                None
            };
            B::qk_norm_rope(
                x,
                heads,
                QkNorm::RmsHead {
                    weight: &w,
                    eps: 1e-6,
                },
                rope,
            )
        }
        Model::CogVideoX => {
            let w = tensor::<B, 1>(&values(head_dim, 8, 0.5, 1.5), [head_dim], DType::F32, dev);
            let b = tensor::<B, 1>(&values(head_dim, 9, -0.5, 0.5), [head_dim], DType::F32, dev);
            B::qk_norm_rope(
                x,
                heads,
                QkNorm::LayerHead {
                    weight: &w,
                    bias: Some(&b),
                    eps: 1e-6,
                },
                rope,
            )
        }
    }
}

#[test]
fn qk_norm_rope_matches_the_composition() {
    for dtype in dtypes() {
        for &(batch, tokens, heads, head_dim) in &[(1, 8, 2, 16), (2, 21, 3, 6), (1, 12, 12, 128)] {
            for model in [
                Model::Wan,
                Model::Hunyuan,
                Model::HunyuanText,
                Model::CogVideoX,
            ] {
                let what = format!("{dtype:?} {model:?} {batch}x{tokens} {heads}x{head_dim}");
                both(
                    &what,
                    dtype,
                    1,
                    |d| qk_case::<Gpu>(d, model, batch, tokens, heads, head_dim, dtype),
                    |d| qk_case::<Flex>(d, model, batch, tokens, heads, head_dim, dtype),
                );
            }
        }
    }
}

/// A call the kernels refuse runs the composition on the GPU backend instead.
#[test]
fn refused_calls_fall_back_to_the_composition() {
    // A bias without a weight: the kernel requires an affine weight for a bias.
    fn case<B: FusedBackend>(dev: &B::Device) -> Tensor<B, 3> {
        let x = tensor::<B, 3>(&values(2 * 5 * 8, 1, -3.0, 3.0), [2, 5, 8], DType::F32, dev);
        let b = tensor::<B, 1>(&values(8, 3, -1.0, 1.0), [8], DType::F32, dev);
        B::layer_norm_modulated(
            x,
            LayerNormParams {
                weight: None,
                bias: Some(&b),
                eps: 1e-5,
            },
            None,
            DType::F32,
        )
    }
    both(
        "bias without weight",
        DType::F32,
        0,
        case::<Gpu>,
        case::<Flex>,
    );
}
