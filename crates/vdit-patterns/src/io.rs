//! File handling shared by every tool that reads text documents or writes plans,
//! reports, tables and tensors: atomic writes, outputs staged and renamed together,
//! size-capped reads, and the checks made before any work (output directory exists, no
//! output is one of the inputs). See `SECURITY.md`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Most bytes a text document (plan, cost table, `config.json`, shard index) may have:
/// 64 MiB, far above any real one (a plan for 60 layers x 24 heads x 50 ranges is about
/// 2 MiB). Larger inputs (e.g. `/dev/zero`) are refused instead of filling memory.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Most denoising steps any schedule, plan or search accepts. Diffusion models are
/// trained on 1,000 timesteps; a schedule longer than ten times that has no use, and the
/// per-step tables of the samplers and the search stay small under it.
pub const MAX_STEPS: usize = 10_000;

/// Why an input or output path cannot be used; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// An output would overwrite an input (same file after resolving links and `..`).
    #[error(
        "{output} and {input} are the same file ({}): refusing to overwrite an input",
        path.display()
    )]
    SameFile {
        /// What the output is (e.g. `--out`).
        output: String,
        /// What the input is (e.g. `--captures`).
        input: String,
        /// The path given for the output.
        path: PathBuf,
    },
    /// The directory an output goes to does not exist (it is not created).
    #[error("{what} {}: directory {} does not exist", path.display(), dir.display())]
    NoDirectory {
        /// What the output is.
        what: String,
        /// The output path.
        path: PathBuf,
        /// Its parent directory.
        dir: PathBuf,
    },
    /// A path that must be a file is a directory.
    #[error("{what} {}: is a directory, expected a file", path.display())]
    IsDirectory {
        /// What the path is.
        what: String,
        /// The path.
        path: PathBuf,
    },
}

/// The directory `path` is written into (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads a UTF-8 text document of at most `limit` bytes. A directory, a longer file
/// (or an endless device such as `/dev/zero`) and invalid UTF-8 are errors; at most
/// `limit + 1` bytes are ever read.
pub fn read_text_capped(path: &Path, limit: u64) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory, expected a file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {limit}-byte limit for text documents"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// Fails when `path` exists and is a directory (`what` names the input in the error).
pub fn check_input_file(what: &str, path: &Path) -> Result<(), PathError> {
    if path.is_dir() {
        return Err(PathError::IsDirectory {
            what: what.into(),
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Checks, before any work, that output `path` can be created: its directory exists
/// (it is never created) and the path is not a directory.
pub fn check_output_path(what: &str, path: &Path) -> Result<(), PathError> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(PathError::NoDirectory {
            what: what.into(),
            path: path.to_owned(),
            dir: dir.to_owned(),
        });
    }
    check_input_file(what, path)
}

/// The canonical form of `path`: resolved directly when it exists, else its resolved
/// directory joined with its file name.
fn canonical(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let dir = parent_dir(path).canonicalize().ok()?;
    Some(dir.join(path.file_name()?))
}

/// Whether `a` and `b` name the same file: the same canonical path (links and `..`
/// resolved), or, when both exist, the same device and inode (hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        use std::os::unix::fs::MetadataExt;
        return ma.dev() == mb.dev() && ma.ino() == mb.ino();
    }
    match (canonical(a), canonical(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Fails when an output is an input or another output. `outputs` and `inputs` are
/// `(what, path)` pairs, `what` being the option that names it (e.g. `--out`).
pub fn check_distinct(
    outputs: &[(&str, &Path)],
    inputs: &[(&str, &Path)],
) -> Result<(), PathError> {
    for (i, (what, path)) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(&outputs[..i]);
        if let Some((other, _)) = others.into_iter().find(|(_, p)| same_file(path, p)) {
            return Err(PathError::SameFile {
                output: (*what).into(),
                input: (*other).into(),
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// The outputs of one command, each first written to a temporary file in its target
/// directory; [`OutputSet::commit`] renames them all into place only after every one was
/// written. Temporaries left by a failed or dropped set are removed, and no target is
/// touched before the commit.
#[derive(Debug, Default)]
pub struct OutputSet {
    staged: Vec<(PathBuf, PathBuf)>,
}

impl OutputSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `bytes` to a temporary file beside `path` (flushed to disk).
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
        })?;
        let tmp = parent_dir(path).join(format!(
            ".{}.{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            self.staged.len()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        match result {
            Ok(()) => {
                self.staged.push((path.to_owned(), tmp));
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Renames every staged file over its target, in staging order.
    pub fn commit(mut self) -> std::io::Result<()> {
        let staged = std::mem::take(&mut self.staged);
        let mut result = Ok(());
        for (path, tmp) in &staged {
            if result.is_ok() {
                result = std::fs::rename(tmp, path);
            }
            if result.is_err() {
                let _ = std::fs::remove_file(tmp);
            }
        }
        result
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        for (_, tmp) in &self.staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically: the data goes to a temporary file in the same
/// directory, is flushed to disk, and is then renamed over `path`. A reader never sees a
/// partial file and an interrupted write leaves any previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut set = OutputSet::new();
    set.stage(path, bytes)?;
    set.commit()
}
