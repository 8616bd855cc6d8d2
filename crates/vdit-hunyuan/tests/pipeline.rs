//! The denoising loop against diffusers' `HunyuanVideoPipeline` (3 steps, shift 7,
//! embedded guidance, true CFG with a negative prompt, padded masks, batch 2).

mod common;

use burn::tensor::{Bool, DType, Tensor};
use common::*;
use vdit_hunyuan::{
    GenerateConfig, HunyuanFlowEuler, HunyuanVideoTransformer3DModel, PromptEmbeds, denoise,
};
use vdit_models::io::TensorMap;
use vdit_models::samplers::Sampler;

fn fixture_file() -> TensorMap {
    TensorMap::read(&fixture("pipeline_b2_3steps.safetensors")).unwrap()
}

fn mask(map: &TensorMap, name: &str) -> Tensor<B, 2, Bool> {
    let m: Tensor<B, 2> = map.float(name, DType::F32, &Default::default()).unwrap();
    m.greater_elem(0.5)
}

fn prompt(map: &TensorMap, prefix: &str) -> PromptEmbeds<B> {
    let device = Default::default();
    PromptEmbeds {
        prompt_embeds: map
            .float(&format!("{prefix}prompt_embeds"), DType::F32, &device)
            .unwrap(),
        prompt_attention_mask: mask(map, &format!("{prefix}prompt_attention_mask")),
        pooled_prompt_embeds: map
            .float(
                &format!("{prefix}pooled_prompt_embeds"),
                DType::F32,
                &device,
            )
            .unwrap(),
    }
}

#[test]
fn schedule_matches_diffusers_bit_for_bit() {
    let map = fixture_file();
    let s = HunyuanFlowEuler::new(3, 7.0);
    assert_eq!(
        <HunyuanFlowEuler as Sampler<B>>::timesteps(&s),
        map.values_f32("timesteps").unwrap().as_slice()
    );
    assert_eq!(s.sigmas(), map.values_f32("sigmas").unwrap().as_slice());
    // The 50-step default starts at sigma 1 and ends before 0.
    let s = HunyuanFlowEuler::new(50, 7.0);
    assert_eq!(s.sigmas()[0], 1.0);
    assert_eq!(s.sigmas().len(), 51);
}

#[test]
fn three_step_loop_with_true_cfg_matches_diffusers_pipeline() {
    let device = Default::default();
    let map = fixture_file();
    let model = HunyuanVideoTransformer3DModel::<B>::load(
        &fixture(&map.metadata["model"]),
        DType::F32,
        &device,
    )
    .unwrap();
    let latents: Tensor<B, 5> = map.float("latents", DType::F32, &device).unwrap();
    let [_, _, f, h, w] = latents.dims();
    let pos = prompt(&map, "");
    let neg = prompt(&map, "negative_");
    // The file reader gives the same prompts.
    let read = PromptEmbeds::<B>::from_tensor_map(&map, true, DType::F32, &device)
        .unwrap()
        .unwrap();
    assert_eq!(
        read.prompt_attention_mask
            .clone()
            .into_data()
            .iter::<bool>()
            .collect::<Vec<_>>(),
        neg.prompt_attention_mask
            .clone()
            .into_data()
            .iter::<bool>()
            .collect::<Vec<_>>()
    );
    let mut no_neg = TensorMap::default();
    no_neg.insert("prompt_embeds", map.get("prompt_embeds").unwrap().clone());
    assert!(
        PromptEmbeds::<B>::from_tensor_map(&no_neg, true, DType::F32, &device)
            .unwrap()
            .is_none()
    );
    assert!(PromptEmbeds::<B>::from_tensor_map(&no_neg, false, DType::F32, &device).is_err());
    let ctx = model
        .attention_context(f, h, w, pos.prompt_embeds.dims()[1], None)
        .unwrap();
    let config = GenerateConfig {
        steps: 3,
        shift: 7.0,
        guidance_scale: 6.0,
        true_cfg_scale: 2.5,
    };
    let mut calls = 0;
    let out = denoise(&model, latents, &pos, Some(&neg), &config, &ctx, |_, _| {
        calls += 1
    })
    .unwrap();
    assert_eq!(calls, 3);
    let want: Tensor<B, 5> = map.float("output", DType::F32, &device).unwrap();
    let err = rel_l2(out.clone(), want.clone());
    println!("pipeline: relative L2 error {err:.3e}");
    assert!(err <= 1e-4, "pipeline: relative L2 error {err:.3e}");
    // Without the negative prompt the result differs (true CFG is really applied).
    let plain = denoise(
        &model,
        map.float("latents", DType::F32, &device).unwrap(),
        &pos,
        None,
        &config,
        &ctx,
        |_, _| {},
    )
    .unwrap();
    assert!(rel_l2(plain, want) > 1e-3);
}
