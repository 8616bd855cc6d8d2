#!/usr/bin/env python3
"""Golden fixtures for the CogVideoX1.5 denoiser and its samplers (diffusers, CPU, f32).

Writes crates/vdit-cogvideox/tests/fixtures/ (see tools/fixtures_common.py):
  <case>/                     tiny random CogVideoXTransformer3DModel (1.5 style: patch_size_t=2,
                              RoPE on, head_dim 16) with inputs/outputs of one forward call. The
                              RoPE tables are computed exactly as pipeline_cogvideox.py does
                              (`_prepare_rotary_positional_embeddings`, grid "slice").
  pipeline_<name>/            the same kind of model run through the real CogVideoXPipeline
                              (prompt embeds given, no VAE, output_type="latent") for a few
                              steps: CFG (static or dynamic), DDIM or DPM scheduler, odd latent
                              frame counts padded by the pipeline. inputs.safetensors holds the
                              initial (padded) latents, prompt / negative embeds and the
                              scheduler noise each DPM step used; outputs.safetensors the
                              final latents ("sample", padding frames kept) and per-step
                              latents ("latents.<i>").
  samplers.safetensors        CogVideoXDDIMScheduler / CogVideoXDPMScheduler (v-prediction,
                              zero terminal SNR, trailing spacing) schedules, alphas_cumprod and
                              steps on fixed model outputs with the noise the DPM steps drew.

Usage: python tools/fixtures_cogvideox.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fixtures_common import (
    default_out,
    dir_size,
    fresh_dir,
    perturb_parameters,
    randn,
    require_libs,
    save_model,
    save_tensors,
    setup,
    write_manifest,
)

# diffusers CogVideoX15TransformerTesterConfig, with head_dim 16 so that RoPE is real
# (t/h/w split 4/6/6) and a wider time embedding.
UNIT = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=4,
    time_embed_dim=8,
    text_embed_dim=8,
    num_layers=2,
    sample_width=16,
    sample_height=16,
    sample_frames=9,
    patch_size=2,
    patch_size_t=2,
    temporal_compression_ratio=4,
    max_text_seq_length=8,
    use_rotary_positional_embeddings=True,
    patch_bias=False,
)

CASES = [
    # latent (frames, height, width); frames are latent frames (even: the transformer
    # itself needs a multiple of patch_size_t, the pipeline pads odd counts).
    dict(name="b2_f4_8x8_t2even", cfg={}, batch=2, latent=(4, 8, 8), text=8, timestep="int"),
    dict(name="b2_f6_6x10_t3odd_nonsquare",
         cfg=dict(num_attention_heads=3, text_embed_dim=12, num_layers=2, out_channels=6),
         batch=2, latent=(6, 6, 10), text=5, timestep=[937.5, 3.0]),
    dict(name="b2_f2_4x12_bf16_weights", cfg=dict(num_layers=1, time_embed_dim=4),
         batch=2, latent=(2, 4, 12), text=3, timestep=[999.0, 0.0], dtype="bf16"),
    # The real head dim (64: RoPE split 16/24/24) with one head and one layer.
    dict(name="b1_f4_6x4_d64_rope16_24_24",
         cfg=dict(num_attention_heads=1, attention_head_dim=64, num_layers=1, text_embed_dim=16,
                  time_embed_dim=16),
         batch=1, latent=(4, 6, 4), text=4, timestep=[421.0]),
]

PIPELINES = [
    # num_frames are video frames: (9-1)//4+1 = 3 latent frames (odd -> padded to 4);
    # (5-1)//4+1 = 2 latent frames (even, no padding).
    dict(name="pipeline_dpm_dyncfg_odd3", scheduler="dpm", num_frames=9, height=48, width=64,
         steps=4, guidance=6.0, dynamic=True, text=6),
    dict(name="pipeline_ddim_cfg_even2", scheduler="ddim", num_frames=5, height=32, width=48,
         steps=3, guidance=5.0, dynamic=False, text=6),
]

SCHED = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    clip_sample=False,
    timestep_spacing="trailing",
    snr_shift_scale=1.0,
    steps_offset=0,
)


def rope_like_pipeline(cfg, latent_frames, grid_h, grid_w):
    """pipeline_cogvideox.py `_prepare_rotary_positional_embeddings`, 1.5 branch, from the
    post-patch grid (the pipeline derives it from pixel height/width)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    p, p_t = cfg["patch_size"], cfg["patch_size_t"]
    return get_3d_rotary_pos_embed(
        embed_dim=cfg["attention_head_dim"],
        crops_coords=None,
        grid_size=(grid_h, grid_w),
        temporal_size=(latent_frames + p_t - 1) // p_t,
        grid_type="slice",
        max_size=(cfg["sample_height"] // p, cfg["sample_width"] // p),
    )


def make_model(cfg, index, bf16=False):
    import torch
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(index)
    model = CogVideoXTransformer3DModel(**cfg).eval()
    perturb_parameters(model, seed=100 + index)
    if bf16:
        # Stored in bf16; the reference runs in f32 on the same rounded values.
        with torch.no_grad():
            for prm in model.parameters():
                prm.copy_(prm.to(torch.bfloat16).to(torch.float32))
    return model


def build_case(case: dict, root: Path, index: int) -> dict:
    import torch

    cfg = dict(UNIT)
    cfg.update(case["cfg"])
    bf16 = case.get("dtype") == "bf16"
    model = make_model(cfg, index, bf16)
    b = case["batch"]
    f, h, w = case["latent"]
    hidden = randn((b, f, cfg["in_channels"], h, w), seed=1000 + index)
    text = randn((b, case["text"], cfg["text_embed_dim"]), seed=2000 + index)
    if case["timestep"] == "int":
        g = torch.Generator().manual_seed(3000 + index)
        timestep = torch.randint(0, 1000, (b,), generator=g)
    else:
        timestep = torch.tensor(case["timestep"], dtype=torch.float32)
    p = cfg["patch_size"]
    rope = rope_like_pipeline(cfg, f, h // p, w // p)
    with torch.no_grad():
        out = model(hidden_states=hidden, encoder_hidden_states=text, timestep=timestep,
                    image_rotary_emb=rope, return_dict=False)[0]
    d = fresh_dir(root / case["name"])
    save_model(model, d, dtype=torch.bfloat16 if bf16 else None)
    save_tensors(d / "inputs.safetensors",
                 dict(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text))
    save_tensors(d / "outputs.safetensors", dict(sample=out))
    return dict(name=case["name"], config=cfg, batch=b, latent=list(case["latent"]),
                text_tokens=case["text"], output_shape=list(out.shape), bytes=dir_size(d))


class NoiseRecorder:
    """Wraps scheduling_dpm_cogvideox.randn_tensor and records every draw."""

    def __init__(self, module):
        self.module = module
        self.orig = module.randn_tensor
        self.draws = []
        module.randn_tensor = self

    def __call__(self, *a, **k):
        t = self.orig(*a, **k)
        self.draws.append(t.clone())
        return t

    def restore(self):
        self.module.randn_tensor = self.orig


def build_pipeline(case: dict, root: Path, index: int) -> dict:
    import torch
    import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_mod
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXPipeline

    cfg = dict(UNIT)
    model = make_model(cfg, 50 + index)
    sched_cls = CogVideoXDPMScheduler if case["scheduler"] == "dpm" else CogVideoXDDIMScheduler
    scheduler = sched_cls(**SCHED)
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=model,
                             scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    latent_frames = (case["num_frames"] - 1) // 4 + 1
    padded = latent_frames + (latent_frames % 2)
    shape = (1, padded, cfg["in_channels"], case["height"] // 8, case["width"] // 8)
    latents = randn(shape, seed=4000 + index)
    pos = randn((1, case["text"], cfg["text_embed_dim"]), seed=5000 + index)
    neg = randn((1, case["text"], cfg["text_embed_dim"]), seed=6000 + index)
    per_step = []

    def on_step(_pipe, i, t, kw):
        per_step.append(kw["latents"].clone())
        return {}

    rec = NoiseRecorder(dpm_mod)
    try:
        with torch.no_grad():
            out = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, latents=latents.clone(),
                       num_frames=case["num_frames"], height=case["height"], width=case["width"],
                       num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                       use_dynamic_cfg=case["dynamic"], output_type="latent",
                       generator=torch.Generator().manual_seed(7000 + index),
                       callback_on_step_end=on_step, return_dict=False)[0]
    finally:
        rec.restore()
    inputs = dict(latents=latents, prompt_embeds=pos, negative_prompt_embeds=neg,
                  timesteps=pipe.scheduler.timesteps.clone())
    if case["scheduler"] == "dpm":
        # Step 0 (and the last step) uses its first draw; the others draw twice and use
        # the second.
        draws = rec.draws
        used, k = [], 0
        for i in range(case["steps"]):
            prev_t = int(pipe.scheduler.timesteps[i]) - 1000 // case["steps"]
            if i == 0 or prev_t < 0:
                used.append(draws[k]); k += 1
            else:
                used.append(draws[k + 1]); k += 2
        assert k == len(draws), (k, len(draws))
        for i, n in enumerate(used):
            inputs[f"noise.{i}"] = n
    outputs = dict(sample=out)
    for i, x in enumerate(per_step):
        outputs[f"latents.{i}"] = x
    d = fresh_dir(root / case["name"])
    save_model(model, d)
    meta = {k: str(v) for k, v in case.items()}
    save_tensors(d / "inputs.safetensors", inputs, metadata=meta)
    save_tensors(d / "outputs.safetensors", outputs)
    (d / "pipeline.json").write_text(json.dumps(dict(case, scheduler_config=SCHED,
                                                     latent_frames=latent_frames,
                                                     padded_latent_frames=padded), indent=1) + "\n")
    return dict(name=case["name"], config=cfg, pipeline=case, scheduler=SCHED,
                output_shape=list(out.shape), bytes=dir_size(d))


def sampler_fixtures(path: Path):
    import torch
    import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_mod
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    tensors = {}
    shape = (1, 2, 4, 3, 5)
    for snr in (1.0, 3.0):
        s = CogVideoXDDIMScheduler(**dict(SCHED, snr_shift_scale=snr))
        tensors[f"alphas_cumprod.snr{snr:g}"] = s.alphas_cumprod.clone()
    for kind in ("ddim", "dpm"):
        cls = CogVideoXDPMScheduler if kind == "dpm" else CogVideoXDDIMScheduler
        for snr, steps in [(1.0, 50), (1.0, 7), (3.0, 3), (1.0, 1)]:
            s = cls(**dict(SCHED, snr_shift_scale=snr))
            s.set_timesteps(steps)
            key = f"{kind}.snr{snr:g}.steps{steps}"
            tensors[f"{key}.timesteps"] = s.timesteps.clone()
            if steps > 10:
                continue
            x = randn(shape, seed=int(snr * 10) + steps)
            tensors[f"{key}.x0"] = x.clone()
            old = None
            g = torch.Generator().manual_seed(steps)
            for i, t in enumerate(s.timesteps):
                v = 0.3 * x + randn(shape, seed=30_000 + 100 * steps + i)
                tensors[f"{key}.model_output.{i}"] = v
                if kind == "ddim":
                    x = s.step(v, t, x, return_dict=False)[0]
                else:
                    rec = NoiseRecorder(dpm_mod)
                    try:
                        x, old = s.step(v, old, t, s.timesteps[i - 1] if i > 0 else None, x,
                                        generator=g, return_dict=False)
                    finally:
                        rec.restore()
                    tensors[f"{key}.noise.{i}"] = rec.draws[-1]
                tensors[f"{key}.sample.{i}"] = x.clone()
    save_tensors(path, tensors)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out("cogvideox"))
    args = ap.parse_args()
    require_libs()
    setup()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    cases = [build_case(c, root, i) for i, c in enumerate(CASES)]
    cases += [build_pipeline(c, root, i) for i, c in enumerate(PIPELINES)]
    sampler_fixtures(root / "samplers.safetensors")
    write_manifest(root, cases)
    for c in cases:
        print(f"  {c['name']}: output {c['output_shape']}, {c['bytes']} bytes")
    print(f"cogvideox fixtures: {dir_size(root)} bytes in {root}")


if __name__ == "__main__":
    main()
