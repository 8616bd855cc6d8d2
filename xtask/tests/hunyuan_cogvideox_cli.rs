//! `cargo xtask forward` and `generate` for HunyuanVideo and CogVideoX1.5:
//! - `generate` reproduces diffusers' pipelines (the crates' pipeline fixtures:
//!   HunyuanVideo flow Euler + embedded guidance + true CFG with padded masks; CogVideoX
//!   DPM + dynamic CFG with an odd latent frame count, DDIM + static CFG);
//! - `forward` with `--preset ... --random-weights --random-inputs` equals calling the
//!   model directly on the inputs it saved (tiny presets, Wan included);
//! - `--plan` applies to both commands (compared with the pipeline called directly);
//! - bad latent sizes and arguments give clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData};
use vdit_cogvideox::pipeline::{Guidance, denoise as cog_denoise};
use vdit_cogvideox::{CogVideoXConfig, CogVideoXTransformer3DModel};
use vdit_hunyuan::{GenerateConfig, HunyuanConfig, HunyuanVideoTransformer3DModel, PromptEmbeds};
use vdit_models::io::TensorMap;
use vdit_models::samplers::CogVideoXDdim;
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance, TextPosition, VideoLayout};
use vdit_wan::{WanConfigJson, WanTransformer3DModel};

type B = Flex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn hunyuan_fixtures() -> PathBuf {
    root().join("crates/vdit-hunyuan/tests/fixtures")
}

fn cog_fixture(case: &str) -> PathBuf {
    root()
        .join("crates/vdit-cogvideox/tests/fixtures")
        .join(case)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn xtask(args: &[&str]) -> Output {
    let out = run(args);
    if !out.status.success() {
        panic!(
            "xtask {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs `args`, expects a failure whose stderr contains every needle, and no panic.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "xtask {args:?} should fail");
    assert!(!err.contains("panicked"), "xtask {args:?} panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "xtask {args:?}: `{n}` not in:\n{err}");
    }
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(DType::F32).into_data().iter::<f32>().collect()
}

fn plan(layers: usize, heads: usize, head_dim: usize, sparse: bool) -> Plan {
    let model = ModelInfo {
        id: "cli-test".into(),
        config_hash: "none".into(),
        layers,
        heads,
        head_dim,
    };
    let provenance = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-11-24".into(),
        tool_version: "test".into(),
        notes: String::new(),
    };
    let layout = VideoLayout::new(2, 4, 4)
        .unwrap()
        .with_text(8, TextPosition::Suffix)
        .unwrap();
    // Two steps: the `generate` tests run 2 steps (a plan for another schedule length
    // is refused).
    let mut plan = Plan::dense(model, layout, 2, provenance);
    if sparse {
        let mut first = vec![Pattern::Dense; heads];
        first[0] = Pattern::Diagonal { band: 0.1 };
        first[1] = Pattern::Skip;
        plan.ranges[0].layers[0] = first;
    }
    plan
}

// ---------------------------------------------------------------- generate vs diffusers

/// HunyuanVideoPipeline, 3 steps, shift 7, embedded guidance 6, true CFG 2.5 with a
/// negative prompt, padded masks, batch 2.
#[test]
fn generate_matches_diffusers_hunyuan_pipeline() {
    let pipe = hunyuan_fixtures().join("pipeline_b2_3steps.safetensors");
    let want = TensorMap::read(&pipe).unwrap();
    let model = hunyuan_fixtures().join(&want.metadata["model"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    xtask(&[
        "generate",
        "--model-dir",
        s(&model),
        "--embeddings",
        s(&pipe),
        "--initial-latents",
        s(&pipe),
        "--out",
        s(&out),
        "--steps",
        "3",
        "--true-cfg",
        "2.5",
        "--latent",
        "3x8x12",
        "--quiet",
    ]);
    let got = TensorMap::read(&out).unwrap();
    assert_eq!(got.metadata["sampler"], "euler");
    assert_eq!(got.metadata["shift"], "7");
    assert_eq!(got.metadata["guidance"], "6");
    assert_eq!(
        got.get("latents").unwrap().shape.as_slice(),
        &[2, 4, 3, 8, 12]
    );
    let err = rel_l2(
        &got.values_f32("latents").unwrap(),
        &want.values_f32("output").unwrap(),
    );
    assert!(err <= 1e-5, "relative L2 error {err:.3e}");
}

/// CogVideoXPipeline: DPM + dynamic CFG 6 at 9 frames (3 latent frames padded to 4),
/// the per-step noise from the fixture; DDIM + static CFG 5 at 5 frames (no padding).
#[test]
fn generate_matches_diffusers_cogvideox_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    for (case, extra, frames, hw, padded) in [
        (
            "pipeline_dpm_dyncfg_odd3",
            vec![
                "--sampler",
                "dpm",
                "--steps",
                "4",
                "--guidance",
                "6",
                "--dynamic-cfg",
            ],
            "9",
            ["48", "64"],
            true,
        ),
        (
            "pipeline_ddim_cfg_even2",
            vec!["--sampler", "ddim", "--steps", "3", "--guidance", "5"],
            "5",
            ["32", "48"],
            false,
        ),
    ] {
        let dir = cog_fixture(case);
        let inputs = dir.join("inputs.safetensors");
        let out = tmp.path().join(format!("{case}.safetensors"));
        let mut args = vec![
            "generate",
            "--model-dir",
            s(&dir),
            "--embeddings",
            s(&inputs),
            "--initial-latents",
            s(&inputs),
            "--out",
            s(&out),
            "--frames",
            frames,
            "--height",
            hw[0],
            "--width",
            hw[1],
            "--quiet",
        ];
        if padded {
            args.extend(["--sampler-noise", s(&inputs)]);
        }
        args.extend(extra);
        xtask(&args);
        let got = TensorMap::read(&out).unwrap();
        let want = TensorMap::read(&dir.join("outputs.safetensors")).unwrap();
        let sample = want.get("sample").unwrap();
        let full: Vec<f32> = want.values_f32("sample").unwrap();
        assert_eq!(got.metadata["layout"], "BFCHW");
        if padded {
            // The loop's final state (diffusers' output_type="latent") ...
            let err = rel_l2(&got.values_f32("latents_padded").unwrap(), &full);
            assert!(err <= 1e-5, "{case}: padded latents, relative L2 {err:.3e}");
            // ... and the latents the VAE decodes: the first (padding) frame dropped.
            let [b, f, c, h, w] = <[usize; 5]>::try_from(sample.shape.as_slice()).unwrap();
            assert_eq!(
                got.get("latents").unwrap().shape.as_slice(),
                &[b, f - 1, c, h, w]
            );
            let frame = c * h * w;
            let tail: Vec<f32> = full[frame..].to_vec();
            let err = rel_l2(&got.values_f32("latents").unwrap(), &tail);
            assert!(
                err <= 1e-5,
                "{case}: cropped latents, relative L2 {err:.3e}"
            );
            assert_eq!(got.metadata["padded_latent_frames"], "4");
            assert_eq!(got.metadata["latent_frames"], "3");
        } else {
            assert!(got.get("latents_padded").is_none());
            let err = rel_l2(&got.values_f32("latents").unwrap(), &full);
            assert!(err <= 1e-5, "{case}: relative L2 {err:.3e}");
        }
    }
}

// ------------------------------------------------- forward with presets and random inputs

/// `forward --preset <tiny> --random-weights --random-inputs` equals the model (same
/// preset, same weight seed) called directly on the inputs the command saved.
#[test]
fn forward_random_presets_equal_direct_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    for preset in ["hunyuan-tiny", "cogvideox-tiny", "wan-tiny"] {
        let inputs = tmp.path().join(format!("{preset}.in.safetensors"));
        let out = tmp.path().join(format!("{preset}.out.safetensors"));
        xtask(&[
            "forward",
            "--preset",
            preset,
            "--random-weights",
            "--random-inputs",
            "--latent",
            "4x8x8",
            "--text-len",
            "16",
            "--save-inputs",
            s(&inputs),
            "--out",
            s(&out),
        ]);
        let map = TensorMap::read(&inputs).unwrap();
        let want: Tensor<B, 5> = match preset {
            "hunyuan-tiny" => {
                // Random pooled text, guidance 6.0 x 1000, 8 of 16 text tokens valid.
                assert_eq!(map.values_f32("guidance").unwrap(), vec![6000.0]);
                assert_eq!(
                    map.get("pooled_projections").unwrap().shape.as_slice(),
                    &[1, 16]
                );
                let mask = map.values_f32("encoder_attention_mask").unwrap();
                assert_eq!(mask.iter().sum::<f32>(), 8.0);
                HunyuanVideoTransformer3DModel::<B>::random(
                    &HunyuanConfig::tiny(),
                    0,
                    DType::F32,
                    &device,
                )
                .unwrap()
                .forward_inputs(&map, None, &device)
                .unwrap()
            }
            "cogvideox-tiny" => {
                // [B, F, C, H, W] latents.
                assert_eq!(
                    map.get("hidden_states").unwrap().shape.as_slice(),
                    &[1, 4, 16, 8, 8]
                );
                CogVideoXTransformer3DModel::<B>::random(
                    &CogVideoXConfig::tiny(),
                    0,
                    DType::F32,
                    &device,
                )
                .unwrap()
                .forward_inputs(&map, None, &device)
                .unwrap()
            }
            _ => {
                let config = WanConfigJson {
                    num_attention_heads: 4,
                    attention_head_dim: 32,
                    text_dim: 64,
                    ffn_dim: 256,
                    num_layers: 2,
                    ..Default::default()
                }
                .into_config()
                .unwrap();
                WanTransformer3DModel::<B>::random(&config, 0, DType::F32, &device)
                    .unwrap()
                    .forward_inputs(&map, None, &device)
                    .unwrap()
            }
        };
        let got = TensorMap::read(&out).unwrap().values_f32("sample").unwrap();
        let want = values(want);
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{preset}: non-finite output"
        );
        let err = rel_l2(&got, &want);
        assert!(err <= 1e-6, "{preset}: relative L2 error {err:.3e}");
    }
}

/// `--plan` in `forward`: an all-dense plan gives the dense output, a sparse plan
/// changes it, a plan for another model is refused.
#[test]
fn forward_plan_applies_to_hunyuan_and_cogvideox() {
    let tmp = tempfile::tempdir().unwrap();
    // hunyuan-tiny: 2 dual + 2 single blocks; cogvideox-tiny: 2 blocks; both 4 x 16.
    for (preset, layers) in [("hunyuan-tiny", 4), ("cogvideox-tiny", 2)] {
        let sample = |name: &str, plan: Option<&Plan>| -> Vec<f32> {
            let out = tmp.path().join(format!("{preset}-{name}.safetensors"));
            let mut args = vec![
                "forward",
                "--preset",
                preset,
                "--random-weights",
                "--random-inputs",
                "--latent",
                "4x8x8",
                "--text-len",
                "16",
                "--out",
                s(&out),
            ];
            let plan_path = tmp.path().join(format!("{preset}-{name}.ron"));
            if let Some(p) = plan {
                p.save(&plan_path).unwrap();
                args.extend(["--plan", s(&plan_path)]);
            }
            xtask(&args);
            TensorMap::read(&out).unwrap().values_f32("sample").unwrap()
        };
        let dense = sample("none", None);
        let dense_plan = sample("dense", Some(&plan(layers, 4, 16, false)));
        let err = rel_l2(&dense_plan, &dense);
        assert!(err <= 1e-6, "{preset}: dense plan differs by {err:.3e}");
        let sparse = sample("sparse", Some(&plan(layers, 4, 16, true)));
        let err = rel_l2(&sparse, &dense);
        assert!(
            err > 1e-4,
            "{preset}: the sparse plan changed nothing ({err:.3e})"
        );
        let wrong = tmp.path().join("wrong.ron");
        plan(layers + 1, 4, 16, false).save(&wrong).unwrap();
        fails_with(
            &[
                "forward",
                "--preset",
                preset,
                "--random-weights",
                "--random-inputs",
                "--latent",
                "4x8x8",
                "--plan",
                s(&wrong),
            ],
            &["does not fit"],
        );
    }
}

// --------------------------------------------------- generate with presets, plans, direct

fn hunyuan_embeddings(path: &Path) {
    let mut map = TensorMap::default();
    let n = |len: usize, seed: u64| -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    };
    map.insert("prompt_embeds", TensorData::new(n(8 * 32, 1), [1, 8, 32]));
    map.insert(
        "prompt_attention_mask",
        TensorData::new(vec![1i64, 1, 1, 1, 1, 0, 0, 0], [1, 8]),
    );
    map.insert("pooled_prompt_embeds", TensorData::new(n(16, 2), [1, 16]));
    map.write(path).unwrap();
}

/// `generate --preset hunyuan-tiny` with a sparse plan equals `vdit_hunyuan::denoise`
/// with the same model, embeddings, initial latents and plan.
#[test]
fn generate_hunyuan_preset_with_plan_equals_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("emb.safetensors");
    hunyuan_embeddings(&emb);
    let plan_path = tmp.path().join("plan.ron");
    let sparse = plan(4, 4, 16, true);
    sparse.save(&plan_path).unwrap();
    let out = tmp.path().join("out.safetensors");
    xtask(&[
        "generate",
        "--preset",
        "hunyuan-tiny",
        "--random-weights",
        "--embeddings",
        s(&emb),
        "--latent",
        "2x8x8",
        "--steps",
        "2",
        "--seed",
        "3",
        "--plan",
        s(&plan_path),
        "--out",
        s(&out),
        "--quiet",
    ]);
    let got = TensorMap::read(&out).unwrap();
    let got_latents = got.values_f32("latents").unwrap();

    // The same run through the library: the CLI's noise is seeded host normal noise, so
    // start both from the CLI's run with --initial-latents to compare exactly.
    let init = tmp.path().join("init.safetensors");
    let mut m = TensorMap::default();
    let noise: Vec<f32> = (0..16 * 2 * 8 * 8)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    m.insert("latents", TensorData::new(noise, [1, 16, 2, 8, 8]));
    m.write(&init).unwrap();
    let out2 = tmp.path().join("out2.safetensors");
    xtask(&[
        "generate",
        "--preset",
        "hunyuan-tiny",
        "--random-weights",
        "--embeddings",
        s(&emb),
        "--initial-latents",
        s(&init),
        "--latent",
        "2x8x8",
        "--steps",
        "2",
        "--plan",
        s(&plan_path),
        "--out",
        s(&out2),
        "--quiet",
    ]);
    let device = Default::default();
    let model =
        HunyuanVideoTransformer3DModel::<B>::random(&HunyuanConfig::tiny(), 0, DType::F32, &device)
            .unwrap();
    let emb_map = TensorMap::read(&emb).unwrap();
    let prompt = PromptEmbeds::<B>::from_tensor_map(&emb_map, false, DType::F32, &device)
        .unwrap()
        .unwrap();
    let ctx = model.attention_context(2, 8, 8, 8, Some(&sparse)).unwrap();
    let latents: Tensor<B, 5> = TensorMap::read(&init)
        .unwrap()
        .float("latents", DType::F32, &device)
        .unwrap();
    let config = GenerateConfig {
        steps: 2,
        ..Default::default()
    };
    let want =
        vdit_hunyuan::denoise(&model, latents, &prompt, None, &config, &ctx, |_, _| {}).unwrap();
    let got2 = TensorMap::read(&out2)
        .unwrap()
        .values_f32("latents")
        .unwrap();
    let err = rel_l2(&got2, &values(want.clone()));
    assert!(err <= 1e-6, "relative L2 error {err:.3e}");
    // The dense loop differs (the plan is applied).
    let dense_ctx = model.attention_context(2, 8, 8, 8, None).unwrap();
    let latents: Tensor<B, 5> = TensorMap::read(&init)
        .unwrap()
        .float("latents", DType::F32, &device)
        .unwrap();
    let dense = vdit_hunyuan::denoise(
        &model,
        latents,
        &prompt,
        None,
        &config,
        &dense_ctx,
        |_, _| {},
    )
    .unwrap();
    assert!(rel_l2(&got2, &values(dense)) > 1e-4);
    // The seeded-noise run is finite.
    assert!(got_latents.iter().all(|v| v.is_finite()));
}

/// `generate --preset cogvideox-tiny` (DDIM, CFG 6, odd latent frames) with a sparse
/// plan equals `vdit_cogvideox::pipeline::denoise` called directly; random embeddings
/// and seeded noise are deterministic.
#[test]
fn generate_cogvideox_preset_with_plan_equals_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let text: Vec<f32> = (0..8 * 32)
        .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
        .collect();
    let neg: Vec<f32> = text.iter().map(|v| -0.5 * v).collect();
    let mut emb = TensorMap::default();
    emb.insert("prompt_embeds", TensorData::new(text, [1, 8, 32]));
    emb.insert("negative_prompt_embeds", TensorData::new(neg, [1, 8, 32]));
    let emb_path = tmp.path().join("emb.safetensors");
    emb.write(&emb_path).unwrap();
    let noise: Vec<f32> = (0..4 * 16 * 8 * 8)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let mut init = TensorMap::default();
    init.insert("latents", TensorData::new(noise, [1, 4, 16, 8, 8]));
    let init_path = tmp.path().join("init.safetensors");
    init.write(&init_path).unwrap();
    let sparse = plan(2, 4, 16, true);
    let plan_path = tmp.path().join("plan.ron");
    sparse.save(&plan_path).unwrap();
    let out = tmp.path().join("out.safetensors");
    xtask(&[
        "generate",
        "--preset",
        "cogvideox-tiny",
        "--random-weights",
        "--embeddings",
        s(&emb_path),
        "--initial-latents",
        s(&init_path),
        "--sampler",
        "ddim",
        "--latent",
        "3x8x8",
        "--steps",
        "2",
        "--plan",
        s(&plan_path),
        "--out",
        s(&out),
        "--quiet",
    ]);
    let got = TensorMap::read(&out).unwrap();
    assert_eq!(
        got.get("latents_padded").unwrap().shape.as_slice(),
        &[1, 4, 16, 8, 8]
    );
    let model =
        CogVideoXTransformer3DModel::<B>::random(&CogVideoXConfig::tiny(), 0, DType::F32, &device)
            .unwrap();
    let ctx = model.attention_context(4, 8, 8, 8, Some(&sparse)).unwrap();
    let mut sampler = CogVideoXDdim::new(2).unwrap();
    let want = cog_denoise(
        &model,
        &mut sampler,
        init.float("latents", DType::F32, &device).unwrap(),
        emb.float("prompt_embeds", DType::F32, &device).unwrap(),
        Some(
            emb.float("negative_prompt_embeds", DType::F32, &device)
                .unwrap(),
        ),
        Guidance {
            scale: 6.0,
            dynamic: false,
        },
        &ctx,
        &mut |_, _| {},
    )
    .unwrap();
    let err = rel_l2(&got.values_f32("latents_padded").unwrap(), &values(want));
    assert!(err <= 1e-6, "relative L2 error {err:.3e}");

    // Random embeddings, seeded noise and DPM noise: same seed, same latents.
    let random = |name: &str| -> Vec<f32> {
        let out = tmp.path().join(name);
        xtask(&[
            "generate",
            "--preset",
            "cogvideox-tiny",
            "--random-weights",
            "--random-embeddings",
            "--text-len",
            "8",
            "--latent",
            "3x8x8",
            "--steps",
            "2",
            "--seed",
            "5",
            "--out",
            s(&out),
            "--quiet",
        ]);
        let map = TensorMap::read(&out).unwrap();
        assert_eq!(
            map.get("latents").unwrap().shape.as_slice(),
            &[1, 3, 16, 8, 8]
        );
        assert_eq!(map.metadata["sampler"], "dpm");
        map.values_f32("latents").unwrap()
    };
    let a = random("r1.safetensors");
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, random("r2.safetensors"));
}

// ------------------------------------------------------------------------ bad arguments

#[test]
fn bad_latent_sizes_are_clear_errors() {
    let base = ["forward", "--random-weights", "--random-inputs"];
    for (preset, latent, needles) in [
        // CogVideoX: latent H/W not divisible by the 2x2 patch, odd frame count.
        (
            "cogvideox-tiny",
            "4x7x8",
            &["4x7x8", "patch size 2x2x2"][..],
        ),
        (
            "cogvideox-tiny",
            "3x8x8",
            &["patch size 2x2x2", "pads odd latent frame"][..],
        ),
        ("hunyuan-tiny", "3x8x9", &["3x8x9", "patch size 1x2x2"][..]),
        ("wan-tiny", "3x9x8", &["3x9x8"][..]),
    ] {
        let mut args = base.to_vec();
        args.extend(["--preset", preset, "--latent", latent]);
        fails_with(&args, needles);
    }
    fails_with(
        &[
            "forward",
            "--preset",
            "hunyuan-tiny",
            "--random-weights",
            "--random-inputs",
            "--latent",
            "2x8x8",
            "--text-len",
            "8",
            "--valid-text",
            "9",
        ],
        &["--valid-text must be in 1..=8"],
    );
    fails_with(
        &[
            "forward",
            "--preset",
            "hunyuan-13b",
            "--random-weights",
            "--random-inputs",
        ],
        &["unknown preset `hunyuan-13b`", "hunyuan-video"],
    );
    // generate checks the size before it loads anything.
    fails_with(
        &[
            "generate",
            "--preset",
            "cogvideox1.5-5b",
            "--random-weights",
            "--random-embeddings",
            "--height",
            "776",
            "--out",
            "never.safetensors",
        ],
        &["97x170", "patch size 2x2x2"],
    );
}

#[test]
fn bad_generate_arguments_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never.safetensors");
    let out = s(&out);
    let args_for = |preset, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "generate",
            "--preset",
            preset,
            "--random-weights",
            "--random-embeddings",
            "--latent",
            "2x8x8",
            "--steps",
            "1",
            "--out",
            out,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let fails = |args: Vec<String>, needles: &[&str]| {
        fails_with(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            needles,
        )
    };
    // Samplers and guidance options of another model.
    fails(
        args_for("hunyuan-tiny", &["--sampler", "unipc"]),
        &["--sampler unipc does not apply to HunyuanVideo", "euler"],
    );
    fails(
        args_for("cogvideox-tiny", &["--sampler", "euler"]),
        &["--sampler euler does not apply to CogVideoX", "dpm or ddim"],
    );
    fails(
        args_for("cogvideox-tiny", &["--shift", "5"]),
        &["--shift does not apply to CogVideoX"],
    );
    fails(
        args_for("wan-tiny", &["--dynamic-cfg"]),
        &["--dynamic-cfg does not apply to Wan"],
    );
    fails(
        args_for("cogvideox-tiny", &["--true-cfg", "2"]),
        &["--true-cfg does not apply to CogVideoX"],
    );
    fails(
        args_for(
            "cogvideox-tiny",
            &["--sampler", "ddim", "--sampler-noise", "x"],
        ),
        &["--sampler-noise is for CogVideoX's DPM sampler only"],
    );
    // Missing negative embeddings for (true) CFG.
    let emb = tmp.path().join("emb.safetensors");
    hunyuan_embeddings(&emb);
    fails_with(
        &[
            "generate",
            "--preset",
            "hunyuan-tiny",
            "--random-weights",
            "--embeddings",
            s(&emb),
            "--latent",
            "2x8x8",
            "--true-cfg",
            "3",
            "--out",
            out,
        ],
        &["--true-cfg > 1 needs `negative_prompt_embeds`"],
    );
    let pipe = cog_fixture("pipeline_ddim_cfg_even2");
    let mut only_pos = TensorMap::read(&pipe.join("inputs.safetensors")).unwrap();
    only_pos.tensors.retain(|k, _| k == "prompt_embeds");
    let pos = tmp.path().join("pos.safetensors");
    only_pos.write(&pos).unwrap();
    fails_with(
        &[
            "generate",
            "--model-dir",
            s(&pipe),
            "--embeddings",
            s(&pos),
            "--frames",
            "5",
            "--height",
            "32",
            "--width",
            "48",
            "--out",
            out,
        ],
        &["negative_prompt_embeds"],
    );
    // Initial latents of the wrong layout ([B, C, F, H, W] given to CogVideoX).
    let mut init = TensorMap::default();
    init.insert(
        "latents",
        TensorData::new(vec![0f32; 16 * 2 * 8 * 8], [1, 16, 2, 8, 8]),
    );
    let init_path = tmp.path().join("init.safetensors");
    init.write(&init_path).unwrap();
    fails(
        args_for("cogvideox-tiny", &["--initial-latents", s(&init_path)]),
        &["initial latents are [1, 16, 2, 8, 8], expected [1, 2, 16, 8, 8]"],
    );
    assert!(!tmp.path().join("never.safetensors").exists());
}
