//! `cargo xtask generate` (issue #5).

/// Arguments of `cargo xtask generate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask generate` is not implemented yet (issue #5)")
}
