//! `cargo xtask fixtures`: regenerate the golden test fixtures with diffusers (Python,
//! CPU) by running `tools/fixtures_<model>.py` (see `tools/README.md`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::project_root;

/// Which fixture set to regenerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FixtureModel {
    /// Wan2.1 (`tools/fixtures_wan.py`, also writes the flow sampler fixtures).
    Wan,
    /// HunyuanVideo (`tools/fixtures_hunyuan.py`).
    Hunyuan,
    /// CogVideoX1.5 (`tools/fixtures_cogvideox.py`).
    Cogvideox,
    /// Wan2.1 text to video: UMT5 encoder, VAE decoder, tokenizer, the tiny WanPipeline
    /// (`tools/fixtures_wan_t2v.py`; also needs transformers).
    WanT2v,
    /// Every script that exists.
    All,
}

/// Default Python: `$VDIT_PYTHON`, else the project's fixture venv, else `python3`.
const DEFAULT_VENV_PYTHON: &str = "/work/venv-fixtures/bin/python";

/// Arguments of `cargo xtask fixtures`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which model's fixtures.
    #[arg(long, value_enum, default_value = "all")]
    pub model: FixtureModel,
    /// Python interpreter with torch, diffusers and safetensors (default: `$VDIT_PYTHON`,
    /// else /work/venv-fixtures/bin/python if present, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

fn python(args: &Args) -> PathBuf {
    if let Some(p) = &args.python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("VDIT_PYTHON") {
        return PathBuf::from(p);
    }
    if Path::new(DEFAULT_VENV_PYTHON).exists() {
        return PathBuf::from(DEFAULT_VENV_PYTHON);
    }
    PathBuf::from("python3")
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let py = python(&args);
    let check = Command::new(&py)
        .args([
            "-c",
            "import torch, diffusers, safetensors; print(diffusers.__version__, torch.__version__)",
        ])
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    if !check.status.success() {
        bail!(
            "{} cannot import torch, diffusers and safetensors:\n{}\nInstall them in a venv and pass \
             --python PATH or set VDIT_PYTHON (e.g. /work/venv-fixtures/bin/python)",
            py.display(),
            String::from_utf8_lossy(&check.stderr).trim()
        );
    }
    eprintln!(
        "python {} (diffusers, torch: {})",
        py.display(),
        String::from_utf8_lossy(&check.stdout).trim()
    );
    let names: &[&str] = match args.model {
        FixtureModel::Wan => &["wan"],
        FixtureModel::Hunyuan => &["hunyuan"],
        FixtureModel::Cogvideox => &["cogvideox"],
        FixtureModel::WanT2v => &["wan_t2v"],
        FixtureModel::All => &["wan", "hunyuan", "cogvideox", "wan_t2v"],
    };
    let root = project_root();
    let mut ran = 0;
    for name in names {
        let script = root.join("tools").join(format!("fixtures_{name}.py"));
        if !script.exists() {
            if args.model == FixtureModel::All {
                eprintln!("skipping {name}: {} does not exist yet", script.display());
                continue;
            }
            bail!("{} does not exist yet", script.display());
        }
        eprintln!("running {}", script.display());
        let status = Command::new(&py)
            .arg(&script)
            .current_dir(&root)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
        ran += 1;
    }
    if ran == 0 {
        bail!("no fixture script ran");
    }
    Ok(())
}
