//! `cargo xtask`: the Sparse-vDiT command line (search, bench, forward, generate,
//! quality, fixtures), following the cargo-xtask convention: a workspace binary run through the
//! `xtask` alias in `.cargo/config.toml`.

mod commands;

use clap::{Parser, Subcommand};

/// Sparse-vDiT tools: search sparse attention plans, benchmark, run denoisers.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    /// More diagnostics on stderr: `-v` progress notes, `-vv` per-layer phase times of a
    /// search and other debug detail. Warnings (e.g. a GPU library that could not be
    /// loaded, and its fallback) are always shown.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Search a per-layer, per-head sparse attention plan (embedded default: a tiny
    /// planted model on the CPU).
    Search(commands::search::Args),
    /// Benchmark attention and denoiser steps (CPU suite by default; `--backend cuda`).
    Bench(commands::bench::Args),
    /// Run one forward call (a denoiser, a UMT5 text encoder or the Wan VAE decoder) from a
    /// model directory and an inputs file.
    Forward(commands::forward::Args),
    /// Run the denoising loop from text embeddings to latents, or (`--prompt`, Wan2.1) from
    /// a prompt to an MP4 video.
    Generate(commands::generate::Args),
    /// Compare Wan2.1 videos generated with a plan against dense ones (same prompts and
    /// seeds): PSNR / SSIM per prompt and mean, as JSON + Markdown + a PNG chart.
    Quality(commands::quality::Args),
    /// Regenerate the golden test fixtures with diffusers (Python, CPU).
    Fixtures(commands::fixtures::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_diagnostics(cli.verbose);
    let result = match cli.command {
        Command::Search(a) => commands::search::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Forward(a) => commands::forward::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Quality(a) => commands::quality::run(a),
        Command::Fixtures(a) => commands::fixtures::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Sends the libraries' `tracing` events to stderr: warnings always, info with `-v`, debug
/// with `-vv` (our crates only; dependencies stay at warnings).
fn init_diagnostics(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let ours = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let mut filter = Targets::new().with_default(LevelFilter::WARN);
    for target in [
        "vdit_search",
        "vdit_ops",
        "vdit_attention",
        "vdit_models",
        "vdit_pipelines",
    ] {
        filter = filter.with_target(target, ours);
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .without_time();
    // A second call (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// The error and its causes joined by `: `, leaving out a cause whose message the
/// previous one already contains (library errors such as `{path}: {source}` print their
/// source themselves, so `{e:#}` would print an OS error twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_prints_each_message_once() {
        let os = std::io::Error::from_raw_os_error(2);
        let os_text = os.to_string();
        let lib = vdit_patterns::PlanError::Io {
            path: "p.ron".into(),
            source: os,
        };
        let e = anyhow::Error::new(lib).context("loading plan p.ron");
        let text = super::error_chain(&e);
        assert_eq!(text.matches(&os_text).count(), 1, "{text}");
        assert!(
            text.starts_with("loading plan p.ron: plan file p.ron: "),
            "{text}"
        );
    }
}
