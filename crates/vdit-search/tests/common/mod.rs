//! Helpers shared by the integration tests.
#![allow(dead_code)]

use vdit_patterns::{Provenance, TextPosition, VideoLayout};
use vdit_search::{AnalyticCost, CostModel, PlanMeta, PlantedModel, SearchOptions};

/// Small planted models on layouts with no text, a text prefix and a text suffix. Five
/// heads per layer, so every layer holds every planted kind (rotated between layers).
pub fn planted_models() -> Vec<PlantedModel> {
    let layouts = [
        VideoLayout::new(4, 12, 16).unwrap(),
        VideoLayout::new(4, 10, 16)
            .unwrap()
            .with_text(64, TextPosition::Prefix)
            .unwrap(),
        VideoLayout::new(3, 12, 20)
            .unwrap()
            .with_text(40, TextPosition::Suffix)
            .unwrap(),
    ];
    layouts
        .into_iter()
        .enumerate()
        .map(|(i, layout)| PlantedModel {
            name: format!("planted-test-{i}"),
            layout,
            layers: 2,
            heads: 5,
            head_dim: 64,
            samples: 2,
            steps: vec![0],
            seed: 7 + i as u64,
        })
        .collect()
}

pub fn meta() -> PlanMeta {
    PlanMeta {
        model_id: String::new(),
        config_hash: "none".into(),
        provenance: Provenance {
            weights: "synthetic".into(),
            weights_hash: None,
            synthetic: true,
            date: "2026-11-24".into(),
            tool_version: "vdit-search tests".into(),
            notes: "planted q/k/v".into(),
        },
    }
}

/// Analytic cost with a tiny launch overhead, so that speedups at test sizes reflect
/// the block work rather than the fixed launch cost.
pub fn cost() -> CostModel {
    CostModel::Analytic(AnalyticCost {
        launch_us: 0.01,
        ..AnalyticCost::default()
    })
}

pub fn opts() -> SearchOptions {
    SearchOptions::default()
}
