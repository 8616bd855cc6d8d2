//! NVPTX-target items that `cubecl-cuda` names.

pub mod ptx_version;
