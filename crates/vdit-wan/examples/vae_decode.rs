//! Time and device memory of the Wan2.1 VAE decoder at a real size on CUDA: random bf16
//! weights of the Wan2.1 config (`WanVaeConfig::wan2_1`), random latents, one decode
//! (frame-chunked, as `WanVaeDecoder::decode`), reported as one JSON line with the pool's
//! reserved and in-use bytes after the decode (the reserved bytes are the pool's high-water
//! mark: it does not shrink during a run). `tools/vae_peer.py` measures diffusers'
//! `AutoencoderKLWan.decode` at the same size.
//!
//! ```sh
//! cargo build --release -p vdit-wan --example vae_decode --features cuda
//! target/release/examples/vae_decode --latent 21x60x104      # 480x832, 81 frames
//! ```

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use cubecl::Runtime;
use vdit_wan::vae::{WanVaeConfig, WanVaeDecoder};

type Cuda = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut latent = [21usize, 60, 104];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--latent" => {
                let v = args.next().ok_or("--latent takes FxHxW")?;
                let parts: Vec<usize> = v
                    .split('x')
                    .map(|p| p.parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--latent {v}: {e}"))?;
                if parts.len() != 3 || parts.contains(&0) {
                    return Err(format!("--latent {v}: expected three positive sizes FxHxW").into());
                }
                latent = [parts[0], parts[1], parts[2]];
            }
            other => return Err(format!("unknown argument `{other}` (only --latent FxHxW)").into()),
        }
    }
    let device = Default::default();
    let config = WanVaeConfig::wan2_1();
    let vae = WanVaeDecoder::<Cuda>::random(&config, 7, DType::BF16, &device)?;
    let client = cubecl::cuda::CudaRuntime::client(&device);
    let weights = client
        .memory_usage()
        .map_err(|e| format!("{e:?}"))?
        .bytes_in_use;
    let [f, h, w] = latent;
    // A size past the backend's indexing is refused before the latents are allocated.
    vae.check_latents([1, config.z_dim, f, h, w])?;
    let z = Tensor::<Cuda, 5>::random(
        [1, config.z_dim, f, h, w],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .cast(DType::BF16);
    Cuda::sync(&device).map_err(|e| format!("{e:?}"))?;
    let t = Instant::now();
    let video = vae.decode(z)?;
    Cuda::sync(&device).map_err(|e| format!("{e:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    let usage = client.memory_usage().map_err(|e| format!("{e:?}"))?;
    let dims = video.dims();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "{{\"latent\": [{f}, {h}, {w}], \"video\": {dims:?}, \"seconds\": {secs:.3}, \
         \"weights_gib\": {:.3}, \"in_use_after_gib\": {:.3}, \"reserved_gib\": {:.3}}}",
        gib(weights),
        gib(usage.bytes_in_use),
        gib(usage.bytes_reserved)
    );
    Ok(())
}
