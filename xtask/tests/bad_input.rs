//! Bad input and faults (issue #18), one regression test per defect class found by the
//! probe, plus bounded fuzz tests of the capture reader, the config readers, the shard
//! index and the numeric command-line arguments. No test here may panic the tool: every
//! bad input must end in `error: ...` (exit 1) or a clap usage error (exit 2).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::{Distribution, Tensor, TensorData};
use proptest::prelude::*;
use vdit_models::io::TensorMap;
use vdit_patterns::{ModelInfo, Pattern, Plan, Provenance};
use vdit_search::{CaptureDtype, CaptureMeta, LayerQkv, PlantedModel, write_capture_file};

type Cpu = burn::backend::Flex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wan_fixture(case: &str) -> PathBuf {
    root().join("crates/vdit-wan/tests/fixtures").join(case)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("runs xtask")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed with an `error:` message (exit 1), not a panic or abort; returns
/// stderr.
fn fails_cleanly(args: &[&str]) -> String {
    let o = xtask(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "xtask {args:?}: {err}");
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "xtask {args:?}: {err}"
    );
    assert!(!err.contains("panicked"), "xtask {args:?}: {err}");
    err
}

fn tiny_capture(path: &Path, model: &str, edit: impl Fn(&mut LayerQkv)) {
    let mut m = PlantedModel::tiny_wan();
    m.layers = 1;
    let mut qkv = m.generate(0, 3, 0);
    edit(&mut qkv);
    let meta = CaptureMeta {
        layout: m.layout,
        model: model.into(),
    };
    write_capture_file(path, &meta, [(3, 0, &qkv)], CaptureDtype::F32).unwrap();
}

fn wan_fixture_plan(steps: usize) -> Plan {
    // b2_f3_12x20_nonsquare: 2 layers x 2 heads x 12, latent 3x12x20, patch 1x2x2.
    let layout = vdit_patterns::VideoLayout::new(3, 6, 10).unwrap();
    let model = ModelInfo {
        id: "wan-fixture".into(),
        config_hash: "none".into(),
        layers: 2,
        heads: 2,
        head_dim: 12,
    };
    let provenance = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-12-02".into(),
        tool_version: "test".into(),
        notes: String::new(),
    };
    Plan::dense(model, layout, steps, provenance)
}

// ---------------------------------------------------------------- 1. panics

#[test]
fn forward_with_zero_text_tokens_is_an_error() {
    for dir in [
        wan_fixture("b2_f3_12x20_nonsquare"),
        root().join("crates/vdit-hunyuan/tests/fixtures/b2_f3_8x12_padded_mask"),
        root().join("crates/vdit-cogvideox/tests/fixtures/b2_f4_8x8_t2even"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut inputs = TensorMap::read(&dir.join("inputs.safetensors")).unwrap();
        let text = inputs.get("encoder_hidden_states").unwrap().clone();
        let (b, d) = (text.shape[0], text.shape[2]);
        inputs.insert(
            "encoder_hidden_states",
            TensorData::new(Vec::<f32>::new(), [b, 0, d]),
        );
        if inputs.get("encoder_attention_mask").is_some() {
            inputs.insert(
                "encoder_attention_mask",
                TensorData::new(Vec::<i64>::new(), [b, 0]),
            );
        }
        let path = tmp.path().join("in.safetensors");
        inputs.write(&path).unwrap();
        let err = fails_cleanly(&["forward", "--model-dir", s(&dir), "--inputs", s(&path)]);
        assert!(
            err.contains("0 text tokens")
                || err.contains("at least one text token")
                || err.contains("L>0"),
            "{}: {err}",
            dir.display()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 50, ..ProptestConfig::default() })]

    /// The safetensors reader of `--inputs` on mutated files: an error or tensors,
    /// never a panic.
    #[test]
    fn inputs_reader_survives_mutated_files(
        edits in prop::collection::vec((0usize..2048, any::<u8>()), 1..6),
        cut in prop::option::of(0usize..30_000),
    ) {
        let src = wan_fixture("b2_f3_12x20_nonsquare").join("inputs.safetensors");
        let mut bytes = std::fs::read(src).unwrap();
        let head = bytes.len().min(2048);
        flip(&mut bytes[..head], &edits);
        if let Some(c) = cut {
            bytes.truncate(c.min(bytes.len()));
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("in.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(m) = TensorMap::read(&p) {
            for name in ["hidden_states", "timestep", "encoder_hidden_states"] {
                let _ = m.values_f32(name);
            }
        }
    }
}

#[test]
fn step_counts_near_the_integer_limit_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("l.safetensors");
    for steps in [
        "18446744073709551615",
        "18446744073709551000",
        "1000000000",
        "0",
    ] {
        let err = fails_cleanly(&[
            "generate",
            "--preset",
            "wan-tiny",
            "--random-weights",
            "--random-embeddings",
            "--latent",
            "1x4x4",
            "--out",
            s(&out),
            "--steps",
            steps,
            "--quiet",
        ]);
        assert!(err.contains("1..=10000"), "{steps}: {err}");
        let err = fails_cleanly(&[
            "search",
            "--preset",
            "wan-tiny",
            "--latent",
            "1x4x4",
            "--schedule-steps",
            steps,
            "--out",
            s(&tmp.path().join("p.ron")),
            "--quiet",
        ]);
        assert!(err.contains("1..=10000"), "{steps}: {err}");
    }
    assert!(!out.exists());
    // The samplers themselves refuse such schedules (library users).
    use vdit_models::samplers::{FlowMatchEuler, UniPcFlow};
    assert!(FlowMatchEuler::new(usize::MAX, 3.0).is_err());
    assert!(FlowMatchEuler::new(1_000_000_000, 3.0).is_err());
    assert!(UniPcFlow::<Cpu>::new(usize::MAX, 3.0).is_err());
    assert!(FlowMatchEuler::new(50, f64::NAN).is_err());
    assert!(FlowMatchEuler::new(50, 3.0).is_ok());
}

#[test]
fn search_schedule_limits_are_checked_arithmetic() {
    // A capture that claims step 10^12 and a --total-steps beyond the limit.
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |_| {});
    let err = fails_cleanly(&[
        "search",
        "--captures",
        s(&c),
        "--total-steps",
        "18446744073709551615",
        "--out",
        s(&tmp.path().join("p.ron")),
        "--quiet",
    ]);
    assert!(err.contains("--total-steps"), "{err}");
    let opts = vdit_search::SearchOptions {
        ranges: usize::MAX,
        ..Default::default()
    };
    assert!(opts.validate().is_err());
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_backend_that_is_not_compiled_in_is_an_error() {
    let err = fails_cleanly(&[
        "forward",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--random-inputs",
        "--backend",
        "cuda",
    ]);
    assert!(err.contains("not compiled in"), "{err}");
}

// ------------------------------------------------ 2. memory exhaustion, limits

#[test]
fn endless_or_huge_text_inputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.safetensors");
    if Path::new("/dev/zero").exists() {
        let err = fails_cleanly(&[
            "forward",
            "--preset",
            "wan-tiny",
            "--random-weights",
            "--random-inputs",
            "--latent",
            "1x4x4",
            "--plan",
            "/dev/zero",
            "--out",
            s(&out),
        ]);
        assert!(err.contains("limit"), "{err}");
        // A config.json that never ends.
        let model = tmp.path().join("model");
        std::fs::create_dir(&model).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/dev/zero", model.join("config.json")).unwrap();
        #[cfg(unix)]
        {
            let err = fails_cleanly(&["forward", "--model-dir", s(&model), "--random-inputs"]);
            assert!(err.contains("limit"), "{err}");
        }
    }
}

#[test]
fn thread_counts_beyond_the_machine_are_refused_at_once() {
    let t = std::time::Instant::now();
    let err = fails_cleanly(&["search", "--threads", "100000", "--quiet"]);
    assert!(err.contains("--threads 100000"), "{err}");
    let err = fails_cleanly(&["search", "--threads", "0", "--quiet"]);
    assert!(err.contains("--threads 0"), "{err}");
    assert!(t.elapsed().as_secs() < 30);
}

#[test]
fn latents_larger_than_memory_are_refused_before_allocation() {
    let err = fails_cleanly(&[
        "forward",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--random-inputs",
        "--latent",
        "2000x2000x2000",
        "--batch",
        "1000",
    ]);
    // 16 channels x 8e9 latent values x 1000: petabytes, refused before allocating.
    assert!(err.contains("GiB") && err.contains("--latent"), "{err}");
}

// ----------------------------------------------------- 3. silent wrong results

/// `[1, heads, tokens, d]` random q, k, v on the CPU.
fn qkv(heads: usize, tokens: usize, d: usize) -> [Tensor<Cpu, 4>; 3] {
    let dev = Default::default();
    let t = || Tensor::<Cpu, 4>::random([1, heads, tokens, d], Distribution::Default, &dev);
    [t(), t(), t()]
}

fn set(t: Tensor<Cpu, 4>, at: [usize; 4], value: f32) -> Tensor<Cpu, 4> {
    let dims = t.dims();
    let mut v = t.into_data().to_vec::<f32>().unwrap();
    let i = ((at[0] * dims[1] + at[1]) * dims[2] + at[2]) * dims[3] + at[3];
    v[i] = value;
    Tensor::from_data(TensorData::new(v, dims), &Default::default())
}

fn values(t: Tensor<Cpu, 4>) -> (Vec<f32>, [usize; 4]) {
    let dims = t.dims();
    (t.into_data().to_vec::<f32>().unwrap(), dims)
}

#[test]
fn cpu_attention_propagates_nan_like_pytorch() {
    use vdit_attention::{AttentionOptions, PreparedLayer, attention};
    let layout = vdit_patterns::VideoLayout::new(2, 4, 5).unwrap();
    let (h, n, d) = (2, layout.total_tokens(), 8);
    let layers = [
        None,
        Some(PreparedLayer::new(&[Pattern::Dense, Pattern::Dense], &layout, 64).unwrap()),
    ];
    for layer in &layers {
        let run = |q, k, v| {
            values(
                attention(
                    q,
                    k,
                    v,
                    layer.as_ref(),
                    &layout,
                    &AttentionOptions::default(),
                )
                .unwrap()
                .output,
            )
        };
        // NaN in q (head 0, token 3): that row is NaN, every other output is finite.
        let [q, k, v] = qkv(h, n, d);
        let (out, _) = run(set(q, [0, 0, 3, 2], f32::NAN), k, v);
        for (i, x) in out.iter().enumerate() {
            let (head, tok) = (i / (n * d), (i / d) % n);
            assert_eq!(
                x.is_nan(),
                head == 0 && tok == 3,
                "q NaN: {i} = {x} ({layer:?})"
            );
        }
        // NaN in k (head 1): every row of head 1 is NaN (the key's score is NaN in
        // every row), head 0 is finite.
        let [q, k, v] = qkv(h, n, d);
        let (out, _) = run(q, set(k, [0, 1, 7, 0], f32::NAN), v);
        for (i, x) in out.iter().enumerate() {
            assert_eq!(x.is_nan(), i / (n * d) == 1, "k NaN: {i} = {x}");
        }
        // NaN in v (head 0, channel 5): channel 5 of every row of head 0.
        let [q, k, v] = qkv(h, n, d);
        let (out, _) = run(q, k, set(v, [0, 0, 11, 5], f32::NAN));
        for (i, x) in out.iter().enumerate() {
            assert_eq!(
                x.is_nan(),
                i / (n * d) == 0 && i % d == 5,
                "v NaN: {i} = {x}"
            );
        }
    }
    // A sparse head with a NaN query row: its row is NaN too (not zero).
    let layer = PreparedLayer::new(
        &[Pattern::Diagonal { band: 0.5 }, Pattern::Skip],
        &layout,
        64,
    )
    .unwrap();
    let [q, k, v] = qkv(h, n, d);
    let (out, _) = values(
        attention(
            set(q, [0, 0, 4, 0], f32::NAN),
            k,
            v,
            Some(&layer),
            &layout,
            &AttentionOptions::default(),
        )
        .unwrap()
        .output,
    );
    assert!(out[4 * d..5 * d].iter().all(|x| x.is_nan()));
    assert!(out[..4 * d].iter().all(|x| x.is_finite()));
}

#[test]
fn nan_weights_give_a_nan_output_not_a_finite_wrong_one() {
    let src = wan_fixture("b2_f3_12x20_nonsquare");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(src.join("config.json"), model.join("config.json")).unwrap();
    let mut w = TensorMap::read(&src.join("diffusion_pytorch_model.safetensors")).unwrap();
    let key = "blocks.0.attn1.norm_q.weight";
    let t = w.get(key).unwrap().clone();
    let mut v = t.to_vec::<f32>().unwrap();
    v[0] = f32::NAN;
    w.insert(key, TensorData::new(v, t.shape.clone()));
    w.write(&model.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    let out = tmp.path().join("out.safetensors");
    let o = xtask(&[
        "forward",
        "--model-dir",
        s(&model),
        "--inputs",
        s(&src.join("inputs.safetensors")),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sample = TensorMap::read(&out).unwrap().values_f32("sample").unwrap();
    // PyTorch: the NaN reaches every query row of that block, hence every output.
    assert!(sample.iter().all(|x| x.is_nan()), "NaN vanished");
}

#[test]
fn overflowing_logits_are_an_error_not_an_all_skip_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    // Finite q and k whose scaled dot products overflow f32.
    tiny_capture(&c, "m", |qkv| {
        qkv.q.iter_mut().for_each(|x| *x *= 1e20);
        qkv.k.iter_mut().for_each(|x| *x *= 1e20);
    });
    let plan = tmp.path().join("p.ron");
    let err = fails_cleanly(&["search", "--captures", s(&c), "--out", s(&plan), "--quiet"]);
    assert!(err.contains("overflow") && err.contains("layer 0"), "{err}");
    assert!(!plan.exists());
    // --evaluate of a plan on such captures fails too (no "worst error 0").
    let good = tmp.path().join("good.safetensors");
    tiny_capture(&good, "m", |_| {});
    let o = xtask(&[
        "search",
        "--captures",
        s(&good),
        "--out",
        s(&plan),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = fails_cleanly(&["search", "--evaluate", s(&plan), "--captures", s(&c)]);
    assert!(err.contains("overflow"), "{err}");
}

#[test]
fn a_plan_for_another_step_count_is_refused() {
    let dir = wan_fixture("b2_f3_12x20_nonsquare");
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("p.ron");
    wan_fixture_plan(4).save(&plan).unwrap();
    let text = TensorMap::read(&dir.join("inputs.safetensors")).unwrap();
    let mut emb = TensorMap::default();
    let t = text.get("encoder_hidden_states").unwrap().clone();
    let first: Vec<f32> = t.to_vec::<f32>().unwrap()[..t.shape[1] * t.shape[2]].to_vec();
    emb.insert(
        "prompt_embeds",
        TensorData::new(first, [1, t.shape[1], t.shape[2]]),
    );
    let e = tmp.path().join("e.safetensors");
    emb.write(&e).unwrap();
    let out = tmp.path().join("l.safetensors");
    let args = |steps: &'static str| {
        vec![
            "generate".to_string(),
            "--model-dir".into(),
            s(&dir).into(),
            "--embeddings".into(),
            s(&e).into(),
            "--guidance".into(),
            "1".into(),
            "--latent".into(),
            "3x12x20".into(),
            "--plan".into(),
            s(&plan).into(),
            "--steps".into(),
            steps.into(),
            "--out".into(),
            s(&out).into(),
            "--quiet".into(),
        ]
    };
    let a50 = args("50");
    let err = fails_cleanly(&a50.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("4-step") && err.contains("50"), "{err}");
    assert!(!out.exists());
    // --evaluate on captures of steps the plan does not cover.
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |_| {});
    let m = PlantedModel::tiny_wan();
    let mut short = Plan::dense(
        ModelInfo {
            id: "m".into(),
            config_hash: "none".into(),
            layers: 1,
            heads: m.heads,
            head_dim: m.head_dim,
        },
        m.layout,
        2,
        wan_fixture_plan(1).provenance,
    );
    short.ranges[0].layers = vec![vec![Pattern::Skip; m.heads]];
    let short_path = tmp.path().join("short.ron");
    short.save(&short_path).unwrap();
    let err = fails_cleanly(&["search", "--evaluate", s(&short_path), "--captures", s(&c)]);
    assert!(err.contains("step 3") && err.contains("2-step"), "{err}");
    let a4 = args("4");
    let o = xtask(&a4.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn library_pipelines_refuse_plans_for_other_step_counts() {
    use burn::tensor::{Bool, DType};
    use vdit_hunyuan::{
        GenerateConfig, HunyuanConfig, HunyuanVideoTransformer3DModel, PromptEmbeds, denoise,
    };
    let dev = Default::default();
    let c = HunyuanConfig::tiny();
    let model = HunyuanVideoTransformer3DModel::<Cpu>::random(&c, 0, DType::F32, &dev).unwrap();
    let (f, h, w, l) = (2, 8, 8, 8);
    let mut plan = wan_fixture_plan(4);
    plan.model.layers = c.attention_layers();
    plan.model.heads = c.heads;
    plan.model.head_dim = c.head_dim;
    plan.ranges[0].layers = vec![vec![Pattern::Dense; c.heads]; c.attention_layers()];
    let ctx = model.attention_context(f, h, w, l, Some(&plan)).unwrap();
    let prompt = PromptEmbeds::<Cpu> {
        prompt_embeds: Tensor::random([1, l, c.text_dim], Distribution::Default, &dev),
        prompt_attention_mask: Tensor::<Cpu, 2, Bool>::from_data(
            TensorData::new(vec![true; l], [1, l]),
            &dev,
        ),
        pooled_prompt_embeds: Tensor::random([1, c.pooled_dim], Distribution::Default, &dev),
    };
    let latents = Tensor::random([1, c.in_channels, f, h, w], Distribution::Default, &dev);
    let run = |steps| {
        let config = GenerateConfig {
            steps,
            ..Default::default()
        };
        denoise(
            &model,
            latents.clone(),
            &prompt,
            None,
            &config,
            &ctx,
            |_, _| {},
        )
    };
    let e = run(2).unwrap_err().to_string();
    assert!(e.contains("4-step") && e.contains("2 steps"), "{e}");
    let e = run(usize::MAX).unwrap_err().to_string();
    assert!(e.contains("1..=10000"), "{e}");
}

#[test]
fn captures_of_different_models_are_not_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        tmp.path().join("a.safetensors"),
        tmp.path().join("b.safetensors"),
    );
    tiny_capture(&a, "model-a", |_| {});
    tiny_capture(&b, "model-b", |_| {});
    let err = fails_cleanly(&[
        "search",
        "--captures",
        s(&a),
        s(&b),
        "--out",
        s(&tmp.path().join("p.ron")),
        "--quiet",
    ]);
    assert!(err.contains("model") && err.contains("model-b"), "{err}");
}

#[test]
fn an_all_skip_plan_does_not_print_an_infinite_speedup() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |_| {});
    let m = PlantedModel::tiny_wan();
    let mut plan = Plan::dense(
        ModelInfo {
            id: "m".into(),
            config_hash: "none".into(),
            layers: 1,
            heads: m.heads,
            head_dim: m.head_dim,
        },
        m.layout,
        4,
        wan_fixture_plan(1).provenance,
    );
    plan.ranges[0].layers = vec![vec![Pattern::Skip; m.heads]];
    let path = tmp.path().join("skip.ron");
    plan.save(&path).unwrap();
    let o = xtask(&["search", "--evaluate", s(&path), "--captures", s(&c)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.contains("infx") && !out.contains("NaNx"), "{out}");
    assert!(out.contains("unbounded"), "{out}");
}

// ------------------------------------------------------------- 4. files lost

#[test]
fn a_failed_search_keeps_the_previous_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |_| {});
    let plan = tmp.path().join("p.ron");
    std::fs::write(&plan, "previous plan").unwrap();
    // The report cannot be written (its directory is missing; or it is a directory).
    for report in [tmp.path().join("missing/r.json"), tmp.path().to_path_buf()] {
        fails_cleanly(&[
            "search",
            "--captures",
            s(&c),
            "--out",
            s(&plan),
            "--report",
            s(&report),
            "--quiet",
        ]);
        assert_eq!(std::fs::read_to_string(&plan).unwrap(), "previous plan");
    }
    assert!(!tmp.path().join("missing").exists());
}

#[test]
fn a_failed_forward_writes_none_of_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (saved, out) = (
        tmp.path().join("in.safetensors"),
        tmp.path().join("out.safetensors"),
    );
    // The run fails after the forward (the --expect file is missing): neither the saved
    // inputs nor the output may appear.
    fails_cleanly(&[
        "forward",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--random-inputs",
        "--latent",
        "1x4x4",
        "--save-inputs",
        s(&saved),
        "--out",
        s(&out),
        "--expect",
        s(&tmp.path().join("missing.safetensors")),
    ]);
    assert!(!saved.exists() && !out.exists());
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(names.is_empty(), "temporaries left: {names:?}");
    // --save-inputs equal to --out is refused.
    let err = fails_cleanly(&[
        "forward",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--random-inputs",
        "--latent",
        "1x4x4",
        "--save-inputs",
        s(&out),
        "--out",
        s(&out),
    ]);
    assert!(err.contains("same file"), "{err}");
}

#[test]
fn an_output_equal_to_an_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |_| {});
    let before = std::fs::read(&c).unwrap();
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let dotted = sub.join("../c.safetensors");
    let plan = tmp.path().join("p.ron");
    for args in [
        vec![
            "search",
            "--captures",
            s(&c),
            "--out",
            s(&dotted),
            "--quiet",
        ],
        vec![
            "search",
            "--captures",
            s(&c),
            "--out",
            s(&plan),
            "--report",
            s(&plan),
        ],
        vec![
            "search",
            "--captures",
            s(&c),
            "--out",
            s(&plan),
            "--report",
            s(&c),
        ],
    ] {
        let err = fails_cleanly(&args);
        assert!(err.contains("same file"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&c).unwrap(), before);
    assert!(!plan.exists());

    let dir = wan_fixture("b2_f3_12x20_nonsquare");
    let inputs = tmp.path().join("in.safetensors");
    std::fs::copy(dir.join("inputs.safetensors"), &inputs).unwrap();
    let before = std::fs::read(&inputs).unwrap();
    let hard = tmp.path().join("hard.safetensors");
    std::fs::hard_link(&inputs, &hard).unwrap();
    for out in [&inputs, &hard] {
        let err = fails_cleanly(&[
            "forward",
            "--model-dir",
            s(&dir),
            "--inputs",
            s(&inputs),
            "--out",
            s(out),
        ]);
        assert!(err.contains("--out") && err.contains("--inputs"), "{err}");
    }
    let err = fails_cleanly(&[
        "forward",
        "--model-dir",
        s(&dir),
        "--inputs",
        s(&inputs),
        "--out",
        s(&dir.join("diffusion_pytorch_model.safetensors")),
    ]);
    assert!(err.contains("same file"), "{err}");
    assert_eq!(std::fs::read(&inputs).unwrap(), before);
}

// ------------------------------------------------------- 5. work before checks

#[test]
fn missing_output_directories_fail_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("no/dir/latents.safetensors");
    let t = std::time::Instant::now();
    let err = fails_cleanly(&[
        "generate",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--random-embeddings",
        "--latent",
        "1x4x4",
        "--steps",
        "10000",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("steps in"), "{err}");
    assert!(t.elapsed().as_secs() < 30, "ran the steps first");
    let err = fails_cleanly(&[
        "forward",
        "--preset",
        "wan-tiny",
        "--random-weights",
        "--random-inputs",
        "--latent",
        "1x4x4",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("does not exist") && !err.contains("forward:"),
        "{err}"
    );
    // search creates no directories on the command line's behalf.
    let err = fails_cleanly(&["search", "--out", s(&out), "--quiet"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!tmp.path().join("no").exists());
}

// ------------------------------------------------------------------ 6. paths

#[test]
fn shard_index_entries_cannot_leave_the_model_directory() {
    let src = wan_fixture("b1_f5_8x12_h3d16_sharded");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, model.join(p.file_name().unwrap())).unwrap();
    }
    let index = model.join(vdit_models::safetensors_file::WEIGHTS_INDEX_NAME);
    let text = std::fs::read_to_string(&index).unwrap();
    for evil in [
        "../../../../etc/passwd",
        "/etc/passwd",
        "sub/x.safetensors",
        "..",
    ] {
        let bad = text.replacen(
            "diffusion_pytorch_model-00001-of-00011.safetensors",
            evil,
            1,
        );
        std::fs::write(&index, bad).unwrap();
        let e = vdit_models::safetensors_file::SafetensorsFiles::open_model_dir(&model)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plain file names") && e.contains(evil),
            "{evil}: {e}"
        );
    }
}

// ---------------------------------------------------------- 7. clear messages

#[test]
fn zero_heads_are_reported_as_zero_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(wan_fixture("b2_f3_12x20_nonsquare").join("config.json"))
        .unwrap()
        .replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 0");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let err = fails_cleanly(&["forward", "--model-dir", s(tmp.path()), "--random-inputs"]);
    assert!(
        err.contains("num_attention_heads must be at least 1"),
        "{err}"
    );
    assert!(!err.contains("attention_head_dim"), "{err}");
}

#[test]
fn a_directory_as_captures_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails_cleanly(&["search", "--captures", s(tmp.path()), "--quiet"]);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!err.contains("No such device"), "{err}");
}

#[test]
fn a_nan_in_a_capture_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |qkv| qkv.k[5] = f32::NAN);
    let err = fails_cleanly(&[
        "search",
        "--captures",
        s(&c),
        "--out",
        s(&tmp.path().join("p.ron")),
        "--quiet",
    ]);
    assert!(err.contains("`k.3.0`") && err.contains("NaN"), "{err}");
}

#[test]
fn os_errors_are_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |_| {});
    let missing = tmp.path().join("missing.ron");
    let err = fails_cleanly(&["search", "--evaluate", s(&missing), "--captures", s(&c)]);
    let os = std::io::Error::from_raw_os_error(2).to_string();
    assert_eq!(err.matches(&os).count(), 1, "{err}");
}

// ------------------------------------------------------------------ fuzzing

fn fuzz_config() -> ProptestConfig {
    // Each case is cheap (no model is built); the whole file stays within seconds.
    ProptestConfig {
        cases: 128,
        max_shrink_iters: 100,
        ..ProptestConfig::default()
    }
}

fn flip(bytes: &mut [u8], edits: &[(usize, u8)]) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    for &(i, x) in edits {
        bytes[i % n] ^= x | 1;
    }
}

fn valid_capture_bytes() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.safetensors");
    tiny_capture(&c, "m", |_| {});
    std::fs::read(c).unwrap()
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// The capture reader on mutated files: an error or a file whose every tensor
    /// reads (finite or a named error), never a panic.
    #[test]
    fn capture_reader_survives_mutated_files(
        edits in prop::collection::vec((0usize..4096, any::<u8>()), 1..6),
        cut in prop::option::of(0usize..20_000),
    ) {
        let mut bytes = valid_capture_bytes();
        // Mutations are concentrated on the header, where the structure is.
        let head = bytes.len().min(4096);
        flip(&mut bytes[..head], &edits);
        if let Some(c) = cut {
            bytes.truncate(c.min(bytes.len()));
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(f) = vdit_search::CaptureFile::open(&p) {
            for &step in f.steps() {
                for layer in 0..f.layers() {
                    let _ = f.read(step, layer);
                }
            }
        }
    }

    #[test]
    fn capture_reader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        prop_assert!(vdit_search::CaptureFile::open(&p).is_err());
    }

    /// Config readers (all three model classes) on mutated `config.json` text.
    #[test]
    fn config_readers_survive_mutated_configs(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        which in 0usize..3,
        number in prop::sample::select(vec!["0", "-1", "18446744073709551615", "1e308", "1048577", "null", "\"x\"", "[]"]),
        key in 0usize..40,
    ) {
        let dirs = [
            wan_fixture("b2_f3_12x20_nonsquare"),
            root().join("crates/vdit-hunyuan/tests/fixtures/b2_f3_8x12_padded_mask"),
            root().join("crates/vdit-cogvideox/tests/fixtures/b2_f4_8x8_t2even"),
        ];
        let text = std::fs::read_to_string(dirs[which].join("config.json")).unwrap();
        // Replace the value of the key-th key with an extreme one, then flip bytes.
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(obj) = doc.as_object_mut() {
            let keys: Vec<String> = obj.keys().cloned().collect();
            let k = &keys[key % keys.len()];
            obj.insert(k.clone(), serde_json::from_str(number).unwrap());
        }
        let mut bytes = serde_json::to_vec_pretty(&doc).unwrap();
        flip(&mut bytes, &edits);
        let text = String::from_utf8_lossy(&bytes);
        let path = Path::new("config.json");
        if let Ok(cfg) = vdit_models::DiffusersConfig::from_json_str(&text, path) {
            if let Ok(c) = vdit_wan::WanConfigJson::from_diffusers(&cfg) {
                let _ = c.into_config();
            }
            if let Ok(c) = vdit_hunyuan::HunyuanConfigJson::from_diffusers(&cfg) {
                let _ = c.into_config();
            }
            if let Ok(c) = vdit_cogvideox::CogVideoXConfigJson::from_diffusers(&cfg) {
                let _ = c.into_config();
            }
        }
    }

    /// The shard index on mutated JSON: opening the model directory never panics.
    #[test]
    fn shard_index_survives_mutations(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let src = wan_fixture("b1_f5_8x12_h3d16_sharded");
        let tmp = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json" || x == "safetensors") {
                #[cfg(unix)]
                std::os::unix::fs::symlink(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let name = vdit_models::safetensors_file::WEIGHTS_INDEX_NAME;
        let mut bytes = std::fs::read(src.join(name)).unwrap();
        flip(&mut bytes, &edits);
        let index = tmp.path().join(name);
        let _ = std::fs::remove_file(&index);
        std::fs::write(&index, &bytes).unwrap();
        let _ = vdit_models::safetensors_file::SafetensorsFiles::open_model_dir(tmp.path());
    }
}

proptest! {
    // Each case starts the binary (about 50 ms): 24 cases per property.
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 20, ..ProptestConfig::default() })]

    /// Numeric arguments out of range or not numbers: an error or a usage message,
    /// never a panic, an abort or a long run.
    #[test]
    fn numeric_arguments_never_panic(
        value in prop_oneof![
            Just("0".to_string()),
            (10_001u64..=u64::MAX).prop_map(|v| v.to_string()),
            Just("18446744073709551616".to_string()),
            Just("-1".to_string()),
            Just("1e9".to_string()),
            "[a-z0-9x.-]{0,12}",
        ],
        option in prop::sample::select(vec![
            ("generate", "--steps"),
            ("generate", "--latent"),
            ("generate", "--frames"),
            ("search", "--schedule-steps"),
            ("search", "--total-steps"),
            ("search", "--threads"),
            ("search", "--latent"),
            ("forward", "--latent"),
            ("forward", "--batch"),
            ("forward", "--repeat"),
            ("bench", "--repeats"),
        ]),
    ) {
        // Every run stops right after the arguments are checked, whatever the value:
        // generate at a missing plan, search at an output in a missing directory,
        // forward on a 1x4x4 latent.
        let tmp = tempfile::tempdir().unwrap();
        let (out, missing) = (tmp.path().join("o"), tmp.path().join("missing/o"));
        let (out, missing) = (s(&out), s(&missing));
        let mut args: Vec<&str> = vec![option.0];
        match option.0 {
            "generate" => args.extend(["--preset", "wan-tiny", "--random-weights", "--random-embeddings", "--out", out, "--plan", missing, "--quiet"]),
            "search" if option.1 == "--threads" || option.1 == "--total-steps" => args.extend(["--out", missing, "--quiet"]),
            "search" => args.extend(["--preset", "wan-tiny", "--out", missing, "--quiet"]),
            "bench" => args.extend(["--out", missing, "--skip-model", "--skip-attention"]),
            _ => args.extend(["--preset", "wan-tiny", "--random-weights", "--random-inputs"]),
        }
        if option.1 != "--latent" && option.1 != "--frames" && option.0 != "search" && option.0 != "bench" {
            args.extend(["--latent", "1x4x4"]);
        }
        if option.0 == "search" && option.1 != "--latent" && option.1 != "--threads" && option.1 != "--total-steps" {
            args.extend(["--latent", "1x4x4"]);
        }
        args.extend([option.1, value.as_str()]);
        let o = xtask(&args);
        let err = stderr(&o);
        prop_assert!(!err.contains("panicked"), "{args:?}: {err}");
        prop_assert!(matches!(o.status.code(), Some(0..=2)), "{args:?}: {:?} {err}", o.status);
    }
}
