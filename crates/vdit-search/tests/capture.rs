//! Capture files: round trips (Rust and the Python writer) and rejection of bad files.

mod common;

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use vdit_patterns::{TextPosition, VideoLayout};
use vdit_search::{
    CaptureDtype, CaptureFile, CaptureMeta, CaptureSource, NoProgress, SearchError, search,
    write_capture_file,
};

fn write_planted(
    dir: &Path,
    m: &vdit_search::PlantedModel,
    sample: usize,
    dtype: CaptureDtype,
) -> std::path::PathBuf {
    let path = dir.join(format!("sample{sample}.safetensors"));
    let data: Vec<(usize, usize, vdit_search::LayerQkv)> = m
        .steps
        .iter()
        .flat_map(|&s| (0..m.layers).map(move |l| (s, l)))
        .map(|(s, l)| (s, l, m.generate(sample, s, l)))
        .collect();
    let meta = CaptureMeta {
        layout: m.layout,
        model: m.name.clone(),
    };
    write_capture_file(
        &path,
        &meta,
        data.iter().map(|(s, l, q)| (*s, *l, q)),
        dtype,
    )
    .unwrap();
    path
}

#[test]
fn capture_files_round_trip_in_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = common::planted_models().remove(1); // text prefix
    m.steps = vec![0, 5];
    for (dtype, tol) in [
        (CaptureDtype::F32, 0.0),
        (CaptureDtype::F16, 1e-3),
        (CaptureDtype::Bf16, 8e-3),
    ] {
        let path = write_planted(dir.path(), &m, 0, dtype);
        let f = CaptureFile::open(&path).unwrap();
        assert_eq!(f.meta().layout, m.layout);
        assert_eq!(f.meta().model, m.name);
        assert_eq!(f.steps(), &[0, 5]);
        assert_eq!(
            (f.layers(), f.heads(), f.head_dim()),
            (m.layers, m.heads, m.head_dim)
        );
        let want = m.generate(0, 5, 1);
        let got = f.read(5, 1).unwrap();
        for (a, b) in want
            .q
            .iter()
            .chain(&want.k)
            .chain(&want.v)
            .zip(got.q.iter().chain(&got.k).chain(&got.v))
        {
            assert!(
                (a - b).abs() <= tol * a.abs().max(1e-3) + if tol > 0.0 { 1e-6 } else { 0.0 },
                "{dtype:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn searching_captures_gives_the_same_plan_as_the_planted_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = common::planted_models().remove(2); // text suffix
    m.layers = 1;
    let paths: Vec<_> = (0..m.samples)
        .map(|s| write_planted(dir.path(), &m, s, CaptureDtype::F32))
        .collect();
    let mut source = CaptureSource::open(&paths).unwrap();
    let from_files = search(
        &mut source,
        &common::opts(),
        &common::cost(),
        common::meta(),
        &NoProgress,
    )
    .unwrap();
    let direct = search(
        &mut m.clone(),
        &common::opts(),
        &common::cost(),
        common::meta(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(from_files.decisions, direct.decisions);
    assert_eq!(
        from_files.plan.model.id, m.name,
        "model id from the capture metadata"
    );
    assert_eq!(from_files.plan.search.samples, 2);
    assert!(m.recovery(&from_files.plan).mismatches.is_empty());
}

/// Writes a raw safetensors file with f32 tensors and string metadata.
fn raw(path: &Path, tensors: &[(&str, Vec<usize>)], meta: &[(&str, &str)]) {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s)| {
            (
                n.to_string(),
                s.clone(),
                vec![0u8; 4 * s.iter().product::<usize>()],
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

const META: [(&str, &str); 6] = [
    ("frames", "2"),
    ("height", "2"),
    ("width", "4"),
    ("text_tokens", "0"),
    ("text_position", "none"),
    ("model", "m"),
];

fn open_err(tensors: &[(&str, Vec<usize>)], meta: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    raw(&path, tensors, meta);
    let e = CaptureFile::open(&path).unwrap_err();
    assert!(matches!(e, SearchError::Capture { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn bad_capture_files_are_rejected_with_the_reason() {
    let s = vec![2, 16, 8];
    let full = [
        ("q.0.0", s.clone()),
        ("k.0.0", s.clone()),
        ("v.0.0", s.clone()),
    ];
    // A valid file opens.
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.safetensors");
    raw(&ok, &full, &META);
    assert_eq!(CaptureFile::open(&ok).unwrap().heads(), 2);

    let e = open_err(&full[..2], &META);
    assert!(e.contains("missing tensor(s) v.0.0"), "{e}");
    let e = open_err(
        &[
            ("q.0.0", s.clone()),
            ("k.0.0", s.clone()),
            ("v.0.0", s.clone()),
            ("q.0.1", s.clone()),
        ],
        &META,
    );
    assert!(e.contains("k.0.1") && e.contains("v.0.1"), "{e}");
    let e = open_err(
        &[
            ("q.0.0", vec![2, 15, 8]),
            ("k.0.0", s.clone()),
            ("v.0.0", s.clone()),
        ],
        &META,
    );
    assert!(e.contains("15 tokens") && e.contains("has 16"), "{e}");
    let e = open_err(
        &[
            ("q.0.0", vec![3, 16, 8]),
            ("k.0.0", s.clone()),
            ("v.0.0", s.clone()),
        ],
        &META,
    );
    assert!(e.contains("heads x head_dim"), "{e}");
    let e = open_err(
        &[
            ("q.0.0", vec![16, 8]),
            ("k.0.0", s.clone()),
            ("v.0.0", s.clone()),
        ],
        &META,
    );
    assert!(e.contains("expected [heads, tokens, head_dim]"), "{e}");
    let e = open_err(&[("attn.q", s.clone())], &META);
    assert!(e.contains("unexpected tensor `attn.q`"), "{e}");

    let mut meta = META;
    meta[4] = ("text_position", "middle");
    let e = open_err(&full, &meta);
    assert!(e.contains("text_position") && e.contains("middle"), "{e}");
    let mut meta = META;
    meta[3] = ("text_tokens", "5");
    let e = open_err(&full, &meta);
    assert!(e.contains("metadata layout"), "{e}");
    let mut meta = META;
    meta[0] = ("frames", "two");
    let e = open_err(&full, &meta);
    assert!(
        e.contains("`frames`") && e.contains("not a non-negative integer"),
        "{e}"
    );
    let e = open_err(&full, &META[..5]);
    assert!(e.contains("`model` is missing"), "{e}");

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let e = CaptureFile::open(&junk).unwrap_err().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");
    let e = CaptureFile::open(&dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(e, SearchError::Io { .. }), "{e:?}");
}

#[test]
fn samples_with_different_layouts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let s = vec![1, 16, 8];
    let full = [
        ("q.0.0", s.clone()),
        ("k.0.0", s.clone()),
        ("v.0.0", s.clone()),
    ];
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    raw(&a, &full, &META);
    let mut meta = META;
    meta[1] = ("height", "4");
    meta[2] = ("width", "2");
    raw(&b, &full, &meta);
    let e = CaptureSource::open(&[a, b]).unwrap_err();
    assert!(matches!(e, SearchError::Inconsistent(_)), "{e:?}");
    assert!(e.to_string().contains("layout"), "{e}");
}

/// The Python writer's demo file reads back with the values it documents. Skipped
/// (with a message) when python3 or NumPy is not available.
#[test]
fn python_writer_output_reads_back() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/write_captures.py");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!("skipping python_writer_output_reads_back: python3 with numpy not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.safetensors");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("--demo")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = CaptureFile::open(&path).unwrap();
    let layout = VideoLayout::new(2, 3, 4)
        .unwrap()
        .with_text(5, TextPosition::Prefix)
        .unwrap();
    assert_eq!(f.meta().layout, layout);
    assert_eq!(f.meta().model, "python-demo");
    assert_eq!(f.steps(), &[0, 7]);
    assert_eq!((f.layers(), f.heads(), f.head_dim()), (2, 3, 8));
    let qkv = f.read(7, 1).unwrap();
    for (i, ((q, k), v)) in qkv.q.iter().zip(&qkv.k).zip(&qkv.v).enumerate() {
        let (eq, ev) = (0.001 * i as f32, 0.002 * i as f32);
        // f16 keeps 11 significant bits.
        assert!(
            (q - eq).abs() <= eq * 1e-3 + 1e-7,
            "q[{i}] = {q}, expected {eq}"
        );
        assert!((k + eq).abs() <= eq * 1e-3 + 1e-7, "k[{i}] = {k}");
        assert!((v - ev).abs() <= ev * 1e-3 + 1e-7, "v[{i}] = {v}");
    }
}
