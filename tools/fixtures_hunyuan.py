#!/usr/bin/env python3
"""Golden fixtures for the HunyuanVideo denoiser (diffusers, CPU, f32).

Writes crates/vdit-hunyuan/tests/fixtures/<case>/ (see tools/fixtures_common.py) for
several tiny random HunyuanVideoTransformer3DModel (text-to-video) configs: the diffusers
unit-test config with an all-ones text mask, and cases with right-padded text masks
(batch 2, different valid lengths), per-batch timesteps and guidance, patch 2, no
guidance embedding, sharded and bf16 checkpoints.

Besides `outputs.safetensors` (`sample`), each case stores a few intermediate tensors
in `intermediates.safetensors` (conditioning `temb`, refined text `context`) to localise a
mismatch.

`pipeline_b2_3steps.safetensors` runs diffusers' HunyuanVideoPipeline itself (no text
encoders or VAE: precomputed embeddings in, `output_type="latent"` out) for 3 steps with
FlowMatchEulerDiscreteScheduler(shift=7), embedded guidance and true CFG with a negative
prompt, on the `b2_f3_8x12_padded_mask` transformer.

Usage: python tools/fixtures_hunyuan.py [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fixtures_common import (
    default_out,
    dir_size,
    fresh_dir,
    randn,
    require_libs,
    save_model,
    save_tensors,
    setup,
    write_manifest,
)

# diffusers tests/models/transformers/test_models_transformer_hunyuan_video.py init dict.
UNIT = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=10,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    patch_size=1,
    patch_size_t=1,
    guidance_embeds=True,
    text_embed_dim=16,
    pooled_projection_dim=8,
    rope_axes_dim=(2, 4, 4),
    image_condition_type=None,
)

CASES = [
    # The unit-test config and inputs shape (all-ones mask, integer timestep/guidance).
    dict(name="unit_b1_f1_16x16", cfg={}, batch=1, latent=(1, 16, 16), text=12,
         valid=[12], timestep="int", guidance="int", save={}),
    # Batch 2, right-padded text (7 and 3 valid of 10), patch 2, 2+2 blocks, 2 refiners.
    dict(name="b2_f3_8x12_padded_mask",
         cfg=dict(patch_size=2, num_attention_heads=2, attention_head_dim=12,
                  rope_axes_dim=(4, 4, 4), num_layers=2, num_single_layers=2,
                  num_refiner_layers=2),
         batch=2, latent=(3, 8, 12), text=10, valid=[7, 3],
         timestep=[937.5, 211.25], guidance=[6000.0, 3500.0], save={}),
    # No guidance embedding, 3 heads x 8, mlp_ratio 2.5, padded text, sharded weights.
    dict(name="b1_f2_6x10_noguidance_sharded",
         cfg=dict(patch_size=2, num_attention_heads=3, attention_head_dim=8,
                  rope_axes_dim=(2, 2, 4), guidance_embeds=False, mlp_ratio=2.5,
                  num_layers=2, num_single_layers=1, text_embed_dim=12,
                  pooled_projection_dim=6, rope_theta=64.0),
         batch=1, latent=(2, 6, 10), text=6, valid=[4], timestep=[500.0], guidance=None,
         save=dict(max_shard_size="30KB")),
    # bf16 checkpoint loaded into f32, batch 2, out_channels != in_channels, patch_t 2.
    dict(name="b2_f2_4x6_bf16_weights",
         cfg=dict(out_channels=6, patch_size=2, patch_size_t=2),
         batch=2, latent=(2, 4, 6), text=5, valid=[5, 2],
         timestep=[999.0, 3.0], guidance=[1000.0, 9000.0], save=dict(dtype="bf16")),
]


def perturb(model, seed: int, scale: float = 0.2):
    """Makes every parameter informative: LayerNorm/RMSNorm scales become
    1 + scale*N(0,1) and their biases scale*N(0,1); every other parameter gets
    scale/4*N(0,1) added (AdaLN linears included, so the modulation is not trivial)."""
    import torch
    from diffusers.models.normalization import RMSNorm

    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    for mname, m in model.named_modules():
        if isinstance(m, (torch.nn.LayerNorm, RMSNorm)):
            for pname, _ in m.named_parameters(recurse=False):
                norm_params.add(f"{mname}.{pname}")
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name in norm_params:
                p.copy_(1.0 + scale * noise if name.endswith("weight") else scale * noise)
            else:
                p.add_(scale / 4 * noise)


def build_case(case: dict, root: Path, index: int) -> dict:
    import torch
    from diffusers import HunyuanVideoTransformer3DModel

    cfg = dict(UNIT)
    cfg.update(case["cfg"])
    torch.manual_seed(index)
    model = HunyuanVideoTransformer3DModel(**cfg).eval()
    perturb(model, seed=100 + index)
    bf16 = case["save"].get("dtype") == "bf16"
    if bf16:
        # Stored in bf16; the reference runs in f32 on the same bf16-rounded values.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))

    b = case["batch"]
    f, h, w = case["latent"]
    n_text = case["text"]
    hidden = randn((b, cfg["in_channels"], f, h, w), seed=1000 + index)
    text = randn((b, n_text, cfg["text_embed_dim"]), seed=2000 + index)
    pooled = randn((b, cfg["pooled_projection_dim"]), seed=4000 + index)
    mask = torch.zeros(b, n_text, dtype=torch.int64)
    for i, v in enumerate(case["valid"]):
        mask[i, :v] = 1
    if case["timestep"] == "int":
        g = torch.Generator().manual_seed(3000 + index)
        timestep = torch.randint(0, 1000, (b,), generator=g).to(torch.float32)
    else:
        timestep = torch.tensor(case["timestep"], dtype=torch.float32)
    guidance = None
    if case["guidance"] == "int":
        g = torch.Generator().manual_seed(5000 + index)
        guidance = torch.randint(0, 1000, (b,), generator=g).to(torch.float32)
    elif case["guidance"] is not None:
        guidance = torch.tensor(case["guidance"], dtype=torch.float32)

    kwargs = dict(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text,
                  encoder_attention_mask=mask, pooled_projections=pooled)
    if guidance is not None:
        kwargs["guidance"] = guidance
    with torch.no_grad():
        out = model(**kwargs, return_dict=False)[0]
        temb, _ = model.time_text_embed(timestep, pooled, guidance)
        context = model.context_embedder(text, timestep, mask)

    d = fresh_dir(root / case["name"])
    save_model(model, d, max_shard_size=case["save"].get("max_shard_size"),
               dtype=torch.bfloat16 if bf16 else None)
    save_tensors(d / "inputs.safetensors", kwargs)
    save_tensors(d / "outputs.safetensors", dict(sample=out))
    save_tensors(d / "intermediates.safetensors", dict(temb=temb, context=context))
    return dict(name=case["name"], config=cfg, batch=b, latent=list(case["latent"]),
                text_tokens=n_text, valid_text=case["valid"],
                output_shape=list(out.shape), bytes=dir_size(d))


PIPELINE = dict(model="b2_f3_8x12_padded_mask", steps=3, shift=7.0, guidance_scale=6.0,
                true_cfg_scale=2.5, valid=[6, 10], negative_valid=[2, 4])


def pipeline_fixture(root: Path) -> dict:
    import torch
    from diffusers import (FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)

    p = PIPELINE
    model = HunyuanVideoTransformer3DModel.from_pretrained(str(root / p["model"])).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=p["shift"])
    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=model, vae=None,
                                scheduler=scheduler, text_encoder_2=None, tokenizer_2=None)
    cfg = model.config
    b, f, h, w, n_text = 2, 3, 8, 12, 10
    latents = randn((b, cfg.in_channels, f, h, w), seed=7000)

    def prompt(seed, valid):
        mask = torch.zeros(b, n_text, dtype=torch.int64)
        for i, v in enumerate(valid):
            mask[i, :v] = 1
        return (randn((b, n_text, cfg.text_embed_dim), seed=seed), mask,
                randn((b, cfg.pooled_projection_dim), seed=seed + 1))

    pe, pm, pp = prompt(7100, p["valid"])
    ne, nm, npool = prompt(7200, p["negative_valid"])
    with torch.no_grad():
        out = pipe(prompt_embeds=pe, prompt_attention_mask=pm, pooled_prompt_embeds=pp,
                   negative_prompt_embeds=ne, negative_prompt_attention_mask=nm,
                   negative_pooled_prompt_embeds=npool, height=8 * h, width=8 * w,
                   num_frames=(f - 1) * 4 + 1, num_inference_steps=p["steps"],
                   guidance_scale=p["guidance_scale"], true_cfg_scale=p["true_cfg_scale"],
                   latents=latents.clone(), output_type="latent", return_dict=False)[0]
    path = root / "pipeline_b2_3steps.safetensors"
    save_tensors(path, dict(latents=latents, prompt_embeds=pe, prompt_attention_mask=pm,
                            pooled_prompt_embeds=pp, negative_prompt_embeds=ne,
                            negative_prompt_attention_mask=nm,
                            negative_pooled_prompt_embeds=npool, timesteps=scheduler.timesteps,
                            sigmas=scheduler.sigmas, output=out),
                 metadata={k: str(v) for k, v in p.items()})
    return dict(name=path.name, **p, bytes=path.stat().st_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out("hunyuan"))
    args = ap.parse_args()
    require_libs()
    setup()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    cases = [build_case(c, root, i) for i, c in enumerate(CASES)]
    pipeline = pipeline_fixture(root)
    write_manifest(root, cases, extra=dict(pipeline=pipeline))
    total = dir_size(root)
    for c in cases:
        print(f"  {c['name']}: output {c['output_shape']}, {c['bytes']} bytes")
    print(f"hunyuan fixtures: {total} bytes in {root}")


if __name__ == "__main__":
    main()
