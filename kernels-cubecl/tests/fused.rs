//! Fused element-wise / normalisation kernels against the f64 oracle, on lavapipe (wgpu
//! CPU adapter) and, with the `cuda` feature, on CUDA when libcuda is present.

use cubecl::prelude::*;
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vdit_kernels::fused::{
    GatedResidual, GatedResidualBuffers, LayerNormBuffers, ModLayerNorm, ModMath, Modulation,
    QkNormBuffers, QkNormKind, QkNormRope, RopeSpan, launch_gated_residual, launch_layer_norm,
    launch_qk_norm_rope, reference,
};
use vdit_kernels::{AttnDtype, KernelError};

fn encode(x: &[f32], dt: AttnDtype) -> Vec<u8> {
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

fn decode(b: &[u8], dt: AttnDtype) -> Vec<f32> {
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

/// Values as stored in `dt`.
fn stored(x: Vec<f32>, dt: AttnDtype) -> Vec<f32> {
    decode(&encode(&x, dt), dt)
}

fn rounder(dt: AttnDtype) -> impl Fn(f64) -> f64 {
    move |v: f64| match dt {
        AttnDtype::F32 => v,
        AttnDtype::F16 => f16::from_f64(v).to_f64(),
        AttnDtype::BF16 => bf16::from_f64(v).to_f64(),
    }
}

fn random(rng: &mut StdRng, n: usize, lo: f32, hi: f32, dt: AttnDtype) -> Vec<f32> {
    stored((0..n).map(|_| rng.random_range(lo..hi)).collect(), dt)
}

/// Allowed error relative to `max(1, |want|)`: ~1e-5 for f32; a few units in the last
/// place of the output dtype otherwise (the oracle rounds f64 values, the kernel f32 ones,
/// so a value next to a rounding boundary may land one unit apart).
fn tolerance(dt: AttnDtype) -> f64 {
    match dt {
        AttnDtype::F32 => 1e-5,
        AttnDtype::F16 => 2e-3,
        AttnDtype::BF16 => 1.6e-2,
    }
}

/// Largest share of f16/bf16 outputs allowed to differ from the (rounded) oracle at all.
/// The kernels round where the models round, so outputs are bit-equal except where an
/// f32-vs-f64 difference straddles a rounding boundary (well under 1%); skipping one of
/// the model's roundings moves many more.
const MAX_MISMATCH: f64 = 0.01;

fn compare(what: &str, got: &[f32], want: &[f64], dt: AttnDtype, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    let mut mismatches = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite(),
            "{what}: out[{i}] = {g} (unwritten?), want {w}"
        );
        let e = (g as f64 - w).abs() / w.abs().max(1.0);
        if e > worst.0 {
            worst = (e, i);
        }
        mismatches += usize::from(g as f64 != w);
    }
    if dt != AttnDtype::F32 {
        let share = mismatches as f64 / got.len() as f64;
        assert!(
            share <= MAX_MISMATCH,
            "{what}: {mismatches} of {} outputs differ from the rounded oracle",
            got.len()
        );
    }
    assert!(
        worst.0 <= tol,
        "{what}: max rel error {} > {tol} at {} (got {}, want {})",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

fn supports<R: Runtime>(client: &ComputeClient<R>, dt: AttnDtype) -> bool {
    client.features().supports_type(dt.storage())
}

struct LnCase {
    batch: usize,
    tokens: usize,
    dim: usize,
    x: AttnDtype,
    out: AttnDtype,
    weight: Option<AttnDtype>,
    bias: bool,
    modulation: Option<Modulation>,
    /// Mean of the inputs (a large offset checks the two-pass variance).
    offset: f32,
}

fn run_layer_norm<R: Runtime>(client: &ComputeClient<R>, c: &LnCase, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = c.batch * c.tokens * c.dim;
    let x = random(&mut rng, n, c.offset - 2.0, c.offset + 2.0, c.x);
    let w = c.weight.map(|dt| random(&mut rng, c.dim, 0.5, 1.5, dt));
    let b = c
        .bias
        .then(|| random(&mut rng, c.dim, -1.0, 1.0, c.weight.unwrap()));
    let m = c.modulation.map(|m| {
        (
            random(&mut rng, c.batch * c.dim, -0.5, 0.5, m.dtype),
            random(&mut rng, c.batch * c.dim, -1.0, 1.0, m.dtype),
        )
    });
    let eps = 1e-6f32;
    let want = reference::layer_norm(
        &x,
        c.batch,
        c.dim,
        eps as f64,
        w.as_deref(),
        b.as_deref(),
        m.as_ref()
            .map(|(s, h)| (&s[..], &h[..], c.modulation.unwrap().math)),
        rounder(c.out),
    )
    .unwrap();
    let p = ModLayerNorm {
        batch: c.batch,
        tokens: c.tokens,
        dim: c.dim,
        eps,
        x: c.x,
        out: c.out,
        weight: c.weight,
        bias: c.bias,
        modulation: c.modulation,
    };
    let xh = client.create_from_slice(&encode(&x, c.x));
    let out = client.create_from_slice(&encode(&vec![f32::NAN; n], c.out));
    let wh = w
        .as_ref()
        .map(|v| client.create_from_slice(&encode(v, c.weight.unwrap())));
    let bh = b
        .as_ref()
        .map(|v| client.create_from_slice(&encode(v, c.weight.unwrap())));
    let mh = m.as_ref().map(|(s, h)| {
        let dt = c.modulation.unwrap().dtype;
        (
            client.create_from_slice(&encode(s, dt)),
            client.create_from_slice(&encode(h, dt)),
        )
    });
    launch_layer_norm(
        client,
        &p,
        LayerNormBuffers {
            x: &xh,
            out: &out,
            weight: wh.as_ref(),
            bias: bh.as_ref(),
            scale: mh.as_ref().map(|m| &m.0),
            shift: mh.as_ref().map(|m| &m.1),
        },
    )
    .expect("launch");
    let got = decode(&client.read_one(out).expect("read"), c.out);
    // A centred input of mean `offset` loses ~offset * 2^-24 of absolute precision per
    // value already in f32 storage; scale the tolerance with it.
    let tol = tolerance(c.out) * (1.0 + c.offset.abs() as f64 / 64.0);
    compare(
        &format!("layer norm {:?}/{}", p, seed),
        &got,
        &want,
        c.out,
        tol,
    );
}

pub fn layer_norm_f32<R: Runtime>(device: &R::Device) {
    let client = R::client(device);
    let f = AttnDtype::F32;
    let mut seed = 0;
    for &(batch, tokens, dim) in &[
        (1, 1, 1536),
        (2, 3, 7),
        (1, 300, 64),
        (2, 17, 130),
        (1, 5, 1000),
        (3, 2, 5120),
    ] {
        for (weight, bias) in [(None, false), (Some(f), false), (Some(f), true)] {
            for modulation in [
                None,
                Some(Modulation {
                    dtype: f,
                    math: ModMath::F32,
                }),
                Some(Modulation {
                    dtype: f,
                    math: ModMath::OutDtype,
                }),
            ] {
                seed += 1;
                let case = LnCase {
                    batch,
                    tokens,
                    dim,
                    x: f,
                    out: f,
                    weight,
                    bias,
                    modulation,
                    offset: 0.0,
                };
                run_layer_norm(&client, &case, seed);
            }
        }
    }
}

pub fn layer_norm_large_mean<R: Runtime>(device: &R::Device) {
    let client = R::client(device);
    // Mean 1000, spread 2: a one-pass E[x^2] - E[x]^2 variance in f32 loses every digit
    // here; the two-pass reduction must not.
    let case = LnCase {
        batch: 1,
        tokens: 9,
        dim: 1536,
        x: AttnDtype::F32,
        out: AttnDtype::F32,
        weight: None,
        bias: false,
        modulation: None,
        offset: 1000.0,
    };
    run_layer_norm(&client, &case, 77);
}

pub fn layer_norm_half<R: Runtime>(device: &R::Device, dt: AttnDtype) {
    let client = R::client(device);
    if !supports(&client, dt) {
        eprintln!("skipping: {} not supported", dt.name());
        return;
    }
    let f = AttnDtype::F32;
    let mut seed = 1000;
    for &(batch, tokens, dim) in &[(1, 1, 96), (2, 5, 33), (1, 64, 1536)] {
        for (x, out, weight, bias, modulation) in [
            // Wan: model-dtype x, f32 modulation, model-dtype out.
            (dt, dt, None, false, Some((f, ModMath::F32))),
            // HunyuanVideo: modulation in the model dtype.
            (dt, dt, None, false, Some((dt, ModMath::OutDtype))),
            // CogVideoX: f32 affine LayerNorm then model-dtype modulation.
            (dt, dt, Some(f), true, Some((dt, ModMath::OutDtype))),
            // Wan's norm2 (affine, no modulation) and an f32 output.
            (dt, dt, Some(f), true, None),
            (dt, f, None, false, None),
        ] {
            seed += 1;
            let case = LnCase {
                batch,
                tokens,
                dim,
                x,
                out,
                weight,
                bias,
                modulation: modulation.map(|(dtype, math)| Modulation { dtype, math }),
                offset: 0.0,
            };
            run_layer_norm(&client, &case, seed);
        }
    }
}

fn run_gated<R: Runtime>(client: &ComputeClient<R>, p: &GatedResidual, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = p.batch * p.tokens * p.dim;
    let x = random(&mut rng, n, -4.0, 4.0, p.dtype);
    let y = random(&mut rng, n, -4.0, 4.0, p.dtype);
    let g = random(&mut rng, p.batch * p.dim, -1.0, 1.0, p.gate);
    let want = reference::gated_residual(&x, &y, &g, p.batch, p.dim, p.math, rounder(p.dtype));
    let up = |v: &[f32], dt| client.create_from_slice(&encode(v, dt));
    let (xh, yh, gh) = (up(&x, p.dtype), up(&y, p.dtype), up(&g, p.gate));
    let out = up(&vec![f32::NAN; n], p.dtype);
    launch_gated_residual(
        client,
        p,
        GatedResidualBuffers {
            x: &xh,
            y: &yh,
            gate: &gh,
            out: &out,
        },
    )
    .expect("launch");
    let got = decode(&client.read_one(out).expect("read"), p.dtype);
    compare(
        &format!("gated residual {p:?}"),
        &got,
        &want,
        p.dtype,
        tolerance(p.dtype),
    );
}

pub fn gated_residual<R: Runtime>(device: &R::Device) {
    let client = R::client(device);
    let mut seed = 2000;
    for dt in [AttnDtype::F32, AttnDtype::F16, AttnDtype::BF16] {
        if !supports(&client, dt) {
            eprintln!("skipping gated residual in {}", dt.name());
            continue;
        }
        for &(batch, tokens, dim) in &[(1, 1, 1), (2, 3, 7), (1, 333, 130), (3, 70, 1536)] {
            for (gate, math) in [
                (AttnDtype::F32, ModMath::F32),
                (dt, ModMath::OutDtype),
                (AttnDtype::F32, ModMath::OutDtype),
            ] {
                seed += 1;
                let p = GatedResidual {
                    batch,
                    tokens,
                    dim,
                    dtype: dt,
                    gate,
                    math,
                };
                run_gated(&client, &p, seed);
            }
        }
    }
}

/// One q/k case; `joint` writes a second, un-rotated stream of `joint` tokens after the
/// first one into the same output (HunyuanVideo's `[video | text]`).
#[allow(clippy::too_many_arguments)]
fn run_qk<R: Runtime>(client: &ComputeClient<R>, p: &QkNormRope, joint: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dim = p.heads * p.head_dim;
    let wlen = if p.per_head { p.head_dim } else { dim };
    let x = random(&mut rng, p.batch * p.tokens * dim, -3.0, 3.0, p.dtype);
    let w = random(&mut rng, wlen, 0.5, 1.5, p.weight);
    let b = p.bias.then(|| random(&mut rng, wlen, -0.5, 0.5, p.weight));
    let half = p.head_dim / 2;
    let tables = p.rope.map(|r| {
        let ang: Vec<f32> = (0..r.len * half)
            .map(|_| rng.random_range(-3.2f32..3.2))
            .collect();
        (
            ang.iter().map(|a| a.cos()).collect::<Vec<f32>>(),
            ang.iter().map(|a| a.sin()).collect::<Vec<f32>>(),
        )
    });
    let layer_norm = p.norm == QkNormKind::Layer;
    let want = reference::qk_norm_rope(
        &x,
        p.batch,
        p.heads,
        p.head_dim,
        p.per_head,
        layer_norm,
        p.eps as f64,
        &w,
        b.as_deref(),
        p.rope
            .zip(tables.as_ref())
            .map(|(r, (c, s))| (r.start, &c[..], &s[..])),
        rounder(p.dtype),
    );
    let x2 = random(&mut rng, p.batch * joint * dim, -3.0, 3.0, p.dtype);
    let want2 = reference::qk_norm_rope(
        &x2,
        p.batch,
        p.heads,
        p.head_dim,
        p.per_head,
        layer_norm,
        p.eps as f64,
        &w,
        b.as_deref(),
        None,
        rounder(p.dtype),
    );
    let total = p.tokens + joint;
    let up = |v: &[f32], dt| client.create_from_slice(&encode(v, dt));
    let out = up(&vec![f32::NAN; p.batch * total * dim], p.dtype);
    let (xh, wh) = (up(&x, p.dtype), up(&w, p.weight));
    let bh = b.as_ref().map(|v| up(v, p.weight));
    let th = tables
        .as_ref()
        .map(|(c, s)| (up(c, AttnDtype::F32), up(s, AttnDtype::F32)));
    let mut first = p.clone();
    first.out_tokens = total;
    launch_qk_norm_rope(
        client,
        &first,
        QkNormBuffers {
            x: &xh,
            weight: &wh,
            bias: bh.as_ref(),
            cos: th.as_ref().map(|t| &t.0),
            sin: th.as_ref().map(|t| &t.1),
            out: &out,
        },
    )
    .expect("launch");
    if joint > 0 {
        let x2h = up(&x2, p.dtype);
        let mut second = p.clone();
        second.tokens = joint;
        second.rope = None;
        second.out_tokens = total;
        second.out_offset = p.tokens;
        launch_qk_norm_rope(
            client,
            &second,
            QkNormBuffers {
                x: &x2h,
                weight: &wh,
                bias: bh.as_ref(),
                cos: None,
                sin: None,
                out: &out,
            },
        )
        .expect("launch joint");
    }
    let got = decode(&client.read_one(out).expect("read"), p.dtype);
    // Interleave the expected streams into [batch, heads, total, head_dim].
    let mut expect = Vec::with_capacity(got.len());
    for bh_ in 0..p.batch * p.heads {
        let a = bh_ * p.tokens * p.head_dim;
        expect.extend_from_slice(&want[a..a + p.tokens * p.head_dim]);
        let a2 = bh_ * joint * p.head_dim;
        expect.extend_from_slice(&want2[a2..a2 + joint * p.head_dim]);
    }
    compare(
        &format!("qk norm {p:?} joint {joint}"),
        &got,
        &expect,
        p.dtype,
        tolerance(p.dtype),
    );
}

pub fn qk_norm_rope<R: Runtime>(device: &R::Device, dt: AttnDtype) {
    let client = R::client(device);
    if !supports(&client, dt) {
        eprintln!("skipping: {} not supported", dt.name());
        return;
    }
    let f = AttnDtype::F32;
    let mut seed = 3000;
    for &(batch, tokens, heads, head_dim) in &[
        (1, 1, 1, 2),
        (2, 5, 3, 6),
        (1, 40, 4, 16),
        (2, 9, 12, 128),
        (1, 3, 2, 130),
    ] {
        // Wan: RMSNorm over the hidden size (weight in the model dtype), RoPE everywhere.
        let mut wan = QkNormRope::new(
            batch,
            tokens,
            heads,
            head_dim,
            false,
            QkNormKind::Rms,
            1e-6,
            dt,
            dt,
        );
        wan.rope = Some(RopeSpan {
            start: 0,
            len: tokens,
        });
        // HunyuanVideo: per-head RMSNorm, RoPE on video, text appended unrotated.
        let mut hun = QkNormRope::new(
            batch,
            tokens,
            heads,
            head_dim,
            true,
            QkNormKind::Rms,
            1e-6,
            dt,
            dt,
        );
        hun.rope = Some(RopeSpan {
            start: 0,
            len: tokens,
        });
        // CogVideoX: per-head affine LayerNorm (f32 parameters), text first, RoPE after.
        let mut cog = QkNormRope::new(
            batch,
            tokens,
            heads,
            head_dim,
            true,
            QkNormKind::Layer,
            1e-6,
            dt,
            f,
        );
        cog.bias = true;
        let text = tokens / 3;
        cog.rope = Some(RopeSpan {
            start: text,
            len: tokens - text,
        });
        // No RoPE at all.
        let plain = QkNormRope::new(
            batch,
            tokens,
            heads,
            head_dim,
            false,
            QkNormKind::Layer,
            1e-5,
            dt,
            f,
        );
        for (p, joint) in [(wan, 0), (hun, 4), (cog, 0), (plain, 0)] {
            seed += 1;
            run_qk(&client, &p, joint, seed);
        }
    }
}

pub fn bad_input<R: Runtime>(device: &R::Device) {
    let client = R::client(device);
    let f = AttnDtype::F32;
    let buf = |n: usize| client.create_from_slice(&vec![0u8; n * 4]);
    let (x, out, small) = (buf(64), buf(64), buf(3));
    let ln = ModLayerNorm {
        batch: 2,
        tokens: 4,
        dim: 8,
        eps: 1e-6,
        x: f,
        out: f,
        weight: None,
        bias: false,
        modulation: None,
    };
    let lb = LayerNormBuffers {
        x: &x,
        out: &out,
        weight: None,
        bias: None,
        scale: None,
        shift: None,
    };
    launch_layer_norm(&client, &ln, lb).expect("valid case");
    let mut p = ln.clone();
    p.dim = 0;
    assert!(matches!(
        launch_layer_norm(&client, &p, lb),
        Err(KernelError::Shape { field: "dim", .. })
    ));
    let mut p = ln.clone();
    p.tokens = 5;
    assert!(matches!(
        launch_layer_norm(&client, &p, lb),
        Err(KernelError::Buffer { name: "x", .. })
    ));
    let mut p = ln.clone();
    p.bias = true;
    assert!(matches!(
        launch_layer_norm(&client, &p, lb),
        Err(KernelError::Option(_))
    ));
    let mut p = ln.clone();
    p.eps = f32::NAN;
    assert!(matches!(
        launch_layer_norm(&client, &p, lb),
        Err(KernelError::Option(_))
    ));
    let mut p = ln.clone();
    p.modulation = Some(Modulation {
        dtype: f,
        math: ModMath::F32,
    });
    assert!(matches!(
        launch_layer_norm(&client, &p, lb),
        Err(KernelError::Option(_))
    ));
    let with_mod = LayerNormBuffers {
        scale: Some(&small),
        shift: Some(&small),
        ..lb
    };
    assert!(matches!(
        launch_layer_norm(&client, &p, with_mod),
        Err(KernelError::Buffer { name: "scale", .. })
    ));

    let g = GatedResidual {
        batch: 2,
        tokens: 4,
        dim: 8,
        dtype: f,
        gate: f,
        math: ModMath::F32,
    };
    let gb = GatedResidualBuffers {
        x: &x,
        y: &x,
        gate: &small,
        out: &out,
    };
    assert!(matches!(
        launch_gated_residual(&client, &g, gb),
        Err(KernelError::Buffer { name: "gate", .. })
    ));

    let q = QkNormRope::new(1, 4, 2, 8, true, QkNormKind::Rms, 1e-6, f, f);
    let qb = QkNormBuffers {
        x: &x,
        weight: &x,
        bias: None,
        cos: None,
        sin: None,
        out: &out,
    };
    launch_qk_norm_rope(&client, &q, qb).expect("valid case");
    let mut p = q.clone();
    p.head_dim = 7;
    assert!(matches!(
        launch_qk_norm_rope(&client, &p, qb),
        Err(KernelError::HeadDim { .. })
    ));
    let mut p = q.clone();
    p.rope = Some(RopeSpan { start: 2, len: 3 });
    let with_rope = QkNormBuffers {
        cos: Some(&x),
        sin: Some(&x),
        ..qb
    };
    assert!(matches!(
        launch_qk_norm_rope(&client, &p, with_rope),
        Err(KernelError::Shape { .. })
    ));
    p.rope = Some(RopeSpan { start: 0, len: 4 });
    assert!(matches!(
        launch_qk_norm_rope(&client, &p, qb),
        Err(KernelError::Option(_))
    ));
    let mut p = q.clone();
    p.out_offset = 1;
    assert!(matches!(
        launch_qk_norm_rope(&client, &p, qb),
        Err(KernelError::Shape {
            field: "out_tokens",
            ..
        })
    ));
    let mut p = q.clone();
    p.norm = QkNormKind::Rms;
    p.bias = true;
    assert!(matches!(
        launch_qk_norm_rope(
            &client,
            &p,
            QkNormBuffers {
                bias: Some(&x),
                ..qb
            }
        ),
        Err(KernelError::Option(_))
    ));
}

macro_rules! testgen_fused {
    ($name:ident, $runtime:ty, $device:expr, $available:expr) => {
        mod $name {
            use super::*;
            type R = $runtime;

            fn device() -> Option<<R as cubecl::Runtime>::Device> {
                if $available {
                    Some($device)
                } else {
                    eprintln!("skipping: runtime unavailable");
                    None
                }
            }

            #[test]
            fn layer_norm_f32_matches_reference() {
                let Some(dev) = device() else { return };
                layer_norm_f32::<R>(&dev);
            }

            #[test]
            fn layer_norm_two_pass_variance() {
                let Some(dev) = device() else { return };
                layer_norm_large_mean::<R>(&dev);
            }

            #[test]
            fn layer_norm_f16_bf16() {
                let Some(dev) = device() else { return };
                layer_norm_half::<R>(&dev, AttnDtype::F16);
                layer_norm_half::<R>(&dev, AttnDtype::BF16);
            }

            #[test]
            fn gated_residual_matches_reference() {
                let Some(dev) = device() else { return };
                gated_residual::<R>(&dev);
            }

            #[test]
            fn qk_norm_rope_f32() {
                let Some(dev) = device() else { return };
                qk_norm_rope::<R>(&dev, AttnDtype::F32);
            }

            #[test]
            fn qk_norm_rope_f16_bf16() {
                let Some(dev) = device() else { return };
                qk_norm_rope::<R>(&dev, AttnDtype::F16);
                qk_norm_rope::<R>(&dev, AttnDtype::BF16);
            }

            #[test]
            fn bad_input_is_a_typed_error() {
                let Some(dev) = device() else { return };
                bad_input::<R>(&dev);
            }
        }
    };
}

testgen_fused!(
    wgpu_lavapipe,
    cubecl::wgpu::WgpuRuntime,
    cubecl::wgpu::WgpuDevice::Cpu,
    true
);

#[cfg(feature = "cuda")]
testgen_fused!(
    cuda,
    cubecl::cuda::CudaRuntime,
    Default::default(),
    vdit_kernels::cuda_available()
);
