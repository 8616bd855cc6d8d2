#!/usr/bin/env python3
"""Markdown report of a kernel benchmark run (kernels.json from `kernel_bench`, peers.json
from `tools/kernel_peers.py`, env.txt from `tools/device/kernels.sh`).

Usage: python3 tools/kernel_report.py RUN_DIR > RUN_DIR/REPORT.md
"""
import json
import os
import sys


def main(d):
    ours = json.load(open(os.path.join(d, "kernels.json")))
    peers = json.load(open(os.path.join(d, "peers.json"))) if os.path.exists(os.path.join(d, "peers.json")) else {"info": {}, "records": []}
    env = open(os.path.join(d, "env.txt")).read().strip() if os.path.exists(os.path.join(d, "env.txt")) else ""
    by = {(r["model"], r["case"], r["peer"]): r for r in peers["records"] if "time_ms" in r}
    out = []
    out.append(f"Environment:\n\n```\n{env}\n```\n")
    if peers["info"]:
        out.append("PyTorch peers: " + ", ".join(f"{k} {v}" for k, v in peers["info"].items()) + "\n")
    out.append("### Dense (bf16, batch 1, all heads dense, block 128)\n")
    out.append("| model | heads x tokens x d | ours ms | ours TFLOP/s | cuDNN SDPA ms | cuDNN TFLOP/s | ours / cuDNN | FlexAttention ms | Flex TFLOP/s |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in ours:
        if r["case"] != "dense":
            continue
        m = r["model"]
        cu, fl = by.get((m, "dense", "cudnn_sdpa")), by.get((m, "dense", "flex"))
        out.append(
            f"| {m} | {r['heads']} x {r['tokens']} x {r['head_dim']} | {r['time_ms']:.2f} | {r['tflops']:.1f} | "
            + (f"{cu['time_ms']:.2f} | {cu['tflops']:.1f} | {r['tflops'] / cu['tflops']:.2f}x | " if cu else "- | - | - | ")
            + (f"{fl['time_ms']:.2f} | {fl['tflops']:.1f} |" if fl else "- | - |")
        )
    out.append("\n### Sparse (same heads/tokens; every head uses the pattern unless `mixed`)\n")
    out.append("`computed` = computed (query, key) pairs / (heads * L^2); `eff TFLOP/s` = 4 * D * computed pairs / time;")
    out.append("`cost/share` = time / (our dense time * computed): 1.0 means a computed block costs exactly what it costs in our dense run.")
    out.append("FlexAttention runs the same block table (kept blocks marked full, BLOCK_SIZE 128); for spatial-major tables Q/K/V are permuted before the timed call.\n")
    out.append("| case | density | computed | ours ms | eff TFLOP/s | cost/share | Flex ms | ours / Flex time |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in ours:
        if r["case"] == "dense":
            continue
        fl = by.get((r["model"], r["case"], "flex"))
        out.append(
            f"| {r['case']} | {r['density']:.3f} | {r['computed_fraction']:.3f} | {r['time_ms']:.2f} | "
            f"{r['effective_tflops']:.1f} | {r['cost_over_dense_share']:.2f} | "
            + (f"{fl['time_ms']:.2f} | {r['time_ms'] / fl['time_ms']:.1f}x |" if fl else "- | - |")
        )
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
