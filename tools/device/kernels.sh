#!/usr/bin/env bash
# Runs on the GPU machine from the repository root (see tools/device/README in the report):
# CUDA kernel tests, the kernel benchmark at real sizes, resource usage of the generated
# CUDA, then the PyTorch peers (cuDNN SDPA, FlexAttention on the same block masks).
# Binaries come prebuilt in .device/ (built on the CPU machine with --features cuda).
# Usage: tools/device/kernels.sh [tests|bench|peers|all] [bench args...]
set -u
OUT=${OUT:-/tmp/kernels_out}
mkdir -p "$OUT"
WHAT=${1:-all}; shift || true
BENCH_ARGS=${BENCH_ARGS:-}
PEER_ARGS=${PEER_ARGS:-}
export PYTHONUNBUFFERED=1
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -2
  python3 -c 'import torch;print("torch",torch.__version__,"cuda",torch.version.cuda,"cudnn",torch.backends.cudnn.version())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [[ $WHAT == tests || $WHAT == all ]]; then
  echo "== CUDA tests"
  CUBECL_DEBUG_LOG=1 timeout 150 ./.device/sparse_attention cuda:: --test-threads 1 > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^test |test result|panicked|Error" "$OUT/tests.log" | head -40
  # Generated CUDA of the tensor-core kernel, and its register / shared-memory usage.
  python3 - <<'PY' > "$OUT/resource.txt" 2>&1
import re, subprocess, os
log = open("/tmp/cubecl.log", errors="replace").read() if os.path.exists("/tmp/cubecl.log") else ""
seen = 0
for blk in log.split("[START_KERNEL_COMPILATION]")[1:]:
    if "sparse_attn_tc" not in blk.split("source:")[0]:
        continue
    m = re.search(r"source:\n```[a-z]*\n(.*?)\n```\n\[END_KERNEL_COMPILATION\]", blk, re.S)
    if not m:
        continue
    path = f"/tmp/k{seen}.cu"; open(path, "w").write(m.group(1)); seen += 1
    name = blk.split("source:")[0].strip().splitlines()[0][:200]
    r = subprocess.run(["nvcc", "-arch=sm_90a", "--resource-usage", "-c", path, "-o", "/dev/null"], capture_output=True, text=True)
    print(f"--- {path}: {name}\n{r.stderr.strip()[-1500:]}")
    if seen >= 4:
        break
PY
  cp /tmp/k0.cu "$OUT/sparse_attn_tc_sample.cu" 2>/dev/null || true
  grep -E "registers|smem|spill|---" "$OUT/resource.txt" | head -30
fi

if [[ $WHAT == bench || $WHAT == all ]]; then
  echo "== kernel bench"
  rm -rf /tmp/kbench
  timeout 240 ./.device/kernel_bench --out /tmp/kbench $BENCH_ARGS 2>&1 | tee "$OUT/bench.log"
  cp /tmp/kbench/kernels.json "$OUT/" 2>/dev/null || true
fi

if [[ $WHAT == peers || $WHAT == all ]]; then
  echo "== peers"
  timeout 170 python3 tools/kernel_peers.py /tmp/kbench $PEER_ARGS 2>&1 | tee "$OUT/peers.log"
  cp /tmp/kbench/peers.json "$OUT/" 2>/dev/null || true
fi
