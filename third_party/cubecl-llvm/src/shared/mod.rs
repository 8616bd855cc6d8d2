//! Target-independent items that `cubecl-cuda` names.

pub mod lowered_features;
