#!/usr/bin/env python3
"""PyTorch peer for the denoiser-step benchmark: one diffusers transformer forward per step.

Times the diffusers denoisers at their real sizes (random weights, batch 1, no CFG), with
PyTorch's scaled_dot_product_attention (diffusers' "native" attention backend; CogVideoX's
processor calls F.scaled_dot_product_attention directly):

  wan        WanTransformer3DModel, Wan2.1-T2V-1.3B, 832x480 x 81 frames:
             latents [1,16,21,60,104], text [1,512,4096]              (32,760 tokens)
  hunyuan    HunyuanVideoTransformer3DModel, HunyuanVideo, 1280x720 x 129 frames:
             latents [1,16,33,90,160], text [1,256,4096] + mask (valid prefix),
             pooled [1,768], guidance 6.0 x 1000                      (118,800 + 256 tokens)
  cogvideox  CogVideoXTransformer3DModel, CogVideoX1.5-5B, 1360x768 x 81 frames:
             21 latent frames padded to 22 as the pipeline does: latents [1,22,16,96,170],
             text [1,226,4096], RoPE from CogVideoXPipeline._prepare_rotary_positional_embeddings
             (1.5 branch, grid "slice")                               (226 + 44,880 tokens)

The configs are hard-coded (diffusers config.json values of the checkpoints, the same as
the Rust presets in crates/vdit-*/src/config.rs); nothing is downloaded. Models are built
directly on the device in the benchmark dtype (default dtype switched while the modules are
created, PyTorch's default init, fixed seed); parameters under a model's
`_keep_in_fp32_modules` are then kept in float32, as `from_pretrained(torch_dtype=...)` does.

Timing: `--warmup` untimed steps, then `--repeats` timed steps under torch.no_grad(), each
between two CUDA events followed by a synchronize (wall clock on the CPU). Memory:
torch.cuda.max_memory_allocated / max_memory_reserved over the steps (reset per model and per
SDPA variant; weights and inputs included), and the weights alone.

Writes OUT/peers_step.json (+ peers_step.md) after every model and SDPA variant, so a run
stopped by a time limit keeps what it finished. `tools/step_report.py` merges it with our
bench report; `tools/device/peers_step.sh` runs it on the GPU machine.

Usage:
  python3 tools/peers_step.py --out DIR [--models wan,cogvideox,hunyuan] [--warmup 1]
      [--repeats 3] [--sdpa default,cudnn] [--profile] [--compile [--compile-mode M]]
      [--tiny] [--dtype auto|bf16|fp32] [--hunyuan-valid-text 128] [--meta-check]
  --sdpa     default = PyTorch's own SDPA kernel choice (what a diffusers user gets); cudnn /
             flash / efficient / math = that kernel first, the others as fall-backs.
  --profile  one extra step under torch.profiler: which aten SDPA op ran and its time.
  --tiny     tiny configs at tiny sizes (a smoke run; float32 on a machine without CUDA).
  --meta-check  real configs on the meta device: parameter counts, shapes, RoPE; no run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import types

import torch

# ---------------------------------------------------------------------------------------
# Configs (diffusers config.json values) and sizes.
# ---------------------------------------------------------------------------------------

WAN_1_3B = dict(  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
    pos_embed_seq_len=None,
)

HUNYUAN_T2V = dict(  # hunyuanvideo-community/HunyuanVideo transformer/config.json
    in_channels=16,
    out_channels=16,
    num_attention_heads=24,
    attention_head_dim=128,
    num_layers=20,
    num_single_layers=40,
    num_refiner_layers=2,
    mlp_ratio=4.0,
    patch_size=2,
    patch_size_t=1,
    qk_norm="rms_norm",
    guidance_embeds=True,
    text_embed_dim=4096,
    pooled_projection_dim=768,
    rope_theta=256.0,
    rope_axes_dim=(16, 56, 56),
    image_condition_type=None,
)

COGVIDEOX_1_5_5B = dict(  # THUDM/CogVideoX1.5-5B transformer/config.json
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    ofs_embed_dim=None,
    text_embed_dim=4096,
    num_layers=42,
    dropout=0.0,
    attention_bias=True,
    sample_width=300,
    sample_height=300,
    sample_frames=81,
    patch_size=2,
    patch_size_t=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
    patch_bias=False,
)

# Tiny configs: the real ones with small widths (same keys, so the same code paths).
WAN_TINY = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=12, in_channels=4,
                out_channels=4, text_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)
HUNYUAN_TINY = dict(HUNYUAN_T2V, in_channels=4, out_channels=4, num_attention_heads=2,
                    attention_head_dim=10, num_layers=1, num_single_layers=1,
                    num_refiner_layers=1, text_embed_dim=16, pooled_projection_dim=8,
                    rope_axes_dim=(2, 4, 4))
COGVIDEOX_TINY = dict(COGVIDEOX_1_5_5B, num_attention_heads=2, attention_head_dim=16,
                      in_channels=4, out_channels=4, time_embed_dim=8, text_embed_dim=8,
                      num_layers=2, sample_width=16, sample_height=16, sample_frames=9,
                      max_text_seq_length=8)

VAE_T, VAE_S = 4, 8  # temporal / spatial VAE compression of all three models

# name -> spec. Sizes in pixels and video frames, as a pipeline is called; latents follow.
SPECS = {
    "wan": dict(
        cls="WanTransformer3DModel", label="Wan2.1-T2V-1.3B 480p x 81f",
        config=WAN_1_3B, tiny_config=WAN_TINY, expect_params=1_418_996_800,
        size=dict(width=832, height=480, frames=81, text=512),
        tiny_size=dict(width=96, height=64, frames=13, text=12),
        expect_latent=[1, 16, 21, 60, 104],
    ),
    "hunyuan": dict(
        cls="HunyuanVideoTransformer3DModel", label="HunyuanVideo 720p x 129f",
        config=HUNYUAN_T2V, tiny_config=HUNYUAN_TINY, expect_params=12_821_012_544,
        size=dict(width=1280, height=720, frames=129, text=256),
        tiny_size=dict(width=64, height=64, frames=9, text=12),
        expect_latent=[1, 16, 33, 90, 160],
    ),
    "cogvideox": dict(
        cls="CogVideoXTransformer3DModel", label="CogVideoX1.5-5B 1360x768 x 81f",
        config=COGVIDEOX_1_5_5B, tiny_config=COGVIDEOX_TINY, expect_params=5_570_676_352,
        size=dict(width=1360, height=768, frames=81, text=226),
        tiny_size=dict(width=96, height=64, frames=9, text=8),
        expect_latent=[1, 22, 16, 96, 170],
    ),
}

TIMESTEP = 500.0  # mid-trajectory; the step cost does not depend on it
GUIDANCE = 6.0  # HunyuanVideo pipeline default (embedded guidance, x 1000)
SDPA_CHOICES = ("default", "cudnn", "flash", "efficient", "math")


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

def log(*a):
    print(*a, file=sys.stderr, flush=True)


def gib(n):
    return n / 2**30


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def versions():
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "host": platform.node(),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
        info["diffusers_path"] = os.path.dirname(diffusers.__file__)
    except Exception as e:  # noqa: BLE001
        info["diffusers"] = f"import failed: {e}"
    for mod in ("huggingface_hub", "transformers", "accelerate", "safetensors", "numpy", "triton"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(gib(p.total_memory), 2)
        info["sm_count"] = p.multi_processor_count
        info["capability"] = f"{p.major}.{p.minor}"
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except Exception:  # noqa: BLE001
            info["driver"] = None
    else:
        info["gpu"] = None
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        info["commit"] = out.stdout.strip() if out.returncode == 0 else None
    except Exception:  # noqa: BLE001
        info["commit"] = None
    info["DIFFUSERS_ATTN_BACKEND"] = os.environ.get("DIFFUSERS_ATTN_BACKEND", "native (default)")
    return info


def sdpa_context(choice):
    """`default`: PyTorch picks the SDPA kernel. Otherwise that backend first, the others as
    fall-backs (e.g. a mask the preferred kernel does not take)."""
    import contextlib

    if choice == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }
    first = order[choice]
    rest = [b for b in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                        SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH) if b != first]
    try:
        return sdpa_kernel([first] + rest, set_priority=True)
    except TypeError:  # older torch: no priority order, any of them
        return sdpa_kernel([first] + rest)


def latent_shape(name, cfg, size):
    """Latent shape as the pipeline makes it (CogVideoX: frames first, padded to patch_size_t)."""
    f = (size["frames"] - 1) // VAE_T + 1
    h, w = size["height"] // VAE_S, size["width"] // VAE_S
    c = cfg["in_channels"]
    if name == "cogvideox":
        pt = cfg["patch_size_t"]
        if pt is not None and f % pt != 0:
            f += pt - f % pt  # pipeline_cogvideox.py: additional_frames
        return [1, f, c, h, w]
    return [1, c, f, h, w]


def token_counts(name, cfg, latent, text):
    if name == "wan":
        pt, ph, pw = cfg["patch_size"]
        _, _, f, h, w = latent
        video = (f // pt) * (h // ph) * (w // pw)
        return video, video  # self-attention over video only
    if name == "hunyuan":
        _, _, f, h, w = latent
        video = (f // cfg["patch_size_t"]) * (h // cfg["patch_size"]) * (w // cfg["patch_size"])
        return video, video + text
    _, f, _, h, w = latent
    video = (f // cfg["patch_size_t"]) * (h // cfg["patch_size"]) * (w // cfg["patch_size"])
    return video, video + text


def build_model(cls, cfg, device, dtype, seed):
    """Build on `device` directly in `dtype` (no float32 copy, no CPU init), PyTorch's default
    init with a fixed seed; then `_keep_in_fp32_modules` parameters in float32."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(**cfg)
    finally:
        torch.set_default_dtype(prev)
    keep = list(getattr(cls, "_keep_in_fp32_modules", None) or [])
    kept = 0
    if dtype != torch.float32 and keep:
        for pname, p in model.named_parameters():
            if any(k in pname.split(".") for k in keep):  # diffusers' rule (model_loading_utils)
                p.data = p.data.to(torch.float32)
                kept += p.numel()
    model.eval().requires_grad_(False)
    return model, kept


def buffer_dtypes(model):
    return {n: str(b.dtype).replace("torch.", "") for n, b in model.named_buffers()}


def reference_buffer_dtypes(cls, cfg):
    """Buffer dtypes of the same model built the ordinary way (float32 default) on the meta
    device (costs nothing): a buffer that came out in the benchmark dtype instead of float32
    would mean the default-dtype switch leaked into a computed table."""
    with torch.device("meta"):
        ref = cls(**cfg)
    out = buffer_dtypes(ref)
    del ref
    return out


def cogvideox_rope(model, size, latent_frames, device):
    """RoPE tables exactly as CogVideoXPipeline computes them (1.5 branch, grid "slice"):
    the pipeline's own method on a stand-in `self` when the pipeline imports, and an
    independent copy of that method, checked equal."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cfg = model.config
    p, p_t = cfg.patch_size, cfg.patch_size_t
    gh = size["height"] // (VAE_S * p)
    gw = size["width"] // (VAE_S * p)
    replica = get_3d_rotary_pos_embed(
        embed_dim=cfg.attention_head_dim,
        crops_coords=None,
        grid_size=(gh, gw),
        temporal_size=(latent_frames + p_t - 1) // p_t,
        grid_type="slice",
        max_size=(cfg.sample_height // p, cfg.sample_width // p),
        device=device,
    )
    try:
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline

        fake = types.SimpleNamespace(vae_scale_factor_spatial=VAE_S, transformer=model)
        piped = CogVideoXPipeline._prepare_rotary_positional_embeddings(
            fake, size["height"], size["width"], latent_frames, device)
    except Exception as e:  # noqa: BLE001
        log(f"  CogVideoXPipeline not usable ({str(e)[:160]}); using the copy of its RoPE code")
        return replica, "copy of pipeline code (pipeline import failed)"
    same = all(torch.equal(a, b) for a, b in zip(piped, replica))
    if not same:
        raise RuntimeError("CogVideoX RoPE: pipeline and copy differ")
    return piped, "CogVideoXPipeline._prepare_rotary_positional_embeddings (== copy)"


def make_inputs(name, model, cfg, size, latent, dtype, device, seed, valid_text):
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dt)

    text_len = size["text"]
    meta = {}
    if name == "wan":
        kw = dict(
            hidden_states=randn(*latent),
            timestep=torch.full((1,), TIMESTEP, device=device, dtype=torch.float32),
            encoder_hidden_states=randn(1, text_len, cfg["text_dim"]),
        )
    elif name == "hunyuan":
        valid = min(valid_text, text_len)
        mask = torch.zeros(1, text_len, device=device, dtype=dtype)  # pipeline: mask.to(transformer_dtype)
        mask[:, :valid] = 1
        kw = dict(
            hidden_states=randn(*latent),
            timestep=torch.full((1,), TIMESTEP, device=device, dtype=torch.float32),
            encoder_hidden_states=randn(1, text_len, cfg["text_embed_dim"]),
            encoder_attention_mask=mask,
            pooled_projections=randn(1, cfg["pooled_projection_dim"]),
            # pipeline_hunyuan_video.py: tensor([guidance_scale], dtype=transformer_dtype) * 1000.0
            guidance=torch.tensor([GUIDANCE], dtype=dtype, device=device) * 1000.0,
        )
        meta["valid_text_tokens"] = valid
        meta["guidance"] = GUIDANCE * 1000.0
    else:
        rope, src = cogvideox_rope(model, size, latent[1], device)
        kw = dict(
            hidden_states=randn(*latent),
            encoder_hidden_states=randn(1, text_len, cfg["text_embed_dim"]),
            timestep=torch.full((1,), int(TIMESTEP), device=device, dtype=torch.long),
            image_rotary_emb=rope,
        )
        meta["rope"] = src
        meta["rope_shape"] = list(rope[0].shape)
    return kw, meta


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_step(fwd, device):
    """One step: ms between CUDA events (wall clock on CPU), and whether the output is finite."""
    if device.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        s.record()
        out = fwd()
        e.record()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3
        ms = s.elapsed_time(e)
    else:
        t0 = time.perf_counter()
        out = fwd()
        ms = wall = (time.perf_counter() - t0) * 1e3
    finite = bool(torch.isfinite(out).all().item())
    shape = list(out.shape)
    del out
    return ms, wall, finite, shape


def profile_step(fwd, device):
    """One extra step under torch.profiler: which SDPA op ran (aten::_scaled_dot_product_*),
    its time, and the step's top kernels. Device time on CUDA, CPU time otherwise."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        out = fwd()
        sync(device)
    del out
    ev = prof.key_averages()

    def total(e):
        if device.type == "cuda":
            return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        return e.cpu_time_total

    def self_total(e):
        if device.type == "cuda":
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        return e.self_cpu_time_total

    sdpa = [dict(op=e.key, calls=e.count, ms=round(total(e) / 1e3, 3)) for e in ev
            if e.key.startswith("aten::_scaled_dot_product_")]  # the dispatched SDPA kernel op
    sdpa.sort(key=lambda r: -r["ms"])
    if device.type == "cuda":  # kernels: events with device time and no CPU-side op
        kern = [e for e in ev if self_total(e) > 0 and not e.key.startswith("aten::")]
    else:
        kern = [e for e in ev if e.key.startswith("aten::")]
    kern.sort(key=lambda e: -self_total(e))
    step_ms = sum(self_total(e) for e in ev) / 1e3 if device.type == "cuda" else None
    return dict(
        sdpa_ops=sdpa,
        top=[dict(name=e.key[:160], calls=e.count, ms=round(self_total(e) / 1e3, 3)) for e in kern[:12]],
        kernel_ms=round(step_ms, 3) if step_ms is not None else None,
    )


# ---------------------------------------------------------------------------------------
# One model
# ---------------------------------------------------------------------------------------

def bench_model(name, args, device, dtype, emit):
    """Times one model for each --sdpa choice; `emit(record)` is called after each."""
    import diffusers

    spec = SPECS[name]
    cls = getattr(diffusers, spec["cls"])
    cfg = spec["tiny_config"] if args.tiny else spec["config"]
    size = spec["tiny_size"] if args.tiny else spec["size"]
    latent = latent_shape(name, cfg, size)
    if not args.tiny and latent != spec["expect_latent"]:
        raise RuntimeError(f"{name}: latent {latent} != expected {spec['expect_latent']}")
    video_tokens, tokens = token_counts(name, cfg, latent, size["text"])
    label = spec["label"] + (" (tiny)" if args.tiny else "")
    log(f"== {name}: {label}, latents {latent}, {tokens} self-attention tokens, {dtype}")

    base = dict(model=name, label=label, diffusers_class=spec["cls"], latent=latent,
                text_tokens=size["text"], tokens=tokens, video_tokens=video_tokens,
                dtype=str(dtype).replace("torch.", ""), batch=1, cfg_batch=False,
                config=cfg, tiny=args.tiny, warmup=args.warmup, repeats=args.repeats)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    model, kept = build_model(cls, cfg, device, dtype, args.seed)
    sync(device)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    base.update(build_s=round(build_s, 2), params=params, params_kept_fp32=kept)
    if device.type == "cuda":
        base["weights_gib"] = round(gib(torch.cuda.memory_allocated() - mem0), 3)
    if not args.tiny and params != spec["expect_params"]:
        log(f"  WARNING: {params} parameters, expected {spec['expect_params']}")
        base["params_warning"] = f"expected {spec['expect_params']}"
    ref = reference_buffer_dtypes(cls, cfg)
    got = buffer_dtypes(model)
    leaked = {k: (ref.get(k), v) for k, v in got.items() if ref.get(k) != v}
    if leaked:
        log(f"  WARNING: buffer dtypes differ from an ordinary float32 build: {leaked}")
        base["buffer_dtype_mismatch"] = {k: list(v) for k, v in leaked.items()}
    log(f"  built in {build_s:.1f} s: {params:,} parameters ({kept:,} kept in float32)")

    kw, meta = make_inputs(name, model, cfg, size, latent, dtype, device, args.seed + 1,
                           args.hunyuan_valid_text)
    base.update(meta)

    runner = model
    if args.compile:
        runner = torch.compile(model, mode=args.compile_mode, dynamic=False)
    base["compile"] = bool(args.compile)
    if args.compile:
        base["compile_mode"] = args.compile_mode or "default"

    def fwd():
        with torch.no_grad():
            return runner(**kw, return_dict=False)[0]

    for sdpa in args.sdpa:
        rec = dict(base, sdpa=sdpa)
        try:
            if device.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            with sdpa_context(sdpa):
                warm = []
                for i in range(args.warmup):
                    ms, wall, finite, shape = timed_step(fwd, device)
                    warm.append(round(ms, 3))
                    log(f"  [{sdpa}] warm-up {i + 1}/{args.warmup}: {ms:.1f} ms")
                steps, walls, finite_all = [], [], True
                for i in range(args.repeats):
                    ms, wall, finite, shape = timed_step(fwd, device)
                    steps.append(ms)
                    walls.append(wall)
                    finite_all &= finite
                    log(f"  [{sdpa}] step {i + 1}/{args.repeats}: {ms:.1f} ms (wall {wall:.1f} ms)")
                prof = profile_step(fwd, device) if args.profile else None
            rec.update(
                warmup_ms=warm,
                step_ms=[round(x, 3) for x in steps],
                ms=round(statistics.median(steps), 3),
                mean_ms=round(statistics.fmean(steps), 3),
                min_ms=round(min(steps), 3),
                wall_ms=round(statistics.median(walls), 3),
                output_shape=shape,
                output_finite=finite_all,
            )
            if prof is not None:
                rec["profile"] = prof
                for o in prof["sdpa_ops"]:
                    log(f"  [{sdpa}] profiled {o['op']}: {o['calls']} calls, {o['ms']:.1f} ms")
            if device.type == "cuda":
                rec["peak_allocated_gib"] = round(gib(torch.cuda.max_memory_allocated()), 3)
                rec["peak_reserved_gib"] = round(gib(torch.cuda.max_memory_reserved()), 3)
            log(f"  [{sdpa}] median {rec['ms']:.1f} ms"
                + (f", peak {rec['peak_allocated_gib']:.2f} GiB allocated" if "peak_allocated_gib" in rec else ""))
            if not finite_all:
                log("  NOTE: the output has non-finite values (random weights)")
        except Exception as e:  # noqa: BLE001  (OOM etc.: record and go on)
            rec["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            rec["traceback"] = traceback.format_exc()[-2000:]
            log(f"  [{sdpa}] ERROR {rec['error']}")
        emit(rec)
    fwd = runner = model = kw = None  # free the weights and inputs (the closure holds them)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------

def markdown(info, records):
    s = ["# diffusers denoiser step (PyTorch peer)", ""]
    keys = ["date", "gpu", "driver", "torch", "cuda", "cudnn", "diffusers", "python", "commit"]
    s.append("- " + ", ".join(f"{k} {info.get(k)}" for k in keys if info.get(k) is not None))
    s.append(f"- command: `{info.get('command')}`")
    s.append("- random weights, batch 1, no CFG, torch.no_grad(); median of the timed steps "
             "(CUDA events); peak = torch.cuda.max_memory_allocated over the steps "
             "(weights + inputs + activations)")
    s.append("")
    s.append("| model | latents | text | tokens | dtype | SDPA | compile | ms (median) | min ms | "
             "peak GiB | weights GiB | finite |")
    s.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        lat = "x".join(map(str, r["latent"]))
        if "error" in r:
            s.append(f"| {r['label']} | {lat} | {r['text_tokens']} | {r['tokens']:,} | {r['dtype']} | "
                     f"{r.get('sdpa')} | {r.get('compile')} | error: {r['error'][:120]} | | | | |")
            continue
        s.append(
            f"| {r['label']} | {lat} | {r['text_tokens']} | {r['tokens']:,} | {r['dtype']} | {r['sdpa']} | "
            f"{r['compile']} | {r['ms']:.1f} | {r['min_ms']:.1f} | "
            f"{r.get('peak_allocated_gib', '-')} | {r.get('weights_gib', '-')} | {r['output_finite']} |")
    prof = [r for r in records if r.get("profile")]
    if prof:
        s += ["", "Profiled step (one extra step under torch.profiler; SDPA op = the aten kernel "
              "PyTorch dispatched, ms = its device time in the step):", "",
              "| model | SDPA | SDPA op | calls | SDPA ms | all kernels ms |", "|---|---|---|---|---|---|"]
        for r in prof:
            p = r["profile"]
            for o in p["sdpa_ops"] or [dict(op="-", calls=0, ms=0.0)]:
                s.append(f"| {r['label']} | {r['sdpa']} | {o['op']} | {o['calls']} | {o['ms']:.1f} | "
                         f"{p['kernel_ms'] if p['kernel_ms'] is not None else '-'} |")
    return "\n".join(s) + "\n"


def save(out_dir, info, records):
    os.makedirs(out_dir, exist_ok=True)
    write_atomic(os.path.join(out_dir, "peers_step.json"),
                 json.dumps({"info": info, "records": records}, indent=1) + "\n")
    write_atomic(os.path.join(out_dir, "peers_step.md"), markdown(info, records))


def meta_check(models):
    """Real-size configs without running them: parameter counts against models.md, latent
    shapes against the pipelines, token counts, the CogVideoX RoPE table (computed on CPU)."""
    import diffusers

    ok = True
    for name in models:
        spec = SPECS[name]
        cls = getattr(diffusers, spec["cls"])
        with torch.device("meta"):
            model = cls(**spec["config"])
        params = sum(p.numel() for p in model.parameters())
        latent = latent_shape(name, spec["config"], spec["size"])
        video, tokens = token_counts(name, spec["config"], latent, spec["size"]["text"])
        line = (f"{name:9} {spec['cls']:31} params {params:,} (expected {spec['expect_params']:,}) "
                f"latents {latent} tokens {tokens:,} (video {video:,})")
        good = params == spec["expect_params"] and latent == spec["expect_latent"]
        if name == "cogvideox":
            rope, src = cogvideox_rope(model, spec["size"], latent[1], torch.device("cpu"))
            line += f" rope {list(rope[0].shape)} from {src}"
            good &= list(rope[0].shape) == [video, spec["config"]["attention_head_dim"]]
        print(("ok   " if good else "FAIL ") + line)
        ok &= good
        del model
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="wan,cogvideox,hunyuan",
                    help="comma list of wan, hunyuan, cogvideox (in run order)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/tmp/peers_step")
    ap.add_argument("--tiny", action="store_true", help="tiny configs and sizes (smoke run)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                    help="auto: bf16 on CUDA, fp32 without CUDA")
    ap.add_argument("--sdpa", default="default",
                    help=f"comma list of {', '.join(SDPA_CHOICES)}: each is timed on the same model "
                         "(default = PyTorch's own kernel choice; others = that kernel first)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune)")
    ap.add_argument("--profile", action="store_true",
                    help="one extra step under torch.profiler: SDPA op used, its time, top kernels")
    ap.add_argument("--hunyuan-valid-text", type=int, default=128,
                    help="valid (unpadded) text tokens of the 256 in the HunyuanVideo mask")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--meta-check", action="store_true",
                    help="build the real-size configs on the meta device (no memory), check "
                         "parameter counts, latents, tokens and the CogVideoX RoPE, then exit")
    args = ap.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in SPECS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {list(SPECS)}")
    args.sdpa = [x.strip() for x in args.sdpa.split(",") if x.strip()]
    bad = [x for x in args.sdpa if x not in SDPA_CHOICES]
    if bad:
        ap.error(f"unknown --sdpa {bad}; choose from {SDPA_CHOICES}")
    if args.warmup < 0 or args.repeats < 1:
        ap.error("--warmup >= 0 and --repeats >= 1")
    if args.compile and args.warmup < 2:
        log("--compile: warm-up raised to 2 steps (compilation happens in the first)")
        args.warmup = 2
    if args.meta_check:
        return meta_check(models)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]

    info = versions()
    info["device"] = str(device)
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        info["diffusers_attention_backend"] = str(_AttentionBackendRegistry._active_backend.value)
    except Exception:  # noqa: BLE001
        pass
    log("env: " + ", ".join(f"{k}={info.get(k)}" for k in
                            ("gpu", "torch", "cuda", "cudnn", "diffusers", "python", "device")))
    records = []

    def emit(rec):
        records.append(rec)
        save(args.out, info, records)

    for name in models:
        try:
            bench_model(name, args, device, dtype, emit)
        except Exception as e:  # noqa: BLE001
            spec = SPECS[name]
            emit(dict(model=name, label=spec["label"], diffusers_class=spec["cls"],
                      latent=[], text_tokens=0, tokens=0, dtype=str(dtype).replace("torch.", ""), sdpa=None,
                      compile=args.compile, error=f"{type(e).__name__}: {str(e)[:400]}",
                      traceback=traceback.format_exc()[-2000:]))
            log(f"  ERROR {name}: {records[-1]['error']}")
        gc.collect()  # outside the except block: the exception's frames hold the model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    save(args.out, info, records)
    print(markdown(info, records))
    log(f"wrote {os.path.join(args.out, 'peers_step.json')}")
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
