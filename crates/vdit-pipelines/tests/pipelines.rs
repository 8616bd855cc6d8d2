//! The library pipelines against independent references: `WanT2vPipeline::generate`
//! on the tiny diffusers Wan pipeline reproduces `WanPipeline`'s frames (fixture
//! `pipeline_tiny.safetensors` from `tools/fixtures_wan_t2v.py`: same prompt, negative
//! prompt and initial latents), `Pipeline::load` dispatches on the folder's class, and
//! bad parts are clear errors.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{DType, Distribution, Tensor};
use vdit_models::ModelClass;
use vdit_models::io::TensorMap;
use vdit_pipelines::{
    AnyDenoiser, LatentRequest, Pipeline, PipelineError, SamplerChoice, T2vRequest, WanT2vPipeline,
};
use vdit_wan::pipeline::WanSampler;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vdit-wan/tests/fixtures")
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        num += ((g - w) as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    (num / den).sqrt()
}

#[test]
fn the_wan_pipeline_matches_diffusers_frames() {
    let device = Default::default();
    let fixture = TensorMap::read(&fixtures().join("t2v/pipeline_tiny.safetensors")).unwrap();
    let m = &fixture.metadata;
    let num = |k: &str| m[k].parse::<usize>().unwrap();
    let Pipeline::WanT2v(pipe) =
        Pipeline::<Flex>::load(&fixtures().join("t2v/pipeline_tiny"), DType::F32, &device).unwrap()
    else {
        panic!("a WanPipeline folder loads as the text-to-video pipeline");
    };
    let mut pipe = *pipe;
    pipe.text.max_len = num("max_sequence_length");
    let latent =
        vdit_pipelines::latent_size(num("num_frames"), num("height"), num("width")).unwrap();
    let mut request = T2vRequest::new(m["prompt"].clone(), latent);
    request.negative_prompt = m["negative_prompt"].clone();
    request.config.steps = num("steps");
    request.config.guidance_scale = m["guidance"].parse().unwrap();
    request.config.sampler = WanSampler::UniPc;
    request.initial_latents = Some(fixture.get("latents").unwrap().clone());
    let mut stages = Vec::new();
    let out = pipe
        .generate(&request, None, &device, |p| stages.push(p))
        .unwrap();
    let got: Vec<f32> = out.frames.iter::<f32>().collect();
    let want = fixture.values_f32("frames").unwrap();
    let err = rel_l2(&got, &want);
    assert!(err <= 1e-4, "frames: relative L2 error {err:.3e}");
    assert_eq!(out.video.frames.len(), num("num_frames"));
    assert_eq!(
        stages.len(),
        1 + request.config.steps + latent[0],
        "{stages:?}"
    );
}

#[test]
fn pipeline_load_dispatches_denoiser_folders_on_their_class() {
    let device = Default::default();
    let p =
        Pipeline::<Flex>::load(&fixtures().join("unit_b1_f2_16x16"), DType::F32, &device).unwrap();
    let Pipeline::Denoiser(d) = p else {
        panic!("a transformer folder loads as a denoiser")
    };
    assert_eq!(d.class(), ModelClass::Wan);
    let err = Pipeline::<Flex>::load(&fixtures(), DType::F32, &device)
        .err()
        .expect("a folder without config.json is an error")
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn wrong_latent_channels_into_the_vae_name_z_dim() {
    let device = Default::default();
    let pipe = WanT2vPipeline::<Flex>::tiny_random(0, DType::F32, 8, &device).unwrap();
    let z = pipe.vae.config.z_dim;
    let latents = Tensor::<Flex, 5>::random([1, z + 1, 2, 4, 4], Distribution::Default, &device);
    let err = pipe.decode(latents, |_, _| {}).unwrap_err();
    assert!(matches!(err, PipelineError::Models(_)), "{err:?}");
    assert!(err.to_string().contains("z_dim"), "{err}");
}

#[test]
fn the_denoiser_trait_object_reports_each_class() {
    let device = Default::default();
    for (preset, class, dims) in [
        ("wan-tiny", ModelClass::Wan, (2, 4, 32)),
        ("hunyuan-tiny", ModelClass::HunyuanVideo, (4, 4, 16)),
    ] {
        let config = vdit_pipelines::ModelConfig::preset(preset).unwrap();
        let d = AnyDenoiser::<Flex>::random(&config, 0, DType::F32, &device).unwrap();
        let t = d.as_denoiser();
        assert_eq!((t.class(), t.plan_dims()), (class, dims));
        assert_eq!(t.plan_dims(), config.plan_dims());
        assert_eq!(t.in_channels(), config.in_channels());
        let layout = t.video_layout([2, 4, 4], 8).unwrap();
        assert_eq!(layout, config.layout([2, 4, 4], 8).unwrap());
        assert!(t.video_layout([2, 3, 4], 8).is_err(), "odd latent height");
    }
}

#[test]
fn a_cogvideox_pipeline_folder_generates_latents_through_its_own_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let tr = tmp.path().join("transformer");
    std::fs::create_dir(&tr).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vdit-cogvideox/tests/fixtures/b1_f4_6x4_d64_rope16_24_24");
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(src.join(f), tr.join(f)).unwrap();
    }
    std::fs::write(
        tmp.path().join("model_index.json"),
        r#"{"_class_name": "CogVideoXPipeline"}"#,
    )
    .unwrap();
    let device = Default::default();
    let Pipeline::Denoiser(d) = Pipeline::<Flex>::load(tmp.path(), DType::F32, &device).unwrap()
    else {
        panic!("a CogVideoX pipeline loads its transformer");
    };
    assert_eq!(d.class(), ModelClass::CogVideoX);
    let mut emb = TensorMap::default();
    emb.insert(
        "prompt_embeds",
        vdit_pipelines::seeded_normal(1, &[1, 4, 16]),
    );
    emb.insert(
        "negative_prompt_embeds",
        vdit_pipelines::seeded_normal(2, &[1, 4, 16]),
    );
    // 3 latent frames: padded to 4 for the temporal patch, the padding dropped after.
    let mut request = LatentRequest {
        latent: [3, 6, 4],
        steps: 2,
        sampler: SamplerChoice::Ddim,
        guidance: 6.0,
        shift: None,
        true_cfg: 1.0,
        dynamic_cfg: false,
        seed: 0,
        initial_latents: None,
        sampler_noise: None,
    };
    let mut steps = 0;
    let out = d
        .generate_latents(&emb, &request, None, &device, |_| steps += 1)
        .unwrap();
    assert_eq!(steps, 2);
    let lat = out.latents.get("latents").unwrap();
    assert_eq!(lat.shape.as_slice(), &[1, 3, 4, 6, 4]);
    let padded = out.latents.get("latents_padded").unwrap();
    assert_eq!(padded.shape.as_slice(), &[1, 4, 4, 6, 4]);
    assert!(lat.iter::<f32>().all(f32::is_finite));
    // Without negative embeddings, guidance names what is missing.
    let mut no_neg = TensorMap::default();
    no_neg.insert(
        "prompt_embeds",
        vdit_pipelines::seeded_normal(1, &[1, 4, 16]),
    );
    let err = d
        .generate_latents(&no_neg, &request, None, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("negative_prompt_embeds"), "{err}");
    request.sampler = SamplerChoice::UniPc;
    let err = d
        .generate_latents(&emb, &request, None, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("unipc") && err.contains("CogVideoX"), "{err}");
}
