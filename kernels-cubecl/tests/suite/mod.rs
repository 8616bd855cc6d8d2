//! Runtime-generic kernel tests against the f64 reference. Instantiated per runtime by
//! `testgen_sparse_attention!` in `sparse_attention.rs`.
#![allow(dead_code)]

use cubecl::prelude::*;
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vdit_kernels::reference::sparse_attention_reference;
use vdit_kernels::{
    AttentionBuffers, AttnDtype, DeviceLayer, KernelError, KernelPath, LaunchInfo, MaskDtype,
    SparseAttention, TcOptions, launch, launch_count,
};
use vdit_patterns::{CompiledLayer, Pattern, TextPosition, TokenSpan, VideoLayout};

/// Host-side inputs of one case (f32 values already rounded to the dtype).
pub struct Case {
    pub layer: CompiledLayer,
    pub problem: SparseAttention,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub padding: Option<Vec<bool>>,
}

pub fn encode(x: &[f32], dt: AttnDtype) -> Vec<u8> {
    match dt {
        AttnDtype::F32 => bytemuck::cast_slice(x).to_vec(),
        AttnDtype::F16 => x
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        AttnDtype::BF16 => x
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

pub fn decode(b: &[u8], dt: AttnDtype) -> Vec<f32> {
    match dt {
        AttnDtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        AttnDtype::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        AttnDtype::BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

fn round(x: Vec<f32>, dt: AttnDtype) -> Vec<f32> {
    decode(&encode(&x, dt), dt)
}

pub fn random_layout(rng: &mut StdRng) -> VideoLayout {
    let frames = rng.random_range(2..=5);
    let (h, w) = (rng.random_range(3..=9), rng.random_range(4..=12));
    let base = VideoLayout::new(frames, h, w).unwrap();
    match rng.random_range(0..3) {
        0 => base,
        1 => base
            .with_text(rng.random_range(3..=20), TextPosition::Prefix)
            .unwrap(),
        _ => base
            .with_text(rng.random_range(3..=20), TextPosition::Suffix)
            .unwrap(),
    }
}

pub fn random_pattern(rng: &mut StdRng, layout: &VideoLayout) -> Pattern {
    let video = layout.video_tokens();
    match rng.random_range(0..5) {
        0 => Pattern::Dense,
        1 => Pattern::Skip,
        2 => Pattern::Diagonal {
            band: rng.random_range(0.05..1.0),
        },
        3 => Pattern::MultiDiagonal {
            spatial_band: rng.random_range(0.0..0.3),
            frame_reach: rng.random_range(0..2),
        },
        _ => {
            let a = rng.random_range(0..video - 1);
            let b = rng.random_range(a + 1..=video.min(a + 12));
            let band = if rng.random_bool(0.5) {
                Some(rng.random_range(0.05..0.5))
            } else {
                None
            };
            Pattern::VerticalStripe {
                columns: vec![TokenSpan::from_tokens(a..b, video)],
                band,
            }
        }
    }
}

pub fn random_values(rng: &mut StdRng, n: usize, amp: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-amp..amp)).collect()
}

#[allow(clippy::too_many_arguments)]
pub fn make_case(
    rng: &mut StdRng,
    layout: VideoLayout,
    patterns: &[Pattern],
    block_size: usize,
    batch: usize,
    head_dim: usize,
    dtype: AttnDtype,
    amp: f32,
) -> Case {
    let layer = CompiledLayer::compile(patterns, &layout, block_size).unwrap();
    let tokens = layout.total_tokens();
    let problem = SparseAttention::new(batch, patterns.len(), tokens, head_dim, dtype);
    let n = problem.qkv_elems();
    Case {
        layer,
        problem,
        q: round(random_values(rng, n, amp), dtype),
        k: round(random_values(rng, n, amp), dtype),
        v: round(random_values(rng, n, 1.0), dtype),
        padding: None,
    }
}

pub struct Outcome {
    pub out: Vec<f32>,
    pub lse: Option<Vec<f32>>,
    pub info: LaunchInfo,
}

/// Uploads, poisons the outputs with NaN, launches once, reads back.
pub fn run<R: Runtime>(client: &ComputeClient<R>, case: &Case) -> Result<Outcome, KernelError> {
    let p = &case.problem;
    let layer = DeviceLayer::<R>::upload(client, &case.layer)?;
    let up = |x: &[f32]| client.create_from_slice(&encode(x, p.dtype));
    let (q, k, v) = (up(&case.q), up(&case.k), up(&case.v));
    let out = up(&vec![f32::NAN; p.qkv_elems()]);
    let lse = p.want_lse.then(|| {
        client.create_from_slice(f32::as_bytes(&vec![f32::NAN; p.batch * p.heads * p.tokens]))
    });
    let mask = match (&case.padding, p.key_padding) {
        (Some(m), Some(MaskDtype::U8)) => {
            Some(client.create_from_slice(&m.iter().map(|&b| b as u8).collect::<Vec<_>>()))
        }
        (Some(m), Some(MaskDtype::U32)) => Some(client.create_from_slice(u32::as_bytes(
            &m.iter().map(|&b| b as u32 * 7).collect::<Vec<_>>(),
        ))),
        _ => None,
    };
    let bufs = AttentionBuffers {
        q: &q,
        k: &k,
        v: &v,
        out: &out,
        key_padding: mask.as_ref(),
        lse: lse.as_ref(),
    };
    let before = launch_count();
    let info = launch(client, &layer, p, bufs)?;
    assert_eq!(launch_count(), before + 1, "one launch per layer");
    assert_eq!(info.launches, 1);
    let out = decode(&client.read_one(out).expect("read out"), p.dtype);
    let lse = lse.map(|h| f32::from_bytes(&client.read_one(h).expect("read lse")).to_vec());
    Ok(Outcome { out, lse, info })
}

/// Runs a case and compares with the f64 reference. `tol` is the max error relative to
/// `max |ref|` for the output, and relative to `max(1, |lse|)` for lse.
pub fn check<R: Runtime>(client: &ComputeClient<R>, case: &Case, tol: f32) -> LaunchInfo {
    let p = &case.problem;
    let got = run(client, case).expect("launch");
    let (want, want_lse) = sparse_attention_reference(
        &case.q,
        &case.k,
        &case.v,
        &case.layer,
        p.batch,
        p.heads,
        p.head_dim,
        p.scale_value(),
        case.padding.as_deref(),
    )
    .unwrap();
    let max_ref = want.iter().fold(0f32, |a, &x| a.max(x.abs())).max(1e-6);
    let mut worst = 0f32;
    for (i, (&g, &w)) in got.out.iter().zip(&want).enumerate() {
        assert!(
            g.is_finite(),
            "out[{i}] = {g} (unwritten or overflow), want {w}; {:?}",
            got.info
        );
        worst = worst.max((g - w).abs() / max_ref);
    }
    assert!(
        worst <= tol,
        "max rel error {worst} > {tol} ({:?}, {:?})",
        p,
        got.info
    );
    if let Some(lse) = got.lse {
        for (i, (&g, &w)) in lse.iter().zip(&want_lse).enumerate() {
            if w == f32::NEG_INFINITY {
                assert_eq!(g, f32::NEG_INFINITY, "lse[{i}]");
            } else {
                let e = (g - w).abs() / w.abs().max(1.0);
                assert!(e <= tol, "lse[{i}] = {g}, want {w} (rel {e} > {tol})");
            }
        }
    }
    got.info
}

pub fn supports<R: Runtime>(client: &ComputeClient<R>, dt: AttnDtype) -> bool {
    client.features().supports_type(dt.storage())
}

pub fn tolerance(dt: AttnDtype, path: KernelPath) -> f32 {
    match (dt, path) {
        (AttnDtype::F32, _) => 1e-5,
        // Portable path accumulates in f32 from f16 inputs: only output rounding.
        (_, KernelPath::Portable) => 5e-3,
        _ => 1e-2,
    }
}

/// Random layouts, random per-head pattern mixes, ragged blocks, batch > 1.
pub fn random_mixes<R: Runtime>(
    device: &R::Device,
    dtype: AttnDtype,
    path: KernelPath,
    blocks: &[usize],
    dims: &[usize],
    seed: u64,
    cases: usize,
) {
    random_mixes_tc::<R>(
        device,
        dtype,
        path,
        TcOptions::default(),
        blocks,
        dims,
        seed,
        cases,
    );
}

/// [`random_mixes`] with a tensor-core variant.
#[allow(clippy::too_many_arguments)]
pub fn random_mixes_tc<R: Runtime>(
    device: &R::Device,
    dtype: AttnDtype,
    path: KernelPath,
    tc: TcOptions,
    blocks: &[usize],
    dims: &[usize],
    seed: u64,
    cases: usize,
) {
    let client = R::client(device);
    if !supports(&client, dtype) {
        eprintln!("skipping: {dtype:?} not supported on this device");
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..cases {
        let layout = random_layout(&mut rng);
        let heads = rng.random_range(3..=5);
        let patterns: Vec<Pattern> = (0..heads)
            .map(|_| random_pattern(&mut rng, &layout))
            .collect();
        let block = blocks[rng.random_range(0..blocks.len())];
        let head_dim = dims[rng.random_range(0..dims.len())];
        let batch = rng.random_range(1..=2);
        let mut case = make_case(
            &mut rng, layout, &patterns, block, batch, head_dim, dtype, 1.5,
        );
        case.problem = case.problem.clone().with_path(path).with_tc(tc);
        if rng.random_bool(0.5) {
            case.problem = case.problem.clone().with_lse();
        }
        if rng.random_bool(0.3) {
            case.problem = case.problem.clone().with_scale(rng.random_range(0.05..0.3));
        }
        let info = check(&client, &case, tolerance(dtype, path));
        if path != KernelPath::Auto {
            assert_eq!(info.path, path);
        }
        if info.path == KernelPath::TensorCore {
            // The requested engine runs where the device has it (mma needs sm_80+).
            assert!(info.engine.is_some());
        } else {
            assert_eq!(info.engine, None);
        }
    }
}

/// Logits in the thousands: the online softmax must rescale without overflow.
pub fn large_logits<R: Runtime>(
    device: &R::Device,
    dtype: AttnDtype,
    path: KernelPath,
    block: usize,
) {
    let client = R::client(device);
    if !supports(&client, dtype) {
        return;
    }
    let mut rng = StdRng::seed_from_u64(7);
    let layout = VideoLayout::new(3, 5, 7)
        .unwrap()
        .with_text(9, TextPosition::Prefix)
        .unwrap();
    let patterns = [
        Pattern::Dense,
        Pattern::Diagonal { band: 0.5 },
        Pattern::MultiDiagonal {
            spatial_band: 0.2,
            frame_reach: 1,
        },
    ];
    let mut case = make_case(&mut rng, layout, &patterns, block, 1, 64, dtype, 20.0);
    // Ascending magnitudes along the keys force many max updates.
    let d = 64;
    for (i, x) in case.k.iter_mut().enumerate() {
        let t = (i / d) % layout.total_tokens();
        *x *= 1.0 + t as f32 / 20.0;
    }
    case.k = round(case.k.clone(), dtype);
    case.problem = case.problem.clone().with_path(path).with_lse();
    // Logits reach ~1e3 here: f32 scores then carry ~1e-4 absolute rounding (the kernel
    // rounds q*scale and sums 64 products in f32), which exp() turns into relative error of
    // the weights, so the f32 bound is 2e-4 instead of 1e-5. NaN/overflow still fails.
    let tol = match dtype {
        AttnDtype::F32 => 2e-4,
        _ => tolerance(dtype, path),
    };
    check(&client, &case, tol);
}

/// Every head skipped: zeros and lse = -inf everywhere, one launch.
pub fn all_skip<R: Runtime>(device: &R::Device, path: KernelPath) {
    let client = R::client(device);
    let mut rng = StdRng::seed_from_u64(3);
    let layout = VideoLayout::new(2, 5, 9).unwrap();
    let mut case = make_case(
        &mut rng,
        layout,
        &vec![Pattern::Skip; 3],
        64,
        2,
        64,
        AttnDtype::F32,
        1.0,
    );
    case.problem = case.problem.clone().with_lse().with_path(path);
    let got = run(&client, &case).unwrap();
    assert!(
        got.out.iter().all(|&x| x == 0.0),
        "skip heads must write zeros"
    );
    assert!(got.lse.unwrap().iter().all(|&x| x == f32::NEG_INFINITY));
}

/// Every head dense (all heads share one table).
pub fn all_dense<R: Runtime>(device: &R::Device, dtype: AttnDtype, path: KernelPath, block: usize) {
    let client = R::client(device);
    if !supports(&client, dtype) {
        return;
    }
    let mut rng = StdRng::seed_from_u64(11);
    let layout = VideoLayout::new(3, 6, 7)
        .unwrap()
        .with_text(13, TextPosition::Suffix)
        .unwrap();
    let mut case = make_case(
        &mut rng,
        layout,
        &vec![Pattern::Dense; 4],
        block,
        2,
        128,
        dtype,
        1.0,
    );
    assert_eq!(case.layer.tables().len(), 1);
    case.problem = case.problem.clone().with_path(path).with_lse();
    check(&client, &case, tolerance(dtype, path));
}

/// HunyuanVideo-style padded text keys, including a batch whose every text key is padded
/// and a row block whose listed keys are all padded.
pub fn key_padding<R: Runtime>(
    device: &R::Device,
    dtype: AttnDtype,
    mask: MaskDtype,
    path: KernelPath,
    block: usize,
) {
    let client = R::client(device);
    if !supports(&client, dtype) || !client.features().supports_type(mask.storage()) {
        eprintln!("skipping: {dtype:?}/{mask:?} not supported");
        return;
    }
    let mut rng = StdRng::seed_from_u64(5);
    let layout = VideoLayout::new(3, 5, 8)
        .unwrap()
        .with_text(24, TextPosition::Suffix)
        .unwrap();
    let video = layout.video_tokens();
    let patterns = [
        Pattern::Dense,
        Pattern::Skip,
        Pattern::Diagonal { band: 0.3 },
        Pattern::MultiDiagonal {
            spatial_band: 0.1,
            frame_reach: 1,
        },
        Pattern::VerticalStripe {
            columns: vec![TokenSpan::from_tokens(0..5, video)],
            band: None,
        },
    ];
    let mut case = make_case(&mut rng, layout, &patterns, block, 3, 64, dtype, 2.0);
    let n = layout.total_tokens();
    let mut pad = vec![true; 3 * n];
    for (b, valid_text) in [(0usize, 24usize), (1, 10), (2, 0)] {
        for t in valid_text..24 {
            pad[b * n + video + t] = false;
        }
    }
    // Batch 2: also pad the whole first video block, so some stripe rows have no key.
    for t in 0..block.min(video) {
        pad[2 * n + t] = false;
    }
    case.padding = Some(pad);
    case.problem = case
        .problem
        .clone()
        .with_key_padding(mask)
        .with_path(path)
        .with_lse();
    check(&client, &case, tolerance(dtype, path));
}

/// Dense cross-attention (`kv_tokens != tokens`): ragged query and key lengths, batch 2,
/// optional key padding (one batch with every key padded), lse, against the f64 dense
/// cross reference.
pub fn cross_attention<R: Runtime>(
    device: &R::Device,
    dtype: AttnDtype,
    path: KernelPath,
    block: usize,
    head_dim: usize,
) {
    let client = R::client(device);
    if !supports(&client, dtype) {
        eprintln!("skipping: {dtype:?} not supported");
        return;
    }
    let mut rng = StdRng::seed_from_u64(21 + block as u64 + head_dim as u64);
    let (batch, heads) = (2, 3);
    for (tokens, kv_tokens, padded) in [(150, 13, false), (70, 130, true), (block, 77, true)] {
        let mut problem = SparseAttention::cross(batch, heads, tokens, kv_tokens, head_dim, dtype)
            .with_path(path)
            .with_lse();
        let mask: Option<Vec<bool>> = padded.then(|| {
            (0..batch * kv_tokens)
                .map(|i| i < kv_tokens && i % 5 != 1)
                .collect()
        });
        // u8 masks where the device stores u8 (CUDA), u32 otherwise (lavapipe).
        let mask_dtype = if client.features().supports_type(MaskDtype::U8.storage()) {
            MaskDtype::U8
        } else {
            MaskDtype::U32
        };
        if mask.is_some() {
            problem = problem.with_key_padding(mask_dtype);
        }
        let n_kv = problem.kv_elems();
        let q = round(random_values(&mut rng, problem.qkv_elems(), 2.0), dtype);
        let k = round(random_values(&mut rng, n_kv, 2.0), dtype);
        let v = round(random_values(&mut rng, n_kv, 1.0), dtype);
        let layer = DeviceLayer::<R>::dense_cross(&client, heads, tokens, kv_tokens, block)
            .expect("cross layer");
        assert_eq!((layer.tokens(), layer.kv_tokens()), (tokens, kv_tokens));
        let up = |x: &[f32]| client.create_from_slice(&encode(x, dtype));
        let (qh, kh, vh) = (up(&q), up(&k), up(&v));
        let out = up(&vec![f32::NAN; problem.qkv_elems()]);
        let lse = client.create_from_slice(f32::as_bytes(&vec![f32::NAN; batch * heads * tokens]));
        let mh = mask.as_ref().map(|m| match mask_dtype {
            MaskDtype::U8 => {
                client.create_from_slice(&m.iter().map(|&b| b as u8).collect::<Vec<_>>())
            }
            MaskDtype::U32 => client.create_from_slice(u32::as_bytes(
                &m.iter().map(|&b| b as u32 * 3).collect::<Vec<_>>(),
            )),
        });
        let bufs = AttentionBuffers {
            q: &qh,
            k: &kh,
            v: &vh,
            out: &out,
            key_padding: mh.as_ref(),
            lse: Some(&lse),
        };
        let info = launch(&client, &layer, &problem, bufs).expect("launch");
        let got = decode(&client.read_one(out.clone()).expect("read out"), dtype);
        let got_lse = f32::from_bytes(&client.read_one(lse.clone()).expect("read lse")).to_vec();
        let (want, want_lse) = vdit_kernels::reference::cross_attention_reference(
            &q,
            &k,
            &v,
            batch,
            heads,
            head_dim,
            problem.scale_value(),
            mask.as_deref(),
        )
        .unwrap();
        let tol = tolerance(dtype, path);
        let max_ref = want.iter().fold(0f32, |a, &x| a.max(x.abs())).max(1e-6);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let e = (g - w).abs() / max_ref;
            assert!(
                g.is_finite() && e <= tol,
                "out[{i}] = {g}, want {w} ({tokens}x{kv_tokens}, {info:?})"
            );
        }
        for (i, (&g, &w)) in got_lse.iter().zip(&want_lse).enumerate() {
            if w == f32::NEG_INFINITY {
                assert_eq!(g, w, "lse[{i}]");
            } else {
                assert!(
                    (g - w).abs() / w.abs().max(1.0) <= tol,
                    "lse[{i}] = {g}, want {w}"
                );
            }
        }
        // The layer refuses a problem of another key length.
        let other = SparseAttention::cross(batch, heads, tokens, kv_tokens + 1, head_dim, dtype);
        let bufs = AttentionBuffers {
            key_padding: None,
            lse: None,
            ..bufs
        };
        assert!(matches!(
            launch(&client, &layer, &other, bufs),
            Err(KernelError::Shape {
                field: "kv_tokens",
                ..
            })
        ));
    }
}

/// Bad input gives typed errors and launches nothing.
pub fn bad_input<R: Runtime>(device: &R::Device) {
    let client = R::client(device);
    let mut rng = StdRng::seed_from_u64(1);
    let layout = VideoLayout::new(2, 4, 4).unwrap();
    let case = make_case(
        &mut rng,
        layout,
        &[Pattern::Dense, Pattern::Skip],
        16,
        1,
        64,
        AttnDtype::F32,
        1.0,
    );
    let before = launch_count();
    let mut c = Case {
        problem: case.problem.clone(),
        layer: case.layer.clone(),
        q: case.q.clone(),
        k: case.k.clone(),
        v: case.v.clone(),
        padding: None,
    };
    c.problem.heads = 3;
    assert!(matches!(
        run(&client, &c),
        Err(KernelError::Shape { field: "heads", .. })
    ));
    c.problem = case.problem.clone();
    c.problem.tokens += 1;
    assert!(matches!(
        run(&client, &c),
        Err(KernelError::Shape {
            field: "tokens",
            ..
        })
    ));
    for tc in [
        TcOptions {
            warps: 6,
            ..Default::default()
        },
        TcOptions {
            fast: 4,
            ..Default::default()
        },
    ] {
        c.problem = case.problem.clone().with_tc(tc);
        assert!(matches!(run(&client, &c), Err(KernelError::Option(_))));
    }
    c.problem = case.problem.clone();
    c.problem.head_dim = 40;
    assert!(matches!(run(&client, &c), Err(KernelError::HeadDim { .. })));
    c.problem = case.problem.clone();
    c.problem.batch = 2; // buffers hold one batch only
    assert!(matches!(
        run(&client, &c),
        Err(KernelError::Buffer { name: "q", .. })
    ));
    c.problem = case.problem.clone().with_lse();
    let layer = DeviceLayer::<R>::upload(&client, &c.layer).unwrap();
    let h = client.create_from_slice(f32::as_bytes(&c.q));
    let bufs = AttentionBuffers {
        q: &h,
        k: &h,
        v: &h,
        out: &h,
        key_padding: None,
        lse: None,
    };
    assert!(matches!(
        launch(&client, &layer, &c.problem, bufs),
        Err(KernelError::Option(_))
    ));
    c.problem = case.problem.clone().with_scale(f32::NAN);
    assert!(matches!(run(&client, &c), Err(KernelError::Option(_))));
    c.problem = case.problem.clone().with_path(KernelPath::TensorCore);
    if client.features().matmul.cmma.is_empty() {
        assert!(matches!(run(&client, &c), Err(KernelError::Path { .. })));
    }
    for block in [8, 256] {
        let layer = CompiledLayer::compile(&[Pattern::Dense], &layout, block).unwrap();
        assert_eq!(
            DeviceLayer::<R>::upload(&client, &layer).unwrap_err(),
            KernelError::BlockSize(block)
        );
    }
    assert_eq!(launch_count(), before, "nothing launched on bad input");
}
