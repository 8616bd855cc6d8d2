//! Plan files: round trip, grouping and every rejection case.

use vdit_patterns::{
    CompiledLayer, HeadSlot, ModelInfo, PLAN_VERSION, Pattern, Plan, PlanError, Provenance,
    StepRange, TextPosition, TokenSpan, VideoLayout,
};

fn sample_plan() -> Plan {
    let layout = VideoLayout::new(3, 4, 6)
        .unwrap()
        .with_text(5, TextPosition::Prefix)
        .unwrap();
    let model = ModelInfo {
        id: "test-model".into(),
        config_hash: "abc123".into(),
        layers: 2,
        heads: 3,
        head_dim: 64,
    };
    let provenance = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-11-24".into(),
        tool_version: "vdit-patterns test".into(),
        notes: String::new(),
    };
    let mut plan = Plan::dense(model, layout, 10, provenance);
    let sparse = vec![
        vec![
            Pattern::Diagonal { band: 0.25 },
            Pattern::Skip,
            Pattern::MultiDiagonal {
                spatial_band: 0.1,
                frame_reach: 2,
            },
        ],
        vec![
            Pattern::VerticalStripe {
                columns: vec![TokenSpan {
                    start: 0.0,
                    end: 1.0 / 3.0,
                }],
                band: Some(0.05),
            },
            Pattern::Dense,
            Pattern::Diagonal { band: 0.25 },
        ],
    ];
    plan.ranges = vec![
        StepRange {
            start: 0,
            end: 2,
            layers: plan.ranges[0].layers.clone(),
        },
        StepRange {
            start: 2,
            end: 10,
            layers: sparse,
        },
    ];
    plan
}

fn invalid_field(result: Result<(), PlanError>) -> String {
    match result {
        Err(PlanError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid-field error, got {other:?}"),
    }
}

#[test]
fn round_trip_through_a_file() {
    let plan = sample_plan();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.ron");
    plan.save(&path).unwrap();
    let back = Plan::load(&path).unwrap();
    assert_eq!(back, plan);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(
        back.layer(0, 1),
        &[Pattern::Dense, Pattern::Dense, Pattern::Dense]
    );
    assert_eq!(back.layer(5, 0)[1], Pattern::Skip);
    assert_eq!(back.layer(99, 0)[1], Pattern::Skip); // past the end: last range
}

#[test]
fn unknown_version_is_rejected() {
    let text = sample_plan().to_ron_string().unwrap();
    let bumped = text.replacen(&format!("version: {PLAN_VERSION}"), "version: 99", 1);
    assert!(matches!(
        Plan::from_ron_str(&bumped),
        Err(PlanError::UnsupportedVersion { found: 99, .. })
    ));
}

#[test]
fn truncated_and_malformed_files_are_parse_errors() {
    let text = sample_plan().to_ron_string().unwrap();
    for cut in [0, 1, text.len() / 3, text.len() / 2, text.len() - 2] {
        assert!(
            matches!(Plan::from_ron_str(&text[..cut]), Err(PlanError::Parse(_))),
            "cut {cut}"
        );
    }
    for bad in ["", "garbage", "Plan(version: \"one\")", "[1, 2, 3]"] {
        assert!(
            matches!(Plan::from_ron_str(bad), Err(PlanError::Parse(_))),
            "{bad:?}"
        );
    }
    let typo = text.replacen("block_size", "blok_size", 1);
    assert!(matches!(
        Plan::from_ron_str(&typo),
        Err(PlanError::Parse(_))
    ));
    let missing = std::path::Path::new("/nonexistent/plan.ron");
    assert!(matches!(Plan::load(missing), Err(PlanError::Io { .. })));
}

#[test]
fn layer_and_head_counts_must_match() {
    let mut p = sample_plan();
    p.ranges[1].layers.pop();
    assert_eq!(invalid_field(p.validate()), "ranges[1].layers");
    let mut p = sample_plan();
    p.ranges[1].layers[1].push(Pattern::Dense);
    assert_eq!(invalid_field(p.validate()), "ranges[1].layers[1]");
    let p = sample_plan();
    assert!(p.check_model(2, 3, 64).is_ok());
    match p.check_model(30, 3, 64) {
        Err(PlanError::Invalid { field, reason }) => {
            assert_eq!(field, "model.layers");
            assert!(reason.contains("30"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(invalid_field(p.check_model(2, 12, 64)), "model.heads");
    assert_eq!(invalid_field(p.check_model(2, 3, 128)), "model.head_dim");
}

#[test]
fn invalid_parameters_name_the_head() {
    let mut p = sample_plan();
    p.ranges[1].layers[0][2] = Pattern::MultiDiagonal {
        spatial_band: 2.0,
        frame_reach: 1,
    };
    assert_eq!(invalid_field(p.validate()), "ranges[1].layers[0][2]");
    let mut p = sample_plan();
    p.ranges[1].layers[1][0] = Pattern::Diagonal {
        band: f64::INFINITY,
    };
    assert_eq!(invalid_field(p.validate()), "ranges[1].layers[1][0]");
    let mut p = sample_plan();
    p.block_size = 96;
    assert_eq!(invalid_field(p.validate()), "block_size");
    let mut p = sample_plan();
    p.search.epsilon = -0.1;
    assert_eq!(invalid_field(p.validate()), "search.epsilon");
    let mut p = sample_plan();
    p.search.target_speedup = Some(0.5);
    assert_eq!(invalid_field(p.validate()), "search.target_speedup");
    let mut p = sample_plan();
    p.layout.frames = 0;
    assert_eq!(invalid_field(p.validate()), "layout");
    let mut p = sample_plan();
    p.model.heads = 0;
    assert_eq!(invalid_field(p.validate()), "model.heads");
}

#[test]
fn overlapping_missing_and_empty_step_ranges_are_rejected() {
    let mut p = sample_plan();
    p.ranges[1].start = 1; // overlaps 0..2
    assert_eq!(invalid_field(p.validate()), "ranges[1].start");
    let mut p = sample_plan();
    p.ranges[1].start = 3; // gap at step 2
    assert_eq!(invalid_field(p.validate()), "ranges[1].start");
    let mut p = sample_plan();
    p.ranges[0].start = 1; // step 0 missing
    assert_eq!(invalid_field(p.validate()), "ranges[0].start");
    let mut p = sample_plan();
    p.ranges[1].end = 8; // steps 8..10 missing
    assert_eq!(invalid_field(p.validate()), "ranges");
    let mut p = sample_plan();
    p.ranges[1].end = 2; // empty range
    assert_eq!(invalid_field(p.validate()), "ranges[1].end");
    let mut p = sample_plan();
    p.ranges.clear();
    assert_eq!(invalid_field(p.validate()), "ranges");
}

#[test]
fn an_invalid_plan_is_never_written() {
    let mut p = sample_plan();
    p.ranges[1].layers.pop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.ron");
    std::fs::write(&path, "previous contents").unwrap();
    assert!(p.save(&path).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous contents");
}

#[test]
fn heads_with_the_same_pattern_share_a_table() {
    let p = sample_plan();
    let layout = p.layout;
    let layer = CompiledLayer::compile(&p.ranges[1].layers[1], &layout, 64).unwrap();
    // stripe, dense, diagonal: three distinct tables.
    assert_eq!(layer.tables().len(), 3);
    let patterns = [
        Pattern::Diagonal { band: 0.25 },
        Pattern::Skip,
        Pattern::Diagonal { band: 0.25 },
        Pattern::Dense,
        Pattern::Skip,
    ];
    let layer = CompiledLayer::compile(&patterns, &layout, 64).unwrap();
    assert_eq!(layer.tables().len(), 2);
    assert_eq!(
        layer.slots(),
        &[
            HeadSlot::Table(0),
            HeadSlot::Skip,
            HeadSlot::Table(0),
            HeadSlot::Table(1),
            HeadSlot::Skip
        ]
    );
    assert_eq!(layer.groups(), vec![vec![0, 2], vec![3]]);
    let expected = (2.0 * layer.tables()[0].density() + 1.0) / 5.0;
    assert!((layer.density() - expected).abs() < 1e-12);
}
