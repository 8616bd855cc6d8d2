//! Kernel tests against the f64 reference, on lavapipe (wgpu CPU adapter) and, with the
//! `cuda` feature, on CUDA when libcuda is present (skipped otherwise).

mod suite;

use vdit_kernels::{AttnDtype, KernelPath, MaskDtype, TcEngine, TcOptions};

macro_rules! testgen_sparse_attention {
    ($name:ident, $runtime:ty, $device:expr, $available:expr, $blocks:expr, $paths:expr) => {
        mod $name {
            use super::*;
            type R = $runtime;

            fn device() -> Option<<R as cubecl::Runtime>::Device> {
                if $available {
                    Some($device)
                } else {
                    eprintln!("skipping: runtime unavailable");
                    None
                }
            }

            #[test]
            fn random_mixes_f32() {
                let Some(dev) = device() else { return };
                for (i, path) in $paths.iter().enumerate() {
                    suite::random_mixes::<R>(
                        &dev,
                        AttnDtype::F32,
                        *path,
                        &[16, 32, 64],
                        &[32, 64, 128],
                        100 + i as u64,
                        16,
                    );
                }
            }

            #[test]
            fn random_mixes_f16() {
                let Some(dev) = device() else { return };
                for (i, path) in $paths.iter().enumerate() {
                    suite::random_mixes::<R>(
                        &dev,
                        AttnDtype::F16,
                        *path,
                        $blocks,
                        &[64, 128],
                        200 + i as u64,
                        10,
                    );
                }
            }

            #[test]
            fn random_mixes_bf16() {
                let Some(dev) = device() else { return };
                for (i, path) in $paths.iter().enumerate() {
                    suite::random_mixes::<R>(
                        &dev,
                        AttnDtype::BF16,
                        *path,
                        $blocks,
                        &[64, 128],
                        300 + i as u64,
                        3,
                    );
                }
            }

            /// Every tensor-core variant (engine, planes, async loads, fast-path level,
            /// V prefetch) on random mixes; on devices without tensor cores they run the
            /// portable kernel.
            #[test]
            fn tensor_core_variants() {
                let Some(dev) = device() else { return };
                let d = TcOptions::default();
                let variants = [
                    TcOptions { warps: 8, ..d },
                    TcOptions {
                        async_kv: false,
                        ..d
                    },
                    TcOptions { fast: 0, ..d },
                    TcOptions { fast: 1, ..d },
                    TcOptions { fast: 2, ..d },
                    TcOptions {
                        engine: TcEngine::Wmma,
                        ..d
                    },
                    TcOptions {
                        engine: TcEngine::Wmma,
                        prefetch_v: true,
                        warps: 8,
                        ..d
                    },
                ];
                for (i, tc) in variants.into_iter().enumerate() {
                    suite::random_mixes_tc::<R>(
                        &dev,
                        AttnDtype::BF16,
                        KernelPath::Auto,
                        tc,
                        $blocks,
                        &[64, 128],
                        400 + i as u64,
                        2,
                    );
                }
            }

            #[test]
            fn large_logits_are_stable() {
                let Some(dev) = device() else { return };
                for path in $paths {
                    suite::large_logits::<R>(&dev, AttnDtype::F32, path, 64);
                    suite::large_logits::<R>(&dev, AttnDtype::F16, path, 64);
                }
            }

            #[test]
            fn all_skip_layer_writes_zeros() {
                let Some(dev) = device() else { return };
                for path in $paths {
                    suite::all_skip::<R>(&dev, path);
                }
            }

            #[test]
            fn all_dense_layer() {
                let Some(dev) = device() else { return };
                for path in $paths {
                    suite::all_dense::<R>(&dev, AttnDtype::F32, path, 32);
                    suite::all_dense::<R>(&dev, AttnDtype::F16, path, $blocks[0]);
                }
            }

            #[test]
            fn key_padding_masks_keys() {
                let Some(dev) = device() else { return };
                for path in $paths {
                    suite::key_padding::<R>(&dev, AttnDtype::F32, MaskDtype::U32, path, 16);
                    suite::key_padding::<R>(&dev, AttnDtype::F16, MaskDtype::U8, path, $blocks[0]);
                    suite::key_padding::<R>(&dev, AttnDtype::F16, MaskDtype::U32, path, $blocks[0]);
                }
            }

            #[test]
            fn cross_attention_matches_reference() {
                let Some(dev) = device() else { return };
                for path in $paths {
                    suite::cross_attention::<R>(&dev, AttnDtype::F32, path, 16, 64);
                    for &block in $blocks {
                        suite::cross_attention::<R>(&dev, AttnDtype::F16, path, block, 128);
                        suite::cross_attention::<R>(&dev, AttnDtype::BF16, path, block, 64);
                    }
                }
            }

            #[test]
            fn bad_input_is_a_typed_error() {
                let Some(dev) = device() else { return };
                suite::bad_input::<R>(&dev);
            }
        }
    };
}

testgen_sparse_attention!(
    wgpu_lavapipe,
    cubecl::wgpu::WgpuRuntime,
    cubecl::wgpu::WgpuDevice::Cpu,
    true,
    &[16, 32, 64],
    [KernelPath::Auto]
);

#[cfg(feature = "cuda")]
testgen_sparse_attention!(
    cuda,
    cubecl::cuda::CudaRuntime,
    Default::default(),
    vdit_kernels::cuda_available(),
    &[64, 128],
    [KernelPath::Auto, KernelPath::Portable]
);
