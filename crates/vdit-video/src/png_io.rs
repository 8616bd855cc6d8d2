//! PNG frames (`frame_0000.png`, ...), each written atomically.

use std::path::Path;

use crate::{Result, Video, VideoError};

/// Writes every frame of `video` as `dir/frame_NNNN.png` (8-bit RGB), creating `dir`.
pub fn write_png_frames(dir: &Path, video: &Video) -> Result<()> {
    let err = |path: &Path, e: &dyn std::fmt::Display| VideoError::File {
        path: path.to_owned(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
    for (i, frame) in video.frames.iter().enumerate() {
        let path = dir.join(format!("frame_{i:04}.png"));
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, video.width as u32, video.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| err(&path, &e))?;
            w.write_image_data(frame).map_err(|e| err(&path, &e))?;
        }
        vdit_patterns::write_atomic(&path, &bytes).map_err(|e| err(&path, &e))?;
    }
    Ok(())
}
