//! The attention context every denoiser builds for its forward pass.

use std::sync::Arc;

use vdit_attention::{AttentionContext, AttentionPlan};
use vdit_patterns::{Plan, VideoLayout};

use crate::{ModelError, Result};

/// The attention context for a self-attention `layout`: dense without a plan, otherwise
/// the plan checked against the model's plan layers, heads and head dim, then compiled for
/// the layout.
pub fn attention_context(
    layout: VideoLayout,
    plan: Option<&Plan>,
    layers: usize,
    heads: usize,
    head_dim: usize,
) -> Result<AttentionContext> {
    let Some(p) = plan else {
        return Ok(AttentionContext::dense(layout));
    };
    p.check_model(layers, heads, head_dim)
        .map_err(|e| ModelError::Config(format!("plan does not fit the model: {e}")))?;
    let compiled = AttentionPlan::new(p.clone(), layout)?;
    Ok(AttentionContext::with_plan(layout, Arc::new(compiled))?)
}
