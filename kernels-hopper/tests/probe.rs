//! Inline PTX on the GPU: `ex2.approx` and one `wgmma` GEMM against CPU references.
//! Needs an sm_90 GPU; built only with `--features cuda`.
#![cfg(feature = "cuda")]

use cubecl::prelude::*;
use half::bf16;
use rand::{Rng, SeedableRng, rngs::StdRng};
use vdit_kernels_hopper::probe::{ex2_kernel, wgmma_gemm_kernel, wgmma_gemm_mn_kernel};

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

fn gemm(swap: bool, k: u32) -> (f64, f64) {
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
        swap,
    );
    let got = f32s(&client, hout);
    let (mut err, mut norm) = (0f64, 0f64);
    for i in 0..64 {
        for j in 0..64 {
            let want: f64 = (0..k as usize)
                .map(|c| a[i * k as usize + c].to_f64() * b[j * k as usize + c].to_f64())
                .sum();
            err += (got[i * 64 + j] as f64 - want).powi(2);
            norm += want * want;
        }
    }
    ((err / norm).sqrt(), norm)
}

#[test]
fn wgmma_gemm_matches_f64_reference() {
    for k in [16, 64, 128] {
        let (rel, _) = gemm(false, k);
        println!("wgmma m64n64 k={k}: rel L2 {rel:.3e}");
        // bf16 inputs are exact in f32 products; only f32 accumulation order differs.
        assert!(rel < 1e-5, "k={k}: rel L2 {rel}");
    }
}

#[test]
fn swapped_descriptor_offsets_give_a_wrong_product() {
    // Guards the layout convention: if LBO/SBO were interchangeable the test above would not
    // pin them down. With them swapped the product must be far off (k > 16 so both matter).
    let (rel, _) = gemm(true, 64);
    println!("wgmma with LBO/SBO swapped: rel L2 {rel:.3e}");
    assert!(rel > 1e-2, "swapped offsets still gave rel L2 {rel}");
}

/// `a[64, k] * b[k, 64]` with b MN-major and the transpose flag; returns rel L2 vs f64.
fn gemm_mn(swap: bool, k: u32) -> f64 {
    let client = client();
    let mut rng = StdRng::seed_from_u64(11);
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
    wgmma_gemm_mn_kernel::launch(
        &client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(128),
        unsafe { BufferArg::from_raw_parts(ha, n) },
        unsafe { BufferArg::from_raw_parts(hb, n) },
        unsafe { BufferArg::from_raw_parts(hout.clone(), 64 * 64) },
        k,
        swap,
    );
    let got = f32s(&client, hout);
    let (mut err, mut norm) = (0f64, 0f64);
    for i in 0..64 {
        for j in 0..64 {
            let want: f64 = (0..k as usize)
                .map(|c| a[i * k as usize + c].to_f64() * b[c * 64 + j].to_f64())
                .sum();
            err += (got[i * 64 + j] as f64 - want).powi(2);
            norm += want * want;
        }
    }
    (err / norm).sqrt()
}

#[test]
fn mn_major_descriptor_convention() {
    let ours = gemm_mn(false, 64);
    let swapped = gemm_mn(true, 64);
    println!(
        "MN-major B: rel L2 {ours:.3e} with (LBO, SBO) as in layout.rs, {swapped:.3e} swapped"
    );
    assert!(
        ours < 1e-5 && swapped > 1e-2,
        "layout.rs MNMAJOR_LBO/SBO: ours {ours}, swapped {swapped}"
    );
}
