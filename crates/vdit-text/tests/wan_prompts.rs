//! The tokenizer and the Wan pipeline's prompt handling against transformers /
//! diffusers (`tokenizer_cases.json` and `pipeline_tiny.safetensors` from
//! `tools/fixtures_wan_t2v.py`).

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor};
use vdit_models::io::TensorMap;
use vdit_text::t5::T5Encoder;
use vdit_text::{PromptEncoder, PromptTokenizer, prompt_clean};

type B = Flex;

fn t2v(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vdit-wan/tests/fixtures/t2v")
        .join(name)
}

fn rel_l2(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let num: f64 = (a - b.clone()).square().sum().into_scalar().into();
    let den: f64 = b.square().sum().into_scalar().into();
    (num / den).sqrt()
}

#[test]
fn tokenizer_and_cleaning_match_transformers_ids() {
    let tok = PromptTokenizer::from_dir(&t2v("pipeline_tiny/tokenizer")).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t2v("tokenizer_cases.json")).unwrap())
            .unwrap();
    for case in cases.as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let cleaned = prompt_clean(prompt);
        assert_eq!(cleaned, case["cleaned"].as_str().unwrap(), "{prompt:?}");
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(&cleaned).unwrap(), want, "{prompt:?}");
    }
}

#[test]
fn truncation_keeps_the_end_token_and_padding_is_masked() {
    let tok = PromptTokenizer::from_dir(&t2v("pipeline_tiny/tokenizer")).unwrap();
    let (ids, mask) = tok
        .encode_padded(&["a cat walks on the grass".into(), "a".into()], 4)
        .unwrap();
    // "a cat walks on the grass" -> [4, 5, 7, 8, 9, 10, 1]: 3 tokens + </s>.
    assert_eq!(&ids[..4], &[4, 5, 7, 1]);
    assert_eq!(&mask[..4], &[1, 1, 1, 1]);
    assert_eq!(&ids[4..], &[4, 1, 0, 0]);
    assert_eq!(&mask[4..], &[1, 1, 0, 0]);
}

#[test]
fn prompt_embeddings_match_the_wan_pipeline() {
    let device = Default::default();
    let fixture = TensorMap::read(&t2v("pipeline_tiny.safetensors")).unwrap();
    let meta = &fixture.metadata;
    let max_len: usize = meta["max_sequence_length"].parse().unwrap();
    let tok = PromptTokenizer::from_dir(&t2v("pipeline_tiny/tokenizer")).unwrap();
    let enc =
        T5Encoder::<B>::load(&t2v("pipeline_tiny/text_encoder"), DType::F32, &device).unwrap();
    let pe = PromptEncoder::new(tok, enc, max_len).unwrap();
    for (prompt, key) in [
        (&meta["prompt"], "prompt_embeds"),
        (&meta["negative_prompt"], "negative_prompt_embeds"),
    ] {
        let got = pe.encode(std::slice::from_ref(prompt), &device).unwrap();
        let want = fixture.float::<B, 3>(key, DType::F32, &device).unwrap();
        let err = rel_l2(got, want);
        println!("{key}: relative L2 error {err:.3e}");
        assert!(err <= 1e-4, "{key}: relative L2 error {err:.3e}");
    }
}

#[test]
fn a_tokenizer_larger_than_the_encoder_vocabulary_is_rejected() {
    let device = Default::default();
    let tok = PromptTokenizer::from_dir(&t2v("pipeline_tiny/tokenizer")).unwrap();
    // umt5_b2_l11_padded has 96 rows; the tokenizer is smaller, so use a 16-row encoder.
    let enc = T5Encoder::<B>::random(
        &vdit_text::t5::T5Config::umt5_tiny(16),
        0,
        DType::F32,
        &device,
    )
    .unwrap();
    let err = PromptEncoder::new(tok, enc, 8).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("do not match"),
        "{err}"
    );
}
