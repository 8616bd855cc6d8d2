//! Checks every command makes on its arguments before any work: numeric limits from
//! the machine, output paths that exist and are not inputs, GPU runtimes that load.

use std::path::Path;

use anyhow::{Result, bail};

/// Hardware threads of this machine (1 if unknown).
pub fn hardware_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Configures the global rayon pool with `--threads n`: `n` must be in
/// `1..=`[`hardware_threads`] (more threads than the machine runs at once only add
/// overhead, and a huge count fails late, after spawning thousands of threads).
pub fn configure_threads(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else {
        return Ok(());
    };
    let max = hardware_threads();
    if n == 0 || n > max {
        bail!("--threads {n}: this machine runs {max} hardware threads; give 1..={max}");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("configuring {n} worker threads: {e}"))
}

/// Steps of a denoising schedule (`--steps`, `--schedule-steps`, `--total-steps`):
/// `1..=`[`vdit_patterns::MAX_STEPS`].
pub fn check_steps(option: &str, steps: usize) -> Result<()> {
    let max = vdit_patterns::MAX_STEPS;
    if steps == 0 || steps > max {
        bail!("{option} {steps}: give 1..={max} steps");
    }
    Ok(())
}

/// Most timed repetitions (`--repeat`, `--repeats`, `--measure-repeats`): a count
/// beyond it would be a hang, not a measurement.
pub const MAX_REPEATS: usize = 10_000;

/// A repetition count: `1..=`[`MAX_REPEATS`].
pub fn check_repeats(option: &str, n: usize) -> Result<()> {
    if n == 0 || n > MAX_REPEATS {
        bail!("{option} {n}: give 1..={MAX_REPEATS}");
    }
    Ok(())
}

/// Checks the outputs before any work: each one's directory exists (nothing is
/// created), none is a directory, and none is an input or another output (compared
/// through canonical paths and inodes). `outputs` and `inputs` are `(option, path)`.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<()> {
    for (what, path) in outputs {
        vdit_patterns::check_output_path(what, path)?;
    }
    vdit_patterns::check_distinct(outputs, inputs)?;
    Ok(())
}

/// Bytes of physical memory (`MemTotal` of `/proc/meminfo`), if known.
pub fn physical_memory() -> Option<u64> {
    let text = vdit_patterns::read_text_capped(Path::new("/proc/meminfo"), 1 << 20).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Fails when host tensors of `elements` f32 values (`what` names them) cannot fit in
/// this machine's physical memory: better an error naming the size now than an abort
/// on allocation later.
pub fn check_host_elements(what: &str, elements: &[usize]) -> Result<()> {
    let total = elements
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .and_then(|n| n.checked_mul(4));
    let Some(bytes) = total else {
        bail!("{what}: {elements:?} elements overflow the address space");
    };
    if let Some(mem) = physical_memory()
        && bytes as u64 > mem
    {
        bail!(
            "{what}: {elements:?} f32 values need {:.1} GiB, more than this machine's {:.1} GiB of memory",
            bytes as f64 / (1u64 << 30) as f64,
            mem as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Fails with a typed error when the CUDA driver library cannot be loaded or reports no
/// device, before a CubeCL client is created (which would panic on its server thread:
/// "Unable to dynamically load the \"cuda\" shared library", then a `RecvError`). cudarc
/// loads `libcuda` at run time; this asks for it under the same names, then initialises
/// the driver and counts devices through cudarc's fallible API. CPU runs never call it.
#[cfg(feature = "cuda")]
pub fn check_cuda_driver() -> Result<()> {
    // SAFETY: only tries `dlopen` on cudarc's candidate names and closes the handle.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!(
            "--backend cuda: the CUDA driver library (libcuda) cannot be loaded: this machine has no NVIDIA driver (use --backend cpu)"
        );
    }
    cudarc::driver::result::init().map_err(|e| {
        anyhow::anyhow!("--backend cuda: the CUDA driver failed to initialise: {e:?}")
    })?;
    let count = cudarc::driver::result::device::get_count()
        .map_err(|e| anyhow::anyhow!("--backend cuda: counting CUDA devices failed: {e:?}"))?;
    if count < 1 {
        bail!("--backend cuda: the CUDA driver sees no device");
    }
    Ok(())
}

/// Runs the body of a command on a GPU backend, turning a panic of the GPU runtime into
/// an error: CubeCL panics when the device runs out of memory, when the device is lost,
/// and on its server thread when the runtime cannot start (the caller then sees a
/// `RecvError`). The first panic message of any thread is kept (instead of printed) and
/// becomes the error, which names out-of-memory when the message does. CPU runs do not
/// go through this: a panic there is a bug to fix, not a device fault.
#[allow(dead_code)] // used only with the `wgpu` or `cuda` feature
pub fn gpu_guarded<T>(backend: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::sync::{Arc, Mutex};
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let keep = first.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let mut slot = keep.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let at = info
                .location()
                .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                .unwrap_or_default();
            *slot = Some(format!("{}{at}", panic_text(info.payload())));
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    std::panic::set_hook(previous);
    match result {
        Ok(r) => r,
        Err(payload) => {
            let message = first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| panic_text(payload.as_ref()));
            let lower = message.to_lowercase();
            if lower.contains("out of memory") || lower.contains("outofmemory") {
                bail!("--backend {backend}: the device ran out of memory: {message}")
            }
            bail!("--backend {backend}: the GPU runtime failed: {message}")
        }
    }
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_outside_the_machine_are_refused() {
        let max = hardware_threads();
        assert!(configure_threads(Some(0)).is_err());
        let e = configure_threads(Some(max + 1)).unwrap_err().to_string();
        assert!(e.contains(&format!("1..={max}")), "{e}");
    }

    #[test]
    fn gpu_runtime_panics_become_errors() {
        let e = gpu_guarded::<()>("cuda", || panic!("Out of memory: 80 GiB requested"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ran out of memory") && e.contains("80 GiB"),
            "{e}"
        );
        // A panic on another thread (the runtime's server) is the message kept.
        let e = gpu_guarded::<()>("wgpu", || {
            let t = std::thread::spawn(|| panic!("device lost"));
            let _ = t.join();
            panic!("RecvError")
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("device lost"), "{e}");
        assert_eq!(gpu_guarded("cuda", || Ok(3)).unwrap(), 3);
    }

    #[test]
    fn step_counts_are_bounded() {
        assert!(check_steps("--steps", 50).is_ok());
        assert!(check_steps("--steps", 0).is_err());
        assert!(check_steps("--steps", usize::MAX).is_err());
        assert!(check_steps("--steps", 1_000_000_000).is_err());
    }

    #[test]
    fn host_sizes_beyond_memory_are_refused() {
        assert!(check_host_elements("latents", &[1, 16, 4, 8, 8]).is_ok());
        assert!(check_host_elements("latents", &[usize::MAX, 2]).is_err());
        if physical_memory().is_some() {
            let e = check_host_elements("latents", &[1 << 20, 1 << 20, 1 << 10])
                .unwrap_err()
                .to_string();
            assert!(e.contains("GiB"), "{e}");
        }
    }
}
