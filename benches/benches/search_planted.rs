//! The greedy search on planted captures (no model): one layer of the embedded default's
//! planted heads, and the whole embedded default on one sample. Measures the search's own
//! CPU cost (candidate generation, CPU block-sparse evaluation, decisions).
//! Run: `cargo bench -p vdit-benches --bench search_planted`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vdit_patterns::Provenance;
use vdit_search::{AnalyticCost, CostModel, NoProgress, PlanMeta, PlantedModel, search};

fn meta() -> PlanMeta {
    PlanMeta {
        model_id: "bench".into(),
        config_hash: "none".into(),
        provenance: Provenance {
            weights: "planted".into(),
            weights_hash: None,
            synthetic: true,
            date: String::new(),
            tool_version: "criterion".into(),
            notes: String::new(),
        },
    }
}

fn bench(c: &mut Criterion) {
    let cost = CostModel::Analytic(AnalyticCost::default());
    let mut group = c.benchmark_group("search_planted");
    group.sample_size(10);
    for (name, layers, samples) in [
        ("one_layer_one_sample", 1, 1),
        ("embedded_default_one_sample", 4, 1),
    ] {
        let mut model = PlantedModel::tiny_wan();
        model.layers = layers;
        model.samples = samples;
        let opts = PlantedModel::default_search_options();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut source = model.clone();
                black_box(search(&mut source, &opts, &cost, meta(), &NoProgress).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
