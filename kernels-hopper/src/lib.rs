//! Staged Hopper (sm_90a) attention engine for Sparse-vDiT, on CubeCL 0.11.
//!
//! The workspace is still on Burn 0.21 / CubeCL 0.10, which cannot issue Hopper's warpgroup
//! MMA. This crate is built on CubeCL 0.11 (inline PTX through `gpu_asm!`, compiled by the
//! C++/NVRTC backend) outside the workspace, and joins `kernels-cubecl` when the stack issue
//! moves the workspace. See README.md.
//!
//! - [`layout`]: shared-memory layouts and `wgmma` descriptors, plain Rust (CPU-tested).
//! - [`ptx`]: `#[cube]` wrappers of the PTX instructions (`ex2.approx`, `wgmma`, fences).
//! - [`attention`]: the dense flash-attention forward on `wgmma` (head dim 128).
//! - [`host`]: launch, errors, and the f64 reference.
//! - [`probe`]: kernels that check those wrappers on the device.

pub mod attention;
pub mod host;
pub mod layout;
pub mod probe;
pub mod ptx;
