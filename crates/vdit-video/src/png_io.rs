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
        let path = dir.join(png_frame_name(i));
        let bytes = encode_png_rgb(video.width, video.height, frame).map_err(|e| err(&path, &e))?;
        vdit_patterns::write_atomic(&path, &bytes).map_err(|e| err(&path, &e))?;
    }
    Ok(())
}

/// The file name of frame `i` in a PNG frame folder: `frame_NNNN.png`.
pub fn png_frame_name(i: usize) -> String {
    format!("frame_{i:04}.png")
}

/// One 8-bit RGB image (`width * height * 3` bytes, row-major) as PNG bytes.
pub fn encode_png_rgb(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: &dyn std::fmt::Display| VideoError::Invalid(format!("PNG {width}x{height}: {e}"));
    if rgb.len() != width * height * 3 || width > u32::MAX as usize || height > u32::MAX as usize {
        return Err(bad(&format!(
            "{} bytes, expected {}",
            rgb.len(),
            width * height * 3
        )));
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| bad(&e))?;
        w.write_image_data(rgb).map_err(|e| bad(&e))?;
    }
    Ok(bytes)
}
