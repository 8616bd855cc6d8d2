//! Loading errors name the key (no panic), bad configs and inputs name the problem, and
//! a random-weight model builds from a config.

mod common;

use std::path::Path;

use burn::tensor::{DType, Tensor, TensorData};
use common::*;
use vdit_cogvideox::{CogVideoXConfig, CogVideoXConfigJson, CogVideoXTransformer3DModel};
use vdit_models::io::TensorMap;
use vdit_models::{DiffusersConfig, ModelError};

const CASE: &str = "b2_f4_8x8_t2even";
const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

fn tampered(
    edit: impl FnOnce(&mut TensorMap),
    config: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(CASE);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let mut map = TensorMap::read(&src.join(WEIGHTS)).unwrap();
    edit(&mut map);
    map.write(&dir.path().join(WEIGHTS)).unwrap();
    dir
}

fn load(dir: &Path) -> Result<CogVideoXTransformer3DModel<B>, ModelError> {
    CogVideoXTransformer3DModel::load(dir, DType::F32, &Default::default())
}

#[test]
fn untampered_copy_loads() {
    load(tampered(|_| {}, |_| {}).path()).unwrap();
}

#[test]
fn missing_key_names_the_key() {
    let dir = tampered(
        |m| {
            m.tensors.remove("transformer_blocks.1.attn1.norm_k.bias");
        },
        |_| {},
    );
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingKey { key, expected } if key == "transformer_blocks.1.attn1.norm_k.bias" && expected == &[16]),
        "{err}"
    );
}

#[test]
fn unexpected_and_misshapen_keys_are_named() {
    let dir = tampered(
        |m| {
            m.insert(
                "ofs_embedding.linear_1.weight",
                TensorData::new(vec![0f32; 4], [2, 2]),
            )
        },
        |_| {},
    );
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("ofs_embedding.linear_1.weight"), "{err}");
    let dir = tampered(
        |m| m.insert("proj_out.bias", TensorData::new(vec![0f32; 7], [7])),
        |_| {},
    );
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::ShapeMismatch { key, .. } if key == "proj_out.bias"),
        "{err}"
    );
}

#[test]
fn unsupported_configs_are_rejected() {
    for (key, value, needle) in [
        ("patch_size_t", serde_json::Value::Null, "1.0"),
        ("use_rotary_positional_embeddings", false.into(), "RoPE"),
        ("attention_head_dim", 8.into(), "multiple of 16"),
        ("ofs_embed_dim", 512.into(), "I2V"),
        (
            "_class_name",
            "WanTransformer3DModel".into(),
            "CogVideoXTransformer3DModel",
        ),
    ] {
        let dir = tampered(|_| {}, |c| c[key] = value.clone());
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{key}: {err}");
    }
}

#[test]
fn real_preset_matches_the_checkpoint_config() {
    let c = CogVideoXConfig::cogvideox1_5_5b();
    assert_eq!((c.layers, c.heads, c.head_dim, c.dim), (42, 48, 64, 3072));
    assert_eq!(c.rope_axes, [16, 24, 24]);
    assert_eq!(c.rope_max_grid, [150, 150]);
    assert_eq!(
        (c.patch_size, c.patch_size_t, c.time_embed_dim),
        (2, 2, 512)
    );
    assert_eq!(CogVideoXConfig::preset("CogVideoX1.5-5B").unwrap(), c);
    assert!(CogVideoXConfig::preset("cogvideox-2b").is_err());
    // The fixture config parses to the same runtime config as the JSON mirror.
    let cfg = DiffusersConfig::from_model_dir(&fixture(CASE)).unwrap();
    let json = CogVideoXConfigJson::from_diffusers(&cfg).unwrap();
    assert_eq!(json.into_config().unwrap().head_dim, 16);
}

#[test]
fn random_weights_model_runs_and_bad_inputs_are_errors() {
    let device = Default::default();
    let json = CogVideoXConfigJson {
        num_attention_heads: 2,
        attention_head_dim: 16,
        in_channels: 4,
        out_channels: Some(4),
        time_embed_dim: 8,
        text_embed_dim: 8,
        num_layers: 1,
        patch_size_t: Some(2),
        use_rotary_positional_embeddings: true,
        ..Default::default()
    };
    let c = json.into_config().unwrap();
    let model = CogVideoXTransformer3DModel::<B>::random(&c, 7, DType::F32, &device).unwrap();
    let ctx = model.attention_context(2, 4, 4, 3, None).unwrap();
    let x = Tensor::<B, 5>::ones([1, 2, 4, 4, 4], &device);
    let t = Tensor::<B, 1>::from_floats([500.0], &device);
    let text = Tensor::<B, 3>::ones([1, 3, 8], &device);
    let y = model
        .forward(x.clone(), t.clone(), text.clone(), &ctx)
        .unwrap();
    assert_eq!(y.dims(), [1, 2, 4, 4, 4]);
    // Odd latent frame count: a typed error (the pipeline pads first).
    assert!(matches!(
        model.attention_context(3, 4, 4, 3, None),
        Err(ModelError::Input(_))
    ));
    // Wrong channel dim ([B, C, F, H, W] instead of [B, F, C, H, W]).
    let bad = Tensor::<B, 5>::ones([1, 4, 2, 4, 4], &device);
    assert!(model.forward(bad, t.clone(), text.clone(), &ctx).is_err());
    // Wrong text width, and a context for another layout.
    assert!(
        model
            .forward(x.clone(), t.clone(), Tensor::ones([1, 3, 5], &device), &ctx)
            .is_err()
    );
    let other = model.attention_context(2, 4, 4, 4, None).unwrap();
    assert!(model.forward(x, t, text, &other).is_err());
}
