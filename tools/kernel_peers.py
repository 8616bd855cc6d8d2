#!/usr/bin/env python3
"""PyTorch peers for the sparse attention kernels, on the same block masks.

Reads the masks exported by `kernel_bench --out DIR` (DIR/masks/<case>.json + .bin) and
times, in bf16 at the same shapes:
  * cuDNN SDPA dense (torch.nn.attention.SDPBackend.CUDNN_ATTENTION),
  * FlexAttention dense (no block mask) and FlexAttention with the SAME block table
    (every kept block marked "full", BLOCK_SIZE = our block size; for spatial-major tables
    Q/K/V are permuted first, and the permutation is NOT included in the time).
Writes DIR/peers.json and prints a table merged with DIR/kernels.json.

Usage: python3 tools/kernel_peers.py DIR [--models wan21_480p,hunyuan] [--no-flex]
"""
import argparse
import json
import os
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F

SHAPES = {  # name: (heads, tokens, head_dim)
    "wan21_480p": (12, 32760, 128),
    "wan21_720p": (12, 75600, 128),
    "cogvideox15": (48, 45106, 64),
    "hunyuan": (24, 119056, 128),
}


def timeit(fn, warmup=2, iters=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return statistics.median(ts)


def qkv(h, l, d, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda: (torch.rand((1, h, l, d), generator=g, device="cuda", dtype=torch.float32) * 2 - 1).to(torch.bfloat16)
    return mk(), mk(), mk()


def block_mask_from_table(meta, mdir):
    from torch.nn.attention.flex_attention import BlockMask

    name = meta["name"]
    nb, bs, L = meta["num_blocks"], meta["block_size"], meta["tokens"]
    row_ptr = np.fromfile(os.path.join(mdir, name + ".row_ptr.bin"), dtype=np.uint32).astype(np.int64)
    col = np.fromfile(os.path.join(mdir, name + ".col_idx.bin"), dtype=np.uint32).astype(np.int64)
    counts = np.diff(row_ptr)
    idx = np.zeros((nb, nb), dtype=np.int64)
    for r in range(nb):
        c = col[row_ptr[r]:row_ptr[r + 1]]
        idx[r, : len(c)] = c
    dev = "cuda"
    full_num = torch.tensor(counts, dtype=torch.int32, device=dev).view(1, 1, nb)
    full_idx = torch.tensor(idx, dtype=torch.int32, device=dev).view(1, 1, nb, nb)
    part_num = torch.zeros_like(full_num)
    part_idx = torch.zeros_like(full_idx)
    return BlockMask.from_kv_blocks(part_num, part_idx, full_num, full_idx, BLOCK_SIZE=bs, seq_lengths=(L, L))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--models", default="wan21_480p,wan21_720p,cogvideox15,hunyuan")
    ap.add_argument("--flex-models", default="wan21_480p,hunyuan")
    ap.add_argument("--no-flex", action="store_true")
    a = ap.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    info = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        pass
    recs = []
    flex = None
    if not a.no_flex:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention, dynamic=False)
    mdir = os.path.join(a.dir, "masks")
    metas = []
    if os.path.isdir(mdir):
        for f in sorted(os.listdir(mdir)):
            if f.endswith(".json"):
                metas.append(json.load(open(os.path.join(mdir, f))))
    for model in a.models.split(","):
        h, l, d = SHAPES[model]
        q, k, v = qkv(h, l, d)
        flops = 4 * h * l * l * d
        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                t = timeit(lambda: F.scaled_dot_product_attention(q, k, v))
            recs.append({"model": model, "case": "dense", "peer": "cudnn_sdpa", "time_ms": t, "tflops": flops / t / 1e9})
            print(f"{model:12} cudnn dense {t:9.3f} ms {flops / t / 1e9:7.1f} TFLOP/s", flush=True)
        except Exception as e:  # noqa: BLE001
            recs.append({"model": model, "case": "dense", "peer": "cudnn_sdpa", "error": str(e)[:300]})
        if flex is None or model not in a.flex_models.split(","):
            continue
        try:
            t = timeit(lambda: flex(q, k, v))
            recs.append({"model": model, "case": "dense", "peer": "flex", "time_ms": t, "tflops": flops / t / 1e9})
            print(f"{model:12} flex dense  {t:9.3f} ms {flops / t / 1e9:7.1f} TFLOP/s", flush=True)
        except Exception as e:  # noqa: BLE001
            recs.append({"model": model, "case": "dense", "peer": "flex", "error": str(e)[:300]})
        for meta in metas:
            if meta["model"] != model:
                continue
            try:
                bm = block_mask_from_table(meta, mdir)
                qq, kk, vv = q, k, v
                if meta["order"] != "Natural":
                    perm = torch.from_numpy(
                        np.fromfile(os.path.join(mdir, meta["name"] + ".perm.bin"), dtype=np.uint32).astype(np.int64)
                    ).cuda()
                    qq, kk, vv = q[:, :, perm], k[:, :, perm], v[:, :, perm]
                t = timeit(lambda: flex(qq, kk, vv, block_mask=bm))
                comp = meta["computed_pairs"] * h
                recs.append({
                    "model": model, "case": meta["name"], "peer": "flex", "time_ms": t,
                    "effective_tflops": 4 * comp * d / t / 1e9, "density": meta["density"],
                })
                print(f"{meta['name']:44} flex {t:9.3f} ms", flush=True)
            except Exception as e:  # noqa: BLE001
                recs.append({"model": model, "case": meta["name"], "peer": "flex", "error": str(e)[:300]})
                print(f"{meta['name']:44} flex ERROR {str(e)[:200]}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    json.dump({"info": info, "records": recs}, open(os.path.join(a.dir, "peers.json"), "w"), indent=1)
    summarize(a.dir, recs, info)


def summarize(d, peers, info):
    path = os.path.join(d, "kernels.json")
    ours = json.load(open(path)) if os.path.exists(path) else []
    by = {(r["model"], r["case"], r["peer"]): r for r in peers if "time_ms" in r}
    print("\n" + " | ".join(str(x) for x in info.values()))
    print(f"{'case':46} {'ours ms':>9} {'flex ms':>9} {'cudnn ms':>9} {'ours TF':>8} {'vs cuDNN':>8} {'cost/share':>10}")
    for r in ours:
        m, c = r["model"], r["case"]
        key = c if c == "dense" else c
        fl = by.get((m, key, "flex"))
        cu = by.get((m, "dense", "cudnn_sdpa")) if c == "dense" else None
        name = f"{m}:{c}" if c == "dense" else c
        tf = r.get("tflops", r.get("effective_tflops", 0.0))
        vs = f"{cu['time_ms'] / r['time_ms']:.2f}x" if cu else ""
        share = f"{r['cost_over_dense_share']:.2f}" if "cost_over_dense_share" in r else ""
        print(
            f"{name:46} {r['time_ms']:9.2f} {fl['time_ms'] if fl else float('nan'):9.2f} "
            f"{cu['time_ms'] if cu else float('nan'):9.2f} {tf:8.1f} {vs:>8} {share:>10}"
        )


if __name__ == "__main__":
    sys.exit(main())
