//! Where the time of a Wan2.1-1.3B denoiser step goes: the whole forward, one
//! transformer block taken apart piece by piece, and matmul micro-benchmarks (weight
//! layout and dtype), each timed with a device sync after every call, as the median of
//! `--repeats` runs after `--warmup` runs (the first run autotunes matmuls).
//!
//! ```sh
//! cargo build --release -p vdit-wan --example block_profile --features cuda   # + ,autotune
//! target/release/examples/block_profile --out profile.json            # CUDA, 480p x 81 frames
//! target/release/examples/block_profile --tiny --out tiny.json        # CPU (burn-flex), tiny sizes
//! ```
//!
//! `--features cuda,autotune` builds burn-cubecl with its autotuned matmul / reduce /
//! attention; without it (as `xtask --features cuda` builds today) every matmul runs one
//! fixed kernel (`results/bench/h100-2026-11-24/profile/README.md`).
//!
//! Random bf16 weights (`WanTransformer3DModel::random`), batch 1, dense attention (our
//! CubeCL kernel on CUDA), 512 text tokens. Per-block pieces are run on block 0 with the
//! same inputs the block sees in a step (`[1, tokens, 1536]` hidden states); their
//! `per step` column multiplies by the 30 blocks.
//!
//! `--layout contiguous,view` (the default) times the forward with each way of holding
//! the Linear weights, in that order, and the block rows with the last one: `view` is a
//! transposed view of a PyTorch `[out, in]` tensor (as `vdit_models::nn::Linear::load`
//! stores it), `contiguous` a row-major `[in, out]` tensor.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Distribution, ElementConversion, Tensor, TensorData};
use serde_json::{Value, json};
use vdit_models::ModelBackend;
use vdit_models::nn::{LayerNorm32, Linear, gelu_tanh, rope, to_f32};
use vdit_wan::block::WanBlock;
use vdit_wan::{WanConfig, WanTransformer3DModel};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    View,
    Contiguous,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::View => "view",
            Layout::Contiguous => "contiguous",
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    tiny: bool,
    cpu: bool,
    repeats: usize,
    forward_repeats: usize,
    warmup: usize,
    out: Option<PathBuf>,
    skip_forward: bool,
    skip_micro: bool,
    layouts: Vec<Layout>,
    text_len: usize,
}

fn parse_args() -> AnyResult<Args> {
    let mut a = Args {
        tiny: false,
        cpu: false,
        repeats: 10,
        forward_repeats: 3,
        warmup: 2,
        out: None,
        skip_forward: false,
        skip_micro: false,
        layouts: vec![Layout::Contiguous, Layout::View],
        text_len: 512,
    };
    let mut backend: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| -> AnyResult<String> {
            it.next()
                .ok_or_else(|| format!("{name} needs a value").into())
        };
        match arg.as_str() {
            "--tiny" => a.tiny = true,
            "--backend" => backend = Some(val("--backend")?),
            "--repeats" => a.repeats = val("--repeats")?.parse()?,
            "--forward-repeats" => a.forward_repeats = val("--forward-repeats")?.parse()?,
            "--warmup" => a.warmup = val("--warmup")?.parse()?,
            "--out" => a.out = Some(PathBuf::from(val("--out")?)),
            "--text-len" => a.text_len = val("--text-len")?.parse()?,
            "--skip-forward" => a.skip_forward = true,
            "--skip-micro" => a.skip_micro = true,
            "--layout" => {
                a.layouts = val("--layout")?
                    .split(',')
                    .map(|l| match l {
                        "view" => Ok(Layout::View),
                        "contiguous" => Ok(Layout::Contiguous),
                        other => Err(format!(
                            "--layout takes view and/or contiguous, not {other}"
                        )),
                    })
                    .collect::<Result<_, _>>()?;
                if a.layouts.is_empty() {
                    return Err("--layout needs at least one layout".into());
                }
            }
            "-h" | "--help" => {
                println!(
                    "block_profile [--tiny] [--backend cuda|cpu] [--repeats N] [--forward-repeats N] \
                     [--warmup N] [--layout contiguous,view] [--text-len L] [--skip-forward] \
                     [--skip-micro] [--out FILE.json]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)").into()),
        }
    }
    a.cpu = match backend.as_deref() {
        Some("cpu") => true,
        Some("cuda") => false,
        None => a.tiny,
        Some(other) => return Err(format!("--backend cuda|cpu, not {other}").into()),
    };
    if a.tiny {
        a.text_len = a.text_len.min(16);
    }
    Ok(a)
}

/// One timed row.
#[derive(Debug, Clone)]
struct Row {
    section: &'static str,
    name: String,
    median_ms: f64,
    min_ms: f64,
    /// Calls per denoiser step (30 for a per-block piece).
    per_step: usize,
    /// Floating-point operations of one call (matmuls), for TFLOP/s.
    flops: Option<f64>,
    /// Bytes one call must at least move (reads + writes), for GB/s.
    bytes: Option<f64>,
}

impl Row {
    fn json(&self) -> Value {
        json!({
            "section": self.section,
            "name": self.name,
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "per_step": self.per_step,
            "step_ms": self.median_ms * self.per_step as f64,
            "flops": self.flops,
            "tflops_per_s": self.flops.map(|f| f / (self.median_ms * 1e-3) / 1e12),
            "bytes": self.bytes,
            "gbytes_per_s": self.bytes.map(|b| b / (self.median_ms * 1e-3) / 1e9),
        })
    }
}

struct Timer<'a, B: Backend> {
    device: &'a B::Device,
    warmup: usize,
    repeats: usize,
    rows: Vec<Row>,
}

impl<B: Backend> Timer<'_, B> {
    fn sync(&self) {
        B::sync(self.device).expect("device sync failed");
    }

    /// Times `f` (which must return its output so that dropping it is outside the
    /// timed region... it is dropped after the sync).
    fn time<T>(&self, warmup: usize, repeats: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
        self.sync();
        for _ in 0..warmup {
            let out = f();
            self.sync();
            drop(out);
        }
        let mut v = Vec::with_capacity(repeats);
        for _ in 0..repeats.max(1) {
            let t0 = Instant::now();
            let out = f();
            self.sync();
            v.push(t0.elapsed().as_secs_f64() * 1e3);
            drop(out);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0])
    }

    #[allow(clippy::too_many_arguments)]
    fn row<T>(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        per_step: usize,
        flops: Option<f64>,
        bytes: Option<f64>,
        f: impl FnMut() -> T,
    ) -> f64 {
        let name = name.into();
        let (median_ms, min_ms) = self.time(self.warmup, self.repeats, f);
        eprintln!("  {section:7} {name:58} {median_ms:9.3} ms");
        self.rows.push(Row {
            section,
            name,
            median_ms,
            min_ms,
            per_step,
            flops,
            bytes,
        });
        median_ms
    }
}

/// A Linear whose weight is `[in, out]` held as `layout`, from the same values.
fn relayout<B: Backend>(l: &Linear<B>, layout: Layout) -> Linear<B> {
    let w = l.weight.val();
    let device = w.device();
    let data = w.into_data();
    let dtype = data.dtype;
    let weight = match layout {
        Layout::Contiguous => Tensor::<B, 2>::from_data(data, (&device, dtype)),
        Layout::View => {
            // [in, out] -> host transpose -> [out, in] contiguous -> transposed view.
            let t = Tensor::<B, 2>::from_data(data, (&device, dtype));
            let out_in = t.transpose().into_data();
            Tensor::<B, 2>::from_data(out_in, (&device, dtype)).transpose()
        }
    };
    Linear {
        weight: Param::from_tensor(weight),
        bias: l.bias.clone(),
    }
}

/// Every Linear of the model re-held as `layout` (same values).
fn relayout_model<B: Backend>(m: &mut WanTransformer3DModel<B>, layout: Layout) {
    let f = |l: &mut Linear<B>| *l = relayout(l, layout);
    f(&mut m.patch_embedding.proj);
    f(&mut m.condition_embedder.time_proj);
    f(&mut m.condition_embedder.text_1);
    f(&mut m.condition_embedder.text_2);
    f(&mut m.proj_out);
    for b in &mut m.blocks {
        for a in [&mut b.attn1, &mut b.attn2] {
            f(&mut a.to_q);
            f(&mut a.to_k);
            f(&mut a.to_v);
            f(&mut a.to_out);
        }
        f(&mut b.ffn.proj_in);
        f(&mut b.ffn.proj_out);
    }
}

fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, d] = x.dims();
    x.reshape([b, n, heads, d / heads]).swap_dims(1, 2)
}

fn merge<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

fn cast<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// RoPE as `vdit_models::nn::rope::apply_interleaved` computed it before 2026-11-24
/// (strided half-tensors, four products, a concatenation): the "before" of the rows.
fn rope_before<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let dtype = x.dtype();
    let [b, h, n, d] = x.dims();
    let x = to_f32(x).reshape([b, h, n, d / 2, 2]);
    let x1 = x.clone().narrow(4, 0, 1);
    let x2 = x.narrow(4, 1, 1);
    let c: Tensor<B, 5> = cos.clone().reshape([1, 1, n, d / 2, 1]);
    let s: Tensor<B, 5> = sin.clone().reshape([1, 1, n, d / 2, 1]);
    let o1 = x1.clone() * c.clone() - x2.clone() * s.clone();
    let o2 = x1 * s + x2 * c;
    cast(Tensor::cat(vec![o1, o2], 4).reshape([b, h, n, d]), dtype)
}

/// `LayerNorm32::forward_f32` as it was before 2026-11-24 (`var_mean_bias`, then
/// `(x - mean) / sqrt(var + eps)`).
fn layer_norm_before<B: Backend>(norm: &LayerNorm32<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let x = to_f32(x);
    let (var, mean) = x.clone().var_mean_bias(2);
    let mut y = (x - mean) / (var + norm.eps).sqrt();
    if let Some(w) = &norm.weight {
        y = y * to_f32(w.val()).unsqueeze();
    }
    if let Some(b) = &norm.bias {
        y = y + to_f32(b.val()).unsqueeze();
    }
    y
}

/// How the re-implemented block computes.
#[derive(Debug, Clone, Copy)]
struct Variant {
    /// RoPE and LayerNorm as before 2026-11-24.
    before: bool,
    /// Pad the rows of every token-wide matmul to a multiple of this (0: no padding).
    pad_rows: usize,
}

/// `Linear::forward` with the rows padded with zeros to a multiple of `pad` (the extra
/// output rows are dropped).
fn linear_padded<B: ModelBackend>(l: &Linear<B>, x: Tensor<B, 3>, pad: usize) -> Tensor<B, 3> {
    let [b, n, k] = x.dims();
    let rows = b * n;
    if pad == 0 || rows.is_multiple_of(pad) {
        return l.forward(x);
    }
    let w = l.weight.val();
    let x = cast(x, w.dtype()).reshape([rows, k]);
    let zeros = Tensor::<B, 2>::zeros(
        [rows.next_multiple_of(pad) - rows, k],
        (&x.device(), x.dtype()),
    );
    let y = Tensor::cat(vec![x, zeros], 0).matmul(w);
    let y = match &l.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    };
    y.narrow(0, 0, rows).reshape([b, n, l.d_out()])
}

/// `WanBlock::forward` re-implemented from the block's public parts, with `v`'s choices.
#[allow(clippy::too_many_arguments)]
fn block_variant<B: ModelBackend>(
    block: &WanBlock<B>,
    x: Tensor<B, 3>,
    text: Tensor<B, 3>,
    timestep_proj: Tensor<B, 3>,
    ropes: &(Tensor<B, 2>, Tensor<B, 2>),
    ctx: &vdit_attention::AttentionContext,
    v: Variant,
) -> Tensor<B, 3> {
    let dtype = x.dtype();
    let heads = block.attn1.heads;
    let ln = |n: &LayerNorm32<B>, x: Tensor<B, 3>| {
        if v.before {
            layer_norm_before(n, x)
        } else {
            n.forward_f32(x)
        }
    };
    let rot = |x: Tensor<B, 4>| {
        if v.before {
            rope_before(x, &ropes.0, &ropes.1)
        } else {
            rope::apply_interleaved(x, &ropes.0, &ropes.1)
        }
    };
    let lin = |l: &Linear<B>, x: Tensor<B, 3>| linear_padded(l, x, v.pad_rows);
    let m = block.scale_shift_table.val() + to_f32(timestep_proj);
    let [b, _, d] = m.dims();
    let part = |i: usize| m.clone().narrow(1, i, 1).reshape([b, 1, d]);
    let (shift, scale, gate) = (part(0), part(1), part(2));
    let (c_shift, c_scale, c_gate) = (part(3), part(4), part(5));

    let a1 = &block.attn1;
    let h = cast(ln(&block.norm1, x.clone()) * (scale + 1.0) + shift, dtype);
    let q = rot(split_heads(
        a1.norm_q.forward(lin(&a1.to_q, h.clone())),
        heads,
    ));
    let k = rot(split_heads(
        a1.norm_k.forward(lin(&a1.to_k, h.clone())),
        heads,
    ));
    let vv = split_heads(lin(&a1.to_v, h), heads);
    let o = ctx
        .self_attention::<B>(0, q, k, vv, None)
        .expect("self-attention");
    let attn = lin(&a1.to_out, merge(o));
    let x = cast(to_f32(x) + to_f32(attn) * gate, dtype);

    let a2 = &block.attn2;
    let h = match &block.norm2 {
        Some(n) => cast(ln(n, x.clone()), dtype),
        None => x.clone(),
    };
    let q = split_heads(a2.norm_q.forward(lin(&a2.to_q, h)), heads);
    let k = split_heads(a2.norm_k.forward(a2.to_k.forward(text.clone())), heads);
    let vv = split_heads(a2.to_v.forward(text), heads);
    let o =
        burn::tensor::module::attention(q, k, vv, None, None, AttentionModuleOptions::default());
    let x = x + lin(&a2.to_out, merge(o));

    let h = cast(
        ln(&block.norm3, x.clone()) * (c_scale + 1.0) + c_shift,
        dtype,
    );
    let ffn = &block.ffn;
    let ff = lin(&ffn.proj_out, gelu_tanh(lin(&ffn.proj_in, h)));
    cast(to_f32(x) + to_f32(ff) * c_gate, dtype)
}

fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    (to_f32(a) - to_f32(b))
        .abs()
        .max()
        .into_scalar()
        .elem::<f64>()
}

fn linear_flops(rows: usize, l: &Linear<impl Backend>) -> f64 {
    2.0 * rows as f64 * l.d_in() as f64 * l.d_out() as f64
}

struct Setup {
    config: WanConfig,
    latent: [usize; 3],
    dtype: DType,
}

fn profile<B: ModelBackend>(device: &B::Device, args: &Args, setup: &Setup) -> AnyResult<Value> {
    let c = &setup.config;
    let dtype = setup.dtype;
    let [f, h, w] = setup.latent;
    let [pt, ph, pw] = c.patch_size;
    let grid = [f / pt, h / ph, w / pw];
    let n = grid.iter().product::<usize>();
    let d = c.dim;
    let l_text = args.text_len;
    let layers = c.layers;
    let esize = dtype.size() as f64;

    eprintln!(
        "Wan {} layers, dim {d}, heads {}, ffn {}, latent {f}x{h}x{w} -> {n} tokens, text {l_text}, {dtype:?}",
        layers, c.heads, c.ffn_dim
    );
    let t0 = Instant::now();
    let mut model = WanTransformer3DModel::<B>::random(c, 0, dtype, device)?;
    B::sync(device).map_err(|e| format!("{e:?}"))?;
    eprintln!("built in {:.1}s", t0.elapsed().as_secs_f64());
    let ctx = model.attention_context(f, h, w, None)?;

    let mut timer = Timer::<B> {
        device,
        warmup: args.warmup,
        repeats: args.repeats,
        rows: Vec::new(),
    };

    // (a) The whole forward, per weight layout.
    let latents = Tensor::<B, 5>::random(
        [1, c.in_channels, f, h, w],
        Distribution::Normal(0.0, 1.0),
        (device, DType::F32),
    );
    let timestep =
        Tensor::<B, 1>::from_data(TensorData::new(vec![500.0f32], [1]), (device, DType::F32));
    let text_in = Tensor::<B, 3>::random(
        [1, l_text, c.text_dim],
        Distribution::Normal(0.0, 1.0),
        (device, DType::F32),
    );
    let mut forward_ms = Vec::new();
    for &layout in &args.layouts {
        relayout_model(&mut model, layout);
        B::sync(device).map_err(|e| format!("{e:?}"))?;
        if args.skip_forward {
            continue;
        }
        let (med, min) = timer.time(args.warmup, args.forward_repeats, || {
            model
                .forward(latents.clone(), timestep.clone(), text_in.clone(), &ctx)
                .expect("forward")
        });
        let name = format!("forward (weights: {})", layout.name());
        eprintln!("  forward {name:58} {med:9.3} ms");
        timer.rows.push(Row {
            section: "forward",
            name,
            median_ms: med,
            min_ms: min,
            per_step: 1,
            flops: None,
            bytes: None,
        });
        forward_ms.push((layout, med));
    }
    // Block rows use the last layout in `--layout`.
    let layout = *args.layouts.last().expect("a layout");

    // (b) One block, piece by piece, with a step's shapes.
    let normal = Distribution::Normal(0.0, 1.0);
    let rnd3 =
        |shape: [usize; 3]| Tensor::<B, 3>::random(shape, normal, (device, DType::F32)).cast(dtype);
    let x = rnd3([1, n, d]);
    let text = rnd3([1, l_text, d]);
    let tproj = rnd3([1, 6, d]);
    let ropes = model.rope_tables(grid, device);
    let block = &model.blocks[0];
    let heads = block.attn1.heads;
    let nd = (n * d) as f64;
    let (bf, f32b) = (esize, 4.0);
    let lay = layout.name();

    // Modulation parts as the block computes them.
    let modulation = || {
        let m = block.scale_shift_table.val() + to_f32(tproj.clone());
        let part = |i: usize| m.clone().narrow(1, i, 1).reshape([1, 1, d]);
        (part(0), part(1), part(2), part(3), part(4), part(5))
    };
    timer.row(
        "block",
        "modulation: table + f32(temb), 6 parts",
        layers,
        None,
        None,
        &modulation,
    );
    let (shift, scale, gate, c_shift, c_scale, c_gate) = modulation();

    timer.row(
        "block",
        "norm1 LayerNorm32 (bf16 in, f32 out)",
        layers,
        None,
        Some(nd * (bf + f32b)),
        || block.norm1.forward_f32(x.clone()),
    );
    let h32 = block.norm1.forward_f32(x.clone());
    timer.row(
        "before",
        "norm1 LayerNorm32 before (var_mean_bias, divide)",
        0,
        None,
        Some(nd * (bf + f32b)),
        || layer_norm_before(&block.norm1, x.clone()),
    );
    let ln_diff = max_abs_diff(layer_norm_before(&block.norm1, x.clone()), h32.clone());
    eprintln!("  LayerNorm32 before vs now: max |diff| = {ln_diff:e}");
    timer.row(
        "block",
        "modulate f32: h*(1+scale)+shift",
        layers,
        None,
        Some(nd * 2.0 * f32b),
        || h32.clone() * (scale.clone() + 1.0) + shift.clone(),
    );
    timer.row(
        "block",
        "cast f32->bf16 [N,D]",
        layers,
        None,
        Some(nd * (bf + f32b)),
        || cast(h32.clone(), dtype),
    );
    let hb = cast(h32.clone() * (scale.clone() + 1.0) + shift.clone(), dtype);
    let a1 = &block.attn1;
    for (nm, lin) in [
        ("attn1.to_q", &a1.to_q),
        ("attn1.to_k", &a1.to_k),
        ("attn1.to_v", &a1.to_v),
    ] {
        timer.row(
            "block",
            format!("{nm} Linear {d}->{d} ({lay})"),
            layers,
            Some(linear_flops(n, lin)),
            None,
            || lin.forward(hb.clone()),
        );
    }
    let q = a1.to_q.forward(hb.clone());
    let k = a1.to_k.forward(hb.clone());
    let v = a1.to_v.forward(hb.clone());
    timer.row(
        "block",
        "attn1.norm_q RmsNorm32",
        layers,
        None,
        Some(nd * 2.0 * bf),
        || a1.norm_q.forward(q.clone()),
    );
    timer.row(
        "block",
        "attn1.norm_k RmsNorm32",
        layers,
        None,
        Some(nd * 2.0 * bf),
        || a1.norm_k.forward(k.clone()),
    );
    let qn = a1.norm_q.forward(q.clone());
    let kn = a1.norm_k.forward(k.clone());
    timer.row(
        "block",
        "rope q (split heads + interleaved, f32)",
        layers,
        None,
        Some(nd * 2.0 * bf),
        || rope::apply_interleaved(split_heads(qn.clone(), heads), &ropes.0, &ropes.1),
    );
    timer.row("block", "rope k", layers, None, Some(nd * 2.0 * bf), || {
        rope::apply_interleaved(split_heads(kn.clone(), heads), &ropes.0, &ropes.1)
    });
    timer.row(
        "before",
        "rope q before (narrow halves, cat)",
        0,
        None,
        Some(nd * 2.0 * bf),
        || rope_before(split_heads(qn.clone(), heads), &ropes.0, &ropes.1),
    );
    let qr = rope::apply_interleaved(split_heads(qn.clone(), heads), &ropes.0, &ropes.1);
    let rope_diff = max_abs_diff(
        rope_before(split_heads(qn.clone(), heads), &ropes.0, &ropes.1),
        qr.clone(),
    );
    eprintln!("  rope before vs now: max |diff| = {rope_diff:e}");
    let kr = rope::apply_interleaved(split_heads(kn.clone(), heads), &ropes.0, &ropes.1);
    let vh = split_heads(v.clone(), heads);
    timer.row(
        "block",
        "self-attention (dense; v as head-split view)",
        layers,
        None,
        None,
        || {
            ctx.self_attention::<B>(0, qr.clone(), kr.clone(), vh.clone(), None)
                .expect("self-attention")
        },
    );
    // A contiguous copy of v, to separate the relayout from the kernel.
    let vc = Tensor::<B, 4>::from_data(vh.clone().into_data(), (device, dtype));
    timer.row(
        "block",
        "self-attention (dense; contiguous q/k/v)",
        layers,
        None,
        None,
        || {
            ctx.self_attention::<B>(0, qr.clone(), kr.clone(), vc.clone(), None)
                .expect("self-attention")
        },
    );
    let ao = ctx.self_attention::<B>(0, qr.clone(), kr.clone(), vc.clone(), None)?;
    timer.row(
        "block",
        "merge heads relayout [1,h,N,d]->[1,N,D]",
        layers,
        None,
        Some(nd * 2.0 * bf),
        || merge(ao.clone()),
    );
    let am = merge(ao.clone());
    timer.row(
        "block",
        format!("attn1.to_out Linear {d}->{d} ({lay})"),
        layers,
        Some(linear_flops(n, &a1.to_out)),
        None,
        || a1.to_out.forward(am.clone()),
    );
    let attn = a1.to_out.forward(am.clone());
    timer.row(
        "block",
        "gated residual f32: bf16(x + attn*gate)",
        layers,
        None,
        Some(nd * 3.0 * bf),
        || {
            cast(
                to_f32(x.clone()) + to_f32(attn.clone()) * gate.clone(),
                dtype,
            )
        },
    );
    let x1 = cast(
        to_f32(x.clone()) + to_f32(attn.clone()) * gate.clone(),
        dtype,
    );

    let a2 = &block.attn2;
    let h2 = match &block.norm2 {
        Some(nrm) => {
            timer.row(
                "block",
                "norm2 LayerNorm32 affine + cast",
                layers,
                None,
                Some(nd * 2.0 * bf),
                || cast(nrm.forward_f32(x1.clone()), dtype),
            );
            cast(nrm.forward_f32(x1.clone()), dtype)
        }
        None => x1.clone(),
    };
    timer.row(
        "block",
        format!("attn2.to_q Linear {d}->{d} ({lay})"),
        layers,
        Some(linear_flops(n, &a2.to_q)),
        None,
        || a2.to_q.forward(h2.clone()),
    );
    let q2 = a2.to_q.forward(h2.clone());
    timer.row(
        "block",
        "attn2.norm_q RmsNorm32",
        layers,
        None,
        Some(nd * 2.0 * bf),
        || a2.norm_q.forward(q2.clone()),
    );
    timer.row(
        "block",
        format!("attn2 k+v Linears + norm_k on {l_text} text tokens"),
        layers,
        Some(2.0 * linear_flops(l_text, &a2.to_k)),
        None,
        || {
            (
                a2.norm_k.forward(a2.to_k.forward(text.clone())),
                a2.to_v.forward(text.clone()),
            )
        },
    );
    let q2n = a2.norm_q.forward(q2.clone());
    let k2 = a2.norm_k.forward(a2.to_k.forward(text.clone()));
    let v2 = a2.to_v.forward(text.clone());
    let (q2h, k2h, v2h) = (
        split_heads(q2n.clone(), heads),
        split_heads(k2.clone(), heads),
        split_heads(v2.clone(), heads),
    );
    timer.row(
        "block",
        format!("cross-attention core (burn attention, {l_text} keys)"),
        layers,
        Some(4.0 * n as f64 * l_text as f64 * d as f64),
        None,
        || {
            burn::tensor::module::attention(
                q2h.clone(),
                k2h.clone(),
                v2h.clone(),
                None,
                None,
                AttentionModuleOptions::default(),
            )
        },
    );
    let co = burn::tensor::module::attention(
        q2h,
        k2h,
        v2h,
        None,
        None,
        AttentionModuleOptions::default(),
    );
    timer.row(
        "block",
        "attn2 merge heads relayout",
        layers,
        None,
        Some(nd * 2.0 * bf),
        || merge(co.clone()),
    );
    let cm = merge(co.clone());
    timer.row(
        "block",
        format!("attn2.to_out Linear {d}->{d} ({lay})"),
        layers,
        Some(linear_flops(n, &a2.to_out)),
        None,
        || a2.to_out.forward(cm.clone()),
    );
    let cross = a2.to_out.forward(cm.clone());
    timer.row(
        "block",
        "residual add x + cross (bf16)",
        layers,
        None,
        Some(nd * 3.0 * bf),
        || x1.clone() + cross.clone(),
    );
    let x2 = x1.clone() + cross.clone();
    timer.row(
        "block",
        "norm3 + modulate + cast (f32)",
        layers,
        None,
        Some(nd * 2.0 * bf),
        || {
            cast(
                block.norm3.forward_f32(x2.clone()) * (c_scale.clone() + 1.0) + c_shift.clone(),
                dtype,
            )
        },
    );
    let h3 = cast(
        block.norm3.forward_f32(x2.clone()) * (c_scale.clone() + 1.0) + c_shift.clone(),
        dtype,
    );
    let ffn = &block.ffn;
    let nf = (n * c.ffn_dim) as f64;
    timer.row(
        "block",
        format!("ffn.proj_in Linear {d}->{} ({lay})", c.ffn_dim),
        layers,
        Some(linear_flops(n, &ffn.proj_in)),
        None,
        || ffn.proj_in.forward(h3.clone()),
    );
    let up = ffn.proj_in.forward(h3.clone());
    timer.row(
        "block",
        "gelu_tanh [N,ffn]",
        layers,
        None,
        Some(nf * 2.0 * bf),
        || gelu_tanh(up.clone()),
    );
    let act = gelu_tanh(up.clone());
    timer.row(
        "block",
        format!("ffn.proj_out Linear {}->{d} ({lay})", c.ffn_dim),
        layers,
        Some(linear_flops(n, &ffn.proj_out)),
        None,
        || ffn.proj_out.forward(act.clone()),
    );
    let ff = ffn.proj_out.forward(act.clone());
    timer.row(
        "block",
        "gated residual f32: bf16(x + ff*gate)",
        layers,
        None,
        Some(nd * 3.0 * bf),
        || {
            cast(
                to_f32(x2.clone()) + to_f32(ff.clone()) * c_gate.clone(),
                dtype,
            )
        },
    );
    let piece_sum: f64 = timer
        .rows
        .iter()
        .filter(|r| r.section == "block" && r.name != "self-attention (dense; contiguous q/k/v)")
        .map(|r| r.median_ms)
        .sum();
    let block_ms = timer.row(
        "block*",
        format!("whole block (block.forward, {lay})"),
        layers,
        None,
        None,
        || {
            block
                .forward(x.clone(), text.clone(), tproj.clone(), &ropes, &ctx, 0)
                .expect("block")
        },
    );
    let mut variant_ms = Vec::new();
    for (label, v) in [
        (
            "before (RoPE, LayerNorm as before 2026-11-24)",
            Variant {
                before: true,
                pad_rows: 0,
            },
        ),
        (
            "now (re-implemented, = block.forward)",
            Variant {
                before: false,
                pad_rows: 0,
            },
        ),
        (
            "now + token rows padded to 256 in every Linear",
            Variant {
                before: false,
                pad_rows: 256,
            },
        ),
    ] {
        let ms = timer.row(
            "block*",
            format!("whole block, {label}"),
            layers,
            None,
            None,
            || {
                block_variant(
                    block,
                    x.clone(),
                    text.clone(),
                    tproj.clone(),
                    &ropes,
                    &ctx,
                    v,
                )
            },
        );
        let out = block_variant(
            block,
            x.clone(),
            text.clone(),
            tproj.clone(),
            &ropes,
            &ctx,
            v,
        );
        let lib = block
            .forward(x.clone(), text.clone(), tproj.clone(), &ropes, &ctx, 0)
            .expect("block");
        let diff = max_abs_diff(out, lib);
        eprintln!("    max |diff| vs block.forward = {diff:e}");
        variant_ms.push(json!({"variant": label, "ms": ms, "max_abs_diff_vs_block_forward": diff}));
    }
    drop((
        q, k, v, qn, kn, qr, kr, vh, vc, ao, am, attn, x1, h2, q2, q2n, k2, v2, co, cm,
    ));
    drop((cross, x2, h3, up, act, ff, hb));

    // Non-block work of one step.
    let lat_b = cast(latents.clone(), dtype);
    timer.row("step", "patch embedding", 1, None, None, || {
        model.patch_embedding.forward(lat_b.clone())
    });
    let text_b = cast(text_in.clone(), dtype);
    timer.row(
        "step",
        "condition embedder (time + text)",
        1,
        None,
        None,
        || {
            let cond = model
                .condition_embedder
                .forward(&[500.0], text_b.clone(), dtype);
            (cond.temb, cond.timestep_proj, cond.text)
        },
    );
    timer.row(
        "step",
        "rope tables (host build + upload)",
        1,
        None,
        None,
        || model.build_rope_tables(grid, device),
    );

    // (c) Matmul micro-benchmarks.
    if !args.skip_micro {
        let shapes = [(n, d, d), (n, d, c.ffn_dim), (n, c.ffn_dim, d)];
        for (m_, k_, n_) in shapes {
            let flops = 2.0 * m_ as f64 * k_ as f64 * n_ as f64;
            for (label, dt) in [
                (format!("{dtype:?}").to_lowercase(), dtype),
                ("f32".to_string(), DType::F32),
            ] {
                let a = Tensor::<B, 2>::random([m_, k_], normal, (device, DType::F32)).cast(dt);
                let w_in_out =
                    Tensor::<B, 2>::random([k_, n_], normal, (device, DType::F32)).cast(dt);
                timer.row(
                    "micro",
                    format!("matmul {label} [{m_},{k_}]x[{k_},{n_}] weight contiguous [in,out]"),
                    0,
                    Some(flops),
                    None,
                    || a.clone().matmul(w_in_out.clone()),
                );
                let w_out_in =
                    Tensor::<B, 2>::random([n_, k_], normal, (device, DType::F32)).cast(dt);
                timer.row(
                    "micro",
                    format!(
                        "matmul {label} [{m_},{k_}]x[{k_},{n_}] weight transposed view of [out,in]"
                    ),
                    0,
                    Some(flops),
                    None,
                    || a.clone().matmul(w_out_in.clone().transpose()),
                );
                if dt != dtype {
                    continue;
                }
                // Same product as W [out,in] x A^T -> [out, M] (a transposed view of the
                // usual output).
                timer.row(
                    "micro",
                    format!("matmul {label} [{n_},{k_}]x[{k_},{m_}] (W x A^T, A^T a view)"),
                    0,
                    Some(flops),
                    None,
                    || w_out_in.clone().matmul(a.clone().transpose()),
                );
                // Rows padded to a multiple of 256.
                let mp = m_.next_multiple_of(256);
                if mp != m_ {
                    let ap =
                        Tensor::<B, 2>::random([mp, k_], normal, (device, DType::F32)).cast(dt);
                    timer.row(
                        "micro",
                        format!("matmul {label} [{mp},{k_}]x[{k_},{n_}] (rows padded) weight view"),
                        0,
                        Some(2.0 * mp as f64 * k_ as f64 * n_ as f64),
                        None,
                        || ap.clone().matmul(w_out_in.clone().transpose()),
                    );
                }
            }
        }
        // q, k and v of the self-attention as one product.
        let a = Tensor::<B, 2>::random([n, d], normal, (device, DType::F32)).cast(dtype);
        let wqkv = Tensor::<B, 2>::random([3 * d, d], normal, (device, DType::F32)).cast(dtype);
        timer.row(
            "micro",
            format!(
                "matmul {} [{n},{d}]x[{d},{}] (fused q/k/v) weight view",
                format!("{dtype:?}").to_lowercase(),
                3 * d
            ),
            0,
            Some(2.0 * n as f64 * d as f64 * 3.0 * d as f64),
            None,
            || a.clone().matmul(wqkv.clone().transpose()),
        );
        // Bandwidth references.
        let big = Tensor::<B, 2>::random([n, d], normal, (device, DType::F32)).cast(dtype);
        timer.row(
            "micro",
            "cast bf16->f32 [N,D]",
            0,
            None,
            Some(nd * (bf + f32b)),
            || big.clone().cast(DType::F32),
        );
        timer.row(
            "micro",
            "add bf16 [N,D] + [N,D]",
            0,
            None,
            Some(nd * 3.0 * bf),
            || big.clone() + big.clone(),
        );
        let bias = Tensor::<B, 1>::random([d], normal, (device, DType::F32)).cast(dtype);
        timer.row(
            "micro",
            "bias add bf16 [N,D] + [D]",
            0,
            None,
            Some(nd * 2.0 * bf),
            || big.clone() + bias.clone().unsqueeze(),
        );
        let nf = (n * c.ffn_dim) as f64;
        let big_f =
            Tensor::<B, 2>::random([n, c.ffn_dim], normal, (device, DType::F32)).cast(dtype);
        let bias_f = Tensor::<B, 1>::random([c.ffn_dim], normal, (device, DType::F32)).cast(dtype);
        timer.row(
            "micro",
            "bias add bf16 [N,ffn] + [ffn]",
            0,
            None,
            Some(nf * 2.0 * bf),
            || big_f.clone() + bias_f.clone().unsqueeze(),
        );
        timer.row(
            "micro",
            "mean_dim f32 [N,D] over D",
            0,
            None,
            Some(nd * f32b),
            || h32.clone().mean_dim(2),
        );
    }

    // Report.
    let rows = timer.rows;
    let fwd = forward_ms
        .iter()
        .map(|(l, ms)| json!({"layout": l.name(), "ms": ms}))
        .collect::<Vec<_>>();
    let attention_ms = rows
        .iter()
        .find(|r| r.name.starts_with("self-attention (dense; v"))
        .map(|r| r.median_ms)
        .unwrap_or(0.0);
    let linear_ms: f64 = rows
        .iter()
        .filter(|r| r.section == "block" && r.name.contains("Linear"))
        .map(|r| r.median_ms)
        .sum();
    let summary = json!({
        "forward_ms": fwd,
        "block_ms": block_ms,
        "block_pieces_sum_ms": piece_sum,
        "blocks_per_step_ms": block_ms * layers as f64,
        "self_attention_ms_per_block": attention_ms,
        "linear_ms_per_block": linear_ms,
        "non_attention_ms_per_block": block_ms - attention_ms,
        "block_variants": variant_ms,
        "rope_before_vs_now_max_abs_diff": rope_diff,
        "layer_norm_before_vs_now_max_abs_diff": ln_diff,
    });

    println!();
    println!("| section | piece | median ms | per step | ms per step | TFLOP/s | GB/s |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let tf = r
            .flops
            .map(|f| format!("{:.0}", f / (r.median_ms * 1e-3) / 1e12))
            .unwrap_or_default();
        let gb = r
            .bytes
            .map(|b| format!("{:.0}", b / (r.median_ms * 1e-3) / 1e9))
            .unwrap_or_default();
        println!(
            "| {} | {} | {:.3} | {} | {:.1} | {} | {} |",
            r.section,
            r.name,
            r.median_ms,
            r.per_step,
            r.median_ms * r.per_step as f64,
            tf,
            gb
        );
    }
    println!();
    println!("summary: {summary}");

    Ok(json!({
        "model": if args.tiny { "wan-tiny" } else { "wan2.1-t2v-1.3b" },
        "latent": setup.latent,
        "tokens": n,
        "text_tokens": l_text,
        "dtype": format!("{dtype:?}"),
        "layers": layers,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "forward_repeats": args.forward_repeats,
        "block_weight_layout": lay,
        "summary": summary,
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
    }))
}

fn main() -> AnyResult<()> {
    let args = parse_args()?;
    let setup = if args.tiny {
        Setup {
            config: WanConfig::tiny(),
            latent: [3, 8, 12],
            dtype: if args.cpu { DType::F32 } else { DType::BF16 },
        }
    } else {
        Setup {
            config: WanConfig::preset("wan2.1-t2v-1.3b")?,
            latent: [21, 60, 104],
            dtype: DType::BF16,
        }
    };
    let (backend, report) = if args.cpu {
        type B = burn::backend::Flex;
        let device = Default::default();
        ("cpu (burn-flex)", profile::<B>(&device, &args, &setup)?)
    } else {
        type B = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
        let device = cubecl::cuda::CudaDevice::default();
        (
            "cuda (burn_cubecl::CubeBackend<CudaRuntime>)",
            profile::<B>(&device, &args, &setup)?,
        )
    };
    if let Some(path) = &args.out {
        let mut report = report;
        report["backend"] = json!(backend);
        report["command"] = json!(std::env::args().collect::<Vec<_>>().join(" "));
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
