#!/usr/bin/env bash
# The staged Hopper engine (kernels-hopper, CubeCL 0.11) on the GPU machine: inline-PTX
# probes and the wgmma attention kernel against CPU references, then its dense timing next
# to cuDNN SDPA at the same shapes, in one run. Prebuilt binaries in .device/ (built on the
# CPU machine from kernels-hopper/, stripped and gzipped):
#   cargo test --release --features cuda --no-run     -> .device/hopper_probe, .device/hopper_attention
#   cargo build --release --features cuda --example hopper_bench -> .device/hopper_bench
# Usage: OUT=dir bash tools/device/hopper.sh
set -u
OUT=${OUT:-/tmp/hopper_out}
mkdir -p "$OUT"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
for z in .device/hopper_*.gz; do [[ -e $z ]] && gunzip -f "$z" && chmod +x "${z%.gz}"; done

# One process per test: a kernel fault poisons the CUDA context for the rest of a process.
for t in probe attention; do
  if [[ -x .device/hopper_$t ]]; then
    for name in $(./.device/hopper_$t --list 2>/dev/null | sed -n 's/: test$//p'); do
      echo "== $t: $name"
      timeout ${TEST_TIMEOUT:-240} ./.device/hopper_$t "$name" --exact --test-threads 1 --nocapture > /tmp/one.log 2>&1
      echo "rc=$?"; grep -E 'rel L2|worst|panicked|status|test result' /tmp/one.log | head -12
      { echo "== $name"; cat /tmp/one.log; } >> "$OUT/tests_$t.log"
    done
  fi
done

if [[ -x .device/hopper_bench && ${BENCH:-1} == 1 ]]; then
  echo "== ours (wgmma engine)"
  for variant in ${VARIANTS:-2:false 1:true 2:true 3:true}; do
    timeout 240 ./.device/hopper_bench --iters ${ITERS:-10} --variant $variant 2>&1 | grep -E '^\{|panicked|status' | tee -a "$OUT/ours.jsonl"
  done
  echo "== cuDNN SDPA, same shapes, same run"
  mkdir -p "$OUT/peers"; timeout 240 python3 tools/kernel_peers.py "$OUT/peers" --models wan21_480p,hunyuan --no-flex 2>&1 | tail -4
fi
