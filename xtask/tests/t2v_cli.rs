//! Wan2.1 text to video from the command line: `forward` dispatches to the UMT5 encoder
//! and the Wan VAE decoder by config and reproduces their transformers / diffusers
//! fixtures (`tools/fixtures_wan_t2v.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn t2v(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/vdit-wan/tests/fixtures/t2v")
        .join(case)
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn forward_fixture(case: &str, key: &str) {
    let dir = t2v(case);
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
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let err: f64 = stdout
        .split("error vs")
        .nth(1)
        .and_then(|r| r.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no error line in {stdout}"));
    assert!(err <= 1e-4, "{case}: relative L2 error {err:.3e}");
    let map = vdit_models::io::TensorMap::read(&out).unwrap();
    assert!(map.get(key).is_some(), "{case}: no `{key}` in the output");
}

#[test]
fn forward_runs_a_umt5_encoder_folder_by_its_architectures() {
    forward_fixture("umt5_b1_l40_l3_sharded", "last_hidden_state");
}

#[test]
fn forward_runs_a_wan_vae_folder_by_its_class_name() {
    forward_fixture("vae_b2_f2_3x5_mult112", "sample");
}

#[test]
fn forward_on_a_vae_with_wrong_latent_channels_fails_naming_z_dim() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.safetensors");
    let mut map = vdit_models::io::TensorMap::default();
    map.insert(
        "latents",
        burn::tensor::TensorData::new(vec![0f32; 2 * 5 * 2 * 3], [1, 5, 2, 2, 3]),
    );
    map.write(&bad).unwrap();
    let run = xtask(&[
        "forward",
        "--model-dir",
        s(&t2v("vae_b2_f2_3x5_mult112")),
        "--inputs",
        s(&bad),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("z_dim"), "{stderr}");
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
fn generate_with_a_prompt_matches_the_wan_pipeline_frames_and_writes_an_mp4() {
    let fixture_file = t2v("pipeline_tiny.safetensors");
    let fixture = vdit_models::io::TensorMap::read(&fixture_file).unwrap();
    let m = &fixture.metadata;
    let tmp = tempfile::tempdir().unwrap();
    let (mp4, frames, png) = (
        tmp.path().join("video.mp4"),
        tmp.path().join("frames.safetensors"),
        tmp.path().join("png"),
    );
    let run = xtask(&[
        "generate",
        "--model-dir",
        s(&t2v("pipeline_tiny")),
        "--prompt",
        &m["prompt"],
        "--negative-prompt",
        &m["negative_prompt"],
        "--height",
        &m["height"],
        "--width",
        &m["width"],
        "--frames",
        &m["num_frames"],
        "--steps",
        &m["steps"],
        "--guidance",
        &m["guidance"],
        "--text-len",
        &m["max_sequence_length"],
        "--initial-latents",
        s(&fixture_file),
        "--out",
        s(&mp4),
        "--save-frames",
        s(&frames),
        "--png-frames",
        s(&png),
        "--quiet",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = vdit_models::io::TensorMap::read(&frames)
        .unwrap()
        .values_f32("frames")
        .unwrap();
    let want = fixture.values_f32("frames").unwrap();
    let err = rel_l2(&got, &want);
    println!("frames: relative L2 error {err:.3e}");
    assert!(err <= 1e-4, "frames: relative L2 error {err:.3e}");
    let video = vdit_video::read_mp4(&mp4).unwrap();
    assert_eq!((video.frames.len(), video.width, video.height), (5, 48, 32));
    assert_eq!(std::fs::read_dir(&png).unwrap().count(), 5);
}

#[test]
fn generate_wan_tiny_random_weights_writes_a_short_video() {
    let tmp = tempfile::tempdir().unwrap();
    let mp4 = tmp.path().join("tiny.mp4");
    let t = std::time::Instant::now();
    let run = xtask(&[
        "generate",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--prompt",
        "a red fox runs through fresh snow",
        "--steps",
        "4",
        "--out",
        s(&mp4),
        "--quiet",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("wan-tiny prompt to mp4: {:.1}s", t.elapsed().as_secs_f64());
    let video = vdit_video::read_mp4(&mp4).unwrap();
    assert_eq!((video.frames.len(), video.width, video.height), (9, 64, 64));
}

#[test]
fn generate_with_a_prompt_on_an_incomplete_pipeline_names_the_missing_part() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("model_index.json"),
        r#"{"_class_name": "WanPipeline"}"#,
    )
    .unwrap();
    let out = tmp.path().join("v.mp4");
    let run = xtask(&[
        "generate",
        "--model-dir",
        s(tmp.path()),
        "--prompt",
        "x",
        "--out",
        s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("tokenizer"), "{stderr}");
    assert!(!out.exists(), "no partial video");
}

/// A copy of the tiny Wan pipeline fixture under `dir`, to break.
fn pipeline_copy(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let to = dir.join("pipe");
    copy(&t2v("pipeline_tiny"), &to);
    to
}

/// `generate --prompt` on `pipe` (tiny sizes, 2 steps) writing `out`; returns stderr
/// after checking that it failed cleanly and left `out` absent.
fn prompt_fails(pipe: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "generate",
        "--model-dir",
        s(pipe),
        "--prompt",
        "a fox",
        "--frames",
        "5",
        "--height",
        "32",
        "--width",
        "48",
        "--steps",
        "2",
        "--text-len",
        "16",
        "--out",
        s(out),
        "--quiet",
    ];
    args.extend(extra);
    let run = xtask(&args);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "no partial video: {stderr}");
    stderr
}

#[test]
fn a_pipeline_without_a_vae_config_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pipe = pipeline_copy(tmp.path());
    std::fs::remove_file(pipe.join("vae/config.json")).unwrap();
    let err = prompt_fails(&pipe, &tmp.path().join("v.mp4"), &[]);
    assert!(err.contains("vae/config.json"), "{err}");
}

#[test]
fn a_pipeline_of_another_class_names_its_model_index() {
    let tmp = tempfile::tempdir().unwrap();
    let pipe = pipeline_copy(tmp.path());
    std::fs::write(
        pipe.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline"}"#,
    )
    .unwrap();
    let err = prompt_fails(&pipe, &tmp.path().join("v.mp4"), &[]);
    assert!(
        err.contains("model_index.json") && err.contains("StableDiffusionPipeline"),
        "{err}"
    );
}

#[test]
fn a_tokenizer_larger_than_the_encoder_vocabulary_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pipe = pipeline_copy(tmp.path());
    let path = pipe.join("tokenizer/tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The encoder has 80 rows; give the Unigram model 20 more pieces.
    let vocab = tok["model"]["vocab"].as_array_mut().unwrap();
    for i in 0..20 {
        vocab.push(serde_json::json!([format!("extra{i}"), -20.0]));
    }
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    let err = prompt_fails(&pipe, &tmp.path().join("v.mp4"), &[]);
    assert!(
        err.contains("tokenizer.json") && err.contains("do not match"),
        "{err}"
    );
}

#[test]
fn unwritable_video_outputs_fail_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pipe = t2v("pipeline_tiny");
    // A folder that does not exist.
    let err = prompt_fails(&pipe, &tmp.path().join("no/such/v.mp4"), &[]);
    assert!(err.contains("no/such"), "{err}");
    // An existing directory as the video.
    let dir = tmp.path().join("d.mp4");
    std::fs::create_dir(&dir).unwrap();
    let run = xtask(&[
        "generate",
        "--model-dir",
        s(&pipe),
        "--prompt",
        "x",
        "--out",
        s(&dir),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("d.mp4"), "{err}");
    // A PNG folder that is a file: found only when the outputs are written, after the
    // run; neither the video nor the frames file may appear.
    let file = tmp.path().join("png-is-a-file");
    std::fs::write(&file, b"x").unwrap();
    let frames = tmp.path().join("frames.safetensors");
    let out = tmp.path().join("v.mp4");
    let err = prompt_fails(
        &pipe,
        &out,
        &["--png-frames", s(&file), "--save-frames", s(&frames)],
    );
    assert!(err.contains("png-is-a-file"), "{err}");
    assert!(!frames.exists(), "no partial frames file");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|n| n.ends_with(".tmp")), "{left:?}");
}

#[test]
fn forward_on_a_part_refuses_to_overwrite_its_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = t2v("vae_b2_f2_3x5_mult112");
    let inputs = tmp.path().join("in.safetensors");
    std::fs::copy(dir.join("inputs.safetensors"), &inputs).unwrap();
    let before = std::fs::read(&inputs).unwrap();
    let run = xtask(&[
        "forward",
        "--model-dir",
        s(&dir),
        "--inputs",
        s(&inputs),
        "--out",
        s(&inputs),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--inputs") && stderr.contains("same file"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&inputs).unwrap(), before);
}
