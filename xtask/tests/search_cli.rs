//! `cargo xtask search` from the command line: capture files in, plan and report out;
//! bad input fails with a clear message and writes nothing.

use std::path::Path;
use std::process::Command;

use vdit_search::{CaptureDtype, CaptureMeta, PlantedModel, write_capture_file};

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("search")
        .args(args)
        .output()
        .expect("runs xtask")
}

fn small_capture(dir: &Path) -> std::path::PathBuf {
    let mut m = PlantedModel::tiny_wan();
    m.layers = 1;
    let path = dir.join("c.safetensors");
    let qkv = m.generate(0, 3, 0);
    let meta = CaptureMeta {
        layout: m.layout,
        model: "cli-test".into(),
    };
    write_capture_file(&path, &meta, [(3, 0, &qkv)], CaptureDtype::F16).unwrap();
    path
}

#[test]
fn search_on_a_capture_file_writes_plan_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let capture = small_capture(dir.path());
    let (plan, report) = (dir.path().join("p.ron"), dir.path().join("r.json"));
    let out = xtask(&[
        "--captures",
        capture.to_str().unwrap(),
        "--out",
        plan.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = vdit_patterns::Plan::load(&plan).unwrap();
    assert_eq!(plan.model.id, "cli-test");
    assert_eq!(plan.total_steps, 4);
    assert!(!plan.provenance.synthetic);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(json["decisions"].as_array().unwrap().len(), 10);
    assert!(json["totals"]["predicted_speedup"].as_f64().unwrap() >= 1.0);

    // The plan evaluates on its own captures; a plan for another model is rejected.
    let plan_path = dir.path().join("p.ron");
    let out = xtask(&[
        "--evaluate",
        plan_path.to_str().unwrap(),
        "--captures",
        capture.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 heads evaluated"));
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plans/planted-tiny-wan2.1.plan.ron");
    let out = xtask(&[
        "--evaluate",
        shipped.to_str().unwrap(),
        "--captures",
        capture.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.layers") && err.contains("plan has 4"),
        "{err}"
    );
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let capture = small_capture(dir.path());
    let plan = dir.path().join("p.ron");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--captures", capture.to_str().unwrap(), "--epsilon", "-1"],
            "epsilon",
        ),
        (
            vec![
                "--captures",
                capture.to_str().unwrap(),
                "--target-speedup",
                "1000",
            ],
            "not reachable",
        ),
        (
            vec!["--captures", capture.to_str().unwrap(), "--ranges", "2"],
            "ranges",
        ),
        (
            vec!["--captures", "/nonexistent/c.safetensors"],
            "/nonexistent/c.safetensors",
        ),
    ];
    for (args, needle) in cases {
        let mut all = args.clone();
        all.extend(["--out", plan.to_str().unwrap(), "--quiet"]);
        let out = xtask(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!plan.exists(), "{args:?} left a plan behind");
    }
}

#[test]
fn model_driven_search_through_a_diffusers_directory() {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/vdit-wan/tests/fixtures/b2_f3_12x20_nonsquare");
    let (plan, report) = (dir.path().join("p.ron"), dir.path().join("r.json"));
    let common = [
        "--model-dir",
        model.to_str().unwrap(),
        "--schedule-steps",
        "4",
        "--ranges",
        "2",
        "--seeds",
        "0,1",
        "--epsilon",
        "0.3",
        "--out",
        plan.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--quiet",
    ];
    let mut args = common.to_vec();
    args.extend([
        "--latent",
        "3x12x20",
        "--measure-attention",
        "--measure-repeats",
        "1",
    ]);
    let out = xtask(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = vdit_patterns::Plan::load(&plan).unwrap();
    p.check_model(2, 2, 12).unwrap();
    assert_eq!(
        (p.layout.frames, p.layout.height, p.layout.width),
        (3, 6, 10)
    );
    assert_eq!(p.ranges.len(), 2);
    assert!(
        p.provenance.notes.contains("propagated"),
        "{}",
        p.provenance.notes
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["samples"], 2);
    assert_eq!(r["captured_steps"], serde_json::json!([1, 3]));
    assert!(!r["decisions"].as_array().unwrap().is_empty());
    let m = &r["extra"]["measured_attention"];
    assert!(m["dense_ms"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["plan_ms"].as_f64().unwrap() > 0.0, "{m}");

    // A latent the patch size does not divide fails clearly and writes nothing.
    std::fs::remove_file(&plan).unwrap();
    let mut args = common.to_vec();
    args.extend(["--latent", "3x13x20"]);
    let out = xtask(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("13"), "{err}");
    assert!(!plan.exists());
}

#[test]
fn model_driven_search_runs_hunyuan_and_cogvideox() {
    let dir = tempfile::tempdir().unwrap();
    for (preset, latent, sampler) in [
        ("hunyuan-tiny", "2x24x24", "flow Euler shift 7"),
        ("cogvideox-tiny", "4x24x24", "CogVideoX DDIM"),
    ] {
        let plan = dir.path().join(format!("{preset}.ron"));
        let out = xtask(&[
            "--preset",
            preset,
            "--latent",
            latent,
            "--text-len",
            "16",
            "--schedule-steps",
            "4",
            "--seeds",
            "3",
            "--epsilon",
            "0.3",
            "--out",
            plan.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(
            out.status.success(),
            "{preset}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = vdit_patterns::Plan::load(&plan).unwrap();
        assert_eq!(p.layout.text, 16, "{preset}");
        assert!(
            p.provenance.notes.contains(sampler),
            "{}",
            p.provenance.notes
        );
        assert!(
            p.ranges[0]
                .layers
                .iter()
                .flatten()
                .any(|x| *x != vdit_patterns::Pattern::Dense),
            "{preset}: expected some sparse decisions at epsilon 0.3"
        );
    }
    // HunyuanVideo needs its mask and pooled text: a text file alone is refused.
    let out = xtask(&[
        "--preset",
        "hunyuan-tiny",
        "--latent",
        "2x24x24",
        "--text",
        "/nonexistent.safetensors",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HunyuanVideo"));
}

#[test]
fn phase_times_are_printed_and_traced_per_layer_with_vv() {
    let dir = tempfile::tempdir().unwrap();
    let capture = small_capture(dir.path());
    let plan = dir.path().join("p.ron");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--captures",
            capture.to_str().unwrap(),
            "--out",
            plan.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let out = xtask(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (stdout, stderr) = run(&[]);
    assert!(stdout.contains("search time by phase: q/k/v "), "{stdout}");
    assert!(!stderr.contains("vdit_search::phases"), "{stderr}");
    let (_, stderr) = run(&["-vv"]);
    assert!(
        stderr.contains("vdit_search::phases")
            && stderr.contains("layer 0")
            && stderr.contains("errors: layer runs"),
        "{stderr}"
    );
}
