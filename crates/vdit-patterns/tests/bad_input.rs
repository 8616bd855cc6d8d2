//! Bad input (issue #18): the plan parser never panics on arbitrary or mutated bytes,
//! text reads are size-capped, outputs are staged and renamed together, and an output
//! that is an input is refused (through links and `..`).

use std::path::Path;

use proptest::prelude::*;
use vdit_patterns::{
    MAX_STEPS, ModelInfo, OutputSet, PathError, Pattern, Plan, PlanError, Provenance, StepRange,
    TextPosition, TokenSpan, VideoLayout, check_distinct, check_output_path, read_text_capped,
    same_file,
};

fn plan() -> Plan {
    let layout = VideoLayout::new(3, 4, 6)
        .unwrap()
        .with_text(5, TextPosition::Prefix)
        .unwrap();
    let model = ModelInfo {
        id: "fuzz".into(),
        config_hash: "none".into(),
        layers: 2,
        heads: 3,
        head_dim: 64,
    };
    let provenance = Provenance {
        weights: "synthetic".into(),
        weights_hash: None,
        synthetic: true,
        date: "2026-12-02".into(),
        tool_version: "test".into(),
        notes: String::new(),
    };
    let mut plan = Plan::dense(model, layout, 4, provenance);
    plan.ranges = vec![
        StepRange {
            start: 0,
            end: 1,
            layers: plan.ranges[0].layers.clone(),
        },
        StepRange {
            start: 1,
            end: 4,
            layers: vec![
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
                            end: 0.5,
                        }],
                        band: Some(0.05),
                    },
                    Pattern::Dense,
                    Pattern::Skip,
                ],
            ],
        },
    ];
    plan.validate().unwrap();
    plan
}

/// A mutation of a valid document: flip, insert, delete or overwrite bytes, truncate,
/// or replace a number by an extreme one.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Number(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop::sample::select(vec![
        "0",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "4294967295",
        "1e308",
        "-1e308",
        "inf",
        "NaN",
        "1e-320",
        "99999999999999999999999",
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1..16usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), extreme).prop_map(|(i, n)| Mutation::Number(i, n)),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for m in muts {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(i, x) if !b.is_empty() => b[i % len] ^= x | 1,
            Mutation::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Delete(i, n) if !b.is_empty() => {
                let at = i % len;
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            Mutation::Truncate(i) => b.truncate(i % (b.len() + 1)),
            Mutation::Number(i, n) => {
                // Replace the digit run at or after position i.
                let start = (i % len..b.len()).find(|&j| b[j].is_ascii_digit());
                if let Some(s) = start {
                    let e = (s..b.len())
                        .find(|&j| !(b[j].is_ascii_digit() || b[j] == b'.'))
                        .unwrap_or(b.len());
                    b.splice(s..e, n.bytes());
                }
            }
            _ => {}
        }
    }
    b
}

/// Parses `bytes` as a plan; a plan that parses must validate and round-trip.
fn parse_never_panics(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(p) = Plan::from_ron_str(&text) {
        p.validate().expect("a parsed plan is valid");
        let again = Plan::from_ron_str(&p.to_ron_string().unwrap()).unwrap();
        assert_eq!(again, p);
    }
}

proptest! {
    // Bounded: about a second in the test profile on a 2-core CI machine.
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn plan_parser_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_never_panics(&bytes);
    }

    #[test]
    fn plan_parser_survives_mutated_plans(muts in prop::collection::vec(mutation(), 1..6)) {
        let text = plan().to_ron_string().unwrap();
        parse_never_panics(&apply(&text, &muts));
    }
}

#[test]
fn plans_beyond_the_step_limit_are_rejected() {
    let mut p = plan();
    p.total_steps = MAX_STEPS + 1;
    p.ranges[1].end = MAX_STEPS + 1;
    let e = p.validate().unwrap_err().to_string();
    assert!(e.contains("total_steps") && e.contains("10000"), "{e}");
}

#[test]
fn a_plan_for_another_schedule_length_is_refused() {
    let p = plan();
    p.check_steps(4).unwrap();
    let e = p.check_steps(50).unwrap_err();
    assert!(
        matches!(&e, PlanError::Invalid { field, .. } if field == "total_steps"),
        "{e}"
    );
    assert!(
        e.to_string().contains("4-step") && e.to_string().contains("50"),
        "{e}"
    );
}

#[test]
fn text_reads_are_capped_and_refuse_directories() {
    let dir = tempfile::tempdir().unwrap();
    // An endless device: refused after limit + 1 bytes, not read to the end.
    if Path::new("/dev/zero").exists() {
        let e = read_text_capped(Path::new("/dev/zero"), 1 << 16).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let e = Plan::load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("limit"), "{e}");
    }
    let big = dir.path().join("big.ron");
    std::fs::write(&big, vec![b' '; 2000]).unwrap();
    assert!(read_text_capped(&big, 1999).is_err());
    assert_eq!(read_text_capped(&big, 2000).unwrap().len(), 2000);
    let e = read_text_capped(dir.path(), 100).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
    let e = Plan::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn staged_outputs_replace_nothing_until_all_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.ron"), dir.path().join("b.json"));
    std::fs::write(&a, "old a").unwrap();
    // The second output cannot be written: the first target keeps its old content and
    // no temporary is left behind.
    let mut set = OutputSet::new();
    set.stage(&a, b"new a").unwrap();
    assert!(set.stage(&dir.path().join("missing/b.json"), b"x").is_err());
    drop(set);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // Both written: both renamed.
    let mut set = OutputSet::new();
    set.stage(&a, b"new a").unwrap();
    set.stage(&b, b"new b").unwrap();
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
    set.commit().unwrap();
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "new b");
}

#[test]
fn outputs_that_are_inputs_are_found_through_links_and_dots() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let input = dir.path().join("in.safetensors");
    std::fs::write(&input, "x").unwrap();
    let dotted = sub.join("../in.safetensors");
    assert!(same_file(&input, &dotted));
    let hard = dir.path().join("hard.safetensors");
    std::fs::hard_link(&input, &hard).unwrap();
    assert!(same_file(&input, &hard));
    #[cfg(unix)]
    {
        let soft = dir.path().join("soft.safetensors");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        assert!(same_file(&soft, &input));
    }
    // Not existing yet: compared through the canonical directory.
    let new = dir.path().join("new.ron");
    assert!(same_file(&new, &sub.join("../new.ron")));
    assert!(!same_file(&new, &input));

    let e = check_distinct(&[("--out", &dotted)], &[("--captures", &input)]).unwrap_err();
    assert!(matches!(e, PathError::SameFile { .. }));
    let msg = e.to_string();
    assert!(msg.contains("--out") && msg.contains("--captures"), "{msg}");
    let e = check_distinct(&[("--out", &new), ("--report", &new)], &[]).unwrap_err();
    assert!(e.to_string().contains("--report") && e.to_string().contains("--out"));
    check_distinct(&[("--out", &new)], &[("--captures", &input)]).unwrap();
}

#[test]
fn output_directories_are_checked_and_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/plan.ron");
    let e = check_output_path("--out", &missing).unwrap_err();
    assert!(matches!(e, PathError::NoDirectory { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!dir.path().join("no").exists());
    let e = check_output_path("--out", dir.path()).unwrap_err();
    assert!(matches!(e, PathError::IsDirectory { .. }), "{e}");
    check_output_path("--out", &dir.path().join("plan.ron")).unwrap();
}
