//! `cargo xtask bench` denoiser-step section on the CPU at the tiny size: every model
//! of `--models` gets a dense and a plan row (JSON and Markdown), per-model markers go
//! to stderr, and `--plan` picks or checks the model it fits.

use std::path::PathBuf;
use std::process::{Command, Output};

use vdit_patterns::{ModelInfo, Plan, Provenance, VideoLayout};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "bench failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn report(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn plan_file(dir: &std::path::Path, layers: usize, heads: usize, head_dim: usize) -> PathBuf {
    let plan = Plan::dense(
        ModelInfo {
            id: "bench-test".into(),
            config_hash: "none".into(),
            layers,
            heads,
            head_dim,
        },
        VideoLayout::new(2, 4, 4).unwrap(),
        1,
        Provenance {
            weights: "synthetic".into(),
            weights_hash: None,
            synthetic: true,
            date: "2026-11-24".into(),
            tool_version: "test".into(),
            notes: String::new(),
        },
    );
    let path = dir.join(format!("plan_{layers}x{heads}x{head_dim}.ron"));
    plan.save(&path).unwrap();
    path
}

#[test]
fn model_section_times_all_three_models_at_the_tiny_size() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(bench(&[
        "--skip-attention",
        "--models",
        "wan,hunyuan,cogvideox",
        "--size",
        "tiny",
        "--repeats",
        "1",
        "--out",
        tmp.path().to_str().unwrap(),
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Markers in model order, each model ended before the next began.
    let mut last = 0;
    for key in ["wan", "hunyuan", "cogvideox"] {
        for what in ["begin", "end"] {
            let marker = format!("[bench-model] {what} {key} ");
            let at = stderr
                .find(&marker)
                .unwrap_or_else(|| panic!("no `{marker}` in:\n{stderr}"));
            assert!(at >= last, "`{marker}` out of order:\n{stderr}");
            last = at;
        }
    }
    let r = report(tmp.path());
    let rows = r["model"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    // wan: 8x32x32 latent -> 8x16x16 video tokens; hunyuan: + 16 text (suffix);
    // cogvideox: 4x16x16 (temporal patch 2) + 16 text (prefix).
    for (pair, (prefix, tokens)) in
        rows.chunks(2)
            .zip([("wan", 2048), ("hunyuan", 2064), ("cogvideox", 1040)])
    {
        assert_eq!(pair[0]["mode"], "dense");
        assert_eq!(pair[1]["mode"], "plan");
        for row in pair {
            assert!(row["model"].as_str().unwrap().starts_with(prefix), "{row}");
            assert_eq!(row["tokens"], tokens, "{row}");
            assert!(row["ms"].as_f64().unwrap() > 0.0);
            assert!(!row["notes"].as_str().unwrap().is_empty());
        }
        assert_eq!(pair[0]["attention_density"], 1.0);
        let density = pair[1]["attention_density"].as_f64().unwrap();
        assert!(
            density > 0.1 && density < 0.9,
            "{prefix}: density {density}"
        );
        assert_eq!(pair[0]["speedup"], 1.0);
        let speedup = pair[1]["speedup"].as_f64().unwrap();
        let ratio = pair[0]["ms"].as_f64().unwrap() / pair[1]["ms"].as_f64().unwrap();
        assert!((speedup - ratio).abs() < 1e-9);
    }
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    let table: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("tiny"))
        .collect();
    assert_eq!(table.len(), 6, "{md}");
    for line in table {
        // 8 columns: model, tokens, attention, density, ms, speedup, peak reserved, notes.
        assert_eq!(line.matches(" | ").count(), 7, "{line}");
        // The CPU backend has no device allocator, and its Linear is Burn's matmul.
        assert!(line.contains(" | - | "), "{line}");
        assert!(line.contains("Linear: Burn"), "{line}");
    }
}

#[test]
fn plan_option_picks_and_checks_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    // hunyuan tiny: 2 dual + 2 single blocks of 4 heads x 16.
    let hunyuan_plan = plan_file(tmp.path(), 4, 4, 16);
    let dir = tmp.path().join("picked");
    let out = ok(bench(&[
        "--skip-attention",
        "--plan",
        hunyuan_plan.to_str().unwrap(),
        "--repeats",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]));
    let rows = report(&dir)["model"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(rows[0]["model"].as_str().unwrap().starts_with("hunyuan"));
    // An all-dense plan computes every block.
    assert_eq!(rows[1]["attention_density"], 1.0);
    assert!(rows[1]["notes"].as_str().unwrap().contains("given plan"));

    let err = bench(&[
        "--skip-attention",
        "--models",
        "wan",
        "--plan",
        hunyuan_plan.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("--models wan") && msg.contains("does not fit"),
        "{msg}"
    );

    let none = plan_file(tmp.path(), 7, 3, 8);
    let err = bench(&[
        "--skip-attention",
        "--plan",
        none.to_str().unwrap(),
        "--out",
        tmp.path().join("y").to_str().unwrap(),
    ]);
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("fits none of wan, hunyuan, cogvideox"),
        "{msg}"
    );
}

#[test]
fn modes_option_times_one_kind_of_step() {
    let tmp = tempfile::tempdir().unwrap();
    ok(bench(&[
        "--skip-attention",
        "--models",
        "cogvideox",
        "--modes",
        "plan",
        "--repeats",
        "1",
        "--out",
        tmp.path().to_str().unwrap(),
    ]));
    let rows = report(tmp.path())["model"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["mode"], "plan");
    // No dense step in this run: no speedup.
    assert!(rows[0]["speedup"].is_null(), "{}", rows[0]);
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(md.contains("| plan |") && md.contains("| - |"), "{md}");
}
