//! The embedded default of `cargo xtask search` end to end (one layer, to stay fast):
//! search, write plan and report, read both back.

mod common;

use vdit_patterns::Plan;
use vdit_search::{
    AnalyticCost, CostModel, NoProgress, PlantedModel, SearchReport, predict_speedup, search,
};

#[test]
fn embedded_default_writes_a_plan_and_report_that_recover_the_planted_heads() {
    let mut m = PlantedModel::tiny_wan();
    m.layers = 1;
    let truth = m.clone();
    let opts = PlantedModel::default_search_options();
    let cost = CostModel::Analytic(AnalyticCost::default());
    let out = search(&mut m, &opts, &cost, common::meta(), &NoProgress).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (plan_path, report_path) = (dir.path().join("p.ron"), dir.path().join("r.json"));
    out.plan.save(&plan_path).unwrap();
    let mut report = SearchReport::new(&out, vec!["planted".into()]);
    let recovery = truth.recovery(&out.plan);
    report.extra.insert(
        "planted_recovery".into(),
        serde_json::to_value(&recovery).unwrap(),
    );
    report.save(&report_path).unwrap();

    let plan = Plan::load(&plan_path).unwrap();
    assert_eq!(plan, out.plan);
    plan.check_model(1, 10, 64).unwrap();
    assert!(plan.provenance.synthetic);
    assert_eq!(plan.total_steps, 50);
    let spans: Vec<(usize, usize)> = plan.ranges.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(spans, vec![(0, 10), (10, 30), (30, 50)]);
    assert_eq!(recovery.recovered, 20, "{:?}", recovery.mismatches);
    assert_eq!(recovery.total, 20);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let decisions = json["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3 * 10, "3 ranges x 1 layer x 10 heads");
    let d = &decisions[10];
    for key in [
        "step_start",
        "step_end",
        "layer",
        "head",
        "pattern",
        "density",
        "error",
    ] {
        assert!(!d[key].is_null(), "decision field {key} missing: {d}");
    }
    assert_eq!(d["step_start"], 10);
    assert_eq!(d["step_end"], 30);
    let names = [
        "dense",
        "skip",
        "diagonal",
        "multi_diagonal",
        "vertical_stripe",
    ];
    assert!(
        decisions
            .iter()
            .all(|d| names.contains(&d["pattern"].as_str().unwrap()))
    );
    let totals = &json["totals"];
    let speedup = totals["predicted_speedup"].as_f64().unwrap();
    assert!((speedup - out.predicted_speedup).abs() < 1e-12 && speedup > 1.0);
    assert!(totals["attention_density"].as_f64().unwrap() < 1.0);
    let wall = totals["search_wall_time_s"].as_f64().unwrap();
    assert!(wall > 0.0);
    // Phase times: every measurement phase ran (the planted model has stripe candidates),
    // each within the wall time; layer runs are part of the errors phase.
    let phases: Vec<(String, f64)> =
        serde_json::from_value(totals["phase_times_s"].clone()).unwrap();
    let names: Vec<&str> = phases.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "q/k/v",
            "attention mass",
            "candidates",
            "errors",
            "errors: layer runs"
        ]
    );
    assert!(phases.iter().all(|(_, t)| *t >= 0.0 && *t <= wall));
    let get = |n: &str| out.phase_times.get(n);
    assert!(get("errors: layer runs") <= get("errors") && get("errors") > 0.0);
    let measured: f64 = phases
        .iter()
        .filter(|(p, _)| p != "errors: layer runs")
        .map(|(_, t)| t)
        .sum();
    assert!(measured <= wall, "phases {measured} s > wall {wall} s");
    // The report holds the outcome's phase times (serde_json's float parsing may move the
    // last bit, so compare with a relative tolerance).
    assert_eq!(phases.len(), out.phase_times.0.len());
    for ((p, t), (q, u)) in phases.iter().zip(&out.phase_times.0) {
        assert_eq!(p, q);
        assert!(
            (t - u).abs() <= 1e-12 * u.abs().max(1e-9),
            "{p}: {t} vs {u}"
        );
    }
    assert_eq!(json["extra"]["planted_recovery"]["recovered"], 20);

    // Patterns are layout-relative: the plan prices at Wan2.1 480p, where block
    // granularity wastes far less and the launch overhead is amortised.
    let wan480 = vdit_patterns::VideoLayout::new(21, 30, 52).unwrap();
    let at_480p = predict_speedup(&plan, &wan480, &cost).unwrap();
    assert!(at_480p > speedup, "{at_480p} vs {speedup}");
}
