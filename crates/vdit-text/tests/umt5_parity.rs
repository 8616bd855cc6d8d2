//! Golden parity of the UMT5 encoder against transformers (fixtures from
//! `tools/fixtures_wan_t2v.py`, stored with the Wan fixtures), loading through the public
//! `T5Encoder::load`.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor};
use vdit_models::io::TensorMap;
use vdit_text::t5::T5Encoder;

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vdit-wan/tests/fixtures/t2v")
        .join(name)
}

fn rel_l2(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.cast(DType::F32);
    let num: f64 = (a - b.clone()).square().sum().into_scalar().into();
    let den: f64 = b.square().sum().into_scalar().into();
    (num / den).sqrt()
}

fn check(name: &str, dtype: DType, tol: f64) {
    let device = Default::default();
    let dir = fixture(name);
    let encoder = T5Encoder::<B>::load(&dir, dtype, &device).unwrap_or_else(|e| panic!("{e}"));
    let inputs = TensorMap::read(&dir.join("inputs.safetensors")).unwrap();
    let out = encoder.forward_inputs(&inputs, &device).unwrap();
    let want = TensorMap::read(&dir.join("outputs.safetensors"))
        .unwrap()
        .float::<B, 3>("last_hidden_state", DType::F32, &device)
        .unwrap();
    let err = rel_l2(out, want);
    println!("{name} {dtype:?}: relative L2 error {err:.3e}");
    assert!(
        err <= tol,
        "{name} {dtype:?}: relative L2 error {err:.3e} > {tol}"
    );
}

#[test]
fn umt5_batch2_with_padding_matches_transformers() {
    check("umt5_b2_l11_padded", DType::F32, 1e-4);
}

#[test]
fn umt5_sharded_three_layers_forty_tokens_matches_transformers() {
    check("umt5_b1_l40_l3_sharded", DType::F32, 1e-4);
}

#[test]
fn umt5_in_bf16_stays_close_to_the_f32_reference() {
    check("umt5_b2_l11_padded", DType::BF16, 3e-2);
}

#[test]
fn ids_outside_the_vocabulary_are_an_error_naming_the_range() {
    let device = Default::default();
    let encoder =
        T5Encoder::<B>::load(&fixture("umt5_b2_l11_padded"), DType::F32, &device).unwrap();
    let ids = Tensor::<B, 2, burn::tensor::Int>::from_ints([[3, 96]], &device);
    let mask = Tensor::<B, 2, burn::tensor::Int>::ones([1, 2], &device);
    let err = encoder.forward(ids, mask).unwrap_err().to_string();
    assert!(err.contains("3..=96") && err.contains("0..96"), "{err}");
}

#[test]
fn a_diffusers_folder_is_not_loaded_as_an_encoder() {
    let device = Default::default();
    let dir = fixture("vae_b1_f3_4x6");
    let err = T5Encoder::<B>::load(&dir, DType::F32, &device)
        .unwrap_err()
        .to_string();
    // AutoencoderKLWan's config has none of the encoder's weights.
    assert!(
        err.contains("missing weight `shared.weight`") || err.contains("invalid"),
        "{err}"
    );
}
