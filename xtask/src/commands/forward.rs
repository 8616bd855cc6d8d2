//! `cargo xtask forward` (issue #5).

/// Arguments of `cargo xtask forward`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask forward` is not implemented yet (issue #5)")
}
