#!/usr/bin/env bash
# Correctness checks on the GPU machine (no timing): the CUDA kernel suite and the
# too-large-input error of a model forward. Prebuilt binaries in .device/ (built on the CPU
# machine, stripped and gzipped):
#   cargo test --release -p vdit-kernels --features cuda --no-run -> .device/sparse_attention
#   cargo build --release -p xtask --features cuda                 -> .device/xtask
# Usage: OUT=dir bash tools/device/checks.sh
set -u
OUT=${OUT:-/tmp/checks_out}
mkdir -p "$OUT"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git rev-parse HEAD 2>/dev/null || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
for z in .device/*.gz; do [[ -e $z ]] && gunzip -f "$z" && chmod +x "${z%.gz}"; done

if [[ -x .device/sparse_attention ]]; then
  echo "== CUDA kernel suite (f64 reference; every tensor-core variant; cross-attention)"
  timeout ${TEST_TIMEOUT:-200} ./.device/sparse_attention cuda:: --test-threads 1 > "$OUT/kernel_tests.log" 2>&1
  echo "rc=$?"; grep -E '^test |test result' "$OUT/kernel_tests.log"
fi

if [[ -x .device/xtask ]]; then
  # Wan2.1-1.3B bf16, batch 64 at 720p x 81: the FFN activation has 64 x 75,600 x 8,960
  # elements (> 2^32): a clear input error and exit code 1, no output file.
  echo "== too-large forward"
  timeout 120 ./.device/xtask forward --preset wan2.1-t2v-1.3b --random-weights --random-inputs \
    --latent 21x90x160 --batch 64 --backend cuda --dtype bf16 --out /tmp/big.safetensors > "$OUT/too_large.log" 2>&1
  echo "rc=$? (expected 1)"; tail -3 "$OUT/too_large.log"
  ls /tmp/big.safetensors 2>/dev/null && echo "UNEXPECTED: output written"
fi
