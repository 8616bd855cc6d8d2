//! MP4 (H.264) writing and reading: OpenH264 for the codec, the `mp4` crate for the
//! container. Samples are stored length-prefixed (AVCC) with SPS / PPS in the `avcC` box.

use std::io::Cursor;
use std::path::Path;

use mp4::{
    AvcConfig, Bytes, MediaConfig, Mp4Config, Mp4Reader, Mp4Sample, Mp4Writer, TrackConfig,
    TrackType,
};
use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};

use crate::{Result, Video, VideoError};

/// Track timescale ticks per frame.
const TICKS_PER_FRAME: u32 = 1000;

fn codec(context: &str, e: impl std::fmt::Display) -> VideoError {
    VideoError::Codec {
        context: context.into(),
        message: e.to_string(),
    }
}

fn container(path: &Path, e: impl std::fmt::Display) -> VideoError {
    VideoError::File {
        path: path.to_owned(),
        message: format!("MP4: {e}"),
    }
}

/// NAL units of an Annex-B byte stream, without their start codes.
fn annex_b_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (k, &(_, begin)) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |s| s.0);
        // A 4-byte start code leaves one zero before the next 3-byte one.
        while end > begin && data[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        units.push(&data[begin..end]);
    }
    units
}

/// Writes `video` as an H.264 MP4 at `fps` frames per second, atomically (temp file +
/// rename). Odd sizes are rejected (4:2:0 chroma needs even width and height).
pub fn write_mp4(path: &Path, video: &Video, fps: u32) -> Result<()> {
    let data = encode_mp4(video, fps).map_err(|e| match e {
        VideoError::File { message, .. } => VideoError::File {
            path: path.to_owned(),
            message,
        },
        other => other,
    })?;
    vdit_patterns::write_atomic(path, &data).map_err(|e| VideoError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The bytes of `video` as an H.264 MP4 at `fps` frames per second (what [`write_mp4`]
/// writes), e.g. to stage several outputs and rename them together.
pub fn encode_mp4(video: &Video, fps: u32) -> Result<Vec<u8>> {
    let path = Path::new("<mp4 in memory>");
    let (w, h) = (video.width, video.height);
    if w % 2 != 0 || h % 2 != 0 || w > u16::MAX as usize || h > u16::MAX as usize || fps == 0 {
        return Err(VideoError::Invalid(format!(
            "H.264 needs even sizes up to 65535 and fps > 0, got {w}x{h} at {fps} fps"
        )));
    }
    // ~0.2 bits per pixel per frame keeps generated videos sharp at small sizes.
    let bitrate = ((w * h) as f64 * fps as f64 * 0.2).max(500_000.0) as u32;
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(bitrate))
        .max_frame_rate(FrameRate::from_hz(fps as f32));
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| codec("encoder", e))?;
    let mut sps: Option<Vec<u8>> = None;
    let mut pps: Option<Vec<u8>> = None;
    let mut samples: Vec<(Vec<u8>, bool)> = Vec::with_capacity(video.frames.len());
    for (i, frame) in video.frames.iter().enumerate() {
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(frame, (w, h)));
        let stream = encoder
            .encode(&yuv)
            .map_err(|e| codec(&format!("encoding frame {i}"), e))?;
        let bytes = stream.to_vec();
        let mut sample = Vec::with_capacity(bytes.len());
        let mut sync = false;
        for unit in annex_b_units(&bytes) {
            let Some(&header) = unit.first() else {
                continue;
            };
            match header & 0x1f {
                7 => sps = sps.or_else(|| Some(unit.to_vec())),
                8 => pps = pps.or_else(|| Some(unit.to_vec())),
                t => {
                    sync |= t == 5;
                    sample.extend_from_slice(&(unit.len() as u32).to_be_bytes());
                    sample.extend_from_slice(unit);
                }
            }
        }
        if sample.is_empty() {
            return Err(codec(
                &format!("encoding frame {i}"),
                "the encoder skipped the frame",
            ));
        }
        samples.push((sample, sync));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(codec("encoder", "no SPS/PPS in the stream"));
    };
    let mp4_config = Mp4Config {
        major_brand: "isom".parse().map_err(|e| container(path, e))?,
        minor_version: 512,
        compatible_brands: ["isom", "iso2", "avc1", "mp41"]
            .iter()
            .map(|b| b.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| container(path, e))?,
        timescale: 1000,
    };
    let mut writer = Mp4Writer::write_start(Cursor::new(Vec::new()), &mp4_config)
        .map_err(|e| container(path, e))?;
    writer
        .add_track(&TrackConfig {
            track_type: TrackType::Video,
            timescale: fps * TICKS_PER_FRAME,
            language: "und".into(),
            media_conf: MediaConfig::AvcConfig(AvcConfig {
                width: w as u16,
                height: h as u16,
                seq_param_set: sps,
                pic_param_set: pps,
            }),
        })
        .map_err(|e| container(path, e))?;
    for (i, (bytes, is_sync)) in samples.into_iter().enumerate() {
        let sample = Mp4Sample {
            start_time: i as u64 * TICKS_PER_FRAME as u64,
            duration: TICKS_PER_FRAME,
            rendering_offset: 0,
            is_sync,
            bytes: Bytes::from(bytes),
        };
        writer
            .write_sample(1, &sample)
            .map_err(|e| container(path, e))?;
    }
    writer.write_end().map_err(|e| container(path, e))?;
    Ok(writer.into_writer().into_inner())
}

/// Reads and decodes the first video track of an H.264 MP4 into RGB frames.
pub fn read_mp4(path: &Path) -> Result<Video> {
    let data = std::fs::read(path).map_err(|e| VideoError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let size = data.len() as u64;
    let mut reader =
        Mp4Reader::read_header(Cursor::new(data), size).map_err(|e| container(path, e))?;
    let (track_id, sps, pps) = {
        let (id, track) = reader
            .tracks()
            .iter()
            .find(|(_, t)| t.track_type().ok() == Some(TrackType::Video))
            .ok_or_else(|| container(path, "no video track"))?;
        let sps = track
            .sequence_parameter_set()
            .map_err(|e| container(path, e))?
            .to_vec();
        let pps = track
            .picture_parameter_set()
            .map_err(|e| container(path, e))?
            .to_vec();
        (*id, sps, pps)
    };
    let count = reader
        .sample_count(track_id)
        .map_err(|e| container(path, e))?;
    let mut decoder = Decoder::new().map_err(|e| codec("decoder", e))?;
    let mut annex_b = Vec::new();
    for ps in [&sps, &pps] {
        annex_b.extend_from_slice(&[0, 0, 0, 1]);
        annex_b.extend_from_slice(ps);
    }
    decoder
        .decode(&annex_b)
        .map_err(|e| codec("parameter sets", e))?;
    let mut frames = Vec::with_capacity(count as usize);
    let (mut width, mut height) = (0, 0);
    for id in 1..=count {
        let sample = reader
            .read_sample(track_id, id)
            .map_err(|e| container(path, e))?
            .ok_or_else(|| container(path, format!("sample {id} missing")))?;
        let mut packet = Vec::with_capacity(sample.bytes.len() + 16);
        let mut rest: &[u8] = &sample.bytes;
        while rest.len() >= 4 {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 4 + n {
                return Err(container(path, format!("sample {id}: truncated NAL unit")));
            }
            packet.extend_from_slice(&[0, 0, 0, 1]);
            packet.extend_from_slice(&rest[4..4 + n]);
            rest = &rest[4 + n..];
        }
        if let Some(yuv) = decoder
            .decode(&packet)
            .map_err(|e| codec(&format!("decoding sample {id}"), e))?
        {
            (width, height) = yuv.dimensions();
            let mut rgb = vec![0u8; width * height * 3];
            yuv.write_rgb8(&mut rgb);
            frames.push(rgb);
        }
    }
    for yuv in decoder
        .flush_remaining()
        .map_err(|e| codec("flushing the decoder", e))?
    {
        (width, height) = yuv.dimensions();
        let mut rgb = vec![0u8; width * height * 3];
        yuv.write_rgb8(&mut rgb);
        frames.push(rgb);
    }
    Video::new(width, height, frames)
}
