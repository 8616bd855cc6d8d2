//! The `#[cube]` kernels. Both share the same buffers and head-info conventions
//! (see [`crate::DeviceLayer`]); masked scores use a finite sentinel instead of `-inf`
//! because WGSL does not guarantee IEEE infinities.

pub(crate) mod mma;
pub(crate) mod portable;
pub(crate) mod tensor_core;

/// Score given to masked keys (ragged tail, padding). Finite on purpose.
pub(crate) const MASKED: f32 = -1.0e30;
/// Scores below this are treated as masked.
pub(crate) const MASKED_THRESHOLD: f32 = -1.0e29;
