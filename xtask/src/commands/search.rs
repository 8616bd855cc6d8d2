//! `cargo xtask search` (issue #8).

/// Arguments of `cargo xtask search`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask search` is not implemented yet (issue #8)")
}
