//! One module per subcommand, each with its `Args` and `run`.

pub mod bench;
pub mod checks;
pub mod fixtures;
pub mod forward;
pub mod generate;
pub mod quality;
pub mod search;
pub mod t2v_generate;
pub mod t2v_parts;

use std::path::PathBuf;

/// The workspace root (the parent of this crate's manifest directory).
#[allow(dead_code)]
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
