#!/usr/bin/env python3
"""Golden fixtures for Wan2.1 text to video: UMT5 encoder, Wan VAE decoder, tokenizer and
the whole tiny WanPipeline (transformers / diffusers, CPU, f32).

Writes crates/vdit-wan/tests/fixtures/t2v/ (see tools/README.md):
  umt5_*/   transformers UMT5EncoderModel folders (config.json + model*.safetensors),
            inputs.safetensors (input_ids, attention_mask: i64) and outputs.safetensors
            (last_hidden_state)
  vae_*/    diffusers AutoencoderKLWan folders, inputs.safetensors (latents
            [B, z, F, H, W]) and outputs.safetensors (sample = vae.decode(latents).sample)
  pipeline_tiny/  a complete tiny Wan pipeline (model_index.json, tokenizer/,
            text_encoder/, transformer/, vae/, scheduler/) saved with save_pretrained
  pipeline_tiny.safetensors  WanPipeline on pipeline_tiny with given latents:
            prompt_embeds, negative_prompt_embeds, latents (initial), frames
            ([B, F, C, H, W] in [0, 1], output_type="pt"), metadata with the call
  tokenizer_cases.json  prompts, their cleaned text (diffusers prompt_clean) and ids
  manifest.json

Usage: python tools/fixtures_wan_t2v.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fixtures_common import (
    dir_size,
    fixture_root,
    fresh_dir,
    randn,
    require_libs,
    save_model,
    save_tensors,
    setup,
)

UMT5_CASES = [
    # name, config overrides, batch, tokens, valid tokens per row, save options
    dict(name="umt5_b2_l11_padded", cfg={}, batch=2, tokens=11, valid=[11, 6], save={}),
    dict(name="umt5_b1_l40_l3_sharded",
         cfg=dict(num_layers=3, num_heads=2, d_kv=12, d_ff=40, d_model=24,
                  relative_attention_num_buckets=10, relative_attention_max_distance=20),
         batch=1, tokens=40, valid=[33], save=dict(max_shard_size="20KB")),
]

UMT5_BASE = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, relative_attention_max_distance=12,
                 feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)

VAE_BASE = dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                temperal_downsample=[False, True, True], attn_scales=[],
                latents_mean=[0.1, -0.2, 0.3, -0.05], latents_std=[1.5, 0.8, 1.2, 2.0])

VAE_CASES = [
    # name, config overrides, batch, latent (F, H, W)
    dict(name="vae_b1_f3_4x6", cfg={}, batch=1, latent=(3, 4, 6)),
    dict(name="vae_b2_f2_3x5_mult112", cfg=dict(base_dim=4, z_dim=3, dim_mult=[1, 1, 2],
                                                 temperal_downsample=[True, False],
                                                 latents_mean=[0.0] * 3, latents_std=[1.0] * 3),
         batch=2, latent=(2, 3, 5)),
]

PROMPTS = [
    "a cat walks on the grass",
    "  A dog &amp; a cat\n\tplay   in the snow ",
    "sunset over the sea, golden light",
    "",
]
NEGATIVE = "blurry, low quality"


def perturb(model, seed: int, scale: float = 0.2):
    """Like fixtures_common.perturb_parameters, also for T5 `layer_norm` weights and Wan
    VAE `gamma` scales (norm scales 1 + scale*N, other parameters + scale/4*N)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("gamma") or "layer_norm" in name or ".norm" in name:
                p.copy_(1.0 + scale * noise)
            else:
                p.add_(scale / 4 * noise)


def tiny_tokenizer(out_dir: Path):
    """A tiny T5-style Unigram tokenizer (NFKC + collapse spaces, Metaspace, `$A </s>`),
    saved with T5TokenizerFast.save_pretrained (tokenizer.json + config)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    words = ["a", "cat", "dog", "walks", "on", "the", "grass", "play", "in", "snow", "sun",
             "set", "over", "sea", "golden", "light", "blurry", "low", "quality", "&", ","]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0 - 0.1 * i) for i, w in enumerate(words)]
    vocab += [(c, -4.0 - 0.01 * i) for i, c in enumerate(letters)]
    vocab += [("\u2581" + c, -5.0) for c in letters if "\u2581" + c not in dict(vocab)]
    tok = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    fast = T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                           unk_token="<unk>", extra_ids=0)
    fast.save_pretrained(str(out_dir))
    return fast


def umt5_case(case: dict, root: Path, index: int) -> dict:
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = dict(UMT5_BASE)
    cfg.update(case["cfg"])
    torch.manual_seed(10 + index)
    model = UMT5EncoderModel(UMT5Config(**cfg, attn_implementation="eager")).eval()
    perturb(model, seed=200 + index)
    b, n = case["batch"], case["tokens"]
    g = torch.Generator().manual_seed(300 + index)
    ids = torch.randint(2, cfg["vocab_size"], (b, n), generator=g)
    mask = torch.zeros((b, n), dtype=torch.long)
    for r, v in enumerate(case["valid"]):
        mask[r, :v] = 1
        ids[r, v:] = 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    d = fresh_dir(root / case["name"])
    model.save_pretrained(str(d), safe_serialization=True,
                          **({"max_shard_size": case["save"]["max_shard_size"]}
                             if "max_shard_size" in case["save"] else {}))
    save_tensors(d / "inputs.safetensors", dict(input_ids=ids, attention_mask=mask))
    save_tensors(d / "outputs.safetensors", dict(last_hidden_state=out))
    return dict(name=case["name"], kind="UMT5EncoderModel", config=cfg, batch=b, tokens=n,
                valid=case["valid"], output_shape=list(out.shape), bytes=dir_size(d))


def vae_case(case: dict, root: Path, index: int) -> dict:
    import torch
    from diffusers import AutoencoderKLWan

    cfg = dict(VAE_BASE)
    cfg.update(case["cfg"])
    torch.manual_seed(20 + index)
    vae = AutoencoderKLWan(**cfg).eval()
    perturb(vae, seed=400 + index)
    f, h, w = case["latent"]
    lat = randn((case["batch"], cfg["z_dim"], f, h, w), seed=500 + index)
    with torch.no_grad():
        out = vae.decode(lat).sample
    d = fresh_dir(root / case["name"])
    save_model(vae, d)
    save_tensors(d / "inputs.safetensors", dict(latents=lat))
    save_tensors(d / "outputs.safetensors", dict(sample=out))
    clamped = float((out.abs() >= 1.0).float().mean())
    return dict(name=case["name"], kind="AutoencoderKLWan", config=cfg, batch=case["batch"],
                latent=list(case["latent"]), output_shape=list(out.shape),
                clamped_fraction=clamped, bytes=dir_size(d))


def pipeline_fixture(root: Path) -> dict:
    """A complete tiny Wan pipeline folder and one WanPipeline run on it."""
    import torch
    from diffusers import (AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline,
                           WanTransformer3DModel)
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean
    from transformers import UMT5Config, UMT5EncoderModel

    d = fresh_dir(root / "pipeline_tiny")
    tok_dir = d / "tokenizer"
    tok_dir.mkdir()
    tokenizer = tiny_tokenizer(tok_dir)
    vocab = len(tokenizer)
    torch.manual_seed(7)
    enc_cfg = dict(UMT5_BASE, vocab_size=vocab + 4)  # embedding rows >= vocab, like umT5
    text_encoder = UMT5EncoderModel(UMT5Config(**enc_cfg, attn_implementation="eager")).eval()
    perturb(text_encoder, seed=601)
    vae = AutoencoderKLWan(**VAE_BASE).eval()
    perturb(vae, seed=602)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=enc_cfg["d_model"], freq_dim=32, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()
    perturb(transformer, seed=603)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                       transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(d), safe_serialization=True)

    prompt = PROMPTS[1]
    height, width, frames, steps, guidance, max_len = 32, 48, 5, 2, 5.0, 64
    latents = randn((1, 4, 2, 4, 6), seed=700)
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(prompt=prompt, negative_prompt=NEGATIVE,
                                    do_classifier_free_guidance=True,
                                    max_sequence_length=max_len)
        video = pipe(prompt=prompt, negative_prompt=NEGATIVE, height=height, width=width,
                     num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
                     latents=latents.clone(), max_sequence_length=max_len,
                     output_type="pt", return_dict=False)[0]
    meta = dict(prompt=prompt, negative_prompt=NEGATIVE, height=str(height), width=str(width),
                num_frames=str(frames), steps=str(steps), guidance=str(guidance),
                max_sequence_length=str(max_len))
    save_tensors(root / "pipeline_tiny.safetensors",
                 dict(prompt_embeds=pe, negative_prompt_embeds=ne, latents=latents,
                      frames=video), metadata=meta)

    cases = []
    for p in PROMPTS + [NEGATIVE]:
        ids = tokenizer(prompt_clean(p), add_special_tokens=True).input_ids
        cases.append(dict(prompt=p, cleaned=prompt_clean(p), ids=ids))
    (root / "tokenizer_cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False)
                                               + "\n")
    return dict(name="pipeline_tiny", frames_shape=list(video.shape), call=meta,
                bytes=dir_size(d))


def metrics_fixture(path: Path) -> dict:
    """PSNR / SSIM of fixed uint8 RGB frames with scikit-image (the quality report's
    metrics): a random frame, a noisy copy, a smooth gradient and a shifted copy."""
    import numpy as np
    import skimage
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rs = np.random.RandomState(0)
    h, w = 17, 23
    a = rs.randint(0, 256, (h, w, 3)).astype(np.uint8)
    b = np.clip(a.astype(np.int32) + rs.randint(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    c = np.stack([(yy * 11) % 256, (xx * 9) % 256, ((yy + xx) * 5) % 256], -1).astype(np.uint8)
    d = np.roll(c, 2, axis=1)
    cases = []
    for name, ref, test in [("noise", a, b), ("gradient_shift", c, d), ("cross", a, c)]:
        cases.append(dict(name=name, width=w, height=h, reference=ref.flatten().tolist(),
                          test=test.flatten().tolist(),
                          psnr=float(peak_signal_noise_ratio(ref, test, data_range=255)),
                          ssim=float(structural_similarity(ref, test, channel_axis=-1,
                                                           data_range=255))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(skimage=skimage.__version__, cases=cases)) + "\n")
    return dict(name=path.name, skimage=skimage.__version__)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(fixture_root("wan") / "t2v"))
    ap.add_argument("--metrics-out", default=str(fixture_root("video") / "metrics.json"))
    ap.add_argument("--only-metrics", action="store_true",
                    help="write only the PSNR/SSIM fixture")
    args = ap.parse_args()
    require_libs()
    setup()
    metrics = metrics_fixture(Path(args.metrics_out))
    if args.only_metrics:
        print(f"metrics fixture: {args.metrics_out}")
        return
    import diffusers
    import tokenizers
    import torch
    import transformers

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    cases = [umt5_case(c, root, i) for i, c in enumerate(UMT5_CASES)]
    cases += [vae_case(c, root, i) for i, c in enumerate(VAE_CASES)]
    cases.append(pipeline_fixture(root))
    manifest = dict(generator=Path(__file__).name, metrics=metrics,
                    diffusers=diffusers.__version__,
                    transformers=transformers.__version__, tokenizers=tokenizers.__version__,
                    torch=torch.__version__, cases=cases)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for c in cases:
        print(f"  {c['name']}: {c.get('output_shape', c.get('frames_shape'))}, "
              f"{c['bytes']} bytes" + (f", clamped {c['clamped_fraction']:.3f}"
                                      if "clamped_fraction" in c else ""))
    print(f"wan t2v fixtures: {dir_size(root)} bytes in {root}")


if __name__ == "__main__":
    main()
