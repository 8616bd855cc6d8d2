#!/usr/bin/env python3
"""Denoiser steps, ours against diffusers, as the machine-readable summary of one GPU run.

Run on the GPU machine after `xtask bench` (ours) and `tools/peers_step.py` (diffusers) in
the same lease (tools/device/steps.sh does all three). It times PyTorch's default SDPA on the
self-attention shape of each model (what the diffusers step runs), then writes, per model:

  {model, tokens, diffusers_s, ours_dense_s, ours_plan_s, plan_density, ours_nonattn_s,
   diffusers_nonattn_s, ours_peak_gib, diffusers_peak_gib, diffusers_peak_allocated_gib,
   ours_attn_ms, diffusers_attn_ms, layers, linear_engine}

non-attention time = step - layers x the same run's dense self-attention time of that model
(ours: `xtask bench --attention-dense-only` rows; diffusers: SDPA timed here). Peak memory:
ours = the device allocator's reserved bytes after the steps (high-water mark of its pools),
diffusers = torch.cuda.max_memory_reserved (same accounting); diffusers' max_memory_allocated
is kept beside it.

Usage: python3 tools/steps_summary.py --ours-attention A/report.json --ours M/report.json
           [--ours M2/report.json ...] --peers P/peers_step.json --out DIR [--no-sdpa]
Writes DIR/steps.json and DIR/steps.md and prints the Markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

# family: (attention case in our bench, self-attention layers, heads, tokens, head_dim)
MODELS = {
    "wan": ("wan2.1-480p", 30, 12, 32760, 128),
    "cogvideox": ("cogvideox1.5", 42, 48, 45106, 64),
    "hunyuan": ("hunyuanvideo-720p", 60, 24, 119056, 128),
}


def family(name: str):
    s = (name or "").lower()
    for f in ("hunyuan", "cogvideox", "wan"):
        if f in s or (f == "cogvideox" and "cog" in s):
            return f
    return None


def sdpa_ms(heads, tokens, head_dim, iters=5):
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda: (torch.rand((1, heads, tokens, head_dim), generator=g, device="cuda") * 2 - 1).to(torch.bfloat16)
    q, k, v = mk(), mk(), mk()
    for _ in range(2):
        F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        F.scaled_dot_product_attention(q, k, v)
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    del q, k, v
    torch.cuda.empty_cache()
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours-attention", required=True)
    ap.add_argument("--ours", action="append", default=[])
    ap.add_argument("--peers", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-sdpa", action="store_true", help="skip the SDPA timing (no GPU)")
    a = ap.parse_args()

    attn = {r["case"]: r["ms"] for r in json.load(open(a.ours_attention))["attention"] if r["pattern"] == "dense"}
    ours = {}
    for path in a.ours:
        rep = json.load(open(path))
        for r in rep["model"]:
            f = family(r["model"])
            ours.setdefault(f, {})[r["mode"]] = r
    peers = {}
    if os.path.exists(a.peers):
        for r in json.load(open(a.peers))["records"]:
            if r.get("sdpa", "default") == "default" and "ms" in r:
                peers[r["model"]] = r

    rows = []
    for f, (case, layers, heads, tokens, hd) in MODELS.items():
        if f not in ours and f not in peers:
            continue
        o, p = ours.get(f, {}), peers.get(f)
        dense, plan = o.get("dense"), o.get("plan")
        ours_attn = attn.get(case)
        peer_attn = None if a.no_sdpa or p is None else sdpa_ms(heads, tokens, hd)
        s = lambda ms: None if ms is None else round(ms / 1e3, 4)
        row = dict(
            model=f,
            tokens=(dense or plan or {}).get("tokens") or (p or {}).get("tokens"),
            diffusers_s=s(p["ms"]) if p else None,
            ours_dense_s=s(dense["ms"]) if dense else None,
            ours_plan_s=s(plan["ms"]) if plan else None,
            plan_density=round(plan["attention_density"], 4) if plan else None,
            ours_nonattn_s=s(dense["ms"] - layers * ours_attn) if dense and ours_attn else None,
            diffusers_nonattn_s=s(p["ms"] - layers * peer_attn) if p and peer_attn else None,
            ours_peak_gib=max((r.get("peak_reserved_gib") or 0) for r in o.values()) or None if o else None,
            diffusers_peak_gib=p.get("peak_reserved_gib") if p else None,
            diffusers_peak_allocated_gib=p.get("peak_allocated_gib") if p else None,
            ours_attn_ms=round(ours_attn, 3) if ours_attn else None,
            diffusers_attn_ms=round(peer_attn, 3) if peer_attn else None,
            layers=layers,
            linear_engine=(dense or plan or {}).get("notes", "").rsplit("Linear: ", 1)[-1] if o else None,
        )
        rows.append(row)

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "steps.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    fmt = lambda v, d=3: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    md = ["| model | tokens | diffusers s | ours dense s | ours plan s (density) | ours non-attn s | diffusers non-attn s | non-attn ratio | peak GiB ours / diffusers (reserved) |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = (r["ours_nonattn_s"] / r["diffusers_nonattn_s"]) if r["ours_nonattn_s"] and r["diffusers_nonattn_s"] else None
        md.append(f"| {r['model']} | {r['tokens']} | {fmt(r['diffusers_s'])} | {fmt(r['ours_dense_s'])} | "
                  f"{fmt(r['ours_plan_s'])} ({fmt(r['plan_density'])}) | {fmt(r['ours_nonattn_s'])} | "
                  f"{fmt(r['diffusers_nonattn_s'])} | {fmt(ratio, 2)}x | {fmt(r['ours_peak_gib'], 2)} / {fmt(r['diffusers_peak_gib'], 2)} |")
    text = "\n".join(md) + "\n"
    with open(os.path.join(a.out, "steps.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
