//! H100 benchmark of the sparse attention kernels at the real video-DiT sizes (bf16).
//!
//! `kernel_bench --out DIR [--quick] [--portable] [--only NAME] [--tc-engine mma|wmma]
//! [--tc-warps 4|8] [--tc-async 0|1] [--tc-fast 0..3] [--tc-prefetch-v]` writes
//! `DIR/kernels.json` (one record per case) and, for every sparse case, `DIR/masks/<case>.{json,row_ptr.bin,col_idx.bin,
//! perm.bin}` so that `tools/kernel_peers.py` can run FlexAttention on the same block
//! masks. Timing: 2 warm-up launches (the first JIT-compiles), then the median of N
//! synchronised launches measured with the host clock.

use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::prelude::*;
use std::io::Write;
use std::time::Instant;
use vdit_kernels::{
    AttentionBuffers, AttnDtype, DeviceLayer, KernelPath, SparseAttention, TcEngine, TcOptions,
    launch,
};
use vdit_patterns::{CompiledLayer, Pattern, TextPosition, TokenSpan, VideoLayout};

type R = CudaRuntime;

struct Model {
    name: &'static str,
    heads: usize,
    head_dim: usize,
    layout: VideoLayout,
}

fn models() -> Vec<Model> {
    let v = |f, h, w| VideoLayout::new(f, h, w).unwrap();
    vec![
        Model {
            name: "wan21_480p",
            heads: 12,
            head_dim: 128,
            layout: v(21, 30, 52),
        },
        Model {
            name: "wan21_720p",
            heads: 12,
            head_dim: 128,
            layout: v(21, 45, 80),
        },
        Model {
            name: "cogvideox15",
            heads: 48,
            head_dim: 64,
            layout: v(11, 48, 85).with_text(226, TextPosition::Prefix).unwrap(),
        },
        Model {
            name: "hunyuan",
            heads: 24,
            head_dim: 128,
            layout: v(33, 45, 80).with_text(256, TextPosition::Suffix).unwrap(),
        },
    ]
}

fn sparse_patterns(layout: &VideoLayout) -> Vec<(String, Pattern)> {
    let video = layout.video_tokens();
    let mut v = Vec::new();
    for band in [0.5, 1.5, 3.0, 6.0] {
        v.push((format!("diagonal_{band}"), Pattern::Diagonal { band }));
    }
    for (sb, fr) in [(0.02, 2u32), (0.05, 4), (0.1, 8)] {
        v.push((
            format!("multidiag_{sb}_{fr}"),
            Pattern::MultiDiagonal {
                spatial_band: sb,
                frame_reach: fr,
            },
        ));
    }
    for frac in [0.05, 0.15] {
        let cols = (video as f64 * frac) as usize;
        v.push((
            format!("stripe_{frac}"),
            Pattern::VerticalStripe {
                columns: vec![TokenSpan::from_tokens(0..cols, video)],
                band: Some(0.5),
            },
        ));
    }
    v
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    x[x.len() / 2]
}

fn random_bf16(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        out.extend_from_slice(&half::bf16::from_f32(u).to_le_bytes());
    }
    out
}

struct Io {
    q: cubecl::server::Handle,
    k: cubecl::server::Handle,
    v: cubecl::server::Handle,
    out: cubecl::server::Handle,
}

fn time_layer(
    client: &ComputeClient<R>,
    layer: &CompiledLayer,
    p: &SparseAttention,
    io: &Io,
    iters: usize,
) -> (f64, KernelPath) {
    let dl = DeviceLayer::<R>::upload(client, layer).expect("upload");
    let bufs = AttentionBuffers {
        q: &io.q,
        k: &io.k,
        v: &io.v,
        out: &io.out,
        key_padding: None,
        lse: None,
    };
    let mut path = KernelPath::Auto;
    for _ in 0..2 {
        path = launch(client, &dl, p, bufs).expect("launch").path;
        cubecl::future::block_on(client.sync()).expect("sync");
    }
    let mut t = Vec::new();
    for _ in 0..iters {
        let s = Instant::now();
        launch(client, &dl, p, bufs).expect("launch");
        cubecl::future::block_on(client.sync()).expect("sync");
        t.push(s.elapsed().as_secs_f64());
    }
    (median(t), path)
}

fn export_mask(dir: &std::path::Path, name: &str, layer: &CompiledLayer, m: &Model) {
    let t = &layer.tables()[0];
    let w = |suffix: &str, data: &[u32]| {
        std::fs::write(
            dir.join(format!("{name}.{suffix}")),
            bytemuck::cast_slice::<u32, u8>(data),
        )
        .unwrap()
    };
    w("row_ptr.bin", t.row_ptr());
    w("col_idx.bin", t.col_idx());
    w("perm.bin", &t.permutation());
    let meta = serde_json::json!({
        "name": name, "model": m.name, "heads": m.heads, "head_dim": m.head_dim,
        "tokens": t.tokens(), "block_size": t.block_size(), "num_blocks": t.num_blocks(),
        "order": format!("{:?}", t.order()), "density": t.density(),
        "computed_pairs": t.computed_pairs(),
    });
    std::fs::write(dir.join(format!("{name}.json")), meta.to_string()).unwrap();
}

/// The tensor-core variant from `--tc-engine mma|wmma`, `--tc-warps 4|8`, `--tc-async 0|1`,
/// `--tc-fast 0..3`, `--tc-prefetch-v` (defaults: the measured best). A flag without a
/// value or with a value outside its set is an error.
fn tc_options(args: &[String]) -> Result<TcOptions, String> {
    let value = |flag: &str| -> Result<Option<&str>, String> {
        match args.iter().position(|a| a == flag) {
            None => Ok(None),
            Some(i) => args
                .get(i + 1)
                .map(|v| Some(v.as_str()))
                .ok_or_else(|| format!("{flag} needs a value")),
        }
    };
    let engine = match value("--tc-engine")? {
        None | Some("mma") => TcEngine::Mma,
        Some("wmma") => TcEngine::Wmma,
        Some(other) => return Err(format!("--tc-engine takes mma or wmma, not {other:?}")),
    };
    let mut tc = TcOptions {
        engine,
        ..TcOptions::default()
    };
    if let Some(w) = value("--tc-warps")? {
        tc.warps = w
            .parse()
            .map_err(|_| format!("--tc-warps takes 4 or 8, not {w:?}"))?;
    }
    tc.async_kv = match value("--tc-async")? {
        None | Some("1") => true,
        Some("0") => false,
        Some(other) => return Err(format!("--tc-async takes 0 or 1, not {other:?}")),
    };
    if let Some(f) = value("--tc-fast")? {
        tc.fast = f
            .parse()
            .map_err(|_| format!("--tc-fast takes 0..=3, not {f:?}"))?;
    }
    tc.prefetch_v = args.iter().any(|a| a == "--tc-prefetch-v");
    tc.validate().map_err(|e| e.to_string())?;
    Ok(tc)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out_dir = args
        .iter()
        .position(|a| a == "--out")
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| "bench_out".into());
    let quick = args.iter().any(|a| a == "--quick");
    let portable = args.iter().any(|a| a == "--portable");
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    let tc = match tc_options(&args) {
        Ok(tc) => tc,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let out_dir = std::path::PathBuf::from(out_dir);
    let masks = out_dir.join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    let client = R::client(&CudaDevice::default());
    let block = 128;
    let mut records = Vec::new();
    let mut log = std::fs::File::create(out_dir.join("kernels.log")).unwrap();
    for m in models() {
        if only.as_ref().is_some_and(|o| !m.name.contains(o.as_str())) {
            continue;
        }
        let tokens = m.layout.total_tokens();
        let path = if portable {
            KernelPath::Portable
        } else {
            KernelPath::Auto
        };
        let p = SparseAttention::new(1, m.heads, tokens, m.head_dim, AttnDtype::BF16)
            .with_path(path)
            .with_tc(tc);
        let n = p.qkv_elems();
        let io = Io {
            q: client.create_from_slice(&random_bf16(n, 1)),
            k: client.create_from_slice(&random_bf16(n, 2)),
            v: client.create_from_slice(&random_bf16(n, 3)),
            out: client.empty(2 * n),
        };
        let iters = if quick { 3 } else { 5 };
        let dense_layer =
            CompiledLayer::compile(&vec![Pattern::Dense; m.heads], &m.layout, block).unwrap();
        let (t_dense, kpath) = time_layer(&client, &dense_layer, &p, &io, iters);
        let tflops = p.dense_flops() / t_dense / 1e12;
        let line = format!(
            "{:12} dense   {:>9.3} ms {:>7.1} TFLOP/s path={kpath:?}",
            m.name,
            t_dense * 1e3,
            tflops
        );
        println!("{line}");
        writeln!(log, "{line}").unwrap();
        records.push(serde_json::json!({
            "model": m.name, "case": "dense", "pattern": "dense", "heads": m.heads, "tokens": tokens,
            "head_dim": m.head_dim, "block_size": block, "dtype": "bf16", "path": format!("{kpath:?}"),
            "time_ms": t_dense * 1e3, "tflops": tflops, "density": 1.0, "computed_fraction": 1.0,
        }));
        if quick && m.name != "wan21_480p" {
            continue;
        }
        let mut pats = sparse_patterns(&m.layout);
        // A mixed layer: every pattern kind plus skip heads in one launch.
        let mix: Vec<Pattern> = (0..m.heads)
            .map(|h| match h % 4 {
                0 => Pattern::Skip,
                1 => Pattern::Diagonal { band: 1.5 },
                2 => Pattern::MultiDiagonal {
                    spatial_band: 0.05,
                    frame_reach: 4,
                },
                _ => Pattern::Dense,
            })
            .collect();
        if quick {
            pats.truncate(3);
        }
        let mut cases: Vec<(String, Vec<Pattern>)> = pats
            .into_iter()
            .map(|(name, pat)| (name, vec![pat; m.heads]))
            .collect();
        cases.push(("mixed_skip_diag_multidiag_dense".into(), mix));
        for (name, heads) in cases {
            let layer = CompiledLayer::compile(&heads, &m.layout, block).unwrap();
            let computed: u64 = layer
                .slots()
                .iter()
                .map(|s| match s {
                    vdit_patterns::HeadSlot::Skip => 0,
                    vdit_patterns::HeadSlot::Table(t) => layer.tables()[*t].computed_pairs(),
                })
                .sum();
            let frac = computed as f64 / (m.heads as f64 * (tokens as f64).powi(2));
            let (t, _) = time_layer(&client, &layer, &p, &io, iters);
            let share = t / (t_dense * frac);
            let eff = 4.0 * computed as f64 * m.head_dim as f64 / t / 1e12;
            let case = format!("{}_{}", m.name, name);
            if !name.starts_with("mixed") {
                export_mask(&masks, &case, &layer, &m);
            }
            let line = format!(
                "{:12} {name:34} {:>9.3} ms density {:>6.3} computed {:>6.3} eff {:>6.1} TFLOP/s cost/share {:.2}",
                m.name,
                t * 1e3,
                layer.density(),
                frac,
                eff,
                share
            );
            println!("{line}");
            writeln!(log, "{line}").unwrap();
            records.push(serde_json::json!({
                "model": m.name, "case": case, "pattern": name, "heads": m.heads, "tokens": tokens,
                "head_dim": m.head_dim, "block_size": block, "dtype": "bf16", "time_ms": t * 1e3,
                "density": layer.density(), "computed_fraction": frac, "effective_tflops": eff,
                "cost_over_dense_share": share, "dense_time_ms": t_dense * 1e3,
            }));
        }
    }
    std::fs::write(
        out_dir.join("kernels.json"),
        serde_json::to_string_pretty(&records).unwrap(),
    )
    .unwrap();
}
