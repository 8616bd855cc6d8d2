//! Video output of the Sparse-vDiT pipelines: RGB frames to MP4 (H.264) and PNG, and
//! back (to check a written file).
//!
//! **Why OpenH264 + `mp4`:** the `openh264` crate compiles Cisco's BSD-licensed encoder and
//! decoder from the source it bundles (a C/C++ compiler at build time, nothing at run
//! time, no system library, no network), and the pure-Rust `mp4` crate muxes and
//! demuxes the ISO-BMFF container. So `generate` writes a standard MP4 (H.264
//! constrained-baseline, `avc1`) on a fresh machine without ffmpeg, and tests decode the
//! file they wrote with the same code.
//!
//! ```
//! use vdit_video::{Video, read_mp4, write_mp4};
//!
//! let (w, h) = (32, 16);
//! let frames = (0..5)
//!     .map(|t| (0..w * h * 3).map(|i| ((i + 10 * t) % 256) as u8).collect())
//!     .collect();
//! let video = Video::new(w, h, frames)?;
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("clip.mp4");
//! write_mp4(&path, &video, 16)?;
//! let back = read_mp4(&path)?;
//! assert_eq!((back.width, back.height, back.frames.len()), (32, 16, 5));
//! # Ok::<(), vdit_video::VideoError>(())
//! ```
#![warn(missing_docs)]

pub mod metrics;
mod mp4_io;
mod png_io;

use std::path::PathBuf;

pub use metrics::{psnr_frame, ssim_frame, video_psnr_ssim};
pub use mp4_io::{encode_mp4, read_mp4, write_mp4};
pub use png_io::{encode_png_rgb, png_frame_name, write_png_frames};

/// Why a video could not be built, written or read.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// Frames with inconsistent or unsupported sizes.
    #[error("invalid video: {0}")]
    Invalid(String),
    /// A file could not be written or read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The H.264 encoder or decoder failed.
    #[error("H.264 ({context}): {message}")]
    Codec {
        /// Which step.
        context: String,
        /// What OpenH264 said.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = VideoError> = std::result::Result<T, E>;

/// RGB8 frames of one size, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Frames, each `height * width * 3` bytes.
    pub frames: Vec<Vec<u8>>,
}

impl Video {
    /// Checks that every frame has `width * height * 3` bytes and there is at least one.
    pub fn new(width: usize, height: usize, frames: Vec<Vec<u8>>) -> Result<Self> {
        if width == 0 || height == 0 || frames.is_empty() {
            return Err(VideoError::Invalid(format!(
                "{} frames of {width}x{height}: need at least one frame of positive size",
                frames.len()
            )));
        }
        let n = width * height * 3;
        if let Some((i, f)) = frames.iter().enumerate().find(|(_, f)| f.len() != n) {
            return Err(VideoError::Invalid(format!(
                "frame {i} has {} bytes, expected {width}x{height}x3 = {n}",
                f.len()
            )));
        }
        Ok(Video {
            width,
            height,
            frames,
        })
    }

    /// Frames from floats in `[0, 1]` laid out `[F, 3, H, W]` (the pipeline's
    /// `output_type="pt"` layout for one video), rounded like PIL's `(x * 255).round()`.
    pub fn from_unit_chw(
        values: &[f32],
        frames: usize,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        let plane = height * width;
        if values.len() != frames * 3 * plane {
            return Err(VideoError::Invalid(format!(
                "{} values for {frames} frames of 3x{height}x{width}",
                values.len()
            )));
        }
        let out = (0..frames)
            .map(|f| {
                let base = f * 3 * plane;
                let mut rgb = vec![0u8; plane * 3];
                for p in 0..plane {
                    for c in 0..3 {
                        let v = values[base + c * plane + p].clamp(0.0, 1.0);
                        rgb[p * 3 + c] = (v * 255.0).round() as u8;
                    }
                }
                rgb
            })
            .collect();
        Video::new(width, height, out)
    }
}
