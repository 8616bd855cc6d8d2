//! Device-feature narrowing for the LLVM backend.
//!
//! The real crate removes from a device's properties what its LLVM lowering cannot emit.
//! Without that backend nothing is lowered through LLVM, so there is nothing to remove:
//! the C++ backend keeps every feature the device reports.

use cubecl_core::ir::DeviceProperties;

/// The GPU target a device's features would be narrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    /// NVIDIA PTX.
    Nvptx,
}

/// Leaves `props` unchanged (see the module docs).
pub fn restrict_features(props: &mut DeviceProperties, target: GpuTarget) {
    let _ = (props, target);
}
