#!/usr/bin/env python3
"""diffusers' AutoencoderKLWan.decode at a real size on CUDA: the peer of
`crates/vdit-wan/examples/vae_decode.rs` (same config: diffusers' defaults are Wan2.1's VAE;
random weights, random bf16 latents, one decode). Prints one JSON line with the time and
torch.cuda.max_memory_allocated / max_memory_reserved over the decode.

Usage: python3 tools/vae_peer.py [--latent 21x60x104]
"""
import argparse
import json
import time

import torch
from diffusers import AutoencoderKLWan


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", default="21x60x104")
    a = ap.parse_args()
    try:
        f, h, w = (int(x) for x in a.latent.split("x"))
    except ValueError:
        ap.error(f"--latent {a.latent}: expected FxHxW, e.g. 21x60x104")
    if min(f, h, w) <= 0:
        ap.error(f"--latent {a.latent}: sizes must be positive")
    torch.manual_seed(7)
    vae = AutoencoderKLWan().to("cuda", torch.bfloat16).eval()
    weights = torch.cuda.memory_allocated()
    z = torch.randn(1, vae.config.z_dim, f, h, w, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    with torch.no_grad():
        video = vae.decode(z).sample
    torch.cuda.synchronize()
    secs = time.perf_counter() - t
    gib = 1 << 30
    print(json.dumps({
        "peer": "diffusers AutoencoderKLWan.decode",
        "latent": [f, h, w],
        "video": list(video.shape),
        "seconds": round(secs, 3),
        "weights_gib": round(weights / gib, 3),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / gib, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / gib, 3),
    }))


if __name__ == "__main__":
    main()
