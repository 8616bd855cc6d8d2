#!/usr/bin/env python3
"""Golden fixtures for the Wan2.1 denoiser and the flow samplers (diffusers, CPU, f32).

Writes crates/vdit-wan/tests/fixtures/<case>/ (see tools/fixtures_common.py) for several
tiny random WanTransformer3DModel configs, and crates/vdit-models/tests/fixtures/
samplers.safetensors with FlowMatchEulerDiscreteScheduler and UniPCMultistepScheduler
(Wan's flow configuration) schedules and steps on fixed model outputs.

Usage: python tools/fixtures_wan.py [--out DIR] [--samplers-out FILE]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fixtures_common import (
    default_out,
    dir_size,
    fixture_root,
    fresh_dir,
    perturb_parameters,
    randn,
    require_libs,
    save_model,
    save_tensors,
    setup,
    write_manifest,
)

# diffusers tests/models/transformers/test_models_transformer_wan.py init dict.
UNIT = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)

CASES = [
    # name, config overrides, batch, (frames, height, width) latent, text tokens,
    # timesteps, save options
    dict(name="unit_b1_f2_16x16", cfg={}, batch=1, latent=(2, 16, 16), text=12,
         timestep="int", save={}),
    dict(name="b2_f3_12x20_nonsquare", cfg=dict(num_layers=2), batch=2, latent=(3, 12, 20),
         text=7, timestep=[937.5, 211.25], save={}),
    dict(name="b1_f5_8x12_h3d16_sharded",
         cfg=dict(num_attention_heads=3, attention_head_dim=16, ffn_dim=40, num_layers=3,
                  text_dim=20),
         batch=1, latent=(5, 8, 12), text=9, timestep=[500.0],
         save=dict(max_shard_size="40KB")),
    dict(name="b2_f1_10x6_bf16_weights", cfg=dict(out_channels=6, in_channels=4),
         batch=2, latent=(1, 10, 6), text=5, timestep=[999.0, 3.0],
         save=dict(dtype="bf16")),
]


def build_case(case: dict, root: Path, index: int) -> dict:
    import torch
    from diffusers import WanTransformer3DModel

    cfg = dict(UNIT)
    cfg.update(case["cfg"])
    torch.manual_seed(index)
    model = WanTransformer3DModel(**cfg).eval()
    perturb_parameters(model, seed=100 + index)
    bf16 = case["save"].get("dtype") == "bf16"
    if bf16:
        # The checkpoint is stored in bf16; the reference runs in f32 on the same
        # (bf16-rounded) values, as our loader converts bf16 -> f32.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))

    b = case["batch"]
    f, h, w = case["latent"]
    hidden = randn((b, cfg["in_channels"], f, h, w), seed=1000 + index)
    text = randn((b, case["text"], cfg["text_dim"]), seed=2000 + index)
    if case["timestep"] == "int":
        g = torch.Generator().manual_seed(3000 + index)
        timestep = torch.randint(0, 1000, (b,), generator=g)  # int64, like the unit test
    else:
        timestep = torch.tensor(case["timestep"], dtype=torch.float32)

    with torch.no_grad():
        out = model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text,
                    return_dict=False)[0]

    d = fresh_dir(root / case["name"])
    save_model(model, d, max_shard_size=case["save"].get("max_shard_size"),
               dtype=torch.bfloat16 if bf16 else None)
    save_tensors(d / "inputs.safetensors",
                 dict(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text))
    save_tensors(d / "outputs.safetensors", dict(sample=out))
    return dict(name=case["name"], config=cfg, batch=b, latent=list(case["latent"]),
                text_tokens=case["text"], output_shape=list(out.shape), bytes=dir_size(d))


def sampler_fixtures(path: Path):
    """Schedules and a few steps on fixed model outputs for the flow samplers."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    tensors = {}
    shape = (1, 4, 2, 3, 5)
    for shift, steps in [(1.0, 6), (3.0, 10), (7.0, 4)]:
        s = FlowMatchEulerDiscreteScheduler(shift=shift)
        s.set_timesteps(steps)
        key = f"flow_euler.shift{shift:g}.steps{steps}"
        tensors[f"{key}.timesteps"] = s.timesteps.clone()
        tensors[f"{key}.sigmas"] = s.sigmas.clone()
        x = randn(shape, seed=int(shift * 10) + steps)
        tensors[f"{key}.x0"] = x.clone()
        for i, t in enumerate(s.timesteps):
            v = randn(shape, seed=10_000 + 100 * steps + i)
            x = s.step(v, t, x, return_dict=False)[0]
            tensors[f"{key}.model_output.{i}"] = v
            tensors[f"{key}.sample.{i}"] = x.clone()
    for shift, steps in [(3.0, 8), (5.0, 5), (3.0, 2)]:
        s = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                    num_train_timesteps=1000, flow_shift=shift)
        s.set_timesteps(steps)
        key = f"unipc.shift{shift:g}.steps{steps}"
        tensors[f"{key}.timesteps"] = s.timesteps.clone()
        tensors[f"{key}.sigmas"] = s.sigmas.clone()
        x = randn(shape, seed=int(shift * 10) + steps + 7)
        tensors[f"{key}.x0"] = x.clone()
        for i, t in enumerate(s.timesteps):
            # A model-like output: velocity pointing from the sample to a fixed target,
            # plus noise, so the multistep history matters.
            v = 0.5 * x + randn(shape, seed=20_000 + 100 * steps + i)
            x = s.step(v, t, x, return_dict=False)[0]
            tensors[f"{key}.model_output.{i}"] = v
            tensors[f"{key}.sample.{i}"] = x.clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, tensors)


def pipeline_fixture(root: Path, model_case: str):
    """diffusers WanPipeline (precomputed embeddings, given initial latents, output_type
    "latent") on the model of `model_case`: UniPC + CFG, and flow Euler without CFG."""
    import torch
    from diffusers import (FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler,
                           WanPipeline, WanTransformer3DModel)

    model = WanTransformer3DModel.from_pretrained(str(root / model_case)).eval()
    text = randn((1, 12, 16), seed=4000)
    neg = randn((1, 12, 16), seed=4001)
    lat = randn((1, 4, 2, 16, 16), seed=4002)
    tensors = dict(prompt_embeds=text, negative_prompt_embeds=neg, latents=lat)
    runs = {
        "unipc_shift3_g5_steps3": (UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
            flow_shift=3.0), 3, 5.0),
        "euler_shift7_g1_steps2": (FlowMatchEulerDiscreteScheduler(shift=7.0), 2, 1.0),
    }
    for name, (sched, steps, g) in runs.items():
        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=model,
                           scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            out = pipe(prompt_embeds=text, negative_prompt_embeds=neg, latents=lat.clone(),
                       height=128, width=128, num_frames=5, num_inference_steps=steps,
                       guidance_scale=g, output_type="latent", return_dict=False)[0]
        tensors[name] = out
    save_tensors(root / "pipeline.safetensors", tensors,
                 metadata=dict(model=model_case, height="128", width="128", num_frames="5"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out("wan"))
    ap.add_argument("--samplers-out",
                    default=str(fixture_root("models") / "samplers.safetensors"))
    args = ap.parse_args()
    require_libs()
    setup()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    cases = [build_case(c, root, i) for i, c in enumerate(CASES)]
    pipeline_fixture(root, CASES[0]["name"])
    write_manifest(root, cases, extra=dict(pipeline="pipeline.safetensors: WanPipeline on "
                                                    + CASES[0]["name"]))
    sampler_fixtures(Path(args.samplers_out))
    total = dir_size(root)
    for c in cases:
        print(f"  {c['name']}: output {c['output_shape']}, {c['bytes']} bytes")
    print(f"wan fixtures: {total} bytes in {root}; samplers: {args.samplers_out}")


if __name__ == "__main__":
    main()
