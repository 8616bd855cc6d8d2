//! Loading a HunyuanVideo checkpoint that does not fit its config fails with an error
//! naming the key (no panic); bad configs and inputs are typed errors.

mod common;

use std::path::Path;

use burn::tensor::{DType, TensorData};
use common::*;
use vdit_hunyuan::{HunyuanConfig, HunyuanConfigJson, HunyuanVideoTransformer3DModel};
use vdit_models::ModelError;
use vdit_models::io::TensorMap;

const CASE: &str = "unit_b1_f1_16x16";
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

fn load(dir: &Path) -> Result<HunyuanVideoTransformer3DModel<B>, ModelError> {
    HunyuanVideoTransformer3DModel::load(dir, DType::F32, &Default::default())
}

#[test]
fn untampered_copy_loads_every_key() {
    load(tampered(|_| {}).path()).unwrap();
}

#[test]
fn missing_key_names_the_key() {
    for key in [
        "context_embedder.token_refiner.refiner_blocks.0.norm_out.linear.weight",
        "transformer_blocks.0.attn.norm_added_k.weight",
        "single_transformer_blocks.0.proj_out.bias",
        "time_text_embed.guidance_embedder.linear_1.weight",
    ] {
        let dir = tampered(|m| {
            m.tensors.remove(key);
        });
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, ModelError::MissingKey { key: k, .. } if k == key),
            "{key}: {err}"
        );
    }
}

#[test]
fn unexpected_key_names_the_key() {
    let dir = tampered(|m| {
        m.insert(
            "single_transformer_blocks.0.attn.to_out.0.weight",
            TensorData::new(vec![0f32; 400], [20, 20]),
        )
    });
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("single_transformer_blocks.0.attn.to_out.0.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_the_key() {
    let dir = tampered(|m| {
        m.insert(
            "norm_out.linear.weight",
            TensorData::new(vec![0f32; 60 * 20], [60, 20]),
        )
    });
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("norm_out.linear.weight")
            && err.contains("[40, 20]")
            && err.contains("[60, 20]"),
        "{err}"
    );
}

#[test]
fn unsupported_config_is_a_clear_error() {
    let dir = tampered(|_| {});
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "\"image_condition_type\": null",
            "\"image_condition_type\": \"token_replace\"",
        ),
    )
    .unwrap();
    assert!(load(dir.path()).unwrap_err().to_string().contains("I2V"));
    std::fs::write(
        &cfg,
        text.replace("\"qk_norm\": \"rms_norm\"", "\"qk_norm\": \"layer_norm\""),
    )
    .unwrap();
    assert!(
        load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("qk_norm")
    );
    std::fs::write(
        &cfg,
        text.replace("\"attention_head_dim\": 10", "\"attention_head_dim\": 12"),
    )
    .unwrap();
    assert!(
        load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("rope_axes_dim")
    );
    std::fs::write(&cfg, r#"{"_class_name": "WanTransformer3DModel"}"#).unwrap();
    assert!(
        load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("HunyuanVideoTransformer3DModel")
    );
}

fn forward_err(model: &HunyuanVideoTransformer3DModel<B>, inp: &TensorMap) -> String {
    model
        .forward_inputs(inp, None, &Default::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_inputs_are_errors() {
    let model = load(&fixture(CASE)).unwrap();
    let mut inp = inputs(CASE);
    inp.tensors.remove("pooled_projections");
    assert!(forward_err(&model, &inp).contains("pooled_projections"));

    let mut inp = inputs(CASE);
    inp.tensors.remove("guidance");
    assert!(forward_err(&model, &inp).contains("guidance"));

    let mut inp = inputs(CASE);
    inp.insert(
        "encoder_attention_mask",
        TensorData::new(vec![0i64; 12], [1, 12]),
    );
    assert!(forward_err(&model, &inp).contains("no valid text token"));

    let mut inp = inputs(CASE);
    inp.insert(
        "encoder_attention_mask",
        TensorData::new(vec![2i64; 12], [1, 12]),
    );
    assert!(forward_err(&model, &inp).contains("0/1"));

    let mut inp = inputs(CASE);
    inp.insert(
        "encoder_attention_mask",
        TensorData::new(vec![1i64; 11], [1, 11]),
    );
    assert!(forward_err(&model, &inp).contains("encoder_attention_mask"));

    let mut inp = inputs(CASE);
    inp.insert("timestep", TensorData::new(vec![1f32, 2.0, 3.0], [3]));
    assert!(forward_err(&model, &inp).contains("timestep"));

    let mut inp = inputs(CASE);
    inp.insert("extra", TensorData::new(vec![1f32], [1]));
    assert!(forward_err(&model, &inp).contains("extra"));

    let mut inp = inputs(CASE);
    inp.insert(
        "hidden_states",
        TensorData::new(vec![0f32; 3 * 16 * 16], [1, 3, 1, 16, 16]),
    );
    assert!(forward_err(&model, &inp).contains("channels"));
}

#[test]
fn patch_size_mismatch_is_an_error() {
    let model = HunyuanVideoTransformer3DModel::<B>::load(
        &fixture("b2_f3_8x12_padded_mask"),
        DType::F32,
        &Default::default(),
    )
    .unwrap();
    let mut inp = inputs("b2_f3_8x12_padded_mask");
    inp.insert(
        "hidden_states",
        TensorData::new(vec![0f32; 2 * 4 * 3 * 7 * 12], [2, 4, 3, 7, 12]),
    );
    assert!(forward_err(&model, &inp).contains("patch size"));
}

#[test]
fn preset_has_the_published_sizes() {
    let c = HunyuanConfig::hunyuan_video_t2v();
    assert_eq!(
        (
            c.dim,
            c.heads,
            c.head_dim,
            c.layers,
            c.single_layers,
            c.refiner_layers
        ),
        (3072, 24, 128, 20, 40, 2)
    );
    assert_eq!((c.mlp_dim, c.refiner_mlp_dim), (12288, 12288));
    assert_eq!(c.rope_axes, [16, 56, 56]);
    assert_eq!(c.patch_size, [1, 2, 2]);
    assert_eq!((c.text_dim, c.pooled_dim, c.rope_theta), (4096, 768, 256.0));
    assert!(c.guidance_embeds);
    assert_eq!(c.attention_layers(), 60);
    assert_eq!(HunyuanConfig::preset("hunyuan-video").unwrap(), c);
    assert!(HunyuanConfig::preset("wan").is_err());
    // The fixture's config.json parses to the diffusers unit-test config.
    let json = HunyuanConfigJson::from_diffusers(
        &vdit_models::DiffusersConfig::from_model_dir(&fixture(CASE)).unwrap(),
    )
    .unwrap();
    assert_eq!(json.rope_axes_dim, vec![2, 4, 4]);
}

/// The real-size model's 720p layout: 33x45x80 video + 256 text = 119,056 tokens.
#[test]
fn real_layout_matches_the_spec() {
    let c = HunyuanConfig::hunyuan_video_t2v();
    let l = vdit_hunyuan::layout_for(&c, 33, 90, 160, 256).unwrap();
    assert_eq!(l.total_tokens(), 119_056);
    assert_eq!(l.text_range(), 118_800..119_056);
}
