//! Host side of the engine: buffers, launch, and an f64 reference.

use cubecl::prelude::*;
use half::bf16;

use crate::attention::{HEAD_DIM, ROWS_PER_WARPGROUP, flash_fwd_kernel};

/// Why a launch was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HopperError {
    /// A buffer does not hold `batch_heads * tokens * 128` elements.
    #[error("{name} holds {got} elements, expected {want} (batch*heads x tokens x 128)")]
    BadLength {
        /// Which buffer.
        name: &'static str,
        /// Its length.
        got: usize,
        /// The length the problem needs.
        want: usize,
    },
    /// Warpgroups per cube outside 1..=3.
    #[error("{0} warpgroups per cube; the kernel takes 1 to 3")]
    BadWarpgroups(u32),
    /// The problem is empty or past 32-bit indexing.
    #[error("batch*heads = {batch_heads}, tokens = {tokens}: {why}")]
    BadShape {
        /// Batch times heads.
        batch_heads: usize,
        /// Tokens per sequence.
        tokens: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// Warpgroups per cube of the dense kernel.
pub const WARPGROUPS: u32 = 3;

/// Dense attention `softmax(scale * q k^T) v` over `[batch_heads, tokens, 128]` bf16 buffers,
/// one launch. `scale` defaults to `1/sqrt(128)` when `None`.
#[allow(clippy::too_many_arguments)]
pub fn dense_attention(
    client: &cubecl::client::Client,
    q: &cubecl::server::Handle,
    k: &cubecl::server::Handle,
    v: &cubecl::server::Handle,
    out: &cubecl::server::Handle,
    batch_heads: usize,
    tokens: usize,
    scale: Option<f32>,
) -> Result<(), HopperError> {
    dense_attention_with(
        client,
        q,
        k,
        v,
        out,
        batch_heads,
        tokens,
        scale,
        WARPGROUPS,
        true,
    )
}

/// [`dense_attention`] with `warpgroups` (1 to 3) warpgroups of 64 query rows per cube, and
/// K/V staged by `cp.async` (`async_copy`) or through registers.
#[allow(clippy::too_many_arguments)]
pub fn dense_attention_with(
    client: &cubecl::client::Client,
    q: &cubecl::server::Handle,
    k: &cubecl::server::Handle,
    v: &cubecl::server::Handle,
    out: &cubecl::server::Handle,
    batch_heads: usize,
    tokens: usize,
    scale: Option<f32>,
    warpgroups: u32,
    async_copy: bool,
) -> Result<(), HopperError> {
    if !(1..=3).contains(&warpgroups) {
        return Err(HopperError::BadWarpgroups(warpgroups));
    }
    let d = HEAD_DIM as usize;
    if batch_heads == 0 || tokens == 0 {
        return Err(HopperError::BadShape {
            batch_heads,
            tokens,
            why: "empty problem",
        });
    }
    let elems = batch_heads
        .checked_mul(tokens)
        .and_then(|x| x.checked_mul(d))
        .filter(|x| *x <= u32::MAX as usize)
        .ok_or(HopperError::BadShape {
            batch_heads,
            tokens,
            why: "more than 2^32 elements (32-bit indexing)",
        })?;
    if batch_heads > 65_535 {
        return Err(HopperError::BadShape {
            batch_heads,
            tokens,
            why: "more than 65535 heads",
        });
    }
    for (name, h) in [("q", q), ("k", k), ("v", v), ("out", out)] {
        let got = h.size_in_used() as usize / 2;
        if got != elems {
            return Err(HopperError::BadLength {
                name,
                got,
                want: elems,
            });
        }
    }
    let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
    let rows = (ROWS_PER_WARPGROUP * warpgroups) as usize;
    let cubes = tokens.div_ceil(rows) as u32;
    unsafe {
        flash_fwd_kernel::launch(
            client,
            CubeCount::Static(cubes, batch_heads as u32, 1),
            CubeDim::new_1d(128 * warpgroups),
            BufferArg::from_raw_parts(q.clone(), elems / 8),
            BufferArg::from_raw_parts(k.clone(), elems / 8),
            BufferArg::from_raw_parts(v.clone(), elems / 8),
            BufferArg::from_raw_parts(out.clone(), elems),
            tokens as u32,
            scale * std::f32::consts::LOG2_E,
            warpgroups,
            async_copy,
        );
    }
    Ok(())
}

/// f64 reference of [`dense_attention`] on bf16 inputs given as f32.
pub fn dense_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch_heads: usize,
    tokens: usize,
    scale: f64,
) -> Vec<f64> {
    let d = HEAD_DIM as usize;
    let mut out = vec![0f64; batch_heads * tokens * d];
    let mut s = vec![0f64; tokens];
    for h in 0..batch_heads {
        let base = h * tokens * d;
        for i in 0..tokens {
            let qi = &q[base + i * d..base + (i + 1) * d];
            let mut mx = f64::NEG_INFINITY;
            for (j, sj) in s.iter_mut().enumerate() {
                let kj = &k[base + j * d..base + (j + 1) * d];
                *sj = qi
                    .iter()
                    .zip(kj)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale;
                mx = mx.max(*sj);
            }
            let mut sum = 0f64;
            for sj in s.iter_mut() {
                *sj = (*sj - mx).exp();
                sum += *sj;
            }
            let o = &mut out[base + i * d..base + (i + 1) * d];
            for (j, sj) in s.iter().enumerate() {
                let vj = &v[base + j * d..base + (j + 1) * d];
                for (oc, vc) in o.iter_mut().zip(vj) {
                    *oc += sj / sum * *vc as f64;
                }
            }
        }
    }
    out
}

/// Little-endian bytes of a bf16 slice (what the device buffers hold).
pub fn bf16_bytes(v: &[bf16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

/// bf16 values of little-endian bytes.
pub fn bf16_from_bytes(b: &[u8]) -> Vec<bf16> {
    b.chunks_exact(2)
        .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}
