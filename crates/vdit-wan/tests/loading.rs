//! Loading a Wan checkpoint that does not fit its config fails with an error naming the
//! key (no panic); a bad config names the problem.

mod common;

use std::path::Path;

use burn::tensor::{DType, TensorData};
use common::*;
use vdit_models::ModelError;
use vdit_models::io::TensorMap;
use vdit_wan::{WanConfig, WanTransformer3DModel};

const CASE: &str = "unit_b1_f2_16x16";
const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// A copy of the fixture model dir whose weights went through `edit`.
fn tampered(edit: impl FnOnce(&mut TensorMap)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(CASE);
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut map = TensorMap::read(&src.join(WEIGHTS)).unwrap();
    edit(&mut map);
    map.write(&dir.path().join(WEIGHTS)).unwrap();
    dir
}

fn load(dir: &Path) -> Result<WanTransformer3DModel<B>, ModelError> {
    WanTransformer3DModel::load(dir, DType::F32, &Default::default())
}

#[test]
fn untampered_copy_loads() {
    load(tampered(|_| {}).path()).unwrap();
}

#[test]
fn missing_key_names_the_key() {
    let dir = tampered(|m| {
        m.tensors.remove("blocks.1.attn2.norm_k.weight");
    });
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingKey { key, expected } if key == "blocks.1.attn2.norm_k.weight" && expected == &[24]),
        "{err}"
    );
}

#[test]
fn unexpected_key_names_the_key_but_diffusers_ignored_keys_pass() {
    let dir = tampered(|m| {
        m.insert(
            "blocks.0.attn1.extra.weight",
            TensorData::new(vec![0f32; 2], [2]),
        )
    });
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("blocks.0.attn1.extra.weight"), "{err}");
    let dir = tampered(|m| {
        m.insert(
            "blocks.0.attn2.norm_added_q.weight",
            TensorData::new(vec![0f32; 2], [2]),
        )
    });
    load(dir.path()).unwrap();
}

#[test]
fn wrong_shape_names_the_key() {
    let dir = tampered(|m| {
        m.insert(
            "proj_out.weight",
            TensorData::new(vec![0f32; 15 * 24], [15, 24]),
        )
    });
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("proj_out.weight") && err.contains("[16, 24]") && err.contains("[15, 24]"),
        "{err}"
    );
}

#[test]
fn unsupported_config_is_a_clear_error() {
    let dir = tampered(|_| {});
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"image_dim\": null", "\"image_dim\": 1280");
    std::fs::write(&cfg, text).unwrap();
    assert!(load(dir.path()).unwrap_err().to_string().contains("I2V"));
    std::fs::write(&cfg, r#"{"_class_name": "HunyuanVideoTransformer3DModel"}"#).unwrap();
    assert!(
        load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("WanTransformer3DModel")
    );
}

#[test]
fn bad_inputs_are_errors() {
    let device = Default::default();
    let model = load(&fixture(CASE)).unwrap();
    let mut inp = inputs(CASE);
    inp.tensors.remove("timestep");
    assert!(
        model
            .forward_inputs(&inp, None, &device)
            .unwrap_err()
            .to_string()
            .contains("timestep")
    );
    let mut inp = inputs(CASE);
    inp.insert(
        "hidden_states",
        TensorData::new(vec![0f32; 4 * 2 * 15 * 16], [1, 4, 2, 15, 16]),
    );
    assert!(
        model
            .forward_inputs(&inp, None, &device)
            .unwrap_err()
            .to_string()
            .contains("patch size")
    );
}

#[test]
fn presets_have_the_published_sizes() {
    let small = WanConfig::wan2_1_t2v_1_3b();
    assert_eq!(
        (small.dim, small.heads, small.layers, small.ffn_dim),
        (1536, 12, 30, 8960)
    );
    assert_eq!(small.rope_axes, [44, 42, 42]);
    let big = WanConfig::wan2_1_t2v_14b();
    assert_eq!(
        (big.dim, big.heads, big.layers, big.ffn_dim),
        (5120, 40, 40, 13824)
    );
}

#[test]
fn random_weights_model_builds_from_a_config_and_runs() {
    let device = Default::default();
    let config = vdit_wan::WanConfigJson {
        num_attention_heads: 2,
        attention_head_dim: 12,
        in_channels: 4,
        out_channels: Some(4),
        text_dim: 16,
        ffn_dim: 32,
        num_layers: 2,
        ..Default::default()
    }
    .into_config()
    .unwrap();
    let model = WanTransformer3DModel::<B>::random(&config, 3, DType::F32, &device).unwrap();
    let out = model.forward_inputs(&inputs(CASE), None, &device).unwrap();
    assert_eq!(out.dims(), [1, 4, 2, 16, 16]);
    let v: Vec<f32> = out.into_data().into_vec().unwrap();
    assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|x| x.abs() > 1e-3));
}
