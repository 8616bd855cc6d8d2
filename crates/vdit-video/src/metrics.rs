//! Frame quality metrics with scikit-image's definitions: PSNR
//! (`skimage.metrics.peak_signal_noise_ratio`, data range 255) and SSIM
//! (`skimage.metrics.structural_similarity` with its defaults for uint8 RGB:
//! 7x7 uniform window, `K1 = 0.01`, `K2 = 0.03`, sample covariance, mean over channels,
//! the `(7 - 1) / 2` pixel border excluded from the mean).

use crate::{Result, Video, VideoError};

fn check_pair(a: &Video, b: &Video) -> Result<()> {
    if (a.width, a.height, a.frames.len()) != (b.width, b.height, b.frames.len()) {
        return Err(VideoError::Invalid(format!(
            "videos differ in size: {} frames of {}x{} vs {} frames of {}x{}",
            a.frames.len(),
            a.width,
            a.height,
            b.frames.len(),
            b.width,
            b.height
        )));
    }
    Ok(())
}

/// PSNR in dB of one RGB8 frame against a reference (`+inf` when identical).
pub fn psnr_frame(reference: &[u8], test: &[u8]) -> f64 {
    let mse = reference
        .iter()
        .zip(test)
        .map(|(&r, &t)| (r as f64 - t as f64).powi(2))
        .sum::<f64>()
        / reference.len().max(1) as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// SSIM of one RGB8 frame (`width x height x 3`) against a reference.
pub fn ssim_frame(reference: &[u8], test: &[u8], width: usize, height: usize) -> f64 {
    const WIN: usize = 7;
    if width < WIN || height < WIN {
        return f64::NAN;
    }
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let np = (WIN * WIN) as f64;
    let cov_norm = np / (np - 1.0);
    let pad = (WIN - 1) / 2;
    let mut total = 0.0;
    for ch in 0..3 {
        let get = |img: &[u8], y: usize, x: usize| img[(y * width + x) * 3 + ch] as f64;
        let mut sum = 0.0;
        let mut count = 0usize;
        // Windows centred at (y, x) with the border excluded lie inside the image, so
        // scikit-image's reflect padding of the filter never matters for the mean.
        for y in pad..height - pad {
            for x in pad..width - pad {
                let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for dy in 0..WIN {
                    for dx in 0..WIN {
                        let (yy, xx) = (y + dy - pad, x + dx - pad);
                        let (a, b) = (get(reference, yy, xx), get(test, yy, xx));
                        sa += a;
                        sb += b;
                        saa += a * a;
                        sbb += b * b;
                        sab += a * b;
                    }
                }
                let (ua, ub) = (sa / np, sb / np);
                let vaa = cov_norm * (saa / np - ua * ua);
                let vbb = cov_norm * (sbb / np - ub * ub);
                let vab = cov_norm * (sab / np - ua * ub);
                let s = ((2.0 * ua * ub + c1) * (2.0 * vab + c2))
                    / ((ua * ua + ub * ub + c1) * (vaa + vbb + c2));
                sum += s;
                count += 1;
            }
        }
        total += sum / count as f64;
    }
    total / 3.0
}

/// Mean PSNR and mean SSIM over the frames of `test` against `reference`.
pub fn video_psnr_ssim(reference: &Video, test: &Video) -> Result<(f64, f64)> {
    check_pair(reference, test)?;
    let n = reference.frames.len() as f64;
    let (mut p, mut s) = (0.0, 0.0);
    for (r, t) in reference.frames.iter().zip(&test.frames) {
        p += psnr_frame(r, t);
        s += ssim_frame(r, t, reference.width, reference.height);
    }
    Ok((p / n, s / n))
}
