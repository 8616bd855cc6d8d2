//! `cargo xtask bench` (issue #9).

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask bench` is not implemented yet (issue #9)")
}
