//! MP4 round trips (the file decodes to the frames written, within H.264's loss) and the
//! quality metrics against scikit-image (`tests/fixtures/metrics.json`, written by
//! `tools/fixtures_wan_t2v.py --only-metrics`).

use std::path::PathBuf;

use vdit_video::{Video, VideoError, psnr_frame, read_mp4, ssim_frame, video_psnr_ssim, write_mp4};

fn gradient_video(w: usize, h: usize, n: usize) -> Video {
    let frames = (0..n)
        .map(|t| {
            let mut f = vec![0u8; w * h * 3];
            for y in 0..h {
                for x in 0..w {
                    let p = (y * w + x) * 3;
                    f[p] = ((x * 255) / w) as u8;
                    f[p + 1] = ((y * 255) / h) as u8;
                    f[p + 2] = ((t * 40 + x + y) % 256) as u8;
                }
            }
            f
        })
        .collect();
    Video::new(w, h, frames).unwrap()
}

#[test]
fn mp4_round_trip_keeps_frame_count_size_and_content() {
    let video = gradient_video(96, 64, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.mp4");
    write_mp4(&path, &video, 16).unwrap();
    let back = read_mp4(&path).unwrap();
    assert_eq!((back.frames.len(), back.width, back.height), (7, 96, 64));
    let (psnr, ssim) = video_psnr_ssim(&video, &back).unwrap();
    println!("round trip: PSNR {psnr:.2} dB, SSIM {ssim:.4}");
    assert!(psnr > 30.0 && ssim > 0.9, "PSNR {psnr:.2} SSIM {ssim:.4}");
}

#[test]
fn odd_sizes_are_rejected_and_nothing_is_written() {
    let video = Video::new(5, 4, vec![vec![0; 60]]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mp4");
    let err = write_mp4(&path, &video, 16).unwrap_err();
    assert!(matches!(err, VideoError::Invalid(_)), "{err}");
    assert!(!path.exists());
    let err = Video::new(4, 4, vec![vec![0; 10]]).unwrap_err().to_string();
    assert!(err.contains("frame 0 has 10 bytes"), "{err}");
}

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in json["cases"].as_array().unwrap() {
        let bytes = |k: &str| -> Vec<u8> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect()
        };
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let (r, t) = (bytes("reference"), bytes("test"));
        let psnr = psnr_frame(&r, &t);
        let ssim = ssim_frame(&r, &t, w, h);
        let (want_p, want_s) = (
            case["psnr"].as_f64().unwrap(),
            case["ssim"].as_f64().unwrap(),
        );
        println!(
            "{}: psnr {psnr} vs {want_p}, ssim {ssim} vs {want_s}",
            case["name"]
        );
        assert!(
            (psnr - want_p).abs() < 1e-9,
            "{}: psnr {psnr} vs {want_p}",
            case["name"]
        );
        assert!(
            (ssim - want_s).abs() < 1e-9,
            "{}: ssim {ssim} vs {want_s}",
            case["name"]
        );
    }
}
