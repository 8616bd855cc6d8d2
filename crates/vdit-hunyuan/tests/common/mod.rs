//! Helpers shared by the HunyuanVideo integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor};
use vdit_models::io::TensorMap;

pub type B = Flex;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn expected(name: &str) -> Tensor<B, 5> {
    let out = TensorMap::read(&fixture(name).join("outputs.safetensors")).unwrap();
    out.float("sample", DType::F32, &Default::default())
        .unwrap()
}

pub fn intermediate<const D: usize>(name: &str, key: &str) -> Tensor<B, D> {
    let out = TensorMap::read(&fixture(name).join("intermediates.safetensors")).unwrap();
    out.float(key, DType::F32, &Default::default()).unwrap()
}

pub fn inputs(name: &str) -> TensorMap {
    TensorMap::read(&fixture(name).join("inputs.safetensors")).unwrap()
}

/// ||a - b|| / ||b||.
pub fn rel_l2<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.cast(DType::F32);
    let num: f64 = (a - b.clone()).square().sum().into_scalar().into();
    let den: f64 = b.square().sum().into_scalar().into();
    (num / den).sqrt()
}
