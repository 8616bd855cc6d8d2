//! `cargo xtask fixtures` (issue #5).

/// Arguments of `cargo xtask fixtures`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask fixtures` is not implemented yet (issue #5)")
}
