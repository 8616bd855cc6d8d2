//! Inline PTX on the GPU: `ex2.approx` and one `wgmma` GEMM against CPU references.
//! Needs an sm_90 GPU; built only with `--features cuda`.
#![cfg(feature = "cuda")]

use cubecl::prelude::*;
use half::bf16;
use rand::{Rng, SeedableRng, rngs::StdRng};
use vdit_kernels_hopper::probe::{ex2_kernel, wgmma_gemm_kernel};

fn client() -> cubecl::client::Client {
    cubecl::Device::Cuda(Default::default()).client()
}

fn f32s(client: &cubecl::client::Client, h: cubecl::server::Handle) -> Vec<f32> {
    let bytes = client.read_one_unchecked(h);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bf16_bytes(v: &[bf16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

#[test]
fn ex2_approx_matches_exp2() {
    let client = client();
    let input: Vec<f32> = (0..4096).map(|i| -60.0 + i as f32 * 0.0291).collect();
    let bytes: Vec<u8> = input.iter().flat_map(|x| x.to_le_bytes()).collect();
    let hin = client.create_from_slice(&bytes);
    let hout = client.empty(bytes.len());
    ex2_kernel::launch(
        &client,
        CubeCount::Static(16, 1, 1),
        CubeDim::new_1d(256),
        unsafe { BufferArg::from_raw_parts(hin, input.len()) },
        unsafe { BufferArg::from_raw_parts(hout.clone(), input.len()) },
    );
    let got = f32s(&client, hout);
    let mut worst = 0f64;
    for (x, g) in input.iter().zip(&got) {
        let want = (*x as f64).exp2();
        worst = worst.max(((*g as f64) - want).abs() / want);
    }
    println!("ex2.approx worst relative error {worst:.3e}");
    assert!(worst < 1e-6, "ex2.approx off by {worst}");
}

/// `a[64, k] * B` on the GPU against f64: `B = b[64, k]^T` or (`mn_major`) `b[k, 64]`.
fn gemm(k: u32, mn_major: bool, swap: bool) -> f64 {
    let client = client();
    let mut rng = StdRng::seed_from_u64(7);
    let n = (64 * k) as usize;
    let a: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let b: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
        .collect();
    let ha = client.create_from_slice(&bf16_bytes(&a));
    let hb = client.create_from_slice(&bf16_bytes(&b));
    let hout = client.empty(64 * 64 * 4);
    wgmma_gemm_kernel::launch(
        &client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(128),
        unsafe { BufferArg::from_raw_parts(ha, n) },
        unsafe { BufferArg::from_raw_parts(hb, n) },
        unsafe { BufferArg::from_raw_parts(hout.clone(), 64 * 64) },
        k,
        mn_major,
        swap,
    );
    let got = f32s(&client, hout);
    let k = k as usize;
    let (mut err, mut norm) = (0f64, 0f64);
    for i in 0..64 {
        for j in 0..64 {
            let want: f64 = (0..k)
                .map(|c| {
                    let bv = if mn_major {
                        b[c * 64 + j]
                    } else {
                        b[j * k + c]
                    };
                    a[i * k + c].to_f64() * bv.to_f64()
                })
                .sum();
            err += (got[i * 64 + j] as f64 - want).powi(2);
            norm += want * want;
        }
    }
    (err / norm).sqrt()
}

#[test]
fn wgmma_gemm_matches_f64_reference() {
    for k in [16, 64, 128] {
        let rel = gemm(k, false, false);
        println!("wgmma m64n64 k={k}: rel L2 {rel:.3e}");
        // bf16 inputs are exact in f32 products; only f32 accumulation order differs.
        assert!(rel < 1e-5, "k={k}: rel L2 {rel}");
    }
}

#[test]
fn descriptor_offset_conventions() {
    // With LBO and SBO swapped the product must be far off (k > 16 so both matter): this
    // pins layout.rs's K-major and MN-major conventions down.
    for mn_major in [false, true] {
        let ours = gemm(64, mn_major, false);
        let swapped = gemm(64, mn_major, true);
        println!("B MN-major {mn_major}: rel L2 {ours:.3e} as in layout.rs, {swapped:.3e} swapped");
        assert!(
            ours < 1e-5 && swapped > 1e-2,
            "mn_major {mn_major}: ours {ours}, swapped {swapped}"
        );
    }
}
