//! `cargo xtask forward` reproduces a diffusers fixture from the command line, and
//! `cargo xtask generate` runs the denoising loop (an all-dense plan gives the same
//! latents as no plan; a sparse plan runs and differs).

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::TensorData;
use vdit_models::io::TensorMap;
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance, VideoLayout};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixture(case: &str) -> PathBuf {
    root().join("crates/vdit-wan/tests/fixtures").join(case)
}

fn xtask(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        panic!(
            "xtask {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn forward_reproduces_the_sharded_fixture_from_the_command_line() {
    let dir = fixture("b1_f5_8x12_h3d16_sharded");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let run = xtask(&[
        "forward",
        "--model-dir",
        s(&dir),
        "--inputs",
        s(&dir.join("inputs.safetensors")),
        "--out",
        s(&out),
        "--expect",
        s(&dir.join("outputs.safetensors")),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let err: f64 = stdout
        .split("error vs")
        .nth(1)
        .and_then(|r| r.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no error line in {stdout}"));
    assert!(err <= 1e-4, "relative L2 error {err}");
    let written = TensorMap::read(&out).unwrap();
    assert_eq!(
        written.get("sample").unwrap().shape.as_slice(),
        &[1, 4, 5, 8, 12]
    );
}

fn expect_err_line(run: &std::process::Output) -> f64 {
    let stdout = String::from_utf8_lossy(&run.stdout);
    stdout
        .split("error vs")
        .nth(1)
        .and_then(|r| r.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no error line in {stdout}"))
}

#[test]
fn forward_dispatches_hunyuan_and_cogvideox_by_class_name() {
    for dir in [
        root().join("crates/vdit-hunyuan/tests/fixtures/b2_f3_8x12_padded_mask"),
        root().join("crates/vdit-cogvideox/tests/fixtures/b2_f4_8x8_t2even"),
    ] {
        let run = xtask(&[
            "forward",
            "--model-dir",
            s(&dir),
            "--inputs",
            s(&dir.join("inputs.safetensors")),
            "--expect",
            s(&dir.join("outputs.safetensors")),
        ]);
        let err = expect_err_line(&run);
        assert!(err <= 1e-4, "{}: relative L2 error {err}", dir.display());
    }
}

#[test]
fn forward_with_unknown_model_class_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"_class_name":"FluxTransformer2DModel"}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "forward",
            "--model-dir",
            s(tmp.path()),
            "--inputs",
            "x.safetensors",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model class") && err.contains("FluxTransformer2DModel"),
        "{err}"
    );
}

fn embeddings(path: &Path) {
    let inputs = TensorMap::read(&fixture("unit_b1_f2_16x16").join("inputs.safetensors")).unwrap();
    let text = inputs.get("encoder_hidden_states").unwrap().clone();
    let neg: Vec<f32> = text.iter::<f32>().map(|v| -0.5 * v).collect();
    let mut map = TensorMap::default();
    map.insert(
        "negative_prompt_embeds",
        TensorData::new(neg, text.shape.clone()),
    );
    map.insert("prompt_embeds", text);
    map.write(path).unwrap();
}

fn plan_file(path: &Path, sparse: bool) {
    let model = ModelInfo {
        id: "wan-test".into(),
        config_hash: "none".into(),
        layers: 2,
        heads: 2,
        head_dim: 12,
    };
    let provenance = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-11-24".into(),
        tool_version: "test".into(),
        notes: String::new(),
    };
    let mut plan = Plan::dense(model, VideoLayout::new(2, 8, 8).unwrap(), 3, provenance);
    if sparse {
        plan.ranges[0].layers[0] = vec![Pattern::Diagonal { band: 0.1 }, Pattern::Skip];
    }
    plan.save(path).unwrap();
}

fn generate(tmp: &Path, name: &str, plan: Option<&Path>) -> Vec<f32> {
    let out = tmp.join(name);
    let model = fixture("unit_b1_f2_16x16");
    let emb = tmp.join("emb.safetensors");
    let mut args = vec![
        "generate",
        "--model-dir",
        s(&model),
        "--embeddings",
        s(&emb),
        "--out",
        s(&out),
        "--steps",
        "3",
        "--latent",
        "2x16x16",
        "--guidance",
        "4.0",
        "--seed",
        "7",
        "--quiet",
    ];
    if let Some(p) = plan {
        args.extend(["--plan", s(p)]);
    }
    xtask(&args);
    let map = TensorMap::read(&out).unwrap();
    assert_eq!(map.metadata.get("steps").map(String::as_str), Some("3"));
    let lat = map.get("latents").unwrap();
    assert_eq!(lat.shape.as_slice(), &[1, 4, 2, 16, 16]);
    lat.iter::<f32>().collect()
}

#[test]
fn generate_dense_plan_matches_dense_and_sparse_plan_differs() {
    let tmp = tempfile::tempdir().unwrap();
    embeddings(&tmp.path().join("emb.safetensors"));
    let dense = generate(tmp.path(), "dense.safetensors", None);
    assert!(dense.iter().all(|v| v.is_finite()));
    let dense_plan = tmp.path().join("dense.ron");
    plan_file(&dense_plan, false);
    let planned = generate(tmp.path(), "planned.safetensors", Some(&dense_plan));
    let max = dense
        .iter()
        .zip(&planned)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-5, "dense plan changed the latents by {max}");
    let sparse_plan = tmp.path().join("sparse.ron");
    plan_file(&sparse_plan, true);
    let sparse = generate(tmp.path(), "sparse.safetensors", Some(&sparse_plan));
    let max = dense
        .iter()
        .zip(&sparse)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max > 1e-4, "sparse plan should change the latents");
    // Same seed, same result.
    let again = generate(tmp.path(), "again.safetensors", None);
    assert_eq!(dense, again);
}

/// `generate` against diffusers' `WanPipeline` (fixture `pipeline.safetensors`: same
/// model, embeddings and initial latents; UniPC with CFG, and flow Euler without).
#[test]
fn generate_matches_diffusers_wan_pipeline() {
    let fixtures = root().join("crates/vdit-wan/tests/fixtures");
    let pipe = fixtures.join("pipeline.safetensors");
    let want = TensorMap::read(&pipe).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut init = TensorMap::default();
    init.insert("latents", want.get("latents").unwrap().clone());
    let init_path = tmp.path().join("init.safetensors");
    init.write(&init_path).unwrap();
    let model = fixture("unit_b1_f2_16x16");
    for (key, sampler, shift, guidance, steps) in [
        ("unipc_shift3_g5_steps3", "unipc", "3", "5", "3"),
        ("euler_shift7_g1_steps2", "euler", "7", "1", "2"),
    ] {
        let out = tmp.path().join(format!("{key}.safetensors"));
        xtask(&[
            "generate",
            "--model-dir",
            s(&model),
            "--embeddings",
            s(&pipe),
            "--initial-latents",
            s(&init_path),
            "--out",
            s(&out),
            "--sampler",
            sampler,
            "--shift",
            shift,
            "--guidance",
            guidance,
            "--steps",
            steps,
            "--latent",
            "2x16x16",
            "--quiet",
        ]);
        let got: Vec<f32> = TensorMap::read(&out)
            .unwrap()
            .values_f32("latents")
            .unwrap();
        let exp: Vec<f32> = want.values_f32(key).unwrap();
        let num: f64 = got
            .iter()
            .zip(&exp)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = exp.iter().map(|b| (*b as f64).powi(2)).sum();
        let err = (num / den).sqrt();
        assert!(err <= 1e-4, "{key}: relative L2 error {err:.3e}");
    }
}
