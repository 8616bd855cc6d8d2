//! `cargo xtask quality` on the tiny Wan2.1 pipeline with random weights (CPU): an
//! all-dense plan reproduces the dense videos exactly (PSNR = inf, SSIM = 1), a plan with
//! skipped heads gives finite values equal to PSNR / SSIM recomputed from the written
//! frames, the chart is a PNG, and bad outputs are refused before any work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance, VideoLayout};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A plan for `wan-tiny` (2 layers x 4 heads x 32) over `steps` steps; `sparse` skips two
/// heads of layer 0 and gives one a narrow band.
fn plan_file(path: &Path, steps: usize, sparse: bool) {
    let model = ModelInfo {
        id: "wan-tiny".into(),
        config_hash: "none".into(),
        layers: 2,
        heads: 4,
        head_dim: 32,
    };
    let provenance = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-12-02".into(),
        tool_version: "test".into(),
        notes: String::new(),
    };
    let mut plan = Plan::dense(model, VideoLayout::new(2, 4, 4).unwrap(), steps, provenance);
    if sparse {
        plan.ranges[0].layers[0] = vec![
            Pattern::Diagonal { band: 0.1 },
            Pattern::Skip,
            Pattern::Dense,
            Pattern::Skip,
        ];
    }
    plan.save(path).unwrap();
}

fn quality(plan: &Path, out: &Path, frames_dir: Option<&Path>, prompts: &Path) -> Output {
    let mut args = vec![
        "quality",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--plan",
        s(plan),
        "--prompts",
        s(prompts),
        "--steps",
        "3",
        "--frames",
        "5",
        "--height",
        "32",
        "--width",
        "32",
        "--text-len",
        "16",
        "--seed",
        "11",
        "--out",
        s(out),
        "--quiet",
    ];
    if let Some(d) = frames_dir {
        args.extend(["--frames-dir", s(d)]);
    }
    xtask(&args)
}

fn prompts_file(dir: &Path) -> PathBuf {
    let p = dir.join("prompts.txt");
    std::fs::write(
        &p,
        "# two prompts\na red fox in the snow\n\nwaves at sunset\n",
    )
    .unwrap();
    p
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// RGB8 pixels and size of a PNG file.
fn read_png(path: &Path) -> (Vec<u8>, usize, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (buf, info.width as usize, info.height as usize)
}

fn assert_png(path: &Path, w: usize, h: usize) {
    let (_, pw, ph) = read_png(path);
    assert_eq!((pw, ph), (w, h), "{}", path.display());
}

#[test]
fn an_all_dense_plan_reproduces_the_dense_videos_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("dense.ron");
    plan_file(&plan, 3, false);
    let out = tmp.path().join("q.json");
    let run = quality(&plan, &out, None, &prompts_file(tmp.path()));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json = read_json(&out);
    let prompts = json["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0]["prompt"], "a red fox in the snow");
    assert_eq!(prompts[1]["seed"], 12);
    for p in prompts {
        assert_eq!(p["psnr_db"], "inf", "{p}");
        assert_eq!(p["ssim"].as_f64(), Some(1.0), "{p}");
    }
    assert_eq!(json["mean"]["psnr_db"], "inf");
    assert_eq!(json["mean"]["ssim"].as_f64(), Some(1.0));
    assert!(json["lpips"].is_null());
    assert_eq!(json["video"]["frames"], 5);
    let md = std::fs::read_to_string(tmp.path().join("q.md")).unwrap();
    assert!(
        md.contains("| **inf** |") && md.contains("LPIPS: absent"),
        "{md}"
    );
    assert_png(&tmp.path().join("q.png"), 640, 320);
}

#[test]
fn a_sparse_plan_reports_the_psnr_and_ssim_of_its_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("sparse.ron");
    plan_file(&plan, 3, true);
    let out = tmp.path().join("report.json");
    let frames = tmp.path().join("frames");
    let run = quality(&plan, &out, Some(&frames), &prompts_file(tmp.path()));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json = read_json(&out);
    let prompts = json["prompts"].as_array().unwrap();
    let (mut psnr_sum, mut ssim_sum) = (0.0, 0.0);
    for (i, p) in prompts.iter().enumerate() {
        let psnr = p["psnr_db"]
            .as_f64()
            .unwrap_or_else(|| panic!("finite PSNR: {p}"));
        let ssim = p["ssim"].as_f64().unwrap();
        assert!(psnr.is_finite() && psnr > 0.0 && ssim < 1.0, "{p}");
        // Recompute from the written frames: PSNR from its definition, SSIM with the
        // scikit-image-checked `ssim_frame`, both averaged over frames.
        let (mut p_sum, mut s_sum) = (0.0, 0.0);
        for f in 0..5 {
            let name = format!("frame_{f:04}.png");
            let (d, w, h) = read_png(&frames.join(format!("p{i:02}/dense/{name}")));
            let (t, _, _) = read_png(&frames.join(format!("p{i:02}/planned/{name}")));
            assert_eq!((w, h), (32, 32));
            let mse = d
                .iter()
                .zip(&t)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum::<f64>()
                / d.len() as f64;
            p_sum += 10.0 * (255.0f64.powi(2) / mse).log10();
            s_sum += vdit_video::ssim_frame(&d, &t, w, h);
        }
        let (want_p, want_s) = (p_sum / 5.0, s_sum / 5.0);
        assert!(
            (psnr - want_p).abs() <= 1e-9 * want_p.abs(),
            "PSNR {psnr} vs {want_p}"
        );
        assert!((ssim - want_s).abs() <= 1e-12, "SSIM {ssim} vs {want_s}");
        psnr_sum += psnr;
        ssim_sum += ssim;
    }
    let mean = &json["mean"];
    assert!((mean["psnr_db"].as_f64().unwrap() - psnr_sum / 2.0).abs() < 1e-9);
    assert!((mean["ssim"].as_f64().unwrap() - ssim_sum / 2.0).abs() < 1e-12);
    assert_png(&tmp.path().join("report.png"), 640, 320);
}

#[test]
fn quality_refuses_an_output_that_is_an_input_or_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("p.ron");
    plan_file(&plan, 3, false);
    // The prompt file as the JSON report.
    let prompts = tmp.path().join("prompts.json");
    std::fs::write(&prompts, "a fox\n").unwrap();
    let run = quality(&plan, &prompts, None, &prompts);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        err.contains("--prompts") && err.contains("prompts.json"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&prompts).unwrap(), "a fox\n");
    // A folder that does not exist: named, nothing written.
    let out = tmp.path().join("missing/q.json");
    let run = quality(&plan, &out, None, &prompts_file(tmp.path()));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("missing"), "{err}");
    assert!(!tmp.path().join("missing").exists());
    // A plan for another step count.
    let run = xtask(&[
        "quality",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--plan",
        s(&plan),
        "--steps",
        "4",
        "--out",
        s(&tmp.path().join("q.json")),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("--steps 4"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|n| n.starts_with("q.")), "{left:?}");
}
