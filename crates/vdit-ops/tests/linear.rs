//! `LinearBackend::linear` against an f64 reference on every backend of the build:
//! burn-flex and wgpu (lavapipe in CI) always; CUDA (cuBLASLt) with `--features cuda` on
//! a machine with an NVIDIA GPU.

use burn::tensor::{DType, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vdit_ops::{Epilogue, LinearBackend};

struct Case {
    m: usize,
    k: usize,
    n: usize,
    bias: bool,
    epilogue: Epilogue,
    /// Weight given as the transposed view of a `[n, k]` tensor (torch layout).
    torch_layout: bool,
}

const CASES: &[Case] = &[
    Case {
        m: 7,
        k: 13,
        n: 5,
        bias: true,
        epilogue: Epilogue::None,
        torch_layout: true,
    },
    Case {
        m: 64,
        k: 32,
        n: 48,
        bias: true,
        epilogue: Epilogue::GeluTanh,
        torch_layout: true,
    },
    Case {
        m: 33,
        k: 24,
        n: 40,
        bias: false,
        epilogue: Epilogue::None,
        torch_layout: false,
    },
    Case {
        m: 1,
        k: 16,
        n: 8,
        bias: false,
        epilogue: Epilogue::GeluTanh,
        torch_layout: false,
    },
    Case {
        m: 130,
        k: 72,
        n: 96,
        bias: true,
        epilogue: Epilogue::None,
        torch_layout: false,
    },
];

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// `rounding` maps each input value to what the device dtype stores.
fn reference(
    x: &[f32],
    w_nk: &[f32],
    b: Option<&[f32]>,
    c: &Case,
    rounding: impl Fn(f32) -> f32,
) -> Vec<f64> {
    let mut y = vec![0.0; c.m * c.n];
    for i in 0..c.m {
        for j in 0..c.n {
            let mut acc = b.map_or(0.0, |b| rounding(b[j]) as f64);
            for p in 0..c.k {
                acc += rounding(x[i * c.k + p]) as f64 * rounding(w_nk[j * c.k + p]) as f64;
            }
            y[i * c.n + j] = match c.epilogue {
                Epilogue::None => acc,
                Epilogue::GeluTanh => gelu_tanh(acc),
            };
        }
    }
    y
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den).sqrt()
}

/// Runs every case in `dtype` and returns the worst relative L2 error.
fn worst_error<B: LinearBackend>(device: &B::Device, dtype: DType) -> f64 {
    let mut rng = StdRng::seed_from_u64(7);
    let mut worst = 0.0f64;
    for c in CASES {
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (x, w_nk, b) = (draw(c.m * c.k), draw(c.n * c.k), draw(c.n));
        let xt =
            Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [c.m, c.k]), device).cast(dtype);
        let w_torch = Tensor::<B, 2>::from_data(TensorData::new(w_nk.clone(), [c.n, c.k]), device)
            .cast(dtype);
        let wt = if c.torch_layout {
            w_torch.transpose()
        } else {
            // A contiguous [k, n] copy.
            let mut w_kn = vec![0.0f32; c.k * c.n];
            for j in 0..c.n {
                for p in 0..c.k {
                    w_kn[p * c.n + j] = w_nk[j * c.k + p];
                }
            }
            Tensor::<B, 2>::from_data(TensorData::new(w_kn, [c.k, c.n]), device).cast(dtype)
        };
        let bt = c.bias.then(|| {
            Tensor::<B, 1>::from_data(TensorData::new(b.clone(), [c.n]), device).cast(dtype)
        });
        let y = <B as LinearBackend>::linear(xt, wt, bt, c.epilogue);
        assert_eq!(y.dims(), [c.m, c.n]);
        assert_eq!(y.dtype(), dtype);
        let got = y
            .cast(DType::F32)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "non-finite output");
        let round = |v: f32| match dtype {
            DType::BF16 => half::bf16::from_f32(v).to_f32(),
            DType::F16 => half::f16::from_f32(v).to_f32(),
            _ => v,
        };
        let want = reference(&x, &w_nk, c.bias.then_some(&b[..]), c, round);
        worst = worst.max(rel_l2(&got, &want));
    }
    worst
}

#[test]
fn flex_f32_matches_reference() {
    let err = worst_error::<burn::backend::Flex>(&Default::default(), DType::F32);
    assert!(err < 1e-6, "rel L2 {err}");
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_f32_matches_reference() {
    use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
    let err = worst_error::<CubeBackend<WgpuRuntime, f32, i32, u32>>(&WgpuDevice::Cpu, DType::F32);
    assert!(err < 1e-5, "rel L2 {err}");
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn_cubecl::CubeBackend;
    use cubecl::cuda::{CudaDevice, CudaRuntime};
    use vdit_ops::{LinearEngine, last_linear_engine};

    type Cuda = CubeBackend<CudaRuntime, half::bf16, i32, u8>;

    #[test]
    fn cublaslt_bf16_and_f16_match_reference() {
        let device = CudaDevice::default();
        for dtype in [DType::BF16, DType::F16] {
            let err = worst_error::<Cuda>(&device, dtype);
            assert_eq!(
                last_linear_engine(),
                Some(LinearEngine::CublasLt),
                "{dtype:?}"
            );
            // f32 accumulation of rounded operands; only the output rounding remains.
            let tol = if dtype == DType::BF16 { 8e-3 } else { 1e-3 };
            assert!(err < tol, "{dtype:?}: rel L2 {err}");
        }
    }

    #[test]
    fn f32_stays_on_burn() {
        let device = CudaDevice::default();
        let err = worst_error::<Cuda>(&device, DType::F32);
        assert_eq!(last_linear_engine(), Some(LinearEngine::Burn));
        assert!(err < 1e-4, "rel L2 {err}");
    }

    #[test]
    fn cublaslt_agrees_with_burn_matmul_at_model_size() {
        use burn::tensor::Distribution;
        let device = CudaDevice::default();
        let x = Tensor::<Cuda, 2>::random([4096, 1536], Distribution::Default, &device);
        let w = Tensor::<Cuda, 2>::random([8960, 1536], Distribution::Default, &device).transpose();
        let b = Tensor::<Cuda, 1>::random([8960], Distribution::Default, &device);
        let ours = <Cuda as LinearBackend>::linear(
            x.clone(),
            w.clone(),
            Some(b.clone()),
            Epilogue::GeluTanh,
        );
        assert_eq!(last_linear_engine(), Some(LinearEngine::CublasLt));
        let burn = vdit_ops::burn_linear(x, w, Some(b), Epilogue::GeluTanh);
        let d = (ours.cast(DType::F32) - burn.clone().cast(DType::F32))
            .powf_scalar(2.0)
            .sum();
        let n = burn.cast(DType::F32).powf_scalar(2.0).sum();
        let rel = (d.into_scalar().to_f64() / n.into_scalar().to_f64()).sqrt();
        assert!(rel < 2e-2, "rel L2 vs Burn {rel}");
    }
}
